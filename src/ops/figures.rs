//! What `/metrics` shows: a [`MetricsSnapshot`] is a list of sections, each a
//! plain copy of one component's figures taken on the driver task, rendered
//! to text later on the HTTP task. Every family is named `sngate_…`, with
//! its unit in the name and `_total` on counters.
//!
//! To add a component's figures: give it a
//! struct of plain numbers, `impl Collect` for it (a few
//! `out.counter(…).sample(…)` lines), and push one in the driver's
//! `metrics()` (`src/driver/ops.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use super::exposition::{Collect, Exposition};
use crate::bridge::BridgeStats;
use crate::broker::BrokerCounts;
use crate::core::snapshot::DEVICE_STATES;
use crate::core::stats::QOS_LEVELS;
use crate::core::{DropReason, EngineGauges, Stats, Transport};
use crate::driver::StoreCounters;
use crate::transport::serial::SerialCounts;

/// Everything `/metrics` shows, as sections.
#[derive(Default)]
pub struct MetricsSnapshot {
    sections: Vec<Box<dyn Collect>>,
}

impl MetricsSnapshot {
    /// No sections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a section.
    pub fn push(&mut self, section: impl Collect + 'static) {
        self.sections.push(Box::new(section));
    }

    /// The page, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Exposition::new();
        for section in &self.sections {
            section.collect(&mut out);
        }
        out.finish()
    }
}

/// The process: version, gateway id, uptime, whether it is shutting down.
#[derive(Debug, Clone)]
pub struct ProcessFigures {
    /// The gateway id in force.
    pub gateway_id: u8,
    /// Time since start.
    pub uptime: Duration,
    /// The shutdown drain is under way.
    pub shutting_down: bool,
}

impl Collect for ProcessFigures {
    fn collect(&self, out: &mut Exposition) {
        let id = self.gateway_id.to_string();
        out.gauge(
            "sngate_info",
            "Always 1; the labels say which sngate this is.",
        )
        .sample(
            &[("version", env!("CARGO_PKG_VERSION")), ("gateway_id", &id)],
            1u64,
        );
        out.gauge(
            "sngate_uptime_seconds",
            "Seconds since the gateway started.",
        )
        .value(self.uptime.as_secs_f64());
        out.gauge(
            "sngate_shutting_down",
            "1 while the shutdown drain is under way.",
        )
        .value(self.shutting_down);
    }
}

/// The engine's counters and gauges.
#[derive(Debug, Clone)]
pub struct EngineFigures {
    /// Its counters.
    pub stats: Stats,
    /// Its gauges.
    pub gauges: EngineGauges,
}

/// Labels of the QoS levels, in the order of the `*_by_qos` arrays
/// ([`QOS_LEVELS`]).
const QOS_LABELS: [&str; QOS_LEVELS.len()] = ["-1", "0", "1", "2"];

