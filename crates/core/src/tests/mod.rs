//! Engine unit tests: one per behaviour, each driving a [`Gateway`] with encoded
//! datagrams and a virtual clock, and asserting on the packets it emits. This
//! file holds the harness; `engine.rs` the general behaviours, `sleep.rs` the
//! sleeping-client ones, `local.rs` the embedded broker's clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;

mod budget;
mod dtls_identity;
mod engine;
mod linger;
mod local;
mod lockout;
mod ops;
mod paho;
mod per_device;
mod persist;
mod rate_limit;
mod security;
mod sleep;
mod suback_wait;
mod upstream_limits;
mod v2;
use sngate_wire::v1::{
    self as proto, Packet, QoS, ReturnCode, SubscribeTopic, TopicRef, WillTopic,
};

/// A gateway, a virtual clock, and the outputs not yet inspected.
struct Harness {
    gw: Gateway,
    now: Instant,
}

fn peer(port: u16) -> Peer {
    Peer::udp(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn publish(qos: QoS, topic: TopicRef, msg_id: u16, payload: &str) -> Packet {
    Packet::Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        msg_id,
        payload: b(payload),
    }
}

fn subscribe(qos: QoS, msg_id: u16, filter: &str) -> Packet {
    Packet::Subscribe {
        dup: false,
        qos,
        msg_id,
        topic: SubscribeTopic::Name(filter.to_owned()),
    }
}

impl Harness {
    fn new() -> Self {
        Self::with(EngineConfig::default())
    }

    fn with(cfg: EngineConfig) -> Self {
        let now = Instant::now();
        Harness {
            gw: Gateway::new(cfg, now),
            now,
        }
    }

    /// Sends `packet` from `from` through the codec, returns every output.
    fn send(&mut self, from: &Peer, packet: Packet) -> Vec<Output> {
        let mut buf = BytesMut::new();
        assert!(
            proto::encode(&packet, &mut buf).is_ok(),
            "test packet must encode"
        );
        self.gw.handle_datagram(self.now, from.clone(), &buf);
        self.drain()
    }

    fn raw(&mut self, from: &Peer, bytes: &[u8]) -> Vec<Output> {
        self.gw.handle_datagram(self.now, from.clone(), bytes);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.gw.poll_output()).collect()
    }

    /// Moves the clock forward by `d`, firing every timer on the way.
    fn advance(&mut self, d: Duration) -> Vec<Output> {
        let end = self.now + d;
        let mut out = Vec::new();
        let mut fired = 0;
        while let Some(at) = self.gw.poll_timeout() {
            if at > end {
                break;
            }
            fired += 1;
            assert!(
                fired < 100_000,
                "a deadline at {at:?} never moves: the engine would spin"
            );
            self.now = self.now.max(at);
            self.gw.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = end;
        out
    }

    fn connect(&mut self, from: &Peer, client_id: &str, clean_session: bool) {
        let out = self.send(
            from,
            Packet::Connect {
                will: false,
                clean_session,
                protocol_id: 1,
                duration: 60,
                client_id: client_id.to_owned(),
            },
        );
        let to_client = packets_to(&out, from);
        assert!(
            to_client.contains(&Packet::ConnAck {
                return_code: ReturnCode::Accepted
            }),
            "CONNACK expected, got {out:?}"
        );
    }

    /// `connect` (with the Will flag) and the will handshake: WILLTOPIC
    /// `topic` at `qos` with `retain`, then WILLMSG `payload`; returns what
    /// the WILLMSG produced (the CONNACK, or in per-device mode the
    /// session request).
    fn will_handshake(
        &mut self,
        from: &Peer,
        connect: Packet,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &str,
    ) -> Vec<Output> {
        self.send(from, connect);
        self.send(
            from,
            Packet::WillTopic(Some(WillTopic {
                qos,
                retain,
                topic: topic.into(),
            })),
        );
        self.send(
            from,
            Packet::WillMsg {
                payload: b(payload),
            },
        )
    }

    /// REGISTERs `name` for the client and returns the id.
    fn register(&mut self, from: &Peer, msg_id: u16, name: &str) -> u16 {
        let out = self.send(
            from,
            Packet::Register {
                topic_id: 0,
                msg_id,
                topic_name: name.to_owned(),
            },
        );
        match packets_to(&out, from).as_slice() {
            [
                Packet::RegAck {
                    topic_id,
                    msg_id: m,
                    return_code: ReturnCode::Accepted,
                },
            ] if *m == msg_id => *topic_id,
            other => panic!("REGACK expected, got {other:?}"),
        }
    }

    fn subscribe(&mut self, from: &Peer, msg_id: u16, filter: &str, qos: QoS) -> Vec<Packet> {
        let out = self.send(from, subscribe(qos, msg_id, filter));
        packets_to(&out, from)
    }
}

/// The packets sent to `peer`, in order.
fn packets_to(out: &[Output], peer: &Peer) -> Vec<Packet> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit { to, packet } if to == peer => Some(packet.clone()),
            _ => None,
        })
        .collect()
}

fn upstream(out: &[Output]) -> Vec<UpstreamCommand> {
    out.iter()
        .filter_map(|o| match o {
            Output::Upstream(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}
