//! An interpreter that drives the engine from an arbitrary byte string: a
//! sequence of operations from several peers — raw or templated datagrams
//! (valid packets with fuzzer-chosen fields, optionally mutated), clock
//! advances with timeouts, upstream messages, upstream room, local MQTT
//! inputs, and (in per-device mode) the answers of devices' upstream
//! sessions: status, acknowledgements, downlinks — checking after every one that the engine holds no more than its
//! bounds allow ([`Gateway::check_invariants`]). Shared by the cargo-fuzz
//! target `fuzz/fuzz_targets/engine.rs` and the stable seeded harness in the
//! normal test suite, so both exercise exactly the same thing.
//!
//! Pure like the rest of `core/`: the clock is virtual, starting at the
//! `Instant` the caller passes.

#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test interpreter: it panics by design on a violated invariant"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::engine_config::{EngineConfig, OverflowPolicy};
use super::gateway::{Gateway, UpstreamMessage};
use super::local::{LocalConnId, LocalConnect, LocalInput};
use super::output::{DeviceOrigin, Output, SessionStatus, UpstreamAck, UpstreamCommand};
use super::peer::{LinkAddr, Peer};
use sngate_wire::v1::{
    self as proto, Packet, QoS, ReturnCode, SubscribeTopic, TopicRef, WillTopic,
};

/// Small limits, so a short input reaches every bound.
pub fn config() -> EngineConfig {
    EngineConfig {
        max_packet_bytes: 256,
        max_clients: 4,
        max_topics_per_client: 6,
        max_subscriptions_per_client: 4,
        max_queued_messages_per_client: 8,
        max_queued_bytes_per_client: 300,
        max_queued_bytes_total: 700,
        max_retained_messages: 5,
        max_retained_bytes: 400,
        max_topic_bytes_total: 120,
        max_subscription_bytes_total: 60,
        max_messages_per_wake: 3,
        queue_qos0: true,
        retry_interval: Duration::from_secs(2),
        will_handshake_timeout: Duration::from_secs(3),
        keep_alive_max: Duration::from_secs(60),
        session_expiry: Some(Duration::from_secs(30)),
        advertise_interval: Some(Duration::from_secs(15)),
        per_source_packets_per_sec: 20,
        per_source_burst: 30,
        predefined_topics: vec![(1, "pre/one".into()), (2, "pre/two".into())],
        upstream: true,
        persist: true,
        ..EngineConfig::default()
    }
}

/// Most operations taken from one input.
pub const MAX_OPS: usize = 2000;

const CLIENT_IDS: [&str; 6] = ["a", "b", "c", "d", "e", "a-very-long-client-id"];
const TOPICS: [&str; 6] = ["s/1", "s/2", "pre/one", "a/b/c", "$SYS/x", "s"];
const FILTERS: [&str; 6] = ["#", "s/+", "a/#", "+/+/c", "s/1", "$SYS/#"];

/// A byte reader that yields zeros once the input is spent.
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn small_id(&mut self) -> u16 {
        // Mostly small ids, so acknowledgements can match what was sent.
        match self.u8() {
            b @ 0..=200 => u16::from(b % 8),
            _ => self.u16(),
        }
    }
    fn bytes(&mut self, max: usize) -> Bytes {
        let n = usize::from(self.u8()).min(max).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Bytes::copy_from_slice(head)
    }
    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[usize::from(self.u8()) % from.len()]
    }
    fn qos(&mut self) -> QoS {
        match self.u8() % 4 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::MinusOne,
        }
    }
    fn done(&self) -> bool {
        self.data.is_empty()
    }
}

/// The peers datagrams come from: several UDP addresses (two sharing an
/// IP), a radio, a raw serial port, and two nodes behind a forwarder.
fn peers() -> Vec<Peer> {
    let udp = |ip: [u8; 4], port| Peer::udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port));
    let fwd = udp([10, 0, 0, 9], 1);
    vec![
        udp([10, 0, 0, 1], 1000),
        udp([10, 0, 0, 2], 1000),
        udp([10, 0, 0, 2], 1001),
        udp([10, 0, 0, 3], 5),
        Peer {
            link: LinkAddr::Radio { port: 0, addr: 7 },
            node: None,
        },
        Peer::serial(1),
        fwd.forwarded(Bytes::from_static(&[1])),
        fwd.forwarded(Bytes::from_static(&[2, 2])),
    ]
}

