//! The client's MQTT-SN 2.0 mode ([`Protocol::V2`](super::Protocol::V2)):
//! translation between the 1.2 packets the client's logic speaks and the 2.0
//! packets on the wire, at the link's edge (encode on send, decode on
//! receive). The client's request/answer logic stays one piece of code; what
//! 2.0 changes is in the mapping:
//!
//! - CONNECT carries the will itself (no WILLTOPICREQ/WILLMSGREQ round), and a
//!   1.2 "clean session = false" is a 2.0 session that never expires
//!   (Session Expiry 0xFFFF_FFFF, §3.1.9), "clean session = true" is Clean
//!   Start with no expiry;
//! - a 1.2 normal topic id is a 2.0 session alias, a pre-defined id a
//!   predefined alias, a 1.2 short name a full topic name of two characters;
//!   a 2.0 PUBLISH by full name (which 1.2 cannot carry) keeps its name beside
//!   the translated packet;
//! - sleeping is SLEEPREQ (its granted SLEEPRESP read as 1.2's DISCONNECT
//!   answer), waking a PINGREQ, which 2.0 gives a packet id and no client id;
//! - the client's REGACK carries no alias [3.5.4-1]; PINGREQ carries a packet
//!   id [2.2-1]; acks carry reason codes, read back as 1.2 return codes
//!   (below 0x80 accepted, 0x89/0x97 congestion, 0x8F/0x90 invalid topic,
//!   any other failure kept as its byte). sngate never sends PINGREQ to
//!   a 2.0 device, so one is ignored.
//!
//! Packets 1.2 has and 2.0 does not (the will-update packets, a 1.2 SEARCHGW…) are refused with [`ClientError::InvalidArgument`].

use std::sync::atomic::{AtomicU16, Ordering};

use sngate_wire::v2;

use super::{ClientError, Will};
use crate::proto::{Packet, QoS, ReturnCode, SubscribeTopic, TopicRef};

/// What the link keeps for the 2.0 mapping.
#[derive(Debug)]
pub(super) struct V2State {
    /// The will sent inside CONNECT.
    will: Option<Will>,
    /// The next PINGREQ packet id (never 0).
    next_ping_id: AtomicU16,
}

impl V2State {
    pub fn new(will: Option<Will>) -> Self {
        V2State {
            will,
            next_ping_id: AtomicU16::new(1),
        }
    }

    fn ping_id(&self) -> u16 {
        let id = self.next_ping_id.fetch_add(1, Ordering::Relaxed);
        if id == 0 {
            self.next_ping_id.fetch_add(1, Ordering::Relaxed)
        } else {
            id
        }
    }

