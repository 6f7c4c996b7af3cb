//! Fair admission and no lockout through real sockets, with the default
//! limits (the test configuration turns the per-source limit off; these
//! tests turn it back on): the simulator's fleet behind one address loses
//! nothing, a flooding socket beside a device does not starve it, and a new
//! device connects while silent CONNECTs from many addresses of 127.0.0.0/8
//! fill `max_clients`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::http::sample;
use common::{KillOnDrop, RawDevice, spawn_logged, start_gateway_with};
use sngate::config::{Config, LimitsConfig};
use sngate::proto::{self, PROTOCOL_ID_V1_2, Packet, ReturnCode};

/// The default rate limits, which the test configuration turns off.
fn default_limits(c: &mut Config) {
    let d = LimitsConfig::default();
    c.limits.per_source_packets_per_sec = d.per_source_packets_per_sec;
    c.limits.per_source_burst = d.per_source_burst;
    c.limits.per_session_packets_per_sec = d.per_session_packets_per_sec;
    c.limits.per_session_burst = d.per_session_burst;
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    proto::encode(packet, &mut buf).expect("encode");
    buf.to_vec()
}

fn connect_packet(client_id: &str, keep_alive: u16) -> Vec<u8> {
    encode(&Packet::Connect {
        will: false,
        clean_session: true,
        protocol_id: PROTOCOL_ID_V1_2,
        duration: keep_alive,
        client_id: client_id.to_owned(),
    })
}

