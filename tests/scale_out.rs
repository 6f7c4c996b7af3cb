//! Several gateways in aggregate mode on one broker (issue 23): each keeps
//! its topics apart with the `{gateway}` placeholder in one shared rules
//! file, a device on one gateway hears a device on the other exactly once,
//! no gateway gets its own messages back from the broker (MQTT 5 No Local;
//! the echo log on MQTT 3.1.1), and nothing loops: the broker sees each
//! message once. In per-device mode a device with CleanSession off roams
//! from one gateway to the other: it gets what was published while it
//! moved, the gateway it left lets go (at most three takeovers where the
//! broker does not say "taken over", as mosquitto 2.0 does not) and
//! publishes no will. Real mosquitto, two in-process
//! gateways, devices on real UDP sockets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::mosquitto::{Mosquitto, MosquittoOptions};
use common::mqtt_tools::{publish, subscriber};
use common::{
    TestGateway, connect, connect_with, metrics_page, options, start_gateway_with, upstream_to,
};
use sngate::client::Will;
use sngate::config::{BridgeMode, BridgeRule, Direction};
use sngate::proto::{QoS, SubscribeTopic};

/// One rules file for every gateway: its sensors go out under
/// `site/<its client id>/`, every gateway's sensors come in under `peers/`.
fn rules() -> Vec<BridgeRule> {
    vec![
        BridgeRule {
            direction: Direction::Out,
            topic: "sensors/#".into(),
            qos: 1,
            local_prefix: String::new(),
            remote_prefix: "site/{gateway}/".into(),
        },
        BridgeRule {
            direction: Direction::In,
            topic: "+/sensors/#".into(),
            qos: 1,
            local_prefix: "peers/".into(),
            remote_prefix: "site/".into(),
        },
    ]
}

async fn gateway(cloud: &Mosquitto, id: &str, protocol_version: u8) -> TestGateway {
    start_gateway_with(|c| {
        let mut u = upstream_to(cloud.port, id);
        u.rules = rules();
        u.protocol_version = protocol_version;
        c.upstream = Some(u);
    })
    .await
}