impl Collect for EngineFigures {
    fn collect(&self, out: &mut Exposition) {
        let (s, g) = (&self.stats, &self.gauges);
        let mut f = out.gauge("sngate_devices", "Device sessions by state.");
        for (label, n) in DEVICE_STATES.iter().zip(g.by_state) {
            f.sample(&[("state", label)], n);
        }
        let mut f = out.gauge(
            "sngate_devices_by_transport",
            "Device sessions by how they are reached (none: their address was taken over).",
        );
        for t in Transport::ALL {
            f.sample(&[("transport", t.label())], g.over(t));
        }
        let mut f = out.counter(
            "sngate_messages_total",
            "PUBLISH messages from devices (in) and to devices (out, first transmissions), by QoS.",
        );
        for (qos, n) in QOS_LABELS.iter().zip(s.publishes_in_by_qos) {
            f.sample(&[("direction", "in"), ("qos", qos)], n);
        }
        for (qos, n) in QOS_LABELS.iter().zip(s.publishes_out_by_qos) {
            f.sample(&[("direction", "out"), ("qos", qos)], n);
        }
        let mut f = out.counter(
            "sngate_drops_total",
            "Packets and messages the engine dropped, by reason.",
        );
        for r in DropReason::ALL {
            f.sample(&[("reason", r.label())], s.drops(r));
        }
        out.counter(
            "sngate_packets_total",
            "MQTT-SN packets received (before decoding) and sent, all transports.",
        )
        .sample(&[("direction", "in")], s.datagrams_in)
        .sample(&[("direction", "out")], s.packets_out);
        out.counter(
            "sngate_retransmissions_total",
            "Messages sent again to devices after T_RETRY.",
        )
        .value(s.retransmissions);
        out.counter("sngate_wills_published_total", "Wills published.")
            .value(s.wills_published);
        out.counter(
            "sngate_upstream_handoffs_total",
            "Messages the engine handed to the upstream bridge.",
        )
        .value(s.upstream_out);
        out.counter(
            "sngate_device_session_messages_total",
            "Per-device mode: messages delivered to devices from their own upstream sessions.",
        )
        .value(s.session_messages_in);

        out.gauge(
            "sngate_buffered_messages",
            "Messages queued for devices (asleep, offline, or behind one in flight).",
        )
        .value(g.buffered_messages);
        out.gauge("sngate_buffered_bytes", "Payload bytes queued for devices.")
            .value(g.buffered_bytes);
        out.gauge(
            "sngate_in_flight_messages",
            "Exchanges to devices awaiting their acknowledgement.",
        )
        .value(g.in_flight);
        out.gauge(
            "sngate_parked_publishes",
            "Device QoS 1/2 messages held unacknowledged until the bridge has room.",
        )
        .value(g.parked_publishes);
        out.counter(
            "sngate_parked_publishes_total",
            "Device QoS 1/2 messages that had to wait for bridge room.",
        )
        .value(s.publishes_parked);
        out.counter(
            "sngate_outbox_writes_saved_total",
            "Device messages bound upstream the broker acknowledged within [store] linger_ms: never written to disk.",
        )
        .value(s.outbox_writes_saved);
        out.counter(
            "sngate_outbox_writes_lingered_total",
            "Device messages bound upstream written to disk after the linger (the broker was slow or away).",
        )
        .value(s.outbox_writes_lingered);
        out.counter(
            "sngate_sessions_expired_total",
            "Sessions removed after session_expiry_secs.",
        )
        .value(s.sessions_expired);
        out.counter(
            "sngate_sessions_evicted_total",
            "Offline sessions removed to make room at max_clients.",
        )
        .value(s.sessions_evicted);
        out.counter(
            "sngate_sessions_evicted_unproven_total",
            "Of those, sessions whose client sent nothing after its CONNECT (evicted first).",
        )
        .value(s.unproven_evicted);
        out.gauge("sngate_subscriptions", "Device subscriptions.")
            .value(g.subscriptions);
        out.gauge("sngate_retained_messages", "Retained messages stored.")
            .value(g.retained_messages);
    }
}

/// The limits in force and the refusals at them.
///
/// Every configured limit is a sample of one gauge family, labelled with its
/// configuration key, so an alert can compare a figure with its bound
/// (`sngate_buffered_bytes / on(…) sngate_limit{limit="limits.max_queued_bytes_total"}`).
/// Refusals are counted here for the limits with no drop reason of their
/// own; the others are counted only where their drops are (the queue
/// limits in `sngate_drops_total{reason="queue_full"}`, `max_packet_bytes`
/// in `too_large`, the per-source rate in `rate_limited`, the broker's
/// queue in `sngate_broker_dropped_total{reason="slow_client"}`, the
/// upstream outbox in `sngate_upstream_dropped_total{reason="outbox_full"}`
/// and `sngate_parked_publishes_total`). Some refusals counted here are
/// also in a wider family: a local client at `limits.max_clients` and
/// every `broker.max_connections` one in
/// `sngate_broker_connects_refused_total`, `broker.max_packet_bytes` in
/// `sngate_broker_protocol_errors_total`, and a delivery dropped at
/// `limits.max_topics_per_client` in
/// `sngate_drops_total{reason="refused_by_device"}`.
#[derive(Debug, Clone, Default)]
pub struct LimitFigures {
    /// (configuration key, value) of each limit in force. Units are the
    /// key's (`_bytes`, `_per_sec`, else a count); 0 where the key says 0
    /// means no limit.
    pub maxima: Vec<(&'static str, u64)>,
    /// (configuration key, refusals at that limit).
    pub hits: Vec<(&'static str, u64)>,
}

impl Collect for LimitFigures {
    fn collect(&self, out: &mut Exposition) {
        let mut f = out.gauge(
            "sngate_limit",
            "Configured limits in force, by configuration key (units as the key names them; 0 is no limit where the key allows it).",
        );
        for (key, value) in &self.maxima {
            f.sample(&[("limit", key)], *value);
        }
        let mut f = out.counter(
            "sngate_limit_hits_total",
            "Refusals at a configured limit with no drop reason of its own, by configuration key (some also count in a wider family, e.g. sngate_broker_connects_refused_total).",
        );
        for (key, n) in &self.hits {
            f.sample(&[("limit", key)], *n);
        }
    }
}

/// Where the upstream bridge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamState {
    /// No `[upstream]` configured.
    None,
    /// Connected to the broker.
    Connected,
    /// Not connected; reconnecting.
    Disconnected,
    /// The bridge task has ended.
    Stopped,
}

impl UpstreamState {
    /// A lower-case label for status.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamState::None => "none",
            UpstreamState::Connected => "connected",
            UpstreamState::Disconnected => "disconnected",
            UpstreamState::Stopped => "stopped",
        }
    }
}

