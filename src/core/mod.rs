//! The gateway engine, sans-IO (see `docs/architecture.md`): every protocol
//! behaviour of sngate lives here as plain data structures driven by inputs with
//! an explicit `now`, so each behaviour is a fast, deterministic unit test with a
//! virtual clock. Nothing in `core/` imports tokio, opens a socket or reads a
//! clock; the driver (`crate::driver`) feeds it and carries out its outputs.
//!
//! Tour:
//! - [`Gateway`] (`gateway.rs`): the engine's struct, inputs, outputs, timers, routing.
//! - `lifecycle.rs`: CONNECT, will, PING, DISCONNECT, sleep/wake, loss, takeover.
//! - `uplink.rs`: REGISTER and PUBLISH from devices.
//! - `delivery.rs`: the per-client queue and one-in-flight delivery to devices.
//! - `subscribe.rs`: SUBSCRIBE / UNSUBSCRIBE and retained delivery.
//! - [`local`]: the embedded broker's MQTT clients, sharing the router.
//! - [`persist`]: what survives a restart, as store operations the driver
//!   commits before the acknowledgements that depend on them.
//! - [`session`], [`topic_table`]: per-client state and topic ids.
//! - [`router`], [`retained`], [`topic`]: the subscription trie, retained store
//!   and MQTT topic rules, shared by every kind of client.
//! - [`acl`], [`admission`]: who may publish/receive on which topic
//!   (mosquitto `acl_file` semantics) and which devices may connect.
//! - [`snapshot`]: read-only views for metrics and status; `drain.rs`: the
//!   shutdown drain (only acknowledgements taken, what is left undelivered).

pub mod acl;
pub mod admission;
mod authorize;
pub mod chaos;
mod delivery;
mod device_sessions;
pub mod drain;
pub mod engine_config;
mod gateway;
mod invariants;
mod lifecycle;
pub mod local;
pub mod output;
pub mod peer;
pub mod persist;
pub mod rate_limit;
pub mod retained;
pub mod router;
pub mod session;
pub mod snapshot;
pub mod stats;
mod subscribe;
pub mod topic;
pub mod topic_table;
mod uplink;

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
