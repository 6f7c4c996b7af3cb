//! The driver: the single tokio task that owns the
//! [`Gateway`](crate::core::Gateway) engine (no locks), and what starts,
//! feeds and stops it. `now` comes from here — the engine never reads a
//! clock.
//!
//! One job per module:
//! - `bootstrap.rs` — [`start`]: binds the listeners, opens the store,
//!   restores the engine, starts the readers, links and bridge, and spawns
//!   the task; [`RunningGateway`] is the handle on it.
//! - `signals.rs` — [`run`] and [`run_until`]: the process around it
//!   (SIGINT/SIGTERM, SIGHUP reloads, systemd notifications).
//! - `task.rs` — the task's state and its run loop: wait for the next
//!   input, hand it on, until asked to stop.
//! - `feed.rs` — every input the task gets, and the one way an input is
//!   handed to the engine: feed it, commit what the engine asked to keep
//!   (group commit), then carry out its outputs until it has none.
//! - `egress.rs` — carrying out one output: encoding, forwarder
//!   encapsulation, the socket or serial link it leaves by, the bridge and
//!   the embedded broker.
//! - `ops.rs` answers operations queries (`/metrics`, `/status`,
//!   `/healthz`) from the same loop; `reload.rs` keeps what a reload cannot
//!   change on running links; `shutdown.rs` drains within the configured
//!   bound at SIGTERM.

mod bootstrap;
mod egress;
mod feed;
mod ops;
mod reload;
mod shutdown;
mod signals;
mod task;

pub use bootstrap::{RunningGateway, start};
pub use shutdown::ShutdownReport;
pub use signals::{Reloader, run, run_until};

