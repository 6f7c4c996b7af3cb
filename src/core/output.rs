//! What the engine asks of the outside world. The driver drains these with
//! [`Gateway::poll_output`](super::Gateway::poll_output) after every input and
//! carries them out in order.

use bytes::Bytes;

use super::local::{LocalConnId, LocalDelivery};
use super::peer::Peer;
use crate::proto::Packet;

/// One thing for the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `packet` to `to` (wrapped in a forwarder encapsulation when
    /// `to.node` is set).
    Transmit {
        /// Destination.
        to: Peer,
        /// The message.
        packet: Packet,
    },
    /// Send a discovery message (ADVERTISE, GWINFO) to the configured multicast
    /// group or broadcast address; when `requester` is set, the driver also
    /// answers it directly, for networks where multicast does not reach back.
    Broadcast {
        /// The message.
        packet: Packet,
        /// The broadcast radius to hand to the link layer (0 = whole network).
        radius: u8,
        /// The peer whose SEARCHGW this answers, if any.
        requester: Option<Peer>,
    },
    /// Publish a message to the upstream broker.
    Upstream(UpstreamCommand),
    /// Tell an embedded-broker connection to do something.
    Local {
        /// The connection.
        conn: LocalConnId,
        /// What to do.
        action: LocalAction,
    },
}

/// What an embedded-broker connection is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAction {
    /// Accept the CONNECT (CONNACK 0).
    ConnAck {
        /// Whether a persistent session was resumed.
        session_present: bool,
    },
    /// Refuse the CONNECT: server unavailable (CONNACK 3), then close.
    Refuse,
    /// Send a message to the client.
    Deliver(LocalDelivery),
    /// The client's QoS 1/2 PUBLISH `pkid` is routed: PUBACK (QoS 1) or
    /// PUBREC (QoS 2).
    Ack {
        /// The client's packet id.
        pkid: u16,
        /// The publish's QoS.
        qos: u8,
    },
    /// SUBACK: the granted QoS per filter, `None` for a refused filter.
    SubAck {
        /// The client's packet id.
        pkid: u16,
        /// Granted QoS per filter, in order.
        granted: Vec<Option<u8>>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// The client's packet id.
        pkid: u16,
    },
    /// Close the connection (taken over, or a protocol violation).
    Close,
}

/// A command for the upstream bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCommand {
    /// Publish a message upstream.
    Publish {
        /// The local topic name (the bridge applies its prefixes and rules).
        topic: String,
        /// Payload.
        payload: Bytes,
        /// MQTT QoS 0..=2.
        qos: u8,
        /// Retain flag.
        retain: bool,
        /// Its durable outbox id (QoS 1/2 with persistence on): the bridge
        /// reports it settled once the broker has the message (or the rules
        /// keep it local), and the driver deletes it from the store.
        store_id: Option<u64>,
    },
    /// Start receiving messages matching a local topic filter from upstream.
    Subscribe {
        /// The local topic filter.
        filter: String,
        /// Maximum QoS wanted.
        qos: u8,
    },
    /// Stop receiving messages matching a local topic filter from upstream.
    Unsubscribe {
        /// The local topic filter.
        filter: String,
    },
}
