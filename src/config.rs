//! Configuration: the TOML file read into typed structs, checked once at load.
//!
//! This module owns the shape of `sngate.toml` and every default. Each section is
//! a struct with `#[serde(deny_unknown_fields, default)]`, so a misspelt key is an
//! error rather than a silently ignored setting, and a missing key takes the
//! default written in its doc comment. Units live in field names (`_secs`,
//! `_bytes`), so a reader never guesses whether `900` means seconds or
//! milliseconds.
//!
//! Loading is two steps: serde turns the text into a [`Config`] (syntax, types
//! and unknown keys are caught here, and toml's own message already names the
//! line and column), then [`Config::validate`] checks the cross-field rules. A
//! validation error names the dotted key (`predefined_topics[1].id`); when the
//! config came from a document, [`ConfigError::locate`] finds that key's line
//! through the spans toml's parser keeps ([`toml::de::DeTable`]).
//!
//! The annotated default file, `config/sngate.toml`, is compiled in as
//! [`DEFAULT_CONFIG_TOML`]; a unit test keeps it equal to [`Config::default`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The annotated default configuration, as printed by `sngate print-config`.
///
/// It parses to exactly [`Config::default()`] (checked by a unit test).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/sngate.toml");

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The whole gateway configuration: one field per TOML section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[gateway]`: identity and MQTT-SN protocol limits.
    pub gateway: GatewayConfig,
    /// `[udp]`: the UDP listeners devices talk to.
    pub udp: UdpConfig,
    /// `[discovery]`: ADVERTISE broadcasts and SEARCHGW answers.
    pub discovery: DiscoveryConfig,
    /// `[timers]`: retransmission and handshake timers.
    pub timers: TimersConfig,
    /// `[limits]`: per-client and global resource limits.
    pub limits: LimitsConfig,
    /// `[[predefined_topics]]`: topic ids known to gateway and devices in advance.
    /// Default: none.
    pub predefined_topics: Vec<PredefinedTopic>,
    /// `[upstream]`: the MQTT broker to bridge to. Absent (the default) means no
    /// upstream: the gateway serves its local clients only.
    pub upstream: Option<UpstreamConfig>,
    /// `[[serial]]`: serial ports with radio dongles or forwarders, each
    /// opened at start-up beside the UDP listeners. None by default.
    pub serial: Vec<SerialConfig>,
    /// `[broker]`: the embedded MQTT broker for local programs.
    pub broker: BrokerConfig,
    /// `[store]`: durable state (sessions, queues, retained, the outbox).
    pub store: StoreConfig,
    /// `[log]`: log level and format.
    pub log: LogConfig,
    /// `[http]`: the operations endpoint (`/metrics`, `/status`, `/healthz`).
    /// Off by default.
    pub http: HttpConfig,
    /// `[security]`: admission of MQTT-SN devices and the ACL file
    /// (`crate::security`, docs/security.md).
    pub security: crate::security::SecurityConfig,
}

/// `[http]`: the operations endpoint: `/metrics` (Prometheus text format),
/// `/status` (JSON) and `/healthz`, GET only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on, e.g. `"127.0.0.1:9180"`. Default: none (no HTTP
    /// listener). It serves anyone who can reach it and has no
    /// authentication: keep it on loopback or a management network.
    pub listen: Option<SocketAddr>,
}

/// `[store]`: durable state under a state directory, so sessions, sleep
/// buffers, retained messages and the upstream outbox survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Keep state on disk. `false` keeps everything in memory only (lost on
    /// restart). Default: true.
    pub enabled: bool,
    /// The state directory; empty (the default) means `$STATE_DIRECTORY`
    /// when systemd sets it, else `$XDG_STATE_HOME/sngate`, else
    /// `~/.local/state/sngate`.
    pub state_dir: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            state_dir: String::new(),
        }
    }
}

impl StoreConfig {
    /// The state directory in force: `state_dir`, or the default location
    /// from the environment. `None` when no location can be found (no
    /// `$STATE_DIRECTORY`, `$XDG_STATE_HOME` or `$HOME`).
    pub fn resolved_dir(&self) -> Option<std::path::PathBuf> {
        if !self.state_dir.is_empty() {
            return Some(self.state_dir.clone().into());
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = env("STATE_DIRECTORY") {
            // systemd may pass several, colon-separated: the first is ours.
            let first = dir.to_string_lossy().split(':').next().map(str::to_owned);
            return first.map(Into::into);
        }
        if let Some(dir) = env("XDG_STATE_HOME") {
            return Some(std::path::PathBuf::from(dir).join("sngate"));
        }
        env("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state/sngate"))
    }
}

/// `[broker]`: the embedded MQTT 3.1.1 broker. Local programs (Node-RED, Home
/// Assistant, mosquitto_sub) connect over TCP and share topics, retained
/// messages and the upstream bridge with the MQTT-SN devices.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// TCP addresses to listen on; empty turns the broker off. Default:
    /// `["127.0.0.1:1883"]` (this machine only).
    pub listen: Vec<SocketAddr>,
    /// Most simultaneous connections; more are refused at once. Default: 1000.
    pub max_connections: usize,
    /// Largest MQTT packet accepted from a client, in bytes (≥ 128); a larger
    /// one closes the connection. Default: 1 MiB.
    pub max_packet_bytes: usize,
    /// QoS 1/2 messages sent to one client and not yet acknowledged (1..=65535).
    /// Default: 20 (as mosquitto).
    pub max_inflight_messages: u16,
    /// Messages waiting to be written to one connected client; beyond it new
    /// ones are dropped and counted (a client that does not read cannot grow
    /// memory). Default: 1000.
    pub max_queued_messages: usize,
    /// Seconds a new connection has to send CONNECT (≥ 1). Default: 10.
    pub connect_timeout_secs: u32,
    /// Seconds between `$SYS/broker/…` status messages (retained); 0 turns
    /// them off. Default: 10.
    pub sys_interval_secs: u32,
    /// `[[broker.users]]`: who may connect with a user name and password.
    /// Default: none.
    pub users: Vec<BrokerUser>,
    /// Let clients in without a user name. Unset (the default): allowed
    /// only in "local-only mode" — no `users` configured and every listener
    /// (`listen` and `tls_listen`) on a loopback address, as the default
    /// listener is — and refused once `users` are configured. Modelled on
    /// mosquitto 2.0's local-only mode, which applies only when no listener
    /// is configured; here listeners set on loopback count too. A non-loopback listener with no `users` and this unset is
    /// a configuration error: add `[[broker.users]]` or set it to `true`
    /// (which then logs a warning at start).
    pub allow_anonymous: Option<bool>,
    /// TCP addresses for MQTT over TLS (e.g. `["0.0.0.0:8883"]`), served
    /// with `tls_cert_file` and `tls_key_file`. Default: none.
    pub tls_listen: Vec<SocketAddr>,
    /// PEM file with the broker's certificate chain (the server certificate
    /// first). Required with `tls_listen`.
    pub tls_cert_file: Option<String>,
    /// PEM file with the private key of `tls_cert_file` (PKCS#8, PKCS#1 or
    /// SEC1). Required with `tls_listen`.
    pub tls_key_file: Option<String>,
}

impl BrokerConfig {
    /// Whether clients without a user name are let in: `allow_anonymous`,
    /// or when unset, whether the broker is in local-only mode (no users,
    /// every listener on loopback).
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or(self.users.is_empty() && self.first_non_loopback().is_none())
    }

    /// The first listener (plain, then TLS) that is not on a loopback
    /// address, as its dotted key and address, if any.
    fn first_non_loopback(&self) -> Option<(String, SocketAddr)> {
        [
            ("broker.listen", &self.listen),
            ("broker.tls_listen", &self.tls_listen),
        ]
        .into_iter()
        .find_map(|(key, addrs)| {
            addrs
                .iter()
                .enumerate()
                .find(|(_, a)| !is_loopback(a.ip()))
                .map(|(i, a)| (format!("{key}[{i}]"), *a))
        })
    }

    /// Whether the broker runs at all (some listener configured).
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty() || !self.tls_listen.is_empty()
    }
}

/// `[[broker.users]]`: one user of the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    /// The user name clients present.
    pub name: String,
    /// The password's hash, as `sngate passwd` prints it
    /// (`$pbkdf2-sha256$i=…,l=32$…$…`); never the password itself.
    pub password_hash: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1883))],
            max_connections: 1000,
            max_packet_bytes: MIB,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            connect_timeout_secs: 10,
            sys_interval_secs: 10,
            users: Vec::new(),
            allow_anonymous: None,
            tls_listen: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// `[[serial]]`: one serial port and how MQTT-SN messages are framed on it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SerialConfig {
    /// The device, e.g. `/dev/ttyUSB0` (required). A port that disappears is
    /// reopened with backoff until it is back.
    pub device: String,
    /// How messages are framed: `"xbee"` (Digi XBee API frames; each remote
    /// radio is its own peer), `"slip"` (RFC 1055, for a forwarder; may carry
    /// forwarder encapsulation), `"raw"` (back-to-back MQTT-SN messages
    /// delimited by their Length field). Default: `"xbee"`.
    pub framing: SerialFraming,
    /// Baud rate. Default: 9600 (XBee modules' factory setting).
    pub baud: u32,
    /// Data bits, 5..=8. Default: 8.
    pub data_bits: u8,
    /// Parity: `"none"`, `"odd"` or `"even"`. Default: `"none"`.
    pub parity: SerialParity,
    /// Stop bits, 1 or 2. Default: 1.
    pub stop_bits: u8,
    /// Flow control: `"none"`, `"software"` (XON/XOFF) or `"hardware"`
    /// (RTS/CTS). Default: `"none"`.
    pub flow_control: SerialFlowControl,
    /// XBee API mode 2 (escaped; how modules ship for this use) rather than
    /// mode 1. Default: true.
    pub xbee_escaped: bool,
    /// XBee transmit frame: `"zigbee"` (0x10), `"64"` (0x00, 802.15.4 with
    /// 64-bit addresses) or `"16"` (0x01, 16-bit). Default: `"zigbee"`.
    pub xbee_tx: XbeeTx,
    /// Append and check a CRC-16 on SLIP frames. Default: false.
    pub slip_crc: bool,
    /// First wait before reopening a lost port, in seconds (≥ 1). Default: 1.
    pub reopen_min_secs: u32,
    /// Longest wait between reopening attempts, in seconds. Default: 30.
    pub reopen_max_secs: u32,
    /// The radio addresses devices on this link may connect (and publish at
    /// QoS −1) from, in hex (case-insensitive); empty (the default) admits
    /// every device on the link. On an `xbee` link: a remote radio's 64-bit
    /// address (16 digits, `"0013A20040A1B2C3"`) or 16-bit one (4 digits),
    /// which admits the forwarded nodes behind it too, or `"RADIO/NODE"` for
    /// one forwarded node behind that radio. On a `slip` or `raw` link: a
    /// forwarder's wireless node id (`"01"`); the port itself has no address,
    /// so a device not behind a forwarder is refused once the list is set.
    /// Refused devices are treated as `[security] refused_connect` says and
    /// counted as `not_admitted` (docs/security.md). Applied on SIGHUP to
    /// the running link, while this entry is still that link (same position
    /// and [`SerialConfig::restart_only`] settings).
    pub allow_radio_addresses: Vec<String>,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            device: String::new(),
            framing: SerialFraming::Xbee,
            baud: 9600,
            data_bits: 8,
            parity: SerialParity::None,
            stop_bits: 1,
            flow_control: SerialFlowControl::None,
            xbee_escaped: true,
            xbee_tx: XbeeTx::Zigbee,
            slip_crc: false,
            reopen_min_secs: 1,
            reopen_max_secs: 30,
            allow_radio_addresses: Vec::new(),
        }
    }
}

impl SerialConfig {
    /// The settings a reload cannot apply to a running link (all but
    /// `allow_radio_addresses`, which the engine applies at once).
    pub fn restart_only(&self) -> SerialConfig {
        SerialConfig {
            allow_radio_addresses: Vec::new(),
            ..self.clone()
        }
    }
}

/// How MQTT-SN messages are framed on a serial port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SerialFraming {
    /// Digi XBee API frames.
    #[default]
    Xbee,
    /// RFC 1055 SLIP.
    Slip,
    /// MQTT-SN messages back to back, delimited by their Length field.
    Raw,
}

impl SerialFraming {
    /// Whether devices on the link have radio addresses of their own (XBee
    /// API frames carry the remote radio's); on a SLIP or raw link the port
    /// is the only link address.
    pub fn has_radio_addresses(self) -> bool {
        self == SerialFraming::Xbee
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SerialParity {
    /// No parity bit.
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Serial flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SerialFlowControl {
    /// None.
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// Which XBee transmit frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum XbeeTx {
    /// 0x10 Zigbee Transmit Request.
    #[default]
    #[serde(rename = "zigbee")]
    Zigbee,
    /// 0x00 TX Request, 64-bit address (802.15.4 modules).
    #[serde(rename = "64")]
    Ieee64,
    /// 0x01 TX Request, 16-bit address (802.15.4 modules).
    #[serde(rename = "16")]
    Ieee16,
}

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
    /// Largest keep-alive honoured, in seconds; longer requests are clamped.
    /// Default: 65535.
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
            keep_alive_max_secs: 65535,
            shutdown_grace_secs: 5,
        }
    }
}

/// `[udp]`: the UDP listeners devices talk to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// Addresses to listen on, IPv4 (`"0.0.0.0:1883"`) or IPv6 (`"[::]:1883"`);
    /// at least one. Default: `["0.0.0.0:1883"]`.
    pub listen: Vec<SocketAddr>,
    /// Socket receive buffer (SO_RCVBUF), in bytes. Default: 4 MiB.
    pub recv_buffer_bytes: usize,
    /// Socket send buffer (SO_SNDBUF), in bytes. Default: 1 MiB.
    pub send_buffer_bytes: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                1883,
            ))],
            recv_buffer_bytes: 4 * MIB,
            send_buffer_bytes: MIB,
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
    /// Datagrams per second one source may send, sustained: a UDP source IP
    /// address (any port), a radio address on a serial dongle, a raw or SLIP
    /// serial port. Excess datagrams are dropped before decoding and counted
    /// (`sngate_drops_total{reason="rate_limited"}`), so one flooding address
    /// cannot starve the others. Devices behind one NAT or one forwarder
    /// share their address's budget. 0 = no limit. Default: 100.
    pub per_source_packets_per_sec: u32,
    /// Datagrams one source may send at once after being idle (≥ 1 when the
    /// limit is on). Default: 200.
    pub per_source_burst: u32,
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
        }
    }
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

/// `[upstream]`: the MQTT broker to bridge to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Broker host name or IP address. Required, non-empty.
    pub host: String,
    /// Broker port. Default: 1883.
    pub port: u16,
    /// MQTT client id the gateway uses upstream. Default: `"sngate"`.
    pub client_id: String,
    /// MQTT user name. Default: none.
    pub username: Option<String>,
    /// MQTT password. Default: none.
    pub password: Option<String>,
    /// MQTT keep-alive towards the broker, in seconds (0 disables it).
    /// Default: 30.
    pub keep_alive_secs: u16,
    /// Ask the broker for a clean session on every connect. Default: false
    /// (the broker keeps subscriptions and queued QoS 1/2 messages across
    /// reconnects).
    pub clean_session: bool,
    /// First reconnect delay after losing the broker, in seconds (≥ 1,
    /// ≤ `reconnect_max_secs`). Default: 1.
    pub reconnect_min_secs: u32,
    /// Longest reconnect delay; the delay doubles up to this, in seconds.
    /// Default: 60.
    pub reconnect_max_secs: u32,
    /// `[upstream.tls]`: connect with TLS. Default: absent (plain TCP).
    pub tls: Option<TlsConfig>,
    /// `[[upstream.rules]]`: which topics cross the bridge, in mosquitto's
    /// bridge style. Default: empty, which means everything devices publish
    /// goes out unchanged, and subscriptions follow local subscribers (a topic
    /// filter a local client subscribes to is subscribed upstream too).
    pub rules: Vec<BridgeRule>,
    /// MQTT protocol version towards the broker: 5 (MQTT 5, subscriptions
    /// with No Local, so bridged-both-ways messages are not echoed back) or 4
    /// (MQTT 3.1.1, for brokers without MQTT 5; see `docs/bridge.md` for the
    /// echo this implies). Default: 5.
    pub protocol_version: u8,
    /// Most messages held for the broker (queued while it is unreachable, or
    /// sent and not yet acknowledged); beyond it new messages are dropped and
    /// counted (≥ 1). Default: 100000.
    pub max_pending_messages: usize,
    /// Most payload and topic bytes held for the broker, as
    /// `max_pending_messages` (≥ 1). Default: 64 MiB.
    pub max_pending_bytes: usize,
    /// What happens to a device's (or local client's) QoS 1/2 message bound
    /// upstream when the outbox is full: `"backpressure"` (default) — it is
    /// not acknowledged until there is room, so the sender keeps it and
    /// nothing acknowledged is ever dropped; `"drop-newest"` — it is
    /// acknowledged and routed locally, and its upstream copy is dropped and
    /// counted (for sites where devices must never be slowed down).
    pub outbox_full: OutboxFull,
    /// Keep QoS 0 messages for the broker while it is unreachable (they then
    /// count against the outbox bounds, and are not durable). Default: false
    /// — dropped and counted, as MQTT allows.
    pub queue_qos0_offline: bool,
    /// `"aggregate"` (default): one upstream session carries every device.
    /// `"per-device"`: each MQTT-SN device gets its own upstream session with
    /// its client id, CleanSession flag, keep-alive and will (see
    /// `[upstream.per_device]` and `docs/bridge.md`); the shared session
    /// stays for local clients and QoS −1 publishes.
    pub bridge_mode: BridgeMode,
    /// `[upstream.per_device]`: identities of the per-device sessions.
    pub per_device: PerDeviceConfig,
}

/// `[upstream] bridge_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BridgeMode {
    /// One upstream session for all devices.
    #[default]
    Aggregate,
    /// One upstream session per device.
    PerDevice,
}

