//! Logging setup: one `tracing` subscriber for the process, writing to stderr.
//!
//! This module owns the choice of filter and format so that `main` stays thin.
//! The level comes from the config (`[log] level`, an `EnvFilter` directive);
//! `RUST_LOG`, when set and non-empty, overrides it, which is the usual way to
//! turn up one module while debugging without editing the config file. Output
//! goes to stderr, as text for people or JSON lines for log collectors; stdout
//! stays free for command output such as `sngate print-config`. The
//! libraries that log on their own are held at warn unless the filter names
//! them ([`QUIET_DEPENDENCIES`]).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter directive (from the config or `RUST_LOG`) did not parse.
    #[error("invalid log filter {directive:?} (from {origin})")]
    Filter {
        /// The directive text.
        directive: String,
        /// Where it came from: `RUST_LOG` or the config.
        origin: &'static str,
        /// The parser's complaint.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber")]
    Init(#[source] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber: `level` as the filter unless `RUST_LOG` is
/// set, in `format`, on stderr. Call once, early in `main`.
pub fn init(level: &str, format: LogFormat) -> Result<LogReload, LoggingError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(level, rust_log.clone())?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr closed: the pipe's
        // reader gone) is lost, never a panic: tracing-subscriber would
        // otherwise report it with eprintln!, which panics on the same
        // closed stderr and takes the gateway down with it.
        .log_internal_errors(false)
        .with_env_filter(filter);
    // The two formats give handles of different types: each is wrapped in
    // the same closure.
    let apply: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync> = match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.finish().try_init().map_err(LoggingError::Init)?;
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.finish().try_init().map_err(LoggingError::Init)?;
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
    };
    Ok(LogReload { apply, rust_log })
}

/// Changes the log level of the running process (on SIGHUP). `RUST_LOG`, when
/// set at start-up, still wins, as it did then.
pub struct LogReload {
    apply: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
    rust_log: Option<String>,
}

impl LogReload {
    /// Applies a new `[log] level` directive.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let f = filter(level, self.rust_log.clone()).map_err(|e| e.to_string())?;
        (self.apply)(f)
    }
}

/// The libraries that log on their own (the store, the MQTT client, TLS,
/// the serial port): held at warn unless the filter names them, so that
/// `debug` shows sngate's story rather than fjall's compactions, and `info`
/// no fjall "Finished ingestion writer" at every start.
pub const QUIET_DEPENDENCIES: [&str; 8] = [
    "fjall",
    "lsm_tree",
    "value_log",
    "rumqttc",
    "rustls",
    "mio",
    "tokio_serial",
    "serialport",
];

/// `directive` with `dep=warn` added for every [`QUIET_DEPENDENCIES`] entry
/// it does not name (a more specific directive wins in an `EnvFilter`, so
/// `debug` stays debug for sngate's own targets).
pub fn with_quiet_dependencies(directive: &str) -> String {
    let mut out = directive.trim().to_owned();
    for dep in QUIET_DEPENDENCIES {
        if !directive.contains(dep) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(dep);
            out.push_str("=warn");
        }
    }
    out
}

/// The filter to use: `rust_log` when it is set and non-empty, else `level`,
/// with the dependencies it does not name held at warn.
fn filter(level: &str, rust_log: Option<String>) -> Result<EnvFilter, LoggingError> {
    let (directive, origin) = match rust_log {
        Some(env) if !env.trim().is_empty() => (env, "RUST_LOG"),
        _ => (level.to_owned(), "the config's log.level"),
    };
    let directive = with_quiet_dependencies(&directive);
    EnvFilter::builder()
        .parse(&directive)
        .map_err(|source| LoggingError::Filter {
            directive,
            origin,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_overrides_level_when_set() {
        // EnvFilter prints its directives in its own order.
        let has = |f: &EnvFilter, d: &str| f.to_string().split(',').any(|x| x == d);
        let f = filter("info", Some("debug".to_owned())).unwrap();
        assert!(has(&f, "debug") && !has(&f, "info"), "{f}");
        let f = filter("warn", Some("  ".to_owned())).unwrap();
        assert!(has(&f, "warn"), "{f}");
        let f = filter("debug", None).unwrap();
        assert!(has(&f, "debug") && has(&f, "fjall=warn"), "{f}");
    }

    #[test]
    fn dependencies_stay_at_warn_unless_named() {
        let d = with_quiet_dependencies("debug");
        assert!(d.starts_with("debug,"), "{d}");
        for dep in QUIET_DEPENDENCIES {
            assert!(d.contains(&format!("{dep}=warn")), "{d}");
        }
        // Named: the operator's word stands.
        let d = with_quiet_dependencies("info,rumqttc=debug");
        assert!(
            d.contains("rumqttc=debug") && !d.contains("rumqttc=warn"),
            "{d}"
        );
        assert!(d.contains("fjall=warn"), "{d}");
    }

    #[test]
    fn bad_rust_log_is_reported_as_such() {
        let err = filter("info", Some("sngate=loud".to_owned())).unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
    }
}