/// A valid packet a device could send, its fields chosen by the input.
fn template(c: &mut Cursor<'_>) -> Packet {
    match c.u8() % 16 {
        0 => Packet::Connect {
            will: c.u8() & 1 == 1,
            clean_session: c.u8() & 1 == 1,
            protocol_id: if c.u8() == 0xff { 2 } else { 1 },
            duration: c.u16() % 120,
            client_id: c.pick(&CLIENT_IDS).into(),
        },
        1 => Packet::WillTopic(Some(WillTopic {
            qos: c.qos(),
            retain: c.u8() & 1 == 1,
            topic: c.pick(&TOPICS).into(),
        })),
        2 => Packet::WillMsg {
            payload: c.bytes(40),
        },
        3 => Packet::Register {
            topic_id: 0,
            msg_id: c.small_id(),
            topic_name: c.pick(&TOPICS).into(),
        },
        4 | 5 => {
            let topic = match c.u8() % 4 {
                0 => TopicRef::Predefined(c.small_id()),
                1 => TopicRef::Short(*b"s1"),
                _ => TopicRef::Id(c.small_id()),
            };
            Packet::Publish {
                dup: c.u8() & 1 == 1,
                qos: c.qos(),
                retain: c.u8() & 3 == 0,
                topic,
                msg_id: c.small_id(),
                payload: c.bytes(120),
            }
        }
        6 => Packet::PublishNamedMinusOne {
            dup: false,
            retain: c.u8() & 1 == 1,
            msg_id: 0,
            topic_name: c.pick(&TOPICS).into(),
            payload: c.bytes(60),
        },
        7 => Packet::PubAck {
            topic_id: c.small_id(),
            msg_id: c.small_id(),
            return_code: match c.u8() % 4 {
                0 => ReturnCode::InvalidTopicId,
                1 => ReturnCode::Congestion,
                _ => ReturnCode::Accepted,
            },
        },
        8 => match c.u8() % 3 {
            0 => Packet::PubRec {
                msg_id: c.small_id(),
            },
            1 => Packet::PubRel {
                msg_id: c.small_id(),
            },
            _ => Packet::PubComp {
                msg_id: c.small_id(),
            },
        },
        9 => Packet::RegAck {
            topic_id: c.small_id(),
            msg_id: c.small_id(),
            return_code: if c.u8() & 3 == 0 {
                ReturnCode::InvalidTopicId
            } else {
                ReturnCode::Accepted
            },
        },
        10 => Packet::Subscribe {
            dup: false,
            qos: c.qos(),
            msg_id: c.small_id(),
            topic: match c.u8() % 3 {
                0 => SubscribeTopic::Predefined(c.small_id()),
                1 => SubscribeTopic::Short(*b"s1"),
                _ => SubscribeTopic::Name(c.pick(&FILTERS).into()),
            },
        },
        11 => Packet::Unsubscribe {
            msg_id: c.small_id(),
            topic: SubscribeTopic::Name(c.pick(&FILTERS).into()),
        },
        12 => Packet::PingReq {
            client_id: (c.u8() & 1 == 1).then(|| c.pick(&CLIENT_IDS).into()),
        },
        13 => Packet::Disconnect {
            duration: (c.u8() & 1 == 1).then(|| c.u16() % 100),
        },
        14 => match c.u8() % 3 {
            0 => Packet::WillTopicUpd(Some(WillTopic {
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: c.pick(&TOPICS).into(),
            })),
            1 => Packet::WillMsgUpd {
                payload: c.bytes(30),
            },
            _ => Packet::SearchGw { radius: c.u8() },
        },
        _ => Packet::Encapsulated {
            radius: 0,
            node_id: c.bytes(3),
            inner: Box::new(Packet::PingReq { client_id: None }),
        },
    }
}