/// `[upstream.per_device]`: how per-device upstream sessions identify
/// themselves (used only with `bridge_mode = "per-device"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerDeviceConfig {
    /// Put in front of the device's client id to make its upstream client
    /// id. Default: `""` (the device's own id).
    pub client_id_prefix: String,
    /// How long a device's CONNACK waits for its upstream session before
    /// the device is accepted anyway and works offline, in seconds (≥ 1).
    /// Default: 5.
    pub connect_wait_secs: u32,
    /// Default credentials for every device's session; `%c` in `username`
    /// stands for the device's client id. Default: none (no user name;
    /// `[upstream.tls]`'s client certificate, if any, is used).
    pub username: Option<String>,
    /// Default password. Default: none.
    pub password: Option<String>,
    /// `[[upstream.per_device.credentials]]`: credentials for the devices
    /// whose client id matches `client_id` (a glob); the first match wins,
    /// then the defaults above.
    pub credentials: Vec<DeviceCredentials>,
}

impl Default for PerDeviceConfig {
    fn default() -> Self {
        Self {
            client_id_prefix: String::new(),
            connect_wait_secs: 5,
            username: None,
            password: None,
            credentials: Vec::new(),
        }
    }
}

/// One `[[upstream.per_device.credentials]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceCredentials {
    /// Glob over device client ids (`*`, `?`), e.g. `"sensor-*"`. Required.
    pub client_id: String,
    /// MQTT user name (`%c` = the device's client id). Default: none.
    pub username: Option<String>,
    /// MQTT password. Default: none.
    pub password: Option<String>,
    /// PEM client certificate for this device's TLS session (with
    /// `key_file`; needs `[upstream.tls]` for the CA). Default: none.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`. Default: none.
    pub key_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 1883,
            client_id: "sngate".to_owned(),
            username: None,
            password: None,
            keep_alive_secs: 30,
            clean_session: false,
            reconnect_min_secs: 1,
            reconnect_max_secs: 60,
            tls: None,
            rules: Vec::new(),
            protocol_version: 5,
            max_pending_messages: 100_000,
            max_pending_bytes: 64 * MIB,
            outbox_full: OutboxFull::Backpressure,
            queue_qos0_offline: false,
            bridge_mode: BridgeMode::Aggregate,
            per_device: PerDeviceConfig::default(),
        }
    }
}

