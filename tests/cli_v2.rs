//! `sngate pub/sub --protocol 2` (issue 21): the real binary speaking
//! MQTT-SN 2.0 to a gateway bridged to a real mosquitto, beside the same
//! tools speaking 1.2 and an MQTT client on the broker. Every wait is on
//! output or a message, with a deadline.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::checker::Checker;
use common::mosquitto::Mosquitto;
use common::{KillOnDrop, start_gateway_with, upstream_to};

fn sngate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sngate"))
}

/// Runs `sngate pub` to completion; returns (exit code, stderr).
fn publish(gateway: &str, args: &[&str]) -> (i32, String) {
    let out = sngate()
        .args(["pub", "--gateway", gateway])
        .args(args)
        .output()
        .expect("sngate pub runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `sngate sub`; its stdout lines arrive on the returned channel.
fn subscribe(gateway: &str, args: &[&str]) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut child = sngate()
        .args(["sub", "--gateway", gateway])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sngate sub runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (KillOnDrop(child), rx)
}

fn next_line(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a line from sngate sub within 10 s")
}

/// 2.0 publications (QoS 1 by full name, QoS 2, PUBWOS) reach the MQTT
/// client; a 2.0 subscriber then gets them, a 1.2 device's and the MQTT
/// client's (retained, through the broker); a 1.2 subscriber gets the 2.0
/// ones too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_speak_2_0_beside_1_2_through_mosquitto() {
    let broker = Mosquitto::start().await;
    let gw =
        start_gateway_with(|c| c.upstream = Some(upstream_to(broker.port, "sngate-cli-v2"))).await;
    let mut mqtt = Checker::connect(broker.port, "cli-v2-watcher").await;
    mqtt.subscribe("v2cli/#").await;
    let addr = gw.addr.to_string();

    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        for args in [
            &[
                "--protocol",
                "2",
                "-t",
                "v2cli/q1",
                "-m",
                "one",
                "-q",
                "1",
                "-r",
            ][..],
            &[
                "--protocol",
                "2",
                "-t",
                "v2cli/q2",
                "-m",
                "two",
                "-q",
                "2",
                "-r",
            ],
            &[
                "--protocol",
                "2",
                "-t",
                "v2cli/wos",
                "-m",
                "wos",
                "-q",
                "-1",
                "-r",
            ],
            &[
                "--protocol",
                "1.2",
                "-t",
                "v2cli/old",
                "-m",
                "old",
                "-q",
                "1",
                "-r",
            ],
        ] {
            let (code, stderr) = publish(&a, args);
            assert_eq!(code, 0, "sngate pub {args:?}: {stderr}");
        }
    })
    .await
    .expect("publishers");
    let seen: BTreeSet<_> = mqtt
        .collect(Duration::from_secs(10), |got| got.len() >= 4)
        .await
        .into_iter()
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("v2cli/q1", "one"),
        ("v2cli/q2", "two"),
        ("v2cli/wos", "wos"),
        ("v2cli/old", "old"),
    ]
    .into_iter()
    .map(|(t, p)| (t.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(seen, expected, "the MQTT client sees every publication");
    mqtt.publish("v2cli/mqtt", "from mqtt", true).await;

    tokio::task::spawn_blocking(move || {
        let mut expected = expected;
        expected.insert(("v2cli/mqtt".into(), "from mqtt".into()));
        let (mut sub, rx) = subscribe(
            &addr,
            &[
                "--protocol",
                "2",
                "-t",
                "v2cli/#",
                "-q",
                "1",
                "-C",
                "5",
                "-v",
            ],
        );
        let got: BTreeSet<_> = (0..5)
            .map(|_| {
                let line = next_line(&rx);
                let (t, p) = line.split_once(' ').expect("topic payload");
                (t.to_owned(), p.to_owned())
            })
            .collect();
        assert_eq!(
            got, expected,
            "the 2.0 subscriber gets every retained message"
        );
        assert!(sub.wait().expect("sub exits").success());

        // A 1.2 subscriber sees what the 2.0 tool published.
        let (mut old, rx) = subscribe(&addr, &["-t", "v2cli/q1", "-C", "1", "-v"]);
        assert_eq!(next_line(&rx), "v2cli/q1 one");
        assert!(old.wait().expect("sub exits").success());

        // A usage error, not a silent 1.2 fallback.
        let (code, stderr) = publish(&addr, &["--protocol", "3", "-t", "x", "-m", "y"]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("1.2 or 2"), "{stderr}");
    })
    .await
    .expect("subscribers");
}

/// `sngate sim --protocol mixed`: a fleet of 1.2 and 2.0 devices on one
/// port, subscribers of both versions; every QoS 1 and 2 message from every
/// device reaches every subscriber exactly once, through mosquitto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_runs_a_mixed_fleet_of_1_2_and_2_0_devices() {
    let broker = Mosquitto::start().await;
    let gw =
        start_gateway_with(|c| c.upstream = Some(upstream_to(broker.port, "sngate-sim-v2"))).await;
    let addr = gw.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        sngate()
            .env_remove("RUST_LOG")
            .args(["sim", "--gateway", &addr, "--protocol", "mixed"])
            .args(["-n", "8", "-c", "10", "-r", "20", "--qos", "1=50,2=50"])
            .args([
                "--subscribers",
                "4",
                "--drain",
                "5",
                "--retry",
                "1",
                "--json",
            ])
            .output()
            .expect("sngate sim runs")
    })
    .await
    .expect("sim");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the summary is JSON");
    let n = |key: &str| {
        json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {json}"))
    };
    assert_eq!((n("devices"), n("subscribers")), (8, 4));
    assert_eq!((n("sent"), n("acknowledged")), (80, 80));
    assert_eq!(n("expected"), 4 * 80);
    assert_eq!(
        (n("delivered"), n("lost"), n("duplicates")),
        (320, 0, 0),
        "{json}"
    );
    assert_eq!((n("errors"), n("failed_devices")), (0, 0), "{json}");

    // A version the flag does not know is a usage error.
    assert!(
        !sngate()
            .args(["sim", "--protocol", "1.3"])
            .output()
            .expect("sngate sim runs")
            .status
            .success()
    );
}

