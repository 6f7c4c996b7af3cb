//! End-to-end gateway benchmark (not a timed test): simulated MQTT-SN devices
//! on UDP → the real `sngate` binary (a separate process) → a real mosquitto,
//! measured at an MQTT subscriber; and in the same run, the baseline: the same
//! load published straight to mosquitto by the same number of MQTT clients.
//!
//! ```sh
//! cargo bench --bench gateway                      # the default scenario set
//! cargo bench --bench gateway -- qos0 60000        # QoS 0 at 60,000 msg/s
//! cargo bench --bench gateway -- qos1              # QoS 1, closed loop, 100 devices
//! cargo bench --bench gateway -- qos1 1 10         # … 1 device, 10 s per leg
//! cargo bench --bench gateway -- qos2 10 10        # QoS 2, 10 devices, 10 s per leg
//! cargo bench --bench gateway -- idle 10000        # RSS with 10,000 devices
//! cargo bench --bench gateway -- perdevice 1000 10 # 1,000 per-device upstream sessions
//! ```
//!
//! The QoS 1 and QoS 2 scenarios run the gateway three times in the same
//! run: the durable store off, on with `[store] linger_ms = 0` (every
//! message written before it is acknowledged) and on with the default
//! linger (written only if the broker has not acknowledged it by then) —
//! the store in a temporary state directory under Cargo's target tmp dir,
//! i.e. on the disk that holds `target/` — and for each report the bytes
//! the gateway process wrote to disk per message (`write_bytes` of
//! `/proc/<pid>/io` around the load: page-cache pages it dirtied, so the
//! filesystem's own journal is not included), its CPU time per 100,000
//! messages (`utime + stime` of `/proc/<pid>/stat` around the load) and its
//! RSS at the end of the load.
//!
//! Every figure is printed as a Markdown table row for `docs/performance.md`.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet as MqttPacket, QoS as MqttQoS};
use sngate::proto::{self, Packet, QoS, ReturnCode, TopicRef};
use tokio::sync::mpsc;

#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

use mosquitto::{Mosquitto, MosquittoOptions};

const DEVICES: usize = 100;
const PAYLOAD: usize = 32;

