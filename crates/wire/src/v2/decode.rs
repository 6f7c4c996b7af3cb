//! Decoding one MQTT-SN 2.0 packet from one datagram. Total over its input:
//! every byte string yields a [`Packet`] or a [`DecodeError`] naming what is
//! wrong, never a panic, and never an allocation larger than the input.
//!
//! What the codec refuses is what the draft calls a Malformed Packet or what
//! cannot be represented: reserved flag bits set (§4.12.1, trap T-4),
//! reserved values (QoS 3, topic type `10`, Retain Handling 3, reserved
//! protection codes), a Length that disagrees with the datagram, fields
//! running past the end, bytes after the last field, ill-formed UTF-8 or
//! U+0000 in a string [MQTT-SN-1.8.4-1/-2]. Everything else — keep-alive 0,
//! packet id 0, a reason code a packet may not carry — decodes, and is the
//! engine's to judge. Choices where the draft is silent: docs/protocol-v2.md.

use alloc::{borrow::ToOwned, boxed::Box, string::String};
use bytes::Bytes;
use thiserror::Error;

use super::packet::{
    Ack, Auth, AuthData, ConnAck, Connect, Delivery, Disconnect, Forwarder, ForwarderForm,
    MonotonicCounter, Packet, Protection, PubWos, Publish, RegAck, Register, SubAck, Subscribe,
    Unsubscribe, Will,
};
use super::types::{
    AliasKind, PacketType, QoS, ReasonCode, RetainHandling, SubscribeOptions,
    TOPIC_TYPE_PREDEFINED, TOPIC_TYPE_RESERVED, TOPIC_TYPE_SESSION, Topic,
};
use crate::v1::header::parse_length;

/// The protocol version byte of a 2.0 CONNECT [MQTT-SN-3.1.5-1].
pub const PROTOCOL_VERSION: u8 = 0x02;

