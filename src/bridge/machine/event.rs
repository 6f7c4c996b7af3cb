//! What the session task observes on its connection, reduced to what the
//! machine needs: the input type of [`Machine::handle_event`]. Plain data;
//! `link/events.rs` translates rumqttc's events into it.
//!
//! [`Machine::handle_event`]: super::Machine::handle_event

use bytes::Bytes;

/// What happened on the link, reduced to what the bridge needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted the connection.
    ConnAck {
        /// The broker still had our session.
        session_present: bool,
    },
    /// A message from the broker.
    Publish {
        /// Remote topic (invalid UTF-8 is reported as `None`).
        topic: Option<String>,
        /// Payload.
        payload: Bytes,
        /// QoS 0..=2.
        qos: u8,
        /// Retain flag.
        retain: bool,
        /// Subscription identifiers the broker attached (MQTT 5; empty otherwise).
        subscription_ids: Vec<usize>,
        /// The [`ORIGIN_PROPERTY`](crate::bridge::link::ORIGIN_PROPERTY) it
        /// carries (MQTT 5), if any.
        origin: Option<String>,
    },
    /// PUBACK; `ok` unless the reason code is an error.
    PubAck {
        /// Packet id.
        pkid: u16,
        /// No error reason code.
        ok: bool,
    },
    /// PUBREC; `ok` unless the reason code is an error.
    PubRec {
        /// Packet id.
        pkid: u16,
        /// No error reason code.
        ok: bool,
    },
    /// PUBCOMP.
    PubComp {
        /// Packet id.
        pkid: u16,
    },
    /// SUBACK with how many filters were refused.
    SubAck {
        /// Filters refused.
        refused: usize,
    },
    /// rumqttc wrote a PUBLISH with this packet id (0 for QoS 0).
    SentPublish(u16),
    /// rumqttc took a PUBLISH from the channel but holds it back: its packet
    /// id is still unacknowledged.
    HeldPublish(u16),
    /// rumqttc wrote a PUBREL.
    SentPubRel(u16),
    /// rumqttc took a SUBSCRIBE or UNSUBSCRIBE from the channel.
    SentControl,
    /// rumqttc wrote a DISCONNECT.
    SentDisconnect,
    /// Anything else (pings, acks we send).
    Other,
}