/// How long a closed-loop device waits for an answer before it gives up.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// One clock for the whole process: payloads carry their send time since this
/// epoch, and the subscriber stamps each arrival against it where it arrives.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn since_epoch() -> Duration {
    EPOCH.get_or_init(Instant::now).elapsed()
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> BenchResult<()> {
    since_epoch();
    raise_fd_limit();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mosquitto = rt.block_on(Mosquitto::start_with(MosquittoOptions {
        max_queued_messages: Some(1_000_000),
        ..MosquittoOptions::default()
    }));
    println!("| scenario | path | offered | delivered msg/s | lost | p50 | p99 | note |");
    println!("|---|---|---|---|---|---|---|---|");
    match args.first().map(String::as_str) {
        Some("qos0") => {
            let rate = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(60_000);
            rt.block_on(qos0_pair(&mosquitto, rate, 10))?;
        }
        Some("qos1") => {
            let n = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(DEVICES);
            let secs = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(10);
            rt.block_on(qos1_pair(&mosquitto, n, secs, 1))?;
        }
        Some("qos2") => {
            let n = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10);
            let secs = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(10);
            rt.block_on(qos1_pair(&mosquitto, n, secs, 2))?;
        }
        Some("idle") => {
            let n = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10_000);
            rt.block_on(idle(&mosquitto, n))?;
        }
        Some("serial") => rt.block_on(serial_link(5))?,
        Some("perdevice") => {
            let n = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(1000);
            let secs = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(10);
            rt.block_on(per_device(&mosquitto, n, secs))?;
        }
        Some("sleep") => {
            let n = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10_000);
            rt.block_on(sleepers(n, 10))?;
        }
        _ => {
            for rate in [20_000, 40_000, 60_000, 80_000] {
                rt.block_on(qos0_pair(&mosquitto, rate, 5))?;
            }
            rt.block_on(qos1_pair(&mosquitto, DEVICES, 5, 1))?;
            rt.block_on(idle(&mosquitto, 10_000))?;
            rt.block_on(sleepers(10_000, 10))?;
            rt.block_on(serial_link(5))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- scenarios

/// QoS 0 at `rate` msg/s for `secs` seconds: straight to mosquitto, then via sngate.
async fn qos0_pair(mosquitto: &Mosquitto, rate: u64, secs: u64) -> BenchResult<()> {
    let total = rate * secs;
    let direct = {
        let sub = Subscriber::start(mosquitto.port, "bench/#", MqttQoS::AtMostOnce).await?;
        let start = Instant::now();
        publish_direct_paced(mosquitto.port, rate, total, start).await?;
        sub.finish(total, start).await
    };
    direct.print(
        &format!("QoS 0, {DEVICES} clients"),
        "direct to mosquitto",
        rate,
    );

    let gateway = Sngate::start(mosquitto.port)?;
    let via = {
        let sub = Subscriber::start(mosquitto.port, "bench/#", MqttQoS::AtMostOnce).await?;
        let devices = Devices::connect(gateway.udp, DEVICES).await?;
        let start = Instant::now();
        let sent =
            tokio::task::spawn_blocking(move || devices.publish_qos0_paced(rate, total, start))
                .await??;
        sub.finish(sent, start).await
    };
    via.print(&format!("QoS 0, {DEVICES} devices"), "via sngate", rate);
    let ratio = via.rate / direct.rate.max(1.0) * 100.0;
    println!("| QoS 0 at {rate}/s | sngate / direct | | {ratio:.0} % | | | | same run |");
    Ok(())
}

/// QoS 1 (or 2), closed loop: every client keeps one message in flight.
/// Four legs in one run: straight to mosquitto (QoS 1 only: the baseline
/// MQTT clients speak QoS 1), via sngate with the store off, with the store
/// on and no linger (written before acknowledged), with the store on and
/// the default linger; then what durability costs.
async fn qos1_pair(mosquitto: &Mosquitto, devices: usize, secs: u64, qos: u8) -> BenchResult<()> {
    let duration = Duration::from_secs(secs);
    let direct = if qos == 1 {
        let sub = Subscriber::start(mosquitto.port, "bench/#", MqttQoS::AtLeastOnce).await?;
        let start = Instant::now();
        let sent = publish_direct_qos1(mosquitto.port, devices, duration).await?;
        let direct = sub.finish(sent, start).await;
        direct.print(
            &format!("QoS 1, {devices} clients, 1 in flight each"),
            "direct to mosquitto",
            0,
        );
        Some(direct)
    } else {
        None
    };

    let scenario = format!("QoS {qos}, {devices} devices, 1 in flight each");
    let off = qos_via(mosquitto.port, devices, duration, None, qos).await?;
    off.print(&scenario, "via sngate, store off");

    // On the disk that holds target/, not /tmp (which may be a tmpfs).
    let mut on = Vec::new();
    for linger in [0, DEFAULT_LINGER_MS] {
        let state = tempfile::Builder::new()
            .prefix("sngate-bench-state-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let filesystem = filesystem_of(state.path());
        let leg = qos_via(
            mosquitto.port,
            devices,
            duration,
            Some((state.path(), linger)),
            qos,
        )
        .await?;
        leg.print(
            &scenario,
            &format!("via sngate, store on, linger_ms = {linger} ({filesystem})"),
        );
        on.push((linger, leg));
    }
    for (linger, leg) in &on {
        let of_direct = direct.as_ref().map_or(String::new(), |d| {
            format!(
                "; sngate / direct: off {:.0} %, on {:.0} %",
                off.outcome.rate / d.rate.max(1.0) * 100.0,
                leg.outcome.rate / d.rate.max(1.0) * 100.0
            )
        });
        println!(
            "| QoS {qos}, {devices} devices | store on (linger_ms = {linger}) / store off | | {:.0} % | | | | same run{of_direct} |",
            leg.outcome.rate / off.outcome.rate.max(1.0) * 100.0,
        );
    }
    Ok(())
}

/// `[store] linger_ms` by default (`sngate::config::StoreConfig`).
const DEFAULT_LINGER_MS: u32 = sngate::config::DEFAULT_LINGER_MS;

/// One closed-loop leg at `qos` through a fresh gateway: `store` None runs
/// it with `--state-dir off`, else in that directory with that
/// `[store] linger_ms`. The gateway is stopped before this returns, so the
/// next leg's bridge never shares the broker with it.
async fn qos_via(
    mqtt_port: u16,
    devices: usize,
    duration: Duration,
    store: Option<(&std::path::Path, u32)>,
    qos: u8,
) -> BenchResult<Leg> {
    let upstream = format!("127.0.0.1:{mqtt_port}");
    // Every simulated device sends from 127.0.0.1: no per-source rate limit.
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bench.toml");
    let linger = store.map_or(DEFAULT_LINGER_MS, |(_, l)| l);
    std::fs::write(
        &config,
        format!(
            "[limits]\nper_source_packets_per_sec = 0\nper_session_packets_per_sec = 0\n\
             [store]\nlinger_ms = {linger}\n"
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let mut gateway = Sngate::spawn(
        store.map(|(d, _)| d),
        &["--upstream", &upstream, "--config", &config],
    )?;
    let sub_qos = if qos == 2 {
        MqttQoS::ExactlyOnce
    } else {
        MqttQoS::AtLeastOnce
    };
    let sub = Subscriber::start(mqtt_port, "bench/#", sub_qos).await?;
    let sims = Devices::connect(gateway.udp, devices).await?;
    let before = gateway.write_bytes();
    let cpu_before = gateway.cpu_secs();
    let start = Instant::now();
    let sent = sims.publish_closed_loop(duration, start, qos).await?;
    let outcome = sub.finish(sent, start).await;
    let after = gateway.write_bytes();
    let cpu = gateway.cpu_secs() - cpu_before;
    let rss_kib = gateway.rss_kib();
    // A gateway whose store failed stops on its own: say so, never report
    // its figures as if it had kept up.
    if let Some(status) = gateway.child.try_wait()? {
        return Err(format!("sngate exited during the load: {status}").into());
    }
    let written = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    Ok(Leg {
        outcome,
        duration,
        written,
        cpu_secs: Some(cpu),
        rss_kib: Some(rss_kib),
    })
}

/// `n` devices, each with its own upstream session (`--bridge-mode
/// per-device`), against the same devices through the one shared session
/// and the same number of MQTT clients straight to mosquitto, in one run:
/// time until every device has its CONNACK (all CONNECTs sent at once; in
/// per-device mode a CONNACK waits for the device's session) and until
/// mosquitto holds every session (established TCP connections to its port),
/// gateway RSS, and QoS 1 closed-loop throughput for `secs` seconds.
async fn per_device(mosquitto: &Mosquitto, n: usize, secs: u64) -> BenchResult<()> {
    let duration = Duration::from_secs(secs);
    let direct = {
        let sub = Subscriber::start(mosquitto.port, "bench/#", MqttQoS::AtLeastOnce).await?;
        let start = Instant::now();
        let sent = publish_direct_qos1(mosquitto.port, n, duration).await?;
        sub.finish(sent, start).await
    };
    direct.print(
        &format!("QoS 1, {n} clients, 1 in flight each"),
        "direct to mosquitto",
        0,
    );
    for mode in ["aggregate", "per-device"] {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            "[limits]\nper_source_packets_per_sec = 0\nper_session_packets_per_sec = 0\n",
        )?;
        let config = config.to_string_lossy().into_owned();
        let upstream = format!("127.0.0.1:{}", mosquitto.port);
        let mut gateway = Sngate::start_with(&[
            "--upstream",
            &upstream,
            "--config",
            &config,
            "--bridge-mode",
            mode,
        ])?;
        // The previous leg's connections may still be closing at the
        // broker's end: count from a settled baseline.
        let baseline = settled_established_to(mosquitto.port).await;
        let idle_rss = gateway.rss_kib();
        let start = Instant::now();
        let devices = Devices::connect_burst(gateway.udp, n).await?;
        let connacked = start.elapsed();
        // Every session up at the broker (the shared one was up before).
        let want = if mode == "per-device" {
            baseline + n
        } else {
            baseline
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while established_to(mosquitto.port) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let at_broker = start.elapsed();
        let sessions = established_to(mosquitto.port).saturating_sub(baseline);
        let rss = gateway.rss_kib();
        let sub = Subscriber::start(mosquitto.port, "bench/#", MqttQoS::AtLeastOnce).await?;
        let t0 = Instant::now();
        let sent = devices.publish_closed_loop(duration, t0, 1).await?;
        let outcome = sub.finish(sent, t0).await;
        if let Some(status) = gateway.child.try_wait()? {
            return Err(format!("sngate exited during the load: {status}").into());
        }
        outcome.print(
            &format!("QoS 1, {n} devices, 1 in flight each"),
            &format!("via sngate, bridge_mode {mode}"),
            0,
        );
        println!(
            "| {n} devices connect, bridge_mode {mode} | via sngate | | | | | | all CONNACKed (and a topic registered each) in {:.2} s; {sessions} device sessions at the broker after {:.2} s; RSS {:.1} MB (idle {:.1} MB, {:.1} KB per device) |",
            connacked.as_secs_f64(),
            at_broker.as_secs_f64(),
            rss as f64 / 1024.0,
            idle_rss as f64 / 1024.0,
            rss.saturating_sub(idle_rss) as f64 / n.max(1) as f64,
        );
        println!(
            "| QoS 1, {n} devices, bridge_mode {mode} | sngate / direct | | {:.0} % | | | | same run |",
            outcome.rate / direct.rate.max(1.0) * 100.0
        );
    }
    Ok(())
}

/// [`established_to`] once it has stopped changing (two equal readings
/// 200 ms apart, within 10 s).
async fn settled_established_to(port: u16) -> usize {
    let mut last = established_to(port);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = established_to(port);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Established TCP connections whose local port is `port` (mosquitto's
/// side of each client connection), from /proc/net/tcp and tcp6.
fn established_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let mut f = l.split_whitespace();
                    let local = f.nth(1).unwrap_or("");
                    let state = f.nth(1).unwrap_or("");
                    state == "01"
                        && local
                            .rsplit(':')
                            .next()
                            .and_then(|p| u16::from_str_radix(p, 16).ok())
                            == Some(port)
                })
                .count()
        })
        .sum()
}

/// Memory: `n` connected devices, gateway RSS before and after.
async fn idle(mosquitto: &Mosquitto, n: usize) -> BenchResult<()> {
    let gateway = Sngate::start(mosquitto.port)?;
    let before = gateway.rss_kib();
    let start = Instant::now();
    let devices = Devices::connect(gateway.udp, n).await?;
    let took = start.elapsed();
    let after = gateway.rss_kib();
    println!(
        "| {n} connected devices | via sngate | | | | | | RSS {:.1} MB (idle {:.1} MB), connected in {:.1} s |",
        after as f64 / 1024.0,
        before as f64 / 1024.0,
        took.as_secs_f64()
    );
    drop(devices);
    Ok(())
}

/// `n` sleeping devices, `per_device` QoS 1 messages buffered for each while
/// asleep (published by 20 devices), then all wake at once: gateway RSS with
/// the buffers full, and how fast the hand-over (REGISTER, PUBLISH, PUBACK …
/// PINGRESP, per device) empties them. Local routing only, no upstream.
async fn sleepers(n: usize, per_device: usize) -> BenchResult<()> {
    use sngate::client::{Client, ConnectOptions};
    use sngate::proto::SubscribeTopic;
    const PUBLISHERS: usize = 20;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sleep.toml");
    // Each publisher registers n / PUBLISHERS topics; buffers must hold the lot.
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_clients = {}\nmax_topics_per_client = {}\nmax_queued_bytes_total = {}\n\
             per_source_packets_per_sec = 0\nper_session_packets_per_sec = 0\n",
            n + PUBLISHERS + 10,
            n / PUBLISHERS + 10,
            256 << 20
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let gateway = Sngate::start_with(&["--config", &config])?;
    let gw = gateway.udp;
    let idle = gateway.rss_kib();
    let options = |id: String| {
        ConnectOptions::new(id)
            .keep_alive(3600)
            .clean_session(false)
            .retry(Duration::from_secs(2), 5)
    };

    // Connect, subscribe and sleep, 200 at a time.
    let mut sleepers = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut batch = Vec::new();
        for &i in chunk {
            let options = options(format!("sleeper-{i}"));
            batch.push(tokio::spawn(async move {
                let mut c = Client::connect(gw, options).await?;
                c.subscribe(SubscribeTopic::Name(format!("sleep/{i}")), QoS::AtLeastOnce)
                    .await?;
                c.sleep(3600).await?;
                Ok::<_, sngate::client::ClientError>(c)
            }));
        }
        for t in batch {
            sleepers.push(t.await??);
        }
    }

    // Buffer per_device messages for each sleeper.
    let started = Instant::now();
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let options = options(format!("publisher-{p}"));
        publishers.push(tokio::spawn(async move {
            let mut c = Client::connect(gw, options).await?;
            for i in (p..n).step_by(PUBLISHERS) {
                let id = c.register(&format!("sleep/{i}")).await?;
                for m in 0..per_device {
                    c.publish(
                        TopicRef::Id(id),
                        format!("{i}:{m}"),
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await?;
                }
            }
            Ok::<_, sngate::client::ClientError>(())
        }));
    }
    for t in publishers {
        t.await??;
    }
    let buffered_in = started.elapsed();
    let full = gateway.rss_kib();

    // Everyone wakes at once.
    let started = Instant::now();
    let mut wakes = Vec::with_capacity(n);
    for (i, mut c) in sleepers.into_iter().enumerate() {
        wakes.push(tokio::spawn(async move {
            let got = c.wake_and_collect().await?;
            let expected: Vec<String> = (0..per_device).map(|m| format!("{i}:{m}")).collect();
            let payloads: Vec<String> = got
                .iter()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
                .collect();
            Ok::<_, sngate::client::ClientError>(payloads == expected)
        }));
    }
    let mut complete = 0;
    for t in wakes {
        if t.await?? {
            complete += 1;
        }
    }
    let took = started.elapsed();
    let handed = (n * per_device) as f64;
    println!(
        "| {n} sleeping devices × {per_device} buffered QoS 1 | via sngate | | {:.0} handed over/s | {} devices incomplete | | | RSS {:.1} MB with {} buffered (idle {:.1} MB); buffered in {:.1} s, all woke and emptied in {:.1} s |",
        handed / took.as_secs_f64(),
        n - complete,
        full as f64 / 1024.0,
        n * per_device,
        idle as f64 / 1024.0,
        buffered_in.as_secs_f64(),
        took.as_secs_f64(),
    );
    Ok(())
}

