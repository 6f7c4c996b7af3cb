//! The small typed values MQTT-SN 2.0 packets are made of: packet type codes,
//! QoS, topic references, reason codes, subscription options.
//!
//! This module owns the mapping between those values and their wire bits
//! (draft §2.1.3, §2.3, §2.4, §3.7.2), so the rest of the codec and the engine
//! never handle a raw flag bit or code.

use alloc::string::String;
use core::fmt;

/// A 2.0 packet type code (draft §2.1.3, Figure 2-4). Reserved codes (0x00,
/// 0x19–0xFB, 0xFD) are not representable: decoding one is
/// [`DecodeError::ReservedPacketType`](super::DecodeError::ReservedPacketType).
/// The same byte means something else in 1.2: see [`crate::version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// 0x01, client → server.
    Connect = 0x01,
    /// 0x02, server → client.
    ConnAck = 0x02,
    /// 0x03, both directions.
    Publish = 0x03,
    /// 0x04, both directions.
    PubAck = 0x04,
    /// 0x05, both directions.
    PubRec = 0x05,
    /// 0x06, both directions.
    PubRel = 0x06,
    /// 0x07, both directions.
    PubComp = 0x07,
    /// 0x08, client → server.
    Subscribe = 0x08,
    /// 0x09, server → client.
    SubAck = 0x09,
    /// 0x0A, client → server.
    Unsubscribe = 0x0A,
    /// 0x0B, server → client.
    UnsubAck = 0x0B,
    /// 0x0C, client → server.
    PingReq = 0x0C,
    /// 0x0D, server → client.
    PingResp = 0x0D,
    /// 0x0E, both directions.
    Disconnect = 0x0E,
    /// 0x0F, both directions.
    Auth = 0x0F,
    /// 0x10, both directions (§3.4; Figure 2-4 says client → server).
    Register = 0x10,
    /// 0x11, both directions (§3.5; Figure 2-4 says server → client).
    RegAck = 0x11,
    /// 0x12, publish without session, both directions.
    PubWos = 0x12,
    /// 0x13, client → server.
    SleepReq = 0x13,
    /// 0x14, server → client.
    SleepResp = 0x14,
    /// 0x15, server → client.
    WakeUp = 0x15,
    /// 0x16, server → clients.
    Advertise = 0x16,
    /// 0x17, client → servers.
    SearchGw = 0x17,
    /// 0x18, server (or client) → client.
    GwInfo = 0x18,
    /// 0xFC, forwarder ↔ server.
    ForwarderEncapsulation = 0xFC,
    /// 0xFE, client → server.
    ConnectionEncapsulation = 0xFE,
    /// 0xFF, both directions.
    ProtectionEncapsulation = 0xFF,
}

impl PacketType {
    /// The type for a wire code, or `None` for a reserved code.
    pub fn from_code(code: u8) -> Option<Self> {
        use PacketType::*;
        Some(match code {
            0x01 => Connect,
            0x02 => ConnAck,
            0x03 => Publish,
            0x04 => PubAck,
            0x05 => PubRec,
            0x06 => PubRel,
            0x07 => PubComp,
            0x08 => Subscribe,
            0x09 => SubAck,
            0x0A => Unsubscribe,
            0x0B => UnsubAck,
            0x0C => PingReq,
            0x0D => PingResp,
            0x0E => Disconnect,
            0x0F => Auth,
            0x10 => Register,
            0x11 => RegAck,
            0x12 => PubWos,
            0x13 => SleepReq,
            0x14 => SleepResp,
            0x15 => WakeUp,
            0x16 => Advertise,
            0x17 => SearchGw,
            0x18 => GwInfo,
            0xFC => ForwarderEncapsulation,
            0xFE => ConnectionEncapsulation,
            0xFF => ProtectionEncapsulation,
            _ => return None,
        })
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The draft's upper-case name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
            Register => "REGISTER",
            RegAck => "REGACK",
            PubWos => "PUBWOS",
            SleepReq => "SLEEPREQ",
            SleepResp => "SLEEPRESP",
            WakeUp => "WAKEUP",
            Advertise => "ADVERTISE",
            SearchGw => "SEARCHGW",
            GwInfo => "GWINFO",
            ForwarderEncapsulation => "FORWARDER-ENCAPSULATION",
            ConnectionEncapsulation => "CONNECTION-ENCAPSULATION",
            ProtectionEncapsulation => "PROTECTION-ENCAPSULATION",
        }
    }

    /// Whether this is one of the three envelopes (0xFC, 0xFE, 0xFF).
    pub fn is_envelope(self) -> bool {
        matches!(
            self,
            PacketType::ForwarderEncapsulation
                | PacketType::ConnectionEncapsulation
                | PacketType::ProtectionEncapsulation
        )
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A QoS level 0–2. The value 3 is not representable: in PUBLISH it is a
/// Malformed Packet, in SUBSCRIBE and the will a protocol error (§3.6.2.2.2,
/// §3.7.2.3, §3.1.3.2); the decoder names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The level for two bits, `None` for 3.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits & 0b11 {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The two-bit value.
    pub fn bits(self) -> u8 {
        self as u8
    }
}

