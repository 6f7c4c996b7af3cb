//! The `[log]` section: the log filter and format, with the check that a
//! filter is one `tracing`'s `EnvFilter` reads as meant. `crate::logging`
//! installs what this describes; a reload applies a new level at once.

use serde::Deserialize;

use super::ConfigError;

/// `[log]`: log level and format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive: a level (`"info"`) or per-target list
    /// (`"info,sngate_core=debug"`). `RUST_LOG`, when set, overrides it.
    /// Default: `"info"`.
    pub level: String,
    /// `"text"` (human readable) or `"json"` (one object per line), on stderr.
    /// Default: `"text"`.
    pub format: LogFormat,
    /// Trace the packets of this one MQTT-SN client id: one line per packet
    /// received or sent, like `mosquitto -v` (target `sngate_core::packets`,
    /// switched on at trace level whatever `level` says). `--trace-client`
    /// overrides it. Default: none (the trace is then on only where `level`
    /// asks for `sngate_core::packets=trace`, for every client).
    pub trace_client: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
            trace_client: None,
        }
    }
}

/// The packet trace's target (see `[log] trace_client`).
pub const PACKET_TRACE_TARGET: &str = "sngate_core::packets";

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

impl LogConfig {
    /// The filter directive to install: `level`, plus the packet trace when
    /// `trace_client` names a client.
    pub fn directive(&self) -> String {
        match &self.trace_client {
            Some(_) => format!("{},{PACKET_TRACE_TARGET}=trace", self.level.trim()),
            None => self.level.clone(),
        }
    }

    /// Checks `[log]`: the level is a filter `EnvFilter` reads as meant.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        validate_log_level(&self.level).map_err(|r| ConfigError::invalid("log.level", r))
    }
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
