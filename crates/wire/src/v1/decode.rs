//! Decoding one MQTT-SN message from one datagram (or one frame of a serial
//! framing). Total over its input: every byte string yields a [`Packet`] or a
//! [`DecodeError`] naming what was wrong, never a panic, and never an allocation
//! larger than the input.
//!
//! Choices where v1.2 is silent (documented in `docs/protocol.md`):
//! - A Length field that disagrees with the datagram size is an error, whether
//!   the datagram is longer or shorter (no trailing bytes are ignored).
//! - Fixed-size messages with extra bytes are an error ([`DecodeError::TrailingBytes`]).
//! - The long Length form is accepted for any size (v2.0: receivers must).
//! - Unused flag bits are ignored (v1.2 §5.3.4).
//! - Topic names, client ids and will topics must be UTF-8; payloads are opaque.
//! - Encapsulations do not nest.

use alloc::{borrow::ToOwned, boxed::Box, string::String};
use bytes::Bytes;
use thiserror::Error;

use super::header::parse_length;
use super::packet::Packet;
use super::types::{MsgType, QoS, ReturnCode, SubscribeTopic, TopicIdType, TopicRef, WillTopic};

/// Why a byte string is not a valid MQTT-SN message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Nothing to decode.
    #[error("empty datagram")]
    Empty,
    /// The 1-byte Length field is 0.
    #[error("length field is 0")]
    ZeroLength,
    /// The 3-byte Length form declares fewer than 4 bytes (its own 3 plus MsgType).
    #[error("long-form length field declares {0} bytes, fewer than the minimum 4")]
    LongLengthTooSmall(u16),
    /// The input ends inside the Length field or before the MsgType byte.
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
    /// A reserved MsgType code (0x03, 0x11, 0x19, 0x1E–0xFD, 0xFF).
    #[error("reserved message type 0x{0:02x}")]
    ReservedMsgType(u8),
    /// A field runs past the end of the message.
    #[error("{msg_type} truncated: field {field} is missing or short")]
    Truncated {
        /// The message being decoded.
        msg_type: MsgType,
        /// The field that did not fit.
        field: &'static str,
    },
    /// A fixed-size message carries bytes after its last field.
    #[error("{msg_type} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The message being decoded.
        msg_type: MsgType,
        /// How many bytes were left over.
        extra: usize,
    },
    /// TopicIdType `11` where the message needs a topic.
    #[error("{msg_type} uses the reserved topic id type 0b11")]
    ReservedTopicIdType {
        /// The message being decoded.
        msg_type: MsgType,
        /// Its message id, so the engine can still answer with a return code.
        msg_id: u16,
    },
    /// A text field is not valid UTF-8.
    #[error("{msg_type} field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The message being decoded.
        msg_type: MsgType,
        /// The offending field.
        field: &'static str,
    },
    /// An encapsulated message that itself is an encapsulation.
    #[error("encapsulated message is itself an encapsulation")]
    NestedEncapsulation,
    /// The message inside a forwarder encapsulation is malformed.
    #[error("in encapsulated message: {0}")]
    InEncapsulation(Box<DecodeError>),
}

/// Decodes one complete message: `buf` must be exactly one datagram or frame.
pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
    decode_at_depth(buf, false)
}

fn decode_at_depth(buf: &[u8], inside_encapsulation: bool) -> Result<Packet, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Empty);
    }
    let length = parse_length(buf)?.ok_or(DecodeError::TruncatedHeader(buf.len()))?;
    let code = *buf
        .get(length.field_len)
        .ok_or(DecodeError::TruncatedHeader(buf.len()))?;
    let msg_type = MsgType::from_code(code).ok_or(DecodeError::ReservedMsgType(code))?;
    // parse_length guarantees total >= field_len + 1 (short form: total >= 2,
    // long form: total >= 4), so the body slices below start inside `buf`.
    let body_start = length.field_len + 1;

    if msg_type == MsgType::Encapsulated {
        if inside_encapsulation {
            return Err(DecodeError::NestedEncapsulation);
        }
        // The Length covers only the wrapper; the relayed message follows it.
        let wrapper = buf.get(..length.total).ok_or(DecodeError::LengthMismatch {
            declared: length.total,
            actual: buf.len(),
        })?;
        let mut r = Reader::new(msg_type, wrapper.get(body_start..).unwrap_or_default());
        let ctrl = r.u8("Ctrl")?;
        let node_id = r.rest_bytes();
        let inner = decode_at_depth(buf.get(length.total..).unwrap_or_default(), true).map_err(
            |e| match e {
                DecodeError::NestedEncapsulation => e,
                other => DecodeError::InEncapsulation(Box::new(other)),
            },
        )?;
        return Ok(Packet::Encapsulated {
            radius: ctrl & 0b11,
            node_id,
            inner: Box::new(inner),
        });
    }

    if length.total != buf.len() {
        return Err(DecodeError::LengthMismatch {
            declared: length.total,
            actual: buf.len(),
        });
    }
    let r = Reader::new(msg_type, buf.get(body_start..).unwrap_or_default());
    decode_body(msg_type, r)
}