/// `[upstream] outbox_full`: the policy when the upstream outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxFull {
    /// Hold senders' QoS 1/2 messages unacknowledged until there is room.
    Backpressure,
    /// Acknowledge anyway; drop the upstream copy and count it.
    DropNewest,
}

/// `[upstream.tls]`: TLS towards the broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that sign the broker's certificate.
    /// Required.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that require client auth. Default:
    /// none; give together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`. Default: none; give together with
    /// `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// One `[[upstream.rules]]` entry: a topic filter that crosses the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeRule {
    /// Which way messages flow: `"out"` (devices to broker), `"in"` (broker
    /// to devices; subscribed upstream) or `"both"`. Default: `"out"`, as in
    /// mosquitto.
    pub direction: Direction,
    /// MQTT topic filter (local form, without prefix); `+` and `#` allowed.
    /// Default: `"#"`.
    pub topic: String,
    /// Highest QoS used across the bridge for this rule (0..=2). Default: 2.
    pub qos: u8,
    /// Prefix of the topic on the gateway side, stripped before
    /// `remote_prefix` is added. Default: `""`.
    pub local_prefix: String,
    /// Prefix of the topic on the broker side. Default: `""`.
    pub remote_prefix: String,
}

impl Default for BridgeRule {
    fn default() -> Self {
        Self {
            direction: Direction::default(),
            topic: "#".to_owned(),
            qos: 2,
            local_prefix: String::new(),
            remote_prefix: String::new(),
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

/// Which way a bridge rule carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Gateway to broker.
    #[default]
    Out,
    /// Broker to gateway.
    In,
    /// Both ways.
    Both,
}

/// `[log]`: log level and format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive: a level (`"info"`) or per-target list
    /// (`"info,sngate::core=debug"`). `RUST_LOG`, when set, overrides it.
    /// Default: `"info"`.
    pub level: String,
    /// `"text"` (human readable) or `"json"` (one object per line), on stderr.
    /// Default: `"text"`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The text is not valid TOML, has a value of the wrong type, or has an
    /// unknown key. `message` is toml's, which names the line and column.
    #[error("{}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and the offending text.
        message: String,
    },
    /// The config parsed but breaks a rule.
    #[error("{}invalid `{key}`: {reason}", Location(.path, *.line))]
    Invalid {
        /// The file (empty when the config did not come from a file).
        path: PathBuf,
        /// The dotted key, e.g. `predefined_topics[1].id`.
        key: String,
        /// 1-based line of the key in the file, when it is there.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

/// Displays `FILE:LINE: ` or `FILE: ` (nothing for an empty path), the prefix
/// of an [`Invalid`](ConfigError::Invalid) message.
struct Location<'a>(&'a Path, Option<usize>);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.as_os_str().is_empty() {
            return Ok(());
        }
        write!(f, "{}", self.0.display())?;
        if let Some(line) = self.1 {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")
    }
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: PathBuf::new(),
            key: key.into(),
            line: None,
            reason: reason.into(),
        }
    }

    /// Attributes an [`Invalid`](ConfigError::Invalid) error to the document
    /// `toml_text` read from `path`: sets the path, and the line of the key
    /// (or of its nearest enclosing table or array element that the document
    /// spells out). Other variants are returned unchanged.
    pub fn locate(self, path: &Path, toml_text: &str) -> Self {
        match self {
            ConfigError::Invalid {
                key, reason, line, ..
            } => {
                let line = line.or_else(|| line_of_key(toml_text, &key));
                ConfigError::Invalid {
                    path: path.to_owned(),
                    key,
                    line,
                    reason,
                }
            }
            other => other,
        }
    }

    /// The dotted key an [`Invalid`](ConfigError::Invalid) error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates `s`; `path` is used only in error messages.
    pub fn from_toml_str(s: &str, path: &Path) -> Result<Config, ConfigError> {
        let config = Config::parse_unvalidated(s, path)?;
        config.validate().map_err(|e| e.locate(path, s))?;
        Ok(config)
    }

    /// Parses `s` without validating, for callers that change the config
    /// (command-line overrides) before calling [`Config::validate`] once.
    pub fn parse_unvalidated(s: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(s).map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Checks the rules that types alone cannot express. The error names the
    /// dotted key but no file or line; see [`ConfigError::locate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_gateway()?;
        self.validate_udp_discovery_timers()?;
        self.validate_predefined()?;
        if let Some(upstream) = &self.upstream {
            validate_upstream(upstream)?;
        }
        for (i, port) in self.serial.iter().enumerate() {
            validate_serial(i, port)?;
        }
        validate_broker(&self.broker)?;
        self.security.validate()?;
        validate_log_level(&self.log.level).map_err(|r| ConfigError::invalid("log.level", r))
    }

    fn validate_gateway(&self) -> Result<(), ConfigError> {
        let g = &self.gateway;
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

    fn validate_udp_discovery_timers(&self) -> Result<(), ConfigError> {
        if self.udp.listen.is_empty() {
            return Err(ConfigError::invalid(
                "udp.listen",
                "needs at least one address",
            ));
        }
        if self.discovery.advertise_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "discovery.advertise_interval_secs",
                "must be at least 1",
            ));
        }
        let t = &self.timers;
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
        if self.limits.per_source_packets_per_sec > 0 && self.limits.per_source_burst == 0 {
            return Err(ConfigError::invalid(
                "limits.per_source_burst",
                "must be at least 1 while per_source_packets_per_sec is set",
            ));
        }
        if self.limits.max_clients == 0 {
            return Err(ConfigError::invalid(
                "limits.max_clients",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_predefined(&self) -> Result<(), ConfigError> {
        for (i, p) in self.predefined_topics.iter().enumerate() {
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
            let earlier = &self.predefined_topics[..i];
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

fn validate_broker(b: &BrokerConfig) -> Result<(), ConfigError> {
    if b.max_packet_bytes < 128 {
        return Err(ConfigError::invalid(
            "broker.max_packet_bytes",
            format!("{} is below 128", b.max_packet_bytes),
        ));
    }
    if b.max_inflight_messages == 0 {
        return Err(ConfigError::invalid(
            "broker.max_inflight_messages",
            "must be at least 1",
        ));
    }
    if b.max_queued_messages == 0 {
        return Err(ConfigError::invalid(
            "broker.max_queued_messages",
            "must be at least 1",
        ));
    }
    if b.connect_timeout_secs == 0 {
        return Err(ConfigError::invalid(
            "broker.connect_timeout_secs",
            "must be at least 1",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, user) in b.users.iter().enumerate() {
        if user.name.is_empty() {
            return Err(ConfigError::invalid(
                format!("broker.users[{i}].name"),
                "must not be empty",
            ));
        }
        if !names.insert(user.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("broker.users[{i}].name"),
                format!("{:?} is listed twice", user.name),
            ));
        }
        if let Err(e) = user.password_hash.parse::<crate::security::PasswordHash>() {
            return Err(ConfigError::invalid(
                format!("broker.users[{i}].password_hash"),
                e.to_string(),
            ));
        }
    }
    if b.users.is_empty()
        && b.allow_anonymous.is_none()
        && let Some((key, addr)) = b.first_non_loopback()
    {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{addr} is not a loopback address, and with no [[broker.users]] anonymous \
                 clients are let in only while every listener is on loopback (local-only \
                 mode): add [[broker.users]] (`sngate passwd --user NAME` \
                 prints an entry), or set [broker] allow_anonymous = true to let in anyone \
                 who can reach it"
            ),
        ));
    }
    if b.users.is_empty() && b.allow_anonymous == Some(false) && b.enabled() {
        return Err(ConfigError::invalid(
            "broker.allow_anonymous",
            "false with no [[broker.users]]: no client could connect",
        ));
    }
    if !b.tls_listen.is_empty() {
        for (key, value) in [
            ("broker.tls_cert_file", &b.tls_cert_file),
            ("broker.tls_key_file", &b.tls_key_file),
        ] {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::invalid(key, "required with broker.tls_listen"));
            }
        }
    }
    Ok(())
}