/// The upstream bridge's figures (only when one is configured).
#[derive(Debug, Clone)]
pub struct UpstreamFigures {
    /// Its state.
    pub state: UpstreamState,
    /// Its counters (zeros once it has stopped).
    pub stats: BridgeStats,
}

impl Collect for UpstreamFigures {
    fn collect(&self, out: &mut Exposition) {
        let s = &self.stats;
        out.gauge(
            "sngate_upstream_connected",
            "1 while connected to the upstream broker.",
        )
        .value(self.state == UpstreamState::Connected);
        out.counter(
            "sngate_upstream_connects_total",
            "Connections accepted by the upstream broker, the first included.",
        )
        .value(s.connects);
        out.counter(
            "sngate_upstream_reconnects_total",
            "Connections to the upstream broker after the first.",
        )
        .value(s.reconnects);
        out.counter(
            "sngate_upstream_connection_errors_total",
            "Failed connection attempts and broken connections.",
        )
        .value(s.connection_errors);
        out.counter(
            "sngate_upstream_messages_total",
            "Messages taken by the broker (out: QoS 0 written, QoS 1/2 acknowledged) and received from it (in).",
        )
        .sample(&[("direction", "out")], s.published)
        .sample(&[("direction", "in")], s.received);
        out.counter(
            "sngate_upstream_dropped_total",
            "Messages the bridge dropped, by reason.",
        )
        .sample(&[("reason", "offline")], s.dropped_offline)
        .sample(&[("reason", "outbox_full")], s.dropped_full)
        .sample(&[("reason", "rejected")], s.rejected);
        out.counter(
            "sngate_upstream_quarantined_total",
            "Messages the broker refused (reason code, a CONNACK limit, or the connection closed on them twice), put in the dead-letter record (see /status).",
        )
        .value(s.quarantined);
        out.counter(
            "sngate_upstream_filters_refused_total",
            "Subscription filters the upstream broker refused (SUBACK, or the connection closed on them twice), removed from the upstream set.",
        )
        .value(s.filters_refused);
        out.counter(
            "sngate_upstream_not_bridged_total",
            "Messages no bridge rule lets through, by direction.",
        )
        .sample(&[("direction", "out")], s.not_bridged_out)
        .sample(&[("direction", "in")], s.not_bridged_in);
        out.counter(
            "sngate_upstream_resent_total",
            "Messages sent again after a reconnection.",
        )
        .value(s.resent);
        out.counter(
            "sngate_upstream_suppressed_total",
            "Copies from the broker dropped: echoes (MQTT 3.1.1) and duplicates (overlapping subscriptions).",
        )
        .sample(&[("kind", "echo")], s.echoes_suppressed)
        .sample(&[("kind", "duplicate")], s.duplicates_suppressed);
        out.gauge(
            "sngate_upstream_outbox_messages",
            "Messages in the bridge's outbox (queued or awaiting acknowledgement).",
        )
        .value(s.pending_messages);
        out.gauge(
            "sngate_upstream_outbox_bytes",
            "Topic and payload bytes in the bridge's outbox.",
        )
        .value(s.pending_bytes);
        device_sessions(s, out);
    }
}

