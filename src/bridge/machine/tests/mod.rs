//! Machine unit tests: each drives a [`Machine`] with a virtual clock and
//! a fake rumqttc channel (it takes every request unless told otherwise),
//! as the engine's tests drive the engine, and asserts on what the machine
//! asks the task to do. This file holds the harness; `outbox.rs` the
//! delivery rules (order, tickets, room), `subscriptions.rs` the upstream
//! filters and what comes down, `timing.rs` backoff and shutdown,
//! `device.rs` a device session's connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{LinkEvent, Machine, Output, Request, Transition};
use crate::bridge::echo::EchoLog;
use crate::bridge::identities::DeviceIdentities;
use crate::bridge::link::{LinkError, Window};
use crate::bridge::outbox::Replay;
use crate::bridge::rules::Rules;
use crate::bridge::{BridgeEvent, Common, Counters, ECHO_CAPACITY, ECHO_WINDOW, Room, TaskEvent};
use crate::config::{BridgeMode, UpstreamConfig};
use crate::core::{
    DeviceOrigin, EngineConfig, Gateway, Peer, SessionParams, SessionStatus, UpstreamAck,
    UpstreamCommand,
};
use crate::proto::{self, Packet, QoS, TopicRef};

mod device;
mod outbox;
mod refusals;
mod subscriptions;
mod timing;

/// A machine, a virtual clock, and what it asked for not yet inspected.
struct Harness {
    m: Machine,
    now: Instant,
    counters: Arc<Counters>,
    /// Requests the fake channel took, in order.
    sent: Vec<Request>,
    events: Vec<TaskEvent>,
    room_freed: usize,
    /// Topics the fake channel refuses to publish on (rumqttc's verdict).
    refuse_topic: Option<String>,
    /// A filter the fake channel refuses to subscribe (rumqttc's verdict).
    refuse_filter: Option<String>,
}

/// `[upstream]` for the tests: a small outbox, backoff 1..8 s.
fn config() -> UpstreamConfig {
    UpstreamConfig {
        host: "127.0.0.1".into(),
        client_id: Some("gw".into()),
        reconnect_min_secs: 1,
        reconnect_max_secs: 8,
        max_pending_messages: 10,
        max_pending_bytes: 1000,
        ..UpstreamConfig::default()
    }
}

fn common(cfg: UpstreamConfig) -> Arc<Common> {
    let per_device = cfg.bridge_mode == BridgeMode::PerDevice;
    let origin =
        (per_device && cfg.protocol_version == 5).then(|| Arc::from(cfg.effective_client_id()));
    Arc::new(Common {
        endpoint: "127.0.0.1:1883".into(),
        rules: Rules::new(&cfg.rules),
        counters: Arc::new(Counters {
            room: Room {
                max_messages: cfg.max_pending_messages as u64,
                max_bytes: cfg.max_pending_bytes as u64,
                ..Room::default()
            },
            ..Counters::default()
        }),
        echo: (cfg.protocol_version == 4)
            .then(|| Mutex::new(EchoLog::new(ECHO_WINDOW, ECHO_CAPACITY))),
        per_device,
        origin,
        cfg,
    })
}

impl Harness {
    /// The shared session with `cfg`, its connection not accepted yet.
    fn shared(cfg: UpstreamConfig) -> Self {
        let now = Instant::now();
        let common = common(cfg);
        let counters = Arc::clone(&common.counters);
        Self::wrap(
            Machine::shared(now, common, Window::SHARED, 7),
            now,
            counters,
        )
    }

    /// A device session for `client_id` (per-device mode), no connection.
    fn device(cfg: UpstreamConfig, client_id: &str) -> Self {
        let now = Instant::now();
        let cfg = UpstreamConfig {
            bridge_mode: BridgeMode::PerDevice,
            ..cfg
        };
        let common = common(cfg);
        let identities = DeviceIdentities::new(&common.cfg, None, common.origin.clone());
        let identities = Arc::new(identities.expect("device identities"));
        let counters = Arc::clone(&common.counters);
        let m = Machine::device(now, common, identities, Arc::from(client_id), 0, 7);
        Self::wrap(m, now, counters)
    }