/// Why a byte string is not a valid MQTT-SN 2.0 packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Nothing to decode.
    #[error("empty datagram")]
    Empty,
    /// The 1-byte Length field is 0.
    #[error("length field is 0")]
    ZeroLength,
    /// The 3-byte Length form declares fewer than 4 bytes.
    #[error("long-form length field declares {0} bytes, fewer than the minimum 4")]
    LongLengthTooSmall(u16),
    /// The input ends inside the Length field or before the Packet Type.
    #[error("datagram of {0} bytes ends inside the header")]
    TruncatedHeader(usize),
    /// The Length field disagrees with the size of the datagram.
    #[error("length field declares {declared} bytes but the datagram has {actual}")]
    LengthMismatch {
        /// What the Length field says.
        declared: usize,
        /// What was received.
        actual: usize,
    },
    /// A reserved packet type (0x00, 0x19–0xFB, 0xFD).
    #[error("reserved packet type 0x{0:02x}")]
    ReservedPacketType(u8),
    /// A field runs past the end of the packet.
    #[error("{packet_type} truncated: field {field} is missing or short")]
    Truncated {
        /// The packet being decoded.
        packet_type: PacketType,
        /// The field that did not fit.
        field: &'static str,
    },
    /// Bytes after the last field.
    #[error("{packet_type} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The packet being decoded.
        packet_type: PacketType,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A reserved flag bit is 1: a Malformed Packet (trap T-4).
    #[error("{packet_type} {field} has reserved bits set: 0x{value:02x}")]
    ReservedBits {
        /// The packet being decoded.
        packet_type: PacketType,
        /// The flags field.
        field: &'static str,
        /// The field's value.
        value: u8,
    },
    /// A QoS of 3.
    #[error("{packet_type} carries the reserved QoS 3")]
    ReservedQoS {
        /// The packet being decoded.
        packet_type: PacketType,
    },
    /// DUP set on a QoS 0 or 1 PUBLISH [MQTT-SN-3.6.2.2.3-1].
    #[error("PUBLISH has DUP set at QoS {qos}")]
    DupBelowQoS2 {
        /// The PUBLISH's QoS (0 or 1).
        qos: u8,
    },
    /// A Topic Type this packet cannot carry (the reserved `10` anywhere;
    /// `00` in PUBWOS; `10`/`11` in REGACK and SUBACK).
    #[error("{packet_type} cannot carry topic type 0b{bits:02b}")]
    TopicTypeNotAllowed {
        /// The packet being decoded.
        packet_type: PacketType,
        /// The two Topic Type bits.
        bits: u8,
    },
    /// Retain Handling 3 in a SUBSCRIBE (a protocol error, §3.7.2.2).
    #[error("SUBSCRIBE carries the reserved Retain Handling 3")]
    ReservedRetainHandling,
    /// A string is not well-formed UTF-8 or contains U+0000.
    #[error("{packet_type} field {field} is not a valid UTF-8 string")]
    InvalidString {
        /// The packet being decoded.
        packet_type: PacketType,
        /// The offending field.
        field: &'static str,
    },
    /// A 2.0-shaped CONNECT (type 0x01) whose Protocol Version is not 2. The
    /// packet id lets the server answer CONNACK 0x84 [MQTT-SN-3.1.5-2].
    #[error("CONNECT with protocol version 0x{version:02x}, not 0x02")]
    UnsupportedProtocolVersion {
        /// The CONNECT's packet id.
        packet_id: u16,
        /// The version byte it carries.
        version: u8,
    },
    /// An envelope inside an envelope that may not hold it (a forwarder in
    /// a forwarder; any envelope in a connection encapsulation).
    #[error("{outer} cannot wrap {inner}")]
    NestedEnvelope {
        /// The envelope.
        outer: PacketType,
        /// What it wraps.
        inner: PacketType,
    },
    /// The packet inside an envelope is malformed.
    #[error("in {outer}: {error}")]
    InEnvelope {
        /// The envelope.
        outer: PacketType,
        /// What is wrong with the wrapped packet.
        error: Box<DecodeError>,
    },
    /// A reserved code in the Protection Flags (tag length 2 or 3, counter
    /// length 3).
    #[error("protection flags use a reserved {field} code")]
    ReservedProtectionCode {
        /// "Authentication Tag Length" or "Monotonic Counter Length".
        field: &'static str,
    },
    /// The authentication tag's length cannot be told (a provider-defined
    /// length or scheme, and the protected packet is not self-delimiting).
    #[error("protection envelope: the authentication tag's length cannot be determined")]
    UndeterminedTagLength,
}

/// Decodes one complete 2.0 packet: `buf` must be exactly one datagram.
pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
    decode_within(buf, None)
}

fn decode_within(buf: &[u8], outer: Option<PacketType>) -> Result<Packet, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Empty);
    }
    let length = parse_length(buf)
        .map_err(|e| match e {
            crate::v1::DecodeError::LongLengthTooSmall(n) => DecodeError::LongLengthTooSmall(n),
            _ => DecodeError::ZeroLength,
        })?
        .ok_or(DecodeError::TruncatedHeader(buf.len()))?;
    let code = *buf
        .get(length.field_len)
        .ok_or(DecodeError::TruncatedHeader(buf.len()))?;
    let packet_type = PacketType::from_code(code).ok_or(DecodeError::ReservedPacketType(code))?;
    if let Some(outer) = outer {
        let allowed = match outer {
            PacketType::ForwarderEncapsulation => packet_type != PacketType::ForwarderEncapsulation,
            _ => !packet_type.is_envelope(),
        };
        if !allowed {
            return Err(DecodeError::NestedEnvelope {
                outer,
                inner: packet_type,
            });
        }
    }
    // parse_length guarantees total >= field_len + 1.
    let body_start = length.field_len + 1;

    if packet_type == PacketType::ForwarderEncapsulation && length.total < buf.len() {
        // §3.19 as stored: the Length covers the wrapper only.
        let wrapper = buf.get(..length.total).unwrap_or_default();
        let client_addressing =
            Bytes::copy_from_slice(wrapper.get(body_start..).unwrap_or_default());
        let inner = decode_inner(buf.get(length.total..).unwrap_or_default(), packet_type)?;
        return Ok(Packet::Forwarder(Forwarder {
            form: ForwarderForm::WrapperLength,
            client_addressing,
            inner: Box::new(inner),
        }));
    }
    if length.total != buf.len() {
        return Err(DecodeError::LengthMismatch {
            declared: length.total,
            actual: buf.len(),
        });
    }
    let mut r = Reader::new(packet_type, buf.get(body_start..).unwrap_or_default());
    let packet = decode_body(&mut r)?;
    r.finish()?;
    Ok(packet)
}

