//! What the durable store writes: bytes per REGISTER on a persistent
//! session, and per QoS 1 message of one device at one message a second —
//! the figures behind "what the SD card pays per day" in
//! docs/performance.md.
//!
//! The real engine (`sngate_core::Gateway`, virtual clock) and the real
//! store (`sngate::store::Store`, fjall, one fdatasync'ed batch per commit,
//! as the driver commits them) in a fresh directory. Three workloads, one
//! commit per step as at one message a second:
//!
//! - `register`: a device with CleanSession = 0 REGISTERs 1,000 distinct
//!   names of 1.9 KB (the case);
//! - `uplink`: a device publishes QoS 1 with an upstream bridge, three
//!   ways: the broker **up** (it acknowledges within `[store] linger_ms`:
//!   the outbox record is never written, the device's PUBACK released by
//!   the broker's), **lagging** (it acknowledges after the linger: the
//!   record is written, the PUBACK released behind the commit, the record
//!   deleted when the broker acknowledges) and **away** (the bridge is not
//!   connected: written before the PUBACK, as without a linger — the
//!   baseline in the same run);
//! - `downlink`: a message at QoS 1 for a connected persistent device: it
//!   is queued, handed over, acknowledged and deleted.
//!
//! Two figures per workload: the encoded value bytes the store was handed
//! (what `/metrics` counts as `sngate_store_bytes_total`), and `write_bytes`
//! of `/proc/self/io` (bytes this process caused to be written to the
//! block layer: journal pages, flushed tables; the ext4 journal's own
//! writes excluded). As a baseline in the same run, `register` also
//! computes what the former layout handed the store: the whole session
//! record (every topic name inside) at each REGISTER.
//!
//! Run with `cargo run --example store_writes [DIR]` (the bytes do not
//! depend on the build profile); DIR
//! (default `target/tmp`) must be on the disk to measure, not a tmpfs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sngate::core::{
    EngineConfig, Gateway, Output, Peer, SessionRecord, StoreOp, UpstreamCommand, UpstreamMessage,
};
use sngate::proto::{self, Packet, QoS, ReturnCode, TopicRef};
use sngate::store::Store;

/// One workload's totals.
#[derive(Default)]
struct Written {
    commits: u64,
    value_bytes: u64,
    disk_bytes: u64,
}

/// The engine, the store and the clock.
struct Rig {
    gw: Gateway,
    store: Store,
    now: Instant,
    device: Peer,
    written: Written,
    /// Outbox ids the "bridge" settled, deleted with the next commit.
    settled: Vec<u64>,
    /// Outbox ids handed to the "bridge", not yet settled.
    upstream: Vec<u64>,
    /// The last batch's operations (for the baseline).
    last_ops: Vec<StoreOp>,
    /// `write_bytes` when the measured workload started.
    io_start: u64,
}

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Rig {
    fn new(dir: &Path, upstream: bool) -> Rig {
        Rig::with_linger(dir, upstream, Duration::ZERO)
    }

    fn with_linger(dir: &Path, upstream: bool, linger: Duration) -> Rig {
        let (store, _) = Store::open(dir).unwrap_or_else(|e| panic!("store: {e}"));
        let now = Instant::now();
        let cfg = EngineConfig {
            persist: true,
            upstream,
            outbox_linger: linger,
            per_source_packets_per_sec: 0,
            ..EngineConfig::default()
        };
        Rig {
            gw: Gateway::new(cfg, now),
            store,
            now,
            device: Peer::udp(SocketAddr::from(([127, 0, 0, 1], 40_000))),
            written: Written::default(),
            settled: Vec::new(),
            upstream: Vec::new(),
            last_ops: Vec::new(),
            io_start: 0,
        }
    }

    /// Starts measuring (after the set-up).
    fn start(&mut self) {
        self.written = Written::default();
        self.io_start = write_bytes();
    }

    /// What the workload wrote, the store's background work included
    /// (`write_bytes` counts every thread of the process).
    fn finish(mut self) -> Written {
        drop(self.store);
        self.written.disk_bytes = write_bytes().saturating_sub(self.io_start);
        self.written
    }

    /// Feeds one packet from the device; returns what was sent back to it.
    fn send(&mut self, packet: Packet) -> Vec<Packet> {
        let mut buf = BytesMut::new();
        if proto::encode(&packet, &mut buf).is_err() {
            panic!("cannot encode {packet:?}");
        }
        self.gw.handle_datagram(self.now, self.device.clone(), &buf);
        self.drain()
    }

    /// Drains the outputs: the packets for the device, the outbox ids the
    /// bridge is given (kept until [`settle`](Self::settle)).
    fn drain(&mut self) -> Vec<Packet> {
        let mut back = Vec::new();
        while let Some(out) = self.gw.poll_output() {
            match out {
                Output::Transmit { to, packet } if to == self.device => back.push(packet),
                Output::Upstream(UpstreamCommand::Publish {
                    store_id: Some(id), ..
                }) => self.upstream.push(id),
                _ => {}
            }
        }
        back
    }

    /// The broker acknowledged what the bridge was given: the engine keeps
    /// from the store what it never wrote; returns what the device is told.
    fn settle(&mut self) -> Vec<Packet> {
        let ids = std::mem::take(&mut self.upstream);
        let written = self.gw.handle_settled(self.now, ids);
        self.settled.extend(written);
        self.drain()
    }

    /// One durable commit, as the driver makes after a batch: settled ids
    /// alone do not earn one, they ride with the next.
    fn commit(&mut self) {
        let ops = self.gw.take_store_ops();
        if ops.is_empty() {
            self.last_ops = ops;
            return;
        }
        let settled = std::mem::take(&mut self.settled);
        let stats = self
            .store
            .commit(&ops, &settled)
            .unwrap_or_else(|e| panic!("commit: {e}"));
        self.written.value_bytes += stats.bytes as u64;
        self.written.commits += 1;
        self.last_ops = ops;
    }

    fn tick(&mut self) {
        self.now += Duration::from_secs(1);
        self.gw.handle_timeout(self.now);
        self.drain();
    }

    fn connect(&mut self, clean_session: bool) {
        let back = self.send(Packet::Connect {
            will: false,
            clean_session,
            protocol_id: 1,
            duration: 600,
            client_id: "sensor-1".into(),
        });
        assert!(
            matches!(
                back.as_slice(),
                [Packet::ConnAck {
                    return_code: ReturnCode::Accepted
                }]
            ),
            "{back:?}"
        );
        self.commit();
    }
}