/// Per-device upstream sessions (`bridge_mode = "per-device"`; zeros
/// otherwise).
fn device_sessions(s: &BridgeStats, out: &mut Exposition) {
    out.gauge(
        "sngate_upstream_device_sessions",
        "Per-device upstream sessions, by state (open: existing, connected or trying).",
    )
    .sample(&[("state", "open")], s.device_sessions_open)
    .sample(&[("state", "connected")], s.device_sessions_connected);
    out.counter(
        "sngate_upstream_device_session_connects_total",
        "CONNACKs accepting a device's upstream session.",
    )
    .value(s.device_session_connects);
    out.counter(
        "sngate_upstream_device_session_refusals_total",
        "Device upstream sessions refused: by the broker (bad credentials, not authorised) or by the gateway (upstream id equal to its own).",
    )
    .value(s.device_session_refusals);
    out.counter(
        "sngate_upstream_device_session_takeovers_total",
        "Device upstream sessions the broker gave to another client with the same id (the device roamed to another gateway): stopped for good, no will.",
    )
    .value(s.device_session_takeovers);
    out.counter(
        "sngate_upstream_device_messages_to_shared_total",
        "Messages a refused device session had already acknowledged to its device, handed to the shared session (the last resort).",
    )
    .value(s.device_messages_to_shared);
}

/// Datagrams through one UDP listener, counted on the driver task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounts {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Sends the OS refused.
    pub send_errors: u64,
}

/// Every UDP listener's counts.
#[derive(Debug, Clone)]
pub struct UdpFigures {
    /// (bound address, counts) per listener.
    pub listeners: Vec<(SocketAddr, UdpCounts)>,
}

impl Collect for UdpFigures {
    fn collect(&self, out: &mut Exposition) {
        let labels: Vec<String> = self.listeners.iter().map(|(a, _)| a.to_string()).collect();
        let mut f = out.counter(
            "sngate_udp_datagrams_total",
            "UDP datagrams received and sent, by listener.",
        );
        for ((_, c), l) in self.listeners.iter().zip(&labels) {
            f.sample(&[("listener", l), ("direction", "in")], c.received);
            f.sample(&[("listener", l), ("direction", "out")], c.sent);
        }
        let mut f = out.counter(
            "sngate_udp_send_errors_total",
            "UDP sends the OS refused, by listener.",
        );
        for ((_, c), l) in self.listeners.iter().zip(&labels) {
            f.sample(&[("listener", l)], c.send_errors);
        }
    }
}

/// Every serial port's counters (the section is left out without ports).
#[derive(Debug, Clone)]
pub struct SerialFigures {
    /// (device, counters) per port.
    pub ports: Vec<(String, SerialCounts)>,
}

impl Collect for SerialFigures {
    fn collect(&self, out: &mut Exposition) {
        let mut f = out.counter(
            "sngate_serial_frames_total",
            "Frames received and written, by serial port.",
        );
        for (port, c) in &self.ports {
            f.sample(&[("port", port), ("direction", "in")], c.frames_in);
            f.sample(&[("port", port), ("direction", "out")], c.frames_out);
        }
        let mut f = out.counter(
            "sngate_serial_dropped_total",
            "Frames dropped on receive (bad checksum, oversize, garbage) and messages dropped on send (queue full, port closed), by serial port.",
        );
        for (port, c) in &self.ports {
            f.sample(&[("port", port), ("direction", "in")], c.dropped_in);
            f.sample(&[("port", port), ("direction", "out")], c.dropped_out);
        }
        let mut f = out.counter(
            "sngate_serial_tx_failures_total",
            "XBee transmit-status frames reporting a failed delivery, by serial port.",
        );
        for (port, c) in &self.ports {
            f.sample(&[("port", port)], c.tx_failures);
        }
        let mut f = out.counter(
            "sngate_serial_opens_total",
            "Times each serial port was opened (reopens after a loss included).",
        );
        for (port, c) in &self.ports {
            f.sample(&[("port", port)], c.opens);
        }
    }
}

