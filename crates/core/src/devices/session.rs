//! The state the gateway keeps per MQTT-SN client: where it is, what state it is
//! in (fact sheet §7.9), its will, topic ids, subscriptions, the queue of messages
//! waiting for it, and the one message in flight towards it (trap T-6).
//!
//! Sessions are keyed by client id, never by address (trap T-19); the address is
//! just where the client was last heard from.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::peer::Peer;
use crate::topic_table::TopicTable;
use sngate_wire::v1::{Packet, TopicRef};

/// Identifies a session inside the engine; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// A client's state as the gateway sees it (fact sheet §7.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientState {
    /// CONNECT received with the Will flag; the will handshake is running.
    Connecting(Handshake),
    /// Connected and supervised by keep-alive.
    Active,
    /// Sleeping (DISCONNECT with Duration); messages are buffered.
    Asleep,
    /// Woken by PINGREQ with its client id; buffered messages are being handed over.
    Awake,
    /// Disconnected by DISCONNECT without Duration; no supervision.
    Disconnected,
    /// Keep-alive, sleep timer or retries ran out; the will was published.
    Lost,
}

impl ClientState {
    /// A lower-case label for logs, metrics and status.
    pub fn label(&self) -> &'static str {
        match self {
            ClientState::Connecting(_) => "connecting",
            ClientState::Active => "active",
            ClientState::Asleep => "asleep",
            ClientState::Awake => "awake",
            ClientState::Disconnected => "disconnected",
            ClientState::Lost => "lost",
        }
    }
}

/// Where the will handshake stands (trap T-13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// WILLTOPICREQ sent; only WILLTOPIC is acceptable.
    AwaitWillTopic,
    /// WILLMSGREQ sent; only WILLMSG is acceptable.
    AwaitWillMsg {
        /// The will topic just received.
        topic: String,
        /// Its QoS (MQTT 0..=2).
        qos: u8,
        /// Its retain flag.
        retain: bool,
    },
    /// Per-device mode: the CONNACK waits for the device's upstream session
    /// (or for `upstream_session_wait`).
    AwaitUpstream,
}

/// A client's last will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// MQTT QoS 0..=2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
}

/// A message waiting to be delivered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// MQTT QoS 0..=2 for this delivery (min of message and subscription).
    pub qos: u8,
    /// Retain flag as delivered (set for retained messages sent on subscribe).
    pub retain: bool,
    /// Set once the client answered "invalid topic id" and the topic was
    /// registered again: a second refusal drops the message (never loop).
    pub reregistered: bool,
    /// The message id of an earlier send: a message put back in the queue (the
    /// client went away unacknowledged) is resent with DUP and the same id, so
    /// the client can recognise a QoS 2 duplicate.
    pub sent_as: Option<u16>,
    /// Its durable id, once it has one (QoS 1/2 with persistence on).
    pub store_id: Option<u64>,
    /// Per-device mode: the bridge's token for a QoS 1/2 message that came
    /// down the device's own session and is not yet acknowledged to the
    /// broker; handed back in [`UpstreamCommand::AckDownlink`] once the
    /// device has it (`device_sessions.rs`). Never stored: after a restart
    /// the broker redelivers what was not acknowledged.
    ///
    /// [`UpstreamCommand::AckDownlink`]: crate::output::UpstreamCommand::AckDownlink
    pub downlink: Option<u64>,
}

/// A device's QoS 1/2 PUBLISH held unacknowledged until the upstream bridge
/// has room for it (the device keeps it and may retransmit it meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedPublish {
    /// The device's message id.
    pub msg_id: u16,
    /// The raw TopicId field, echoed in the PUBACK.
    pub topic_field: u16,
    /// The resolved topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// MQTT QoS 1 or 2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
}

/// The one exchange in flight towards the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflightKind {
    /// A gateway REGISTER for the topic of the message at the head of the queue.
    Register {
        /// The id being registered.
        topic_id: u16,
    },
    /// A QoS 1/2 PUBLISH awaiting PUBACK or PUBREC.
    Publish {
        /// The message (put back at the head of the queue if the client is lost).
        delivery: Delivery,
        /// The topic reference it was sent with.
        topic: TopicRef,
    },
    /// A PUBREL awaiting PUBCOMP (the message itself is delivered).
    PubRel,
}

