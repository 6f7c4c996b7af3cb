//! Encoding a [`Packet`] into bytes. The Length field takes the 1-byte form iff
//! the whole message is at most 255 bytes (trap T-8); flag bits a message does not
//! use are written as 0.

use alloc::string::String;
use bytes::{BufMut, BytesMut};
use thiserror::Error;

use super::decode::{FLAG_CLEAN_SESSION, FLAG_DUP, FLAG_RETAIN, FLAG_WILL, QOS_SHIFT};
use super::header::{MAX_MESSAGE_LEN, total_len_for, write_length};
use super::packet::Packet;
use super::types::{MsgType, QoS, SubscribeTopic, TopicIdType, TopicRef, WillTopic};

/// Why a packet cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The message would exceed the 65535 bytes the Length field can describe.
    #[error("{msg_type} would be {len} bytes, more than the maximum 65535")]
    TooLong {
        /// The message type.
        msg_type: MsgType,
        /// The length it would have.
        len: usize,
    },
    /// A name in the QoS −1 named PUBLISH is longer than its 16-bit length field.
    #[error("topic name of {0} bytes does not fit the 16-bit length field")]
    TopicNameTooLong(usize),
    /// An encapsulation wrapping another encapsulation.
    #[error("encapsulations do not nest")]
    NestedEncapsulation,
    /// A QoS −1 PUBLISH with a normal topic id: v1.2 allows only pre-defined
    /// ids and short names, and on the wire the bits would read as Paho's
    /// named form (trap T-14). Use `PublishNamedMinusOne` for a full name.
    #[error("a QoS -1 PUBLISH needs a pre-defined id or a short name, not a normal topic id")]
    QosMinusOneWithNormalId,
    /// A PINGREQ with an empty client id: the empty field is the form without
    /// a client id, so it would decode as `None`.
    #[error("a PINGREQ client id, when present, must not be empty")]
    EmptyPingClientId,
}

/// Appends the encoding of `packet` to `out`. On error nothing is appended.
pub fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), EncodeError> {
    // Every check happens here, before anything is written.
    let total = encoded_len(packet)?;
    out.reserve(total);
    if let Packet::Encapsulated {
        radius,
        node_id,
        inner,
    } = packet
    {
        // The wrapper's Length covers only the wrapper: type, Ctrl, node id.
        write_length(total_len_for(2 + node_id.len()), out);
        out.put_u8(MsgType::Encapsulated.code());
        out.put_u8(radius & 0b11);
        out.put_slice(node_id);
        let inner_total = total - total_len_for(2 + node_id.len());
        write_length(inner_total, out);
        out.put_u8(inner.msg_type().code());
        write_variable(inner, out);
        return Ok(());
    }
    write_length(total, out);
    out.put_u8(packet.msg_type().code());
    write_variable(packet, out);
    Ok(())
}

/// The encoded size of `packet`, Length field included; the same checks as
/// [`encode`], so it fails exactly when `encode` does.
pub fn encoded_len(packet: &Packet) -> Result<usize, EncodeError> {
    if let Packet::Encapsulated { node_id, inner, .. } = packet {
        if matches!(**inner, Packet::Encapsulated { .. }) {
            return Err(EncodeError::NestedEncapsulation);
        }
        let wrapper = total_len_for(2 + node_id.len());
        if wrapper > MAX_MESSAGE_LEN {
            return Err(EncodeError::TooLong {
                msg_type: MsgType::Encapsulated,
                len: wrapper,
            });
        }
        return Ok(wrapper + encoded_len(inner)?);
    }
    let total = total_len_for(1 + variable_len(packet)?);
    if total > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong {
            msg_type: packet.msg_type(),
            len: total,
        });
    }
    Ok(total)
}

/// Bytes after the MsgType byte.
fn variable_len(packet: &Packet) -> Result<usize, EncodeError> {
    Ok(match packet {
        Packet::Advertise { .. } => 3,
        Packet::SearchGw { .. } => 1,
        Packet::GwInfo { gw_addr, .. } => 1 + gw_addr.len(),
        Packet::Connect { client_id, .. } => 4 + client_id.len(),
        Packet::ConnAck { .. } | Packet::WillTopicResp { .. } | Packet::WillMsgResp { .. } => 1,
        Packet::WillTopicReq | Packet::WillMsgReq | Packet::PingResp => 0,
        Packet::WillTopic(will) | Packet::WillTopicUpd(will) => {
            will.as_ref().map_or(0, |w| 1 + w.topic.len())
        }
        Packet::WillMsg { payload } | Packet::WillMsgUpd { payload } => payload.len(),
        Packet::Register { topic_name, .. } => 4 + topic_name.len(),
        Packet::RegAck { .. } | Packet::PubAck { .. } => 5,
        Packet::Publish {
            qos: QoS::MinusOne,
            topic: TopicRef::Id(_),
            ..
        } => return Err(EncodeError::QosMinusOneWithNormalId),
        Packet::Publish { payload, .. } => 5 + payload.len(),
        Packet::PublishNamedMinusOne {
            topic_name,
            payload,
            ..
        } => {
            if topic_name.len() > usize::from(u16::MAX) {
                return Err(EncodeError::TopicNameTooLong(topic_name.len()));
            }
            5 + topic_name.len() + payload.len()
        }
        Packet::PubComp { .. }
        | Packet::PubRec { .. }
        | Packet::PubRel { .. }
        | Packet::UnsubAck { .. } => 2,
        Packet::Subscribe { topic, .. } => 3 + subscribe_topic_len(topic),
        Packet::Unsubscribe { topic, .. } => 3 + subscribe_topic_len(topic),
        Packet::SubAck { .. } => 6,
        Packet::PingReq {
            client_id: Some(id),
        } if id.is_empty() => return Err(EncodeError::EmptyPingClientId),
        Packet::PingReq { client_id } => client_id.as_ref().map_or(0, String::len),
        Packet::Disconnect { duration } => duration.map_or(0, |_| 2),
        Packet::Encapsulated { .. } => return Err(EncodeError::NestedEncapsulation),
    })
}

