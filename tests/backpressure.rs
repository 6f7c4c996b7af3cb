//! Backpressure from the upstream bridge to devices, end to end: a device's
//! QoS 1 PUBLISH is acknowledged only when the bridge has room for it, so a
//! slow or stalled broker makes devices wait instead of losing messages they
//! were told are safe. Real mosquitto (frozen with SIGSTOP to stall it), real
//! UDP, the in-process gateway.

mod common;

use std::time::Duration;

use common::mosquitto::{Mosquitto, MosquittoOptions};
use common::{options, start_gateway_with, upstream_to};
use sngate::client::{Client, ClientError};
use sngate::config::UpstreamConfig;
use sngate::proto::{QoS, TopicRef};

const ROOM: usize = 50;

#[tokio::test]
async fn a_stalled_broker_stops_acknowledgements_at_the_bridge_bound_and_loses_nothing() {
    let broker = Mosquitto::start_with(MosquittoOptions {
        max_queued_messages: Some(0),
        ..MosquittoOptions::default()
    })
    .await;
    let port = broker.port;
    let gw = start_gateway_with(|c| {
        c.upstream = Some(UpstreamConfig {
            max_pending_messages: ROOM,
            ..upstream_to(port, "sngate-backpressure")
        });
    })
    .await;

    // An MQTT subscriber on the broker sees what gets through.
    let mut mqtt = rumqttc::MqttOptions::new("bp-sub", "127.0.0.1", port);
    mqtt.set_keep_alive(Duration::from_secs(30));
    let (sub, mut events) = rumqttc::AsyncClient::new(mqtt, 1000);
    sub.subscribe("bp/#", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe request");
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            match ev {
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    let _ = tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                }
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    let _ = tx.send("<suback>".to_owned());
                }
                _ => {}
            }
        }
    });
    let suback = tokio::time::timeout(Duration::from_secs(10), received.recv()).await;
    assert_eq!(suback.ok().flatten().as_deref(), Some("<suback>"));

    let mut device = Client::connect(
        gw.addr,
        options("bp-device").retry(Duration::from_millis(300), 1),
    )
    .await
    .expect("device connects");
    let id = device.register("bp/data").await.expect("register");
    // A first message proves the bridge is connected and the subscriber ready.
    device
        .publish(TopicRef::Id(id), "warm-up", QoS::AtLeastOnce, false)
        .await
        .expect("warm-up acknowledged");
    let first = tokio::time::timeout(Duration::from_secs(10), received.recv()).await;
    assert_eq!(first.ok().flatten().as_deref(), Some("warm-up"));

    // Stall the broker: nothing is acknowledged upstream any more.
    broker.freeze();
    let mut acked = 0;
    let mut refused_at = None;
    for i in 0..ROOM * 3 {
        match device
            .publish(TopicRef::Id(id), format!("m{i}"), QoS::AtLeastOnce, false)
            .await
        {
            Ok(()) => acked += 1,
            Err(ClientError::Timeout { .. }) => {
                refused_at = Some(i);
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // The room is the bridge's bound, less what rumqttc still counts as ours.
    assert!(
        refused_at.is_some(),
        "the device kept getting PUBACKs with the broker stalled: {acked} acknowledged"
    );
    assert!(
        acked <= ROOM,
        "{acked} acknowledged while the bridge holds at most {ROOM}"
    );

    // Thaw: everything acknowledged arrives, in order, plus the one that waited.
    broker.thaw();
    let mut got = Vec::new();
    while got.len() < acked + 1 {
        match tokio::time::timeout(Duration::from_secs(10), received.recv()).await {
            Ok(Some(m)) => {
                if !got.contains(&m) {
                    got.push(m);
                }
            }
            _ => break,
        }
    }
    let expected: Vec<String> = (0..=acked).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "acknowledged messages all arrive, in order");
    gw.stop().await;
}