/// An exchange in flight, with its retransmission state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// What is in flight.
    pub kind: InflightKind,
    /// Its message id.
    pub msg_id: u16,
    /// The packet as last sent, for retransmission.
    pub packet: Packet,
    /// Retransmissions so far.
    pub retries: u32,
    /// When to retransmit.
    pub deadline: Instant,
}

/// Everything the gateway keeps about one client.
#[derive(Debug)]
pub struct Session {
    /// The client id.
    pub client_id: Arc<str>,
    /// Where the client was last heard from; `None` once it is gone.
    pub peer: Option<Peer>,
    /// Current state.
    pub state: ClientState,
    /// CleanSession flag of the last CONNECT.
    pub clean_session: bool,
    /// Keep-alive period in force.
    pub keep_alive: Duration,
    /// Sleep duration from the last DISCONNECT with Duration.
    pub sleep_duration: Duration,
    /// Last time a packet arrived from the client (or the sleep timer restarted).
    pub last_seen: Instant,
    /// Deadline of the will handshake while connecting.
    pub handshake_deadline: Option<Instant>,
    /// The will, if any.
    pub will: Option<Will>,
    /// The client's topic ids.
    pub topics: TopicTable,
    /// Subscriptions: filter → granted QoS.
    pub subscriptions: HashMap<String, u8>,
    /// Pre-defined ids the client subscribed to by id: only messages on these
    /// topics are sent with a pre-defined id; a client that reached a
    /// pre-defined topic through a name or wildcard gets a REGISTERed id, since
    /// it may not hold the pre-defined table.
    pub predefined_subscriptions: HashSet<u16>,
    /// Messages waiting for delivery, oldest first.
    pub queue: VecDeque<Delivery>,
    /// Payload bytes in `queue` (and in a queued in-flight delivery).
    pub queued_bytes: usize,
    /// The exchange in flight towards the client (at most one, trap T-6).
    pub inflight: Option<Inflight>,
    /// QoS 2 message ids received and PUBREC'd but not yet released (trap
    /// T-7), oldest first.
    pub inbound_qos2: VecDeque<u16>,
    /// Last message id the gateway used towards the client.
    pub last_msg_id: u16,
    /// Deadline of this session's pending entry in the timer heap.
    pub armed: Option<Instant>,
    /// Messages handed over in the current awake period.
    pub delivered_this_wake: usize,
    /// A PUBLISH from the client waiting for upstream room (at most one: a
    /// client has one QoS 1/2 PUBLISH in flight).
    pub parked: Option<ParkedPublish>,
    /// Per-device mode: the device's upstream session was opened and not
    /// closed since.
    pub upstream_open: bool,
    /// Per-device mode: MsgId of the QoS 1/2 PUBLISH whose acknowledgement
    /// waits for the broker's (a retransmission of it is not forwarded again).
    pub awaiting_upstream_ack: Option<u16>,
    /// Counts the client's CONNECTs: an upstream acknowledgement owed to an
    /// earlier connection (per-device mode) is not given to this one.
    pub connection: u32,
    /// How long the session outlives its client once disconnected or lost
    /// (`None`: forever); set at CONNECT, `Some(0)` for a clean session.
    pub expiry: Option<Duration>,
    /// The session's own rate-limit bucket (`core::rate_limit`).
    pub rate: crate::rate_limit::TokenBucket,
    /// Created by a CONNECT whose client has sent nothing since: its place
    /// in the engine's eviction order (first to go at `max_clients`).
    pub unproven: Option<u64>,
    /// The transport identity (DTLS PSK identity or certificate name) of the
    /// peer whose CONNECT made or last took the session; `None` for a device
    /// over plain UDP or serial. A session bound to an identity is taken
    /// over or woken only by a peer with the same identity.
    pub identity: Option<Arc<str>>,
    /// Set when the session's last CONNECT was MQTT-SN 2.0: what its 2.0
    /// packets need (`devices/v2.rs`); `None` for a 1.2 device.
    pub(crate) v2: Option<Box<crate::devices::v2::V2Link>>,
}

/// How many unreleased inbound QoS 2 ids a session remembers. v1.2 allows one
/// in flight; a few more tolerate clients that pipeline, and the bound keeps a
/// misbehaving client from growing memory.
pub const MAX_INBOUND_QOS2: usize = 16;