fn subscribe_topic_len(topic: &SubscribeTopic) -> usize {
    match topic {
        SubscribeTopic::Name(name) => name.len(),
        SubscribeTopic::Predefined(_) | SubscribeTopic::Short(_) => 2,
    }
}

fn qos_bits(qos: QoS) -> u8 {
    qos.bits() << QOS_SHIFT
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn write_variable(packet: &Packet, out: &mut BytesMut) {
    match packet {
        Packet::Advertise { gw_id, duration } => {
            out.put_u8(*gw_id);
            out.put_u16(*duration);
        }
        Packet::SearchGw { radius } => out.put_u8(*radius),
        Packet::GwInfo { gw_id, gw_addr } => {
            out.put_u8(*gw_id);
            out.put_slice(gw_addr);
        }
        Packet::Connect {
            will,
            clean_session,
            protocol_id,
            duration,
            client_id,
        } => {
            out.put_u8(flag(*will, FLAG_WILL) | flag(*clean_session, FLAG_CLEAN_SESSION));
            out.put_u8(*protocol_id);
            out.put_u16(*duration);
            out.put_slice(client_id.as_bytes());
        }
        Packet::ConnAck { return_code }
        | Packet::WillTopicResp { return_code }
        | Packet::WillMsgResp { return_code } => out.put_u8(return_code.code()),
        Packet::WillTopicReq | Packet::WillMsgReq | Packet::PingResp => {}
        Packet::WillTopic(will) | Packet::WillTopicUpd(will) => write_will_topic(will, out),
        Packet::WillMsg { payload } | Packet::WillMsgUpd { payload } => out.put_slice(payload),
        Packet::Register {
            topic_id,
            msg_id,
            topic_name,
        } => {
            out.put_u16(*topic_id);
            out.put_u16(*msg_id);
            out.put_slice(topic_name.as_bytes());
        }
        Packet::RegAck {
            topic_id,
            msg_id,
            return_code,
        }
        | Packet::PubAck {
            topic_id,
            msg_id,
            return_code,
        } => {
            out.put_u16(*topic_id);
            out.put_u16(*msg_id);
            out.put_u8(return_code.code());
        }
        Packet::Publish {
            dup,
            qos,
            retain,
            topic,
            msg_id,
            payload,
        } => {
            out.put_u8(
                flag(*dup, FLAG_DUP)
                    | qos_bits(*qos)
                    | flag(*retain, FLAG_RETAIN)
                    | topic.id_type().bits(),
            );
            out.put_u16(topic.raw());
            out.put_u16(*msg_id);
            out.put_slice(payload);
        }
        Packet::PublishNamedMinusOne {
            dup,
            retain,
            msg_id,
            topic_name,
            payload,
        } => {
            out.put_u8(
                flag(*dup, FLAG_DUP)
                    | qos_bits(QoS::MinusOne)
                    | flag(*retain, FLAG_RETAIN)
                    | TopicIdType::Normal.bits(),
            );
            // Length checked by variable_len.
            out.put_u16(topic_name.len() as u16);
            out.put_u16(*msg_id);
            out.put_slice(topic_name.as_bytes());
            out.put_slice(payload);
        }
        Packet::PubComp { msg_id }
        | Packet::PubRec { msg_id }
        | Packet::PubRel { msg_id }
        | Packet::UnsubAck { msg_id } => out.put_u16(*msg_id),
        Packet::Subscribe {
            dup,
            qos,
            msg_id,
            topic,
        } => {
            out.put_u8(flag(*dup, FLAG_DUP) | qos_bits(*qos) | topic.id_type().bits());
            out.put_u16(*msg_id);
            write_subscribe_topic(topic, out);
        }
        Packet::Unsubscribe { msg_id, topic } => {
            out.put_u8(topic.id_type().bits());
            out.put_u16(*msg_id);
            write_subscribe_topic(topic, out);
        }
        Packet::SubAck {
            qos,
            topic_id,
            msg_id,
            return_code,
        } => {
            out.put_u8(qos_bits(*qos));
            out.put_u16(*topic_id);
            out.put_u16(*msg_id);
            out.put_u8(return_code.code());
        }
        Packet::PingReq { client_id } => {
            if let Some(id) = client_id {
                out.put_slice(id.as_bytes());
            }
        }
        Packet::Disconnect { duration } => {
            if let Some(d) = duration {
                out.put_u16(*d);
            }
        }
        // Rejected by variable_len before anything is written.
        Packet::Encapsulated { .. } => {}
    }
}

fn write_will_topic(will: &Option<WillTopic>, out: &mut BytesMut) {
    if let Some(w) = will {
        out.put_u8(qos_bits(w.qos) | flag(w.retain, FLAG_RETAIN));
        out.put_slice(w.topic.as_bytes());
    }
}

fn write_subscribe_topic(topic: &SubscribeTopic, out: &mut BytesMut) {
    match topic {
        SubscribeTopic::Name(name) => out.put_slice(name.as_bytes()),
        SubscribeTopic::Predefined(id) => out.put_u16(*id),
        SubscribeTopic::Short(s) => out.put_slice(s),
    }
}