    /// The 2.0 form of a packet the client sends.
    pub fn to_v2(&self, packet: &Packet) -> Result<v2::Packet, ClientError> {
        let unsupported = || ClientError::InvalidArgument("this packet has no MQTT-SN 2.0 form");
        Ok(match packet {
            Packet::Connect {
                clean_session,
                duration,
                client_id,
                ..
            } => v2::Packet::Connect(Box::new(v2::Connect {
                clean_start: *clean_session,
                allow_address_change: false,
                allow_server_suggested: false,
                packet_id: 1,
                keep_alive: *duration,
                max_packet_size: 0,
                default_awake_messages: None,
                session_expiry: (!clean_session).then_some(u32::MAX),
                will: self.will.as_ref().map(|w| v2::Will {
                    qos: v2_qos(w.qos),
                    retain: w.retain,
                    topic: v2::Topic::Name(w.topic.clone()),
                    payload: w.payload.clone(),
                }),
                auth: None,
                client_id: client_id.clone(),
            })),
            Packet::Register {
                msg_id, topic_name, ..
            } => v2::Packet::Register(v2::Register {
                packet_id: *msg_id,
                alias: None,
                topic_name: topic_name.clone(),
            }),
            Packet::RegAck {
                msg_id,
                return_code,
                ..
            } => v2::Packet::RegAck(v2::RegAck {
                alias_kind: v2::AliasKind::Session,
                packet_id: *msg_id,
                alias: None,
                reason: Some(reason(*return_code)),
            }),
            Packet::Publish {
                dup,
                qos,
                retain,
                topic,
                msg_id,
                payload,
            } => {
                let topic = v2_topic(topic);
                let payload = payload.clone();
                let delivery = match qos {
                    QoS::MinusOne => {
                        return Ok(v2::Packet::PubWos(v2::PubWos {
                            retain: *retain,
                            topic,
                            payload,
                        }));
                    }
                    QoS::AtMostOnce => v2::Delivery::AtMostOnce,
                    QoS::AtLeastOnce => v2::Delivery::AtLeastOnce { packet_id: *msg_id },
                    QoS::ExactlyOnce => v2::Delivery::ExactlyOnce {
                        packet_id: *msg_id,
                        dup: *dup,
                    },
                };
                v2::Packet::Publish(v2::Publish {
                    delivery,
                    retain: *retain,
                    topic,
                    payload,
                })
            }
            Packet::PubAck {
                msg_id,
                return_code,
                ..
            } => v2::Packet::PubAck(ack(*msg_id, *return_code)),
            Packet::PubRec { msg_id } => v2::Packet::PubRec(ack(*msg_id, ReturnCode::Accepted)),
            Packet::PubRel { msg_id } => v2::Packet::PubRel(ack(*msg_id, ReturnCode::Accepted)),
            Packet::PubComp { msg_id } => v2::Packet::PubComp(ack(*msg_id, ReturnCode::Accepted)),
            Packet::Subscribe {
                qos, msg_id, topic, ..
            } => v2::Packet::Subscribe(v2::Subscribe {
                options: v2::SubscribeOptions {
                    no_local: false,
                    max_qos: v2_qos(*qos),
                    retain_as_published: false,
                    retain_handling: v2::RetainHandling::SendAtSubscribe,
                },
                packet_id: *msg_id,
                topic: v2_filter(topic),
            }),
            Packet::Unsubscribe { msg_id, topic } => v2::Packet::Unsubscribe(v2::Unsubscribe {
                packet_id: *msg_id,
                topic: v2_filter(topic),
            }),
            Packet::PingReq { .. } => v2::Packet::PingReq {
                packet_id: self.ping_id(),
            },
            Packet::Disconnect {
                duration: Some(secs),
            } => v2::Packet::SleepReq {
                retain_aliases: true,
                packet_id: self.ping_id(),
                duration: u32::from(*secs),
            },
            Packet::Disconnect { duration: None } => v2::Packet::Disconnect(v2::Disconnect {
                packet_id: None,
                reason: None,
                session_expiry: None,
                reason_string: String::new(),
            }),
            _ => return Err(unsupported()),
        })
    }
}

/// A received 2.0 packet in the 1.2 form the client's logic reads, with the
/// topic name of a PUBLISH by full name (which 1.2 cannot carry); `None` for
/// a packet the client has no use for.
pub(super) fn from_v2(packet: v2::Packet) -> Option<(Packet, Option<String>)> {
    let packet = match packet {
        v2::Packet::ConnAck(c) => Packet::ConnAck {
            return_code: return_code(c.reason),
        },
        v2::Packet::Register(r) => Packet::Register {
            topic_id: r.alias.unwrap_or(0),
            msg_id: r.packet_id,
            topic_name: r.topic_name,
        },
        v2::Packet::RegAck(r) => Packet::RegAck {
            topic_id: r.alias.unwrap_or(0),
            msg_id: r.packet_id,
            return_code: return_code(r.reason.unwrap_or(v2::ReasonCode::SUCCESS)),
        },
        v2::Packet::Publish(p) => {
            let (qos, msg_id, dup) = match p.delivery {
                v2::Delivery::AtMostOnce => (QoS::AtMostOnce, 0, false),
                v2::Delivery::AtLeastOnce { packet_id } => (QoS::AtLeastOnce, packet_id, false),
                v2::Delivery::ExactlyOnce { packet_id, dup } => (QoS::ExactlyOnce, packet_id, dup),
            };
            let (topic, name) = v1_topic(p.topic);
            return Some((
                Packet::Publish {
                    dup,
                    qos,
                    retain: p.retain,
                    topic,
                    msg_id,
                    payload: p.payload,
                },
                name,
            ));
        }
        v2::Packet::PubAck(a) => Packet::PubAck {
            topic_id: 0,
            msg_id: a.packet_id,
            return_code: return_code(a.reason_or_success()),
        },
        v2::Packet::PubRec(a) => Packet::PubRec {
            msg_id: a.packet_id,
        },
        v2::Packet::PubRel(a) => Packet::PubRel {
            msg_id: a.packet_id,
        },
        v2::Packet::PubComp(a) => Packet::PubComp {
            msg_id: a.packet_id,
        },
        v2::Packet::SubAck(s) => {
            let code = s.reason.unwrap_or(v2::ReasonCode::SUCCESS);
            let qos = match code {
                v2::ReasonCode::GRANTED_QOS_1 => QoS::AtLeastOnce,
                v2::ReasonCode::GRANTED_QOS_2 => QoS::ExactlyOnce,
                _ => QoS::AtMostOnce,
            };
            Packet::SubAck {
                qos,
                topic_id: s.alias.unwrap_or(0),
                msg_id: s.packet_id,
                return_code: return_code(code),
            }
        }
        v2::Packet::UnsubAck(a) => Packet::UnsubAck {
            msg_id: a.packet_id,
        },
        v2::Packet::PingResp { .. } => Packet::PingResp,
        v2::Packet::Disconnect(_) => Packet::Disconnect { duration: None },
        // A granted sleep is what 1.2's DISCONNECT answer to a sleep was; a
        // refused one is ignored (the client's sleep then times out).
        v2::Packet::SleepResp { reason, .. } if reason.is_none_or(|r| r.0 < 0x80) => {
            Packet::Disconnect { duration: None }
        }
        _ => return None,
    };
    Some((packet, None))
}

