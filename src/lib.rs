//! sngate — an MQTT-SN v1.2 gateway.
//!
//! Battery sensors and radio nodes speak MQTT-SN over UDP or a serial radio
//! link; sngate turns them into MQTT clients: routed locally between devices,
//! and bridged to an upstream MQTT broker.
//!
//! A tour, from the wire inwards:
//! - [`proto`] — the MQTT-SN wire format: `decode` one datagram into a typed
//!   `Packet`, `encode` one back. Pure; never panics on any input.
//! - [`core`] — the gateway engine, sans-IO: sessions, topic ids, QoS flows,
//!   sleep buffers, wills, discovery and the router. Inputs carry `now`; outputs
//!   are drained with `poll_output`. No tokio, no clock, no sockets.
//! - [`transport`] — datagram links (UDP) that turn the medium into bytes.
//! - [`driver`] — the one tokio task that owns the engine and wires transports,
//!   timers and the upstream bridge to it.
//! - [`config`] — the TOML configuration, validated once at load; [`logging`].
//! - [`client`] — an async MQTT-SN client over UDP or a serial link;
//!   [`tools`] — `sngate pub` and `sngate sub` built on it; [`sim`] —
//!   `sngate sim`, simulated devices that measure a running gateway.
//! - [`ops`] — operations: `/metrics`, `/status` and `/healthz` over a small
//!   HTTP endpoint, answered by the driver's loop.
//!
//! See `docs/architecture.md` for the design and the reasons behind it.

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
