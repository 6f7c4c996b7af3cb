//! Admission and ACLs end to end: a real gateway with a real ACL file in
//! mosquitto's format, the real `mosquitto_pub`/`mosquitto_sub` against the
//! embedded broker, and MQTT-SN devices on real UDP sockets.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::mqtt_tools::{Tool, host_port, publish, subscriber};
use common::{WAIT, connect, expect_message, options, start_gateway_with};
use sngate::client::{Client, ClientError};
use sngate::proto::{QoS, ReturnCode, SubscribeTopic};

const ACL: &str = "\
# Anonymous clients (every MQTT-SN device, mosquitto tools without -u).
topic read cmd/#
pattern write sensors/%c/#

user app
topic read sensors/#
topic write cmd/#
";

fn acl_file() -> tempfile::TempPath {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, ACL.as_bytes()).expect("write ACL");
    file.into_temp_path()
}

/// `sngate_drops_total{reason="acl_denied"}` from the metrics.
async fn acl_denials(gw: &common::TestGateway) -> u64 {
    let page = gw
        .running()
        .queries()
        .metrics(WAIT)
        .await
        .expect("metrics")
        .render();
    let line = page
        .lines()
        .find(|l| l.starts_with("sngate_drops_total{reason=\"acl_denied\"}"))
        .unwrap_or_else(|| panic!("no acl_denied counter in\n{page}"));
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad sample {line}"))
}

fn name(topic: &str) -> SubscribeTopic {
    SubscribeTopic::Name(topic.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_file_governs_devices_and_mosquitto_clients() {
    let path = acl_file();
    let gw = start_gateway_with(|c| c.security.acl_file = Some(path.to_path_buf())).await;
    let broker = gw.broker.expect("broker enabled");

    // The app may read sensors/#: its SUBSCRIBE is granted.
    let app = subscriber(broker, "sensors/#", &["-u", "app", "-q", "1"]);
    let mut device = connect(gw.addr, "n1").await;
    device
        .publish_named("sensors/n1/t", Bytes::from("21"), QoS::AtLeastOnce, false)
        .await
        .expect("own topic accepted");
    assert_eq!(app.next_message(), "sensors/n1/t 1 0 21");
    // Another device's topic: PUBACK "rejected: not supported".
    match device
        .publish_named("sensors/n2/t", Bytes::from("x"), QoS::AtLeastOnce, false)
        .await
    {
        Err(ClientError::Rejected(ReturnCode::NotSupported)) => {}
        other => panic!("expected a rejection, got {other:?}"),
    }

    // The device may read cmd/#; the app may write it.
    device
        .subscribe(name("cmd/#"), QoS::AtLeastOnce)
        .await
        .expect("subscribe cmd/#");
    let (ok, out) = publish(
        broker,
        &["-u", "app", "-t", "cmd/led", "-q", "1", "-m", "on"],
    );
    assert!(ok, "{out}");
    let msg = expect_message(&mut device).await;
    assert_eq!(
        (msg.topic.as_str(), &msg.payload[..]),
        ("cmd/led", &b"on"[..])
    );
    // A device may not subscribe where it cannot read.
    match device.subscribe(name("sensors/#"), QoS::AtMostOnce).await {
        Err(ClientError::Rejected(ReturnCode::NotSupported)) => {}
        other => panic!("expected a rejecting SUBACK, got {other:?}"),
    }

    // An anonymous mosquitto_pub may not write sensors/x: acknowledged (MQTT
    // 3.1.1 has no refusal) but never delivered.
    let (ok, out) = publish(broker, &["-t", "sensors/x", "-q", "1", "-m", "spoof"]);
    assert!(ok, "{out}");
    app.expect_silence(Duration::from_millis(300));

    // The app may not read cmd/#: SUBACK 0x80.
    let (host, port) = host_port(broker);
    let denied = Tool::spawn(
        "mosquitto_sub",
        &["-h", &host, "-p", &port, "-u", "app", "-t", "cmd/#", "-d"],
    );
    denied.expect_line("Subscribed (mid: 1): 128");

    // Denied: n2's publish, the device's sensors/# subscription, the spoofed
    // publish, the app's cmd/# subscription.
    assert_eq!(acl_denials(&gw).await, 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_not_on_the_allow_list_gets_connack_0x03() {
    let gw = start_gateway_with(|c| c.security.allow_clients = vec!["sensor-*".into()]).await;
    match Client::connect(gw.addr, options("intruder")).await {
        Err(ClientError::Rejected(ReturnCode::NotSupported)) => {}
        other => panic!("expected CONNACK 0x03, got {:?}", other.map(|_| ())),
    }
    let _ok = connect(gw.addr, "sensor-1").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outside_the_allowed_networks_gets_connack_0x03() {
    // Only a documentation network is allowed: loopback is outside it.
    let gw =
        start_gateway_with(|c| c.security.allow_udp_sources = vec!["192.0.2.0/24".into()]).await;
    match tokio::time::timeout(WAIT, Client::connect(gw.addr, options("sensor-1"))).await {
        Ok(Err(ClientError::Rejected(ReturnCode::NotSupported))) => {}
        other => panic!(
            "expected CONNACK 0x03, got {:?}",
            other.map(|r| r.map(|_| ()))
        ),
    }
    gw.stop().await;
}
