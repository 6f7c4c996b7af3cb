//! The typed MQTT-SN 2.0 packet: one variant per packet of the draft's
//! catalogue (§3), fields in the draft's terms. Optional wire fields are
//! `Option`s where absent and present-with-a-default differ on the wire (an
//! ack's Reason Code), so that decoding and encoding are exact inverses.
//!
//! Whether a value is allowed in context (keep-alive 0, a packet id of 0, a
//! reason code a packet may not carry, REGACK with an alias from a client…)
//! is a rule for the engine: the codec only refuses what cannot be put on or
//! read from the wire.

use alloc::{boxed::Box, string::String};
use bytes::Bytes;

use super::types::{AliasKind, PacketType, QoS, ReasonCode, SubscribeOptions, Topic};

/// One MQTT-SN 2.0 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (§3.1).
    Connect(Box<Connect>),
    /// CONNACK (§3.2).
    ConnAck(Box<ConnAck>),
    /// AUTH (§3.3).
    Auth(Auth),
    /// REGISTER (§3.4).
    Register(Register),
    /// REGACK (§3.5).
    RegAck(RegAck),
    /// PUBWOS, publish without session (§3.6.1).
    PubWos(PubWos),
    /// PUBLISH at QoS 0, 1 or 2 (§3.6.2).
    Publish(Publish),
    /// PUBACK (§3.6.3).
    PubAck(Ack),
    /// PUBREC (§3.6.4).
    PubRec(Ack),
    /// PUBREL (§3.6.5).
    PubRel(Ack),
    /// PUBCOMP (§3.6.6).
    PubComp(Ack),
    /// SUBSCRIBE (§3.7): one topic filter or alias per packet.
    Subscribe(Subscribe),
    /// SUBACK (§3.8).
    SubAck(SubAck),
    /// UNSUBSCRIBE (§3.9).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (§3.10).
    UnsubAck(Ack),
    /// PINGREQ (§3.11): a packet id, no client id.
    PingReq {
        /// Echoed by the PINGRESP.
        packet_id: u16,
    },
    /// PINGRESP (§3.12).
    PingResp {
        /// The PINGREQ's packet id.
        packet_id: u16,
        /// Application messages still queued: 0 none, 1–254 the count, 255
        /// "some"; `None` when the field is absent.
        messages_remaining: Option<u8>,
    },
    /// DISCONNECT (§3.13).
    Disconnect(Disconnect),
    /// WAKEUP (§3.14): the header alone.
    WakeUp,
    /// SLEEPREQ (§3.15).
    SleepReq {
        /// Flag bit 0: the server may keep the session aliases while asleep.
        retain_aliases: bool,
        /// Echoed by the SLEEPRESP.
        packet_id: u16,
        /// Seconds, greater than 0.
        duration: u32,
    },
    /// SLEEPRESP (§3.16).
    SleepResp {
        /// The SLEEPREQ's packet id.
        packet_id: u16,
        /// A duration the server chose instead of the client's (only when the
        /// client's CONNECT allowed server-suggested values).
        duration: Option<u32>,
        /// Absent means 0x00 Success.
        reason: Option<ReasonCode>,
    },
    /// ADVERTISE (§3.20.1).
    Advertise {
        /// The gateway's id.
        gw_id: u8,
        /// Seconds until the next ADVERTISE.
        duration: u16,
    },
    /// SEARCHGW (§3.20.2).
    SearchGw {
        /// Additional Network Information (opaque, may be empty).
        network_info: Bytes,
    },
    /// GWINFO (§3.20.3).
    GwInfo {
        /// The gateway's id.
        gw_id: u8,
        /// The gateway's address, only when a client answers (may be empty).
        gw_address: Bytes,
    },
    /// Forwarder Encapsulation, 0xFC (§3.19).
    Forwarder(Forwarder),
    /// Connection Encapsulation, 0xFE (§3.18): client → server only.
    Connection {
        /// The client id the virtual connection was created with.
        client_id: String,
        /// The wrapped packet (not an envelope).
        inner: Box<Packet>,
    },
    /// Protection Encapsulation, 0xFF (§3.17), parsed but not verified.
    Protection(Box<Protection>),
}

/// CONNECT (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Flag bit 0: discard any existing session.
    pub clean_start: bool,
    /// Flag bit 5: the client lets the server move the virtual connection to
    /// a new address on a Connection Encapsulation.
    pub allow_address_change: bool,
    /// Flag bit 6: the server may answer with its own keep-alive, session
    /// expiry and sleep duration.
    pub allow_server_suggested: bool,
    /// Echoed by the CONNACK or AUTH.
    pub packet_id: u16,
    /// Seconds, 1–65535 (0 is a protocol error, for the engine to refuse).
    pub keep_alive: u16,
    /// The largest packet the client accepts; 0 = no limit.
    pub max_packet_size: u16,
    /// Present with flag bit 4: messages per awake cycle (0 = server decides).
    pub default_awake_messages: Option<u8>,
    /// Present with flag bit 3: seconds; absent means 0.
    pub session_expiry: Option<u32>,
    /// Present with flag bit 1.
    pub will: Option<Will>,
    /// Present with flag bit 2.
    pub auth: Option<AuthData>,
    /// Empty: the server assigns one in the CONNACK.
    pub client_id: String,
}