/// The session record as the former layout wrote it: the head with every
/// topic and subscription inside.
fn whole_record(head: &SessionRecord, topics: &std::collections::BTreeMap<u16, String>) -> usize {
    let mut whole = head.clone();
    whole.topics = topics.iter().map(|(id, n)| (*id, n.clone())).collect();
    postcard::to_allocvec(&whole).map_or(0, |v| v.len())
}

fn register(dir: &Path) -> (Written, u64) {
    let mut rig = Rig::new(dir, false);
    rig.connect(false);
    let mut head: Option<SessionRecord> = rig.last_ops.iter().find_map(|op| match op {
        StoreOp::PutSession(_, r) => Some(r.clone()),
        _ => None,
    });
    let mut topics = std::collections::BTreeMap::new();
    let mut baseline = 0u64;
    rig.start();
    for i in 0..1000u16 {
        let name = format!("site/{i:04}/{}", "x".repeat(1890));
        let back = rig.send(Packet::Register {
            topic_id: 0,
            msg_id: i + 1,
            topic_name: name,
        });
        assert!(
            matches!(
                back.as_slice(),
                [Packet::RegAck {
                    return_code: ReturnCode::Accepted,
                    ..
                }]
            ),
            "{back:?}"
        );
        rig.commit();
        for op in &rig.last_ops {
            match op {
                StoreOp::PutSession(_, r) => head = Some(r.clone()),
                StoreOp::PutTopic(_, id, n) => {
                    topics.insert(*id, n.clone());
                }
                _ => {}
            }
        }
        // The former layout rewrote the whole record at every change.
        if let Some(h) = &head {
            baseline += whole_record(h, &topics) as u64;
        }
        rig.tick();
    }
    (rig.finish(), baseline)
}

/// How the broker answers in the `uplink` workload.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Broker {
    /// Acknowledges within the linger.
    Up,
    /// Acknowledges after the linger.
    Lagging,
    /// Not connected (the store takes every message at once).
    Away,
}

fn uplink(dir: &Path, messages: u16, broker: Broker) -> Written {
    let mut rig = Rig::with_linger(dir, true, LINGER);
    if broker != Broker::Away {
        rig.gw.handle_upstream_connected(rig.now, true);
    }
    rig.connect(true);
    let back = rig.send(Packet::Register {
        topic_id: 0,
        msg_id: 1,
        topic_name: "site/sensor-1/temp".into(),
    });
    let Some(Packet::RegAck { topic_id, .. }) = back.first().cloned() else {
        panic!("{back:?}");
    };
    rig.commit();
    rig.start();
    for i in 0..messages {
        let mut back = rig.send(Packet::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: TopicRef::Id(topic_id),
            msg_id: i + 2,
            payload: Bytes::from(format!("{{\"t\":{}.5,\"seq\":{i}}}", 20 + i % 5)),
        });
        match broker {
            // The broker's PUBACK comes back within the linger, in the
            // same batch as the device's message.
            Broker::Up => back.extend(rig.settle()),
            // The linger passes first: written, then acknowledged.
            Broker::Lagging => {
                rig.commit();
                assert!(back.is_empty(), "{back:?}");
                rig.now += LINGER;
                rig.gw.handle_timeout(rig.now);
                back = rig.drain();
            }
            Broker::Away => {}
        }
        rig.commit();
        assert!(
            matches!(back.as_slice(), [Packet::PubAck { .. }]),
            "{back:?}"
        );
        if broker != Broker::Up {
            // The broker acknowledges (is back) later; deleted with the
            // next commit.
            rig.settle();
        }
        rig.tick();
    }
    rig.commit();
    rig.finish()
}

