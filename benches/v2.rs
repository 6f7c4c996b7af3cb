//! MQTT-SN 2.0 vs 1.2 benchmark (not a timed test), issue 21: the real
//! `sngate` binary bridged to a real mosquitto; devices of both versions in
//! this process, each with its own UDP socket, on the gateway's one port.
//! Every 2.0 figure has its same-run baseline: the same load from 1.2
//! devices through the same gateway, measured right before it.
//!
//! ```sh
//! cargo bench --bench v2                 # QoS 0 and QoS 1 uplink, both versions
//! cargo bench --bench v2 -- rss 10000    # RSS: 10,000 devices, all 1.2 vs half and half
//! ```
//!
//! Both versions publish by topic id / session alias after one REGISTER
//! (the same engine path). Gateway CPU is `utime + stime` of the gateway
//! process around each load; the machine is shared, so compare figures of
//! one run only.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sngate::proto::{self, Packet, QoS, TopicRef};
use sngate_wire::v2;

#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TOPIC: &str = "bench/v2";
const PAYLOAD: &[u8] = &[0x5a; 32];

/// One device's socket and the version it speaks.
struct Device {
    socket: UdpSocket,
    v2: bool,
    /// The topic id (1.2) or session alias (2.0) of [`TOPIC`].
    alias: u16,
}

fn v1_bytes(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    let _ = proto::encode(p, &mut b);
    b.to_vec()
}

fn v2_bytes(p: &v2::Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    let _ = v2::encode(p, &mut b);
    b.to_vec()
}

impl Device {
    /// Connects as `client_id` and registers [`TOPIC`].
    fn connect(gw: SocketAddr, client_id: String, v2: bool, register: bool) -> BenchResult<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(gw)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut d = Device {
            socket,
            v2,
            alias: 0,
        };
        let connect = if v2 {
            v2_bytes(&v2::Packet::Connect(Box::new(v2::Connect {
                clean_start: true,
                allow_address_change: false,
                allow_server_suggested: false,
                packet_id: 1,
                keep_alive: 3600,
                max_packet_size: 0,
                default_awake_messages: None,
                session_expiry: None,
                will: None,
                auth: None,
                client_id,
            })))
        } else {
            v1_bytes(&Packet::Connect {
                will: false,
                clean_session: true,
                protocol_id: proto::PROTOCOL_ID_V1_2,
                duration: 3600,
                client_id,
            })
        };
        d.request(&connect, |d, buf| d.connack(buf))?;
        if register {
            let reg = if v2 {
                v2_bytes(&v2::Packet::Register(v2::Register {
                    packet_id: 2,
                    alias: None,
                    topic_name: TOPIC.into(),
                }))
            } else {
                v1_bytes(&Packet::Register {
                    topic_id: 0,
                    msg_id: 2,
                    topic_name: TOPIC.into(),
                })
            };
            d.alias = d.request(&reg, |d, buf| d.regack(buf))?;
        }
        Ok(d)
    }

    /// Sends `msg` until `answer` reads a reply (5 tries).
    fn request<T>(
        &mut self,
        msg: &[u8],
        answer: impl Fn(&Self, &[u8]) -> Option<T>,
    ) -> BenchResult<T> {
        let mut buf = [0u8; 2048];
        for _ in 0..5 {
            self.socket.send(msg)?;
            while let Ok(n) = self.socket.recv(&mut buf) {
                if let Some(t) = answer(self, &buf[..n]) {
                    return Ok(t);
                }
            }
        }
        Err("no answer from the gateway".into())
    }

    fn connack(&self, buf: &[u8]) -> Option<()> {
        let ok = if self.v2 {
            matches!(v2::decode(buf), Ok(v2::Packet::ConnAck(c)) if c.reason == v2::ReasonCode::SUCCESS)
        } else {
            matches!(proto::decode(buf), Ok(Packet::ConnAck { return_code }) if return_code.is_accepted())
        };
        ok.then_some(())
    }

    fn regack(&self, buf: &[u8]) -> Option<u16> {
        if self.v2 {
            match v2::decode(buf) {
                Ok(v2::Packet::RegAck(r)) => r.alias,
                _ => None,
            }
        } else {
            match proto::decode(buf) {
                Ok(Packet::RegAck { topic_id, .. }) => Some(topic_id),
                _ => None,
            }
        }
    }

    /// A PUBLISH on the registered topic.
    fn publish(&self, qos1_id: Option<u16>) -> Vec<u8> {
        let payload = Bytes::from_static(PAYLOAD);
        if self.v2 {
            v2_bytes(&v2::Packet::Publish(v2::Publish {
                delivery: match qos1_id {
                    Some(packet_id) => v2::Delivery::AtLeastOnce { packet_id },
                    None => v2::Delivery::AtMostOnce,
                },
                retain: false,
                topic: v2::Topic::SessionAlias(self.alias),
                payload,
            }))
        } else {
            v1_bytes(&Packet::Publish {
                dup: false,
                qos: if qos1_id.is_some() {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                },
                retain: false,
                topic: TopicRef::Id(self.alias),
                msg_id: qos1_id.unwrap_or(0),
                payload,
            })
        }
    }

    fn is_puback(&self, buf: &[u8]) -> bool {
        if self.v2 {
            matches!(v2::decode(buf), Ok(v2::Packet::PubAck(_)))
        } else {
            matches!(proto::decode(buf), Ok(Packet::PubAck { .. }))
        }
    }
}

