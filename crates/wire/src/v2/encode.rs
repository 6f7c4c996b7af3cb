//! Encoding a [`Packet`] into bytes. The Length field takes the 1-byte form
//! iff the whole packet is at most 255 bytes (§2.1.2: "more efficient");
//! reserved flag bits are written as 0; optional fields are written iff the
//! packet holds them, so `decode(encode(p)) == p` for every packet `encode`
//! accepts (the property tests check it).

use alloc::{string::String, vec::Vec};
use bytes::{BufMut, BytesMut};
use thiserror::Error;

use super::decode::{
    CONNECT_ADDRESS_CHANGE, CONNECT_AUTH, CONNECT_CLEAN_START, CONNECT_DAM,
    CONNECT_SERVER_SUGGESTED, CONNECT_SESSION_EXPIRY, CONNECT_WILL, FLAG_DUP, FLAG_RETAIN,
    QOS_SHIFT, declared_tag_len,
};
use super::packet::{
    AuthData, ConnAck, Connect, Delivery, ForwarderForm, MonotonicCounter, Packet, Protection,
};
use super::types::{PacketType, ReasonCode, Topic};
use crate::v1::header::{MAX_MESSAGE_LEN, parse_length, total_len_for, write_length};

/// Why a packet cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The packet would exceed the 65535 bytes the Length field can describe.
    #[error("{packet_type} would be {len} bytes, more than the maximum 65535")]
    TooLong {
        /// The packet type.
        packet_type: PacketType,
        /// The length it would have.
        len: usize,
    },
    /// A field is longer than its length field can say.
    #[error("{packet_type} field {field} of {len} bytes exceeds its maximum {max}")]
    FieldTooLong {
        /// The packet type.
        packet_type: PacketType,
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most its length field can hold.
        max: usize,
    },
    /// A PUBWOS with a session alias: there is no session (§3.6.1.2.1).
    #[error("a PUBWOS cannot use a session topic alias")]
    PubWosSessionAlias,
    /// An envelope inside an envelope that may not hold it.
    #[error("{outer} cannot wrap {inner}")]
    NestedEnvelope {
        /// The envelope.
        outer: PacketType,
        /// What it wraps.
        inner: PacketType,
    },
    /// Cryptographic material must be 0, 2, 4 or 12 bytes (§3.17.2.2).
    #[error("cryptographic material of {0} bytes; only 0, 2, 4 or 12 fit the flags")]
    CryptoMaterialLength(usize),
    /// Tag length code 2 or 3 (reserved), or above 15.
    #[error("authentication tag length code {0} is reserved or out of range")]
    TagLengthCode(u8),
    /// The tag's length disagrees with the tag length code and scheme.
    #[error("authentication tag of {actual} bytes, the flags say {expected}")]
    TagLength {
        /// What the flags declare.
        expected: usize,
        /// What the packet holds.
        actual: usize,
    },
    /// The protected packet must carry its own Length when the tag length is
    /// not in the flags, or a receiver could not find the tag.
    #[error("protected packet does not delimit itself, and the tag length is not in the flags")]
    ProtectedNotDelimited,
}

/// Appends the encoding of `packet` to `out`. On error nothing is appended.
pub fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), EncodeError> {
    let bytes = to_vec(packet, None)?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// The encoded size of `packet`, Length field included; fails exactly when
/// [`encode`] does.
pub fn encoded_len(packet: &Packet) -> Result<usize, EncodeError> {
    to_vec(packet, None).map(|v| v.len())
}

fn to_vec(packet: &Packet, outer: Option<PacketType>) -> Result<Vec<u8>, EncodeError> {
    let packet_type = packet.packet_type();
    if let Some(outer) = outer {
        let allowed = match outer {
            PacketType::ForwarderEncapsulation => packet_type != PacketType::ForwarderEncapsulation,
            _ => !packet_type.is_envelope(),
        };
        if !allowed {
            return Err(EncodeError::NestedEnvelope {
                outer,
                inner: packet_type,
            });
        }
    }
    let mut body = BytesMut::new();
    if let Packet::Forwarder(f) = packet {
        let inner = to_vec(&f.inner, Some(packet_type))?;
        if f.form == ForwarderForm::WrapperLength {
            // §3.19 as stored: the Length covers type and addressing only.
            let wrapper_len = total_len_for(1 + f.client_addressing.len());
            if wrapper_len > MAX_MESSAGE_LEN {
                return Err(EncodeError::TooLong {
                    packet_type,
                    len: wrapper_len,
                });
            }
            let mut out = BytesMut::with_capacity(wrapper_len + inner.len());
            write_length(wrapper_len, &mut out);
            out.put_u8(packet_type.code());
            out.put_slice(&f.client_addressing);
            out.put_slice(&inner);
            return Ok(out.to_vec());
        }
        let n = len_u8(
            packet_type,
            "Client Addressing Information",
            f.client_addressing.len(),
        )?;
        body.put_u8(n);
        body.put_slice(&f.client_addressing);
        body.put_slice(&inner);
    } else if let Packet::Connection { client_id, inner } = packet {
        let inner = to_vec(inner, Some(packet_type))?;
        put_str16(&mut body, packet_type, "Client Identifier", client_id)?;
        body.put_slice(&inner);
    } else {
        write_body(packet, &mut body)?;
    }
    let total = total_len_for(1 + body.len());
    if total > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong {
            packet_type,
            len: total,
        });
    }
    let mut out = BytesMut::with_capacity(total);
    write_length(total, &mut out);
    out.put_u8(packet_type.code());
    out.put_slice(&body);
    Ok(out.to_vec())
}