fn decode_body(msg_type: MsgType, mut r: Reader<'_>) -> Result<Packet, DecodeError> {
    let packet = match msg_type {
        MsgType::Advertise => Packet::Advertise {
            gw_id: r.u8("GwId")?,
            duration: r.u16("Duration")?,
        },
        MsgType::SearchGw => Packet::SearchGw {
            radius: r.u8("Radius")?,
        },
        MsgType::GwInfo => Packet::GwInfo {
            gw_id: r.u8("GwId")?,
            gw_addr: r.rest_bytes(),
        },
        MsgType::Connect => {
            let flags = r.u8("Flags")?;
            Packet::Connect {
                will: flags & FLAG_WILL != 0,
                clean_session: flags & FLAG_CLEAN_SESSION != 0,
                protocol_id: r.u8("ProtocolId")?,
                duration: r.u16("Duration")?,
                client_id: r.rest_str("ClientId")?,
            }
        }
        MsgType::ConnAck => Packet::ConnAck {
            return_code: r.return_code()?,
        },
        MsgType::WillTopicReq => Packet::WillTopicReq,
        MsgType::WillTopic => Packet::WillTopic(r.will_topic()?),
        MsgType::WillMsgReq => Packet::WillMsgReq,
        MsgType::WillMsg => Packet::WillMsg {
            payload: r.rest_bytes(),
        },
        MsgType::Register => Packet::Register {
            topic_id: r.u16("TopicId")?,
            msg_id: r.u16("MsgId")?,
            topic_name: r.rest_str("TopicName")?,
        },
        MsgType::RegAck => Packet::RegAck {
            topic_id: r.u16("TopicId")?,
            msg_id: r.u16("MsgId")?,
            return_code: r.return_code()?,
        },
        MsgType::Publish => decode_publish(&mut r)?,
        MsgType::PubAck => Packet::PubAck {
            topic_id: r.u16("TopicId")?,
            msg_id: r.u16("MsgId")?,
            return_code: r.return_code()?,
        },
        MsgType::PubComp => Packet::PubComp {
            msg_id: r.u16("MsgId")?,
        },
        MsgType::PubRec => Packet::PubRec {
            msg_id: r.u16("MsgId")?,
        },
        MsgType::PubRel => Packet::PubRel {
            msg_id: r.u16("MsgId")?,
        },
        MsgType::Subscribe => {
            let flags = r.u8("Flags")?;
            let msg_id = r.u16("MsgId")?;
            Packet::Subscribe {
                dup: flags & FLAG_DUP != 0,
                qos: qos_of(flags),
                msg_id,
                topic: r.subscribe_topic(flags, msg_id)?,
            }
        }
        MsgType::SubAck => {
            let flags = r.u8("Flags")?;
            Packet::SubAck {
                qos: qos_of(flags),
                topic_id: r.u16("TopicId")?,
                msg_id: r.u16("MsgId")?,
                return_code: r.return_code()?,
            }
        }
        MsgType::Unsubscribe => {
            let flags = r.u8("Flags")?;
            let msg_id = r.u16("MsgId")?;
            Packet::Unsubscribe {
                msg_id,
                topic: r.subscribe_topic(flags, msg_id)?,
            }
        }
        MsgType::UnsubAck => Packet::UnsubAck {
            msg_id: r.u16("MsgId")?,
        },
        MsgType::PingReq => Packet::PingReq {
            client_id: if r.is_empty() {
                None
            } else {
                Some(r.rest_str("ClientId")?)
            },
        },
        MsgType::PingResp => Packet::PingResp,
        MsgType::Disconnect => Packet::Disconnect {
            duration: if r.is_empty() {
                None
            } else {
                Some(r.u16("Duration")?)
            },
        },
        MsgType::WillTopicUpd => Packet::WillTopicUpd(r.will_topic()?),
        MsgType::WillTopicResp => Packet::WillTopicResp {
            return_code: r.return_code()?,
        },
        MsgType::WillMsgUpd => Packet::WillMsgUpd {
            payload: r.rest_bytes(),
        },
        MsgType::WillMsgResp => Packet::WillMsgResp {
            return_code: r.return_code()?,
        },
        // Handled by the caller before the body is read.
        MsgType::Encapsulated => return Err(DecodeError::NestedEncapsulation),
    };
    r.finish()?;
    Ok(packet)
}