fn decode_inner(buf: &[u8], outer: PacketType) -> Result<Packet, DecodeError> {
    decode_within(buf, Some(outer)).map_err(|e| match e {
        DecodeError::NestedEnvelope { .. } => e,
        other => DecodeError::InEnvelope {
            outer,
            error: Box::new(other),
        },
    })
}

fn decode_body(r: &mut Reader<'_>) -> Result<Packet, DecodeError> {
    use PacketType as T;
    Ok(match r.packet_type {
        T::Connect => Packet::Connect(Box::new(decode_connect(r)?)),
        T::ConnAck => Packet::ConnAck(Box::new(decode_connack(r)?)),
        T::Auth => Packet::Auth(Auth {
            packet_id: r.u16("Packet Identifier")?,
            reason: r.reason()?,
            method: {
                let n = r.u8("Authentication Method Length")?;
                r.str(usize::from(n), "Authentication Method")?
            },
            data: r.rest_bytes(),
        }),
        T::Register => {
            let flags = r.flags("REGISTER Flags", 0b1111_1110)?;
            let packet_id = r.u16("Packet Identifier")?;
            let alias = r.u16_if(flags & 1 != 0, "Topic Alias")?;
            Packet::Register(Register {
                packet_id,
                alias,
                topic_name: r.rest_str("Topic Name")?,
            })
        }
        T::RegAck => {
            let flags = r.flags("REGACK Flags", 0b1111_1000)?;
            Packet::RegAck(RegAck {
                alias_kind: r.alias_kind(flags)?,
                packet_id: r.u16("Packet Identifier")?,
                alias: r.u16_if(flags & 0b100 != 0, "Topic Alias")?,
                reason: r.optional_reason()?,
            })
        }
        T::PubWos => {
            let flags = r.flags("PUBWOS Flags", 0b1110_1100)?;
            if flags & 0b11 == TOPIC_TYPE_SESSION {
                return Err(DecodeError::TopicTypeNotAllowed {
                    packet_type: r.packet_type,
                    bits: TOPIC_TYPE_SESSION,
                });
            }
            Packet::PubWos(PubWos {
                retain: flags & FLAG_RETAIN != 0,
                topic: r.publish_topic(flags)?,
                payload: r.rest_bytes(),
            })
        }
        T::Publish => Packet::Publish(decode_publish(r)?),
        T::PubAck => Packet::PubAck(r.ack()?),
        T::PubRec => Packet::PubRec(r.ack()?),
        T::PubRel => Packet::PubRel(r.ack()?),
        T::PubComp => Packet::PubComp(r.ack()?),
        T::UnsubAck => Packet::UnsubAck(r.ack()?),
        T::Subscribe => {
            let flags = r.u8("SUBSCRIBE Flags")?;
            let max_qos = QoS::from_bits(flags >> QOS_SHIFT).ok_or(DecodeError::ReservedQoS {
                packet_type: r.packet_type,
            })?;
            let retain_handling =
                RetainHandling::from_bits(flags >> 2).ok_or(DecodeError::ReservedRetainHandling)?;
            let options = SubscribeOptions {
                no_local: flags & 0x80 != 0,
                max_qos,
                retain_as_published: flags & FLAG_RETAIN != 0,
                retain_handling,
            };
            let packet_id = r.u16("Packet Identifier")?;
            Packet::Subscribe(Subscribe {
                options,
                packet_id,
                topic: r.filter_topic(flags)?,
            })
        }
        T::SubAck => {
            let flags = r.flags("SUBACK Flags", 0b1111_1000)?;
            Packet::SubAck(SubAck {
                alias_kind: r.alias_kind(flags)?,
                packet_id: r.u16("Packet Identifier")?,
                alias: r.u16_if(flags & 0b100 != 0, "Topic Alias")?,
                reason: r.optional_reason()?,
            })
        }
        T::Unsubscribe => {
            let flags = r.flags("UNSUBSCRIBE Flags", 0b1111_1100)?;
            let packet_id = r.u16("Packet Identifier")?;
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                topic: r.filter_topic(flags)?,
            })
        }
        T::PingReq => Packet::PingReq {
            packet_id: r.u16("Packet Identifier")?,
        },
        T::PingResp => Packet::PingResp {
            packet_id: r.u16("Packet Identifier")?,
            messages_remaining: if r.is_empty() {
                None
            } else {
                Some(r.u8("Messages Remaining")?)
            },
        },
        T::Disconnect => {
            let flags = r.flags("DISCONNECT Flags", 0b1111_1000)?;
            let packet_id = r.u16_if(flags & 0b001 != 0, "Packet Identifier")?;
            let reason = if flags & 0b100 != 0 {
                Some(r.reason()?)
            } else {
                None
            };
            let session_expiry = r.u32_if(flags & 0b010 != 0, "Session Expiry Interval")?;
            Packet::Disconnect(Disconnect {
                packet_id,
                reason,
                session_expiry,
                reason_string: r.rest_str("Reason String")?,
            })
        }
        T::WakeUp => Packet::WakeUp,
        T::SleepReq => {
            let flags = r.flags("SLEEPREQ Flags", 0b1111_1110)?;
            Packet::SleepReq {
                retain_aliases: flags & 1 != 0,
                packet_id: r.u16("Packet Identifier")?,
                duration: r.u32("Sleep Duration")?,
            }
        }
        T::SleepResp => {
            let flags = r.flags("SLEEPRESP Flags", 0b1111_1110)?;
            Packet::SleepResp {
                packet_id: r.u16("Packet Identifier")?,
                duration: r.u32_if(flags & 1 != 0, "Sleep Duration")?,
                reason: r.optional_reason()?,
            }
        }
        T::Advertise => Packet::Advertise {
            gw_id: r.u8("Gateway Identifier")?,
            duration: r.u16("Duration")?,
        },
        T::SearchGw => Packet::SearchGw {
            network_info: r.rest_bytes(),
        },
        T::GwInfo => Packet::GwInfo {
            gw_id: r.u8("Gateway Identifier")?,
            gw_address: r.rest_bytes(),
        },
        T::ForwarderEncapsulation => {
            // The Length equals the datagram: the form with a CAI length.
            let n = r.u8("Client Addressing Information Length")?;
            let client_addressing =
                Bytes::copy_from_slice(r.take(usize::from(n), "Client Addressing Information")?);
            let inner = decode_inner(r.rest(), r.packet_type)?;
            Packet::Forwarder(Forwarder {
                form: ForwarderForm::WholeLength,
                client_addressing,
                inner: Box::new(inner),
            })
        }
        T::ConnectionEncapsulation => {
            let n = r.u16("Client Identifier Length")?;
            let client_id = r.str(usize::from(n), "Client Identifier")?;
            let inner = decode_inner(r.rest(), r.packet_type)?;
            Packet::Connection {
                client_id,
                inner: Box::new(inner),
            }
        }
        T::ProtectionEncapsulation => Packet::Protection(Box::new(decode_protection(r)?)),
    })
}

fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let flags = r.flags("Connect Flags", 0b1000_0000)?;
    let will_flags = if flags & CONNECT_WILL != 0 {
        let wf = r.flags("Will Flags", 0b1110_0000)?;
        let qos = QoS::from_bits(wf >> 2).ok_or(DecodeError::ReservedQoS {
            packet_type: r.packet_type,
        })?;
        r.check_topic_type(wf)?;
        Some((wf, qos))
    } else {
        None
    };
    let packet_id = r.u16("Packet Identifier")?;
    let version = r.u8("Protocol Version")?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedProtocolVersion { packet_id, version });
    }
    let keep_alive = r.u16("Keep Alive")?;
    let max_packet_size = r.u16("Maximum Packet Size")?;
    let default_awake_messages = if flags & CONNECT_DAM != 0 {
        Some(r.u8("Default Awake Messages")?)
    } else {
        None
    };
    let session_expiry = r.u32_if(
        flags & CONNECT_SESSION_EXPIRY != 0,
        "Session Expiry Interval",
    )?;
    let will = match will_flags {
        Some((wf, qos)) => {
            let topic = r.publish_topic(wf)?;
            let n = r.u16("Will Payload Length")?;
            Some(Will {
                qos,
                retain: wf & FLAG_RETAIN != 0,
                topic,
                payload: Bytes::copy_from_slice(r.take(usize::from(n), "Will Payload")?),
            })
        }
        None => None,
    };
    let auth = if flags & CONNECT_AUTH != 0 {
        Some(r.auth_data()?)
    } else {
        None
    };
    Ok(Connect {
        clean_start: flags & CONNECT_CLEAN_START != 0,
        allow_address_change: flags & CONNECT_ADDRESS_CHANGE != 0,
        allow_server_suggested: flags & CONNECT_SERVER_SUGGESTED != 0,
        packet_id,
        keep_alive,
        max_packet_size,
        default_awake_messages,
        session_expiry,
        will,
        auth,
        client_id: r.rest_str("Client Identifier")?,
    })
}