/// The will inside a CONNECT (§3.1.3, §3.1.10–3.1.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will Flags bits 3–2.
    pub qos: QoS,
    /// Will Flags bit 4.
    pub retain: bool,
    /// Will Flags bits 1–0 with the alias or name.
    pub topic: Topic,
    /// The will payload (up to 65535 bytes).
    pub payload: Bytes,
}

/// An authentication method and its data, as CONNECT and CONNACK carry them
/// (method: 1-byte length, data: 2-byte length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthData {
    /// E.g. "MQTT-BASIC" (§4.11).
    pub method: String,
    /// Method-specific bytes.
    pub data: Bytes,
}

/// CONNACK (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Flag bit 0.
    pub session_present: bool,
    /// The CONNECT's or AUTH's packet id.
    pub packet_id: u16,
    /// Always present in a CONNACK.
    pub reason: ReasonCode,
    /// Flag bit 1: the session expiry the server uses instead of the client's.
    pub session_expiry: Option<u32>,
    /// Flag bit 2: the keep-alive the client must use instead of its own.
    pub server_keep_alive: Option<u16>,
    /// Flag bit 3.
    pub auth: Option<AuthData>,
    /// The id the server gave a client that sent none; empty = absent.
    pub assigned_client_id: String,
}

/// AUTH (§3.3): the data runs to the end of the packet (no length field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The CONNECT's packet id during the connect exchange.
    pub packet_id: u16,
    /// 0x00, 0x18 or 0x19.
    pub reason: ReasonCode,
    /// The method, the same in every AUTH of an exchange.
    pub method: String,
    /// Method-specific bytes.
    pub data: Bytes,
}

/// REGISTER (§3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// Echoed by the REGACK.
    pub packet_id: u16,
    /// Flag bit 0: a server's REGISTER always carries the alias, a client's
    /// never does [MQTT-SN-3.4-1/-2].
    pub alias: Option<u16>,
    /// The topic name.
    pub topic_name: String,
}

/// REGACK (§3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegAck {
    /// Flag bits 1–0.
    pub alias_kind: AliasKind,
    /// The REGISTER's packet id.
    pub packet_id: u16,
    /// Flag bit 2: the alias (absent in a client's REGACK).
    pub alias: Option<u16>,
    /// Absent means 0x00 Success.
    pub reason: Option<ReasonCode>,
}

/// PUBWOS (§3.6.1): topic a predefined alias or a full name, QoS 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubWos {
    /// Flag bit 4.
    pub retain: bool,
    /// Never a session alias (there is no session).
    pub topic: Topic,
    /// The application message (may be empty).
    pub payload: Bytes,
}

/// The QoS of a PUBLISH with the fields that come with it: a packet id for
/// QoS 1 and 2 only [MQTT-SN-2.2-2], DUP for QoS 2 only [MQTT-SN-3.6.2.2.3-1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// QoS 0: no packet id field.
    AtMostOnce,
    /// QoS 1.
    AtLeastOnce {
        /// Echoed by the PUBACK.
        packet_id: u16,
    },
    /// QoS 2.
    ExactlyOnce {
        /// Echoed by PUBREC, PUBREL, PUBCOMP.
        packet_id: u16,
        /// A retransmission.
        dup: bool,
    },
}

impl Delivery {
    /// The QoS level.
    pub fn qos(self) -> QoS {
        match self {
            Delivery::AtMostOnce => QoS::AtMostOnce,
            Delivery::AtLeastOnce { .. } => QoS::AtLeastOnce,
            Delivery::ExactlyOnce { .. } => QoS::ExactlyOnce,
        }
    }

    /// The packet id, for QoS 1 and 2.
    pub fn packet_id(self) -> Option<u16> {
        match self {
            Delivery::AtMostOnce => None,
            Delivery::AtLeastOnce { packet_id } | Delivery::ExactlyOnce { packet_id, .. } => {
                Some(packet_id)
            }
        }
    }
}

/// PUBLISH (§3.6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// QoS, packet id, DUP.
    pub delivery: Delivery,
    /// Flag bit 4.
    pub retain: bool,
    /// Session alias, predefined alias or full name.
    pub topic: Topic,
    /// The application message (may be empty).
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK: a packet id and an optional
/// reason code (absent = success, trap T-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The acknowledged packet's id.
    pub packet_id: u16,
    /// Absent means 0x00 Success.
    pub reason: Option<ReasonCode>,
}

impl Ack {
    /// The reason code, absent read as Success.
    pub fn reason_or_success(self) -> ReasonCode {
        self.reason.unwrap_or(ReasonCode::SUCCESS)
    }
}

/// SUBSCRIBE (§3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The flag bits 7–2.
    pub options: SubscribeOptions,
    /// Echoed by the SUBACK.
    pub packet_id: u16,
    /// A filter (type 11) or an alias.
    pub topic: Topic,
}