// The task's state, as `super::Driver` for its parts (`ops.rs`).
use task::Driver;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::bridge::BridgeError;
use crate::broker::BrokerError;
use crate::config::{Config, QueueOverflow};
use crate::core::{EngineConfig, OverflowPolicy};
use crate::security::AclFileError;
use crate::store::StoreError;
use crate::transport::TransportError;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A transport could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The upstream bridge could not be set up.
    #[error("cannot start the upstream bridge")]
    Bridge(#[from] BridgeError),
    /// The embedded MQTT broker could not be set up.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The durable store could not be opened, or a commit failed (nothing
    /// that depended on it was acknowledged).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No state directory is configured and none can be derived.
    #[error(
        "no state directory: set [store] state_dir or --state-dir, or turn the store off with --state-dir off"
    )]
    NoStateDir,
    /// The driver task ended abnormally.
    #[error("the gateway task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The ACL file could not be read or parsed.
    #[error(transparent)]
    Acl(#[from] AclFileError),
    /// The HTTP operations endpoint could not be bound.
    #[error("cannot bind the HTTP endpoint {addr}")]
    Http {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Builds the engine's settings from the file-level configuration.
pub fn engine_config(config: &Config) -> EngineConfig {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    EngineConfig {
        gateway_id: config.gateway.gateway_id,
        max_client_id_len: config.gateway.max_client_id_len,
        max_packet_bytes: config.gateway.max_packet_bytes,
        accept_qos_minus_one: config.gateway.accept_qos_minus_one,
        accept_qos_minus_one_named: config.gateway.accept_qos_minus_one_named,
        keep_alive_default: Duration::from_secs(u64::from(config.gateway.keep_alive_default_secs)),
        keep_alive_max: Duration::from_secs(u64::from(config.gateway.keep_alive_max_secs)),
        retry_interval: secs(config.timers.retry_interval_secs),
        max_retries: config.timers.max_retries,
        will_handshake_timeout: secs(config.timers.will_handshake_timeout_secs),
        advertise_interval: config
            .discovery
            .advertise
            .then(|| secs(config.discovery.advertise_interval_secs)),
        answer_searchgw: config.discovery.answer_searchgw,
        max_clients: config.limits.max_clients,
        session_expiry: match config.limits.session_expiry_secs {
            0 => None,
            s => Some(secs(s)),
        },
        max_topics_per_client: config.limits.max_topics_per_client,
        max_subscriptions_per_client: config.limits.max_subscriptions_per_client,
        max_queued_messages_per_client: config.limits.max_queued_messages_per_client,
        max_queued_bytes_per_client: config.limits.max_queued_bytes_per_client,
        max_queued_bytes_total: config.limits.max_queued_bytes_total,
        queue_qos0: config.limits.queue_qos0,
        sleep_buffer_qos0: config.limits.sleep_buffer_qos0,
        queue_overflow: match config.limits.queue_overflow {
            QueueOverflow::RefuseNewest => OverflowPolicy::RefuseNewest,
            QueueOverflow::DropOldest => OverflowPolicy::DropOldest,
        },
        max_messages_per_wake: config.limits.max_messages_per_wake,
        max_retained_messages: config.limits.max_retained_messages,
        per_source_packets_per_sec: config.limits.per_source_packets_per_sec,
        per_source_burst: config.limits.per_source_burst,
        predefined_topics: config
            .predefined_topics
            .iter()
            .map(|p| (p.id, p.topic.clone()))
            .collect(),
        upstream: config.upstream.is_some(),
        per_device_sessions: config
            .upstream
            .as_ref()
            .is_some_and(|u| u.bridge_mode == crate::config::BridgeMode::PerDevice),
        upstream_session_wait: config
            .upstream
            .as_ref()
            .map_or(Duration::from_secs(5), |u| {
                secs(u.per_device.connect_wait_secs.max(1))
            }),
        // Turned on by `start` once the store is open.
        persist: false,
        // Read from its file by `start` and `reload` (`with_acl`).
        acl: None,
        admission: config.security.admission(&config.serial),
    }
}

/// The `[security] acl_file`, read and parsed (at start and on every reload,
/// so an edited file applies on SIGHUP), logged with its rule count.
fn load_acl(config: &Config) -> Result<Option<Arc<crate::core::acl::Acl>>, AclFileError> {
    let acl = config.security.load_acl()?;
    if let (Some(acl), Some(path)) = (&acl, &config.security.acl_file) {
        info!(file = %path.display(), rules = acl.len(), "ACL loaded");
    }
    Ok(acl)
}

/// What the store has committed since start (for metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCounters {
    /// Synced batches.
    pub commits: u64,
    /// Records written or deleted.
    pub records: u64,
    /// Encoded bytes written.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_config_carries_the_sleep_and_queue_settings() -> Result<(), crate::config::ConfigError>
    {
        let config = Config::from_toml_str(
            "[limits]\nqueue_overflow = \"drop-oldest\"\nsleep_buffer_qos0 = false\nmax_messages_per_wake = 5\n\
             [timers]\nretry_interval_secs = 7\nmax_retries = 2\n",
            std::path::Path::new("test.toml"),
        )?;
        let engine = engine_config(&config);
        assert_eq!(engine.queue_overflow, OverflowPolicy::DropOldest);
        assert!(!engine.sleep_buffer_qos0);
        assert_eq!(engine.max_messages_per_wake, 5);
        assert_eq!(engine.retry_interval, Duration::from_secs(7));
        assert_eq!(engine.max_retries, 2);
        assert!(!engine.upstream);
        assert_eq!(
            engine.advertise_interval, None,
            "advertising is off by default"
        );
        Ok(())
    }

    #[test]
    fn the_default_config_gives_the_engine_defaults() {
        // Two sets of defaults (file-level and engine-level) must not drift.
        assert_eq!(engine_config(&Config::default()), EngineConfig::default());
    }

    #[test]
    fn an_unknown_overflow_policy_is_a_config_error() {
        let err = Config::from_toml_str(
            "[limits]\nqueue_overflow = \"drop-random\"\n",
            std::path::Path::new("test.toml"),
        );
        assert!(err.is_err_and(|e| e.to_string().contains("drop-random")));
    }
}
