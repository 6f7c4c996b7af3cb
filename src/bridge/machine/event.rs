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
        /// What the broker announced it takes (MQTT 5 CONNACK properties;
        /// everything allowed on MQTT 3.1.1).
        limits: BrokerLimits,
    },
    /// A message from the broker.
    Publish {
        /// Packet id (0 at QoS 0): what a manual acknowledgement names.
        pkid: u16,
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
    /// PUBACK with its reason code (0 on MQTT 3.1.1; 0x80 and above is a
    /// refusal).
    PubAck {
        /// Packet id.
        pkid: u16,
        /// Reason code.
        code: u8,
    },
    /// PUBREC with its reason code (as PUBACK).
    PubRec {
        /// Packet id.
        pkid: u16,
        /// Reason code.
        code: u8,
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

/// What a broker announced in its CONNACK that limits what may be sent to
/// it (MQTT 5 properties; absent ones, and MQTT 3.1.1, allow everything).
/// The machine checks every message against them before handing it to
/// rumqttc: a message the broker would refuse is quarantined there, never
/// sent (sending it would cost the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Maximum Packet Size, in bytes.
    pub max_packet_size: Option<u32>,
    /// Maximum QoS (0..=2).
    pub max_qos: u8,
    /// Retain Available.
    pub retain_available: bool,
    /// Wildcard Subscription Available.
    pub wildcards_available: bool,
    /// Shared Subscription Available.
    pub shared_available: bool,
    /// Receive Maximum: QoS 1/2 publishes unacknowledged at once.
    pub receive_max: Option<u16>,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        BrokerLimits {
            max_packet_size: None,
            max_qos: 2,
            retain_available: true,
            wildcards_available: true,
            shared_available: true,
            receive_max: None,
        }
    }
}