/// One XBee link (API mode 2) on a pseudo-terminal: a simulated radio
/// publishes QoS 0 messages (32-byte payload) that a UDP device receives.
/// A pty has no baud rate, so the radio paces its writes to 115,200 baud
/// (8N1: 10 bits a byte) to measure the utilisation reached, then sends
/// unpaced to show the gateway's serial path against that line rate.
async fn serial_link(secs: u64) -> BenchResult<()> {
    use sngate::client::{Client, ConnectOptions};
    use sngate::proto::SubscribeTopic;
    use sngate::transport::framing::xbee::{ApiFrameReader, write_api_frame};
    use std::io::Read;
    const BAUD: f64 = 115_200.0;
    const SRC: u64 = 0x0013_A200_4000_0001;

    let pty = Pty::open()?;
    let device = format!("{}:xbee:115200", pty.slave_path);
    // One radio sends the whole load: no per-source rate limit.
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("serial.toml");
    std::fs::write(
        &config,
        "[limits]\nper_source_packets_per_sec = 0\nper_session_packets_per_sec = 0\n",
    )?;
    let config = config.to_string_lossy().into_owned();
    let gateway = Sngate::start_with(&["--serial", &device, "--config", &config])?;
    let mut options = ConnectOptions::new("serial-sub");
    // Large enough that the measuring client never drops QoS 0 itself.
    options.message_buffer = 1 << 20;
    let mut sub = Client::connect(gateway.udp, options).await?;
    sub.subscribe(SubscribeTopic::Name("ser/#".into()), QoS::AtMostOnce)
        .await?;

    // The radio: CONNECT and REGISTER through 0x90 frames, answers read back.
    let mut master = pty.master;
    let rx_frame = |message: &Packet| -> BenchResult<Vec<u8>> {
        let mut msg = BytesMut::new();
        proto::encode(message, &mut msg)?;
        let mut data = vec![0x90];
        data.extend_from_slice(&SRC.to_be_bytes());
        data.extend_from_slice(&[0xFF, 0xFE, 0x01]);
        data.extend_from_slice(&msg);
        let mut frame = BytesMut::new();
        write_api_frame(true, &data, &mut frame).map_err(|e| e.to_string())?;
        Ok(frame.to_vec())
    };
    let mut reader = ApiFrameReader::new(true, 4096);
    let mut answer = |master: &mut std::fs::File, want: u8| -> BenchResult<Packet> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            while let Some(frame) = reader.next_frame() {
                let Ok(frame) = frame else { continue };
                // 0x10 transmit request: type, id, dest64, dest16, radius, options, data.
                if frame.first() == Some(&0x10)
                    && let Some(data) = frame.get(14..)
                    && let Ok(p) = proto::decode(data)
                    && p.msg_type().code() == want
                {
                    return Ok(p);
                }
            }
            match master.read(&mut buf) {
                Ok(n) if n > 0 => reader.push(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        Err("no answer from the gateway over the pty".into())
    };
    write_fully(
        &mut master,
        &rx_frame(&Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 1,
            duration: 600,
            client_id: "radio".into(),
        })?,
    )?;
    answer(&mut master, 0x05)?;
    write_fully(
        &mut master,
        &rx_frame(&Packet::Register {
            topic_id: 0,
            msg_id: 1,
            topic_name: "ser/x".into(),
        })?,
    )?;
    let Packet::RegAck { topic_id, .. } = answer(&mut master, 0x0B)? else {
        return Err("no REGACK".into());
    };

    for paced in [true, false] {
        let frame_len = rx_frame(&Packet::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicRef::Id(topic_id),
            msg_id: 0,
            payload: payload(0, 0),
        })?
        .len();
        let line_rate = BAUD / 10.0 / frame_len as f64;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut writer = master.try_clone()?;
        let send_for = Duration::from_secs(secs);
        let sender = std::thread::spawn(move || -> BenchResult<u64> {
            let started = Instant::now();
            let mut seq = 0u32;
            while started.elapsed() < send_for {
                if paced {
                    let due = (started.elapsed().as_secs_f64() * line_rate) as u64;
                    if u64::from(seq) >= due {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                }
                let mut msg = BytesMut::new();
                proto::encode(
                    &Packet::Publish {
                        dup: false,
                        qos: QoS::AtMostOnce,
                        retain: false,
                        topic: TopicRef::Id(topic_id),
                        msg_id: 0,
                        payload: payload(1, seq),
                    },
                    &mut msg,
                )?;
                let mut data = vec![0x90];
                data.extend_from_slice(&SRC.to_be_bytes());
                data.extend_from_slice(&[0xFF, 0xFE, 0x01]);
                data.extend_from_slice(&msg);
                let mut frame = BytesMut::new();
                write_api_frame(true, &data, &mut frame).map_err(|e| e.to_string())?;
                write_fully(&mut writer, &frame)?;
                seq += 1;
            }
            Ok(u64::from(seq))
        });
        let rcvbuf_errors_before = udp_rcvbuf_errors();
        let mut received = 0u64;
        let mut last = start;
        loop {
            match sub.recv_message(Duration::from_secs(1)).await {
                Ok(_) => {
                    received += 1;
                    last = Instant::now();
                }
                Err(_) if sender.is_finished() => break,
                Err(_) => {}
            }
        }
        sent += sender.join().map_err(|_| "sender panicked")??;
        let rate = received as f64 / last.duration_since(start).as_secs_f64().max(1e-9);
        let kernel_drops = udp_rcvbuf_errors().saturating_sub(rcvbuf_errors_before);
        println!(
            "| XBee serial link, {} | via sngate | {} | {:.0} | {} of {} | | | {frame_len}-byte frames; 115,200 baud carries {line_rate:.0} frames/s: {:.0} % of it; UDP datagrams the kernel dropped for a full receive buffer meanwhile: {kernel_drops} |",
            if paced {
                "paced at 115,200 baud"
            } else {
                "unpaced (pty)"
            },
            if paced {
                format!("{line_rate:.0}/s")
            } else {
                "as fast as written".to_owned()
            },
            rate,
            sent.saturating_sub(received),
            sent,
            rate / line_rate * 100.0,
        );
    }
    Ok(())
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer
/// (`/proc/net/snmp`, `Udp: … RcvbufErrors`), to tell where a loss happened.
fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Writes all of `bytes` to a non-blocking pty master, waiting while the
/// terminal's buffer is full.
fn write_fully(w: &mut std::fs::File, bytes: &[u8]) -> BenchResult<()> {
    use std::io::Write;
    let mut off = 0;
    while off < bytes.len() {
        match w.write(&bytes[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A pseudo-terminal pair: the gateway opens the slave by its path, the
/// benchmark plays the radio on the master.
struct Pty {
    master: std::fs::File,
    slave_path: String,
    _slave: std::fs::File,
}

impl Pty {
    fn open() -> BenchResult<Pty> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let nix::pty::OpenptyResult { master, slave } = nix::pty::openpty(None, None)?;
        // The slave in raw mode (no echo, no translation), the master
        // non-blocking so reads and writes never stall the benchmark.
        if let Ok(mut t) = tcgetattr(&slave) {
            cfmakeraw(&mut t);
            tcsetattr(&slave, SetArg::TCSANOW, &t)?;
        }
        let flags = OFlag::from_bits_retain(fcntl(&master, FcntlArg::F_GETFL)?);
        fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let (master, slave) = (std::fs::File::from(master), std::fs::File::from(slave));
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            slave.as_raw_fd()
        }))?
        .to_string_lossy()
        .into_owned();
        Ok(Pty {
            master,
            slave_path,
            _slave: slave,
        })
    }
}

// ---------------------------------------------------------------- results

struct Outcome {
    sent: u64,
    received: u64,
    rate: f64,
    p50: Duration,
    p99: Duration,
}

impl Outcome {
    fn print(&self, scenario: &str, path: &str, offered: u64) {
        let offered = if offered == 0 {
            "closed loop".to_string()
        } else {
            format!("{offered}/s")
        };
        println!(
            "| {scenario} | {path} | {offered} | {:.0} | {} of {} | {:.2} ms | {:.2} ms | |",
            self.rate,
            self.sent.saturating_sub(self.received),
            self.sent,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
        );
    }
}

/// A QoS 1 leg through the gateway, with what the gateway wrote to disk.
struct Leg {
    outcome: Outcome,
    /// How long the devices published (each then waits for its last PUBACK).
    duration: Duration,
    /// `write_bytes` of the gateway process over the load, if readable.
    written: Option<u64>,
    /// The gateway's CPU time over the load (user + system), if measured.
    cpu_secs: Option<f64>,
    /// The gateway's RSS at the end of the load, if measured.
    rss_kib: Option<u64>,
}

impl Leg {
    fn print(&self, scenario: &str, path: &str) {
        let o = &self.outcome;
        let written = match self.written {
            Some(w) => format!(
                "gateway wrote {:.0} B/message to disk ({:.1} MB in all; write_bytes, ext4 journal excluded)",
                w as f64 / o.received.max(1) as f64,
                w as f64 / 1e6
            ),
            None => "bytes written: /proc/<pid>/io not readable".to_owned(),
        };
        let cpu = self.cpu_secs.map_or(String::new(), |c| {
            format!(
                "; gateway CPU {:.2} s per 100k messages",
                c / o.received.max(1) as f64 * 1e5
            )
        });
        let rss = self.rss_kib.map_or(String::new(), |r| {
            format!("; RSS {:.1} MB", r as f64 / 1024.0)
        });
        println!(
            "| {scenario} | {path} | closed loop | {:.0} | {} of {} | {:.2} ms | {:.2} ms | devices acknowledged {:.0}/s while publishing; {written}{cpu}{rss} |",
            o.rate,
            o.sent.saturating_sub(o.received),
            o.sent,
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            o.sent as f64 / self.duration.as_secs_f64().max(1e-9),
        );
    }
}

/// The filesystem `path` is on, as "type on device" from /proc/self/mounts
/// (longest mount point that contains it), so a run on a tmpfs shows.
fn filesystem_of(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "filesystem unknown".to_owned();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at)
                .then(|| (at.len(), format!("{kind} on {dev}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "filesystem unknown".to_owned(), |(_, fs)| fs)
}

/// The payload: [device u32][seq u32][sent-at nanos since EPOCH u64] + padding.
fn payload(device: u32, seq: u32) -> Bytes {
    let mut p = Vec::with_capacity(PAYLOAD);
    p.extend_from_slice(&device.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(since_epoch().as_nanos() as u64).to_be_bytes());
    p.resize(PAYLOAD, b'x');
    Bytes::from(p)
}

/// One arrival: (device << 32 | seq, sent at, arrived at), both since EPOCH.
type Arrival = (u64, Duration, Duration);

struct Subscriber {
    rx: mpsc::UnboundedReceiver<Arrival>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    async fn start(port: u16, filter: &str, qos: MqttQoS) -> BenchResult<Subscriber> {
        let mut opts = MqttOptions::new(
            format!("bench-sub-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        eventloop.set_network_options(nodelay());
        client.subscribe(filter, qos).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        tokio::spawn(async move {
            let _client = client;
            let mut ready = Some(ready_tx);
            while !stop2.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(MqttPacket::SubAck(_)))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Ok(Event::Incoming(MqttPacket::Publish(p)))) if p.payload.len() >= 16 => {
                        let b = &p.payload;
                        let key = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])) << 32
                            | u64::from(u32::from_be_bytes([b[4], b[5], b[6], b[7]]));
                        let sent_at = u64::from_be_bytes([
                            b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15],
                        ]);
                        let _ = tx.send((key, Duration::from_nanos(sent_at), since_epoch()));
                    }
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await??;
        Ok(Subscriber { rx, stop })
    }

    /// Counts distinct messages until `sent` arrived or 2 s pass with nothing
    /// new. Rate and latency use the arrival times stamped by the subscriber
    /// task, not the time this loop gets to them.
    async fn finish(mut self, sent: u64, start: Instant) -> Outcome {
        let mut seen = HashSet::with_capacity(sent as usize);
        let mut latencies = Vec::with_capacity(sent as usize);
        let first_sent = start.saturating_duration_since(*EPOCH.get_or_init(Instant::now));
        let mut last = first_sent;
        while (seen.len() as u64) < sent {
            match tokio::time::timeout(Duration::from_secs(2), self.rx.recv()).await {
                Ok(Some((key, sent_at, arrived))) => {
                    if seen.insert(key) {
                        latencies.push(arrived.saturating_sub(sent_at));
                        last = last.max(arrived);
                    }
                }
                _ => break,
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if (seen.len() as u64) < sent {
            report_gaps(&seen);
        }
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        let elapsed = last.saturating_sub(first_sent).as_secs_f64().max(1e-9);
        Outcome {
            sent,
            received: seen.len() as u64,
            rate: seen.len() as f64 / elapsed,
            p50: pct(0.50),
            p99: pct(0.99),
        }
    }
}

/// Prints, per device, the sequence numbers missing below the highest one
/// received: gaps in the middle of a stream are real losses; a shortfall at the
/// end only means the run stopped with messages in flight.
fn report_gaps(seen: &HashSet<u64>) {
    let mut highest: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for key in seen {
        let (d, s) = ((key >> 32) as u32, *key as u32);
        let h = highest.entry(d).or_insert(0);
        *h = (*h).max(s);
    }
    let mut gaps = Vec::new();
    for (d, h) in &highest {
        for s in 0..*h {
            if !seen.contains(&(u64::from(*d) << 32 | u64::from(s))) {
                gaps.push((*d, s));
            }
        }
    }
    gaps.sort_unstable();
    eprintln!(
        "missing in the middle of a stream: {} {:?}",
        gaps.len(),
        gaps.iter().take(20).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------- baseline publishers

/// The baseline and the subscriber use TCP_NODELAY, as sngate's bridge does,
/// so Nagle's algorithm delays neither side of the comparison.
fn nodelay() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

/// `n` MQTT clients straight to mosquitto, each with a channel that yields
/// once per PUBACK it receives (for the closed-loop QoS 1 baseline).
async fn mqtt_clients(
    port: u16,
    n: usize,
    inflight: u16,
) -> BenchResult<Vec<(AsyncClient, mpsc::UnboundedReceiver<()>)>> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut opts = MqttOptions::new(format!("bench-direct-{i}"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_inflight(inflight);
        let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
        eventloop.set_network_options(nodelay());
        let (acks, acked) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(MqttPacket::PubAck(_))) => {
                        let _ = acks.send(());
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        clients.push((client, acked));
    }
    Ok(clients)
}

async fn publish_direct_paced(port: u16, rate: u64, total: u64, start: Instant) -> BenchResult<()> {
    let clients: Vec<AsyncClient> = mqtt_clients(port, DEVICES, 100)
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let mut seq = vec![0u32; DEVICES];
    let mut sent = 0u64;
    while sent < total {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(total) {
            let d = (sent % DEVICES as u64) as usize;
            let p = payload(d as u32, seq[d]);
            seq[d] += 1;
            clients[d]
                .publish_bytes(format!("bench/d{d}"), MqttQoS::AtMostOnce, false, p)
                .await?;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn publish_direct_qos1(port: u16, devices: usize, duration: Duration) -> BenchResult<u64> {
    let start = Instant::now();
    let clients = mqtt_clients(port, devices, 1).await?;
    let mut tasks = Vec::new();
    for (d, (client, mut acked)) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Closed loop: the next message only after the broker's PUBACK,
            // as a device with one QoS 1 message in flight does.
            let mut seq = 0u32;
            while start.elapsed() < duration {
                let p = payload(d as u32, seq);
                if client
                    .publish_bytes(format!("bench/d{d}"), MqttQoS::AtLeastOnce, false, p)
                    .await
                    .is_err()
                {
                    break;
                }
                seq += 1;
                if acked.recv().await.is_none() {
                    break;
                }
            }
            u64::from(seq)
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await?;
    }
    Ok(sent)
}

// ---------------------------------------------------------------- simulated devices

/// Connected MQTT-SN devices, one UDP socket each, each with "bench/d{i}" registered.
struct Devices {
    sockets: Vec<UdpSocket>,
    topic_ids: Vec<u16>,
}

impl Devices {
    async fn connect(gateway: SocketAddr, n: usize) -> BenchResult<Devices> {
        tokio::task::spawn_blocking(move || Self::connect_blocking(gateway, n)).await?
    }

    /// Like [`connect`](Self::connect) but every CONNECT goes out at once
    /// (then the REGISTERs, one device at a time); a device whose CONNACK
    /// does not come within 2 s sends its CONNECT again, as a device would.
    async fn connect_burst(gateway: SocketAddr, n: usize) -> BenchResult<Devices> {
        tokio::task::spawn_blocking(move || Self::connect_burst_blocking(gateway, n)).await?
    }

    fn connect_burst_blocking(gateway: SocketAddr, n: usize) -> BenchResult<Devices> {
        let connect = |i: usize| Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 1,
            duration: 600,
            client_id: format!("bench-{i}"),
        };
        let mut sockets = Vec::with_capacity(n);
        let mut buf = BytesMut::new();
        for i in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.connect(gateway)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            buf.clear();
            proto::encode(&connect(i), &mut buf)?;
            s.send(&buf)?;
            sockets.push(s);
        }
        let mut topic_ids = Vec::with_capacity(n);
        for (i, s) in sockets.iter().enumerate() {
            let mut rx = [0u8; 64];
            let connack = match s.recv(&mut rx) {
                Ok(len) => proto::decode(&rx[..len])?,
                Err(_) => request(s, &connect(i), |p| matches!(p, Packet::ConnAck { .. }))?,
            };
            topic_ids.push(Self::register_after(s, i, &connack)?);
        }
        Ok(Devices { sockets, topic_ids })
    }

    /// Device `i`'s CONNACK must accept it; then it registers "bench/d{i}"
    /// and gets the topic id back.
    fn register_after(s: &UdpSocket, i: usize, connack: &Packet) -> BenchResult<u16> {
        if *connack
            != (Packet::ConnAck {
                return_code: ReturnCode::Accepted,
            })
        {
            return Err(format!("device {i}: {connack:?}").into());
        }
        let regack = request(
            s,
            &Packet::Register {
                topic_id: 0,
                msg_id: 1,
                topic_name: format!("bench/d{i}"),
            },
            |p| matches!(p, Packet::RegAck { .. }),
        )?;
        let Packet::RegAck { topic_id, .. } = regack else {
            return Err("no REGACK".into());
        };
        Ok(topic_id)
    }

    fn connect_blocking(gateway: SocketAddr, n: usize) -> BenchResult<Devices> {
        let mut sockets = Vec::with_capacity(n);
        let mut topic_ids = Vec::with_capacity(n);
        for i in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.connect(gateway)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let connack = request(
                &s,
                &Packet::Connect {
                    will: false,
                    clean_session: true,
                    protocol_id: 1,
                    duration: 600,
                    client_id: format!("bench-{i}"),
                },
                |p| matches!(p, Packet::ConnAck { .. }),
            )?;
            topic_ids.push(Self::register_after(&s, i, &connack)?);
            sockets.push(s);
        }
        Ok(Devices { sockets, topic_ids })
    }

    fn publish_qos0_paced(self, rate: u64, total: u64, start: Instant) -> BenchResult<u64> {
        let n = self.sockets.len() as u64;
        let mut seq = vec![0u32; self.sockets.len()];
        let mut buf = BytesMut::with_capacity(128);
        let mut sent = 0u64;
        while sent < total {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due.min(total) {
                let d = (sent % n) as usize;
                buf.clear();
                proto::encode(
                    &Packet::Publish {
                        dup: false,
                        qos: QoS::AtMostOnce,
                        retain: false,
                        topic: TopicRef::Id(self.topic_ids[d]),
                        msg_id: 0,
                        payload: payload(d as u32, seq[d]),
                    },
                    &mut buf,
                )?;
                seq[d] += 1;
                self.sockets[d].send(&buf)?;
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(sent)
    }

    /// QoS 1, closed loop: one task per device (event-driven, like the
    /// baseline's MQTT clients) sends its next message when the PUBACK for
    /// the previous one arrives. Returns the messages sent, counting the last
    /// one in flight of each device.
    async fn publish_closed_loop(
        self,
        duration: Duration,
        start: Instant,
        qos: u8,
    ) -> BenchResult<u64> {
        let mut tasks = Vec::with_capacity(self.sockets.len());
        for (d, (socket, topic_id)) in self.sockets.into_iter().zip(self.topic_ids).enumerate() {
            socket.set_nonblocking(true)?;
            let socket = tokio::net::UdpSocket::from_std(socket)?;
            tasks.push(tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(128);
                let mut rx = [0u8; 256];
                let mut seq = 0u32;
                while start.elapsed() < duration {
                    buf.clear();
                    let msg_id = (seq % 0xFFFF + 1) as u16;
                    let publish = Packet::Publish {
                        dup: false,
                        qos: if qos == 2 {
                            QoS::ExactlyOnce
                        } else {
                            QoS::AtLeastOnce
                        },
                        retain: false,
                        topic: TopicRef::Id(topic_id),
                        msg_id,
                        payload: payload(d as u32, seq),
                    };
                    if proto::encode(&publish, &mut buf).is_err()
                        || socket.send(&buf).await.is_err()
                    {
                        break;
                    }
                    seq += 1;
                    // Wait for this message's PUBACK, or at QoS 2 its PUBREC,
                    // then PUBREL → PUBCOMP (the bench's devices never
                    // retransmit: the gateway answers every PUBLISH it accepts).
                    loop {
                        // A lost answer ends this device's stream rather
                        // than the whole bench (a figure with a loss shows).
                        let Ok(Ok(n)) =
                            tokio::time::timeout(ANSWER_WAIT, socket.recv(&mut rx)).await
                        else {
                            return u64::from(seq);
                        };
                        match proto::decode(&rx[..n]) {
                            Ok(Packet::PubAck {
                                return_code: ReturnCode::Accepted,
                                ..
                            })
                            | Ok(Packet::PubComp { .. }) => break,
                            Ok(Packet::PubRec { msg_id: m }) if m == msg_id => {
                                buf.clear();
                                if proto::encode(&Packet::PubRel { msg_id }, &mut buf).is_err()
                                    || socket.send(&buf).await.is_err()
                                {
                                    return u64::from(seq);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                u64::from(seq)
            }));
        }
        let mut sent = 0;
        for t in tasks {
            sent += t.await?;
        }
        Ok(sent)
    }
}

fn request(s: &UdpSocket, packet: &Packet, want: impl Fn(&Packet) -> bool) -> BenchResult<Packet> {
    let mut buf = BytesMut::new();
    proto::encode(packet, &mut buf)?;
    let mut rx = [0u8; 512];
    for _ in 0..5 {
        s.send(&buf)?;
        while let Ok(n) = s.recv(&mut rx) {
            if let Ok(p) = proto::decode(&rx[..n])
                && want(&p)
            {
                return Ok(p);
            }
        }
    }
    Err(format!("no answer to {:?}", packet.msg_type()).into())
}

// ---------------------------------------------------------------- processes

fn free_udp_port() -> BenchResult<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The real gateway binary, bridged to mosquitto.
struct Sngate {
    child: Child,
    udp: SocketAddr,
}

impl Sngate {
    fn start(mqtt_port: u16) -> BenchResult<Sngate> {
        // Every simulated device sends from 127.0.0.1: the per-source rate
        // limit (one budget per IP address) would cap the whole load.
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            "[limits]\nper_source_packets_per_sec = 0\nper_session_packets_per_sec = 0\n",
        )?;
        let config = config.to_string_lossy().into_owned();
        Self::start_with(&[
            "--upstream",
            &format!("127.0.0.1:{mqtt_port}"),
            "--config",
            &config,
        ])
    }

    /// The gateway with extra `sngate run` arguments (e.g. a config file),
    /// the durable store off.
    fn start_with(extra: &[&str]) -> BenchResult<Sngate> {
        Self::spawn(None, extra)
    }

    /// The gateway with its durable store in `state_dir` (None: off) and
    /// extra `sngate run` arguments.
    fn spawn(state_dir: Option<&std::path::Path>, extra: &[&str]) -> BenchResult<Sngate> {
        let port = free_udp_port()?;
        let udp: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let state_dir = state_dir.map_or_else(|| "off".to_owned(), |d| d.display().to_string());
        let child = Command::new(env!("CARGO_BIN_EXE_sngate"))
            .args([
                "run",
                "--log-level",
                "warn",
                "--broker",
                "off",
                "--state-dir",
                &state_dir,
                "--udp",
                &udp.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        // Ready when a SEARCHGW is answered.
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.connect(udp)?;
        probe.set_read_timeout(Some(Duration::from_millis(100)))?;
        // Before the gateway binds, the probe's sends fail at once (ICMP port
        // unreachable), so wait on a deadline rather than a count of tries.
        let deadline = Instant::now() + Duration::from_secs(10);
        while request(&probe, &Packet::SearchGw { radius: 0 }, |p| {
            matches!(p, Packet::GwInfo { .. })
        })
        .is_err()
        {
            if Instant::now() > deadline {
                return Err("sngate did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Sngate { child, udp })
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }
}

impl Sngate {
    /// The gateway's CPU time so far, user + system, in seconds
    /// (`/proc/<pid>/stat`, in clock ticks of 1/100 s).
    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) in parens.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15; `rest` starts at field 3.
        (ticks(11) + ticks(12)) as f64 / 100.0
    }

    /// Bytes the gateway process has caused to be written to storage so far
    /// (`write_bytes` in `/proc/<pid>/io`, all its threads: counted as it
    /// dirties page-cache pages, so neither the filesystem journal nor
    /// another process's writes are in it). None where it cannot be read.
    fn write_bytes(&self) -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{}/io", self.child.id()))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Sngate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
