//! The engine's own settings, in engine terms (durations, counts). Built from the
//! file-level `crate::config::Config` by the shell, so `core/` depends on no
//! serde layout and tests can set exactly what they exercise.

use std::sync::Arc;
use std::time::Duration;

use super::acl::Acl;
use super::admission::Admission;

/// What to do when a message arrives for a client whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Keep what is queued; refuse the new message.
    #[default]
    RefuseNewest,
    /// Drop the oldest queued messages to make room for the new one.
    DropOldest,
}

/// Settings for [`Gateway`](super::Gateway). Its `Default` equals what the
/// default configuration file gives (a test in `driver.rs` keeps them equal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Gateway id, sent in ADVERTISE and GWINFO.
    pub gateway_id: u8,
    /// Longest accepted client id in bytes.
    pub max_client_id_len: usize,
    /// Largest message sent to a device, in bytes; bigger deliveries are dropped
    /// (fact sheet §7.4) and counted.
    pub max_packet_bytes: usize,
    /// Accept QoS −1 publishes (predefined ids and short names).
    pub accept_qos_minus_one: bool,
    /// Accept the QoS −1 publish with a full topic name (trap T-14).
    pub accept_qos_minus_one_named: bool,
    /// Keep-alive applied when a client asks for 0 (trap T-21).
    pub keep_alive_default: Duration,
    /// Longest keep-alive honoured; longer requests are capped, and the
    /// device is supervised with the capped value (v1.2 has no way to tell
    /// it: its CONNACK carries none).
    pub keep_alive_max: Duration,
    /// T_RETRY: wait for an acknowledgement before retransmitting.
    pub retry_interval: Duration,
    /// N_RETRY: retransmissions before the device is considered lost.
    pub max_retries: u32,
    /// How long the will handshake may take before the attempt is dropped.
    pub will_handshake_timeout: Duration,
    /// ADVERTISE period; `None` disables advertising.
    pub advertise_interval: Option<Duration>,
    /// Answer SEARCHGW with GWINFO.
    pub answer_searchgw: bool,
    /// Most sessions at once (connected or kept for CleanSession = false).
    /// When full, a new client takes the place of the least recently seen
    /// disconnected or lost session; only if there is none is it refused.
    pub max_clients: usize,
    /// How long a CleanSession = false session is kept after its client was
    /// last heard from while disconnected or lost; `None` = forever.
    pub session_expiry: Option<Duration>,
    /// Most topic ids per client.
    pub max_topics_per_client: usize,
    /// Most subscriptions per client.
    pub max_subscriptions_per_client: usize,
    /// Most messages queued per client.
    pub max_queued_messages_per_client: usize,
    /// Most payload bytes queued per client.
    pub max_queued_bytes_per_client: usize,
    /// Most payload bytes queued over all clients.
    pub max_queued_bytes_total: usize,
    /// Queue QoS 0 messages for disconnected CleanSession = false clients too.
    pub queue_qos0: bool,
    /// Buffer QoS 0 messages for sleeping clients too (v1.2 says "all messages").
    pub sleep_buffer_qos0: bool,
    /// What to drop when a client's queue is full.
    pub queue_overflow: OverflowPolicy,
    /// Most messages handed over per awake period; 0 = no cap. The rest waits
    /// for the next PINGREQ.
    pub max_messages_per_wake: usize,
    /// Most retained messages.
    pub max_retained_messages: usize,
    /// Datagrams per second each source address (UDP IP address, radio
    /// address, serial port) may send, sustained, of those that create
    /// state or come from no session (CONNECT, SEARCHGW, anything from a
    /// peer with no session); excess is dropped and counted as
    /// `rate_limited`. 0 = no limit. See `core::rate_limit`.
    pub per_source_packets_per_sec: u32,
    /// Such datagrams a source address may send at once after being idle.
    pub per_source_burst: u32,
    /// Pre-defined topics: (id, name).
    pub predefined_topics: Vec<(u16, String)>,
    /// Forward every device publish to the upstream bridge.
    pub upstream: bool,
    /// Per-device upstream sessions (`upstream.bridge_mode = "per-device"`):
    /// each device gets its own upstream session ([`UpstreamCommand::OpenSession`](super::UpstreamCommand::OpenSession));
    /// its CONNACK waits for that session, its QoS 1/2 acknowledgements for
    /// the broker's. Only meaningful with `upstream`.
    pub per_device_sessions: bool,
    /// Per-device mode: how long a device's CONNACK waits for its upstream
    /// session before the device is accepted anyway (offline operation).
    pub upstream_session_wait: Duration,
    /// Produce store operations (see `core::persist`): set when the driver
    /// has a durable store. Fixed at start.
    pub persist: bool,
    /// With `persist` and a connected upstream: how long a device's QoS 1/2
    /// message bound upstream waits for the broker's acknowledgement before
    /// its outbox record is written to the store (`linger.rs`). The device
    /// is acknowledged on whichever comes first, so while the broker keeps
    /// up the outbox never touches the disk. Zero: the record is written
    /// before anything goes out. Default: 5 ms (`[store] linger_ms`).
    pub outbox_linger: Duration,
    /// Authorisation rules (mosquitto `acl_file` semantics, `core::acl`);
    /// `None` (the default) allows every publish and subscription.
    pub acl: Option<Arc<Acl>>,
    /// Which MQTT-SN devices may connect (`core::admission`); the default
    /// admits all.
    pub admission: Admission,
    /// Which client ids a device authenticated at the transport (DTLS) may
    /// use (`core::identity`); the default binds the client id to the
    /// identity exactly.
    pub identity_binding: crate::identity::IdentityBinding,
    /// Most bytes (payloads and topic names) the retained messages hold
    /// together; a retained message that would exceed it is delivered but
    /// not kept.
    pub max_retained_bytes: usize,
    /// Most bytes of topic names every device's topic table holds together;
    /// a new name beyond it is refused as at `max_topics_per_client`.
    pub max_topic_bytes_total: usize,
    /// Most bytes of subscription filters every client (device or local)
    /// holds together; a new subscription beyond it is refused.
    pub max_subscription_bytes_total: usize,
    /// Datagrams per second each established session may send, sustained
    /// (acknowledgements of the gateway's own messages not counted); excess
    /// is dropped and counted as `rate_limited`, other sessions behind the
    /// same address unaffected. 0 = no limit.
    pub per_session_packets_per_sec: u32,
    /// Datagrams a session may send at once after being idle.
    pub per_session_burst: u32,
    /// The packet trace (target `sngate_core::packets`, at trace level, one
    /// line per packet) only for this client id; `None`: for every client.
    pub trace_client: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            gateway_id: 1,
            max_client_id_len: 64,
            max_packet_bytes: 2048,
            accept_qos_minus_one: true,
            accept_qos_minus_one_named: true,
            keep_alive_default: Duration::from_secs(3600),
            keep_alive_max: Duration::from_secs(3600),
            retry_interval: Duration::from_secs(10),
            max_retries: 3,
            will_handshake_timeout: Duration::from_secs(10),
            advertise_interval: None,
            answer_searchgw: true,
            max_clients: 10_000,
            session_expiry: Some(Duration::from_secs(7200)),
            max_topics_per_client: 1000,
            max_subscriptions_per_client: 100,
            max_queued_messages_per_client: 1000,
            max_queued_bytes_per_client: 1 << 20,
            max_queued_bytes_total: 64 << 20,
            queue_qos0: false,
            sleep_buffer_qos0: true,
            queue_overflow: OverflowPolicy::RefuseNewest,
            max_messages_per_wake: 0,
            max_retained_messages: 10_000,
            per_source_packets_per_sec: 100,
            per_source_burst: 200,
            predefined_topics: Vec::new(),
            upstream: false,
            per_device_sessions: false,
            upstream_session_wait: Duration::from_secs(5),
            persist: false,
            outbox_linger: Duration::from_millis(5),
            acl: None,
            admission: Admission::default(),
            identity_binding: crate::identity::IdentityBinding::default(),
            max_retained_bytes: 8 << 20,
            max_topic_bytes_total: 8 << 20,
            max_subscription_bytes_total: 4 << 20,
            per_session_packets_per_sec: 100,
            per_session_burst: 200,
            trace_client: None,
        }
    }
}

impl EngineConfig {
    /// The supervision deadline for a keep-alive or sleep period, with the
    /// tolerance of v1.2 §7.2: +50 % up to a minute, +10 % beyond.
    pub fn with_tolerance(period: Duration) -> Duration {
        if period <= Duration::from_secs(60) {
            period + period / 2
        } else {
            period + period / 10
        }
    }

    /// Whether a client's queue holding `messages` and `bytes` (payload),
    /// while every queue holds `total` bytes, has room for one more
    /// message of `len` bytes.
    pub fn queue_has_room(&self, messages: usize, bytes: usize, total: usize, len: usize) -> bool {
        messages < self.max_queued_messages_per_client
            && bytes + len <= self.max_queued_bytes_per_client
            && total + len <= self.max_queued_bytes_total
    }

    /// The keep-alive the engine applies for a CONNECT's Duration field.
    pub fn effective_keep_alive(&self, requested_secs: u16) -> Duration {
        if requested_secs == 0 {
            self.keep_alive_default
        } else {
            Duration::from_secs(u64::from(requested_secs)).min(self.keep_alive_max)
        }
    }
}