/// SUBACK (§3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Flag bits 1–0 (Predefined when no alias is returned).
    pub alias_kind: AliasKind,
    /// The SUBSCRIBE's packet id.
    pub packet_id: u16,
    /// Flag bit 2: the alias for a non-wildcard filter.
    pub alias: Option<u16>,
    /// The granted QoS or a failure. Optional on the wire (§3.8.5), though
    /// [MQTT-SN-3.7.6-5] says a server MUST send it.
    pub reason: Option<ReasonCode>,
}

/// UNSUBSCRIBE (§3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Echoed by the UNSUBACK.
    pub packet_id: u16,
    /// A filter (type 11) or an alias.
    pub topic: Topic,
}

/// DISCONNECT (§3.13). Wire order: flags, packet id, reason code, session
/// expiry, reason string (the draft's section order, see docs/protocol-v2.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Flag bit 0: a server answering a packet with no virtual connection
    /// echoes its id.
    pub packet_id: Option<u16>,
    /// Flag bit 2; absent means 0x00 Normal disconnection.
    pub reason: Option<ReasonCode>,
    /// Flag bit 1: the client's new session expiry (never from a server).
    pub session_expiry: Option<u32>,
    /// Inferred from the length; empty = absent.
    pub reason_string: String,
}

/// How a Forwarder Encapsulation is laid out. The draft text and the
/// project's fact sheet disagree (docs/protocol-v2.md): both forms are read,
/// and a reply is written in the form the forwarder used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwarderForm {
    /// §3.19 as stored: the Length covers the wrapper up to the end of the
    /// Client Addressing Information; the inner packet follows.
    WrapperLength,
    /// The fact sheet's August 2026 form: the Length covers the whole
    /// datagram and a 1-byte CAI length precedes the addressing information.
    WholeLength,
}

/// Forwarder Encapsulation, 0xFC (§3.19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarder {
    /// The layout on the wire.
    pub form: ForwarderForm,
    /// Client Addressing Information, opaque to the server, echoed back.
    pub client_addressing: Bytes,
    /// The relayed packet (a protection envelope allowed, not a forwarder).
    pub inner: Box<Packet>,
}

/// The size of the Monotonic Counter in a protection envelope (flag bits 1–0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MonotonicCounter {
    /// Code 0: none.
    Absent,
    /// Code 1: 16 bits.
    U16(u16),
    /// Code 2: 32 bits.
    U32(u32),
}

/// Protection Encapsulation, 0xFF (§3.17). Parsed so the server can answer
/// with the right reason code (0xF2 when it does not implement protection);
/// the tag is not verified here — that needs the keys and the scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// Flag bits 7–4: 0 provider-defined, 1 the scheme's nominal size,
    /// 4–15 sixteen times that many bits (2 and 3 reserved).
    pub tag_length_code: u8,
    /// The protection scheme index (Figure 3-29).
    pub scheme: u8,
    /// Eight bytes naming the sender.
    pub sender_id: [u8; 8],
    /// Four random bytes.
    pub random: [u8; 4],
    /// 0, 2, 4 or 12 bytes (flag bits 3–2).
    pub crypto_material: Bytes,
    /// Flag bits 1–0 and the counter.
    pub counter: MonotonicCounter,
    /// The protected packet as it is on the wire (ciphertext for AEAD).
    pub protected: Bytes,
    /// The authentication tag, the last bytes of the datagram.
    pub tag: Bytes,
}

impl Packet {
    /// The packet type code this packet goes on the wire with.
    pub fn packet_type(&self) -> PacketType {
        use PacketType as T;
        match self {
            Packet::Connect(_) => T::Connect,
            Packet::ConnAck(_) => T::ConnAck,
            Packet::Auth(_) => T::Auth,
            Packet::Register(_) => T::Register,
            Packet::RegAck(_) => T::RegAck,
            Packet::PubWos(_) => T::PubWos,
            Packet::Publish(_) => T::Publish,
            Packet::PubAck(_) => T::PubAck,
            Packet::PubRec(_) => T::PubRec,
            Packet::PubRel(_) => T::PubRel,
            Packet::PubComp(_) => T::PubComp,
            Packet::Subscribe(_) => T::Subscribe,
            Packet::SubAck(_) => T::SubAck,
            Packet::Unsubscribe(_) => T::Unsubscribe,
            Packet::UnsubAck(_) => T::UnsubAck,
            Packet::PingReq { .. } => T::PingReq,
            Packet::PingResp { .. } => T::PingResp,
            Packet::Disconnect(_) => T::Disconnect,
            Packet::WakeUp => T::WakeUp,
            Packet::SleepReq { .. } => T::SleepReq,
            Packet::SleepResp { .. } => T::SleepResp,
            Packet::Advertise { .. } => T::Advertise,
            Packet::SearchGw { .. } => T::SearchGw,
            Packet::GwInfo { .. } => T::GwInfo,
            Packet::Forwarder(_) => T::ForwarderEncapsulation,
            Packet::Connection { .. } => T::ConnectionEncapsulation,
            Packet::Protection(_) => T::ProtectionEncapsulation,
        }
    }
}