impl Session {
    /// A fresh session for `client_id`, first heard at `now`.
    pub fn new(client_id: Arc<str>, peer: Peer, now: Instant, max_topics: usize) -> Self {
        Session {
            client_id,
            peer: Some(peer),
            state: ClientState::Disconnected,
            clean_session: true,
            keep_alive: Duration::ZERO,
            sleep_duration: Duration::ZERO,
            last_seen: now,
            handshake_deadline: None,
            will: None,
            topics: TopicTable::new(max_topics),
            subscriptions: HashMap::new(),
            predefined_subscriptions: HashSet::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: None,
            inbound_qos2: VecDeque::new(),
            last_msg_id: 0,
            armed: None,
            delivered_this_wake: 0,
            parked: None,
            upstream_open: false,
            awaiting_upstream_ack: None,
            connection: 0,
            expiry: Some(Duration::ZERO),
            rate: crate::rate_limit::TokenBucket::default(),
            unproven: None,
            identity: None,
            v2: None,
        }
    }

    /// A session restored from the store: no address until the client is
    /// heard from again.
    pub fn detached(client_id: Arc<str>, now: Instant, max_topics: usize) -> Self {
        let mut s = Session::new(client_id, Peer::serial(0), now, max_topics);
        s.peer = None;
        s
    }

    /// The subscriptions as (filter, QoS), sorted by filter.
    pub fn sorted_subscriptions(&self) -> Vec<(String, u8)> {
        let mut subscriptions: Vec<(String, u8)> = self
            .subscriptions
            .iter()
            .map(|(f, q)| (f.clone(), *q))
            .collect();
        subscriptions.sort();
        subscriptions
    }

    /// The next message id towards the client (1..=0xFFFF, never 0).
    pub fn next_msg_id(&mut self) -> u16 {
        self.last_msg_id = self.last_msg_id.checked_add(1).unwrap_or(1);
        self.last_msg_id
    }

    /// The supervision deadline in the current state, if supervised.
    pub fn supervision_deadline(&self) -> Option<Instant> {
        use crate::engine_config::EngineConfig;
        // MQTT-SN 2.0 fixes the grace at 1.5 × the period, keep-alive and
        // sleep alike [MQTT-SN-3.1.6-2, 4.14.2-1]; 1.2 leaves it open.
        let grace = |period: Duration| {
            if self.v2.is_some() {
                period + period / 2
            } else {
                EngineConfig::with_tolerance(period)
            }
        };
        match self.state {
            ClientState::Active => Some(self.last_seen + grace(self.keep_alive)),
            ClientState::Asleep => Some(self.last_seen + grace(self.sleep_duration)),
            ClientState::Connecting(_) => self.handshake_deadline,
            ClientState::Disconnected | ClientState::Lost => {
                self.expiry.map(|e| self.last_seen + e)
            }
            ClientState::Awake => None,
        }
    }

    /// When the exchange in flight is to be retransmitted. Only while the client
    /// can receive: a PUBREL kept across sleep or a disconnect is not retried
    /// into the void (that would exhaust N_RETRY and lose a sleeping client);
    /// it is resent when the client is back.
    pub fn retry_deadline(&self) -> Option<Instant> {
        if self.is_reachable() {
            self.inflight.as_ref().map(|i| i.deadline)
        } else {
            None
        }
    }

    /// The earliest deadline of any kind for this session.
    pub fn next_deadline(&self) -> Option<Instant> {
        let retry = self.retry_deadline();
        match (self.supervision_deadline(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True while the client can receive messages now.
    pub fn is_reachable(&self) -> bool {
        matches!(self.state, ClientState::Active | ClientState::Awake)
    }

    /// Puts an in-flight PUBLISH back at the head of the queue (the client went
    /// away before acknowledging it; it will be resent with DUP set) and drops an
    /// in-flight REGISTER (it is redone before the next PUBLISH). A PUBREL stays
    /// in flight: it is resent after the client comes back (trap T-7).
    /// Returns the payload bytes put back into the queue.
    pub fn requeue_inflight(&mut self) -> usize {
        match self.inflight.take() {
            Some(Inflight {
                kind: InflightKind::Publish { delivery, .. },
                ..
            }) => {
                let bytes = delivery.payload.len();
                self.queued_bytes += bytes;
                self.queue.push_front(delivery);
                bytes
            }
            Some(
                pubrel @ Inflight {
                    kind: InflightKind::PubRel,
                    ..
                },
            ) => {
                self.inflight = Some(pubrel);
                0
            }
            Some(Inflight {
                kind: InflightKind::Register { .. },
                ..
            })
            | None => 0,
        }
    }
}
