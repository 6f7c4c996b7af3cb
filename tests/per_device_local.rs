//! Per-device mode keeps local routing and the embedded broker working, and
//! delivers every message exactly once whichever way it travels: device ↔
//! device, device ↔ local MQTT client, cloud → device / local client. The
//! broker's copies of what the gateway itself published (on any of its
//! sessions) must not come back down a second time. Real parts: a real
//! mosquitto upstream, the real `mosquitto_sub`/`mosquitto_pub`, MQTT-SN
//! devices on real UDP sockets.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mosquitto::Mosquitto;
use common::mqtt_tools::{publish, subscriber};
use common::{WAIT, connect, expect_message, start_gateway_with, upstream_to};
use sngate::client::Client;
use sngate::config::BridgeMode;
use sngate::proto::{QoS, SubscribeTopic};

fn name(topic: &str) -> SubscribeTopic {
    SubscribeTopic::Name(topic.to_owned())
}

fn mosquitto_addr(m: &Mosquitto) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], m.port))
}

/// Publishes `probe-N` on `topic` at `via` until `device` and `local` (a
/// subscriber on the embedded broker) each received one — the device's
/// subscription on its own session and the shared session's for local
/// clients are in place — then swallows every late probe everywhere.
async fn until_subscribed(
    via: SocketAddr,
    topic: &str,
    device: &mut Client,
    local: &common::mqtt_tools::Tool,
    upstream: &common::mqtt_tools::Tool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut device_ok, mut local_ok) = (false, false);
    for n in 0.. {
        assert!(Instant::now() < deadline, "{topic} never reached both");
        let (ok, out) = publish(via, &["-t", topic, "-q", "1", "-m", &format!("probe-{n}")]);
        assert!(ok, "mosquitto_pub failed: {out}");
        while let Ok(m) = device.recv_message(Duration::from_millis(200)).await {
            assert!(m.payload.starts_with(b"probe-"), "unexpected {m:?}");
            device_ok = true;
        }
        let lines = local.drain(Duration::from_millis(100));
        assert!(lines.iter().all(|l| l.starts_with(topic)), "{lines:?}");
        local_ok |= !lines.is_empty();
        if device_ok && local_ok {
            break;
        }
    }
    while device
        .recv_message(Duration::from_millis(300))
        .await
        .is_ok()
    {}
    for tool in [local, upstream] {
        let lines = tool.drain(Duration::from_millis(300));
        assert!(lines.iter().all(|l| l.starts_with(topic)), "{lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_delivers_exactly_once_in_per_device_mode() {
    let cloud = Mosquitto::start().await;
    let gw = start_gateway_with(|c| {
        let mut u = upstream_to(cloud.port, "gw-exactly-once");
        u.bridge_mode = BridgeMode::PerDevice;
        c.upstream = Some(u);
    })
    .await;
    let broker = gw.broker.expect("embedded broker");
    let mut a = connect(gw.addr, "dev-a").await;
    let mut b = connect(gw.addr, "dev-b").await;
    a.subscribe(name("site/#"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let local = subscriber(broker, "site/#", &["-q", "1"]);
    let upstream = subscriber(mosquitto_addr(&cloud), "site/#", &["-q", "1"]);
    // a's upstream subscription is made on its own session, the local
    // client's on the shared one: wait for both.
    until_subscribed(
        mosquitto_addr(&cloud),
        "site/probe",
        &mut a,
        &local,
        &upstream,
    )
    .await;

    // Device b → a (locally), the local client, the cloud: once each.
    b.publish_named(
        "site/b",
        Bytes::from_static(b"from-b"),
        QoS::AtLeastOnce,
        false,
    )
    .await
    .expect("b publishes");
    let m = expect_message(&mut a).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("site/b", &b"from-b"[..])
    );
    assert_eq!(local.next_message(), "site/b 1 0 from-b");
    assert_eq!(upstream.next_message(), "site/b 1 0 from-b");

    // Local client → a, the cloud: once each.
    let (ok, out) = publish(broker, &["-t", "site/local", "-q", "1", "-m", "from-local"]);
    assert!(ok, "{out}");
    let m = expect_message(&mut a).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("site/local", &b"from-local"[..])
    );
    assert_eq!(local.next_message(), "site/local 1 0 from-local");
    assert_eq!(upstream.next_message(), "site/local 1 0 from-local");

    // Cloud → a (its own session), the local client (the shared one): once each.
    let (ok, out) = publish(
        mosquitto_addr(&cloud),
        &["-t", "site/cloud", "-q", "1", "-m", "from-cloud"],
    );
    assert!(ok, "{out}");
    let m = expect_message(&mut a).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("site/cloud", &b"from-cloud"[..])
    );
    assert_eq!(local.next_message(), "site/cloud 1 0 from-cloud");
    assert_eq!(upstream.next_message(), "site/cloud 1 0 from-cloud");

    // Nothing more anywhere: no echo of the gateway's own messages.
    assert!(
        a.recv_message(Duration::from_millis(700)).await.is_err(),
        "a got a second copy"
    );
    local.expect_silence(Duration::from_millis(300));
    upstream.expect_silence(Duration::from_millis(300));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cloud_down_devices_connect_and_work_locally_then_catch_up() {
    let mut cloud = Mosquitto::start().await;
    let port = cloud.port;
    cloud.stop().await;
    let gw = start_gateway_with(|c| {
        let mut u = upstream_to(port, "gw-offline");
        u.bridge_mode = BridgeMode::PerDevice;
        c.upstream = Some(u);
    })
    .await;
    let started = Instant::now();
    let mut a = connect(gw.addr, "dev-a").await;
    assert!(
        started.elapsed() < WAIT,
        "an unreachable broker answers at once: the device is accepted to work offline"
    );
    let mut b = connect(gw.addr, "dev-b").await;
    a.subscribe(name("site/#"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    // QoS 1 acknowledged while the broker is down (queued), and routed
    // locally; retained, so the broker shows it whenever it arrived.
    b.publish_named(
        "site/b",
        Bytes::from_static(b"offline"),
        QoS::AtLeastOnce,
        true,
    )
    .await
    .expect("acknowledged while the broker is down");
    let m = expect_message(&mut a).await;
    assert_eq!(&m.payload[..], b"offline");

    // The broker comes back: b's session delivers what it queued.
    cloud.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let upstream = subscriber(mosquitto_addr(&cloud), "site/#", &["-q", "1"]);
        let lines = upstream.drain(Duration::from_millis(500));
        if lines.contains(&"site/b 1 1 offline".to_owned()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message queued while the broker was down never arrived: {lines:?}"
        );
    }
    gw.stop().await;
}
