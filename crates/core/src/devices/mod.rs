//! MQTT-SN devices: everything the engine keeps and decides per device.
//!
//! Owns a device's life and its two directions of traffic. The data:
//! [`peer`] (where a device is: a UDP address, a radio address, a node
//! behind a forwarder), [`session`] (per-client state, keyed by client id),
//! [`topic_table`] (its topic ids). The behaviour, each an `impl Gateway`
//! block: `lifecycle.rs` (CONNECT, will, PING, DISCONNECT, sleep/wake,
//! loss, takeover), `uplink.rs` (REGISTER and PUBLISH from devices),
//! `delivery.rs` (the per-client queue, one exchange in flight),
//! `subscribe.rs` (SUBSCRIBE / UNSUBSCRIBE, retained on subscribe),
//! `device_sessions.rs` (a device's own upstream session in per-device
//! mode) and `v2.rs` (MQTT-SN 2.0 devices: their packets to and from the
//! engine's). Grouped so that one folder holds what a device is and does; what
//! routes between devices and local clients is in `routing/`, who may do
//! what in `policy/`.

mod delivery;
mod device_sessions;
mod lifecycle;
pub mod peer;
pub mod session;
mod subscribe;
pub(crate) use delivery::drop_oldest_while;
pub(crate) use subscribe::subscription_limit;
pub mod topic_table;
mod uplink;
pub(crate) mod v2;