/// How a packet names its topic (draft §2.4, the two Topic Type bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Type `00`: a session topic alias, given out by the server for this
    /// session only (§4.7.2.2).
    SessionAlias(u16),
    /// Type `01`: a predefined topic alias, known to both sides beforehand.
    /// Its pool is separate from the session aliases: the same number may
    /// name two different topics [MQTT-SN-4.7.2.2-6].
    PredefinedAlias(u16),
    /// Type `11`: the full topic name (or, in SUBSCRIBE/UNSUBSCRIBE, the
    /// topic filter), UTF-8.
    Name(String),
}

impl Topic {
    /// The two Topic Type bits of this reference.
    pub fn type_bits(&self) -> u8 {
        match self {
            Topic::SessionAlias(_) => TOPIC_TYPE_SESSION,
            Topic::PredefinedAlias(_) => TOPIC_TYPE_PREDEFINED,
            Topic::Name(_) => TOPIC_TYPE_NAME,
        }
    }
}

/// Topic Type `00`.
pub(crate) const TOPIC_TYPE_SESSION: u8 = 0b00;
/// Topic Type `01`.
pub(crate) const TOPIC_TYPE_PREDEFINED: u8 = 0b01;
/// Topic Type `10`, reserved in 2.0 (1.2's short topic name).
pub(crate) const TOPIC_TYPE_RESERVED: u8 = 0b10;
/// Topic Type `11`.
pub(crate) const TOPIC_TYPE_NAME: u8 = 0b11;

/// The kind of alias a REGACK or SUBACK hands out (their Topic Type must be
/// one of these two, §3.5.2.1, §3.8.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AliasKind {
    /// Type `00`, a session topic alias.
    Session,
    /// Type `01`, a predefined topic alias — also the type of a SUBACK that
    /// returns no alias [MQTT-SN-3.8.2.1-2].
    Predefined,
}

impl AliasKind {
    /// The two Topic Type bits.
    pub fn type_bits(self) -> u8 {
        match self {
            AliasKind::Session => TOPIC_TYPE_SESSION,
            AliasKind::Predefined => TOPIC_TYPE_PREDEFINED,
        }
    }
}

/// What a SUBSCRIBE asks about retained messages (§3.7.2.2, bits 3–2). The
/// value 3 is a protocol error and not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send the retained messages when the subscription is made.
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist yet.
    SendIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

impl RetainHandling {
    /// The value for two bits, `None` for 3.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits & 0b11 {
            0 => Some(RetainHandling::SendAtSubscribe),
            1 => Some(RetainHandling::SendIfNew),
            2 => Some(RetainHandling::DoNotSend),
            _ => None,
        }
    }
}

/// The options in a SUBSCRIBE's flags (§3.7.2). Note the bit positions
/// differ from MQTT 5's subscription options byte (trap T-20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscribeOptions {
    /// Bit 7: do not deliver this client's own publications back to it.
    pub no_local: bool,
    /// Bits 6–5: the highest QoS the client wants messages at.
    pub max_qos: QoS,
    /// Bit 4: keep the RETAIN flag messages were published with.
    pub retain_as_published: bool,
    /// Bits 3–2: what to do with retained messages at subscribe time.
    pub retain_handling: RetainHandling,
}

