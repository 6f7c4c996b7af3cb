//! `sngate pub` and `sngate sub`: the real binary against a gateway started
//! in-process on an ephemeral port, over UDP and over serial lines made of
//! pseudo-terminal pairs. Every wait is on output, with a deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::BytesMut;
use common::pty::Pty;
use common::{KillOnDrop, connect, expect_message, start_gateway, start_gateway_with};
use sngate::config::{SerialConfig, SerialFraming};
use sngate::proto::{QoS, SubscribeTopic};
use sngate::transport::framing::xbee::{ApiFrameReader, write_api_frame};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_round_trip_retained_qos1_and_qos_minus_one() {
    let gw = start_gateway().await;
    let addr = gw.addr.to_string();
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            publish(&a, &["-t", "sensors/temp", "-m", "21.5", "-q", "1", "-r"]).0,
            0
        );
        let (mut child, rx) = subscribe(&a, &["-t", "sensors/#", "-C", "1", "-v"]);
        assert_eq!(next_line(&rx), "sensors/temp 21.5");
        assert!(child.wait().expect("sub exits").success());

        // QoS -1 to a short name needs no connection; retained, so a later
        // subscriber gets it.
        assert_eq!(
            publish(&a, &["-t", "ab", "-m", "no session", "-q", "-1", "-r"]).0,
            0
        );
        let (mut child, rx) = subscribe(&a, &["-t", "ab", "-C", "1"]);
        assert_eq!(next_line(&rx), "no session");
        assert!(child.wait().expect("sub exits").success());
    })
    .await
    .expect("blocking part");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_sub_collects_what_arrived_while_it_slept() {
    let gw = start_gateway().await;
    let a = gw.addr.to_string();
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            publish(&a, &["-t", "s/first", "-m", "one", "-q", "1", "-r"]).0,
            0
        );
        let (mut child, rx) = subscribe(
            &a,
            &["-t", "s/#", "-q", "1", "-c", "-C", "2", "--sleep", "1"],
        );
        // The retained message comes at once; the client then sleeps.
        assert_eq!(next_line(&rx), "one");
        assert_eq!(
            publish(&a, &["-t", "s/second", "-m", "two", "-q", "1"]).0,
            0
        );
        assert_eq!(next_line(&rx), "two");
        assert!(child.wait().expect("sub exits").success());
    })
    .await
    .expect("blocking part");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_usage_errors_have_distinct_exit_codes() {
    let gw = start_gateway().await;
    let a = gw.addr.to_string();
    tokio::task::spawn_blocking(move || {
        let (code, err) = publish(&a, &["--predefined-id", "9", "-m", "x", "-q", "1"]);
        assert_eq!(code, 1);
        assert!(err.contains("InvalidTopicId"), "{err}");
        let (code, err) = publish(&a, &["-m", "x"]);
        assert_eq!(code, 2);
        assert!(err.contains("--topic"), "{err}");
    })
    .await
    .expect("blocking part");
    gw.stop().await;
}

// ------------------------------------------------------------ over a serial line

/// How long the gateway may take to open its port.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// The XBee radio address of the tool's node, as the gateway hears it.
const NODE_RADIO: u64 = 0x0013_A200_4000_0042;
/// The XBee radio address of the gateway's module, as the node hears it.
const GATEWAY_RADIO: u64 = 0x0013_A200_4000_0001;

/// A serial line between the gateway and a tool: two pseudo-terminals, the
/// gateway on one, the tool on the other, and the test carrying what one
/// master reads to the other. For raw and SLIP that is a null-modem cable
/// (bytes as they are); for XBee it is a pair of radios: the node's Zigbee
/// Transmit Request (0x10) to the coordinator (64-bit address 0) arrives at
/// the gateway's module as a Zigbee Receive Packet (0x90) from
/// [`NODE_RADIO`], and the gateway's requests to [`NODE_RADIO`] arrive at the
/// node as receive packets from [`GATEWAY_RADIO`]. Frames to anyone else are
/// not carried.
struct Line {
    /// The tool's device path.
    tool_device: String,
    carriers: [JoinHandle<()>; 2],
}

impl Drop for Line {
    fn drop(&mut self) {
        for carrier in &self.carriers {
            carrier.abort();
        }
    }
}

impl Line {
    fn new(gateway: Pty, tool: Pty, xbee: bool) -> Line {
        let tool_device = tool.path.to_string_lossy().into_owned();
        let (gateway, tool) = (Arc::new(gateway), Arc::new(tool));
        let radio = |to: u64, from: u64| {
            xbee.then(|| Radio {
                frames: ApiFrameReader::new(true, 4096),
                to,
                from,
            })
        };
        Line {
            tool_device,
            carriers: [
                tokio::spawn(carry(
                    Arc::clone(&tool),
                    Arc::clone(&gateway),
                    radio(0, NODE_RADIO),
                )),
                tokio::spawn(carry(gateway, tool, radio(NODE_RADIO, GATEWAY_RADIO))),
            ],
        }
    }
}

/// One direction of an XBee radio pair: reads the sending module's transmit
/// requests and writes the receiving module's receive packets.
struct Radio {
    frames: ApiFrameReader,
    /// Only requests to this 64-bit address are carried.
    to: u64,
    /// The source address the receiving side sees.
    from: u64,
}

