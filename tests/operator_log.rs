//! What the log tells an operator, through the real binary at its default
//! level: each device's life at info (connected with version, transport,
//! address, keep-alive and clean session; subscribed; asleep; woke; lost and
//! why; taken over; refused and why), drops at warn with their reason, the
//! per-packet trace for one client id only (`--trace-client`), and no
//! dependency noise. Also the PUBACK-before-echo order over a real socket.

mod common;

use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{KillOnDrop, RawDevice, logged_addr, spawn_logged};
use sngate::proto::{Packet, QoS, ReturnCode, SubscribeTopic, TopicRef};

/// The real `sngate run` at the default level, tracing the packets of
/// `dev-1` only; its UDP address and its log lines.
fn gateway() -> (KillOnDrop, std::net::SocketAddr, Receiver<String>) {
    let (child, lines) = spawn_logged(common::binary_gateway_command(&["--trace-client", "dev-1"]));
    let addr = logged_addr(&lines, "listening on UDP");
    (child, addr, lines)
}

/// Log lines seen so far, kept for the final checks.
struct Log {
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Log {
    /// A line with every one of `needles` — seen already, or within 10 s.
    fn expect(&mut self, needles: &[&str]) -> String {
        if let Some(line) = self
            .seen
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no log line with {needles:?}; seen:\n{}",
                    self.seen.join("\n")
                )
            });
            self.seen.push(line.clone());
            if needles.iter().all(|n| line.contains(n)) {
                return line;
            }
        }
    }
}

#[tokio::test]
async fn the_log_tells_each_devices_story_and_its_refusals() {
    let (_gw, addr, lines) = gateway();
    let mut log = Log {
        lines,
        seen: Vec::new(),
    };

    // Connected, with what an operator needs to know.
    let d1 = RawDevice::new(addr).await;
    d1.connect("dev-1", true, 30).await;
    let line = log.expect(&["client connected", "client=dev-1"]);
    for field in [
        " INFO ",
        "version=\"1.2\"",
        "transport=\"udp\"",
        &format!("address=udp:{}", d1.socket.local_addr().expect("addr")),
        "keep_alive_secs=30",
        "clean_session=true",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    // The packet trace for dev-1, one line per packet.
    log.expect(&[
        "TRACE",
        "sngate_core::packets",
        "client=dev-1",
        "received CONNECT",
    ]);

    // Subscribed.
    d1.subscribe(SubscribeTopic::Name("lab/echo".into()), QoS::AtLeastOnce)
        .await;
    log.expect(&[
        " INFO ",
        "subscribed",
        "client=dev-1",
        "filter=lab/echo",
        "qos=1",
    ]);

    // Asleep, then woke.
    d1.send(&Packet::Disconnect { duration: Some(45) }).await;
    assert_eq!(d1.recv().await, Packet::Disconnect { duration: None });
    log.expect(&[" INFO ", "client asleep", "client=dev-1", "sleep_secs=45"]);
    d1.send(&Packet::PingReq {
        client_id: Some("dev-1".into()),
    })
    .await;
    assert_eq!(d1.recv().await, Packet::PingResp);
    log.expect(&[" INFO ", "client woke", "client=dev-1"]);

    // Taken over: the same id from another address.
    let d3a = RawDevice::new(addr).await;
    d3a.connect("dev-3", false, 60).await;
    let d3b = RawDevice::new(addr).await;
    d3b.connect("dev-3", false, 60).await;
    log.expect(&[" INFO ", "session taken over", "client=dev-3"]);

    // Refused, and why.
    let refused = RawDevice::new(addr).await;
    refused
        .send(&Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 1,
            duration: 60,
            client_id: "x".repeat(100),
        })
        .await;
    assert_eq!(
        refused.recv().await,
        Packet::ConnAck {
            return_code: ReturnCode::NotSupported
        }
    );
    log.expect(&[" INFO ", "CONNECT refused", "client id empty or too long"]);

    // A drop at warn, with its reason: QoS −1 to an unknown predefined id.
    refused
        .send(&Packet::Publish {
            dup: false,
            qos: QoS::MinusOne,
            retain: false,
            topic: TopicRef::Predefined(4242),
            msg_id: 0,
            payload: "lost".into(),
        })
        .await;
    log.expect(&[
        " WARN ",
        "dropped:",
        "reason=\"qos_minus_one_refused\"",
        "count=1",
    ]);

    // Lost, and why: keep-alive 1 s, then silence.
    let d2 = RawDevice::new(addr).await;
    d2.connect("dev-2", true, 1).await;
    log.expect(&[" INFO ", "client lost", "client=dev-2", "why="]);

    // The trace is for dev-1 only; no dependency noise at info.
    for line in &log.seen {
        if line.contains("sngate_core::packets") {
            assert!(
                line.contains("client=dev-1"),
                "traced another client: {line}"
            );
        }
        assert!(
            !line.contains("fjall") && !line.contains("rumqttc") && !line.contains("lsm_tree"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn the_puback_reaches_a_subscribed_publisher_before_its_own_message() {
    let (_gw, addr, _lines) = gateway();
    let d = RawDevice::new(addr).await;
    d.connect("pub0sub1", true, 60).await;
    d.send(&Packet::Subscribe {
        dup: false,
        qos: QoS::AtLeastOnce,
        msg_id: 1,
        topic: SubscribeTopic::Name("MQTTSN/test".into()),
    })
    .await;
    let topic_id = match d.recv().await {
        Packet::SubAck { topic_id, .. } => topic_id,
        other => panic!("expected SUBACK, got {other:?}"),
    };
    d.send(&Packet::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicRef::Id(topic_id),
        msg_id: 2,
        payload: "hello".into(),
    })
    .await;
    assert_eq!(
        d.recv().await,
        Packet::PubAck {
            topic_id,
            msg_id: 2,
            return_code: ReturnCode::Accepted
        },
        "the PUBACK comes first"
    );
    match d.recv().await {
        Packet::Publish { payload, .. } => assert_eq!(&payload[..], b"hello"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[tokio::test]
async fn a_closed_stderr_loses_log_lines_but_never_the_gateway() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .args([
            "run",
            "--udp",
            "127.0.0.1:0",
            "--broker",
            "off",
            "--state-dir",
            "off",
        ])
        .env_remove("RUST_LOG")
        .env_remove("SNGATE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sngate starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let _child = KillOnDrop(child);
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    while !line.contains("listening on UDP") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("a log line") > 0,
            "stderr ended"
        );
    }
    let addr: std::net::SocketAddr = line
        .rsplit("addr=")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .expect("the UDP address");
    // The log's reader goes away; every connect below writes log lines.
    drop(reader);
    for i in 0..5 {
        RawDevice::new(addr)
            .await
            .connect(&format!("after-close-{i}"), true, 60)
            .await;
    }
}