fn decode_publish(r: &mut Reader<'_>) -> Result<Packet, DecodeError> {
    let flags = r.u8("Flags")?;
    let dup = flags & FLAG_DUP != 0;
    let qos = qos_of(flags);
    let retain = flags & FLAG_RETAIN != 0;
    let topic_field = r.u16("TopicId")?;
    let msg_id = r.u16("MsgId")?;
    let topic = match TopicIdType::from_bits(flags) {
        TopicIdType::Normal if qos == QoS::MinusOne => {
            // Trap T-14: the TopicId field holds the length of the name that
            // follows the MsgId.
            let name = r.take(usize::from(topic_field), "TopicName")?;
            let topic_name = utf8(name, r.msg_type, "TopicName")?;
            return Ok(Packet::PublishNamedMinusOne {
                dup,
                retain,
                msg_id,
                topic_name,
                payload: r.rest_bytes(),
            });
        }
        TopicIdType::Normal => TopicRef::Id(topic_field),
        TopicIdType::Predefined => TopicRef::Predefined(topic_field),
        TopicIdType::Short => TopicRef::Short(topic_field.to_be_bytes()),
        TopicIdType::Reserved => {
            return Err(DecodeError::ReservedTopicIdType {
                msg_type: r.msg_type,
                msg_id,
            });
        }
    };
    Ok(Packet::Publish {
        dup,
        qos,
        retain,
        topic,
        msg_id,
        payload: r.rest_bytes(),
    })
}

pub(crate) const FLAG_DUP: u8 = 0x80;
pub(crate) const QOS_SHIFT: u8 = 5;
pub(crate) const FLAG_RETAIN: u8 = 0x10;
pub(crate) const FLAG_WILL: u8 = 0x08;
pub(crate) const FLAG_CLEAN_SESSION: u8 = 0x04;

fn qos_of(flags: u8) -> QoS {
    QoS::from_bits(flags >> QOS_SHIFT)
}

fn utf8(bytes: &[u8], msg_type: MsgType, field: &'static str) -> Result<String, DecodeError> {
    core::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidUtf8 { msg_type, field })
}

/// A bounds-checked cursor over a message's variable part.
struct Reader<'a> {
    msg_type: MsgType,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(msg_type: MsgType, buf: &'a [u8]) -> Self {
        Reader { msg_type, buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                msg_type: self.msg_type,
                field,
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array (a field of fixed size).
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let Some((head, tail)) = self.buf.split_first_chunk::<N>() else {
            return Err(DecodeError::Truncated {
                msg_type: self.msg_type,
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

    fn return_code(&mut self) -> Result<ReturnCode, DecodeError> {
        Ok(ReturnCode::from_code(self.u8("ReturnCode")?))
    }

    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    fn rest_bytes(&mut self) -> Bytes {
        Bytes::copy_from_slice(self.rest())
    }

    fn rest_str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = self.rest();
        utf8(rest, self.msg_type, field)
    }

    /// WILLTOPIC / WILLTOPICUPD: empty body = `None`, else Flags + topic.
    fn will_topic(&mut self) -> Result<Option<WillTopic>, DecodeError> {
        if self.is_empty() {
            return Ok(None);
        }
        let flags = self.u8("Flags")?;
        Ok(Some(WillTopic {
            qos: qos_of(flags),
            retain: flags & FLAG_RETAIN != 0,
            topic: self.rest_str("WillTopic")?,
        }))
    }

    /// SUBSCRIBE / UNSUBSCRIBE topic, read by the TopicIdType in `flags`.
    fn subscribe_topic(&mut self, flags: u8, msg_id: u16) -> Result<SubscribeTopic, DecodeError> {
        Ok(match TopicIdType::from_bits(flags) {
            TopicIdType::Normal => SubscribeTopic::Name(self.rest_str("TopicName")?),
            TopicIdType::Predefined => SubscribeTopic::Predefined(self.u16("TopicId")?),
            TopicIdType::Short => SubscribeTopic::Short(self.array("TopicName")?),
            TopicIdType::Reserved => {
                return Err(DecodeError::ReservedTopicIdType {
                    msg_type: self.msg_type,
                    msg_id,
                });
            }
        })
    }

    /// Every byte must have been read.
    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                msg_type: self.msg_type,
                extra: self.buf.len(),
            })
        }
    }
}
