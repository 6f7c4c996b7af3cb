//! The command line's say over the configuration: the `sngate run` flags
//! that replace or extend the file's values ([`Overrides`], whose field
//! docs are the flags' help text), the syntax of their values (`HOST:PORT`,
//! `DEVICE:FRAMING[:BAUD]`, `ID=TOPIC`, an address or `off`), and
//! [`Config::load_with_overrides`]: the file (or the defaults), then the
//! overrides, validated once, with an error pointing into the file unless
//! the key came from the command line. SIGHUP runs the same merge again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{
    BridgeMode, Config, ConfigError, LogFormat, PredefinedTopic, SerialConfig, SerialFraming,
    UpstreamConfig, read_source,
};

/// The `sngate run` flags that override the configuration file.
///
/// The field docs are the flags' `--help` text, where `[log] level` names a
/// TOML section rather than a rustdoc link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Log filter, overriding [log] level: a level (trace, debug, info, warn,
    /// error) or a tracing directive such as "info,sngate_core=debug".
    /// RUST_LOG, when set, overrides both.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Trace every packet of this MQTT-SN client id (one line per packet
    /// received or sent, like `mosquitto -v`), overriding [log] trace_client.
    #[arg(long, value_name = "CLIENT_ID")]
    pub trace_client: Option<String>,
    /// Log format, overriding [log] format.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// UDP address to listen on, e.g. 0.0.0.0:1883 or [::]:1883. Repeatable;
    /// replaces [udp] listen.
    #[arg(long = "udp", value_name = "ADDR")]
    pub udp: Vec<SocketAddr>,
    /// DTLS address to listen on for devices, e.g. 0.0.0.0:8883 or
    /// [::]:8883. Repeatable; replaces [dtls] listen (needs a psk file).
    #[arg(long = "dtls", value_name = "ADDR")]
    pub dtls: Vec<SocketAddr>,
    /// The DTLS pre-shared keys, in mosquitto's psk_file format
    /// (identity:hexkey per line); sets [dtls] psk_file.
    #[arg(long = "psk-file", value_name = "FILE")]
    pub psk_file: Option<std::path::PathBuf>,
    /// Embedded MQTT broker TCP address, e.g. 127.0.0.1:1883 or 0.0.0.0:1883,
    /// or `off`. Repeatable; replaces [broker] listen.
    #[arg(long = "broker", value_name = "ADDR|off", value_parser = parse_broker_listen)]
    pub broker: Vec<BrokerListen>,
    /// State directory for the durable store, or `off` to keep state in
    /// memory only. Sets [store] state_dir / enabled.
    #[arg(long = "state-dir", value_name = "DIR|off")]
    pub state_dir: Option<String>,
    /// Upstream MQTT broker as HOST:PORT, or HOST alone to keep the configured
    /// port (1883 by default). Sets [upstream] host and port, creating the
    /// section if the file has none.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub upstream: Option<HostPort>,
    /// MQTT client id of the gateway's upstream session, overriding
    /// [upstream] client_id (default: sngate-<hostname>-<gateway id>). Needs
    /// an upstream (--upstream or [upstream]).
    #[arg(long, value_name = "ID")]
    pub upstream_client_id: Option<String>,
    /// Upstream bridge mode, overriding [upstream] bridge_mode: `aggregate`
    /// (one upstream session carries every device) or `per-device` (each
    /// device gets its own, with its client id, keep-alive and will). Needs
    /// an upstream (--upstream or [upstream]).
    #[arg(long, value_name = "MODE")]
    pub bridge_mode: Option<BridgeModeArg>,
    /// Predefined topic as ID=TOPIC, e.g. 1=sensors/temp. Repeatable; appended
    /// to [[predefined_topics]].
    #[arg(long = "predefined", value_name = "ID=TOPIC", value_parser = parse_predefined)]
    pub predefined: Vec<PredefinedTopic>,
    /// Serial port as DEVICE:FRAMING[:BAUD], e.g. /dev/ttyUSB0:xbee:9600;
    /// FRAMING is xbee, slip or raw. Repeatable; appended to [[serial]] with
    /// the other settings at their defaults.
    #[arg(long = "serial", value_name = "DEVICE:FRAMING[:BAUD]", value_parser = parse_serial)]
    pub serial: Vec<SerialConfig>,
    /// Gateway id sent in ADVERTISE and GWINFO (0..=255); overrides [gateway]
    /// gateway_id.
    #[arg(long, value_name = "N")]
    pub gateway_id: Option<u8>,
    /// Serve /metrics, /status and /healthz over HTTP on ADDR, e.g.
    /// 127.0.0.1:9180; replaces [http] listen.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// ACL file in mosquitto's acl_file format; replaces [security] acl_file.
    #[arg(long, value_name = "FILE")]
    pub acl_file: Option<PathBuf>,
    /// Client id glob (`*`, `?`) of MQTT-SN devices allowed to connect.
    /// Repeatable; appended to [security] allow_clients.
    #[arg(long = "allow-client", value_name = "PATTERN")]
    pub allow_client: Vec<String>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--bridge-mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BridgeModeArg {
    /// One upstream session for every device.
    Aggregate,
    /// One upstream session per device.
    PerDevice,
}