fn write_body(packet: &Packet, b: &mut BytesMut) -> Result<(), EncodeError> {
    let packet_type = packet.packet_type();
    match packet {
        Packet::Connect(c) => write_connect(c, b)?,
        Packet::ConnAck(c) => write_connack(c, b)?,
        Packet::Auth(a) => {
            b.put_u16(a.packet_id);
            b.put_u8(a.reason.0);
            let n = len_u8(packet_type, "Authentication Method", a.method.len())?;
            b.put_u8(n);
            b.put_slice(a.method.as_bytes());
            b.put_slice(&a.data);
        }
        Packet::Register(r) => {
            b.put_u8(u8::from(r.alias.is_some()));
            b.put_u16(r.packet_id);
            if let Some(alias) = r.alias {
                b.put_u16(alias);
            }
            b.put_slice(r.topic_name.as_bytes());
        }
        Packet::RegAck(r) => {
            b.put_u8(r.alias_kind.type_bits() | if r.alias.is_some() { 0b100 } else { 0 });
            b.put_u16(r.packet_id);
            if let Some(alias) = r.alias {
                b.put_u16(alias);
            }
            put_reason(b, r.reason);
        }
        Packet::PubWos(p) => {
            if matches!(p.topic, Topic::SessionAlias(_)) {
                return Err(EncodeError::PubWosSessionAlias);
            }
            b.put_u8(retain_bit(p.retain) | p.topic.type_bits());
            put_publish_topic(b, packet_type, &p.topic)?;
            b.put_slice(&p.payload);
        }
        Packet::Publish(p) => {
            let dup = matches!(p.delivery, Delivery::ExactlyOnce { dup: true, .. });
            b.put_u8(
                if dup { FLAG_DUP } else { 0 }
                    | p.delivery.qos().bits() << QOS_SHIFT
                    | retain_bit(p.retain)
                    | p.topic.type_bits(),
            );
            if let Some(id) = p.delivery.packet_id() {
                b.put_u16(id);
            }
            put_publish_topic(b, packet_type, &p.topic)?;
            b.put_slice(&p.payload);
        }
        Packet::PubAck(a)
        | Packet::PubRec(a)
        | Packet::PubRel(a)
        | Packet::PubComp(a)
        | Packet::UnsubAck(a) => {
            b.put_u16(a.packet_id);
            put_reason(b, a.reason);
        }
        Packet::Subscribe(s) => {
            let o = s.options;
            b.put_u8(
                if o.no_local { 0x80 } else { 0 }
                    | o.max_qos.bits() << QOS_SHIFT
                    | retain_bit(o.retain_as_published)
                    | (o.retain_handling as u8) << 2
                    | s.topic.type_bits(),
            );
            b.put_u16(s.packet_id);
            put_filter_topic(b, &s.topic);
        }
        Packet::SubAck(s) => {
            b.put_u8(s.alias_kind.type_bits() | if s.alias.is_some() { 0b100 } else { 0 });
            b.put_u16(s.packet_id);
            if let Some(alias) = s.alias {
                b.put_u16(alias);
            }
            put_reason(b, s.reason);
        }
        Packet::Unsubscribe(u) => {
            b.put_u8(u.topic.type_bits());
            b.put_u16(u.packet_id);
            put_filter_topic(b, &u.topic);
        }
        Packet::PingReq { packet_id } => b.put_u16(*packet_id),
        Packet::PingResp {
            packet_id,
            messages_remaining,
        } => {
            b.put_u16(*packet_id);
            if let Some(n) = messages_remaining {
                b.put_u8(*n);
            }
        }
        Packet::Disconnect(d) => {
            b.put_u8(
                u8::from(d.packet_id.is_some())
                    | u8::from(d.session_expiry.is_some()) << 1
                    | u8::from(d.reason.is_some()) << 2,
            );
            if let Some(id) = d.packet_id {
                b.put_u16(id);
            }
            put_reason(b, d.reason);
            if let Some(sei) = d.session_expiry {
                b.put_u32(sei);
            }
            b.put_slice(d.reason_string.as_bytes());
        }
        Packet::WakeUp => {}
        Packet::SleepReq {
            retain_aliases,
            packet_id,
            duration,
        } => {
            b.put_u8(u8::from(*retain_aliases));
            b.put_u16(*packet_id);
            b.put_u32(*duration);
        }
        Packet::SleepResp {
            packet_id,
            duration,
            reason,
        } => {
            b.put_u8(u8::from(duration.is_some()));
            b.put_u16(*packet_id);
            if let Some(d) = duration {
                b.put_u32(*d);
            }
            put_reason(b, *reason);
        }
        Packet::Advertise { gw_id, duration } => {
            b.put_u8(*gw_id);
            b.put_u16(*duration);
        }
        Packet::SearchGw { network_info } => b.put_slice(network_info),
        Packet::GwInfo { gw_id, gw_address } => {
            b.put_u8(*gw_id);
            b.put_slice(gw_address);
        }
        Packet::Protection(p) => write_protection(p, b)?,
        // The envelopes that wrap a decoded packet are written by `to_vec`.
        Packet::Forwarder(_) | Packet::Connection { .. } => {}
    }
    Ok(())
}

