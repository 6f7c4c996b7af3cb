//! Several gateways in aggregate mode on one broker (issue 23): each keeps
//! its topics apart with the `{gateway}` placeholder in one shared rules
//! file, a device on one gateway hears a device on the other exactly once,
//! no gateway gets its own messages back from the broker (MQTT 5 No Local;
//! the echo log on MQTT 3.1.1), and nothing loops: the broker sees each
//! message once. Real mosquitto, two in-process gateways, devices on real
//! UDP sockets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::mosquitto::{Mosquitto, MosquittoOptions};
use common::mqtt_tools::subscriber;
use common::{TestGateway, connect, start_gateway_with, upstream_to};
use sngate::config::{BridgeRule, Direction};
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
