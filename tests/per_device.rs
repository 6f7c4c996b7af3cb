//! The per-device session pool (`bridge_mode = "per-device"`) driven
//! directly through its `BridgeHandle`, against a real mosquitto started by
//! the test on a free port: each device's session is a real MQTT connection
//! the broker sees under the device's client id, with its own credentials,
//! will, subscriptions and ACL. A plain MQTT client (rumqttc) watches the
//! broker. Acknowledgement tokens are opaque to the shell, so the tests that
//! need them get them from a real engine (`Gateway`) fed MQTT-SN packets.
//!
//! Every wait is on an event with a deadline.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::checker::Checker;
use common::mosquitto::{Mosquitto, MosquittoOptions};
use sngate::bridge::{self, BridgeEvent, BridgeHandle, BridgeStats};
use sngate::config::{BridgeMode, DeviceCredentials, UpstreamConfig};
use sngate::core::{
    EngineConfig, Gateway, Output, Peer, SessionParams, SessionStatus, UpstreamCommand,
};
use sngate::proto::{
    self, PROTOCOL_ID_V1_2, Packet as SnPacket, QoS as SnQoS, ReturnCode, TopicRef,
};
use tokio::time::{Instant, timeout};

/// How long a test waits for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------ the bridge

fn per_device(port: u16, shared_id: &str) -> UpstreamConfig {
    let mut u = UpstreamConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: Some(shared_id.into()),
        keep_alive_secs: 5,
        reconnect_min_secs: 1,
        reconnect_max_secs: 1,
        // Wills are published 1 s after their connection dropped.
        will_delay_secs: 1,
        ..UpstreamConfig::default()
    };
    u.bridge_mode = BridgeMode::PerDevice;
    u
}

fn params(id: &str, clean: bool, keep_alive: u32) -> SessionParams {
    SessionParams {
        client_id: Arc::from(id),
        clean_session: clean,
        keep_alive_secs: keep_alive,
        will: None,
    }
}

/// A device session with keep-alive 30 whose will is "ID gone" on status/ID.
fn with_will(id: &str, clean: bool, retain: bool) -> SessionParams {
    SessionParams {
        will: Some(sngate::core::session::Will {
            topic: format!("status/{id}"),
            payload: Bytes::from(format!("{id} gone")),
            qos: 1,
            retain,
        }),
        ..params(id, clean, 30)
    }
}

fn open(p: SessionParams) -> UpstreamCommand {
    UpstreamCommand::OpenSession(p)
}

fn close(id: &str, publish_will: bool) -> UpstreamCommand {
    UpstreamCommand::CloseSession {
        client_id: Arc::from(id),
        publish_will,
    }
}

fn device_publish(id: &str, topic: &str, payload: &str, qos: u8) -> UpstreamCommand {
    UpstreamCommand::Publish {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
        store_id: None,
        from: Some(sngate::core::DeviceOrigin {
            client_id: Arc::from(id),
            ack: None,
        }),
    }
}

fn session_subscribe(id: &str, filter: &str) -> UpstreamCommand {
    UpstreamCommand::SessionSubscribe {
        client_id: Arc::from(id),
        filter: filter.into(),
        qos: 1,
    }
}

/// The next event matching `want`, skipping others, within [`WAIT`].
async fn until<T>(h: &mut BridgeHandle, what: &str, want: impl Fn(&BridgeEvent) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = timeout(deadline.saturating_duration_since(Instant::now()), h.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
            .expect("bridge alive");
        if let Some(t) = want(&ev) {
            return t;
        }
    }
}

/// The status the session of `id` answers.
async fn status_of(h: &mut BridgeHandle, id: &str) -> SessionStatus {
    until(h, &format!("status of {id}"), |ev| match ev {
        BridgeEvent::SessionStatus { client_id, status } if &**client_id == id => {
            Some(status.clone())
        }
        _ => None,
    })
    .await
}