fn ack(packet_id: u16, code: ReturnCode) -> v2::Ack {
    v2::Ack {
        packet_id,
        reason: Some(reason(code)),
    }
}

fn v2_qos(qos: QoS) -> v2::QoS {
    match qos {
        QoS::MinusOne | QoS::AtMostOnce => v2::QoS::AtMostOnce,
        QoS::AtLeastOnce => v2::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v2::QoS::ExactlyOnce,
    }
}

fn v2_topic(topic: &TopicRef) -> v2::Topic {
    match *topic {
        TopicRef::Id(id) => v2::Topic::SessionAlias(id),
        TopicRef::Predefined(id) => v2::Topic::PredefinedAlias(id),
        TopicRef::Short(b) => v2::Topic::Name(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn v2_filter(topic: &SubscribeTopic) -> v2::Topic {
    match topic {
        SubscribeTopic::Name(name) => v2::Topic::Name(name.clone()),
        SubscribeTopic::Predefined(id) => v2::Topic::PredefinedAlias(*id),
        SubscribeTopic::Short(b) => v2::Topic::Name(String::from_utf8_lossy(b).into_owned()),
    }
}

/// The 1.2 topic of a received 2.0 PUBLISH, and its name when it came by
/// full name (a two-byte name is a 1.2 short name; a longer one has no 1.2
/// form and keeps a placeholder id 0).
fn v1_topic(topic: v2::Topic) -> (TopicRef, Option<String>) {
    match topic {
        v2::Topic::SessionAlias(id) => (TopicRef::Id(id), None),
        v2::Topic::PredefinedAlias(id) => (TopicRef::Predefined(id), None),
        v2::Topic::Name(name) => match <[u8; 2]>::try_from(name.as_bytes()) {
            Ok(short) => (TopicRef::Short(short), None),
            Err(_) => (TopicRef::Id(0), Some(name)),
        },
    }
}

fn reason(code: ReturnCode) -> v2::ReasonCode {
    match code {
        ReturnCode::Accepted => v2::ReasonCode::SUCCESS,
        ReturnCode::Congestion => v2::ReasonCode::SERVER_BUSY,
        ReturnCode::InvalidTopicId => v2::ReasonCode::TOPIC_NAME_INVALID,
        ReturnCode::NotSupported => v2::ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
        ReturnCode::Other(b) => v2::ReasonCode(b),
    }
}

fn return_code(code: v2::ReasonCode) -> ReturnCode {
    match code.0 {
        0x89 | 0x97 => ReturnCode::Congestion,
        0x8F | 0x90 => ReturnCode::InvalidTopicId,
        b if b < 0x80 => ReturnCode::Accepted,
        b => ReturnCode::Other(b),
    }
}