/// The gateway binary on one UDP port, optionally bridged.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(upstream: Option<u16>) -> BenchResult<Gateway> {
        let dir = tempfile::tempdir()?;
        let addr: SocketAddr = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            "[limits]\nper_source_packets_per_sec = 0\nper_session_packets_per_sec = 0\n\
             max_clients = 50000\n",
        )?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
        cmd.args(["run", "--log-level", "warn", "--broker", "off"])
            .args(["--state-dir", "off", "--udp", &addr.to_string(), "--config"])
            .arg(&config);
        if let Some(port) = upstream {
            cmd.args(["--upstream", &format!("127.0.0.1:{port}")]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn()?;
        let gw = Gateway {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Device::connect(addr, "probe".into(), false, false).is_err() {
            if Instant::now() > deadline {
                return Err("sngate did not start".into());
            }
        }
        Ok(gw)
    }

    fn proc_field(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id())).unwrap_or_default()
    }

    fn cpu_secs(&self) -> f64 {
        let stat = self.proc_field("stat");
        // utime and stime are fields 14 and 15; `rest` starts at field 3.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let field = |n: usize| -> f64 {
            rest.split_whitespace()
                .nth(n - 3)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        (field(14) + field(15)) / 100.0
    }

    fn rss_kib(&self) -> u64 {
        self.proc_field("status")
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts what mosquitto delivers on [`TOPIC`] (a `mosquitto_sub`).
struct Counter(Arc<AtomicU64>, Child);

impl Counter {
    fn start(port: u16) -> BenchResult<Counter> {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", TOPIC])
            .args(["-q", "1"])
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        std::thread::spawn(move || {
            for _ in BufReader::new(out).lines().map_while(Result::ok) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        Ok(Counter(count, child))
    }

    /// The count once it stopped moving for 1 s.
    fn settle(&self) -> u64 {
        let mut last = self.0.load(Ordering::Relaxed);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.0.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

fn label(v2: bool) -> &'static str {
    if v2 { "2.0" } else { "1.2" }
}

fn devices(gw: &Gateway, n: usize, v2: bool, tag: &str) -> BenchResult<Vec<Device>> {
    (0..n)
        .map(|i| Device::connect(gw.addr, format!("{tag}-{}-{i}", label(v2)), v2, true))
        .collect()
}

/// QoS 0 uplink, paced to `rate` msg/s in all over `secs`.
fn qos0(
    gw: &Gateway,
    counter: &Counter,
    v2: bool,
    n: usize,
    rate: u64,
    secs: u64,
) -> BenchResult<()> {
    let devs = devices(gw, n, v2, "q0")?;
    let before = counter.settle();
    let cpu0 = gw.cpu_secs();
    let per = rate * secs / n as u64;
    let interval = Duration::from_secs_f64(n as f64 / rate as f64);
    let start = Instant::now();
    let handles: Vec<_> = devs
        .into_iter()
        .map(|d| {
            std::thread::spawn(move || {
                let msg = d.publish(None);
                for k in 0..per {
                    if let Some(wait) =
                        (start + interval.mul_f64(k as f64)).checked_duration_since(Instant::now())
                    {
                        std::thread::sleep(wait);
                    }
                    let _ = d.socket.send(&msg);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let sent_for = start.elapsed().as_secs_f64();
    let delivered = counter.settle() - before;
    let cpu = gw.cpu_secs() - cpu0;
    println!(
        "| QoS 0 uplink, MQTT-SN {} | {n} devices, {rate} msg/s offered | {:.0} msg/s delivered ({delivered} of {}) | gateway CPU {:.2} s per 100k |",
        label(v2),
        delivered as f64 / sent_for,
        per * n as u64,
        cpu * 100_000.0 / delivered.max(1) as f64
    );
    Ok(())
}

/// QoS 1 uplink, closed loop: each device PUBLISH → PUBACK for `secs`.
fn qos1(gw: &Gateway, counter: &Counter, v2: bool, n: usize, secs: u64) -> BenchResult<()> {
    let devs = devices(gw, n, v2, "q1")?;
    let before = counter.settle();
    let cpu0 = gw.cpu_secs();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let handles: Vec<_> = devs
        .into_iter()
        .map(|d| {
            std::thread::spawn(move || {
                let (mut acked, mut id, mut buf) = (0u64, 2u16, [0u8; 2048]);
                while Instant::now() < end {
                    id = id.wrapping_add(1).max(3);
                    if d.socket.send(&d.publish(Some(id))).is_err() {
                        continue;
                    }
                    while let Ok(len) = d.socket.recv(&mut buf) {
                        if d.is_puback(&buf[..len]) {
                            acked += 1;
                            break;
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let acked: u64 = handles.into_iter().filter_map(|h| h.join().ok()).sum();
    let elapsed = start.elapsed().as_secs_f64();
    let delivered = counter.settle() - before;
    let cpu = gw.cpu_secs() - cpu0;
    println!(
        "| QoS 1 uplink, MQTT-SN {} | {n} devices, closed loop | {:.0} msg/s acknowledged ({delivered} delivered) | gateway CPU {:.2} s per 100k |",
        label(v2),
        acked as f64 / elapsed,
        cpu * 100_000.0 / acked.max(1) as f64
    );
    Ok(())
}

/// Gateway RSS with `n` connected devices: all 1.2, then half and half (a
/// fresh unbridged gateway each).
fn rss(n: usize) -> BenchResult<()> {
    let mut per = Vec::new();
    for mixed in [false, true] {
        let gw = Gateway::start(None)?;
        std::thread::sleep(Duration::from_millis(500));
        let before = gw.rss_kib();
        let devs: Vec<Device> = (0..n)
            .map(|i| Device::connect(gw.addr, format!("rss-{i}"), mixed && i % 2 == 1, false))
            .collect::<BenchResult<_>>()?;
        std::thread::sleep(Duration::from_secs(1));
        let after = gw.rss_kib();
        let each = after.saturating_sub(before) as f64 * 1024.0 / n as f64;
        println!(
            "| RSS, {n} devices connected, {} | {before} KiB before | {after} KiB after | {each:.0} B per device |",
            if mixed {
                "half 1.2, half 2.0"
            } else {
                "all 1.2"
            }
        );
        per.push(each);
        drop(devs);
    }
    if let [all_v1, mixed] = per[..] {
        println!(
            "| RSS per 2.0 device over a 1.2 one ((mixed − all 1.2) × 2) | | | {:.0} B |",
            (mixed - all_v1) * 2.0
        );
    }
    Ok(())
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() -> BenchResult<()> {
    raise_fd_limit();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    println!("| scenario | load | result | cost |");
    println!("|---|---|---|---|");
    if args.first().map(String::as_str) == Some("rss") {
        let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
        return rss(n);
    }
    let broker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(mosquitto::Mosquitto::start());
    let gw = Gateway::start(Some(broker.port))?;
    let counter = Counter::start(broker.port)?;
    for v2 in [false, true] {
        qos0(&gw, &counter, v2, 20, 20_000, 5)?;
    }
    for v2 in [false, true] {
        qos1(&gw, &counter, v2, 20, 5)?;
    }
    Ok(())
}
