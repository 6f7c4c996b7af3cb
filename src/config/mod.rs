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
//!
//! One file per group of sections, each with its structs, defaults and
//! rules: `gateway` (`[gateway]`, `[discovery]`, `[timers]`, `[limits]`,
//! `[[predefined_topics]]`), `transport` (`[udp]`, `[[serial]]`),
//! `upstream`, `broker`, `store`, `security`, `http` and `log`; `error`
//! holds [`ConfigError`] and the key-to-line locator. Around them, what the
//! rest of the gateway needs from a configuration: [`overrides`] (the
//! command line's `sngate run` flags merged over the file), `engine` (the
//! engine's [`EngineConfig`](crate::core::EngineConfig) and the limits
//! outside it) and [`reload`] (what a SIGHUP may change in a running
//! gateway). Nothing here opens a socket or starts a task.

mod broker;
mod dtls;
mod engine;
mod error;
mod gateway;
mod http;
mod log;
pub mod overrides;
pub mod reload;
mod security;
mod store;
mod transport;
mod upstream;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub(crate) use broker::is_loopback;
pub use broker::{BrokerConfig, BrokerUser};
pub use dtls::DtlsConfig;
pub use error::ConfigError;
pub use gateway::{
    DiscoveryConfig, GatewayConfig, LimitsConfig, PredefinedTopic, QueueOverflow, TimersConfig,
};
pub use http::HttpConfig;
pub use log::{LogConfig, LogFormat};
pub use overrides::Overrides;
pub use security::{RefusedConnect, SecurityConfig};
pub use store::{DEFAULT_LINGER_MS, StoreConfig};
pub use transport::{
    SerialConfig, SerialFlowControl, SerialFraming, SerialParity, UdpConfig, XbeeTx,
};
pub use upstream::{
    BridgeMode, BridgeRule, DeviceCredentials, Direction, OutboxFull, PerDeviceConfig, TlsConfig,
    UpstreamConfig, default_client_id, local_hostname,
};

/// The annotated default configuration, as printed by `sngate print-config`.
///
/// It parses to exactly [`Config::default()`] (checked by a unit test).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/sngate.toml");

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
    /// `[dtls]`: DTLS listeners for devices, their keys and identity rule.
    pub dtls: DtlsConfig,
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
    /// (docs/security.md).
    pub security: SecurityConfig,
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates `s`; `path` is used only in error messages.
    pub fn from_toml_str(s: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::parse_unvalidated(s, path)?;
        config.validate().map_err(|e| e.locate(path, s))?;
        config.resolve_defaults();
        Ok(config)
    }

    /// Fills in the defaults that depend on the machine or on other
    /// sections: the upstream client id
    /// (`sngate-<hostname>-<gateway id>-<first UDP port>`) — unless that
    /// port is 0 (ephemeral), when the gateway fills it in once bound
    /// ([`Config::upstream_client_id`]). Loading calls it; idempotent.
    pub fn resolve_defaults(&mut self) {
        let port = self.udp.listen.first().map(std::net::SocketAddr::port);
        if port != Some(0)
            && let Some(id) = self.upstream_client_id(port)
            && let Some(u) = self.upstream.as_mut()
        {
            u.client_id = Some(id);
        }
    }

    /// The upstream client id: the configured one, else the default for
    /// this host, gateway id and first UDP port `udp_port` (as bound).
    /// `None` without an upstream.
    pub fn upstream_client_id(&self, udp_port: Option<u16>) -> Option<String> {
        let u = self.upstream.as_ref()?;
        Some(u.client_id.clone().unwrap_or_else(|| {
            upstream::default_client_id(
                &upstream::local_hostname(),
                self.gateway.gateway_id,
                udp_port,
            )
        }))
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
        self.gateway.validate()?;
        self.udp.validate(!self.dtls.listen.is_empty())?;
        self.dtls.validate()?;
        self.discovery.validate()?;
        self.timers.validate()?;
        self.limits.validate()?;
        self.store.validate()?;
        gateway::validate_predefined(&self.predefined_topics)?;
        if let Some(upstream) = &self.upstream {
            upstream::validate_upstream(upstream)?;
        }
        for (i, port) in self.serial.iter().enumerate() {
            transport::validate_serial(i, port)?;
        }
        broker::validate_broker(&self.broker)?;
        self.security.validate()?;
        self.log.validate()
    }
}

