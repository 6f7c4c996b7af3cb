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
use common::{KillOnDrop, RawDevice, metrics_page, run_binary_gateway, start_gateway_with};
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
    let page = metrics_page(&gw.running().queries()).await;
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
    // four per address, never a word after; `pause` between CONNECTs.
    let flood_connects = |from: usize, to: usize, target: SocketAddr, pause: Duration| {
        for i in from..to {
            let [_, _, c, d] = u32::try_from(i / 4 + 256 + 1).expect("small").to_be_bytes();
            let Ok(socket) = UdpSocket::bind(SocketAddr::from(([127, 0, c, d], 0))) else {
                continue;
            };
            let _ = socket.send_to(&connect_packet(&format!("silent-{i}"), u16::MAX), target);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    };
    let target = gw.addr;
    tokio::task::spawn_blocking(move || flood_connects(0, 2 * max_clients, target, Duration::ZERO))
        .await
        .expect("flood");
    let queries = gw.running().queries();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = metrics_page(&queries).await;
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
    // The flood goes on, about 400 CONNECTs a second from new addresses,
    // while a new device connects, retrying every 250 ms as devices do.
    let flooding = tokio::task::spawn_blocking(move || {
        flood_connects(
            2 * max_clients,
            4 * max_clients,
            target,
            Duration::from_micros(2500),
        )
    });
    let device = RawDevice::new(gw.addr).await;
    let started = Instant::now();
    let connect = Packet::Connect {
        will: false,
        clean_session: true,
        protocol_id: PROTOCOL_ID_V1_2,
        duration: 60,
        client_id: "newcomer".into(),
    };
    loop {
        device.send(&connect).await;
        match device.recv().await {
            Packet::ConnAck {
                return_code: ReturnCode::Accepted,
            } => break,
            Packet::ConnAck {
                return_code: ReturnCode::Congestion,
            } => {}
            other => panic!("a CONNACK expected, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no place for a new device within 5 s of the flood"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Having spoken, it keeps its place while the flood evicts its own.
    ping(&device).await;
    assert!(!flooding.is_finished(), "the flood was still running");
    flooding.await.expect("flood");
    ping(&device).await;
    let page = metrics_page(&queries).await;
    let evicted = sample(&page, "sngate_sessions_evicted_unproven_total", "").unwrap_or(0.0);
    assert!(evicted >= max_clients as f64, "{evicted}");
    gw.stop().await;
}

#[test]
fn the_simulated_fleet_behind_one_address_loses_nothing_with_the_defaults() {
    let (_gateway, addr) = run_binary_gateway();
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
