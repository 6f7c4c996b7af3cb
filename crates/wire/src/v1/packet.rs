//! The [`Packet`] enum: one variant per MQTT-SN v1.2 message, each holding typed
//! fields only. Flag bits a message does not use are not represented: they are
//! ignored on decode and written as 0 on encode (fact sheet §4).

use alloc::{boxed::Box, string::String};
use bytes::Bytes;

use super::types::{MsgType, QoS, ReturnCode, SubscribeTopic, TopicRef, WillTopic};

/// One decoded MQTT-SN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// ADVERTISE: a gateway announces itself; `duration` is seconds until the next one.
    Advertise {
        /// Gateway id.
        gw_id: u8,
        /// Seconds until the next ADVERTISE.
        duration: u16,
    },
    /// SEARCHGW: a client looks for gateways within `radius` hops (0 = whole network).
    SearchGw {
        /// Broadcast radius.
        radius: u8,
    },
    /// GWINFO: the answer to SEARCHGW. From a gateway `gw_addr` is empty; a client
    /// answering on a gateway's behalf adds the gateway's address.
    GwInfo {
        /// Gateway id.
        gw_id: u8,
        /// Gateway address (network specific); empty when sent by a gateway.
        gw_addr: Bytes,
    },
    /// CONNECT.
    Connect {
        /// Will flag: the gateway is to prompt for will topic and message.
        will: bool,
        /// CleanSession flag (also covers will data).
        clean_session: bool,
        /// Protocol id; 0x01 for v1.2. Kept raw so the engine can answer others.
        protocol_id: u8,
        /// Keep-alive period in seconds.
        duration: u16,
        /// Client identifier (may be empty on the wire; the engine decides).
        client_id: String,
    },
    /// CONNACK.
    ConnAck {
        /// Outcome of the CONNECT.
        return_code: ReturnCode,
    },
    /// WILLTOPICREQ.
    WillTopicReq,
    /// WILLTOPIC; `None` is the empty 2-byte form that deletes the will.
    WillTopic(Option<WillTopic>),
    /// WILLMSGREQ.
    WillMsgReq,
    /// WILLMSG.
    WillMsg {
        /// The will message payload.
        payload: Bytes,
    },
    /// REGISTER: client → gateway with `topic_id` 0, gateway → client with the
    /// assigned id.
    Register {
        /// Topic id (0 from a client).
        topic_id: u16,
        /// Message id matching the REGACK.
        msg_id: u16,
        /// The topic name to register.
        topic_name: String,
    },
    /// REGACK.
    RegAck {
        /// Assigned topic id.
        topic_id: u16,
        /// Echo of the REGISTER's message id.
        msg_id: u16,
        /// Outcome.
        return_code: ReturnCode,
    },
    /// PUBLISH addressed by topic id, pre-defined id or short name.
    Publish {
        /// DUP flag: a retransmission.
        dup: bool,
        /// QoS −1..2.
        qos: QoS,
        /// Retain flag.
        retain: bool,
        /// The topic, by id or short name.
        topic: TopicRef,
        /// Message id; 0 for QoS 0 and −1.
        msg_id: u16,
        /// Application payload.
        payload: Bytes,
    },
    /// The QoS −1 PUBLISH with a full topic name that Paho's MQTTSNPacket library
    /// sends (trap T-14): TopicIdType `00`, QoS bits `11`, the name's length in the
    /// TopicId field, then MsgId, then the name, then the payload. Not v1.2; the
    /// engine accepts it only when configured to.
    PublishNamedMinusOne {
        /// DUP flag as sent (meaningless at QoS −1, kept for fidelity).
        dup: bool,
        /// Retain flag.
        retain: bool,
        /// Message id as sent (normally 0).
        msg_id: u16,
        /// Full topic name.
        topic_name: String,
        /// Application payload.
        payload: Bytes,
    },
    /// PUBACK: the QoS 1 acknowledgement, and the error answer to a PUBLISH at any QoS.
    PubAck {
        /// Echo of the PUBLISH's raw TopicId field.
        topic_id: u16,
        /// Echo of the PUBLISH's message id.
        msg_id: u16,
        /// Outcome.
        return_code: ReturnCode,
    },
    /// PUBCOMP (QoS 2, step 4).
    PubComp {
        /// Message id.
        msg_id: u16,
    },
    /// PUBREC (QoS 2, step 2).
    PubRec {
        /// Message id.
        msg_id: u16,
    },
    /// PUBREL (QoS 2, step 3).
    PubRel {
        /// Message id.
        msg_id: u16,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// DUP flag.
        dup: bool,
        /// Requested QoS.
        qos: QoS,
        /// Message id matching the SUBACK.
        msg_id: u16,
        /// The topic filter, pre-defined id or short name.
        topic: SubscribeTopic,
    },
    /// SUBACK.
    SubAck {
        /// Granted QoS.
        qos: QoS,
        /// Topic id the gateway will publish with (0 for wildcards, short names, rejections).
        topic_id: u16,
        /// Echo of the SUBSCRIBE's message id.
        msg_id: u16,
        /// Outcome.
        return_code: ReturnCode,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Message id matching the UNSUBACK.
        msg_id: u16,
        /// The topic filter, pre-defined id or short name.
        topic: SubscribeTopic,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Echo of the UNSUBSCRIBE's message id.
        msg_id: u16,
    },
    /// PINGREQ; a sleeping client waking up adds its client id.
    PingReq {
        /// Client id, only from a sleeping client.
        client_id: Option<String>,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT; a client going to sleep adds the sleep duration in seconds.
    Disconnect {
        /// Sleep duration, only from a client going to sleep.
        duration: Option<u16>,
    },
    /// WILLTOPICUPD; `None` is the empty form that deletes will topic and message.
    WillTopicUpd(Option<WillTopic>),
    /// WILLTOPICRESP.
    WillTopicResp {
        /// Outcome.
        return_code: ReturnCode,
    },
    /// WILLMSGUPD.
    WillMsgUpd {
        /// The new will message payload.
        payload: Bytes,
    },
    /// WILLMSGRESP.
    WillMsgResp {
        /// Outcome.
        return_code: ReturnCode,
    },
    /// Forwarder encapsulation (0xFE): a complete MQTT-SN message relayed for the
    /// radio node `node_id`. Encapsulations do not nest.
    Encapsulated {
        /// Broadcast radius from the Ctrl byte (bits 1–0, so 0..=3).
        radius: u8,
        /// The wireless node id, opaque to the gateway (may be empty).
        node_id: Bytes,
        /// The relayed message.
        inner: Box<Packet>,
    },
}