/// The statuses the sessions of `ids` answer, in any order.
async fn statuses_of(h: &mut BridgeHandle, ids: &[&str]) -> Vec<SessionStatus> {
    let mut got: Vec<Option<SessionStatus>> = vec![None; ids.len()];
    while got.iter().any(Option::is_none) {
        let (i, status) = until(h, &format!("statuses of {ids:?}"), |ev| match ev {
            BridgeEvent::SessionStatus { client_id, status } => ids
                .iter()
                .position(|id| **id == **client_id)
                .map(|i| (i, status.clone())),
            _ => None,
        })
        .await;
        assert!(got[i].is_none(), "{}: a second status {status:?}", ids[i]);
        got[i] = Some(status);
    }
    got.into_iter().flatten().collect()
}

/// Waits until the bridge's counters satisfy `ok`, handling events
/// meanwhile (a task may wait for the handle).
async fn stats_until(
    h: &mut BridgeHandle,
    what: &str,
    ok: impl Fn(&BridgeStats) -> bool,
) -> BridgeStats {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let s = h.stats();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: never; stats {s:?}");
        let _ = timeout(Duration::from_millis(20), h.recv()).await;
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_session_carries_its_client_id_clean_flag_and_keep_alive() {
    let broker = Mosquitto::start().await;
    let mut cfg = per_device(broker.port, "gw-ids");
    cfg.per_device.client_id_prefix = "sn-".into();
    let mut h = bridge::spawn(&cfg).expect("spawn");
    h.send(open(params("dev-a", false, 30)));
    assert_eq!(status_of(&mut h, "dev-a").await, SessionStatus::Up);
    broker.wait_for_log("as sn-dev-a (p5, c0, k30)").await;
    let s = h.stats();
    assert_eq!(
        (
            s.device_sessions_open,
            s.device_sessions_connected,
            s.device_session_connects
        ),
        (1, 1, 1)
    );
    // The same parameters again on a persistent session: reused, answered
    // at once, no new connection.
    h.send(open(params("dev-a", false, 30)));
    assert_eq!(status_of(&mut h, "dev-a").await, SessionStatus::Up);
    assert_eq!(h.stats().device_session_connects, 1);
    // A clean session: a new connection with the new flags (the old one
    // ended with DISCONNECT).
    h.send(open(params("dev-a", true, 0)));
    assert_eq!(status_of(&mut h, "dev-a").await, SessionStatus::Up);
    broker.wait_for_log("Client sn-dev-a disconnected.").await;
    // rumqttc's MQTT 5 client has no keep-alive "none": the protocol's maximum.
    broker.wait_for_log("as sn-dev-a (p5, c1, k65535)").await;
    assert_eq!(h.stats().device_session_connects, 2);
    // The shared session is the gateway's own.
    broker.wait_for_log("as gw-ids (p5, c0, k5)").await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_upstream_id_is_the_gateways_is_refused_and_counted() {
    let broker = Mosquitto::start().await;
    let mut cfg = per_device(broker.port, "sn-gw");
    cfg.per_device.client_id_prefix = "sn-".into();
    let mut h = bridge::spawn(&cfg).expect("spawn");
    // The two sessions would take each other over: the pool refuses it.
    h.send(open(params("gw", false, 30)));
    h.send(open(params("dev", false, 30)));
    assert!(matches!(
        statuses_of(&mut h, &["gw", "dev"]).await[..],
        [SessionStatus::Refused { .. }, SessionStatus::Up]
    ));
    let s = h.stats();
    assert_eq!((s.device_session_refusals, s.device_sessions_open), (1, 1));
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_and_the_refused_session_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let passwords = dir.path().join("passwords");
    for (i, (user, pass)) in [("gw", "gw-secret"), ("dev-good", "dev-secret")]
        .into_iter()
        .enumerate()
    {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&passwords)
            .args([user, pass])
            .status()
            .expect("mosquitto_passwd runs");
        assert!(ok.success(), "mosquitto_passwd {user}");
    }
    let broker = Mosquitto::start_with(MosquittoOptions {
        extra: vec![
            "allow_anonymous false".into(),
            format!("password_file {}", passwords.display()),
        ],
        ..MosquittoOptions::default()
    })
    .await;
    let mut cfg = per_device(broker.port, "gw-auth");
    cfg.username = Some("gw".into());
    cfg.password = Some("gw-secret".into());
    // Every device logs in as itself with the shared device password, but
    // dev-bad's entry gets a wrong one.
    cfg.per_device.username = Some("%c".into());
    cfg.per_device.password = Some("dev-secret".into());
    cfg.per_device.credentials = vec![DeviceCredentials {
        client_id: "dev-bad*".into(),
        username: Some("dev-good".into()),
        password: Some("wrong".into()),
        ..DeviceCredentials::default()
    }];
    let mut h = bridge::spawn(&cfg).expect("spawn");
    until(&mut h, "shared session up", |ev| {
        (*ev == BridgeEvent::Connected).then_some(())
    })
    .await;
    h.send(open(params("dev-good", true, 30)));
    assert_eq!(status_of(&mut h, "dev-good").await, SessionStatus::Up);
    h.send(open(params("dev-bad", true, 30)));
    match status_of(&mut h, "dev-bad").await {
        // mosquitto answers an MQTT 5 client's bad password with "not
        // authorised" (0x87).
        SessionStatus::Refused { reason } => assert!(
            reason.contains("BadUserNamePassword") || reason.contains("NotAuthorized"),
            "{reason}"
        ),
        other => panic!("dev-bad: {other:?}"),
    }
    // No retry: the refused session ends and the pool forgets it.
    let s = stats_until(&mut h, "the refused session gone", |s| {
        s.device_sessions_open == 1
    })
    .await;
    assert_eq!(s.device_session_refusals, 1);
    assert_eq!(s.device_sessions_connected, 1);
    // A message for it now has no session: refused, not queued.
    h.send(device_publish("dev-bad", "x/y", "lost", 1));
    let s = stats_until(&mut h, "the orphan counted", |s| s.rejected == 1).await;
    assert_eq!(s.pending_messages, 0);
    assert_eq!(h.unsettled(), 0);
    // A new OpenSession starts a new session (refused again, once).
    h.send(open(params("dev-bad", true, 30)));
    assert!(matches!(
        status_of(&mut h, "dev-bad").await,
        SessionStatus::Refused { .. }
    ));
    stats_until(&mut h, "second refusal", |s| s.device_session_refusals == 2).await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_will_is_published_by_the_broker_and_a_clean_close_discards_it() {
    let broker = Mosquitto::start().await;
    let mut watcher = Checker::connect(broker.port, "watch-wills").await;
    watcher.subscribe("status/#").await;
    let mut h = bridge::spawn(&per_device(broker.port, "gw-wills")).expect("spawn");
    let with_will = |id: &str| with_will(id, false, false);
    h.send(open(with_will("dev-w")));
    h.send(open(with_will("dev-x")));
    assert_eq!(
        statuses_of(&mut h, &["dev-w", "dev-x"]).await,
        [SessionStatus::Up, SessionStatus::Up]
    );
    // Lost: the connection is dropped without DISCONNECT; the broker
    // publishes the will.
    h.send(close("dev-w", true));
    let got = watcher.until_topic("status/dev-w").await;
    assert_eq!(got, [("status/dev-w".to_owned(), "dev-w gone".to_owned())]);
    // Left: DISCONNECT, no will. Once mosquitto has seen it go, a sentinel
    // is the next thing the watcher gets.
    h.send(close("dev-x", false));
    broker.wait_for_log("Client dev-x disconnected.").await;
    watcher.publish("status/sentinel", "end", false).await;
    let got = watcher.until_topic("status/sentinel").await;
    assert_eq!(got, [("status/sentinel".to_owned(), "end".to_owned())]);
    // Both sessions ended and were forgotten.
    stats_until(&mut h, "sessions forgotten", |s| {
        s.device_sessions_open == 0 && s.device_sessions_connected == 0
    })
    .await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_subscription_brings_messages_down_its_own_session() {
    let broker = Mosquitto::start().await;
    let mut cloud = Checker::connect(broker.port, "cloud-down").await;
    cloud.publish("cmd/dev-s/led", "retained", true).await;
    let mut h = bridge::spawn(&per_device(broker.port, "gw-down")).expect("spawn");
    h.send(open(params("dev-s", true, 30)));
    h.send(session_subscribe("dev-s", "cmd/dev-s/#"));
    assert_eq!(status_of(&mut h, "dev-s").await, SessionStatus::Up);
    let down = |want: &'static str| {
        move |ev: &BridgeEvent| match ev {
            BridgeEvent::SessionMessage {
                client_id, message, ..
            } if &message.payload[..] == want.as_bytes() => {
                Some((client_id.to_string(), message.topic.clone(), message.retain))
            }
            BridgeEvent::Message(m) => panic!("a device's message on the shared session: {m:?}"),
            _ => None,
        }
    };
    // The retained value arrives once the subscription is in place…
    let got = until(&mut h, "the retained value", down("retained")).await;
    assert_eq!(got, ("dev-s".to_owned(), "cmd/dev-s/led".to_owned(), true));
    // …then live messages, tagged with the device.
    cloud.publish("cmd/dev-s/led", "on", false).await;
    let got = until(&mut h, "the live message", down("on")).await;
    assert_eq!(got, ("dev-s".to_owned(), "cmd/dev-s/led".to_owned(), false));
    assert_eq!(h.stats().received, 2);
    h.shutdown(Duration::from_secs(1)).await;
}

/// Device A publishes; device B's session and the shared session are both
/// subscribed: the broker sends them copies, which they drop (the engine
/// routed the message locally already). A message from elsewhere still
/// comes down both.
async fn own_publishes_are_not_echoed(protocol_version: u8) {
    let broker = Mosquitto::start().await;
    let mut cloud = Checker::connect(broker.port, &format!("cloud-echo-{protocol_version}")).await;
    cloud.subscribe("room/#").await;
    cloud.publish("room/barrier", "b", true).await;
    let mut cfg = per_device(broker.port, &format!("gw-echo-{protocol_version}"));
    cfg.protocol_version = protocol_version;
    let mut h = bridge::spawn(&cfg).expect("spawn");
    h.send(UpstreamCommand::Subscribe {
        filter: "room/#".into(),
        qos: 1,
    });
    h.send(open(params("dev-a", true, 30)));
    h.send(open(params("dev-b", true, 30)));
    h.send(session_subscribe("dev-b", "room/#"));
    // Both subscriptions are in place once each has its retained barrier.
    let (mut shared_ready, mut b_ready) = (false, false);
    while !(shared_ready && b_ready) {
        match until(&mut h, "the barriers", |ev| match ev {
            BridgeEvent::Message(m) if m.topic == "room/barrier" => Some(true),
            BridgeEvent::SessionMessage {
                client_id, message, ..
            } if &**client_id == "dev-b" && message.topic == "room/barrier" => Some(false),
            _ => None,
        })
        .await
        {
            true => shared_ready = true,
            false => b_ready = true,
        }
    }
    h.send(device_publish("dev-a", "room/1", "mine", 1));
    // It went up (the cloud has it)…
    let got = cloud.until_topic("room/1").await;
    assert_eq!(got.last(), Some(&("room/1".to_owned(), "mine".to_owned())));
    // …and what comes down next on both sessions is the cloud's own.
    cloud.publish("room/end", "theirs", false).await;
    let (mut shared_end, mut b_end) = (false, false);
    while !(shared_end && b_end) {
        let shared = until(
            &mut h,
            "the cloud's message on both sessions",
            |ev| match ev {
                BridgeEvent::Message(m) => {
                    assert_eq!(m.topic, "room/end", "echo on the shared session");
                    Some(true)
                }
                BridgeEvent::SessionMessage {
                    client_id, message, ..
                } => {
                    assert_eq!(
                        (&**client_id, message.topic.as_str()),
                        ("dev-b", "room/end"),
                        "echo on a device session"
                    );
                    Some(false)
                }
                _ => None,
            },
        )
        .await;
        if shared {
            shared_end = true;
        } else {
            b_end = true;
        }
    }
    assert!(h.stats().echoes_suppressed >= 2, "{:?}", h.stats());
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_own_publishes_are_not_echoed_on_other_sessions() {
    own_publishes_are_not_echoed(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_own_publishes_are_not_echoed_on_other_sessions() {
    own_publishes_are_not_echoed(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_then_a_restart_brings_every_session_back() {
    let mut broker = Mosquitto::start().await;
    let mut h = bridge::spawn(&per_device(broker.port, "gw-restart")).expect("spawn");
    const N: usize = 20;
    for i in 0..N {
        h.send(open(params(&format!("dev-{i}"), false, 30)));
    }
    stats_until(&mut h, "all up", |s| {
        s.device_sessions_connected == N as u64
    })
    .await;
    broker.stop().await;
    stats_until(&mut h, "all down", |s| s.device_sessions_connected == 0).await;
    // A session opened while the broker is away: Unreachable, and it keeps
    // trying.
    h.send(open(params("late", false, 30)));
    assert_eq!(status_of(&mut h, "late").await, SessionStatus::Unreachable);
    broker.restart().await;
    let s = stats_until(&mut h, "all back", |s| {
        s.device_sessions_connected == N as u64 + 1
    })
    .await;
    assert_eq!(s.device_sessions_open, N as u64 + 1);
    assert_eq!(s.device_session_refusals, 0);
    broker.wait_for_log("as late (p5, c0, k30)").await;
    h.shutdown(Duration::from_secs(1)).await;
}

// ------------------------------------------- acknowledgements via the engine

/// A real engine in per-device mode, fed MQTT-SN packets by hand, whose
/// upstream commands go to the bridge and whose bridge events come back:
/// the acknowledgement tokens are the engine's own.
struct Engine {
    gw: Gateway,
    peer: Peer,
    to_device: VecDeque<SnPacket>,
}

impl Engine {
    fn new() -> Engine {
        let cfg = EngineConfig {
            upstream: true,
            per_device_sessions: true,
            per_source_packets_per_sec: 0,
            ..EngineConfig::default()
        };
        let addr: SocketAddr = "127.0.0.1:40000".parse().expect("address");
        Engine {
            gw: Gateway::new(cfg, std::time::Instant::now()),
            peer: Peer::udp_on(0, addr),
            to_device: VecDeque::new(),
        }
    }

    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// Carries out the engine's outputs: upstream commands to the bridge,
    /// packets for the device kept.
    fn flush(&mut self, h: &mut BridgeHandle) {
        while let Some(out) = self.gw.poll_output() {
            match out {
                Output::Upstream(cmd) => h.send(cmd),
                Output::Transmit { packet, .. } => self.to_device.push_back(packet),
                _ => {}
            }
        }
    }

    fn device_sends(&mut self, h: &mut BridgeHandle, packet: SnPacket) {
        let mut buf = BytesMut::new();
        proto::encode(&packet, &mut buf).expect("encode");
        self.gw
            .handle_datagram(Self::now(), self.peer.clone(), &buf);
        self.flush(h);
    }

    /// Feeds bridge events to the engine until it has a packet for the
    /// device.
    async fn device_gets(&mut self, h: &mut BridgeHandle) -> SnPacket {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(p) = self.to_device.pop_front() {
                return p;
            }
            let ev = timeout(deadline.saturating_duration_since(Instant::now()), h.recv())
                .await
                .expect("a packet for the device in time")
                .expect("bridge alive");
            self.on_event(ev);
            self.flush(h);
        }
    }

    fn on_event(&mut self, ev: BridgeEvent) {
        let now = Self::now();
        match ev {
            BridgeEvent::SessionStatus { client_id, status } => {
                self.gw.handle_session_status(now, &client_id, status)
            }
            BridgeEvent::SessionAck {
                client_id,
                ack,
                accepted,
            } => self.gw.handle_session_ack(now, &client_id, ack, accepted),
            BridgeEvent::SessionMessage {
                client_id, message, ..
            } => self.gw.handle_session_message(now, &client_id, message),
            BridgeEvent::Message(m) => self.gw.handle_upstream(now, m),
            _ => {}
        }
    }

    async fn connect(&mut self, h: &mut BridgeHandle, id: &str) {
        self.device_sends(
            h,
            SnPacket::Connect {
                will: false,
                clean_session: true,
                protocol_id: PROTOCOL_ID_V1_2,
                duration: 60,
                client_id: id.into(),
            },
        );
        match self.device_gets(h).await {
            SnPacket::ConnAck { return_code } => assert_eq!(return_code, ReturnCode::Accepted),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn register(&mut self, h: &mut BridgeHandle, topic: &str) -> u16 {
        self.device_sends(
            h,
            SnPacket::Register {
                topic_id: 0,
                msg_id: 1,
                topic_name: topic.into(),
            },
        );
        match self.device_gets(h).await {
            SnPacket::RegAck { topic_id, .. } => topic_id,
            other => panic!("expected REGACK, got {other:?}"),
        }
    }

    /// A QoS 1 PUBLISH; the PUBACK's return code.
    async fn publish(
        &mut self,
        h: &mut BridgeHandle,
        topic_id: u16,
        msg_id: u16,
        payload: &str,
    ) -> ReturnCode {
        self.publish_with(h, topic_id, msg_id, payload, false).await
    }

    /// A QoS 1 PUBLISH, retained or not; the PUBACK's return code.
    async fn publish_with(
        &mut self,
        h: &mut BridgeHandle,
        topic_id: u16,
        msg_id: u16,
        payload: &str,
        retain: bool,
    ) -> ReturnCode {
        self.device_sends(
            h,
            SnPacket::Publish {
                dup: false,
                qos: SnQoS::AtLeastOnce,
                retain,
                topic: TopicRef::Id(topic_id),
                msg_id,
                payload: Bytes::copy_from_slice(payload.as_bytes()),
            },
        );
        match self.device_gets(h).await {
            SnPacket::PubAck {
                msg_id: m,
                return_code,
                ..
            } => {
                assert_eq!(m, msg_id);
                return_code
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_acknowledgements_follow_the_broker_per_device_acl() {
    // Each client may write under dev/<its client id>/ only; everyone reads.
    let mut broker = Mosquitto::start_with(MosquittoOptions {
        acl: Some("pattern write dev/%c/#\npattern read #\n".into()),
        ..MosquittoOptions::default()
    })
    .await;
    let mut cloud = Checker::connect(broker.port, "cloud-acks").await;
    cloud.subscribe("dev/#").await;
    let mut h = bridge::spawn(&per_device(broker.port, "gw-acks")).expect("spawn");
    let mut e = Engine::new();
    e.connect(&mut h, "dev-k").await;
    let own = e.register(&mut h, "dev/dev-k/t").await;
    let other = e.register(&mut h, "dev/dev-z/t").await;
    // Allowed: PUBACK accepted once the broker acknowledged it (the cloud
    // has it).
    assert_eq!(e.publish(&mut h, own, 10, "1").await, ReturnCode::Accepted);
    assert_eq!(
        cloud
            .until_topic("dev/dev-k/t")
            .await
            .last()
            .map(|m| m.1.as_str()),
        Some("1")
    );
    // Denied by the ACL for this device: mosquitto answers PUBACK 0x87 (MQTT
    // 5), and the device's PUBACK is a rejection.
    let rc = e.publish(&mut h, other, 11, "2").await;
    assert_ne!(rc, ReturnCode::Accepted);
    assert_eq!(h.stats().rejected, 1);
    // Broker gone: the message is queued on the device's session and
    // acknowledged at once; it goes up when the broker is back. Retained,
    // so the cloud (which can only subscribe once the broker is back) sees
    // it whenever it arrives.
    broker.stop().await;
    stats_until(&mut h, "session down", |s| s.device_sessions_connected == 0).await;
    assert_eq!(
        e.publish_with(&mut h, own, 12, "3", true).await,
        ReturnCode::Accepted
    );
    assert_eq!(h.stats().pending_messages, 1);
    broker.restart().await;
    let mut cloud = Checker::connect(broker.port, "cloud-acks-2").await;
    cloud.subscribe("dev/#").await;
    assert_eq!(
        cloud.until_topic("dev/dev-k/t").await,
        [("dev/dev-k/t".to_owned(), "3".to_owned())]
    );
    stats_until(&mut h, "queued message delivered", |s| {
        s.pending_messages == 0
    })
    .await;
    assert_eq!(h.unsettled(), 0);
    assert_eq!(h.stats().rejected, 1, "only the message the ACL denied");
    h.shutdown(Duration::from_secs(1)).await;
}

/// Nothing acknowledged to a device is lost, and it goes up under the
/// device's own identity (an ACL lets only the device write its topics):
/// restored messages of a device that comes back go on its session; those
/// of a device that does not come back are delivered by its own session
/// anyway (no will, CleanSession off); and what a closing session could not
/// deliver while the broker was away is delivered once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_and_restored_messages_go_up_under_the_device_identity() {
    // Only the client itself may write under dev/<its client id>/.
    let mut broker = Mosquitto::start_with(MosquittoOptions {
        acl: Some("pattern write dev/%c/#\npattern read #\n".into()),
        ..MosquittoOptions::default()
    })
    .await;
    let mut cloud = Checker::connect(broker.port, "cloud-kept").await;
    cloud.subscribe("dev/#").await;
    let mut h = bridge::spawn(&per_device(broker.port, "gw-kept")).expect("spawn");
    let stored = |id: &str, n: u64, retain: bool| match device_publish(
        id,
        &format!("dev/{id}/t"),
        &format!("restored {n}"),
        1,
    ) {
        UpstreamCommand::Publish {
            topic,
            payload,
            qos,
            from,
            ..
        } => UpstreamCommand::Publish {
            topic,
            payload,
            qos,
            retain,
            store_id: Some(n),
            from,
        },
        other => other,
    };

    // dev-r comes back: its restored messages go on its session. The broker
    // is frozen meanwhile: the pool starts dev-r's session at once, and on
    // a loaded machine it could deliver one before the count is read.
    broker.freeze();
    h.restore(vec![stored("dev-r", 1, false), stored("dev-r", 2, false)]);
    assert_eq!(h.unsettled(), 2);
    broker.thaw();
    h.send(open(params("dev-r", false, 30)));
    assert_eq!(status_of(&mut h, "dev-r").await, SessionStatus::Up);
    let got = cloud.until_topic("dev/dev-r/t").await;
    assert_eq!(got.last().map(|m| m.1.as_str()), Some("restored 1"));
    let got = cloud.until_topic("dev/dev-r/t").await;
    assert_eq!(got.last().map(|m| m.1.as_str()), Some("restored 2"));
    let settled = until(&mut h, "the restored messages settled", |ev| match ev {
        BridgeEvent::Settled(ids) if ids.contains(&2) => Some(ids.clone()),
        _ => None,
    })
    .await;
    assert!(settled.contains(&2), "{settled:?}");
    assert_eq!(h.unsettled(), 0);

    // dev-q does not come back: its own session delivers them anyway
    // (CleanSession off, the shared session's keep-alive), then ends.
    h.restore(vec![stored("dev-q", 3, false), stored("dev-q", 4, false)]);
    let got = cloud.until_topic("dev/dev-q/t").await;
    assert_eq!(got.last().map(|m| m.1.as_str()), Some("restored 3"));
    let got = cloud.until_topic("dev/dev-q/t").await;
    assert_eq!(got.last().map(|m| m.1.as_str()), Some("restored 4"));
    broker.wait_for_log("as dev-q (p5, c0, k5)").await;
    broker.wait_for_log("Client dev-q disconnected.").await;
    stats_until(&mut h, "dev-q's session done", |s| {
        s.device_sessions_open == 1 && s.pending_messages == 0
    })
    .await;
    assert_eq!(h.unsettled(), 0);

    // The broker goes away; dev-r publishes (queued on its session,
    // acknowledged), then leaves. Its session stays, and delivers it once
    // the broker is back (retained, so the cloud, subscribing after the
    // restart, sees it whenever it arrives).
    broker.stop().await;
    stats_until(&mut h, "sessions down", |s| {
        s.device_sessions_connected == 0
    })
    .await;
    h.send(stored("dev-r", 5, true));
    h.send(close("dev-r", false));
    stats_until(&mut h, "the message queued", |s| s.pending_messages == 1).await;
    assert_eq!(h.stats().device_sessions_open, 1, "dev-r's session stays");
    broker.restart().await;
    let mut cloud = Checker::connect(broker.port, "cloud-kept-2").await;
    cloud.subscribe("dev/#").await;
    assert_eq!(
        cloud.until_topic("dev/dev-r/t").await,
        [("dev/dev-r/t".to_owned(), "restored 5".to_owned())]
    );
    stats_until(&mut h, "dev-r's session done", |s| {
        s.device_sessions_open == 0 && s.pending_messages == 0
    })
    .await;
    assert_eq!(h.unsettled(), 0);
    let s = h.stats();
    assert_eq!((s.rejected, s.device_messages_to_shared), (0, 0));
    h.shutdown(Duration::from_secs(1)).await;
}

/// A lost device's will reaches the broker even when its session never got
/// a CONNACK (the broker was away when the device came and went): the
/// session keeps trying under the device's identity (CleanSession off) with
/// the will, then drops the connection so the broker publishes it. A session
/// that never connected and has nothing for the broker just ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_will_reaches_the_broker_even_if_its_session_never_connected() {
    let mut broker = Mosquitto::start().await;
    let mut h = bridge::spawn(&per_device(broker.port, "gw-late-will")).expect("spawn");
    until(&mut h, "shared session up", |ev| {
        (*ev == BridgeEvent::Connected).then_some(())
    })
    .await;
    broker.stop().await;
    // Retained: the watcher can only subscribe once the broker is back,
    // maybe after the will was published.
    let with_will = |id: &str| with_will(id, true, true);
    h.send(open(with_will("dev-l")));
    h.send(open(with_will("dev-n")));
    assert_eq!(
        statuses_of(&mut h, &["dev-l", "dev-n"]).await,
        [SessionStatus::Unreachable, SessionStatus::Unreachable]
    );
    h.send(close("dev-l", true));
    h.send(close("dev-n", false));
    stats_until(&mut h, "dev-n's session ended, dev-l's kept", |s| {
        s.device_sessions_open == 1
    })
    .await;
    broker.restart().await;
    broker.wait_for_log("as dev-l (p5, c0, k30)").await;
    stats_until(&mut h, "dev-l's session done", |s| {
        s.device_sessions_open == 0
    })
    .await;
    let mut watcher = Checker::connect(broker.port, "watch-late-wills").await;
    watcher.subscribe("status/#").await;
    assert_eq!(
        watcher.until_topic("status/dev-l").await,
        [("status/dev-l".to_owned(), "dev-l gone".to_owned())]
    );
    assert!(
        !broker.log_text().contains("as dev-n"),
        "dev-n had nothing for the broker"
    );
    h.shutdown(Duration::from_secs(1)).await;
}

/// A session the broker refuses after its device was told its messages are
/// safe (queued while the broker was away): those go up through the shared
/// session, the last resort, counted — not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_hands_acknowledged_messages_to_the_shared_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let passwords = dir.path().join("passwords");
    let set_password = |user: &str, pass: &str, create: bool| {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        if create {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&passwords)
            .args([user, pass])
            .status()
            .expect("mosquitto_passwd runs");
        assert!(ok.success(), "mosquitto_passwd {user}");
    };
    set_password("gw", "gw-secret", true);
    set_password("dev-p", "dev-secret", false);
    // Anonymous clients (the cloud checker) still allowed; a client giving
    // a user name must give its password.
    let mut broker = Mosquitto::start_with(MosquittoOptions {
        extra: vec![format!("password_file {}", passwords.display())],
        ..MosquittoOptions::default()
    })
    .await;
    let mut cfg = per_device(broker.port, "gw-last-resort");
    cfg.username = Some("gw".into());
    cfg.password = Some("gw-secret".into());
    cfg.per_device.username = Some("%c".into());
    cfg.per_device.password = Some("dev-secret".into());
    let mut h = bridge::spawn(&cfg).expect("spawn");
    let mut e = Engine::new();
    e.connect(&mut h, "dev-p").await;
    let topic = e.register(&mut h, "dev/dev-p/t").await;
    broker.stop().await;
    stats_until(&mut h, "session down", |s| s.device_sessions_connected == 0).await;
    // Queued, and so acknowledged to the device.
    assert_eq!(
        e.publish_with(&mut h, topic, 20, "kept", true).await,
        ReturnCode::Accepted
    );
    // The device's password changes: its session is refused when the broker
    // is back.
    set_password("dev-p", "changed", false);
    broker.restart().await;
    let s = stats_until(&mut h, "refused, handed over, delivered", |s| {
        s.device_session_refusals == 1 && s.pending_messages == 0 && s.published >= 1
    })
    .await;
    assert_eq!(s.device_messages_to_shared, 1);
    assert_eq!(s.rejected, 0);
    assert_eq!(h.unsettled(), 0);
    let mut cloud = Checker::connect(broker.port, "cloud-last-resort").await;
    cloud.subscribe("dev/#").await;
    assert_eq!(
        cloud.until_topic("dev/dev-p/t").await,
        [("dev/dev-p/t".to_owned(), "kept".to_owned())]
    );
    h.shutdown(Duration::from_secs(1)).await;
}
