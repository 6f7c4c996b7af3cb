//! The sections that shape the engine's MQTT-SN behaviour: `[gateway]`
//! (identity and protocol limits), `[discovery]`, `[timers]`, `[limits]`
//! and `[[predefined_topics]]`, with their defaults and rules. They map onto
//! the engine's `EngineConfig` (see `engine.rs`) and a reload applies them at
//! once, but for the few settings `reload.rs` names restart-only.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::Deserialize;

use super::{ConfigError, MIB};

/// `[gateway]`: identity and MQTT-SN protocol limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// The gateway id carried in ADVERTISE and GWINFO. Default: 1.
    pub gateway_id: u8,
    /// Longest client id accepted in CONNECT, in bytes. The spec says 23, but
    /// devices commonly send IMEIs or MAC-derived ids, so the default is 64.
    pub max_client_id_len: usize,
    /// Largest MQTT-SN packet accepted or sent, in bytes (64..=65535).
    /// Default: 2048. The serial framers and the bridge's room are sized by
    /// it at start: a reload reports a change as needing a restart.
    pub max_packet_bytes: usize,
    /// Accept QoS −1 PUBLISH (no connection) with predefined or short topic
    /// ids. Default: true.
    pub accept_qos_minus_one: bool,
    /// Accept the Paho long-topic QoS −1 form (topic name in the PUBLISH).
    /// Default: true.
    pub accept_qos_minus_one_named: bool,
    /// Keep-alive applied when a client's CONNECT carries 0, in seconds (≥ 1).
    /// 0 would leave such a client never supervised. Default: 3600.
    pub keep_alive_default_secs: u16,
    /// Largest keep-alive honoured, in seconds; longer requests are clamped
    /// and the device is supervised with the clamped value (MQTT-SN v1.2's
    /// CONNACK cannot tell it: a device asking for more is declared lost
    /// after 1.1 × this much silence, and its next packet is answered with
    /// DISCONNECT, so it connects again). Bounds how long a CONNECT that is
    /// never followed by anything holds a session. Default: 3600.
    pub keep_alive_max_secs: u16,
    /// Longest graceful shutdown on SIGTERM/SIGINT, in seconds: new input is
    /// refused at once, then deliveries in flight to connected devices and
    /// the upstream outbox are given this long to be acknowledged; what is
    /// left is logged. 0 stops at once. Keep it a few seconds below
    /// systemd's `TimeoutStopSec`. Default: 5.
    pub shutdown_grace_secs: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            gateway_id: 1,
            max_client_id_len: 64,
            max_packet_bytes: 2048,
            accept_qos_minus_one: true,
            accept_qos_minus_one_named: true,
            keep_alive_default_secs: 3600,
            keep_alive_max_secs: 3600,
            shutdown_grace_secs: 5,
        }
    }
}

/// `[discovery]`: ADVERTISE broadcasts and SEARCHGW answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Send ADVERTISE periodically to `advertise_group`. Default: false.
    pub advertise: bool,
    /// Seconds between ADVERTISE messages (≥ 1); the Duration field in the
    /// message is clamped to 65535. Default: 900.
    pub advertise_interval_secs: u32,
    /// Multicast group and port ADVERTISE is sent to. Default: `"225.1.1.1:1883"`
    /// (the Paho gateway's default group).
    pub advertise_group: SocketAddr,
    /// Multicast TTL (hops) for ADVERTISE and GWINFO. Default: 1 (local link).
    pub multicast_ttl: u32,
    /// Answer SEARCHGW with GWINFO. Default: true.
    pub answer_searchgw: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            advertise: false,
            advertise_interval_secs: 900,
            advertise_group: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(225, 1, 1, 1), 1883)),
            multicast_ttl: 1,
            answer_searchgw: true,
        }
    }
}

/// `[timers]`: retransmission and handshake timers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    /// Seconds before an unacknowledged message is resent (T_RETRY, ≥ 1).
    /// Default: 10.
    pub retry_interval_secs: u32,
    /// Retransmissions of one message after the first send before the client
    /// is considered lost (N_RETRY, ≥ 1); an awake client goes back to sleep
    /// with its messages kept instead. Default: 3.
    pub max_retries: u32,
    /// Seconds a client has to finish the WILLTOPIC/WILLMSG exchange after
    /// CONNECT (≥ 1). Default: 10.
    pub will_handshake_timeout_secs: u32,
}

impl Default for TimersConfig {
    fn default() -> Self {
        Self {
            retry_interval_secs: 10,
            max_retries: 3,
            will_handshake_timeout_secs: 10,
        }
    }
}

