//! `sngate sim`: the simulation library against a gateway started in-process
//! on an ephemeral port, with known loads whose every count is predictable;
//! and the real binary against a real `sngate run`, its JSON summary parsed.
//! Every wait is bounded: the simulation's own (client retries, the drain
//! time) and, for processes, a deadline on their output.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{KillOnDrop, connect, run_binary_gateway, start_gateway, start_gateway_with};
use sngate::client::ClientError;
use sngate::proto::{QoS, ReturnCode};
use sngate::sim::{self, QosReport, SimConfig, SimError, SimLength, SimReport, SleepCycle};

/// A simulation with a short retry timer and drain, so a failure shows fast.
fn config(gateway: std::net::SocketAddr, devices: usize) -> SimConfig {
    let mut cfg = SimConfig::new(gateway, devices);
    cfg.retry_interval = Duration::from_secs(1);
    cfg.drain = Duration::from_secs(5);
    cfg
}

fn qos(report: &SimReport, qos: i8) -> &QosReport {
    report
        .per_qos
        .iter()
        .find(|q| q.qos == qos)
        .unwrap_or_else(|| panic!("no QoS {qos} line in {report:#?}"))
}

fn assert_latency_ordered(report: &SimReport) {
    let l = report.latency.as_ref().expect("deliveries were timed");
    assert_eq!(l.samples, report.delivered);
    assert!(
        0 < l.p50_us && l.p50_us <= l.p99_us && l.p99_us <= l.max_us,
        "{l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_devices_at_qos_1_every_message_reaches_every_subscriber_once() {
    let gw = start_gateway().await;
    let mut cfg = config(gw.addr, 20);
    cfg.length = SimLength::Messages(25);
    cfg.rate = 50.0;
    cfg.qos = sim::QosMix::only(QoS::AtLeastOnce);
    cfg.subscribers = 5;
    cfg.payload_size = 100;
    let mut ticks = 0;
    let report = sim::run(cfg, |_| ticks += 1).await.expect("the run starts");

    assert_eq!(report.sent, 500);
    assert_eq!(report.acknowledged, 500);
    // Every subscriber gets every device's messages, its own included.
    assert_eq!(report.expected, 5 * 500);
    assert_eq!(report.delivered, report.expected);
    assert_eq!(report.lost, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.foreign, 0);
    assert_eq!((report.errors, report.failed_devices), (0, 0), "{report}");
    let q1 = qos(&report, 1);
    assert_eq!((q1.sent, q1.acknowledged, q1.lost), (500, 500, 0));
    assert_eq!(report.per_qos.len(), 1, "only QoS 1 was sent");
    assert_latency_ordered(&report);
    assert!(report.sent_per_sec > 0.0 && report.delivered_per_sec > 0.0);
    assert_eq!(
        (report.devices, report.subscribers, report.payload_bytes),
        (20, 5, 100)
    );
    let _ = ticks; // progress is best effort; a half-second run may see none
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos_mix_is_sent_in_its_proportions_and_foreign_traffic_is_told_apart() {
    let gw = start_gateway().await;
    // A retained message on the filter from outside the run: every
    // subscriber gets it on subscribing, and must not count it.
    let mut outsider = connect(gw.addr, "outsider").await;
    outsider
        .publish_named(
            "sngate/sim/elsewhere",
            &b"not a sim payload"[..],
            QoS::AtLeastOnce,
            true,
        )
        .await
        .expect("retained");
    let mut cfg = config(gw.addr, 10);
    cfg.length = SimLength::Messages(20);
    cfg.rate = 40.0;
    cfg.qos = "-1=20,0=40,1=40".parse().expect("mix");
    cfg.subscribers = 3;
    let report = sim::run(cfg, |_| {}).await.expect("the run starts");

    assert_eq!(report.sent, 200);
    let (minus, zero, one) = (qos(&report, -1), qos(&report, 0), qos(&report, 1));
    assert_eq!((minus.sent, zero.sent, one.sent), (40, 80, 80));
    assert_eq!(
        (minus.acknowledged, zero.acknowledged, one.acknowledged),
        (0, 0, 80)
    );
    for q in [minus, zero, one] {
        assert_eq!(q.expected, 3 * q.sent, "QoS {}", q.qos);
        assert_eq!(q.delivered + q.lost, q.expected, "QoS {}", q.qos);
        assert_eq!(q.duplicates, 0, "QoS {}", q.qos);
    }
    // At QoS 1 nothing may be lost; QoS 0 and −1 may be, and are counted.
    assert_eq!(one.lost, 0);
    assert_eq!(one.delivered, 240);
    assert_eq!(
        report.foreign, 3,
        "the retained message, once per subscriber"
    );
    assert_eq!((report.errors, report.failed_devices), (0, 0), "{report}");
    assert_latency_ordered(&report);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_subscribers_still_get_everything_at_qos_1() {
    let gw = start_gateway().await;
    let mut cfg = config(gw.addr, 6);
    cfg.length = SimLength::Messages(10);
    cfg.rate = 10.0;
    cfg.subscribers = 3;
    cfg.sleep = Some(SleepCycle {
        awake: Duration::from_millis(500),
        asleep_secs: 1,
    });
    // The first four sleep: three subscribers and a publisher.
    cfg.sleepers = 4;
    let report = sim::run(cfg, |_| {}).await.expect("the run starts");

    assert_eq!(report.sleepers, 4);
    assert_eq!(report.sent, 60);
    assert_eq!(report.acknowledged, 60);
    assert_eq!(report.expected, 3 * 60);
    assert_eq!(report.delivered, report.expected, "{report}");
    assert_eq!((report.lost, report.duplicates), (0, 0));
    assert_eq!((report.errors, report.failed_devices), (0, 0), "{report}");
    assert_latency_ordered(&report);
    // Messages waited in the gateway while their subscriber slept.
    let l = report.latency.as_ref().expect("timed");
    assert!(l.max_us >= 500_000, "nothing was held over a sleep: {l:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_stops_the_run_with_the_gateway_s_answer() {
    let gw = start_gateway_with(|c| c.limits.max_clients = 3).await;
    let cfg = config(gw.addr, 5);
    let err = sim::run(cfg, |_| {})
        .await
        .expect_err("two devices find no room");
    match &err {
        SimError::Connect {
            source: ClientError::Rejected(ReturnCode::Congestion),
            ..
        } => {}
        other => panic!("expected a refused CONNECT, got {other:?}"),
    }
    assert!(
        err.to_string().contains("cannot connect to the gateway at"),
        "{err}"
    );
    gw.stop().await;
}

// ------------------------------------------------------------ the binary

fn sngate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sngate"));
    c.env_remove("RUST_LOG").env_remove("SNGATE_CONFIG");
    c
}

/// Runs `sngate ARGS` to completion within `within`: (exit code, stdout,
/// stderr). The child is killed if the deadline passes.
fn run_bounded(args: &[&str], within: Duration) -> (i32, String, String) {
    let mut child = sngate()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sngate starts");
    let (mut stdout, mut stderr) = (
        child.stdout.take().expect("piped stdout"),
        child.stderr.take().expect("piped stderr"),
    );
    let mut child = KillOnDrop(child);
    let (tx, done) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send((true, s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx2.send((false, s));
    });
    let deadline = std::time::Instant::now() + within;
    let (mut out, mut err) = (None, None);
    while out.is_none() || err.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (is_out, text) = done
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("sngate {args:?} did not finish within {within:?}"));
        if is_out {
            out = Some(text);
        } else {
            err = Some(text);
        }
    }
    let status = child.wait().expect("sngate exits");
    (
        status.code().unwrap_or(-1),
        out.unwrap_or_default(),
        err.unwrap_or_default(),
    )
}

#[test]
fn the_binary_prints_a_json_summary_against_a_running_gateway() {
    let (_gateway, addr) = run_binary_gateway();
    let (code, stdout, stderr) = run_bounded(
        &[
            "sim",
            "--gateway",
            &addr,
            "-n",
            "10",
            "-c",
            "10",
            "-r",
            "20",
            "--qos",
            "0=50,1=50",
            "--subscribers",
            "2",
            "--payload-size",
            "48",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.is_empty(),
        "no progress when stderr is not a terminal: {stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("the summary is JSON");
    let n = |key: &str| {
        json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {json}"))
    };
    assert_eq!(n("devices"), 10);
    assert_eq!(n("sent"), 100);
    assert_eq!(n("acknowledged"), 50);
    assert_eq!(n("expected"), 200);
    assert_eq!(n("payload_bytes"), 48);
    let per_qos = json["per_qos"].as_array().expect("per_qos");
    assert_eq!(per_qos.len(), 2);
    let q1 = per_qos
        .iter()
        .find(|q| q["qos"] == 1)
        .expect("a QoS 1 line");
    assert_eq!(
        (q1["sent"].as_u64(), q1["lost"].as_u64()),
        (Some(50), Some(0))
    );
    assert_eq!(q1["delivered"].as_u64(), Some(100));
    assert_eq!(n("duplicates"), 0);
    assert_eq!(n("delivered") + n("lost"), 200);
    let latency = &json["latency"];
    let (p50, p99, max) = (
        latency["p50_us"].as_u64().expect("p50"),
        latency["p99_us"].as_u64().expect("p99"),
        latency["max_us"].as_u64().expect("max"),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
    assert!(json["sent_per_sec"].as_f64().is_some_and(|r| r > 0.0));
}

#[test]
fn the_binary_shows_progress_and_a_text_summary_when_asked() {
    let (_gateway, addr) = run_binary_gateway();
    let (code, stdout, stderr) = run_bounded(
        &[
            "sim",
            "--gateway",
            &addr,
            "-n",
            "4",
            "--duration",
            "1.5",
            "-r",
            "10",
            "--progress",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("] sent "),
        "a progress line each second: {stderr:?}"
    );
    for needle in [
        "sent ",
        "delivered ",
        "latency ",
        "p50 ",
        "p99 ",
        "lost 0",
        "duplicates 0",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in {stdout}");
    }
}

#[test]
fn an_unreachable_gateway_is_a_clear_error_not_a_hang() {
    // A port that was just free: nothing listens there.
    let addr = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").to_string()
    };
    let started = std::time::Instant::now();
    // The defaults: 2 s retry, 3 retries.
    let (code, stdout, stderr) = run_bounded(
        &["sim", "--gateway", &addr, "-n", "50"],
        Duration::from_secs(20),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "no summary: {stdout}");
    assert!(
        stderr.contains(&format!("cannot connect to the gateway at {addr}"))
            && stderr.contains("unreachable"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    let (code, _, stderr) = run_bounded(&["sim", "--qos", "0=60,1=60"], Duration::from_secs(10));
    assert_eq!(code, 2, "a bad mix is a usage error: {stderr}");
    assert!(stderr.contains("100 %"), "{stderr}");
}