fn validate_upstream(u: &UpstreamConfig) -> Result<(), ConfigError> {
    if u.host.trim().is_empty() {
        return Err(ConfigError::invalid(
            "upstream.host",
            "must be set to the broker's host name or address",
        ));
    }
    if u.reconnect_min_secs == 0 {
        return Err(ConfigError::invalid(
            "upstream.reconnect_min_secs",
            "must be at least 1",
        ));
    }
    if u.reconnect_min_secs > u.reconnect_max_secs {
        return Err(ConfigError::invalid(
            "upstream.reconnect_min_secs",
            format!(
                "{} is greater than upstream.reconnect_max_secs ({})",
                u.reconnect_min_secs, u.reconnect_max_secs
            ),
        ));
    }
    if !matches!(u.protocol_version, 4 | 5) {
        return Err(ConfigError::invalid(
            "upstream.protocol_version",
            format!("{} is not 4 (MQTT 3.1.1) or 5 (MQTT 5)", u.protocol_version),
        ));
    }
    if u.max_pending_messages == 0 || u.max_pending_bytes == 0 {
        let key = if u.max_pending_messages == 0 {
            "upstream.max_pending_messages"
        } else {
            "upstream.max_pending_bytes"
        };
        return Err(ConfigError::invalid(key, "must be at least 1"));
    }
    if let Some(tls) = &u.tls {
        if tls.ca_file.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "upstream.tls.ca_file",
                "must name the CA certificate file",
            ));
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let key = if tls.cert_file.is_some() {
                "upstream.tls.key_file"
            } else {
                "upstream.tls.cert_file"
            };
            return Err(ConfigError::invalid(
                key,
                "cert_file and key_file must be given together",
            ));
        }
    }
    validate_per_device(u)?;
    for (i, rule) in u.rules.iter().enumerate() {
        if rule.qos > 2 {
            return Err(ConfigError::invalid(
                format!("upstream.rules[{i}].qos"),
                format!("{} is outside 0..=2", rule.qos),
            ));
        }
        if rule.topic.is_empty() {
            return Err(ConfigError::invalid(
                format!("upstream.rules[{i}].topic"),
                "must not be empty (use \"#\" for everything)",
            ));
        }
    }
    Ok(())
}