/// `[limits]`: per-client and global resource limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most clients with a session at once (≥ 1). When full, a new client
    /// takes the place of the least recently seen disconnected or lost
    /// session; it is refused only if every session is connected or asleep.
    /// Default: 10000.
    pub max_clients: usize,
    /// Seconds a CleanSession = false session (subscriptions, queued
    /// messages) is kept after its client was last heard from, once it
    /// disconnected or was lost; 0 = forever. Default: 7200.
    pub session_expiry_secs: u32,
    /// Most registered topic ids per client. Default: 1000.
    pub max_topics_per_client: usize,
    /// Most subscriptions per client. Default: 100.
    pub max_subscriptions_per_client: usize,
    /// Most messages buffered for one sleeping or congested client.
    /// Default: 1000.
    pub max_queued_messages_per_client: usize,
    /// Most payload bytes buffered for one client, in bytes. Default: 1 MiB.
    pub max_queued_bytes_per_client: usize,
    /// Most payload bytes buffered over all clients, in bytes. Default: 64 MiB.
    pub max_queued_bytes_total: usize,
    /// Also queue QoS 0 messages for disconnected clients with
    /// CleanSession = false (MQTT queues only QoS 1 and 2). Default: false.
    pub queue_qos0: bool,
    /// Buffer QoS 0 messages for sleeping clients too (v1.2 says "all
    /// messages"; QoS 1 and 2 are always buffered). Default: true.
    pub sleep_buffer_qos0: bool,
    /// What to drop when a client's queue is full: `"refuse-newest"` keeps
    /// what is queued, `"drop-oldest"` makes room for the new message.
    /// Default: `"refuse-newest"`.
    pub queue_overflow: QueueOverflow,
    /// Most messages handed to a sleeping client per wake-up (PINGREQ); the
    /// rest waits for its next wake-up. 0 = no cap. Default: 0.
    pub max_messages_per_wake: usize,
    /// Most retained messages kept. Default: 10000.
    pub max_retained_messages: usize,
    /// Datagrams per second one source address may send, sustained, of
    /// those that create state or come from no session: CONNECT and SEARCHGW
    /// from anyone, and anything (a QoS −1 publish, a wake-up from a new
    /// address, garbage) from a peer with no session. The source is a UDP
    /// IP address (any port), a radio address on a serial dongle, a raw or
    /// SLIP serial port. Excess is dropped and counted
    /// (`sngate_drops_total{reason="rate_limited"}`). Established sessions
    /// are limited by `per_session_packets_per_sec` instead, so devices
    /// behind one NAT or forwarder do not share a budget once connected.
    /// 0 = no limit. Default: 100.
    pub per_source_packets_per_sec: u32,
    /// Such datagrams one source address may send at once after being idle
    /// (≥ 1 when the limit is on). Default: 200.
    pub per_source_burst: u32,
    /// Most bytes the retained messages hold together (each counts its
    /// payload and topic name). A retained message beyond it is delivered
    /// but not kept, and the topic's older retained message is cleared.
    /// Keep it at most `broker.max_queued_bytes`, so a local client that
    /// subscribes to `#` can be handed every retained message at once.
    /// Default: 8 MiB.
    pub max_retained_bytes: usize,
    /// Most bytes of topic names held in every device's topic-id table
    /// together; a new name beyond it is refused (REGACK or SUBACK 0x01
    /// "congestion") as at `max_topics_per_client`. Default: 8 MiB.
    pub max_topic_bytes_total: usize,
    /// Most bytes of subscription filters held by every client (devices and
    /// local MQTT clients) together; a new subscription beyond it is refused
    /// (SUBACK 0x01, local clients 0x80). Default: 4 MiB.
    pub max_subscription_bytes_total: usize,
    /// Datagrams per second one established session may send, sustained
    /// (its acknowledgements of the gateway's own messages not counted: they
    /// are bounded by what the gateway sends). Excess is dropped and counted
    /// (`sngate_drops_total{reason="rate_limited"}`); other sessions, behind
    /// the same address or not, are unaffected. 0 = no limit. Default: 100.
    pub per_session_packets_per_sec: u32,
    /// Datagrams one session may send at once after being idle (≥ 1 when
    /// the limit is on). Default: 200.
    pub per_session_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_clients: 10_000,
            session_expiry_secs: 7200,
            max_topics_per_client: 1000,
            max_subscriptions_per_client: 100,
            max_queued_messages_per_client: 1000,
            max_queued_bytes_per_client: MIB,
            max_queued_bytes_total: 64 * MIB,
            queue_qos0: false,
            sleep_buffer_qos0: true,
            queue_overflow: QueueOverflow::RefuseNewest,
            max_messages_per_wake: 0,
            max_retained_messages: 10_000,
            per_source_packets_per_sec: 100,
            per_source_burst: 200,
            max_retained_bytes: 8 * MIB,
            max_topic_bytes_total: 8 * MIB,
            max_subscription_bytes_total: 4 * MIB,
            per_session_packets_per_sec: 100,
            per_session_burst: 200,
        }
    }
}