/// Reads a config file, mapping failures to [`ConfigError::Io`].
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a config file, or standard input for `-`; returns the text and the
/// name to show in messages ([`display_path`]).
pub fn read_source(file: &Path) -> Result<(PathBuf, String), ConfigError> {
    let shown = display_path(file);
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            ConfigError::Io {
                path: shown.clone(),
                source,
            }
        })?;
        Ok((shown, text))
    } else {
        read_file(file).map(|text| (shown, text))
    }
}

/// Where a config came from, for messages: `-` is shown as `<stdin>`.
pub fn display_path(file: &Path) -> PathBuf {
    if file == Path::new("-") {
        PathBuf::from("<stdin>")
    } else {
        file.to_owned()
    }
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
    fn the_upstream_client_id_defaults_to_host_gateway_id_and_udp_port() {
        let c = parse(
            "[gateway]\ngateway_id = 7\n[udp]\nlisten = [\"0.0.0.0:2883\"]\n[upstream]\nhost = \"h\"\n",
        )
        .unwrap();
        let host = local_hostname();
        let expected = default_client_id(&host, 7, Some(2883));
        assert_eq!(c.upstream.unwrap().client_id.as_deref(), Some(&*expected));
        assert!(expected.starts_with("sngate-") && expected.ends_with("-7-2883"));
        // An id in the file is kept as it is, even empty.
        let c =
            parse("[upstream]\nhost = \"h\"\nclient_id = \"\"\nclean_session = true\n").unwrap();
        assert_eq!(c.upstream.unwrap().client_id.as_deref(), Some(""));
    }

    #[test]
    fn default_client_ids_are_tidy_and_differ_between_gateways() {
        assert_eq!(
            default_client_id("pi.lan", 1, Some(1883)),
            "sngate-pi-1-1883"
        );
        assert_eq!(
            default_client_id("my host#1", 2, None),
            "sngate-my-host-1-2"
        );
        assert_eq!(default_client_id("", 1, None), "sngate-localhost-1");
        assert_ne!(
            default_client_id("pi", 1, Some(1883)),
            default_client_id("pi", 1, Some(1884))
        );
    }

    #[test]
    fn upstream_client_id_flag_overrides_the_file() {
        let overrides = Overrides {
            upstream_client_id: Some("site-a".into()),
            upstream: Some(overrides::HostPort {
                host: "h".into(),
                port: None,
            }),
            ..Overrides::default()
        };
        let c = Config::load_with_overrides(None, &overrides).unwrap();
        assert_eq!(c.upstream.unwrap().client_id.as_deref(), Some("site-a"));
    }

    #[test]
    fn the_gateway_placeholder_refuses_a_client_id_with_a_wildcard() {
        let rules = "[[upstream.rules]]\nremote_prefix = \"site/{gateway}/\"\n";
        let ok = format!("[upstream]\nhost = \"h\"\nclient_id = \"gw-a\"\n{rules}");
        assert!(parse(&ok).is_ok());
        let bad = format!("[upstream]\nhost = \"h\"\nclient_id = \"gw+a\"\n{rules}");
        let msg = parse(&bad).unwrap_err().to_string();
        assert!(msg.contains("upstream.rules[0]"), "{msg}");
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
             [log]\nlevel = \"info,sngate_core=debug\"\nformat = \"json\"\n\
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
    fn unlocated_error_has_no_location_prefix() {
        let mut c = Config::default();
        c.timers.max_retries = 0;
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `timers.max_retries`: must be at least 1"
        );
    }
}