impl From<BridgeModeArg> for BridgeMode {
    fn from(m: BridgeModeArg) -> Self {
        match m {
            BridgeModeArg::Aggregate => BridgeMode::Aggregate,
            BridgeModeArg::PerDevice => BridgeMode::PerDevice,
        }
    }
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// A parsed `--upstream` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

/// A `--broker` value: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerListen {
    /// Listen on this address.
    Addr(SocketAddr),
    /// No broker at all (plain or TLS).
    Off,
}

/// Parses `HOST:PORT`, `HOST`, `[V6]:PORT` or `[V6]`.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        // [v6] or [v6]:port
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing `]` after an IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{s:?}: expected `:PORT` after `]`")),
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return Err(format!("{s:?}: write IPv6 addresses as [ADDR]:PORT")),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?}: the host is empty"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|e| format!("{s:?}: port {p:?}: {e}"))
        })
        .transpose()?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// Parses `DEVICE:FRAMING[:BAUD]` into a `[[serial]]` entry with the other
/// settings at their defaults (`sngate run --serial`, and the client tools'
/// `--serial`).
pub fn parse_serial(s: &str) -> Result<SerialConfig, String> {
    let mut parts = s.split(':');
    let device = parts.next().unwrap_or_default();
    if device.is_empty() {
        return Err(format!("{s:?}: expected DEVICE:FRAMING[:BAUD]"));
    }
    let framing = match parts.next() {
        Some("xbee") => SerialFraming::Xbee,
        Some("slip") => SerialFraming::Slip,
        Some("raw") => SerialFraming::Raw,
        Some(other) => return Err(format!("{s:?}: framing {other:?} is not xbee, slip or raw")),
        None => return Err(format!("{s:?}: expected DEVICE:FRAMING[:BAUD]")),
    };
    let mut port = SerialConfig {
        device: device.to_owned(),
        framing,
        ..SerialConfig::default()
    };
    if let Some(baud) = parts.next() {
        port.baud = baud
            .parse()
            .map_err(|_| format!("{s:?}: baud {baud:?} is not a number"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{s:?}: expected DEVICE:FRAMING[:BAUD]"));
    }
    Ok(port)
}

/// Parses `ID=TOPIC` (the topic may itself contain `=`).
pub fn parse_predefined(s: &str) -> Result<PredefinedTopic, String> {
    let (id, topic) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=TOPIC"))?;
    let id = id
        .trim()
        .parse::<u16>()
        .map_err(|e| format!("{s:?}: id {id:?}: {e}"))?;
    Ok(PredefinedTopic {
        id,
        topic: topic.to_owned(),
    })
}

/// Parses a `--broker` value: an address, or `off` (any case).
pub fn parse_broker_listen(s: &str) -> Result<BrokerListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(BrokerListen::Off);
    }
    s.parse()
        .map(BrokerListen::Addr)
        .map_err(|_| format!("`{s}` is neither an address like 127.0.0.1:1883 nor `off`"))
}

