//! What the engine asks of the outside world. The driver drains these with
//! [`Gateway::poll_output`](super::Gateway::poll_output) after every input and
//! carries them out in order.

use std::sync::Arc;

use bytes::Bytes;

use super::local::{LocalConnId, LocalDelivery};
use super::peer::Peer;
use super::session::Will;
use sngate_wire::v1::Packet;

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
    /// Send an MQTT-SN 2.0 `packet` to `to`, a device whose session is 2.0
    /// (never behind a forwarder in this version).
    TransmitV2 {
        /// Destination.
        to: Peer,
        /// The message.
        packet: sngate_wire::v2::Packet,
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
    /// Send PUBREL again for these packet ids (QoS 2 messages the client
    /// answered with PUBREC on an earlier connection of its persistent
    /// session) and await their PUBCOMP.
    Release {
        /// The packet ids, oldest first.
        pkids: Vec<u16>,
    },
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
        /// Per-device mode: the device whose own upstream session publishes
        /// it (and which waits for the broker's acknowledgement). `None`:
        /// the shared session (aggregate mode, local clients, QoS −1).
        from: Option<DeviceOrigin>,
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
    /// Per-device mode: open (or reuse) the device's own upstream session.
    /// Answered with [`Gateway::handle_session_status`](super::Gateway::handle_session_status)
    /// — the device's CONNACK waits for it (see `docs/bridge.md`).
    OpenSession(SessionParams),
    /// Per-device mode: end the device's upstream session once what it
    /// holds for the broker is delivered. `publish_will`: drop the
    /// connection without DISCONNECT so the broker publishes the will (the
    /// device was lost); otherwise DISCONNECT (the will is discarded).
    CloseSession {
        /// The device's client id.
        client_id: Arc<str>,
        /// Let the broker publish the will.
        publish_will: bool,
    },
    /// Per-device mode: subscribe on the device's own session.
    SessionSubscribe {
        /// The device's client id.
        client_id: Arc<str>,
        /// The local topic filter.
        filter: String,
        /// Maximum QoS wanted.
        qos: u8,
    },
    /// Per-device mode: unsubscribe on the device's own session.
    SessionUnsubscribe {
        /// The device's client id.
        client_id: Arc<str>,
        /// The local topic filter.
        filter: String,
    },
    /// Per-device mode: acknowledge to the broker the QoS 1/2 message that
    /// came down the device's own session with `token`
    /// ([`Gateway::handle_session_message_with_token`](super::Gateway::handle_session_message_with_token)):
    /// the device acknowledged it (PUBACK at QoS 1, PUBREC at QoS 2), or
    /// the engine keeps it durably for a device asleep here, or it can never
    /// be for this device (no subscription, not allowed, refused by it).
    AckDownlink {
        /// The device's client id.
        client_id: Arc<str>,
        /// The bridge's token, unchanged.
        token: u64,
    },
}

/// Who publishes a message upstream in per-device mode, and what to tell the
/// device once the broker has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOrigin {
    /// The device's client id (its upstream session).
    pub client_id: Arc<str>,
    /// For a device's QoS 1/2 PUBLISH: the acknowledgement the device gets
    /// when the broker has acknowledged the message, or when it is queued
    /// while the session is down. Handed back unchanged through
    /// [`Gateway::handle_session_ack`](super::Gateway::handle_session_ack).
    pub ack: Option<UpstreamAck>,
}

/// An acknowledgement owed to a device (opaque to the shell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamAck {
    /// The PUBLISH's MsgId.
    pub(super) msg_id: u16,
    /// Its TopicId field, echoed in the PUBACK.
    pub(super) topic_field: u16,
    /// 1: PUBACK; 2: PUBREC.
    pub(super) qos: u8,
    /// The device's connection it is owed to (`Session::connection`).
    pub(super) connection: u32,
    /// The message's durable outbox id, while its record may still wait
    /// for the broker (`linger.rs`); 0: none (durable ids start at 1). Not
    /// an `Option`, so the command stays small.
    pub(super) store_id: u64,
}

impl UpstreamAck {
    /// The acknowledgement itself: PUBREC at QoS 2, else PUBACK (accepted).
    pub(super) fn packet(&self) -> sngate_wire::v1::Packet {
        use sngate_wire::v1::{Packet, ReturnCode};
        if self.qos == 2 {
            Packet::PubRec {
                msg_id: self.msg_id,
            }
        } else {
            Packet::PubAck {
                topic_id: self.topic_field,
                msg_id: self.msg_id,
                return_code: ReturnCode::Accepted,
            }
        }
    }
}

/// What a device's upstream session is made of (per-device mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// The device's client id (the shell adds the configured prefix).
    pub client_id: Arc<str>,
    /// The device's CleanSession flag.
    pub clean_session: bool,
    /// The device's keep-alive in seconds, as the engine applies it.
    pub keep_alive_secs: u32,
    /// The device's will (local topic name: the shell applies the bridge
    /// rules), for the broker to publish if the device is lost.
    pub will: Option<Will>,
}

/// How a device's upstream session answered [`UpstreamCommand::OpenSession`],
/// or what became of it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    /// The broker accepted the session (CONNACK 0).
    Up,
    /// The broker cannot be reached; the session keeps retrying with a
    /// jittered backoff and the device works offline meanwhile.
    Unreachable,
    /// The broker refused the session (bad credentials, not authorised):
    /// the device is refused (CONNACK 0x03) or, if already connected,
    /// disconnected.
    Refused {
        /// The broker's reason, for the log.
        reason: String,
    },
    /// The broker handed the session to another client with the same
    /// client id (the device roamed to another gateway): the session has
    /// ended for good, without its will. The engine lets the device go —
    /// no will, its state kept or dropped as its clean-session flag says —
    /// and a later CONNECT here opens the session again.
    TakenOver,
}
