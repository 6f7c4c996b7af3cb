//! The small typed values that MQTT-SN packets are made of: message type codes,
//! QoS levels (including −1), topic references, return codes.
//!
//! This module owns the mapping between those values and their wire bits, so the
//! rest of the codec (and the engine) never handles a raw flag bit or code.

use alloc::string::String;
use core::fmt;

/// A message type code (fact sheet §2). Reserved codes are not representable:
/// decoding one is a [`DecodeError::ReservedMsgType`](super::DecodeError).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    /// 0x00, gateway → broadcast.
    Advertise = 0x00,
    /// 0x01, client → broadcast.
    SearchGw = 0x01,
    /// 0x02, gateway or client → broadcast.
    GwInfo = 0x02,
    /// 0x04, client → gateway.
    Connect = 0x04,
    /// 0x05, gateway → client.
    ConnAck = 0x05,
    /// 0x06, gateway → client.
    WillTopicReq = 0x06,
    /// 0x07, client → gateway.
    WillTopic = 0x07,
    /// 0x08, gateway → client.
    WillMsgReq = 0x08,
    /// 0x09, client → gateway.
    WillMsg = 0x09,
    /// 0x0A, both directions.
    Register = 0x0A,
    /// 0x0B, both directions.
    RegAck = 0x0B,
    /// 0x0C, both directions.
    Publish = 0x0C,
    /// 0x0D, both directions.
    PubAck = 0x0D,
    /// 0x0E, both directions (note: before PUBREC, unlike MQTT).
    PubComp = 0x0E,
    /// 0x0F, both directions.
    PubRec = 0x0F,
    /// 0x10, both directions.
    PubRel = 0x10,
    /// 0x12, client → gateway.
    Subscribe = 0x12,
    /// 0x13, gateway → client.
    SubAck = 0x13,
    /// 0x14, client → gateway.
    Unsubscribe = 0x14,
    /// 0x15, gateway → client.
    UnsubAck = 0x15,
    /// 0x16, both directions.
    PingReq = 0x16,
    /// 0x17, both directions.
    PingResp = 0x17,
    /// 0x18, both directions.
    Disconnect = 0x18,
    /// 0x1A, client → gateway.
    WillTopicUpd = 0x1A,
    /// 0x1B, gateway → client.
    WillTopicResp = 0x1B,
    /// 0x1C, client → gateway.
    WillMsgUpd = 0x1C,
    /// 0x1D, gateway → client.
    WillMsgResp = 0x1D,
    /// 0xFE, forwarder ↔ gateway.
    Encapsulated = 0xFE,
}

impl MsgType {
    /// The type for a wire code, or `None` for a reserved code.
    pub fn from_code(code: u8) -> Option<Self> {
        use MsgType::*;
        Some(match code {
            0x00 => Advertise,
            0x01 => SearchGw,
            0x02 => GwInfo,
            0x04 => Connect,
            0x05 => ConnAck,
            0x06 => WillTopicReq,
            0x07 => WillTopic,
            0x08 => WillMsgReq,
            0x09 => WillMsg,
            0x0A => Register,
            0x0B => RegAck,
            0x0C => Publish,
            0x0D => PubAck,
            0x0E => PubComp,
            0x0F => PubRec,
            0x10 => PubRel,
            0x12 => Subscribe,
            0x13 => SubAck,
            0x14 => Unsubscribe,
            0x15 => UnsubAck,
            0x16 => PingReq,
            0x17 => PingResp,
            0x18 => Disconnect,
            0x1A => WillTopicUpd,
            0x1B => WillTopicResp,
            0x1C => WillMsgUpd,
            0x1D => WillMsgResp,
            0xFE => Encapsulated,
            _ => return None,
        })
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The spec's upper-case name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        use MsgType::*;
        match self {
            Advertise => "ADVERTISE",
            SearchGw => "SEARCHGW",
            GwInfo => "GWINFO",
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            WillTopicReq => "WILLTOPICREQ",
            WillTopic => "WILLTOPIC",
            WillMsgReq => "WILLMSGREQ",
            WillMsg => "WILLMSG",
            Register => "REGISTER",
            RegAck => "REGACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubComp => "PUBCOMP",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            WillTopicUpd => "WILLTOPICUPD",
            WillTopicResp => "WILLTOPICRESP",
            WillMsgUpd => "WILLMSGUPD",
            WillMsgResp => "WILLMSGRESP",
            Encapsulated => "ENCAPSULATED",
        }
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Quality of service, flags bits 6–5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QoS {
    /// QoS −1 (bits `11`): a PUBLISH from a client with no connection at all.
    /// Only meaningful in PUBLISH; ordered below QoS 0.
    MinusOne,
    /// QoS 0 (bits `00`): at most once.
    AtMostOnce,
    /// QoS 1 (bits `01`): at least once.
    AtLeastOnce,
    /// QoS 2 (bits `10`): exactly once.
    ExactlyOnce,
}

impl QoS {
    /// The two flag bits, unshifted (0..=3).
    pub fn bits(self) -> u8 {
        match self {
            QoS::AtMostOnce => 0b00,
            QoS::AtLeastOnce => 0b01,
            QoS::ExactlyOnce => 0b10,
            QoS::MinusOne => 0b11,
        }
    }

    /// The QoS for two unshifted flag bits (only the low two bits are read).
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => QoS::AtMostOnce,
            0b01 => QoS::AtLeastOnce,
            0b10 => QoS::ExactlyOnce,
            _ => QoS::MinusOne,
        }
    }