impl Overrides {
    /// Applies the overrides to `config`; returns the dotted keys they set.
    pub fn apply(&self, config: &mut Config) -> Vec<String> {
        let mut set = Vec::new();
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
            set.push("log.level".to_owned());
        }
        if let Some(id) = &self.trace_client {
            config.log.trace_client = Some(id.clone());
        }
        if let Some(format) = self.log_format {
            config.log.format = format.into();
        }
        if let Some(dir) = &self.state_dir {
            if dir.eq_ignore_ascii_case("off") {
                config.store.enabled = false;
                set.push("store.enabled".to_owned());
            } else {
                config.store.enabled = true;
                config.store.state_dir = dir.clone();
                set.push("store.state_dir".to_owned());
            }
        }
        if !self.broker.is_empty() {
            config.broker.listen = self
                .broker
                .iter()
                .filter_map(|b| match b {
                    BrokerListen::Addr(addr) => Some(*addr),
                    BrokerListen::Off => None,
                })
                .collect();
            if self.broker.contains(&BrokerListen::Off) {
                config.broker.listen.clear();
                config.broker.tls_listen.clear();
                set.push("broker.tls_listen".to_owned());
            }
            set.push("broker.listen".to_owned());
        }
        if !self.udp.is_empty() {
            config.udp.listen = self.udp.clone();
            set.push("udp.listen".to_owned());
        }
        if !self.dtls.is_empty() {
            config.dtls.listen = self.dtls.clone();
            set.push("dtls.listen".to_owned());
        }
        if let Some(path) = &self.psk_file {
            config.dtls.psk_file = Some(path.clone());
            set.push("dtls.psk_file".to_owned());
        }
        if let Some(HostPort { host, port }) = &self.upstream {
            let upstream = config.upstream.get_or_insert_with(UpstreamConfig::default);
            upstream.host = host.clone();
            set.push("upstream.host".to_owned());
            if let Some(port) = port {
                upstream.port = *port;
            }
        }
        if let Some(mode) = self.bridge_mode {
            // Without an upstream this creates one with no host, which the
            // validation then reports (as a command-line error).
            if config.upstream.is_none() {
                set.push("upstream.host".to_owned());
            }
            let upstream = config.upstream.get_or_insert_with(UpstreamConfig::default);
            upstream.bridge_mode = mode.into();
            set.push("upstream.bridge_mode".to_owned());
        }
        if let Some(id) = &self.upstream_client_id {
            if config.upstream.is_none() {
                set.push("upstream.host".to_owned());
            }
            let upstream = config.upstream.get_or_insert_with(UpstreamConfig::default);
            upstream.client_id = Some(id.clone());
            set.push("upstream.client_id".to_owned());
        }
        for p in &self.predefined {
            set.push(format!(
                "predefined_topics[{}]",
                config.predefined_topics.len()
            ));
            config.predefined_topics.push(p.clone());
        }
        if let Some(id) = self.gateway_id {
            config.gateway.gateway_id = id;
        }
        for port in &self.serial {
            set.push(format!("serial[{}]", config.serial.len()));
            config.serial.push(port.clone());
        }
        if let Some(addr) = self.http {
            config.http.listen = Some(addr);
            set.push("http.listen".to_owned());
        }
        if let Some(file) = &self.acl_file {
            config.security.acl_file = Some(file.clone());
            set.push("security.acl_file".to_owned());
        }
        if !self.allow_client.is_empty() {
            config
                .security
                .allow_clients
                .extend(self.allow_client.iter().cloned());
            set.push("security.allow_clients".to_owned());
        }
        set
    }
}

impl Config {
    /// The file at `file` (`-` is standard input), or the defaults without
    /// one, then `overrides`, validated once. A validation error points
    /// into the file unless the key came from the command line, when its
    /// path is `command line`.
    pub fn load_with_overrides(
        file: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let (mut config, source) = match file {
            Some(file) => {
                let (shown, text) = read_source(file)?;
                (
                    Config::parse_unvalidated(&text, &shown)?,
                    Some((shown, text)),
                )
            }
            None => (Config::default(), None),
        };
        let overridden = overrides.apply(&mut config);
        config.validate().map_err(|e| {
            let from_cli = e
                .key()
                .is_some_and(|key| overridden.iter().any(|o| key.starts_with(o.as_str())));
            match (&source, from_cli) {
                (Some((path, text)), false) => e.locate(path, text),
                _ => from_command_line(e),
            }
        })?;
        config.resolve_defaults();
        Ok(config)
    }
}

/// Marks a validation error as caused by a command-line value.
fn from_command_line(e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid {
            key, line, reason, ..
        } => ConfigError::Invalid {
            path: PathBuf::from("command line"),
            key,
            line,
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let hp = parse_host_port("broker:8883").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("broker", Some(8883)));
        let hp = parse_host_port("broker").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("broker", None));
        let hp = parse_host_port("[::1]:1884").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("::1", Some(1884)));
        let hp = parse_host_port("[fe80::1]").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("fe80::1", None));
        for bad in [":1883", "h:99999", "h:", "::1:1883", "[::1", "[::1]x", ""] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn predefined_forms() {
        let p = parse_predefined("7=a/b=c").unwrap();
        assert_eq!((p.id, p.topic.as_str()), (7, "a/b=c"));
        for bad in ["7", "x=a", "70000=a"] {
            assert!(parse_predefined(bad).is_err(), "{bad}");
        }
    }
}