fn write_connect(c: &Connect, b: &mut BytesMut) -> Result<(), EncodeError> {
    let t = PacketType::Connect;
    b.put_u8(
        flag(c.clean_start, CONNECT_CLEAN_START)
            | flag(c.will.is_some(), CONNECT_WILL)
            | flag(c.auth.is_some(), CONNECT_AUTH)
            | flag(c.session_expiry.is_some(), CONNECT_SESSION_EXPIRY)
            | flag(c.default_awake_messages.is_some(), CONNECT_DAM)
            | flag(c.allow_address_change, CONNECT_ADDRESS_CHANGE)
            | flag(c.allow_server_suggested, CONNECT_SERVER_SUGGESTED),
    );
    if let Some(w) = &c.will {
        b.put_u8(retain_bit(w.retain) | w.qos.bits() << 2 | w.topic.type_bits());
    }
    b.put_u16(c.packet_id);
    b.put_u8(super::decode::PROTOCOL_VERSION);
    b.put_u16(c.keep_alive);
    b.put_u16(c.max_packet_size);
    if let Some(dam) = c.default_awake_messages {
        b.put_u8(dam);
    }
    if let Some(sei) = c.session_expiry {
        b.put_u32(sei);
    }
    if let Some(w) = &c.will {
        put_publish_topic(b, t, &w.topic)?;
        put_bytes16(b, t, "Will Payload", &w.payload)?;
    }
    if let Some(auth) = &c.auth {
        put_auth_data(b, t, auth)?;
    }
    b.put_slice(c.client_id.as_bytes());
    Ok(())
}

fn write_connack(c: &ConnAck, b: &mut BytesMut) -> Result<(), EncodeError> {
    b.put_u8(
        u8::from(c.session_present)
            | u8::from(c.session_expiry.is_some()) << 1
            | u8::from(c.server_keep_alive.is_some()) << 2
            | u8::from(c.auth.is_some()) << 3,
    );
    b.put_u16(c.packet_id);
    b.put_u8(c.reason.0);
    if let Some(sei) = c.session_expiry {
        b.put_u32(sei);
    }
    if let Some(ka) = c.server_keep_alive {
        b.put_u16(ka);
    }
    if let Some(auth) = &c.auth {
        put_auth_data(b, PacketType::ConnAck, auth)?;
    }
    b.put_slice(c.assigned_client_id.as_bytes());
    Ok(())
}

