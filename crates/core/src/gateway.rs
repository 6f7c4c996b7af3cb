//! The [`Gateway`] engine: owns every session, the subscription trie, the
//! retained store and the timers, and turns inputs (datagrams, upstream
//! messages, the passing of time) into [`Output`]s. Sans-IO: it reads no clock
//! (`now` is an argument) and touches no socket.
//!
//! This file holds the struct, the input/output plumbing, timers and routing;
//! the per-packet handlers live in `connect.rs`, `uplink.rs`, `delivery.rs` and
//! `subscribe.rs`, each an `impl Gateway` block for one concern.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, info};

use super::engine_config::EngineConfig;
use super::local::{LocalDelivery, LocalSessions};
use super::output::{Output, UpstreamCommand};
use super::peer::Peer;
use super::persist::Persistence;
use super::policy::log_gate::LogGates;
use super::rate_limit::{Budget, RateLimit, SourceLimiter, budget_for};
use super::retained::RetainedStore;
use super::router::SubscriptionTrie;
use super::session::{ClientState, Delivery, Session, SessionId};
use super::stats::{DropReason, Stats};
use sngate_wire::v1::{self as proto, DecodeError, MsgType, Packet, QoS, ReturnCode, TopicRef};

/// Who a subscription belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subscriber {
    /// An MQTT-SN session.
    Device(SessionId),
    /// A local MQTT client's session (embedded broker).
    Local(SessionId),
}

/// A retained message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    /// Payload (never empty: an empty retained payload deletes).
    pub payload: Bytes,
    /// MQTT QoS 0..=2 it was published with.
    pub qos: u8,
}

/// A message arriving from the upstream broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamMessage {
    /// Local topic name (after the bridge's prefix rules).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// MQTT QoS 0..=2.
    pub qos: u8,
    /// Retain flag: set when the broker holds the message as retained (the
    /// bridge subscribes with Retain As Published); passed on to devices.
    pub retain: bool,
    /// `Some(filter)`: a retained message the broker sent because the
    /// upstream subscription to `filter` was just made; it goes only to local
    /// subscribers of exactly that filter, so subscribers of overlapping
    /// filters do not get it twice. `None`: every matching subscriber.
    pub filter: Option<String>,
}