    /// A device session for `client_id`, opened and connected (its events
    /// so far taken).
    fn device_up(cfg: UpstreamConfig, client_id: &str) -> Self {
        let mut h = Self::device(cfg, client_id);
        h.command(UpstreamCommand::OpenSession(params(client_id, false)));
        assert!(matches!(transition(&mut h), Some(Transition::Open { .. })));
        h.connack(false);
        h.take_events();
        h
    }

    fn wrap(m: Machine, now: Instant, counters: Arc<Counters>) -> Self {
        Harness {
            m,
            now,
            counters,
            sent: Vec::new(),
            events: Vec::new(),
            room_freed: 0,
            refuse_topic: None,
            refuse_filter: None,
        }
    }

    /// Carries out every output, as the session task does.
    fn drain(&mut self) {
        while let Some(out) = self.m.poll_output() {
            match out {
                Output::Submit(req) => {
                    let taken = !matches!((&req, &self.refuse_topic),
                        (Request::Publish(m), Some(t)) if &m.topic == t)
                        && !matches!((&req, &self.refuse_filter),
                        (Request::Subscribe(f, ..), Some(r)) if f == r);
                    if taken {
                        self.sent.push(req);
                    }
                    self.m.handle_submitted(taken);
                }
                Output::RoomFreed => self.room_freed += 1,
                Output::Event(ev) => self.events.push(ev),
            }
        }
    }

    fn command(&mut self, cmd: UpstreamCommand) {
        self.m.handle_command(self.now, cmd);
        self.drain();
    }

    fn event(&mut self, ev: LinkEvent) {
        self.m.handle_event(self.now, ev);
        self.drain();
    }

    fn connack(&mut self, session_present: bool) {
        self.event(LinkEvent::ConnAck {
            session_present,
            limits: Default::default(),
        });
    }

    /// The connection fails; returns the replays for rumqttc.
    fn lose(&mut self) -> Vec<Replay> {
        let f = self
            .m
            .handle_connection_failed(self.now, LinkError::Lost("cut".into()));
        self.drain();
        match f {
            super::Failure::Retry(replays) => replays,
            super::Failure::Drop => panic!("a lost connection is retried"),
        }
    }

