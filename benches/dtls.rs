//! DTLS benchmark (not a timed test): the real `sngate` binary (a separate
//! process, one plain UDP and one DTLS listener) bridged to a real
//! mosquitto; devices in this process, each with its own UDP socket, speak
//! MQTT-SN plain or over DTLS 1.2 PSK (AES-128-CCM-8, the sans-IO client of
//! `sngate::transport::dtls::client`). Every DTLS figure has its same-run
//! baseline: the same load over plain UDP to the same gateway.
//!
//! ```sh
//! cargo bench --bench dtls                 # handshakes, QoS 0 and 1 uplink, RSS with 2,000 devices
//! cargo bench --bench dtls -- rss 10000    # RSS per session with 10,000 devices
//! ```
//!
//! Gateway CPU is `utime + stime` of the gateway process (`/proc/<pid>/stat`)
//! around each load; the machine is shared, so compare figures of one run.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sngate::proto::{self, Packet, QoS, TopicRef};
use sngate::transport::dtls::client::{DtlsClient, PskCredentials};

#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TOPIC: [u8; 2] = *b"bt";

fn key_of(i: usize) -> Vec<u8> {
    (0..16u8)
        .map(|b| b ^ (i as u8) ^ ((i >> 8) as u8))
        .collect()
}

fn identity(i: usize) -> String {
    format!("dev{i}")
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    let _ = proto::encode(p, &mut b);
    b.to_vec()
}

/// A device's link: a plain socket or a DTLS session on one.
enum Link {
    Plain(UdpSocket),
    Dtls(UdpSocket, Box<DtlsClient>, Vec<Vec<u8>>),
}

impl Link {
    fn plain(gw: SocketAddr) -> BenchResult<Link> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(gw)?;
        Ok(Link::Plain(s))
    }

    /// A DTLS session as device `i` (its handshake done).
    fn dtls(gw: SocketAddr, i: usize) -> BenchResult<Link> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(gw)?;
        let creds = PskCredentials {
            identity: identity(i),
            key: key_of(i),
        };
        let mut c = DtlsClient::new(&creds, 1200, Instant::now())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 4096];
        let mut timer = flush(&s, c.drain());
        while !c.is_connected() {
            if Instant::now() > deadline {
                return Err("handshake timed out".into());
            }
            let wait = timer
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(100))
                .max(Duration::from_millis(1));
            s.set_read_timeout(Some(wait))?;
            match s.recv(&mut buf) {
                Ok(n) => c.handle_datagram(&buf[..n])?,
                Err(_) => c.handle_timeout(Instant::now())?,
            }
            timer = flush(&s, c.drain());
        }
        Ok(Link::Dtls(s, Box::new(c), Vec::new()))
    }

    fn send(&mut self, msg: &[u8]) -> BenchResult<()> {
        match self {
            Link::Plain(s) => {
                s.send(msg)?;
            }
            Link::Dtls(s, c, _) => {
                c.send(msg)?;
                flush(s, c.drain());
            }
        }
        Ok(())
    }

    /// The next MQTT-SN message within `wait`.
    fn recv(&mut self, wait: Duration) -> Option<Packet> {
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + wait;
        loop {
            match self {
                Link::Plain(s) => {
                    s.set_read_timeout(Some(wait)).ok()?;
                    let n = s.recv(&mut buf).ok()?;
                    return proto::decode(&buf[..n]).ok();
                }
                Link::Dtls(s, c, pending) => {
                    if !pending.is_empty() {
                        let m = pending.remove(0);
                        return proto::decode(&m).ok();
                    }
                    let left = deadline.checked_duration_since(Instant::now())?;
                    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                        .ok()?;
                    let n = s.recv(&mut buf).ok()?;
                    c.handle_datagram(&buf[..n]).ok()?;
                    let out = c.drain();
                    pending.extend(out.plaintext.iter().cloned());
                    flush(s, out);
                }
            }
        }
    }

    /// CONNECT as device `i`; true on CONNACK accepted.
    fn connect(&mut self, i: usize) -> bool {
        for _ in 0..5 {
            let connect = encode(&Packet::Connect {
                will: false,
                clean_session: true,
                protocol_id: 1,
                duration: 3600,
                client_id: identity(i),
            });
            if self.send(&connect).is_err() {
                return false;
            }
            if let Some(Packet::ConnAck { return_code }) = self.recv(Duration::from_secs(2)) {
                return return_code.is_accepted();
            }
        }
        false
    }
}

