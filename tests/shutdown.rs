//! Graceful shutdown: new input is refused, deliveries under way — to
//! devices and through the bridge to a real mosquitto — are finished within
//! the bound, and a broker that never answers cannot hold the process past
//! it; the log says what was left.

mod common;

use common::{spawn_logged, wait_for_line};

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mosquitto::Mosquitto;
use common::{RawDevice, connect, options, start_gateway_with, upstream_to, wait_for_drain};
use sngate::client::Client;
use sngate::proto::{Packet, QoS, ReturnCode, SubscribeTopic, TopicRef};

/// A subscriber on the broker forwarding payloads of `filter` (and
/// "<suback>" once subscribed) to a channel.
async fn broker_subscriber(
    port: u16,
    filter: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let mut mqtt = rumqttc::MqttOptions::new("sd-sub", "127.0.0.1", port);
    mqtt.set_keep_alive(Duration::from_secs(30));
    let (sub, mut events) = rumqttc::AsyncClient::new(mqtt, 1000);
    sub.subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe request");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _keep = sub;
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
    let suback = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(suback.ok().flatten().as_deref(), Some("<suback>"));
    rx
}

#[tokio::test]
async fn qos1_messages_handed_to_the_bridge_before_shutdown_all_reach_mosquitto() {
    let broker = Mosquitto::start().await;
    let port = broker.port;
    let gw = start_gateway_with(|c| {
        c.upstream = Some(upstream_to(port, "sngate-shutdown"));
        c.gateway.shutdown_grace_secs = 10;
    })
    .await;
    let mut received = broker_subscriber(port, "sd/#").await;
    let mut device = connect(gw.addr, "sd-device").await;
    let id = device.register("sd/data").await.expect("register");
    device
        .publish(TopicRef::Id(id), "warm-up", QoS::AtLeastOnce, false)
        .await
        .expect("warm-up acknowledged");
    let first = tokio::time::timeout(Duration::from_secs(10), received.recv()).await;
    assert_eq!(first.ok().flatten().as_deref(), Some("warm-up"));

    // The broker stops answering: what the device publishes now is
    // acknowledged by the gateway (the bridge has room) and waits in the
    // bridge's outbox when shutdown begins.
    broker.freeze();
    const N: usize = 20;
    for i in 0..N {
        device
            .publish(TopicRef::Id(id), format!("m{i}"), QoS::AtLeastOnce, false)
            .await
            .expect("acknowledged by the gateway");
    }
    let queries = gw.running().queries();
    let running = gw.into_running();
    let shutdown = tokio::spawn(running.shutdown_within(Duration::from_secs(10)));
    // Once the drain is under way, the broker comes back.
    wait_for_drain(&queries).await;
    broker.thaw();
    let report = tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown within its bound")
        .expect("driver task")
        .expect("clean shutdown");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.upstream_unacknowledged, 0);

    let mut got = Vec::new();
    while got.len() < N {
        match tokio::time::timeout(Duration::from_secs(10), received.recv()).await {
            Ok(Some(m)) if !got.contains(&m) => got.push(m),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "every message handed over arrives, in order");
}

#[tokio::test]
async fn a_delivery_in_flight_to_a_device_is_finished_and_new_work_refused() {
    let gw = start_gateway_with(|c| c.gateway.shutdown_grace_secs = 10).await;
    let subscriber = RawDevice::new(gw.addr).await;
    subscriber.connect("slow-acker", true, 60).await;
    subscriber
        .subscribe(SubscribeTopic::Short(*b"ab"), QoS::AtLeastOnce)
        .await;
    let mut publisher = connect(gw.addr, "pub").await;
    publisher
        .publish(TopicRef::Short(*b"ab"), "x", QoS::AtLeastOnce, false)
        .await
        .expect("published");
    let Packet::Publish { msg_id, .. } = subscriber.recv().await else {
        panic!("a PUBLISH for the subscriber");
    };

    let queries = gw.running().queries();
    let addr = gw.addr;
    let shutdown = tokio::spawn(gw.into_running().shutdown_within(Duration::from_secs(10)));
    wait_for_drain(&queries).await;
    // New work is refused meanwhile: a newcomer's CONNECT gets no CONNACK.
    let late = Client::connect(addr, options("late").retry(Duration::from_millis(200), 1)).await;
    assert!(late.is_err(), "a CONNECT was accepted while shutting down");

    let held = Instant::now();
    subscriber
        .send(&Packet::PubAck {
            topic_id: TopicRef::Short(*b"ab").raw(),
            msg_id,
            return_code: ReturnCode::Accepted,
        })
        .await;
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown ends once the delivery is acknowledged")
        .expect("driver task")
        .expect("clean shutdown");
    assert!(report.is_complete(), "{report:?}");
    // It waited for the acknowledgement (the refused CONNECT alone took
    // 400 ms), and ended on it rather than at its 10 s bound.
    assert!(report.elapsed >= Duration::from_millis(400), "{report:?}");
    assert!(
        held.elapsed() < Duration::from_secs(2),
        "shutdown took {:?} after the acknowledgement",
        held.elapsed()
    );
}

#[test]
fn a_frozen_broker_cannot_hold_the_process_past_its_grace_period() {
    const GRACE_SECS: u64 = 2;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = runtime.block_on(Mosquitto::start());
    let mut config = tempfile::NamedTempFile::new().expect("config file");
    write!(
        config,
        "[gateway]\nshutdown_grace_secs = {GRACE_SECS}\n\
         [udp]\nlisten = [\"127.0.0.1:0\"]\n\
         [upstream]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"sngate-frozen\"\n\
         reconnect_min_secs = 1\nreconnect_max_secs = 1\n",
        broker.port
    )
    .expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
    cmd.args([
        "run",
        "--broker",
        "off",
        "--state-dir",
        "off",
        "--log-format",
        "text",
        "--config",
    ])
    .arg(config.path())
    .env_remove("RUST_LOG")
    .env_remove("SNGATE_CONFIG");
    let (mut child, lines) = spawn_logged(cmd);
    let listening = wait_for_line(&lines, "listening on UDP");
    let addr = listening
        .split("addr=")
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .expect("the bound address in the log");
    wait_for_line(&lines, "upstream broker connected");

    broker.freeze();
    const N: usize = 5;
    runtime.block_on(async {
        let mut device = Client::connect(addr, options("frozen-device"))
            .await
            .expect("device connects");
        let id = device.register("fz/data").await.expect("register");
        for i in 0..N {
            device
                .publish(TopicRef::Id(id), format!("m{i}"), QoS::AtLeastOnce, false)
                .await
                .expect("acknowledged by the gateway");
        }
    });
    let asked = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok);
    let left = wait_for_line(&lines, "messages left undelivered");
    assert!(
        left.contains(&format!("upstream_unacknowledged={N}")),
        "{left}"
    );
    let margin = Duration::from_secs(3);
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(GRACE_SECS) + margin,
            "still running {:?} after SIGTERM",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        asked.elapsed() >= Duration::from_secs(GRACE_SECS),
        "it waited for the broker for its grace period"
    );
    broker.thaw();
    drop(broker);
}