impl Radio {
    /// The receive frames for the transmit requests completed by `bytes`.
    fn carry(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.frames.push(bytes);
        let mut out = BytesMut::new();
        while let Some(frame) = self.frames.next_frame() {
            let frame = frame.expect("a well-formed API frame on the line");
            // 0x10: type, frame id, 64-bit and 16-bit destination, radius,
            // options, RF data.
            assert_eq!(frame.first(), Some(&0x10), "a Zigbee Transmit Request");
            let dest = u64::from_be_bytes(frame[2..10].try_into().expect("8 bytes"));
            if dest != self.to {
                continue;
            }
            let mut rx = vec![0x90];
            rx.extend(self.from.to_be_bytes());
            rx.extend([0xFF, 0xFE, 0x01]);
            rx.extend(&frame[14..]);
            write_api_frame(true, &rx, &mut out).expect("frame fits");
        }
        out.to_vec()
    }
}

async fn carry(from: Arc<Pty>, to: Arc<Pty>, mut radio: Option<Radio>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Some(n) = from
            .read_until(&mut buf, Instant::now() + Duration::from_secs(3600))
            .await
        else {
            continue;
        };
        let bytes = &buf[..n];
        match &mut radio {
            Some(radio) => to.write_all(&radio.carry(bytes)).await,
            None => to.write_all(bytes).await,
        }
    }
}

/// A gateway with one serial port of `framing` on a pty, open, and a line from
/// it to the device a tool opens.
async fn gateway_on_a_line(framing: SerialFraming) -> (common::TestGateway, Line) {
    let (gateway_side, tool_side) = (Pty::open(), Pty::open());
    let device = gateway_side.path.to_string_lossy().into_owned();
    let gw = start_gateway_with(|c| {
        c.serial.push(SerialConfig {
            device,
            framing,
            ..SerialConfig::default()
        })
    })
    .await;
    gateway_side.wait_opened(OPEN_WAIT).await;
    let line = Line::new(gateway_side, tool_side, framing == SerialFraming::Xbee);
    (gw, line)
}

/// Runs `sngate pub --serial SPEC ARGS` to completion off the runtime.
async fn publish_serial(spec: &str, args: &[&str]) -> (i32, String) {
    let mut command = sngate();
    command.args(["pub", "--serial", spec]).args(args);
    tokio::task::spawn_blocking(move || {
        let out = command.output().expect("sngate pub runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("pub finished")
}

/// Starts `sngate sub --serial SPEC ARGS`; its stdout lines arrive on the
/// returned channel.
fn subscribe_serial(
    spec: &str,
    args: &[&str],
) -> (KillOnDrop, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut child = sngate()
        .args(["sub", "--serial", spec])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sngate sub runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (KillOnDrop(child), rx)
}

async fn next_line_async(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a line from sngate sub within 10 s")
        .expect("sngate sub still running")
}

/// `pub` over the line at QoS −1, 0 and 1, each message checked at a UDP
/// subscriber; then `sub` over the line at QoS 1, getting a retained message,
/// a QoS 1 and a QoS 0 message published by the UDP client.
async fn pub_and_sub_over(framing: SerialFraming, name: &str) {
    let (gw, line) = gateway_on_a_line(framing).await;
    let spec = format!("{}:{name}:115200", line.tool_device);
    let mut watcher = connect(gw.addr, "watcher").await;
    watcher
        .subscribe(SubscribeTopic::Name("ser/#".into()), QoS::AtLeastOnce)
        .await
        .expect("subscribed");
    for (qos, text) in [("-1", "minus one"), ("0", "zero"), ("1", "one")] {
        let (code, err) = publish_serial(&spec, &["-t", "ser/pub", "-m", text, "-q", qos]).await;
        assert_eq!(code, 0, "pub -q {qos} over {name}: {err}");
        let m = expect_message(&mut watcher).await;
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            ("ser/pub", text.as_bytes()),
            "pub -q {qos} over {name}"
        );
    }

    watcher
        .publish_named("ser/sub", &b"retained"[..], QoS::AtLeastOnce, true)
        .await
        .expect("retained published");
    let (mut child, mut lines) =
        subscribe_serial(&spec, &["-t", "ser/#", "-q", "1", "-C", "3", "-v"]);
    // The retained message says the subscription is in place.
    assert_eq!(next_line_async(&mut lines).await, "ser/sub retained");
    watcher
        .publish_named("ser/sub", &b"at qos 1"[..], QoS::AtLeastOnce, false)
        .await
        .expect("published");
    assert_eq!(next_line_async(&mut lines).await, "ser/sub at qos 1");
    watcher
        .publish_named("ser/sub", &b"at qos 0"[..], QoS::AtMostOnce, false)
        .await
        .expect("published");
    assert_eq!(next_line_async(&mut lines).await, "ser/sub at qos 0");
    let status = tokio::task::spawn_blocking(move || child.wait().expect("sub exits"))
        .await
        .expect("waited");
    assert!(status.success(), "sub over {name}: {status}");
    drop(line);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_over_a_raw_serial_line() {
    pub_and_sub_over(SerialFraming::Raw, "raw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_over_a_slip_serial_line() {
    pub_and_sub_over(SerialFraming::Slip, "slip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_through_an_xbee_radio_pair() {
    pub_and_sub_over(SerialFraming::Xbee, "xbee").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_port_that_cannot_be_opened_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("ttyNONE");
    let spec = format!("{}:slip", absent.display());
    let started = std::time::Instant::now();
    let (code, err) = publish_serial(&spec, &["-t", "a/b", "-m", "x", "-q", "1"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot open serial port") && err.contains("ttyNONE"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let (code, err) =
        publish_serial(&spec, &["--gateway", "127.0.0.1:1", "-t", "a", "-m", "x"]).await;
    assert_eq!(code, 2, "--serial and --gateway together: {err}");
}