fn flush(s: &UdpSocket, out: sngate::transport::dtls::client::ClientOutput) -> Option<Instant> {
    for d in &out.datagrams {
        let _ = s.send(d);
    }
    out.timer
}

/// The gateway binary with a plain and a DTLS listener.
struct Gateway {
    child: Child,
    plain: SocketAddr,
    dtls: SocketAddr,
    _dir: tempfile::TempDir,
}

fn free_port() -> BenchResult<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Gateway {
    fn start(devices: usize, mqtt_port: Option<u16>) -> BenchResult<Gateway> {
        let dir = tempfile::tempdir()?;
        let psk = dir.path().join("psk");
        let keys: String = (0..devices)
            .map(|i| {
                let hex: String = key_of(i).iter().map(|b| format!("{b:02x}")).collect();
                format!("{}:{hex}\n", identity(i))
            })
            .collect();
        std::fs::write(&psk, keys)?;
        let plain: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let dtls: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[limits]\nper_source_packets_per_sec = 0\nper_session_packets_per_sec = 0\n\
                 max_clients = 50000\n\
                 [dtls]\nlisten = [\"{dtls}\"]\npsk_file = \"{}\"\n\
                 max_sessions = 50000\nmax_half_open = 4096\n",
                psk.display()
            ),
        )?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
        cmd.args([
            "run",
            "--log-level",
            "warn",
            "--broker",
            "off",
            "--state-dir",
            "off",
        ])
        .args(["--udp", &plain.to_string(), "--config"])
        .arg(&config);
        if let Some(port) = mqtt_port {
            cmd.args(["--upstream", &format!("127.0.0.1:{port}")]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn()?;
        let gw = Gateway {
            child,
            plain,
            dtls,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if Link::dtls(gw.dtls, 0).is_ok() {
                return Ok(gw);
            }
            if Instant::now() > deadline {
                return Err("sngate did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): `rest`
        // starts at field 3 (the state); utime and stime are fields 14, 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let field = |n: usize| -> u64 {
            rest.split_whitespace()
                .nth(n - 3)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let ticks = field(14) + field(15);
        ticks as f64 / 100.0
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts the messages mosquitto delivers on the bench topic.
struct Counter {
    count: Arc<AtomicU64>,
    child: Child,
}

impl Counter {
    fn start(port: u16) -> BenchResult<Counter> {
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "bt",
                "-q",
                "1",
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for _ in BufReader::new(out).lines().map_while(Result::ok) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        Ok(Counter { count, child })
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until the count stops moving for 1 s; returns it.
    fn settle(&self) -> u64 {
        let mut last = self.get();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.get();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Handshakes per second: `threads` devices making new DTLS sessions back
/// to back for `secs`.
fn handshakes(gw: &Gateway, threads: usize, secs: u64) -> BenchResult<()> {
    let cpu0 = gw.cpu_secs();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let dtls = gw.dtls;
    let done: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < end {
                    if Link::dtls(dtls, t).is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = done.into_iter().filter_map(|h| h.join().ok()).sum();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = gw.cpu_secs() - cpu0;
    println!(
        "| handshakes (PSK, {threads} clients back to back) | {:.0}/s | gateway CPU {:.2} ms per handshake | {total} in {elapsed:.1} s |",
        total as f64 / elapsed,
        cpu * 1000.0 / total.max(1) as f64
    );
    Ok(())
}

/// `devices` devices connected over `dtls` or plain UDP.
fn connect_all(gw: &Gateway, devices: usize, dtls: bool, first: usize) -> BenchResult<Vec<Link>> {
    let mut links = Vec::with_capacity(devices);
    for i in first..first + devices {
        let mut l = if dtls {
            Link::dtls(gw.dtls, i)?
        } else {
            Link::plain(gw.plain)?
        };
        if !l.connect(i) {
            return Err(format!("device {i} not connected").into());
        }
        links.push(l);
    }
    Ok(links)
}

/// QoS 0 uplink: `devices` devices send `per_device` messages each, paced to
/// `rate` msg/s in all; delivered msg/s at mosquitto and gateway CPU.
fn qos0(
    gw: &Gateway,
    counter: &Counter,
    dtls: bool,
    devices: usize,
    rate: u64,
    secs: u64,
) -> BenchResult<()> {
    let links = connect_all(gw, devices, dtls, 1000 + usize::from(dtls) * 1000)?;
    let before = counter.get();
    let cpu0 = gw.cpu_secs();
    let total = rate * secs;
    let per = total / devices as u64;
    let interval = Duration::from_secs_f64(devices as f64 / rate as f64);
    let start = Instant::now();
    let handles: Vec<_> = links
        .into_iter()
        .map(|mut l| {
            std::thread::spawn(move || {
                let msg = encode(&Packet::Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: TopicRef::Short(TOPIC),
                    msg_id: 0,
                    payload: Bytes::from_static(&[0x5a; 32]),
                });
                for k in 0..per {
                    let at = start + interval.mul_f64(k as f64);
                    if let Some(d) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let _ = l.send(&msg);
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
        "| QoS 0 uplink, {} | {devices} devices, {rate} msg/s offered | {:.0} msg/s delivered ({delivered} of {}) | gateway CPU {:.2} s per 100k |",
        if dtls { "DTLS" } else { "plain UDP" },
        delivered as f64 / sent_for,
        per * devices as u64,
        cpu * 100_000.0 / delivered.max(1) as f64
    );
    Ok(())
}

/// QoS 1 uplink, closed loop: each device PUBLISH → PUBACK for `secs`.
fn qos1(gw: &Gateway, counter: &Counter, dtls: bool, devices: usize, secs: u64) -> BenchResult<()> {
    let links = connect_all(gw, devices, dtls, 5000 + usize::from(dtls) * 1000)?;
    let before = counter.get();
    let cpu0 = gw.cpu_secs();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let handles: Vec<_> = links
        .into_iter()
        .map(|mut l| {
            std::thread::spawn(move || {
                let mut acked = 0u64;
                let mut id = 0u16;
                while Instant::now() < end {
                    id = id.wrapping_add(1).max(1);
                    let msg = encode(&Packet::Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        topic: TopicRef::Short(TOPIC),
                        msg_id: id,
                        payload: Bytes::from_static(&[0x5a; 32]),
                    });
                    if l.send(&msg).is_err() {
                        continue;
                    }
                    if let Some(Packet::PubAck { .. }) = l.recv(Duration::from_secs(2)) {
                        acked += 1;
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
        "| QoS 1 uplink, {} | {devices} devices, closed loop | {:.0} msg/s acknowledged ({delivered} delivered) | gateway CPU {:.2} s per 100k |",
        if dtls { "DTLS" } else { "plain UDP" },
        acked as f64 / elapsed,
        cpu * 100_000.0 / acked.max(1) as f64
    );
    Ok(())
}

/// Gateway RSS with `n` connected devices, plain and DTLS (a fresh gateway
/// each), and the difference per device.
fn rss(n: usize) -> BenchResult<()> {
    let mut per = Vec::new();
    for dtls in [false, true] {
        let gw = Gateway::start(n + 10, None)?;
        std::thread::sleep(Duration::from_millis(500));
        let before = gw.rss_kib();
        let links = connect_all(&gw, n, dtls, 10)?;
        std::thread::sleep(Duration::from_secs(1));
        let after = gw.rss_kib();
        let each = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
        println!(
            "| RSS, {n} devices connected, {} | {before} KiB before | {after} KiB after | {each:.0} B per device |",
            if dtls { "DTLS" } else { "plain UDP" }
        );
        per.push(each);
        drop(links);
    }
    if let [plain, dtls] = per[..] {
        println!(
            "| RSS per DTLS session (DTLS − plain, per device) | | | {:.0} B |",
            dtls - plain
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
    let rt = tokio::runtime::Runtime::new()?;
    let broker = rt.block_on(mosquitto::Mosquitto::start_with(
        mosquitto::MosquittoOptions {
            max_queued_messages: Some(1_000_000),
            ..mosquitto::MosquittoOptions::default()
        },
    ));
    let gw = Gateway::start(10_000, Some(broker.port))?;
    let counter = Counter::start(broker.port)?;
    handshakes(&gw, 4, 5)?;
    for dtls in [false, true] {
        qos0(&gw, &counter, dtls, 20, 20_000, 5)?;
    }
    for dtls in [false, true] {
        qos1(&gw, &counter, dtls, 20, 5)?;
    }
    drop(counter);
    drop(gw);
    rss(2_000)
}
