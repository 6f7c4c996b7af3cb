//! Read-only views of the engine for operators: the figures behind the
//! shell's `/metrics` (device counts by state and transport, what is buffered,
//! in flight and parked) and the device list behind `/status`.
//!
//! Sans-IO like the rest of `core/`: nothing here reads a clock; ages are
//! computed from the `now` the caller passes, and turning them into wall
//! time is the shell's business. Each view is an owned copy, so the driver
//! can hand it to another task and the engine goes on at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gateway::Gateway;
use super::peer::{LinkAddr, Peer};
use super::session::{ClientState, Session};
use super::stats::count_one;

/// How a device reaches the gateway, for counting and display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Directly over UDP.
    Udp,
    /// Directly over a serial link (a radio address or the port itself).
    Serial,
    /// Behind a forwarder (encapsulated), over either link.
    Forwarded,
    /// No current address (another client took it over).
    None,
}

impl Transport {
    /// Every transport, for exporting all counts (zeros included).
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Serial,
        Transport::Forwarded,
        Transport::None,
    ];

    /// How the device at `peer` is reached.
    pub fn of(peer: Option<&Peer>) -> Transport {
        match peer {
            None => Transport::None,
            Some(Peer { node: Some(_), .. }) => Transport::Forwarded,
            Some(Peer {
                link: LinkAddr::Udp { .. },
                ..
            }) => Transport::Udp,
            Some(_) => Transport::Serial,
        }
    }

    /// A lower-case label for metrics and status.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Serial => "serial",
            Transport::Forwarded => "forwarded",
            Transport::None => "none",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The labels of every [`ClientState`], in the order of
/// [`EngineGauges::by_state`].
pub const DEVICE_STATES: [&str; 6] = [
    "connecting",
    "active",
    "asleep",
    "awake",
    "disconnected",
    "lost",
];

fn state_index(state: &ClientState) -> usize {
    match state {
        ClientState::Connecting(_) => 0,
        ClientState::Active => 1,
        ClientState::Asleep => 2,
        ClientState::Awake => 3,
        ClientState::Disconnected => 4,
        ClientState::Lost => 5,
    }
}

/// The engine's gauges: what it holds right now (counters are in
/// [`Stats`](super::Stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineGauges {
    /// Sessions in any state.
    pub sessions: usize,
    /// Sessions by state, indexed like [`DEVICE_STATES`].
    pub by_state: [usize; 6],
    /// Sessions by transport, indexed like [`Transport::ALL`].
    pub by_transport: [usize; 4],
    /// Messages queued for devices (not counting the ones in flight).
    pub buffered_messages: usize,
    /// Payload bytes queued for devices.
    pub buffered_bytes: usize,
    /// Exchanges in flight to devices (REGISTER, QoS 1/2 PUBLISH, PUBREL).
    pub in_flight: usize,
    /// Device QoS 1/2 messages held unacknowledged for upstream room.
    pub parked_publishes: usize,
    /// Retained messages stored.
    pub retained_messages: usize,
    /// Subscriptions over all sessions.
    pub subscriptions: usize,
}

impl EngineGauges {
    /// Sessions in the state labelled `label` (see [`DEVICE_STATES`]).
    pub fn in_state(&self, label: &str) -> usize {
        DEVICE_STATES
            .iter()
            .position(|l| *l == label)
            .and_then(|i| self.by_state.get(i).copied())
            .unwrap_or(0)
    }

    /// Sessions reached over `transport`.
    pub fn over(&self, transport: Transport) -> usize {
        self.by_transport
            .get(transport.index())
            .copied()
            .unwrap_or(0)
    }
}

/// One device as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// Its client id.
    pub client_id: Arc<str>,
    /// Its state's label (see [`DEVICE_STATES`]).
    pub state: &'static str,
    /// How it is reached.
    pub transport: Transport,
    /// Where it was last heard from (`None` once another client took the
    /// address).
    pub peer: Option<Peer>,
    /// How long ago it was last heard from (or its sleep timer restarted).
    pub last_seen_ago: Duration,
    /// The keep-alive in force.
    pub keep_alive: Duration,
    /// CleanSession of its last CONNECT.
    pub clean_session: bool,
    /// Its subscriptions (filter, granted QoS), sorted by filter.
    pub subscriptions: Vec<(String, u8)>,
    /// Messages queued for it (not counting one in flight).
    pub buffered_messages: usize,
    /// Payload bytes queued for it.
    pub buffered_bytes: usize,
    /// Whether an exchange towards it awaits its acknowledgement.
    pub in_flight: bool,
    /// The MQTT-SN version of its last CONNECT: `"1.2"` or `"2.0"`.
    pub protocol_version: &'static str,
}

impl DeviceView {
    fn of(s: &Session, now: Instant) -> Self {
        let subscriptions = s.sorted_subscriptions();
        DeviceView {
            protocol_version: if s.v2.is_some() { "2.0" } else { "1.2" },
            client_id: s.client_id.clone(),
            state: s.state.label(),
            transport: Transport::of(s.peer.as_ref()),
            peer: s.peer.clone(),
            last_seen_ago: now.saturating_duration_since(s.last_seen),
            keep_alive: s.keep_alive,
            clean_session: s.clean_session,
            subscriptions,
            buffered_messages: s.queue.len(),
            buffered_bytes: s.queued_bytes,
            in_flight: s.inflight.is_some(),
        }
    }
}

impl Gateway {
    /// The engine's gauges right now. Walks every session once (about a
    /// millisecond for 100,000), so it is for scrapes, not for every packet.
    pub fn gauges(&self) -> EngineGauges {
        let mut g = EngineGauges {
            sessions: self.sessions.len(),
            buffered_bytes: self.queued_bytes_total,
            parked_publishes: self.parked.len(),
            retained_messages: self.retained.len(),
            ..EngineGauges::default()
        };
        for s in self.sessions.values() {
            count_one(&mut g.by_state, state_index(&s.state));
            count_one(&mut g.by_transport, Transport::of(s.peer.as_ref()).index());
            g.buffered_messages += s.queue.len();
            g.in_flight += usize::from(s.inflight.is_some());
            g.subscriptions += s.subscriptions.len();
        }
        g
    }

    /// Every device, sorted by client id; ages are relative to `now`.
    pub fn devices(&self, now: Instant) -> Vec<DeviceView> {
        let mut all: Vec<DeviceView> = self
            .sessions
            .values()
            .map(|s| DeviceView::of(s, now))
            .collect();
        all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        all
    }

    /// One device by client id; its age relative to `now`.
    pub fn device(&self, client_id: &str, now: Instant) -> Option<DeviceView> {
        let sid = self.by_client.get(client_id)?;
        self.sessions.get(sid).map(|s| DeviceView::of(s, now))
    }
}
