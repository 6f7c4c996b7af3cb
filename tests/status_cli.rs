//! `sngate status` against the real binary running with devices: the
//! summary counts them by state, lists the busiest, and shows the drops;
//! without an endpoint it says how to give one.

mod common;

use std::process::Command;

use common::{RawDevice, connect, spawn_logged, wait_for_line};
use sngate::proto::{Packet, QoS, TopicRef};

#[tokio::test]
async fn status_summarises_a_running_gateway() {
    let (_gw, lines) = spawn_logged(common::binary_gateway_command(&["--http", "127.0.0.1:0"]));
    let udp = common::logged_addr(&lines, "listening on UDP");
    let http = common::logged_addr(&lines, "HTTP endpoint listening");

    let _active = connect(udp, "meter-1").await;
    let mut sleepy = connect(udp, "meter-2").await;
    sleepy.sleep(120).await.expect("sleep");
    let stray = RawDevice::new(udp).await;
    stray
        .send(&Packet::Publish {
            dup: false,
            qos: QoS::MinusOne,
            retain: false,
            topic: TopicRef::Predefined(777),
            msg_id: 0,
            payload: "x".into(),
        })
        .await;
    wait_for_line(&lines, "dropped:");

    let out = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .args(["status", "--http", &http.to_string()])
        .env_remove("SNGATE_CONFIG")
        .output()
        .expect("sngate status runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("sngate gateway 1 · v"), "{text}");
    assert!(text.contains("upstream: none"), "{text}");
    assert!(text.contains("devices: 2 — active 1, asleep 1"), "{text}");
    assert!(text.contains("drops: qos_minus_one_refused 1"), "{text}");
    assert!(text.contains("busiest devices (2 of 2"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("meter-2") && l.contains("asleep")),
        "{text}"
    );
}

#[test]
fn status_without_an_endpoint_says_how_to_give_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .arg("status")
        .env_remove("SNGATE_CONFIG")
        .output()
        .expect("sngate status runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http ADDR"), "{err}");
}

#[test]
fn status_of_a_gateway_that_is_not_there_fails_with_the_address() {
    // A port nobody listens on: bound, then freed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let out = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .args(["status", "--http", &addr.to_string()])
        .output()
        .expect("sngate status runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("http://{addr}/status")), "{err}");
}