/// What a full client queue drops (`[limits] queue_overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum QueueOverflow {
    /// Keep what is queued; refuse the new message.
    #[default]
    RefuseNewest,
    /// Drop the oldest queued messages to make room.
    DropOldest,
}

/// One `[[predefined_topics]]` entry: a topic id shared by all clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PredefinedTopic {
    /// The topic id, 1..=65534, unique. Required.
    pub id: u16,
    /// The topic name: non-empty, no wildcards (`+`, `#`), no NUL. Required.
    pub topic: String,
}

impl GatewayConfig {
    /// Checks `[gateway]`'s cross-field rules.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let g = self;
        if !(64..=65535).contains(&g.max_packet_bytes) {
            return Err(ConfigError::invalid(
                "gateway.max_packet_bytes",
                format!("{} is outside 64..=65535", g.max_packet_bytes),
            ));
        }
        if g.max_client_id_len == 0 {
            return Err(ConfigError::invalid(
                "gateway.max_client_id_len",
                "must be at least 1",
            ));
        }
        if g.keep_alive_default_secs == 0 {
            return Err(ConfigError::invalid(
                "gateway.keep_alive_default_secs",
                "must be at least 1 (0 would leave clients that send keep-alive 0 unsupervised)",
            ));
        }
        if g.keep_alive_default_secs > g.keep_alive_max_secs {
            return Err(ConfigError::invalid(
                "gateway.keep_alive_default_secs",
                format!(
                    "{} is greater than gateway.keep_alive_max_secs ({})",
                    g.keep_alive_default_secs, g.keep_alive_max_secs
                ),
            ));
        }
        Ok(())
    }
}

impl DiscoveryConfig {
    /// Checks `[discovery]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.advertise_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "discovery.advertise_interval_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl TimersConfig {
    /// Checks `[timers]`: every timer at least 1.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        if t.retry_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "timers.retry_interval_secs",
                "must be at least 1",
            ));
        }
        if t.max_retries == 0 {
            return Err(ConfigError::invalid(
                "timers.max_retries",
                "must be at least 1",
            ));
        }
        if t.will_handshake_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "timers.will_handshake_timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl LimitsConfig {
    /// Checks `[limits]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.per_source_packets_per_sec > 0 && self.per_source_burst == 0 {
            return Err(ConfigError::invalid(
                "limits.per_source_burst",
                "must be at least 1 while per_source_packets_per_sec is set",
            ));
        }
        if self.per_session_packets_per_sec > 0 && self.per_session_burst == 0 {
            return Err(ConfigError::invalid(
                "limits.per_session_burst",
                "must be at least 1 while per_session_packets_per_sec is set",
            ));
        }
        if self.max_clients == 0 {
            return Err(ConfigError::invalid(
                "limits.max_clients",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Checks `[[predefined_topics]]`: ids in range, names usable, neither
/// listed twice.
pub(super) fn validate_predefined(topics: &[PredefinedTopic]) -> Result<(), ConfigError> {
    for (i, p) in topics.iter().enumerate() {
        if p.id == 0 || p.id == 0xFFFF {
            return Err(ConfigError::invalid(
                format!("predefined_topics[{i}].id"),
                format!("{} is outside 1..=65534 (0 and 65535 are reserved)", p.id),
            ));
        }
        if let Some(reason) = predefined_topic_problem(&p.topic) {
            return Err(ConfigError::invalid(
                format!("predefined_topics[{i}].topic"),
                reason,
            ));
        }
        let earlier = &topics[..i];
        if let Some(j) = earlier.iter().position(|q| q.id == p.id) {
            return Err(ConfigError::invalid(
                format!("predefined_topics[{i}].id"),
                format!(
                    "duplicate id {} (already used by predefined_topics[{j}])",
                    p.id
                ),
            ));
        }
        if let Some(j) = earlier.iter().position(|q| q.topic == p.topic) {
            return Err(ConfigError::invalid(
                format!("predefined_topics[{i}].topic"),
                format!(
                    "topic {:?} is already predefined by predefined_topics[{j}]",
                    p.topic
                ),
            ));
        }
    }
    Ok(())
}

fn predefined_topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("must not be empty")
    } else if topic.contains(['+', '#']) {
        Some("must not contain wildcards (`+` or `#`)")
    } else if topic.contains('\0') {
        Some("must not contain NUL")
    } else {
        None
    }
}
