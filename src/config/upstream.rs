//! The `[upstream]` section: the MQTT broker sngate bridges to, its TLS,
//! the topic rules that cross the bridge, the outbox bounds, and the
//! per-device sessions' identities, with their defaults and rules. `bridge/`
//! runs what this describes; a reload reports any change here as needing a
//! restart.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, MIB};

/// `[upstream]`: the MQTT broker to bridge to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Broker host name or IP address. Required, non-empty.
    pub host: String,
    /// Broker port. Default: 1883.
    pub port: u16,
    /// MQTT client id the gateway uses upstream. Default:
    /// `sngate-<hostname>-<gateway id>-<first UDP port>` (see
    /// [`default_client_id`]), so two gateways on one broker — even on one
    /// host — never take each other's session over; set it
    /// (or `--upstream-client-id`) where the broker expects a fixed id.
    /// After loading it is always `Some`.
    pub client_id: Option<String>,
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
    /// MQTT 5: the Will Delay Interval given with every will (each
    /// device's, in per-device mode), in seconds: the broker publishes a
    /// will only once its session has been gone this long, so a
    /// gateway↔broker blip (or a device roaming to another gateway) publishes
    /// none. A device really lost gets its will this much later. 0: at once
    /// (MQTT 3.1.1 has no delay). Default: 30.
    pub will_delay_secs: u32,
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

impl UpstreamConfig {
    /// The client id the shared session uses: the configured one, or the
    /// default for gateway id 1 (what [`Config`](super::Config) resolves
    /// when it loads; this fallback serves configurations built in code).
    pub fn effective_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| default_client_id(&local_hostname(), 1, None))
    }
}

/// The default upstream client id: `sngate-<host>-<gateway id>-<udp port>`
/// (without `-<udp port>` when there is none), where `<host>` is the host
/// name's first label with anything but ASCII letters, digits, `-` and `_`
/// replaced by `-`: each gateway has its own identity on a shared broker,
/// and two gateways on one host differ by their UDP port (they cannot
/// share it) — all three stay the same across restarts, so the broker's
/// persistent session is found again.
pub fn default_client_id(hostname: &str, gateway_id: u8, udp_port: Option<u16>) -> String {
    let label = hostname.trim().split('.').next().unwrap_or_default();
    let host: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let host = if host.is_empty() { "localhost" } else { &host };
    match udp_port {
        Some(port) => format!("sngate-{host}-{gateway_id}-{port}"),
        None => format!("sngate-{host}-{gateway_id}"),
    }
}

/// This machine's host name (Linux: `/proc/sys/kernel/hostname`, then
/// `/etc/hostname`), or `localhost` when neither can be read.
pub fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 1883,
            client_id: None,
            username: None,
            password: None,
            keep_alive_secs: 30,
            clean_session: false,
            will_delay_secs: crate::bridge::link::WILL_DELAY_SECS,
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
    /// `remote_prefix` is added; `{gateway}` stands for the gateway's
    /// upstream client id. Default: `""`.
    pub local_prefix: String,
    /// Prefix of the topic on the broker side; `{gateway}` stands for the
    /// gateway's upstream client id (e.g. `"site/{gateway}/"` keeps several
    /// gateways' topics apart on one broker). Default: `""`.
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

/// Checks `[upstream]` and what it contains.
pub(super) fn validate_upstream(u: &UpstreamConfig) -> Result<(), ConfigError> {
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
        let placeholder = crate::bridge::rules::GATEWAY_PLACEHOLDER;
        let named = [&rule.local_prefix, &rule.remote_prefix]
            .iter()
            .any(|p| p.contains(placeholder));
        if named
            && let Some(id) = &u.client_id
            && id.contains(['+', '#'])
        {
            return Err(ConfigError::invalid(
                format!("upstream.rules[{i}]"),
                format!(
                    "{placeholder} stands for the client id {id:?}, which has a wildcard (+ or #)"
                ),
            ));
        }
    }
    Ok(())
}

/// `[upstream.per_device]` and the per-device mode's own needs.
fn validate_per_device(u: &UpstreamConfig) -> Result<(), ConfigError> {
    let pd = &u.per_device;
    if u.bridge_mode == BridgeMode::PerDevice && u.client_id.as_deref() == Some("") {
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