fn decode_connack(r: &mut Reader<'_>) -> Result<ConnAck, DecodeError> {
    let flags = r.flags("CONNACK Flags", 0b1111_0000)?;
    Ok(ConnAck {
        session_present: flags & 0b0001 != 0,
        packet_id: r.u16("Packet Identifier")?,
        reason: r.reason()?,
        session_expiry: r.u32_if(flags & 0b0010 != 0, "Session Expiry Interval")?,
        server_keep_alive: r.u16_if(flags & 0b0100 != 0, "Server Keep Alive")?,
        auth: if flags & 0b1000 != 0 {
            Some(r.auth_data()?)
        } else {
            None
        },
        assigned_client_id: r.rest_str("Assigned Client Identifier")?,
    })
}

fn decode_publish(r: &mut Reader<'_>) -> Result<Publish, DecodeError> {
    let flags = r.flags("PUBLISH Flags", 0b0000_1100)?;
    let qos = QoS::from_bits(flags >> QOS_SHIFT).ok_or(DecodeError::ReservedQoS {
        packet_type: r.packet_type,
    })?;
    let dup = flags & FLAG_DUP != 0;
    let delivery = match qos {
        QoS::AtMostOnce | QoS::AtLeastOnce if dup => {
            return Err(DecodeError::DupBelowQoS2 { qos: qos.bits() });
        }
        QoS::AtMostOnce => Delivery::AtMostOnce,
        QoS::AtLeastOnce => Delivery::AtLeastOnce {
            packet_id: r.u16("Packet Identifier")?,
        },
        QoS::ExactlyOnce => Delivery::ExactlyOnce {
            packet_id: r.u16("Packet Identifier")?,
            dup,
        },
    };
    Ok(Publish {
        delivery,
        retain: flags & FLAG_RETAIN != 0,
        topic: r.publish_topic(flags)?,
        payload: r.rest_bytes(),
    })
}

/// The nominal tag size in bytes of a protection scheme (Figure 3-29), for
/// the schemes the draft defines.
pub(crate) fn nominal_tag_len(scheme: u8) -> Option<usize> {
    match scheme {
        0x00 | 0x01 => Some(32),
        0x02..=0x04 => Some(16),
        0x40..=0x42 => Some(8),
        0x43..=0x49 => Some(16),
        _ => None,
    }
}