impl Packet {
    /// The message type this packet is sent as.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Packet::Advertise { .. } => MsgType::Advertise,
            Packet::SearchGw { .. } => MsgType::SearchGw,
            Packet::GwInfo { .. } => MsgType::GwInfo,
            Packet::Connect { .. } => MsgType::Connect,
            Packet::ConnAck { .. } => MsgType::ConnAck,
            Packet::WillTopicReq => MsgType::WillTopicReq,
            Packet::WillTopic(_) => MsgType::WillTopic,
            Packet::WillMsgReq => MsgType::WillMsgReq,
            Packet::WillMsg { .. } => MsgType::WillMsg,
            Packet::Register { .. } => MsgType::Register,
            Packet::RegAck { .. } => MsgType::RegAck,
            Packet::Publish { .. } | Packet::PublishNamedMinusOne { .. } => MsgType::Publish,
            Packet::PubAck { .. } => MsgType::PubAck,
            Packet::PubComp { .. } => MsgType::PubComp,
            Packet::PubRec { .. } => MsgType::PubRec,
            Packet::PubRel { .. } => MsgType::PubRel,
            Packet::Subscribe { .. } => MsgType::Subscribe,
            Packet::SubAck { .. } => MsgType::SubAck,
            Packet::Unsubscribe { .. } => MsgType::Unsubscribe,
            Packet::UnsubAck { .. } => MsgType::UnsubAck,
            Packet::PingReq { .. } => MsgType::PingReq,
            Packet::PingResp => MsgType::PingResp,
            Packet::Disconnect { .. } => MsgType::Disconnect,
            Packet::WillTopicUpd(_) => MsgType::WillTopicUpd,
            Packet::WillTopicResp { .. } => MsgType::WillTopicResp,
            Packet::WillMsgUpd { .. } => MsgType::WillMsgUpd,
            Packet::WillMsgResp { .. } => MsgType::WillMsgResp,
            Packet::Encapsulated { .. } => MsgType::Encapsulated,
        }
    }
}