/// Runs the operations `data` encodes against a fresh engine started at
/// `start`, checking the invariants after every one. Panics on the first
/// violation (that is the point). Returns how many operations ran.
pub fn run(data: &[u8], start: Instant) -> usize {
    let mut c = Cursor { data };
    // The first byte picks the policies that change what queues keep.
    let flags = c.u8();
    let cfg = EngineConfig {
        queue_overflow: if flags & 1 == 0 {
            OverflowPolicy::RefuseNewest
        } else {
            OverflowPolicy::DropOldest
        },
        queue_qos0: flags & 2 == 0,
        sleep_buffer_qos0: flags & 4 == 0,
        per_device_sessions: flags & 8 != 0,
        ..config()
    };
    // Acknowledgements owed to devices (per-device mode), answered later.
    let mut owed: Vec<(std::sync::Arc<str>, UpstreamAck)> = Vec::new();
    let mut gw = Gateway::new(cfg, start);
    let peers = peers();
    let mut now = start;
    let mut buf = BytesMut::new();
    let mut ops = 0;
    while !c.done() && ops < MAX_OPS {
        ops += 1;
        match c.u8() % 10 {
            // A raw datagram.
            0 => {
                let peer = &peers[usize::from(c.u8()) % peers.len()];
                let bytes = c.bytes(255);
                gw.handle_datagram(now, peer.clone(), &bytes);
            }
            // A valid packet, sometimes mutated (one byte flipped or cut).
            1..=4 => {
                let peer = &peers[usize::from(c.u8()) % peers.len()];
                let packet = template(&mut c);
                buf.clear();
                if proto::encode(&packet, &mut buf).is_err() {
                    continue;
                }
                match c.u8() {
                    0..=219 => {}
                    220..=239 if !buf.is_empty() => {
                        let i = usize::from(c.u8()) % buf.len();
                        buf[i] ^= c.u8() | 1;
                    }
                    _ => {
                        let keep = usize::from(c.u8()) % (buf.len() + 1);
                        buf.truncate(keep);
                    }
                }
                gw.handle_datagram(now, peer.clone(), &buf);
            }
            // The clock moves on; whatever is due fires.
            5 | 6 => {
                let step = match c.u8() % 4 {
                    0 => Duration::from_millis(u64::from(c.u8())),
                    1 | 2 => Duration::from_secs(u64::from(c.u8() % 16)),
                    _ => Duration::from_secs(u64::from(c.u16())),
                };
                now += step;
                // Like the driver: fire at the deadline asked for, up to now.
                while let Some(at) = gw.poll_timeout() {
                    if at > now {
                        break;
                    }
                    gw.handle_timeout(at.max(start));
                    drain(&mut gw, &mut owed);
                }
                gw.handle_timeout(now);
            }
            // A message from upstream, or a device session's answer.
            7 => {
                let what = c.u8() % 5;
                let client = c.pick(&CLIENT_IDS);
                match what {
                    2 => {
                        let status = match c.u8() % 4 {
                            0 => SessionStatus::Up,
                            1 => SessionStatus::Unreachable,
                            2 => SessionStatus::TakenOver,
                            _ => SessionStatus::Refused {
                                reason: "refused".into(),
                            },
                        };
                        gw.handle_session_status(now, client, status);
                    }
                    3 => {
                        let accepted = c.u8() & 3 != 0;
                        if !owed.is_empty() {
                            let i = usize::from(c.u8()) % owed.len();
                            let (client, ack) = owed.swap_remove(i);
                            gw.handle_session_ack(now, &client, ack, accepted);
                        }
                    }
                    _ => {
                        let msg = UpstreamMessage {
                            topic: c.pick(&TOPICS).into(),
                            payload: c.bytes(150),
                            qos: c.u8() % 3,
                            retain: c.u8() & 3 == 0,
                            filter: (c.u8() & 7 == 0).then(|| c.pick(&FILTERS).into()),
                        };
                        if what == 4 {
                            gw.handle_session_message(now, client, msg);
                        } else {
                            gw.handle_upstream(now, msg);
                        }
                    }
                }
            }
            // The bridge's room changes.
            8 => gw.set_upstream_room(now, usize::from(c.u8() % 4)),
            // A local MQTT client of the embedded broker.
            _ => {
                let conn = LocalConnId(u64::from(c.u8() % 3));
                let input = match c.u8() % 6 {
                    0 => LocalInput::Connect(LocalConnect {
                        client_id: c.pick(&CLIENT_IDS).into(),
                        clean_session: c.u8() & 1 == 1,
                        will: None,
                        username: (c.u8() & 1 == 1).then(|| "user".to_owned()),
                    }),
                    1 | 2 => LocalInput::Publish {
                        pkid: c.small_id(),
                        topic: c.pick(&TOPICS).into(),
                        payload: c.bytes(100),
                        qos: c.u8() % 3,
                        retain: c.u8() & 3 == 0,
                    },
                    3 => LocalInput::Subscribe {
                        pkid: c.small_id(),
                        filters: vec![(c.pick(&FILTERS).into(), c.u8() % 3)],
                    },
                    4 => LocalInput::Unsubscribe {
                        pkid: c.small_id(),
                        filters: vec![c.pick(&FILTERS).into()],
                    },
                    _ => LocalInput::Closed {
                        graceful: c.u8() & 1 == 1,
                        unacked: Vec::new(),
                        releasing: Vec::new(),
                    },
                };
                gw.handle_local(now, conn, input);
            }
        }
        drain(&mut gw, &mut owed);
        owed.truncate(64);
        if let Err(violation) = gw.check_invariants() {
            panic!("after operation {ops}: {violation}");
        }
    }
    ops
}

/// Takes every output, as the driver would; an engine that kept producing
/// outputs without new input would loop forever, so that is bounded too.
fn drain(gw: &mut Gateway, owed: &mut Vec<(std::sync::Arc<str>, UpstreamAck)>) {
    let mut n = 0usize;
    while let Some(out) = gw.poll_output() {
        if let Output::Upstream(UpstreamCommand::Publish {
            from:
                Some(DeviceOrigin {
                    client_id,
                    ack: Some(ack),
                }),
            ..
        }) = out
        {
            owed.push((client_id, ack));
        }
        n += 1;
        assert!(n < 1_000_000, "the engine produced outputs without end");
    }
}