    /// Moves the clock on, firing the machine's timer when it is due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.m.poll_timeout().is_some_and(|t| t <= self.now) {
            self.m.handle_timeout(self.now);
            self.drain();
        }
    }

    /// The requests taken since the last call.
    fn take_sent(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.sent)
    }

    /// The payloads of the publishes taken since the last call.
    fn published(&mut self) -> Vec<String> {
        self.take_sent()
            .into_iter()
            .filter_map(|r| match r {
                Request::Publish(m) => Some(String::from_utf8_lossy(&m.payload).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// The driver's events since the last call.
    fn take_events(&mut self) -> Vec<BridgeEvent> {
        std::mem::take(&mut self.events)
            .into_iter()
            .filter_map(|e| match e {
                TaskEvent::Public(ev) => Some(ev),
                _ => None,
            })
            .collect()
    }

    /// rumqttc reports writing the publishes it took, with these ids.
    fn written(&mut self, pkids: &[u16]) {
        for &p in pkids {
            self.event(LinkEvent::SentPublish(p));
        }
    }

    fn gauge(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A message for the broker, from a device or (`from: None`) the gateway.
fn message(topic: &str, payload: &str, qos: u8, from: Option<DeviceOrigin>) -> UpstreamCommand {
    UpstreamCommand::Publish {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
        store_id: None,
        from,
    }
}

/// A message published on `topic` by the gateway itself.
fn publish(topic: &str, payload: &str, qos: u8) -> UpstreamCommand {
    message(topic, payload, qos, None)
}

/// A device's QoS 1 message on `t`, owing it `ack`.
fn device_publish(client_id: &str, payload: &str, ack: Option<UpstreamAck>) -> UpstreamCommand {
    let client_id = Arc::from(client_id);
    message("t", payload, 1, Some(DeviceOrigin { client_id, ack }))
}

fn params(client_id: &str, clean_session: bool) -> SessionParams {
    SessionParams {
        client_id: Arc::from(client_id),
        clean_session,
        keep_alive_secs: 30,
        will: None,
    }
}

/// A message coming down on `topic`.
fn incoming(topic: &str, payload: &str, ids: &[usize]) -> LinkEvent {
    LinkEvent::Publish {
        pkid: 1,
        topic: Some(topic.into()),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: 0,
        retain: false,
        subscription_ids: ids.to_vec(),
        origin: None,
    }
}

/// `n` distinct acknowledgement tokens, as the engine makes them: device
/// `client_id` publishes `n` QoS 1 messages through a per-device engine.
fn acks(client_id: &str, n: u16) -> Vec<UpstreamAck> {
    let now = Instant::now();
    let cfg = EngineConfig {
        upstream: true,
        per_device_sessions: true,
        ..EngineConfig::default()
    };
    let mut gw = Gateway::new(cfg, now);
    let from = Peer::udp(SocketAddr::from(([127, 0, 0, 1], 1)));
    let send = |gw: &mut Gateway, packet: Packet| {
        let mut buf = BytesMut::new();
        assert!(proto::encode(&packet, &mut buf).is_ok());
        gw.handle_datagram(now, from.clone(), &buf);
    };
    let connect = Packet::Connect {
        will: false,
        clean_session: true,
        protocol_id: 1,
        duration: 60,
        client_id: client_id.to_owned(),
    };
    send(&mut gw, connect);
    gw.handle_session_status(now, client_id, SessionStatus::Up);
    let mut tokens = Vec::new();
    for msg_id in 1..=n {
        let packet = Packet::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: TopicRef::Short(*b"ab"),
            msg_id,
            payload: Bytes::from_static(b"x"),
        };
        send(&mut gw, packet);
        while let Some(out) = gw.poll_output() {
            if let crate::core::Output::Upstream(UpstreamCommand::Publish {
                from: Some(DeviceOrigin { ack: Some(a), .. }),
                ..
            }) = out
            {
                tokens.push(a);
            }
        }
    }
    assert_eq!(tokens.len(), usize::from(n), "one token per message");
    tokens
}

#[test]
fn the_harness_makes_distinct_tokens() {
    let t = acks("d", 2);
    assert_ne!(t[0], t[1]);
}

#[test]
fn nothing_is_sent_before_the_connack() {
    let mut h = Harness::shared(config());
    h.command(publish("a", "1", 1));
    assert!(h.take_sent().is_empty());
    h.connack(false);
    assert_eq!(h.published(), ["1"]);
    assert_eq!(
        h.take_events(),
        [
            BridgeEvent::Connected,
            BridgeEvent::Limits(Some(crate::core::UpstreamLimits {
                max_packet_size: crate::bridge::link::MAX_PACKET_BYTES,
                // Topic length, packet id, no properties (MQTT 5).
                packet_overhead: 5,
                max_qos: 2,
                retain_available: true,
            }))
        ]
    );
}

/// What a device's ticket events say: (accepted) per SessionAck, in order.
fn session_acks(events: &[BridgeEvent]) -> Vec<(UpstreamAck, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            BridgeEvent::SessionAck { ack, accepted, .. } => Some((*ack, *accepted)),
            _ => None,
        })
        .collect()
}

/// The transition asked for, if any.
fn transition(h: &mut Harness) -> Option<Transition> {
    let t = h.m.poll_transition();
    h.drain();
    t
}