/// The MQTT-SN gateway engine: every protocol decision, no I/O, no clock.
///
/// # The call contract
///
/// The shell that owns a `Gateway` (one task, no locks) loops over three
/// steps, and nothing else touches it:
///
/// 1. **Hand it one input**, with the time it happened: a datagram
///    ([`handle_datagram`](Self::handle_datagram)), a message from the
///    upstream broker ([`handle_upstream`](Self::handle_upstream)), the
///    bridge's room ([`set_upstream_room`](Self::set_upstream_room)), an
///    embedded-broker connection's input
///    ([`handle_local`](Self::handle_local)), a device's upstream session
///    answering (`handle_session_*`), or — when the deadline from step 3
///    has come — [`handle_timeout`](Self::handle_timeout).
/// 2. **Drain [`poll_output`](Self::poll_output) until it returns `None`**,
///    carrying out each [`Output`] in order: transmit to a peer, broadcast,
///    command the bridge, act on a local connection. A
///    [`StoreOp`](crate::StoreOp) record comes before the acknowledgement
///    that depends on it, so a shell that commits the records of one drain
///    before it sends that drain's transmissions is durable (group commit).
/// 3. **Ask [`poll_timeout`](Self::poll_timeout)** for the next deadline and
///    sleep until it or the next input, whichever comes first.
///
/// Every input carries `now`; the engine never reads a clock, so a test
/// drives it with a virtual one:
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::{Duration, Instant};
///
/// use sngate_core::{EngineConfig, Gateway, Output, Peer};
/// use sngate_wire::v1::{Packet, ReturnCode};
///
/// let start = Instant::now(); // the shell's clock; here, a virtual one
/// let mut gateway = Gateway::new(EngineConfig::default(), start);
/// let device = Peer::udp(SocketAddr::from(([127, 0, 0, 1], 40_000)));
///
/// // 1. An input: CONNECT, persistent session, keep-alive 10 s, client id "s1".
/// let connect = [8, 0x04, 0x00, 0x01, 0, 10, b's', b'1'];
/// gateway.handle_datagram(start, device.clone(), &connect);
///
/// // 2. Drain every output: here, the CONNACK to the device.
/// let mut outputs = Vec::new();
/// while let Some(output) = gateway.poll_output() {
///     outputs.push(output);
/// }
/// assert!(matches!(
///     outputs.as_slice(),
///     [Output::Transmit { to, packet: Packet::ConnAck { return_code: ReturnCode::Accepted } }]
///         if *to == device
/// ));
///
/// // 3. The next deadline: the keep-alive supervision (1.5 × 10 s).
/// let deadline = gateway.poll_timeout().expect("a connected device is supervised");
/// assert!(deadline > start && deadline <= start + Duration::from_secs(15));
///
/// // Silence until then: the device is lost (its session is kept for its return).
/// gateway.handle_timeout(deadline);
/// while gateway.poll_output().is_some() {}
/// assert_eq!(gateway.gauges().in_state("lost"), 1);
/// ```
pub struct Gateway {
    pub(super) cfg: EngineConfig,
    pub(super) sessions: HashMap<SessionId, Session>,
    pub(super) by_client: HashMap<Arc<str>, SessionId>,
    pub(super) by_peer: HashMap<Peer, SessionId>,
    /// The transport identity of each link address authenticated now (DTLS
    /// sessions: one entry per live session, added and removed by the
    /// driver through [`Gateway::handle_peer_authenticated`] and
    /// [`Gateway::handle_peer_closed`], so bounded by the DTLS listener's
    /// session limit).
    pub(super) identities: HashMap<crate::peer::LinkAddr, Arc<str>>,
    next_session: u64,
    pub(super) subscriptions: SubscriptionTrie<Subscriber>,
    /// How many sessions hold each filter, for upstream subscribe/unsubscribe.
    pub(super) filter_refs: HashMap<String, usize>,
    pub(super) retained: RetainedStore<RetainedMessage>,
    pub(super) predefined_by_id: HashMap<u16, Arc<str>>,
    pub(super) predefined_by_name: HashMap<Arc<str>, u16>,
    pub(super) queued_bytes_total: usize,
    /// How many more messages the upstream bridge can take (set by the driver).
    pub(super) upstream_room: usize,
    /// Sessions (device or local) with a PUBLISH parked for upstream room,
    /// oldest first; a local session appears once per parked message.
    pub(super) parked: VecDeque<SessionId>,
    /// The embedded broker's clients.
    pub(super) locals: LocalSessions,
    /// What to write to the durable store.
    pub(super) persist: Persistence,
    /// Outbox records waiting for the broker before they are written.
    pub(super) linger: super::linger::Linger,
    /// One entry per session with a deadline: (its earliest deadline, id).
    pub(super) timers: BTreeSet<(Instant, SessionId)>,
    next_advertise: Option<Instant>,
    outputs: VecDeque<Output>,
    match_buf: Vec<(Subscriber, u8)>,
    /// Per-device mode: the device whose message `route` is about to send
    /// upstream (set by `accept_publish`, taken by `route`).
    pub(super) publishing_as: Option<super::output::DeviceOrigin>,
    pub(super) stats: Stats,
    /// Shutting down: only acknowledgements are taken (see `drain.rs`).
    pub(super) draining: bool,
    /// Per-address token buckets for what creates state or comes from no
    /// session (sessions hold their own).
    limiter: SourceLimiter,
    /// Bytes of topic names in every device's topic table.
    pub(super) topic_bytes: super::topic_table::TopicBytes,
    /// Newly created sessions whose client has sent nothing since their
    /// CONNECT, by (connect sequence, id): evicted first, oldest first, at
    /// `max_clients` (see `on_connect`).
    pub(super) unproven: BTreeSet<(u64, SessionId)>,
    /// Numbers the entries of `unproven` in CONNECT order.
    pub(super) connect_seq: u64,
    /// At most one log line per period for the refusals input can repeat.
    pub(super) log_gates: LogGates,
    /// What the upstream broker takes (see `upstream_limits.rs`).
    pub(super) upstream_limits: Option<crate::upstream_limits::UpstreamLimits>,
    /// Device SUBACKs waiting for the broker's (see `suback_wait.rs`).
    pub(super) suback_wait: crate::suback_wait::SubackWait,
    /// A 2.0 CONNECT being handed to the engine: its peer and link, so the
    /// CONNACK goes out in 2.0 form (see `devices/v2.rs`).
    pub(super) v2_connecting: Option<(Peer, crate::devices::v2::V2Link)>,
    /// While a 2.0 packet is translated: what the engine answers that peer,
    /// kept back instead of sent.
    pub(super) v2_capture: Option<(Peer, Vec<Packet>)>,
    /// Numbers the client ids assigned to 2.0 devices that sent none.
    pub(super) v2_next_assigned: u64,
    /// While a 2.0 device's PUBLISH is routed: its session, whose own
    /// subscriptions with No Local do not get it back (`devices/v2.rs`).
    pub(super) v2_publisher: Option<SessionId>,
}

/// Most sources the rate limiter remembers at once (about 1 MiB at most);
/// see `core::rate_limit` for what forgetting one means.
pub const RATE_LIMIT_SOURCES: usize = 16_384;