/// The linger of the `uplink` workload (the default `[store] linger_ms`).
const LINGER: Duration = Duration::from_millis(5);

fn downlink(dir: &Path, messages: u16) -> Written {
    let mut rig = Rig::new(dir, false);
    rig.connect(false);
    rig.send(Packet::Subscribe {
        dup: false,
        qos: QoS::AtLeastOnce,
        msg_id: 1,
        topic: proto::SubscribeTopic::Name("cmd/sensor-1/#".into()),
    });
    rig.commit();
    rig.start();
    for i in 0..messages {
        rig.gw.handle_upstream(
            rig.now,
            UpstreamMessage {
                topic: "cmd/sensor-1/set".into(),
                payload: Bytes::from(format!("{{\"target\":{i}}}")),
                qos: 1,
                retain: false,
                filter: None,
            },
        );
        let mut pending = rig.drain();
        rig.commit();
        // The device answers what it is sent (a REGISTER first, then the
        // PUBLISH), each answer its own datagram and commit.
        while let Some(p) = pending.pop() {
            let reply = match p {
                Packet::Register {
                    topic_id, msg_id, ..
                } => Packet::RegAck {
                    topic_id,
                    msg_id,
                    return_code: ReturnCode::Accepted,
                },
                Packet::Publish { topic, msg_id, .. } => Packet::PubAck {
                    topic_id: topic.raw(),
                    msg_id,
                    return_code: ReturnCode::Accepted,
                },
                _ => continue,
            };
            pending = rig.send(reply);
            rig.commit();
        }
        rig.tick();
    }
    rig.finish()
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(format!("store-writes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn report(what: &str, per: &str, n: u64, w: &Written) {
    let n = n.max(1);
    println!(
        "{what}: {n} {per}, {} commits; handed to the store {:.1} MB ({} B per {per}); written (write_bytes) {:.1} MB ({} B per {per})",
        w.commits,
        w.value_bytes as f64 / 1e6,
        w.value_bytes / n,
        w.disk_bytes as f64 / 1e6,
        w.disk_bytes / n,
    );
}

fn main() {
    let base = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/tmp"), PathBuf::from);
    if let Err(e) = std::fs::create_dir_all(&base) {
        panic!("{}: {e}", base.display());
    }
    println!("store in {}", base.display());

    let dir = fresh(&base, "register");
    let (w, baseline) = register(&dir);
    report(
        "REGISTER of 1.9 KB names on a persistent session",
        "REGISTER",
        1000,
        &w,
    );
    println!(
        "  baseline, the whole record at every REGISTER (the former layout): {:.1} MB handed to the store",
        baseline as f64 / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);

    let n = 600u16;
    let mut up = Written::default();
    for (broker, name, what) in [
        (
            Broker::Away,
            "uplink-away",
            "QoS 1 uplink, one device at 1 msg/s, broker away",
        ),
        (
            Broker::Lagging,
            "uplink-lagging",
            "QoS 1 uplink, one device at 1 msg/s, broker lagging",
        ),
        (
            Broker::Up,
            "uplink-up",
            "QoS 1 uplink, one device at 1 msg/s, broker up",
        ),
    ] {
        let dir = fresh(&base, name);
        let w = uplink(&dir, n, broker);
        report(what, "message", u64::from(n), &w);
        let _ = std::fs::remove_dir_all(&dir);
        if broker == Broker::Away {
            up = w;
        }
    }

    let dir = fresh(&base, "downlink");
    let down = downlink(&dir, n);
    report(
        "QoS 1 downlink to a persistent device at 1 msg/s",
        "message",
        u64::from(n),
        &down,
    );
    let _ = std::fs::remove_dir_all(&dir);

    let per_day = 100 * 24 * 60;
    let n = u64::from(n);
    println!(
        "100 devices x 1 msg/min ({per_day} messages a day): uplink with the broker away {:.0} MB/day, downlink {:.0} MB/day written",
        (up.disk_bytes / n * per_day) as f64 / 1e6,
        (down.disk_bytes / n * per_day) as f64 / 1e6,
    );
}