    /// The MQTT QoS number this level maps to upstream (−1 travels as 0).
    pub fn as_mqtt(self) -> u8 {
        match self {
            QoS::MinusOne | QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => 1,
            QoS::ExactlyOnce => 2,
        }
    }
}

/// The TopicIdType field, flags bits 1–0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicIdType {
    /// `00`: a normal (registered) topic id; in SUBSCRIBE/UNSUBSCRIBE a full topic name.
    Normal,
    /// `01`: a pre-defined topic id.
    Predefined,
    /// `10`: a two-byte short topic name.
    Short,
    /// `11`: reserved.
    Reserved,
}

impl TopicIdType {
    /// The two flag bits.
    pub fn bits(self) -> u8 {
        match self {
            TopicIdType::Normal => 0b00,
            TopicIdType::Predefined => 0b01,
            TopicIdType::Short => 0b10,
            TopicIdType::Reserved => 0b11,
        }
    }

    /// The type for the low two bits of a flags byte.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => TopicIdType::Normal,
            0b01 => TopicIdType::Predefined,
            0b10 => TopicIdType::Short,
            _ => TopicIdType::Reserved,
        }
    }
}

/// Where a PUBLISH goes: the 2-byte TopicId field read according to TopicIdType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicRef {
    /// A normal topic id, assigned by REGISTER or SUBACK (per client).
    Id(u16),
    /// A pre-defined topic id, from the gateway's configuration (global).
    Predefined(u16),
    /// A two-character short topic name, carried in place of the id. The bytes are
    /// kept raw; whether they form a valid topic name is the engine's question.
    Short([u8; 2]),
}

impl TopicRef {
    /// The TopicIdType bits this reference is sent with.
    pub fn id_type(&self) -> TopicIdType {
        match self {
            TopicRef::Id(_) => TopicIdType::Normal,
            TopicRef::Predefined(_) => TopicIdType::Predefined,
            TopicRef::Short(_) => TopicIdType::Short,
        }
    }

    /// A short-name reference from text; `None` unless `name` is exactly two bytes.
    pub fn short(name: &str) -> Option<Self> {
        match name.as_bytes() {
            &[a, b] => Some(TopicRef::Short([a, b])),
            _ => None,
        }
    }

    /// The raw 16-bit TopicId field (a short name's two bytes, big-endian), as
    /// echoed in PUBACK.
    pub fn raw(&self) -> u16 {
        match *self {
            TopicRef::Id(id) | TopicRef::Predefined(id) => id,
            TopicRef::Short(s) => u16::from_be_bytes(s),
        }
    }
}

/// What a SUBSCRIBE or UNSUBSCRIBE names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscribeTopic {
    /// TopicIdType `00`: a full topic name or filter (may hold `+` and `#`).
    Name(String),
    /// TopicIdType `01`: a pre-defined topic id.
    Predefined(u16),
    /// TopicIdType `10`: a two-byte short topic name.
    Short([u8; 2]),
}

impl SubscribeTopic {
    /// The TopicIdType bits this topic is sent with.
    pub fn id_type(&self) -> TopicIdType {
        match self {
            SubscribeTopic::Name(_) => TopicIdType::Normal,
            SubscribeTopic::Predefined(_) => TopicIdType::Predefined,
            SubscribeTopic::Short(_) => TopicIdType::Short,
        }
    }
}

/// A return code (fact sheet §5). Values 0x04–0xFF are reserved in v1.2 but some
/// gateways send them (EMQX uses 0x80–0x84); they are kept, and any value other
/// than [`ReturnCode::Accepted`] is a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnCode {
    /// 0x00.
    Accepted,
    /// 0x01: rejected, congestion; the client waits T_WAIT before retrying.
    Congestion,
    /// 0x02: rejected, invalid topic id.
    InvalidTopicId,
    /// 0x03: rejected, not supported.
    NotSupported,
    /// Any other (reserved) value; always a rejection. Never holds 0x00–0x03.
    Other(u8),
}

impl ReturnCode {
    /// The code for a wire byte.
    pub fn from_code(code: u8) -> Self {
        match code {
            0x00 => ReturnCode::Accepted,
            0x01 => ReturnCode::Congestion,
            0x02 => ReturnCode::InvalidTopicId,
            0x03 => ReturnCode::NotSupported,
            other => ReturnCode::Other(other),
        }
    }

    /// The wire byte.
    pub fn code(self) -> u8 {
        match self {
            ReturnCode::Accepted => 0x00,
            ReturnCode::Congestion => 0x01,
            ReturnCode::InvalidTopicId => 0x02,
            ReturnCode::NotSupported => 0x03,
            ReturnCode::Other(c) => c,
        }
    }

    /// True only for 0x00.
    pub fn is_accepted(self) -> bool {
        self == ReturnCode::Accepted
    }
}

/// The will topic carried by a non-empty WILLTOPIC or WILLTOPICUPD.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WillTopic {
    /// QoS of the will message (flags bits 6–5).
    pub qos: QoS,
    /// Whether the will message is retained (flags bit 4).
    pub retain: bool,
    /// The will topic name.
    pub topic: String,
}