fn write_protection(p: &Protection, b: &mut BytesMut) -> Result<(), EncodeError> {
    let crypto_code = match p.crypto_material.len() {
        0 => 0,
        2 => 1,
        4 => 2,
        12 => 3,
        n => return Err(EncodeError::CryptoMaterialLength(n)),
    };
    if p.tag_length_code > 15 {
        return Err(EncodeError::TagLengthCode(p.tag_length_code));
    }
    match declared_tag_len(p.tag_length_code, p.scheme) {
        Err(_) => return Err(EncodeError::TagLengthCode(p.tag_length_code)),
        Ok(Some(expected)) if expected != p.tag.len() => {
            return Err(EncodeError::TagLength {
                expected,
                actual: p.tag.len(),
            });
        }
        Ok(Some(_)) if p.protected.len() < 2 => return Err(EncodeError::ProtectedNotDelimited),
        Ok(Some(_)) => {}
        Ok(None) => match parse_length(&p.protected) {
            Ok(Some(l)) if l.total == p.protected.len() && l.total >= 2 => {}
            _ => return Err(EncodeError::ProtectedNotDelimited),
        },
    }
    let counter_code = match p.counter {
        MonotonicCounter::Absent => 0,
        MonotonicCounter::U16(_) => 1,
        MonotonicCounter::U32(_) => 2,
    };
    b.put_u8(p.tag_length_code << 4 | crypto_code << 2 | counter_code);
    b.put_u8(p.scheme);
    b.put_slice(&p.sender_id);
    b.put_slice(&p.random);
    b.put_slice(&p.crypto_material);
    match p.counter {
        MonotonicCounter::Absent => {}
        MonotonicCounter::U16(c) => b.put_u16(c),
        MonotonicCounter::U32(c) => b.put_u32(c),
    }
    b.put_slice(&p.protected);
    b.put_slice(&p.tag);
    Ok(())
}

fn flag(on: bool, bit: u8) -> u8 {
    if on { bit } else { 0 }
}

fn retain_bit(retain: bool) -> u8 {
    flag(retain, FLAG_RETAIN)
}

fn put_reason(b: &mut BytesMut, reason: Option<ReasonCode>) {
    if let Some(rc) = reason {
        b.put_u8(rc.0);
    }
}

fn len_u8(packet_type: PacketType, field: &'static str, len: usize) -> Result<u8, EncodeError> {
    u8::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        packet_type,
        field,
        len,
        max: usize::from(u8::MAX),
    })
}

fn len_u16(packet_type: PacketType, field: &'static str, len: usize) -> Result<u16, EncodeError> {
    u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        packet_type,
        field,
        len,
        max: usize::from(u16::MAX),
    })
}

fn put_bytes16(
    b: &mut BytesMut,
    packet_type: PacketType,
    field: &'static str,
    bytes: &[u8],
) -> Result<(), EncodeError> {
    b.put_u16(len_u16(packet_type, field, bytes.len())?);
    b.put_slice(bytes);
    Ok(())
}

fn put_str16(
    b: &mut BytesMut,
    packet_type: PacketType,
    field: &'static str,
    s: &String,
) -> Result<(), EncodeError> {
    put_bytes16(b, packet_type, field, s.as_bytes())
}

fn put_auth_data(b: &mut BytesMut, t: PacketType, auth: &AuthData) -> Result<(), EncodeError> {
    b.put_u8(len_u8(t, "Authentication Method", auth.method.len())?);
    b.put_slice(auth.method.as_bytes());
    put_bytes16(b, t, "Authentication Data", &auth.data)
}

/// An alias, or a 2-byte length and the name (PUBLISH, PUBWOS, will).
fn put_publish_topic(b: &mut BytesMut, t: PacketType, topic: &Topic) -> Result<(), EncodeError> {
    match topic {
        Topic::SessionAlias(a) | Topic::PredefinedAlias(a) => b.put_u16(*a),
        Topic::Name(name) => put_str16(b, t, "Topic Name", name)?,
    }
    Ok(())
}

/// An alias, or the filter to the end (SUBSCRIBE, UNSUBSCRIBE).
fn put_filter_topic(b: &mut BytesMut, topic: &Topic) {
    match topic {
        Topic::SessionAlias(a) | Topic::PredefinedAlias(a) => b.put_u16(*a),
        Topic::Name(filter) => b.put_slice(filter.as_bytes()),
    }
}