/// `sngate sim --protocol mixed --sleep`: sleeping devices of both versions
/// (2.0: SLEEPREQ, woken by PINGREQ) still get every QoS 1 message, held
/// in the gateway while they slept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_2_0_subscribers_still_get_everything_at_qos_1() {
    let broker = Mosquitto::start().await;
    let gw =
        start_gateway_with(|c| c.upstream = Some(upstream_to(broker.port, "sngate-sim-sleep")))
            .await;
    let addr = gw.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        sngate()
            .env_remove("RUST_LOG")
            .args(["sim", "--gateway", &addr, "--protocol", "mixed"])
            .args([
                "-n",
                "6",
                "-c",
                "10",
                "-r",
                "10",
                "--qos",
                "1",
                "--sub-qos",
                "1",
            ])
            .args(["--subscribers", "4", "--sleep", "0.5:1", "--sleepers", "4"])
            .args(["--drain", "5", "--retry", "1", "--json"])
            .output()
            .expect("sngate sim runs")
    })
    .await
    .expect("sim");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the summary is JSON");
    let n = |key: &str| {
        json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {json}"))
    };
    assert_eq!((n("sleepers"), n("sent"), n("acknowledged")), (4, 60, 60));
    assert_eq!(n("expected"), 4 * 60);
    assert_eq!(
        (n("delivered"), n("lost"), n("duplicates")),
        (240, 0, 0),
        "{json}"
    );
    assert_eq!((n("errors"), n("failed_devices")), (0, 0), "{json}");
    let max_us = json["latency"]["max_us"].as_u64().expect("latency");
    assert!(
        max_us >= 500_000,
        "nothing was held over a sleep: {max_us} µs"
    );
}