async fn two_gateways_keep_apart_and_hear_each_other_once(protocol_version: u8) {
    let cloud = Mosquitto::start_with(MosquittoOptions {
        extra: vec!["log_type all".into()],
        ..MosquittoOptions::default()
    })
    .await;
    let broker = SocketAddr::from(([127, 0, 0, 1], cloud.port));
    let seen = subscriber(broker, "#", &["-q", "1"]);
    let gw_a = gateway(&cloud, "gw-a", protocol_version).await;
    let gw_b = gateway(&cloud, "gw-b", protocol_version).await;
    // Both bridges' `in` subscriptions are in place.
    cloud.wait_for_log("Received SUBSCRIBE from gw-a").await;
    cloud.wait_for_log("Received SUBSCRIBE from gw-b").await;

    let mut a = connect(gw_a.addr, "dev-a").await;
    let mut b = connect(gw_b.addr, "dev-b").await;
    for d in [&mut a, &mut b] {
        d.subscribe(SubscribeTopic::Name("peers/#".into()), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    a.publish_named(
        "sensors/t",
        Bytes::from_static(b"from-a"),
        QoS::AtLeastOnce,
        false,
    )
    .await
    .expect("publish a");
    b.publish_named(
        "sensors/t",
        Bytes::from_static(b"from-b"),
        QoS::AtLeastOnce,
        false,
    )
    .await
    .expect("publish b");

    let wait = Duration::from_secs(5);
    let got = b.recv_message(wait).await.expect("b hears a");
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("peers/gw-a/sensors/t", &b"from-a"[..])
    );
    let got = a.recv_message(wait).await.expect("a hears b");
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("peers/gw-b/sensors/t", &b"from-b"[..])
    );
    // The broker saw each message once, under its gateway's prefix: nothing
    // came back up from the other gateway.
    let mut on_broker = vec![
        seen.next_message_within(wait),
        seen.next_message_within(wait),
    ];
    on_broker.sort();
    assert_eq!(
        on_broker,
        [
            "site/gw-a/sensors/t 1 0 from-a",
            "site/gw-b/sensors/t 1 0 from-b"
        ]
    );
    seen.expect_silence(Duration::from_millis(700));
    // Neither gateway delivers its own message back (no echo), nor the
    // other's twice.
    for (name, d) in [("a", &mut a), ("b", &mut b)] {
        if let Ok(m) = d.recv_message(Duration::from_millis(700)).await {
            panic!("{name} got a second message: {m:?}");
        }
    }
    gw_a.stop().await;
    gw_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_mqtt5_keep_apart_and_hear_each_other_once() {
    two_gateways_keep_apart_and_hear_each_other_once(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_mqtt311_keep_apart_and_hear_each_other_once() {
    two_gateways_keep_apart_and_hear_each_other_once(4).await;
}

/// mosquitto's log lines saying `id` connected while already connected.
fn takeovers(cloud: &Mosquitto, id: &str) -> usize {
    cloud
        .log_text()
        .lines()
        .filter(|l| l.contains(&format!("Client {id} already connected")))
        .count()
}

/// The value of a counter on the gateway's /metrics page.
async fn counter(gw: &TestGateway, name: &str) -> u64 {
    let page = metrics_page(&gw.running().queries()).await;
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roaming_device_keeps_its_session_and_the_old_gateway_lets_go() {
    let cloud = Mosquitto::start().await;
    let broker = SocketAddr::from(([127, 0, 0, 1], cloud.port));
    let per_device = |id: &'static str| {
        let port = cloud.port;
        move |c: &mut sngate::config::Config| {
            let mut u = upstream_to(port, id);
            u.bridge_mode = BridgeMode::PerDevice;
            c.upstream = Some(u);
        }
    };
    let gw_a = start_gateway_with(per_device("gw-a")).await;
    let gw_b = start_gateway_with(per_device("gw-b")).await;
    let wills = subscriber(broker, "status/#", &["-q", "1"]);
    let opts = || {
        options("roamer").clean_session(false).will(Will {
            topic: "status/roamer".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
        })
    };
    let mut at_a = connect_with(gw_a.addr, opts()).await;
    at_a.subscribe(SubscribeTopic::Name("cmd/roamer".into()), QoS::AtLeastOnce)
        .await
        .expect("subscribe through a");
    // It moves: gone from a without a word (its socket closes), a still
    // believes in it.
    drop(at_a);
    let (ok, text) = publish(
        broker,
        &["-t", "cmd/roamer", "-q", "1", "-m", "while-moving"],
    );
    assert!(ok, "{text}");
    // From a new address, through b.
    let mut at_b = connect_with(gw_b.addr, opts()).await;
    let got = at_b
        .recv_message(Duration::from_secs(5))
        .await
        .expect("what was published while it moved");
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("cmd/roamer", &b"while-moving"[..])
    );
    // a lets go: one takeover, counted, and never a second one (a does not
    // take the session back), nor a will.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counter(&gw_a, "sngate_upstream_device_session_takeovers_total").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway a never counted the takeover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wills.expect_silence(Duration::from_secs(3));
    // mosquitto 2.0 sends no DISCONNECT 0x8E, so a infers the takeover: it
    // takes the session back once, is kicked again at once, and lets go —
    // three takeovers, and none after (with 0x8E it would be one).
    let n = takeovers(&cloud, "roamer");
    assert!((1..=3).contains(&n), "{n} takeovers: {}", cloud.log_text());
    assert_eq!(
        counter(&gw_b, "sngate_upstream_device_session_takeovers_total").await,
        0
    );
    // The device still works through b, and a message for it arrives once.
    let (ok, text) = publish(broker, &["-t", "cmd/roamer", "-q", "1", "-m", "after"]);
    assert!(ok, "{text}");
    let got = at_b
        .recv_message(Duration::from_secs(5))
        .await
        .expect("after");
    assert_eq!(&got.payload[..], b"after");
    // Back to a: it works at once.
    drop(at_b);
    let mut back = connect_with(gw_a.addr, opts()).await;
    let (ok, text) = publish(broker, &["-t", "cmd/roamer", "-q", "1", "-m", "back"]);
    assert!(ok, "{text}");
    // a kept, for the CleanSession-off device, what its session had taken
    // for it before it let go: that copy may come first (a duplicate, as
    // QoS 1 allows), then the new message.
    let mut got = back
        .recv_message(Duration::from_secs(5))
        .await
        .expect("back at a");
    if &got.payload[..] == b"while-moving" {
        got = back
            .recv_message(Duration::from_secs(5))
            .await
            .expect("back at a");
    }
    assert_eq!(&got.payload[..], b"back");
    gw_a.stop().await;
    gw_b.stop().await;
}

/// Issue 23's gap, closed: a per-device session acknowledges a QoS 1
/// downlink to the broker only once the device has it. The device (CleanSession
/// off, subscribed at QoS 1) goes away without a word; the message
/// published meanwhile reaches its session, and the broker gets no PUBACK
/// for it until the device, back on a new socket, has acknowledged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downlink_is_acknowledged_upstream_only_once_the_device_has_it() {
    let cloud = Mosquitto::start_with(MosquittoOptions {
        extra: vec!["log_type all".into()],
        ..MosquittoOptions::default()
    })
    .await;
    let broker = SocketAddr::from(([127, 0, 0, 1], cloud.port));
    let port = cloud.port;
    let gw = start_gateway_with(move |c| {
        let mut u = upstream_to(port, "gw-acks");
        u.bridge_mode = BridgeMode::PerDevice;
        c.upstream = Some(u);
    })
    .await;
    let opts = || options("keeper").clean_session(false);
    let mut first = connect_with(gw.addr, opts()).await;
    first
        .subscribe(SubscribeTopic::Name("cmd/keeper".into()), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    drop(first);
    let (ok, text) = publish(broker, &["-t", "cmd/keeper", "-q", "1", "-m", "while-away"]);
    assert!(ok, "{text}");
    cloud.wait_for_log("Sending PUBLISH to keeper").await;
    let acked = || cloud.log_text().contains("Received PUBACK from keeper");
    // Before this change the session acknowledged on receipt, within
    // milliseconds; now nothing comes while the device is away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline {
        assert!(
            !acked(),
            "acknowledged before the device had it:\n{}",
            cloud.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut back = connect_with(gw.addr, opts()).await;
    let got = back
        .recv_message(Duration::from_secs(5))
        .await
        .expect("what was published while it was away");
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("cmd/keeper", &b"while-away"[..])
    );
    // Its PUBACK reached the gateway: now the broker gets one.
    cloud.wait_for_log("Received PUBACK from keeper").await;
    gw.stop().await;
}