/// `[upstream.per_device]` and the per-device mode's own needs.
fn validate_per_device(u: &UpstreamConfig) -> Result<(), ConfigError> {
    let pd = &u.per_device;
    if u.bridge_mode == BridgeMode::PerDevice && u.client_id.is_empty() {
        return Err(ConfigError::invalid(
            "upstream.client_id",
            "must not be empty with bridge_mode = \"per-device\" (it tags the gateway's own messages)",
        ));
    }
    if pd.connect_wait_secs == 0 {
        return Err(ConfigError::invalid(
            "upstream.per_device.connect_wait_secs",
            "must be at least 1",
        ));
    }
    for (i, c) in pd.credentials.iter().enumerate() {
        let key = |field: &str| format!("upstream.per_device.credentials[{i}].{field}");
        if c.client_id.is_empty() {
            return Err(ConfigError::invalid(
                key("client_id"),
                "must be a client id glob (\"*\" for every device)",
            ));
        }
        if c.cert_file.is_some() != c.key_file.is_some() {
            let missing = if c.cert_file.is_some() {
                "key_file"
            } else {
                "cert_file"
            };
            return Err(ConfigError::invalid(
                key(missing),
                "cert_file and key_file must be given together",
            ));
        }
        if c.cert_file.is_some() && u.tls.is_none() {
            return Err(ConfigError::invalid(
                key("cert_file"),
                "a client certificate needs [upstream.tls] (its ca_file)",
            ));
        }
    }
    Ok(())
}

