//! sngate — an MQTT-SN v1.2 gateway: the shell around a pure engine.
//!
//! Battery sensors and radio nodes speak MQTT-SN over UDP or a serial radio
//! link; sngate turns them into MQTT clients: routed locally between devices,
//! and bridged to an upstream MQTT broker.
//!
//! The workspace draws the sans-IO line in its dependency graph:
//! - `sngate-wire` (re-exported as [`proto`] for its v1.2 codec, and as
//!   [`transport::framing`]) — the MQTT-SN wire format and the serial
//!   framings: pure, `no_std` + `alloc`, never panics on any input.
//! - `sngate-core` (re-exported as [`core`]) — the gateway engine, sans-IO:
//!   sessions, topic ids, QoS flows, sleep buffers, wills, discovery and the
//!   router. Inputs carry `now`; outputs are drained with `poll_output`. No
//!   tokio, no clock, no sockets.
//! - this crate, the shell, which owns every socket, file, task and clock.
//!
//! A tour of the shell, from the wire inwards:
//! - [`transport`] — datagram links (UDP, serial ports) that turn the medium
//!   into bytes.
//! - [`driver`] — the one tokio task that owns the engine: bootstrap,
//!   signals, the loop, the one `step` that feeds an input and carries out
//!   the outputs, egress, operations queries and the shutdown drain.
//! - [`bridge`] — the upstream MQTT sessions (rumqttc); [`broker`] — the
//!   embedded MQTT listener for local programs; [`store`] — durable state.
//! - [`config`] — the TOML configuration, one file per section, validated
//!   once at load, with the CLI overrides, the mapping to the engine's
//!   settings and what a reload may change; [`security`] — the ACL file and
//!   password hashes; [`logging`], [`systemd`].
//! - [`ops`] — operations: `/metrics`, `/status` and `/healthz` over a small
//!   HTTP endpoint, answered by the driver's loop.
//! - [`client`] — an async MQTT-SN client over UDP or a serial link;
//!   [`tools`] — `sngate pub` and `sngate sub` built on it; [`sim`] —
//!   `sngate sim`, simulated devices that measure a running gateway.
//!
//! The binary (`src/main.rs`, one module per subcommand under `src/cli/`)
//! parses and dispatches. See `docs/architecture.md` for the design and the
//! reasons behind it.

pub mod bridge;
pub mod broker;
pub mod client;
pub mod config;
pub mod driver;
pub mod logging;
pub mod ops;
pub mod security;
pub mod sim;
pub mod store;
pub mod systemd;
pub mod tools;
pub mod transport;

/// The engine (the `sngate-core` crate), under the name the shell's modules
/// use for it.
pub use sngate_core as core;
/// The MQTT-SN v1.2 codec (`sngate_wire::v1`), under the name the shell's
/// modules use for it.
pub use sngate_wire::v1 as proto;
