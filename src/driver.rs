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
//!   `/healthz`) from the same loop; `shutdown.rs` drains within the configured
//!   bound at SIGTERM.

mod bootstrap;
mod drop_log;
mod egress;
mod feed;
mod ops;
mod shutdown;
mod signals;
mod task;

pub use bootstrap::{RunningGateway, start};
pub use shutdown::ShutdownReport;
pub use signals::{Reloader, run, run_until};

// The task's state, as `super::Driver` for its parts (`ops.rs`).
use task::Driver;

use std::net::SocketAddr;

use crate::bridge::BridgeError;
use crate::broker::BrokerError;
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
    /// The DTLS psk file could not be read or parsed.
    #[error(transparent)]
    Psk(#[from] crate::transport::dtls::psk::PskFileError),
    /// The DTLS certificate files could not be used.
    #[error(transparent)]
    Certs(#[from] crate::transport::dtls::certs::CertFileError),
    /// The HTTP operations endpoint could not be bound.
    #[error("cannot bind the HTTP endpoint {addr}")]
    Http {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
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