/// Is `ip` a loopback address (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`
/// as a dual-stack socket spells an IPv4 one)? The broker's local-only mode
/// is decided with this.
pub(crate) fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Checks that `level` is an `EnvFilter` directive. A bare word must be a level
/// name: `EnvFilter` would read a typo like `"inf"` as a target name and
/// silently log nothing else.
fn validate_level_directive(directive: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let d = directive.trim();
    if !d.contains(['=', '[']) && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d)) {
        return Err(format!(
            "{d:?} is not a level (trace, debug, info, warn, error, off) \
             or a target=level directive"
        ));
    }
    Ok(())
}

fn validate_serial(i: usize, p: &SerialConfig) -> Result<(), ConfigError> {
    let invalid =
        |k: &str, reason: &str| Err(ConfigError::invalid(format!("serial[{i}].{k}"), reason));
    if p.device.is_empty() {
        return invalid("device", "must name the serial device, e.g. /dev/ttyUSB0");
    }
    if p.baud == 0 {
        return invalid("baud", "must be at least 1");
    }
    if !(5..=8).contains(&p.data_bits) {
        return invalid("data_bits", "must be 5, 6, 7 or 8");
    }
    if !(1..=2).contains(&p.stop_bits) {
        return invalid("stop_bits", "must be 1 or 2");
    }
    if p.reopen_min_secs == 0 || p.reopen_min_secs > p.reopen_max_secs {
        return invalid(
            "reopen_min_secs",
            "must be at least 1 and at most reopen_max_secs",
        );
    }
    let addressed = p.framing.has_radio_addresses();
    for (j, a) in p.allow_radio_addresses.iter().enumerate() {
        if let Err(e) = crate::core::admission::RadioAddr::parse(a, addressed) {
            return invalid(&format!("allow_radio_addresses[{j}]"), &e.to_string());
        }
    }
    Ok(())
}

fn validate_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty (e.g. \"info\")".to_owned());
    }
    for directive in level.split(',').filter(|d| !d.trim().is_empty()) {
        validate_level_directive(directive)?;
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|e| format!("{level:?} is not a valid filter: {e}"))
}

/// Reads a config file, mapping failures to [`ConfigError::Io`].
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

