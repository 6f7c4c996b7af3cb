//! The memory budget through the real binary: a local MQTT client that
//! subscribes to `#` and never reads, and a retained flood. Each checks the
//! bound's counter on `/metrics` and that the gateway's RSS (`VmRSS` of the
//! child) stays within the budget, where the byte bounds did not exist
//! before (the issue measured 140 → 986 MB for 600 × 1 MB to one slow
//! reader, and 604 MB for 400 × 1 MB retained). Each moves 100–150 MB over
//! loopback and takes a few seconds.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use common::http;
use common::{KillOnDrop, logged_addr, spawn_logged};

const MB: usize = 1 << 20;

struct Gateway {
    child: KillOnDrop,
    _lines: Receiver<String>,
    http: SocketAddr,
    broker: SocketAddr,
}

/// `sngate run` with the default limits, the broker and HTTP on ephemeral
/// loopback ports, no store.
fn start() -> Gateway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
    cmd.args([
        "run",
        "--udp",
        "127.0.0.1:0",
        "--broker",
        "127.0.0.1:0",
        "--state-dir",
        "off",
        "--http",
        "127.0.0.1:0",
        "--log-format",
        "text",
        "--log-level",
        "info",
    ])
    .env_remove("RUST_LOG")
    .env_remove("SNGATE_CONFIG");
    let (child, lines) = spawn_logged(cmd);
    let _udp = logged_addr(&lines, "MQTT-SN listening on UDP");
    let http = logged_addr(&lines, "HTTP endpoint listening");
    let broker = logged_addr(&lines, "MQTT broker listening on TCP");
    Gateway {
        child,
        _lines: lines,
        http,
        broker,
    }
}

impl Gateway {
    /// The child's resident set, in bytes.
    fn rss(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id()))
            .expect("the gateway's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS")
    }

    async fn metric(&self, name: &str, labels: &str) -> f64 {
        let page = http::get(self.http, "/metrics").await.body;
        http::sample(&page, name, labels)
            .unwrap_or_else(|| panic!("{name}{{{labels}}} on /metrics"))
    }
}

