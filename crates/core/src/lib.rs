//! sngate-core — the MQTT-SN gateway engine, sans-IO.
//!
//! Every protocol behaviour of sngate lives here as plain data structures
//! driven by inputs that carry an explicit `now`, so each behaviour is a
//! fast, deterministic unit test with a virtual clock. Nothing in this crate
//! imports tokio, opens a socket or reads a clock (its `Cargo.toml` is the
//! proof); the shell (the `sngate` package's driver) feeds it and carries
//! out its outputs. The contract — which inputs, then drain
//! [`Gateway::poll_output`] until `None`, then ask [`Gateway::poll_timeout`] —
//! is on [`Gateway`], with an example that runs.
//!
//! Tour:
//! - [`Gateway`] (`gateway.rs`): the engine's struct, inputs, outputs,
//!   timers, routing; [`EngineConfig`] its settings.
//! - `devices/`: CONNECT, will, PING, DISCONNECT, sleep/wake, loss and
//!   takeover (`lifecycle.rs`), REGISTER and PUBLISH from devices
//!   (`uplink.rs`), the per-client queue and one-in-flight delivery
//!   (`delivery.rs`), SUBSCRIBE / UNSUBSCRIBE and retained delivery
//!   (`subscribe.rs`), per-device upstream sessions (`device_sessions.rs`);
//!   [`session`] and [`topic_table`] their per-client state and topic ids;
//!   [`peer`] where a device is.
//! - Local clients: [`local`], the embedded broker's MQTT clients, sharing
//!   the router.
//! - `routing/`: [`router`] (the subscription trie), [`retained`],
//!   [`topic`] (MQTT topic rules), shared by every kind of client.
//! - `policy/`: [`acl`], [`admission`] (who may publish/receive on which
//!   topic, which devices may connect; checked in `authorize.rs`),
//!   [`rate_limit`] (per-source token buckets).
//! - The upstream broker's answers: [`upstream_limits`] (what its CONNACK
//!   said it takes, so a device's message it would refuse is refused
//!   before the device is acknowledged) and `suback_wait.rs` (a SUBACK
//!   waits for the broker's, so SUBACK means subscribed).
//! - Persistence: [`persist`], what survives a restart, as store
//!   operations the shell commits before the acknowledgements that depend
//!   on them; `linger.rs`, the outbox record of a device's message bound
//!   upstream written only if the broker is slow to acknowledge it;
//!   [`drain`], the shutdown drain.
//! - Outputs and views: [`output`] (what the shell must do), [`snapshot`]
//!   and [`stats`] (read-only views for metrics and status).
//! - Testing: `invariants.rs` (every bound and index agreement) and, behind
//!   the `fuzzing` feature, `chaos` — the interpreter the engine fuzz target
//!   and the chaos test share, which panics by design on a violated
//!   invariant and so never ships in a default build.

#[cfg(feature = "fuzzing")]
pub mod chaos;
mod devices;
pub mod drain;
pub mod engine_config;
mod gateway;
#[cfg(any(test, feature = "fuzzing"))]
mod invariants;
mod linger;
pub mod local;
pub mod output;
pub mod persist;
mod policy;
mod routing;
pub mod snapshot;
pub mod stats;
mod suback_wait;
pub mod upstream_limits;

// The groups are folders; their modules keep flat public paths
// (`sngate_core::session`, `sngate_core::topic`, …) for the shell.
pub use devices::{peer, session, topic_table};
pub use policy::{acl, admission, identity, log_gate, rate_limit};
pub use routing::{retained, router, topic};

#[cfg(test)]
mod tests;

pub use drain::Undelivered;
pub use engine_config::{EngineConfig, OverflowPolicy};
pub use gateway::{Gateway, RATE_LIMIT_SOURCES, RetainedMessage, Subscriber, UpstreamMessage};
pub use local::{LocalClientInfo, LocalConnId, LocalConnect, LocalDelivery, LocalInput};
pub use output::{
    DeviceOrigin, LocalAction, Output, SessionParams, SessionStatus, UpstreamAck, UpstreamCommand,
};
pub use peer::{LinkAddr, Peer};
pub use persist::{
    ClientKey, ClientKind, OutboxRecord, QueuedRecord, Restored, SessionRecord, StoreOp,
    StoredMessage,
};
pub use session::{ClientState, SessionId};
pub use snapshot::{DeviceView, EngineGauges, Transport};
pub use stats::{DropReason, LimitHit, Stats};
pub use suback_wait::SUBACK_WAIT;
pub use upstream_limits::UpstreamLimits;