/// Sends batches of `datagrams` from `socket` to `to`, about `per_sec` a
/// second, until `stop`.
fn flood(
    socket: UdpSocket,
    to: SocketAddr,
    datagram: Vec<u8>,
    per_sec: u32,
    stop: Arc<AtomicBool>,
) {
    let batch = (per_sec / 100).max(1);
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..batch {
            let _ = socket.send_to(&datagram, to);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn ping(device: &RawDevice) {
    device.send(&Packet::PingReq { client_id: None }).await;
    assert_eq!(device.recv().await, Packet::PingResp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_socket_beside_a_device_does_not_starve_it() {
    let gw = start_gateway_with(default_limits).await;
    let device = RawDevice::new(gw.addr).await;
    device.connect("device", true, 60).await;
    // Two floods from the device's own address, 20,000 datagrams a second
    // each (200 times the limits): one from a connected session, one from
    // a port with no session.
    let stop = Arc::new(AtomicBool::new(false));
    let session = UdpSocket::bind("127.0.0.1:0").expect("bind");
    session
        .send_to(&connect_packet("flooder", 60), gw.addr)
        .expect("send");
    let pingreq = encode(&Packet::PingReq { client_id: None });
    let floods: Vec<_> = [
        (session, pingreq.clone()),
        (UdpSocket::bind("127.0.0.1:0").expect("bind"), pingreq),
    ]
    .into_iter()
    .map(|(socket, datagram)| {
        let (to, stop) = (gw.addr, Arc::clone(&stop));
        std::thread::spawn(move || flood(socket, to, datagram, 20_000, stop))
    })
    .collect();
    // For two seconds the device pings ten times a second: every ping is
    // answered.
    for _ in 0..20 {
        ping(&device).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().expect("flood thread");
    }
    let page = gw
        .running()
        .queries()
        .metrics(Duration::from_secs(2))
        .await
        .expect("metrics")
        .render();
    let limited = sample(&page, "sngate_drops_total", "reason=\"rate_limited\"").unwrap_or(0.0);
    assert!(limited > 1000.0, "the floods were limited: {limited}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_connects_while_silent_connects_from_many_addresses_fill_max_clients() {
    let max_clients = 1000;
    let gw = start_gateway_with(|c| {
        default_limits(c);
        c.limits.max_clients = max_clients;
    })
    .await;
    // Silent CONNECTs (keep-alive 65,535 s) from 127.0.1.1, 127.0.1.2, …:
    // four per address, never a word after.
    let flood_connects = |from: usize, to: usize, target: SocketAddr| {
        for i in from..to {
            let [_, _, c, d] = u32::try_from(i / 4 + 256 + 1).expect("small").to_be_bytes();
            let Ok(socket) = UdpSocket::bind(SocketAddr::from(([127, 0, c, d], 0))) else {
                continue;
            };
            let _ = socket.send_to(&connect_packet(&format!("silent-{i}"), u16::MAX), target);
        }
    };
    let target = gw.addr;
    tokio::task::spawn_blocking(move || flood_connects(0, 2 * max_clients, target))
        .await
        .expect("flood");
    let queries = gw.running().queries();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = queries
            .metrics(Duration::from_secs(2))
            .await
            .expect("metrics")
            .render();
        let active = sample(&page, "sngate_devices", "state=\"active\"").unwrap_or(0.0);
        if active >= max_clients as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flood never filled max_clients"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The flood goes on while a new device connects.
    let flooding = tokio::task::spawn_blocking(move || {
        flood_connects(2 * max_clients, 4 * max_clients, target)
    });
    let device = RawDevice::new(gw.addr).await;
    let started = Instant::now();
    device
        .send(&Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: PROTOCOL_ID_V1_2,
            duration: 60,
            client_id: "newcomer".into(),
        })
        .await;
    assert_eq!(
        device.recv().await,
        Packet::ConnAck {
            return_code: ReturnCode::Accepted
        }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    flooding.await.expect("flood");
    // Its first word after the CONNACK may come after the flood has
    // evicted it (oldest first: here 2,000 CONNECTs later, faster than it
    // answered); then it is told DISCONNECT and, as devices do, connects
    // again. Either way it is served.
    device.send(&Packet::PingReq { client_id: None }).await;
    match device.recv().await {
        Packet::PingResp => {}
        Packet::Disconnect { duration: None } => {
            device.connect("newcomer", true, 60).await;
            ping(&device).await;
        }
        other => panic!("PINGRESP or DISCONNECT expected, got {other:?}"),
    }
    let page = queries
        .metrics(Duration::from_secs(2))
        .await
        .expect("metrics")
        .render();
    let evicted = sample(&page, "sngate_sessions_evicted_unproven_total", "").unwrap_or(0.0);
    assert!(evicted >= max_clients as f64, "{evicted}");
    gw.stop().await;
}

/// `sngate run` with the default configuration (but for an ephemeral UDP
/// port, no embedded broker, no store): where it listens.
fn run_gateway() -> (KillOnDrop, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
    cmd.args([
        "run",
        "--udp",
        "127.0.0.1:0",
        "--broker",
        "off",
        "--state-dir",
        "off",
        "--log-format",
        "text",
    ])
    .env_remove("RUST_LOG")
    .env_remove("SNGATE_CONFIG")
    .stdout(Stdio::null());
    let (child, lines) = spawn_logged(cmd);
    let line = common::wait_for_line(&lines, "listening on UDP");
    let addr = line
        .split("addr=")
        .nth(1)
        .map(|a| a.trim().to_owned())
        .expect("the bound address in the log");
    (child, addr)
}

#[test]
fn the_simulated_fleet_behind_one_address_loses_nothing_with_the_defaults() {
    let (_gateway, addr) = run_gateway();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_sngate"));
    sim.args([
        "sim",
        "--gateway",
        &addr,
        "-n",
        "100",
        "-r",
        "5",
        "-d",
        "5",
        "--subscribers",
        "1",
        "-q",
        "1",
        "--json",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let child = KillOnDrop(sim.spawn().expect("sngate sim starts"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let mut out = String::new();
        if let Some(mut stdout) = child.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        }
        let _ = tx.send((child.wait().ok().and_then(|s| s.code()), out));
    });
    let (code, stdout) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the simulation ends within a minute");
    assert_eq!(code, Some(0), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("the summary is JSON");
    let n = |key: &str| {
        json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {json}"))
    };
    assert_eq!(n("sent"), 2500, "{json}");
    assert_eq!(n("acknowledged"), 2500, "{json}");
    assert_eq!(n("expected"), 2500, "{json}");
    assert_eq!(n("delivered"), 2500, "{json}");
    assert_eq!(n("lost"), 0, "{json}");
}