/// The embedded MQTT broker's figures (only when one is configured): its
/// connections' counters, and the engine's side of local clients.
#[derive(Debug, Clone)]
pub struct BrokerFigures {
    /// The broker is running (it was started and has not stopped).
    pub listening: bool,
    /// MQTT connections open past CONNECT.
    pub connections: usize,
    /// The connections' counters.
    pub counts: BrokerCounts,
    /// Messages the engine accepted from local clients.
    pub messages_in: u64,
    /// Messages the engine handed to local clients.
    pub messages_out: u64,
    /// Local sessions with a connection.
    pub sessions_connected: usize,
    /// Persistent local sessions kept while their client is away.
    pub sessions_away: usize,
    /// Messages kept for away clients.
    pub queued_messages: usize,
}

impl Collect for BrokerFigures {
    fn collect(&self, out: &mut Exposition) {
        let c = &self.counts;
        out.gauge(
            "sngate_broker_listening",
            "1 while the embedded MQTT broker accepts connections.",
        )
        .value(self.listening);
        out.gauge(
            "sngate_broker_connections",
            "MQTT connections open past CONNECT.",
        )
        .value(self.connections);
        out.gauge(
            "sngate_broker_sockets",
            "TCP connections open, those still before CONNECT included ([broker] max_connections bounds them).",
        )
        .value(c.connections_open);
        out.gauge(
            "sngate_broker_queued_bytes",
            "Bytes (payload and topic) waiting to be written to local clients or acknowledged by them, every connection together ([broker] max_queued_bytes_total bounds them).",
        )
        .value(c.queued_bytes);
        out.counter(
            "sngate_broker_connections_accepted_total",
            "TCP connections accepted by the broker's listeners.",
        )
        .value(c.connections_accepted);
        out.counter(
            "sngate_broker_connects_refused_total",
            "Connections refused: protocol level, credentials, client id, max_connections, max_clients.",
        )
        .value(c.connects_refused);
        out.counter(
            "sngate_broker_protocol_errors_total",
            "Connections closed for a protocol error or an oversized packet.",
        )
        .value(c.protocol_errors);
        out.counter(
            "sngate_broker_timeouts_total",
            "Connections closed because keep-alive or the CONNECT timeout ran out.",
        )
        .value(c.timeouts);
        out.counter(
            "sngate_broker_dropped_total",
            "Messages for local clients dropped by the broker, by reason (slow_client: max_queued_messages or max_queued_bytes waiting, or max_queued_bytes_total for all).",
        )
        .sample(&[("reason", "slow_client")], c.dropped_slow_client);
        out.counter(
            "sngate_broker_publishes_total",
            "PUBLISH packets received from local clients (in) and written to them (out).",
        )
        .sample(&[("direction", "in")], c.publishes_received)
        .sample(&[("direction", "out")], c.publishes_sent);
        out.counter(
            "sngate_broker_messages_total",
            "Messages the engine accepted from local clients (in) and handed to them (out).",
        )
        .sample(&[("direction", "in")], self.messages_in)
        .sample(&[("direction", "out")], self.messages_out);
        out.gauge(
            "sngate_broker_sessions",
            "Local MQTT sessions: connected, or persistent and kept while their client is away.",
        )
        .sample(&[("state", "connected")], self.sessions_connected)
        .sample(&[("state", "away")], self.sessions_away);
        out.gauge(
            "sngate_broker_queued_messages",
            "Messages kept for local clients that are away.",
        )
        .value(self.queued_messages);
    }
}

/// The durable store's figures (always shown; zeros while it is off).
#[derive(Debug, Clone)]
pub struct StoreFigures {
    /// The store is open.
    pub enabled: bool,
    /// What it has committed since start.
    pub counters: StoreCounters,
}

impl Collect for StoreFigures {
    fn collect(&self, out: &mut Exposition) {
        let c = &self.counters;
        out.gauge(
            "sngate_store_enabled",
            "1 while state is kept on disk ([store] enabled and open).",
        )
        .value(self.enabled);
        out.counter(
            "sngate_store_commits_total",
            "Synced batches committed to the durable store.",
        )
        .value(c.commits);
        out.counter(
            "sngate_store_records_total",
            "Records written or deleted in the durable store.",
        )
        .value(c.records);
        out.counter(
            "sngate_store_written_bytes_total",
            "Encoded record bytes written to the durable store (before the store's own overhead).",
        )
        .value(c.bytes);
    }
}