/// One step of a dotted key: a table key or an array index.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into `[Key(a), Key(b), Index(2), Key(c)]`.
fn split_key(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(i) = stripped[..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

/// The 1-based line where `key` (dotted) is written in `toml_text`, or where its
/// nearest enclosing table or array element is, using toml's parser spans.
/// `None` if the document does not parse or does not mention the key at all.
fn line_of_key(toml_text: &str, key: &str) -> Option<usize> {
    let root = DeTable::parse(toml_text).ok()?;
    let mut best: Option<usize> = None;
    let mut table: &DeTable<'_> = root.get_ref();
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for segment in split_key(key) {
        let next = match (segment, value) {
            (Segment::Key(k), None) => table.get_key_value(k).map(|(k, v)| (k.span().start, v)),
            (Segment::Key(k), Some(v)) => match v.get_ref() {
                DeValue::Table(t) => t.get_key_value(k).map(|(k, v)| (k.span().start, v)),
                _ => None,
            },
            (Segment::Index(i), Some(v)) => v.get_ref().get(i).map(|e| (e.span().start, e)),
            (Segment::Index(_), None) => None,
        };
        let Some((offset, v)) = next else { break };
        best = Some(offset);
        value = Some(v);
        if let DeValue::Table(t) = v.get_ref() {
            table = t;
        }
    }
    best.map(|offset| line_at(toml_text, offset))
}

fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(s, Path::new("test.toml"))
    }

    fn invalid(s: &str) -> (String, Option<usize>, String) {
        match parse(s) {
            Err(ConfigError::Invalid {
                key, line, reason, ..
            }) => (key, line, reason),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn default_file_parses_validates_and_equals_default() {
        let parsed = parse(DEFAULT_CONFIG_TOML).expect("default config file");
        assert_eq!(parsed, Config::default());
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn the_commented_upstream_example_parses_and_validates() {
        // The `# [upstream]` block of the default file, uncommented (its
        // `# # ` lines are prose and stay comments).
        let start = DEFAULT_CONFIG_TOML
            .find("# [upstream]\n")
            .expect("upstream example");
        let end = DEFAULT_CONFIG_TOML
            .find("\n[broker]\n")
            .expect("broker section");
        let example: String = DEFAULT_CONFIG_TOML[start..end]
            .lines()
            .filter(|l| !l.starts_with("# #"))
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
        let up = c.upstream.expect("an upstream");
        assert_eq!(up.bridge_mode, BridgeMode::Aggregate);
        assert_eq!(
            up.per_device,
            PerDeviceConfig {
                credentials: up.per_device.credentials.clone(),
                ..PerDeviceConfig::default()
            }
        );
        assert_eq!(up.per_device.credentials[0].client_id, "camera-*");
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[gateway]\ngateway_id = 2\n\n[limits]\nmax_clinets = 5\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(msg.contains("max_clinets"), "{msg}");
        assert!(msg.contains("line 5"), "{msg}");
    }

    #[test]
    fn duplicate_predefined_id_points_at_second_id() {
        let text = "[[predefined_topics]]\nid = 5\ntopic = \"a\"\n\n\
                    [[predefined_topics]]\ntopic = \"b\"\nid = 5\n";
        let (key, line, reason) = invalid(text);
        assert_eq!(key, "predefined_topics[1].id");
        assert_eq!(line, Some(7));
        assert!(reason.contains("duplicate"), "{reason}");
        let msg = parse(text).unwrap_err().to_string();
        assert_eq!(
            msg,
            "test.toml:7: invalid `predefined_topics[1].id`: \
             duplicate id 5 (already used by predefined_topics[0])"
        );
    }

    #[test]
    fn predefined_topic_rules() {
        // TOML string literals, as written in a file.
        for (topic, word) in [
            (r#""""#, "empty"),
            (r#""a/+""#, "wildcard"),
            (r#""a/#""#, "wildcard"),
            (r#""a\u0000""#, "NUL"),
        ] {
            let text = format!("[[predefined_topics]]\nid = 1\ntopic = {topic}\n");
            let (key, line, reason) = invalid(&text);
            assert_eq!(key, "predefined_topics[0].topic");
            assert_eq!(line, Some(3));
            assert!(reason.contains(word), "{reason}");
        }
        for id in [0, 65535] {
            let (key, ..) = invalid(&format!(
                "predefined_topics = [{{ id = {id}, topic = \"t\" }}]"
            ));
            assert_eq!(key, "predefined_topics[0].id");
        }
        let (key, line, _) = invalid(
            "predefined_topics = [\n  { id = 1, topic = \"t\" },\n  { id = 2, topic = \"t\" },\n]\n",
        );
        assert_eq!(
            (key.as_str(), line),
            ("predefined_topics[1].topic", Some(3))
        );
    }

    #[test]
    fn scalar_rules() {
        let cases = [
            ("[udp]\nlisten = []\n", "udp.listen", 2),
            ("[timers]\nmax_retries = 0\n", "timers.max_retries", 2),
            (
                "[timers]\n\nretry_interval_secs = 0\n",
                "timers.retry_interval_secs",
                3,
            ),
            (
                "[gateway]\nmax_packet_bytes = 63\n",
                "gateway.max_packet_bytes",
                2,
            ),
            (
                "[gateway]\nmax_packet_bytes = 65536\n",
                "gateway.max_packet_bytes",
                2,
            ),
            (
                "[gateway]\nkeep_alive_default_secs = 0\n",
                "gateway.keep_alive_default_secs",
                2,
            ),
            (
                "[gateway]\nkeep_alive_max_secs = 60\nkeep_alive_default_secs = 61\n",
                "gateway.keep_alive_default_secs",
                3,
            ),
            ("[log]\nlevel = \"inf\"\n", "log.level", 2),
            (
                "[broker]\nallow_anonymous = false\n",
                "broker.allow_anonymous",
                2,
            ),
            (
                "[broker]\ntls_listen = [\"127.0.0.1:8883\"]\ntls_key_file = \"k.pem\"\n",
                "broker.tls_cert_file",
                1,
            ),
            (
                "[[broker.users]]\nname = \"a\"\npassword_hash = \"a\"\n",
                "broker.users[0].password_hash",
                3,
            ),
            (
                "[[broker.users]]\nname = \"\"\npassword_hash = \"a\"\n",
                "broker.users[0].name",
                2,
            ),
            ("[log]\nlevel = \"info,sngate=loud\"\n", "log.level", 2),
            ("[upstream]\nport = 1\n", "upstream.host", 1),
            (
                "[[serial]]\ndevice = \"/dev/x\"\nallow_radio_addresses = [\"0013A20040A1B2C3\", \"12\"]\n",
                "serial[0].allow_radio_addresses[1]",
                3,
            ),
            (
                "[[serial]]\ndevice = \"/dev/x\"\nframing = \"slip\"\nallow_radio_addresses = [\"1A2B/01\"]\n",
                "serial[0].allow_radio_addresses[0]",
                4,
            ),
            (
                "[upstream]\nhost = \"h\"\nreconnect_min_secs = 9\nreconnect_max_secs = 8\n",
                "upstream.reconnect_min_secs",
                3,
            ),
            (
                "[upstream]\nhost = \"h\"\n[[upstream.rules]]\ntopic = \"a\"\n[[upstream.rules]]\nqos = 3\n",
                "upstream.rules[1].qos",
                6,
            ),
            (
                "[upstream]\nhost = \"h\"\n[upstream.per_device]\nconnect_wait_secs = 0\n",
                "upstream.per_device.connect_wait_secs",
                4,
            ),
            (
                "[upstream]\nhost = \"h\"\nbridge_mode = \"per-device\"\nclient_id = \"\"\n",
                "upstream.client_id",
                4,
            ),
            (
                "[upstream]\nhost = \"h\"\n[[upstream.per_device.credentials]]\nusername = \"u\"\n",
                "upstream.per_device.credentials[0].client_id",
                3,
            ),
            (
                "[upstream]\nhost = \"h\"\n[[upstream.per_device.credentials]]\nclient_id = \"a*\"\n\
                 cert_file = \"/c.pem\"\n",
                "upstream.per_device.credentials[0].key_file",
                3,
            ),
            (
                "[upstream]\nhost = \"h\"\n[[upstream.per_device.credentials]]\nclient_id = \"a*\"\n\
                 cert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n",
                "upstream.per_device.credentials[0].cert_file",
                5,
            ),
        ];
        for (text, want_key, want_line) in cases {
            let (key, line, _) = invalid(text);
            assert_eq!((key.as_str(), line), (want_key, Some(want_line)), "{text}");
        }
    }

    #[test]
    fn valid_variants_are_accepted() {
        let c = parse(
            "[udp]\nlisten = [\"[::]:1883\", \"127.0.0.1:10000\"]\n\
             [log]\nlevel = \"info,sngate::core=debug\"\nformat = \"json\"\n\
             [upstream]\nhost = \"broker\"\n[upstream.tls]\nca_file = \"/etc/ca.pem\"\n\
             [[upstream.rules]]\ndirection = \"both\"\nqos = 1\n",
        )
        .unwrap();
        assert_eq!(c.udp.listen.len(), 2);
        assert_eq!(c.log.format, LogFormat::Json);
        let up = c.upstream.unwrap();
        assert_eq!(up.port, 1883);
        assert_eq!(up.rules[0].direction, Direction::Both);
        assert_eq!(up.rules[0].topic, "#");
        assert_eq!(up.bridge_mode, BridgeMode::Aggregate);
        let c = parse(
            "[upstream]\nhost = \"broker\"\nbridge_mode = \"per-device\"\n\
             [upstream.tls]\nca_file = \"/etc/ca.pem\"\n\
             [upstream.per_device]\nclient_id_prefix = \"sn-\"\nusername = \"%c\"\n\
             [[upstream.per_device.credentials]]\nclient_id = \"cam-*\"\n\
             cert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n",
        )
        .unwrap();
        let up = c.upstream.unwrap();
        assert_eq!(up.bridge_mode, BridgeMode::PerDevice);
        assert_eq!(up.per_device.client_id_prefix, "sn-");
        assert_eq!(up.per_device.credentials[0].client_id, "cam-*");
    }

    #[test]
    fn anonymous_clients_follow_local_only_mode() {
        const USER: &str = "[[broker.users]]\nname = \"app\"\n\
            password_hash = \"$pbkdf2-sha256$i=1000,l=32$yBVTmZ9SB3lR1wmOsu4fLQ$\
            sNh8STjvO62FcreVLlU4QK/6bbOrwBF0axbQgllKuCM\"\n";
        let anon = |text: &str| parse(text).map(|c| c.broker.anonymous_allowed());
        // Local-only: the default listener, every loopback form, plain and TLS.
        assert!(anon("").unwrap());
        let tls = "tls_cert_file = \"c\"\ntls_key_file = \"k\"\n";
        assert!(
            anon(&format!(
                "[broker]\nlisten = [\"127.0.0.2:1883\", \"[::1]:1883\", \"[::ffff:127.0.0.1]:1\"]\n\
                 tls_listen = [\"127.0.0.1:8883\"]\n{tls}"
            ))
            .unwrap()
        );
        // Users turn anonymous access off, wherever the listeners are.
        assert!(!anon(USER).unwrap());
        let lan = "[broker]\nlisten = [\"127.0.0.1:1883\", \"0.0.0.0:1883\"]\n";
        assert!(!anon(&format!("{lan}{USER}")).unwrap());
        // Said outright, it is what was said.
        assert!(anon(&format!("{lan}allow_anonymous = true\n")).unwrap());
        assert!(!anon(&format!("{lan}allow_anonymous = false\n{USER}")).unwrap());
        // Beyond loopback, no users and nothing said: an error naming the
        // listener, telling what to do.
        let (key, line, reason) = invalid(lan);
        assert_eq!((key.as_str(), line), ("broker.listen[1]", Some(2)));
        assert!(
            reason.contains("0.0.0.0:1883")
                && reason.contains("[[broker.users]]")
                && reason.contains("allow_anonymous = true"),
            "{reason}"
        );
        let (key, ..) = invalid(&format!(
            "[broker]\nlisten = []\ntls_listen = [\"[::]:8883\"]\n{tls}"
        ));
        assert_eq!(key, "broker.tls_listen[0]");
        // A broker that is off has no listener to worry about.
        assert!(parse("[broker]\nlisten = []\n").is_ok());
    }

    #[test]
    fn radio_allow_lists_follow_the_framing() {
        let c = parse(
            "[[serial]]\ndevice = \"/dev/a\"\n\
             allow_radio_addresses = [\"0013a20040A1B2C3\", \"1A2B\", \"0013A20040A1B2C3/0102\"]\n\
             [[serial]]\ndevice = \"/dev/b\"\nframing = \"raw\"\nallow_radio_addresses = [\"0102\"]\n",
        )
        .unwrap();
        let admission = c.security.admission(&c.serial);
        assert_eq!(admission.allow_radio.len(), 2);
        assert_eq!(admission.allow_radio[0].len(), 3);
        assert_eq!(admission.allow_radio[1].len(), 1);
        let (_, _, reason) =
            invalid("[[serial]]\ndevice = \"/dev/a\"\nallow_radio_addresses = [\"01\"]\n");
        assert!(reason.contains("16 hex digits"), "{reason}");
    }

    #[test]
    fn wrong_type_is_a_parse_error_with_line() {
        let msg = parse("\n[gateway]\ngateway_id = \"one\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 3"), "{msg}");
        let msg = parse("[upstream.rules]\n").unwrap_err().to_string();
        assert!(msg.starts_with("test.toml: "), "{msg}");
    }

    #[test]
    fn locate_without_document_key_falls_back() {
        let err = ConfigError::invalid("udp.listen", "x").locate(Path::new("f"), "[gateway]\n");
        assert_eq!(err.to_string(), "f: invalid `udp.listen`: x");
        let err = ConfigError::invalid("udp.listen", "x").locate(Path::new("f"), "not toml [");
        assert_eq!(err.to_string(), "f: invalid `udp.listen`: x");
    }

    #[test]
    fn unlocated_error_has_no_location_prefix() {
        let mut c = Config::default();
        c.timers.max_retries = 0;
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `timers.max_retries`: must be at least 1"
        );
    }

    #[test]
    fn split_key_handles_indices() {
        use Segment::*;
        assert_eq!(
            split_key("upstream.rules[2].qos"),
            vec![Key("upstream"), Key("rules"), Index(2), Key("qos")]
        );
    }
}