/// A reason code (draft §2.3): below 0x80 success, 0x80 and above failure.
///
/// Any byte is carried: which codes a packet may use is a rule for the
/// sender [MQTT-SN-3.13.4-1 etc.], judged by the engine, not the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// 0x00 Success / Normal disconnection / Granted QoS 0.
    pub const SUCCESS: Self = ReasonCode(0x00);
    /// 0x01 Granted QoS 1 (SUBACK).
    pub const GRANTED_QOS_1: Self = ReasonCode(0x01);
    /// 0x02 Granted QoS 2 (SUBACK).
    pub const GRANTED_QOS_2: Self = ReasonCode(0x02);
    /// 0x04 Disconnect with will message (client DISCONNECT).
    pub const DISCONNECT_WITH_WILL: Self = ReasonCode(0x04);
    /// 0x10 No matching subscribers (PUBACK, PUBREC).
    pub const NO_MATCHING_SUBSCRIBERS: Self = ReasonCode(0x10);
    /// 0x11 No subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: Self = ReasonCode(0x11);
    /// 0x18 Continue authentication (AUTH).
    pub const CONTINUE_AUTHENTICATION: Self = ReasonCode(0x18);
    /// 0x19 Re-authenticate (AUTH from the client).
    pub const REAUTHENTICATE: Self = ReasonCode(0x19);
    /// 0x1A Topic Alias Exists (REGACK of a predefined name, §4.7.2.2).
    pub const TOPIC_ALIAS_EXISTS: Self = ReasonCode(0x1A);
    /// 0x80 Unspecified error.
    pub const UNSPECIFIED_ERROR: Self = ReasonCode(0x80);
    /// 0x81 Malformed Packet.
    pub const MALFORMED_PACKET: Self = ReasonCode(0x81);
    /// 0x82 Protocol Error.
    pub const PROTOCOL_ERROR: Self = ReasonCode(0x82);
    /// 0x83 Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: Self = ReasonCode(0x83);
    /// 0x84 Unsupported Protocol Version (CONNACK).
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = ReasonCode(0x84);
    /// 0x85 Client Identifier not valid (CONNACK).
    pub const CLIENT_ID_NOT_VALID: Self = ReasonCode(0x85);
    /// 0x86 Bad User Name or Password (CONNACK).
    pub const BAD_USER_NAME_OR_PASSWORD: Self = ReasonCode(0x86);
    /// 0x87 Not authorized.
    pub const NOT_AUTHORIZED: Self = ReasonCode(0x87);
    /// 0x88 Server unavailable (CONNACK).
    pub const SERVER_UNAVAILABLE: Self = ReasonCode(0x88);
    /// 0x89 Server busy.
    pub const SERVER_BUSY: Self = ReasonCode(0x89);
    /// 0x8A Banned (CONNACK).
    pub const BANNED: Self = ReasonCode(0x8A);
    /// 0x8B Server shutting down (DISCONNECT).
    pub const SERVER_SHUTTING_DOWN: Self = ReasonCode(0x8B);
    /// 0x8C Bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: Self = ReasonCode(0x8C);
    /// 0x8D Keep Alive timeout (DISCONNECT).
    pub const KEEP_ALIVE_TIMEOUT: Self = ReasonCode(0x8D);
    /// 0x8E Session taken over (DISCONNECT).
    pub const SESSION_TAKEN_OVER: Self = ReasonCode(0x8E);
    /// 0x8F Topic Filter invalid.
    pub const TOPIC_FILTER_INVALID: Self = ReasonCode(0x8F);
    /// 0x90 Topic Name invalid.
    pub const TOPIC_NAME_INVALID: Self = ReasonCode(0x90);
    /// 0x91 Packet Identifier in use.
    pub const PACKET_ID_IN_USE: Self = ReasonCode(0x91);
    /// 0x92 Packet Identifier not found (PUBREL, PUBCOMP).
    pub const PACKET_ID_NOT_FOUND: Self = ReasonCode(0x92);
    /// 0x93 Receive Maximum exceeded: a flow-control violation (§4.9).
    pub const RECEIVE_MAXIMUM_EXCEEDED: Self = ReasonCode(0x93);
    /// 0x94 Topic Alias invalid (DISCONNECT).
    pub const TOPIC_ALIAS_INVALID: Self = ReasonCode(0x94);
    /// 0x95 Packet too large.
    pub const PACKET_TOO_LARGE: Self = ReasonCode(0x95);
    /// 0x96 Packet rate too high (DISCONNECT).
    pub const PACKET_RATE_TOO_HIGH: Self = ReasonCode(0x96);
    /// 0x97 Quota exceeded.
    pub const QUOTA_EXCEEDED: Self = ReasonCode(0x97);
    /// 0x98 Administrative action (DISCONNECT).
    pub const ADMINISTRATIVE_ACTION: Self = ReasonCode(0x98);
    /// 0x99 Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: Self = ReasonCode(0x99);
    /// 0x9A Retain not supported.
    pub const RETAIN_NOT_SUPPORTED: Self = ReasonCode(0x9A);
    /// 0x9B QoS not supported.
    pub const QOS_NOT_SUPPORTED: Self = ReasonCode(0x9B);
    /// 0x9C Use another server.
    pub const USE_ANOTHER_SERVER: Self = ReasonCode(0x9C);
    /// 0x9D Server moved.
    pub const SERVER_MOVED: Self = ReasonCode(0x9D);
    /// 0x9E Shared Subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Self = ReasonCode(0x9E);
    /// 0x9F Connection rate exceeded.
    pub const CONNECTION_RATE_EXCEEDED: Self = ReasonCode(0x9F);
    /// 0xA0 Maximum connect time (DISCONNECT).
    pub const MAXIMUM_CONNECT_TIME: Self = ReasonCode(0xA0);
    /// 0xA1 Subscription Identifiers not supported.
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: Self = ReasonCode(0xA1);
    /// 0xA2 Wildcard Subscriptions not supported.
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Self = ReasonCode(0xA2);
    /// 0xE6 Only PROTECTION packets supported (MQTT-SN specific).
    pub const ONLY_PROTECTION_SUPPORTED: Self = ReasonCode(0xE6);
    /// 0xE7 Protection scheme invalid (MQTT-SN specific).
    pub const PROTECTION_SCHEME_INVALID: Self = ReasonCode(0xE7);
    /// 0xE8 Unknown Sender Identifier (MQTT-SN specific).
    pub const UNKNOWN_SENDER_ID: Self = ReasonCode(0xE8);
    /// 0xF0 Unknown Topic Alias (MQTT-SN specific).
    pub const UNKNOWN_TOPIC_ALIAS: Self = ReasonCode(0xF0);
    /// 0xF1 Congestion, retry later (MQTT-SN specific).
    pub const CONGESTION: Self = ReasonCode(0xF1);
    /// 0xF2 Protection Encapsulation not supported (MQTT-SN specific).
    pub const PROTECTION_NOT_SUPPORTED: Self = ReasonCode(0xF2);
    /// 0xF3 Forwarder Encapsulation not supported (MQTT-SN specific).
    pub const FORWARDER_NOT_SUPPORTED: Self = ReasonCode(0xF3);
    /// 0xF4 No Virtual Connection exists (MQTT-SN specific).
    pub const NO_VIRTUAL_CONNECTION: Self = ReasonCode(0xF4);

    /// Below 0x80.
    pub fn is_success(self) -> bool {
        self.0 < 0x80
    }

    /// The draft's name for the code, `None` for an unassigned value. Some
    /// values have several names by packet (0x00); the general one is given.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "Success",
            0x01 => "Granted QoS 1",
            0x02 => "Granted QoS 2",
            0x04 => "Disconnect with will message",
            0x10 => "No matching subscribers",
            0x11 => "No subscription existed",
            0x18 => "Continue authentication",
            0x19 => "Re-authenticate",
            0x1A => "Topic Alias Exists",
            0x80 => "Unspecified error",
            0x81 => "Malformed Packet",
            0x82 => "Protocol Error",
            0x83 => "Implementation specific error",
            0x84 => "Unsupported Protocol Version",
            0x85 => "Client Identifier not valid",
            0x86 => "Bad User Name or Password",
            0x87 => "Not authorized",
            0x88 => "Server unavailable",
            0x89 => "Server busy",
            0x8A => "Banned",
            0x8B => "Server shutting down",
            0x8C => "Bad authentication method",
            0x8D => "Keep Alive timeout",
            0x8E => "Session taken over",
            0x8F => "Topic Filter invalid",
            0x90 => "Topic Name invalid",
            0x91 => "Packet Identifier in use",
            0x92 => "Packet Identifier not found",
            0x93 => "Receive Maximum exceeded",
            0x94 => "Topic Alias invalid",
            0x95 => "Packet too large",
            0x96 => "Packet rate too high",
            0x97 => "Quota exceeded",
            0x98 => "Administrative action",
            0x99 => "Payload format invalid",
            0x9A => "Retain not supported",
            0x9B => "QoS not supported",
            0x9C => "Use another server",
            0x9D => "Server moved",
            0x9E => "Shared Subscriptions not supported",
            0x9F => "Connection rate exceeded",
            0xA0 => "Maximum connect time",
            0xA1 => "Subscription Identifiers not supported",
            0xA2 => "Wildcard Subscriptions not supported",
            0xE6 => "Only PROTECTION packets supported",
            0xE7 => "Protection scheme invalid",
            0xE8 => "Unknown Sender Identifier",
            0xF0 => "Unknown Topic Alias",
            0xF1 => "Congestion, retry later",
            0xF2 => "Protection Encapsulation not supported",
            0xF3 => "Forwarder Encapsulation not supported",
            0xF4 => "No Virtual Connection exists",
            _ => return None,
        })
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "0x{:02x} ({name})", self.0),
            None => write!(f, "0x{:02x}", self.0),
        }
    }
}