/// The tag length a protection envelope declares: `Ok(None)` when it is not
/// written in the flags (provider-defined).
pub(crate) fn declared_tag_len(tag_code: u8, scheme: u8) -> Result<Option<usize>, DecodeError> {
    match tag_code {
        0 => Ok(None),
        1 => Ok(nominal_tag_len(scheme)),
        2 | 3 => Err(DecodeError::ReservedProtectionCode {
            field: "Authentication Tag Length",
        }),
        n => Ok(Some(usize::from(n) * 2)),
    }
}

/// Crypto Material Length code → bytes (§3.17.2.2).
pub(crate) fn crypto_len(code: u8) -> usize {
    match code & 0b11 {
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 12,
    }
}

fn decode_protection(r: &mut Reader<'_>) -> Result<Protection, DecodeError> {
    let flags = r.u8("Protection Flags")?;
    let tag_length_code = flags >> 4;
    let scheme = r.u8("Protection Scheme")?;
    let tag_len = declared_tag_len(tag_length_code, scheme)?;
    let sender_id = r.array::<8>("Sender Identifier")?;
    let random = r.array::<4>("Random")?;
    let crypto_material =
        Bytes::copy_from_slice(r.take(crypto_len(flags >> 2), "Cryptographic Material")?);
    let counter = match flags & 0b11 {
        0 => MonotonicCounter::Absent,
        1 => MonotonicCounter::U16(r.u16("Monotonic Counter")?),
        2 => MonotonicCounter::U32(r.u32("Monotonic Counter")?),
        _ => {
            return Err(DecodeError::ReservedProtectionCode {
                field: "Monotonic Counter Length",
            });
        }
    };
    let rest = r.rest();
    let split = match tag_len {
        Some(t) => rest.len().checked_sub(t),
        // The tag's size is not in the flags: an authentication-only scheme
        // leaves the protected packet in clear, with its own Length.
        None => match parse_length(rest) {
            Ok(Some(l)) if l.total <= rest.len() => Some(l.total),
            _ => return Err(DecodeError::UndeterminedTagLength),
        },
    };
    let (protected, tag) = match split {
        Some(at) if at >= 2 => rest.split_at(at),
        _ => {
            return Err(DecodeError::Truncated {
                packet_type: r.packet_type,
                field: "Protected Packet",
            });
        }
    };
    Ok(Protection {
        tag_length_code,
        scheme,
        sender_id,
        random,
        crypto_material,
        counter,
        protected: Bytes::copy_from_slice(protected),
        tag: Bytes::copy_from_slice(tag),
    })
}

pub(crate) const FLAG_DUP: u8 = 0x80;
pub(crate) const QOS_SHIFT: u8 = 5;
pub(crate) const FLAG_RETAIN: u8 = 0x10;
pub(crate) const CONNECT_CLEAN_START: u8 = 0x01;
pub(crate) const CONNECT_WILL: u8 = 0x02;
pub(crate) const CONNECT_AUTH: u8 = 0x04;
pub(crate) const CONNECT_SESSION_EXPIRY: u8 = 0x08;
pub(crate) const CONNECT_DAM: u8 = 0x10;
pub(crate) const CONNECT_ADDRESS_CHANGE: u8 = 0x20;
pub(crate) const CONNECT_SERVER_SUGGESTED: u8 = 0x40;

