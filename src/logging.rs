//! Logging setup: one `tracing` subscriber for the process, writing to stderr.
//!
//! This module owns the choice of filter and format so that `main` stays thin.
//! The level comes from the config (`[log] level`, an `EnvFilter` directive);
//! `RUST_LOG`, when set and non-empty, overrides it, which is the usual way to
//! turn up one module while debugging without editing the config file. Output
//! goes to stderr, as text for people or JSON lines for log collectors; stdout
//! stays free for command output such as `sngate print-config`.

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

/// The filter to use: `rust_log` when it is set and non-empty, else `level`.
fn filter(level: &str, rust_log: Option<String>) -> Result<EnvFilter, LoggingError> {
    let (directive, origin) = match rust_log {
        Some(env) if !env.trim().is_empty() => (env, "RUST_LOG"),
        _ => (level.to_owned(), "the config's log.level"),
    };
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
        let f = filter("info", Some("debug".to_owned())).unwrap();
        assert_eq!(f.to_string(), "debug");
        let f = filter("warn", Some("  ".to_owned())).unwrap();
        assert_eq!(f.to_string(), "warn");
        let f = filter("warn", None).unwrap();
        assert_eq!(f.to_string(), "warn");
    }

    #[test]
    fn bad_rust_log_is_reported_as_such() {
        let err = filter("info", Some("sngate=loud".to_owned())).unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
    }
}