/// How long a new session keeps its place at `max_clients` while its client
/// has said nothing after its CONNECT; after that it is the first to make
/// room for a newcomer (see `devices/lifecycle.rs`). Short, so a flood of
/// silent CONNECTs gives way within a second; long enough that more honest
/// devices than places, arriving together, do not evict each other before
/// their first word.
pub const UNPROVEN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Gateway {
    /// A gateway with no sessions, started at `now`.
    pub fn new(cfg: EngineConfig, now: Instant) -> Self {
        let next_advertise = cfg.advertise_interval.map(|_| now);
        let predefined = cfg.predefined_topics.clone();
        let mut gateway = Gateway {
            retained: RetainedStore::new(cfg.max_retained_messages),
            cfg,
            sessions: HashMap::new(),
            by_client: HashMap::new(),
            by_peer: HashMap::new(),
            identities: HashMap::new(),
            next_session: 0,
            subscriptions: SubscriptionTrie::new(),
            filter_refs: HashMap::new(),
            predefined_by_id: HashMap::new(),
            predefined_by_name: HashMap::new(),
            queued_bytes_total: 0,
            upstream_room: usize::MAX,
            parked: VecDeque::new(),
            locals: LocalSessions::default(),
            persist: Persistence::default(),
            linger: Default::default(),
            timers: BTreeSet::new(),
            next_advertise,
            outputs: VecDeque::new(),
            match_buf: Vec::new(),
            publishing_as: None,
            stats: Stats::default(),
            draining: false,
            limiter: SourceLimiter::new(RATE_LIMIT_SOURCES),
            topic_bytes: Default::default(),
            unproven: BTreeSet::new(),
            connect_seq: 0,
            log_gates: LogGates::default(),
            upstream_limits: None,
            suback_wait: Default::default(),
            v2_connecting: None,
            v2_capture: None,
            v2_publisher: None,
            v2_next_assigned: 0,
        };
        gateway.persist.enabled = gateway.cfg.persist;
        gateway.set_predefined_topics(predefined);
        gateway
    }

    /// The engine's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Sources the rate limiter remembers now (at most [`RATE_LIMIT_SOURCES`]).
    pub fn rate_limited_sources(&self) -> usize {
        self.limiter.tracked()
    }

    /// Number of sessions (in any state).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The state of `client_id`'s session, if there is one.
    pub fn client_state(&self, client_id: &str) -> Option<&ClientState> {
        let sid = self.by_client.get(client_id)?;
        self.sessions.get(sid).map(|s| &s.state)
    }

    /// Messages waiting for `client_id` (queued, not counting one in flight).
    pub fn queued_for(&self, client_id: &str) -> usize {
        self.by_client
            .get(client_id)
            .and_then(|sid| self.sessions.get(sid))
            .map_or(0, |s| s.queue.len())
    }

    /// Applies new settings while running (SIGHUP): limits, timers, protocol
    /// switches and the pre-defined topics take effect at once (limits on
    /// what arrives from now on). Three settings keep their start-up value,
    /// because they shaped state that exists: whether there is an upstream,
    /// the retained store's bound, and the ADVERTISE schedule.
    pub fn reconfigure(&mut self, cfg: EngineConfig) {
        let cfg = EngineConfig {
            upstream: self.cfg.upstream,
            persist: self.cfg.persist,
            max_retained_messages: self.cfg.max_retained_messages,
            advertise_interval: self.cfg.advertise_interval,
            ..cfg
        };
        self.set_predefined_topics(cfg.predefined_topics.clone());
        self.cfg = cfg;
    }

    /// Replaces the pre-defined topic table (e.g. on a configuration reload).
    pub fn set_predefined_topics(&mut self, topics: Vec<(u16, String)>) {
        self.predefined_by_id.clear();
        self.predefined_by_name.clear();
        for (id, name) in &topics {
            let name: Arc<str> = Arc::from(name.as_str());
            self.predefined_by_id.insert(*id, name.clone());
            self.predefined_by_name.insert(name, *id);
        }
        self.cfg.predefined_topics = topics;
    }

    // ----- inputs -----

    /// A datagram (or serial frame) arrived from `peer`.
    ///
    /// Decoded first (bounded by its size, which is checked before), then
    /// charged to its session's bucket or its source address's (see
    /// `core::rate_limit`), then handled.
    pub fn handle_datagram(&mut self, now: Instant, peer: Peer, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        // `max_packet_bytes` bounds the MQTT-SN message (inside a forwarder's
        // wrapper, if any): every name and payload a device can make the
        // gateway hold, and every message the bridge's room is counted in.
        let too_large = |gw: &mut Gateway, peer: &Peer, len: usize| {
            debug!(%peer, len, "dropping a message over max_packet_bytes");
            gw.stats.drop(DropReason::TooLarge);
        };
        if bytes.len() > self.cfg.max_packet_bytes + proto::MAX_ENCAPSULATION_OVERHEAD {
            return too_large(self, &peer, bytes.len());
        }
        // MQTT-SN 2.0 (`devices/v2.rs`): only what cannot be 1.2, or comes
        // from a 2.0 session; every 1.2 datagram goes on as before.
        if self.route_v2(now, &peer, bytes) {
            return;
        }
        // Who it is from (a forwarded node is a peer of its own), what it
        // is, and how long the MQTT-SN message is.
        let (from, decoded) = match proto::decode(bytes) {
            Ok(Packet::Encapsulated { node_id, inner, .. }) => {
                let wrapper = proto::header::total_len_for(2 + node_id.len());
                let inner_len = bytes.len().saturating_sub(wrapper);
                (peer.forwarded(node_id), Ok((*inner, inner_len)))
            }
            Ok(packet) => (peer, Ok((packet, bytes.len()))),
            Err(err) => (peer, Err(err)),
        };
        if !self.admit(now, &from, decoded.as_ref().ok().map(|(p, _)| p)) {
            return self.stats.drop(DropReason::RateLimited);
        }
        match decoded {
            Ok((_, len)) if len > self.cfg.max_packet_bytes => too_large(self, &from, len),
            Ok((packet, _)) => self.handle_packet(now, from, packet),
            Err(err) => self.on_decode_error(from, err),
        }
    }

    /// Charges a datagram from `from` to its bucket: its session's, or its
    /// source address's for what creates state or comes from no session
    /// (`core::rate_limit`). False: over the limit, to be dropped.
    pub(super) fn admit(&mut self, now: Instant, from: &Peer, packet: Option<&Packet>) -> bool {
        let sid = self.by_peer.get(from).copied();
        let admitted = match budget_for(packet, sid.is_some()) {
            Budget::Free => true,
            Budget::Session => {
                let limit = RateLimit {
                    packets_per_sec: self.cfg.per_session_packets_per_sec,
                    burst: self.cfg.per_session_burst,
                };
                sid.and_then(|sid| self.sessions.get_mut(&sid))
                    .is_none_or(|s| s.rate.take(now, limit))
            }
            Budget::Address => {
                let limit = RateLimit {
                    packets_per_sec: self.cfg.per_source_packets_per_sec,
                    burst: self.cfg.per_source_burst,
                };
                self.limiter.admit(now, &from.link, limit)
            }
        };
        if !admitted && let Some(suppressed) = self.log_gates.rate_limited.allow(now) {
            info!(peer = %from, session = sid.is_some(), suppressed, "rate limit: dropping datagrams (counted as rate_limited)");
        }
        admitted
    }

    /// A transport session (DTLS) was established with `link`, which proved
    /// `identity` (its PSK identity or certificate name): what it sends from
    /// now on is checked against the identity binding (`core::identity`).
    /// A session that was mapped to this address but is bound to another
    /// identity loses the mapping, so a new device at a reused address never
    /// speaks for the old one.
    pub fn handle_peer_authenticated(&mut self, link: crate::peer::LinkAddr, identity: Arc<str>) {
        self.detach_other_identities(&link, Some(&identity));
        self.identities.insert(link, identity);
    }

    /// The transport session with `link` ended (closed, timed out or
    /// evicted): the address no longer speaks for any identity, and a
    /// session mapped to it that is bound to an identity loses the mapping.
    pub fn handle_peer_closed(&mut self, link: &crate::peer::LinkAddr) {
        self.identities.remove(link);
        self.detach_other_identities(link, None);
    }

    /// Unmaps from `link` every session bound to an identity other than
    /// `identity`.
    fn detach_other_identities(
        &mut self,
        link: &crate::peer::LinkAddr,
        identity: Option<&Arc<str>>,
    ) {
        let stale: Vec<(Peer, SessionId)> =
            self.by_peer
                .iter()
                .filter(|(p, sid)| {
                    &p.link == link
                        && self.sessions.get(sid).is_some_and(|s| {
                            s.identity.is_some() && s.identity.as_ref() != identity
                        })
                })
                .map(|(p, sid)| (p.clone(), *sid))
                .collect();
        for (peer, sid) in stale {
            self.by_peer.remove(&peer);
            if let Some(s) = self.sessions.get_mut(&sid)
                && s.peer.as_ref() == Some(&peer)
            {
                s.peer = None;
            }
        }
    }

    /// The transport identity `peer` authenticated with, if any.
    pub(crate) fn identity_of(&self, peer: &Peer) -> Option<Arc<str>> {
        self.identities.get(&peer.link).cloned()
    }

    /// A decoded packet arrived from `peer`.
    pub fn handle_packet(&mut self, now: Instant, peer: Peer, packet: Packet) {
        self.trace_packet("received", &peer, &packet);
        if self.draining && !super::drain::taken_while_draining(&packet) {
            return self.refuse_while_draining(&peer, &packet);
        }
        let at = self.persist.enabled.then(|| peer.clone());
        match packet {
            Packet::SearchGw { radius } => self.on_searchgw(peer, radius),
            Packet::Connect {
                will,
                clean_session,
                protocol_id,
                duration,
                client_id,
            } => self.on_connect(
                now,
                peer,
                will,
                clean_session,
                protocol_id,
                duration,
                client_id,
            ),
            Packet::Publish {
                qos: QoS::MinusOne,
                topic,
                payload,
                retain,
                ..
            } => self.on_publish_minus_one(peer, PublishTarget::Ref(topic), payload, retain, now),
            Packet::PublishNamedMinusOne {
                topic_name,
                payload,
                retain,
                ..
            } => self.on_publish_minus_one(
                peer,
                PublishTarget::Name(topic_name),
                payload,
                retain,
                now,
            ),
            Packet::PingReq {
                client_id: Some(client_id),
            } => self.on_wake(now, peer, client_id),
            // Gateway-to-client and broadcast-only messages: not for us.
            Packet::Advertise { .. }
            | Packet::GwInfo { .. }
            | Packet::ConnAck { .. }
            | Packet::WillTopicReq
            | Packet::WillMsgReq
            | Packet::SubAck { .. }
            | Packet::UnsubAck { .. }
            | Packet::WillTopicResp { .. }
            | Packet::WillMsgResp { .. }
            | Packet::Encapsulated { .. } => {
                debug!(%peer, msg = %packet.msg_type(), "ignoring a message only a gateway sends");
                self.stats.drop(DropReason::OutOfState);
            }
            other => match self.by_peer.get(&peer).copied() {
                Some(sid) => self.handle_session_packet(now, sid, other),
                None => self.on_unknown_peer(peer, other),
            },
        }
        // CONNECT and wake-up change the session found at this address now.
        if let Some(sid) = at.and_then(|p| self.by_peer.get(&p).copied()) {
            self.touch(sid);
        }
    }

    /// Messages from the upstream broker, routed to local subscribers (all of
    /// them, or only those of `msg.filter`).
    pub fn handle_upstream(&mut self, now: Instant, msg: UpstreamMessage) {
        let topic: Arc<str> = Arc::from(msg.topic.as_str());
        let scope = msg.filter.as_deref();
        self.route(
            now,
            &topic,
            msg.payload,
            msg.qos,
            msg.retain,
            Origin::Upstream,
            scope,
        );
    }

    /// How many more messages the upstream bridge can take right now. While it
    /// is 0, a device's QoS 1/2 PUBLISH is held unacknowledged (the device
    /// keeps it); when room returns, held messages are routed and acknowledged
    /// in arrival order. The upstream copy of QoS 0 is dropped and counted.
    /// Without a bridge the room is unlimited.
    pub fn set_upstream_room(&mut self, now: Instant, room: usize) {
        self.upstream_room = room;
        while self.upstream_room > 0 {
            let Some(sid) = self.parked.pop_front() else {
                break;
            };
            let Some(s) = self.sessions.get_mut(&sid) else {
                self.release_parked_local(now, sid);
                continue;
            };
            let Some(parked) = s.parked.take() else {
                continue;
            };
            if s.state != ClientState::Active {
                // Gone meanwhile: never acknowledged, so the device still has it.
                continue;
            }
            self.commit_publish(now, sid, parked);
        }
    }

    /// True while device messages wait for upstream room.
    pub fn has_parked_publishes(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Time has passed: fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.next_advertise
            && at <= now
        {
            self.advertise();
            let interval = self.cfg.advertise_interval.unwrap_or_default();
            self.next_advertise = Some(now + interval);
        }
        // Take every due entry first, then fire each session once: whatever a
        // handler does to its deadlines, one call always ends.
        let mut due = Vec::new();
        while let Some(&(at, sid)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(session) = self.sessions.get_mut(&sid) {
                session.armed = None;
                due.push(sid);
            }
        }
        for sid in due {
            self.on_session_timer(now, sid);
            self.arm(sid);
        }
        self.expire_local_sessions(now);
        self.expire_subacks(now);
        self.write_lingering(now, false);
    }

    // ----- outputs -----

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.first().map(|(at, _)| *at),
            self.next_advertise,
            self.next_local_expiry(),
            self.next_suback_deadline(),
            self.linger.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- plumbing shared by the handlers -----

    pub(super) fn transmit(&mut self, to: Peer, packet: Packet) {
        self.transmit_at(None, to, packet);
    }

    /// [`transmit`](Self::transmit), as the output at position `at` when
    /// given (at most the end), else last. A 2.0 device's packets are
    /// translated (`devices/v2.rs`); while its own packet is being handled
    /// they are captured, and one sent ahead (`at` given) goes first.
    fn transmit_at(&mut self, at: Option<usize>, to: Peer, packet: Packet) {
        if let Some((peer, kept)) = &mut self.v2_capture
            && *peer == to
        {
            return match at {
                Some(_) => kept.insert(0, packet),
                None => kept.push(packet),
            };
        }
        if let Some(link) = self.v2_link_for(&to) {
            let before = self.outputs.len();
            self.send_as_v2(&link, to, packet);
            // Sent ahead: its one translated output moves to `at`.
            if let Some(at) = at
                && at < before
                && self.outputs.len() == before + 1
                && let Some(out) = self.outputs.pop_back()
            {
                self.outputs.insert(at, out);
            }
            return;
        }
        self.trace_packet("sent", &to, &packet);
        self.stats.packets_out += 1;
        let at = at.unwrap_or(usize::MAX).min(self.outputs.len());
        self.outputs.insert(at, Output::Transmit { to, packet });
    }

    /// The packet trace: one line per packet received or sent, at trace
    /// level under the target `sngate_core::packets` (like `mosquitto -v`),
    /// for every client or only `trace_client`. Costs one check when off.
    fn trace_packet(&self, dir: &'static str, peer: &Peer, packet: &Packet) {
        if !tracing::enabled!(target: "sngate_core::packets", tracing::Level::TRACE) {
            return;
        }
        let client: Option<&str> = match packet {
            Packet::Connect { client_id, .. } => Some(client_id),
            _ => self
                .by_peer
                .get(peer)
                .and_then(|sid| self.sessions.get(sid))
                .map(|s| &*s.client_id),
        };
        if let Some(only) = &self.cfg.trace_client
            && client != Some(only.as_str())
        {
            return;
        }
        tracing::trace!(
            target: "sngate_core::packets",
            client = %client.unwrap_or("-"),
            %peer,
            "{dir} {}: {packet:?}",
            packet.msg_type()
        );
    }

    /// Whether an output from position `at` on goes to `sid`'s peer.
    pub(super) fn emitted_to_since(&self, at: usize, sid: SessionId) -> bool {
        let Some(peer) = self.sessions.get(&sid).and_then(|s| s.peer.as_ref()) else {
            return false;
        };
        self.outputs.iter().skip(at).any(|o| match o {
            Output::Transmit { to, .. } | Output::TransmitV2 { to, .. } => to == peer,
            _ => false,
        })
    }

    /// How many outputs wait: a position for [`send_to_before`](Self::send_to_before).
    pub(super) fn output_mark(&self) -> usize {
        self.outputs.len()
    }

    /// Sends `packet` to `sid`'s peer ahead of the outputs from `at` on
    /// (their count when the caller started): an acknowledgement that must
    /// reach the device before what its own message caused (the PUBACK
    /// before that message's delivery back to the same device, as Paho's
    /// clients expect). Store records are not outputs, so durability is
    /// unchanged: the driver commits them before carrying out any output.
    pub(super) fn send_to_before(&mut self, at: usize, sid: SessionId, packet: Packet) {
        if let Some(peer) = self.sessions.get(&sid).and_then(|s| s.peer.clone()) {
            self.transmit_at(Some(at), peer, packet);
        }
    }

    /// Sends `packet` to the session's current peer, if it has one.
    pub(super) fn send_to(&mut self, sid: SessionId, packet: Packet) {
        if let Some(peer) = self.sessions.get(&sid).and_then(|s| s.peer.clone()) {
            self.transmit(peer, packet);
        }
    }

    pub(super) fn push_output(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    pub(super) fn upstream(&mut self, cmd: UpstreamCommand) {
        self.outputs.push_back(Output::Upstream(cmd));
    }

    /// Keeps the session's one timer entry at its earliest deadline (or
    /// removes it when it has none), so the timer set holds at most one entry
    /// per session whatever the message rate.
    pub(super) fn arm(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let next = session.next_deadline();
        if next == session.armed {
            return;
        }
        if let Some(old) = session.armed {
            self.timers.remove(&(old, sid));
        }
        if let Some(at) = next {
            self.timers.insert((at, sid));
        }
        session.armed = next;
    }

    /// Removes the session's timer entry (it is being removed).
    pub(super) fn disarm(&mut self, sid: SessionId) {
        if let Some(at) = self.sessions.get_mut(&sid).and_then(|s| s.armed.take()) {
            self.timers.remove(&(at, sid));
        }
    }

    /// Number of timer entries (at most one per session).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    pub(super) fn new_session_id(&mut self) -> SessionId {
        self.next_session += 1;
        SessionId(self.next_session)
    }

    /// The topic name a device's topic reference stands for, for that device.
    pub(super) fn resolve_topic(
        &self,
        session: Option<&Session>,
        topic: &TopicRef,
    ) -> Result<Arc<str>, ReturnCode> {
        match topic {
            TopicRef::Id(0) | TopicRef::Id(0xFFFF) => Err(ReturnCode::InvalidTopicId),
            TopicRef::Id(id) => session
                .and_then(|s| s.topics.name(*id).cloned())
                .ok_or(ReturnCode::InvalidTopicId),
            TopicRef::Predefined(id) => self.predefined_name(*id),
            TopicRef::Short(bytes) => short_name(bytes),
        }
    }

    /// The name of pre-defined topic `id`, or "invalid topic id" (trap T-16).
    pub(super) fn predefined_name(&self, id: u16) -> Result<Arc<str>, ReturnCode> {
        self.predefined_by_id
            .get(&id)
            .cloned()
            .ok_or(ReturnCode::InvalidTopicId)
    }

    /// Delivers a message to every matching subscriber, updates the retained
    /// store, and hands device messages to the upstream bridge.
    ///
    /// With `scope`, only sessions subscribed to exactly that filter receive
    /// it. Devices' live messages reach subscribers with the retain flag
    /// cleared (MQTT 3.1.1); an upstream message keeps its flag (the bridge
    /// subscribes with Retain As Published, so it means "held as retained").
    #[allow(clippy::too_many_arguments)]
    pub(super) fn route(
        &mut self,
        now: Instant,
        topic: &Arc<str>,
        payload: Bytes,
        qos: u8,
        retain: bool,
        origin: Origin,
        scope: Option<&str>,
    ) {
        // The broker's retained answer to a new upstream subscription, equal to
        // what the local store held: the subscribers of that filter already
        // got it from the store when they subscribed (no second copy).
        let already_delivered = scope.is_some()
            && retain
            && self
                .retained
                .get(topic)
                .is_some_and(|m| m.payload == payload);
        if retain {
            // The gateway's own `$SYS` status is published again after a
            // restart: never written (it would cost a commit per interval).
            if origin != Origin::Internal {
                self.touch_retained(topic);
            }
            if payload.is_empty() {
                self.retained.remove(topic);
            } else if let Err(full) = self.retained.set_weighed(
                topic,
                RetainedMessage {
                    payload: payload.clone(),
                    qos,
                },
                payload.len(),
                self.cfg.max_retained_bytes,
            ) {
                debug!(%topic, error = %full, "retained message not stored");
                self.stats.limit_hit(full.limit());
            }
        }
        if already_delivered {
            return;
        }
        if self.cfg.upstream && matches!(origin, Origin::Device | Origin::Local | Origin::Will) {
            // A will cannot wait for room (its client is gone): it goes up
            // regardless, into the headroom the bridge keeps for it.
            if self.upstream_room > 0 || origin == Origin::Will {
                self.upstream_room = self.upstream_room.saturating_sub(1);
                self.stats.upstream_out += 1;
                let from = if origin == Origin::Device {
                    self.publishing_as.take()
                } else {
                    None
                };
                let mut from = from;
                let device = from.as_ref().map(|f| f.client_id.clone());
                // A device's message may linger (its acknowledgement waits
                // for the broker or the store, linger.rs); a local client's
                // or a will's is written before it goes up.
                let linger = (origin == Origin::Device).then_some(now);
                let store_id =
                    self.outbox_id(topic, &payload, qos, retain, device.as_deref(), linger);
                if let Some(f) = from.as_mut()
                    && let Some(ack) = f.ack.as_mut()
                {
                    ack.store_id = store_id.unwrap_or(0);
                    if let Some(id) = store_id {
                        let (client_id, ack) = (f.client_id.clone(), *ack);
                        self.hold_token(id, client_id, ack);
                    }
                }
                self.upstream(UpstreamCommand::Publish {
                    topic: topic.to_string(),
                    payload: payload.clone(),
                    qos,
                    retain,
                    store_id,
                    from,
                });
            } else {
                // Only QoS 0 gets here: QoS 1/2 wait for room (see on_publish).
                self.stats.drop(DropReason::UpstreamFull);
            }
        }
        let mut matches = std::mem::take(&mut self.match_buf);
        self.subscriptions.matches(topic, &mut matches);
        let delivered_retain = retain && origin == Origin::Upstream;
        // Per-device mode: devices get the broker's messages on their own
        // sessions (handle_session_message), not from the shared one.
        let devices_skipped = origin == Origin::Upstream && self.per_device();
        for &(sub, sub_qos) in &matches {
            if devices_skipped && matches!(sub, Subscriber::Device(_)) {
                continue;
            }
            if !self.acl_may_read(sub, topic) {
                continue;
            }
            match sub {
                Subscriber::Device(sid)
                    if origin == Origin::Device
                        && self.v2_publisher == Some(sid)
                        && self.no_local_for(sid, topic) => {}
                Subscriber::Device(sid) => {
                    // Scoped: only subscribers of that filter, at its QoS.
                    let granted = match scope {
                        None => sub_qos,
                        Some(filter) => match self.sessions.get(&sid).and_then(|s| {
                            // A 2.0 device's Retain Handling may refuse the
                            // broker's retained answer to its subscription.
                            let withheld = retain
                                && s.v2.as_ref().is_some_and(|l| l.withholds_retained(filter));
                            s.subscriptions.get(filter).filter(|_| !withheld)
                        }) {
                            Some(&q) => q,
                            None => continue,
                        },
                    };
                    // A live message published retained: a 2.0 device's
                    // Retain As Published decides its flag. Otherwise (the
                    // retained answer to a subscription, or not retained)
                    // the 1.2 rule.
                    let retain = if retain && scope.is_none() {
                        self.live_retain_flag(sid, topic, retain, delivered_retain)
                    } else {
                        delivered_retain
                    };
                    let delivery = Delivery {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        qos: qos.min(granted),
                        retain,
                        reregistered: false,
                        sent_as: None,
                        store_id: None,
                        downlink: None,
                    };
                    self.enqueue(now, sid, delivery);
                }
                Subscriber::Local(sid) => {
                    let granted = match scope {
                        None => sub_qos,
                        Some(filter) => match self
                            .locals
                            .sessions
                            .get(&sid)
                            .and_then(|s| s.subscriptions.get(filter))
                        {
                            Some(&q) => q,
                            None => continue,
                        },
                    };
                    let delivery = LocalDelivery {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        qos: qos.min(granted),
                        retain: delivered_retain,
                        store_id: None,
                    };
                    self.deliver_local(sid, delivery);
                }
            }
        }
        self.match_buf = matches;
    }

    fn on_decode_error(&mut self, peer: Peer, err: DecodeError) {
        debug!(%peer, error = %err, "dropping malformed datagram");
        self.stats.drop(DropReason::Malformed);
        // A reserved topic id type still gets the spec's answer (trap T-16).
        if let DecodeError::ReservedTopicIdType { msg_type, msg_id } = err
            && self.by_peer.contains_key(&peer)
        {
            let answer = match msg_type {
                MsgType::Publish => Packet::PubAck {
                    topic_id: 0,
                    msg_id,
                    return_code: ReturnCode::NotSupported,
                },
                MsgType::Subscribe => Packet::SubAck {
                    qos: QoS::AtMostOnce,
                    topic_id: 0,
                    msg_id,
                    return_code: ReturnCode::NotSupported,
                },
                _ => return,
            };
            self.transmit(peer, answer);
        }
    }

    fn on_unknown_peer(&mut self, peer: Peer, packet: Packet) {
        debug!(%peer, msg = %packet.msg_type(), "message from a peer with no session");
        self.stats.drop(DropReason::UnknownPeer);
        // The spec lets the gateway tell a client it cannot map to CONNECT again
        // (v1.2 §6.13); do so for requests, never for acknowledgements or
        // DISCONNECT, so two confused parties cannot ping-pong.
        if matches!(
            packet,
            Packet::Publish { .. }
                | Packet::Register { .. }
                | Packet::Subscribe { .. }
                | Packet::Unsubscribe { .. }
                | Packet::PingReq { .. }
                | Packet::WillTopicUpd(_)
                | Packet::WillMsgUpd { .. }
        ) {
            self.transmit(peer, Packet::Disconnect { duration: None });
        }
    }

    fn on_searchgw(&mut self, peer: Peer, radius: u8) {
        if !self.cfg.answer_searchgw {
            return;
        }
        self.stats.packets_out += 1;
        self.outputs.push_back(Output::Broadcast {
            packet: Packet::GwInfo {
                gw_id: self.cfg.gateway_id,
                gw_addr: Bytes::new(),
            },
            radius,
            requester: Some(peer),
        });
    }

    fn advertise(&mut self) {
        let secs = self
            .cfg
            .advertise_interval
            .map_or(0, |d| d.as_secs().min(u64::from(u16::MAX)) as u16);
        self.stats.packets_out += 1;
        self.outputs.push_back(Output::Broadcast {
            packet: Packet::Advertise {
                gw_id: self.cfg.gateway_id,
                duration: secs,
            },
            radius: 0,
            requester: None,
        });
    }

    /// Fires whatever is due for one session.
    fn on_session_timer(&mut self, now: Instant, sid: SessionId) {
        self.touch(sid);
        let Some(session) = self.sessions.get(&sid) else {
            return;
        };
        let retry_due = session.retry_deadline().is_some_and(|d| d <= now);
        let supervision_due = session.supervision_deadline().is_some_and(|d| d <= now);
        let connecting = matches!(session.state, ClientState::Connecting(_));
        let gone = matches!(session.state, ClientState::Disconnected | ClientState::Lost);
        if supervision_due {
            if session.state == ClientState::Connecting(super::session::Handshake::AwaitUpstream) {
                tracing::info!(client = %session.client_id, "upstream session not up in time: device accepted, working offline");
                self.accept_connect(now, sid);
            } else if connecting {
                self.abort_handshake(sid, "will handshake timed out");
            } else if gone {
                debug!(client = %session.client_id, "session expired");
                self.stats.sessions_expired += 1;
                self.remove_session(sid);
            } else {
                self.lose(now, sid, "keep-alive or sleep timer expired");
            }
            return;
        }
        if retry_due {
            self.retry(now, sid);
        }
    }
}

/// A short topic name as a topic name: its two bytes must be UTF-8 and a
/// valid name (wildcards mean nothing in a short name, trap T-15), else
/// "not supported".
pub(super) fn short_name(bytes: &[u8; 2]) -> Result<Arc<str>, ReturnCode> {
    let name = std::str::from_utf8(bytes).map_err(|_| ReturnCode::NotSupported)?;
    super::topic::validate_name(name).map_err(|_| ReturnCode::NotSupported)?;
    Ok(Arc::from(name))
}

/// Where a routed message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// An MQTT-SN device (goes upstream too, within the bridge's room).
    Device,
    /// A lost device's will (goes upstream even without room).
    Will,
    /// A lost device's will that its own upstream session carries
    /// (per-device mode): the broker publishes it, so local subscribers only.
    SessionWill,
    /// The upstream broker (never sent back up).
    Upstream,
    /// A local MQTT client of the embedded broker (goes upstream too).
    Local,
    /// The gateway itself (`$SYS/…`): local subscribers only.
    Internal,
}

/// The topic of a QoS −1 publish.
pub(super) enum PublishTarget {
    /// By pre-defined id or short name.
    Ref(TopicRef),
    /// By full name (trap T-14).
    Name(String),
}