/// A bounds-checked cursor over a packet's variable part.
struct Reader<'a> {
    packet_type: PacketType,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(packet_type: PacketType, buf: &'a [u8]) -> Self {
        Reader { packet_type, buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                packet_type: self.packet_type,
                field,
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let Some((head, tail)) = self.buf.split_first_chunk::<N>() else {
            return Err(DecodeError::Truncated {
                packet_type: self.packet_type,
                field,
            });
        };
        self.buf = tail;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let [b] = self.array(field)?;
        Ok(b)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u16_if(&mut self, present: bool, field: &'static str) -> Result<Option<u16>, DecodeError> {
        if present {
            self.u16(field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn u32_if(&mut self, present: bool, field: &'static str) -> Result<Option<u32>, DecodeError> {
        if present {
            self.u32(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A flags byte whose `reserved` bits must be 0.
    fn flags(&mut self, field: &'static str, reserved: u8) -> Result<u8, DecodeError> {
        let value = self.u8(field)?;
        if value & reserved != 0 {
            return Err(DecodeError::ReservedBits {
                packet_type: self.packet_type,
                field,
                value,
            });
        }
        Ok(value)
    }

    fn reason(&mut self) -> Result<ReasonCode, DecodeError> {
        Ok(ReasonCode(self.u8("Reason Code")?))
    }

    /// A trailing optional Reason Code: present iff one byte is left.
    fn optional_reason(&mut self) -> Result<Option<ReasonCode>, DecodeError> {
        if self.is_empty() {
            Ok(None)
        } else {
            self.reason().map(Some)
        }
    }

    fn ack(&mut self) -> Result<Ack, DecodeError> {
        Ok(Ack {
            packet_id: self.u16("Packet Identifier")?,
            reason: self.optional_reason()?,
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    fn rest_bytes(&mut self) -> Bytes {
        Bytes::copy_from_slice(self.rest())
    }

    fn string(&self, bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
        match core::str::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => Ok(s.to_owned()),
            _ => Err(DecodeError::InvalidString {
                packet_type: self.packet_type,
                field,
            }),
        }
    }

    fn str(&mut self, n: usize, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.take(n, field)?;
        self.string(bytes, field)
    }

    fn rest_str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = self.rest();
        self.string(rest, field)
    }

    /// Method (1-byte length) and data (2-byte length), as in CONNECT/CONNACK.
    fn auth_data(&mut self) -> Result<AuthData, DecodeError> {
        let n = self.u8("Authentication Method Length")?;
        let method = self.str(usize::from(n), "Authentication Method")?;
        let n = self.u16("Authentication Data Length")?;
        let data = Bytes::copy_from_slice(self.take(usize::from(n), "Authentication Data")?);
        Ok(AuthData { method, data })
    }

    /// Refuses the reserved topic type `10`.
    fn check_topic_type(&self, flags: u8) -> Result<u8, DecodeError> {
        let bits = flags & 0b11;
        if bits == TOPIC_TYPE_RESERVED {
            return Err(DecodeError::TopicTypeNotAllowed {
                packet_type: self.packet_type,
                bits,
            });
        }
        Ok(bits)
    }

    /// PUBLISH, PUBWOS, will: an alias, or a 2-byte length and the name.
    fn publish_topic(&mut self, flags: u8) -> Result<Topic, DecodeError> {
        let bits = self.check_topic_type(flags)?;
        let field = self.u16("Topic Alias or Topic Name Length")?;
        Ok(match bits {
            TOPIC_TYPE_SESSION => Topic::SessionAlias(field),
            TOPIC_TYPE_PREDEFINED => Topic::PredefinedAlias(field),
            _ => Topic::Name(self.str(usize::from(field), "Topic Name")?),
        })
    }

    /// SUBSCRIBE, UNSUBSCRIBE: an alias, or the filter to the end.
    fn filter_topic(&mut self, flags: u8) -> Result<Topic, DecodeError> {
        Ok(match self.check_topic_type(flags)? {
            TOPIC_TYPE_SESSION => Topic::SessionAlias(self.u16("Topic Alias")?),
            TOPIC_TYPE_PREDEFINED => Topic::PredefinedAlias(self.u16("Topic Alias")?),
            _ => Topic::Name(self.rest_str("Topic Filter")?),
        })
    }

    /// REGACK, SUBACK: only the two alias kinds.
    fn alias_kind(&self, flags: u8) -> Result<AliasKind, DecodeError> {
        match flags & 0b11 {
            TOPIC_TYPE_SESSION => Ok(AliasKind::Session),
            TOPIC_TYPE_PREDEFINED => Ok(AliasKind::Predefined),
            bits => Err(DecodeError::TopicTypeNotAllowed {
                packet_type: self.packet_type,
                bits,
            }),
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet_type: self.packet_type,
                extra: self.buf.len(),
            })
        }
    }
}