/// An MQTT 3.1.1 connection over a raw socket, so the test decides when it
/// reads.
struct Raw {
    stream: TcpStream,
    inbuf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr, client_id: &str) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connects");
        let mut raw = Raw {
            stream,
            inbuf: BytesMut::new(),
        };
        let mut connect = Connect::new(client_id);
        // No keep-alive: the gateway must bound what it holds for a client
        // that stops reading without closing it for silence.
        connect.keep_alive = 0;
        raw.send(Packet::Connect(connect)).await;
        assert!(matches!(raw.next().await, Packet::ConnAck(_)));
        raw
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).expect("encodes");
        self.stream.write_all(&out).await.expect("written");
    }

    async fn next(&mut self) -> Packet {
        loop {
            match Packet::read(&mut self.inbuf, 16 * MB) {
                Ok(p) => return p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the gateway: {e}"),
            }
            let n = timeout(
                Duration::from_secs(20),
                self.stream.read_buf(&mut self.inbuf),
            )
            .await
            .expect("the gateway answers within 20 s")
            .expect("read");
            assert!(n > 0, "the gateway closed the connection");
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.send(Packet::Subscribe(Subscribe::new(filter, QoS::AtMostOnce)))
            .await;
        assert!(matches!(self.next().await, Packet::SubAck(_)));
    }

    /// Publishes `count` messages of `size` bytes on `topic(i)`, then one at
    /// QoS 1 whose PUBACK says the gateway routed all of them.
    async fn flood(
        &mut self,
        count: usize,
        size: usize,
        retain: bool,
        topic: impl Fn(usize) -> String,
    ) {
        for i in 0..count {
            let mut p =
                Publish::from_bytes(topic(i), QoS::AtMostOnce, Bytes::from(vec![b'x'; size]));
            p.retain = retain;
            self.send(Packet::Publish(p)).await;
        }
        let mut marker = Publish::new("flood/done", QoS::AtLeastOnce, "done");
        marker.pkid = 1;
        self.send(Packet::Publish(marker)).await;
        loop {
            if let Packet::PubAck(_) = self.next().await {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_holds_a_bounded_amount_and_slows_no_one() {
    let gw = start();
    let broker = gw.broker;
    // The slow one subscribes to everything and stops reading.
    let mut slow = Raw::connect(broker, "never-reads").await;
    slow.subscribe("#").await;
    // Another one reads everything it is sent.
    let mut fast = Raw::connect(broker, "reads").await;
    fast.subscribe("flood/#").await;
    let count = 150;
    // The reader reports each message it gets; the publisher sends the next
    // only once the reader has the last one (a reader that keeps up), so a
    // stall caused by the client that does not read would show at once.
    let (got_tx, mut got_rx) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < count {
            if let Packet::Publish(_) = fast.next().await {
                got += 1;
                let _ = got_tx.send(got);
            }
        }
    });
    let mut publisher = Raw::connect(broker, "publisher").await;
    let before = gw.rss();
    for i in 0..count {
        let p = Publish::from_bytes(
            format!("flood/{i}"),
            QoS::AtMostOnce,
            Bytes::from(vec![b'x'; 1_000_000]),
        );
        publisher.send(Packet::Publish(p)).await;
        timeout(Duration::from_secs(10), got_rx.wait_for(|&got| got > i))
            .await
            .unwrap_or_else(|_| panic!("message {i} did not reach the reading subscriber"))
            .expect("reader alive");
    }
    timeout(Duration::from_secs(10), reader)
        .await
        .expect("reader ends")
        .expect("reader");
    let grown = gw.rss().saturating_sub(before);
    eprintln!(
        "slow reader: RSS {} MB, grew {} MB",
        gw.rss() / MB,
        grown / MB
    );
    let dropped = gw
        .metric("sngate_broker_dropped_total", "reason=\"slow_client\"")
        .await;
    // 150 MB were published to it; the kernel's socket buffers take a few,
    // the gateway at most `broker.max_queued_bytes` (8 MiB): the rest is
    // dropped and counted.
    assert!(dropped >= 100.0, "dropped for the slow reader: {dropped}");
    assert_eq!(
        gw.metric("sngate_limit", "limit=\"broker.max_queued_bytes\"")
            .await,
        (8 * MB) as f64
    );
    assert!(
        grown < 48 * MB,
        "RSS grew by {} MB for a client that never reads",
        grown / MB
    );
    let held = gw.metric("sngate_broker_queued_bytes", "").await;
    assert!(
        held > 0.0 && held <= (8 * MB) as f64 + 1_000_010.0,
        "the slow reader holds {held} bytes"
    );
    // Once it is gone, what it held is given back: the count balances.
    drop(slow);
    let mut held = held;
    for _ in 0..100 {
        held = gw.metric("sngate_broker_queued_bytes", "").await;
        if held == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held, 0.0, "bytes left counted after every client went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_flood_is_bounded_in_bytes() {
    let gw = start();
    let mut publisher = Raw::connect(gw.broker, "retainer").await;
    let before = gw.rss();
    // 100 × 1,000,004 bytes (payload and topic) against 8 MiB: 8 kept (the
    // broker's own `$SYS` messages take a few hundred bytes).
    publisher
        .flood(100, 1_000_000, true, |i| format!("r/{i:02}"))
        .await;
    let hits = gw
        .metric(
            "sngate_limit_hits_total",
            "limit=\"limits.max_retained_bytes\"",
        )
        .await;
    assert_eq!(hits, 92.0);
    let grown = gw.rss().saturating_sub(before);
    eprintln!(
        "retained flood: RSS {} MB, grew {} MB",
        gw.rss() / MB,
        grown / MB
    );
    assert!(
        grown < 48 * MB,
        "RSS grew by {} MB for a retained flood",
        grown / MB
    );
    // A subscriber gets the kept ones.
    let mut sub = Raw::connect(gw.broker, "late").await;
    sub.subscribe("r/#").await;
    for _ in 0..8 {
        assert!(matches!(sub.next().await, Packet::Publish(p) if p.retain));
    }
    // And nothing more: the next is a live message published now.
    publisher
        .send(Packet::Publish(Publish::new(
            "r/live",
            QoS::AtMostOnce,
            "now",
        )))
        .await;
    assert!(matches!(sub.next().await, Packet::Publish(p) if !p.retain && p.topic == "r/live"));
}
