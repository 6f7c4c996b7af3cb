//! Security through the real binary: `sngate run` started as a user starts
//! it (command-line flags, a config file, an ACL file, SIGHUP), spoken to by
//! MQTT-SN devices on real UDP sockets and by an XBee module played on a
//! pseudo-terminal, its counters read from the real `/metrics` endpoint.
//!
//! Every gateway runs on ephemeral loopback ports with `--state-dir off` and
//! `--broker off` unless the test is about the broker, inside [`KillOnDrop`]; every wait is
//! on a log line, a packet or an answer, with a deadline.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::Receiver;

use bytes::BytesMut;
use common::mqtt_tools::publish;
use common::pty::{Pty, SerialPath};
use common::xbee::{take_xbee, xbee_frame, xbee_transmit_request, zigbee_rx};
use common::{KillOnDrop, WAIT, logged_addr, options, spawn_logged, wait_for_line};
use sngate::client::{Client, ClientError};
use sngate::proto::{self, PROTOCOL_ID_V1_2, Packet, QoS, ReturnCode, SubscribeTopic};
use tokio::time::Instant;

fn sngate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
    cmd.env_remove("RUST_LOG").env_remove("SNGATE_CONFIG");
    cmd
}

/// A running `sngate run`: the process, its log, its UDP, HTTP and (when
/// on) broker addresses.
struct Gateway {
    child: KillOnDrop,
    lines: Receiver<String>,
    udp: SocketAddr,
    http: SocketAddr,
    broker: Option<SocketAddr>,
}

/// `sngate run` on ephemeral loopback ports (UDP and HTTP), no state
/// directory, text logs, the broker on `broker` (`off`, or an address),
/// then `args`.
fn run_command(broker: &str, args: &[&str]) -> Command {
    run_command_in("off", broker, args)
}

/// [`run_command`] with the state directory `state_dir` (`off`, or a
/// temporary directory).
fn run_command_in(state_dir: &str, broker: &str, args: &[&str]) -> Command {
    let mut cmd = sngate();
    cmd.args([
        "run",
        "--udp",
        "127.0.0.1:0",
        "--broker",
        broker,
        "--state-dir",
        state_dir,
        "--http",
        "127.0.0.1:0",
        "--log-format",
        "text",
        "--log-level",
        "info",
    ])
    .args(args);
    cmd
}

/// Starts [`run_command`]; returns once every listener is bound.
fn start_with_broker(broker: &str, args: &[&str]) -> Gateway {
    start_command(broker, run_command(broker, args))
}

/// Starts `cmd` (a [`run_command_in`] with the broker on `broker`);
/// returns once every listener is bound.
fn start_command(broker: &str, cmd: Command) -> Gateway {
    let (child, lines) = spawn_logged(cmd);
    // Bound in this order, one after the other, before anything else runs.
    let udp = logged_addr(&lines, "MQTT-SN listening on UDP");
    let http = logged_addr(&lines, "HTTP endpoint listening");
    let broker = (broker != "off").then(|| logged_addr(&lines, "MQTT broker listening on TCP"));
    Gateway {
        child,
        lines,
        udp,
        http,
        broker,
    }
}

/// Starts `sngate run` with no broker and `args`.
fn start(args: &[&str]) -> Gateway {
    start_with_broker("off", args)
}

impl Gateway {
    /// Sends `sig` (e.g. `-HUP`) to the process.
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.0.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// `sngate_drops_total{reason=…}` on the real `/metrics` page.
    async fn drops(&self, reason: &str) -> f64 {
        let page = common::http::get(self.http, "/metrics").await;
        assert_eq!(page.status, 200);
        common::http::sample(
            &page.body,
            "sngate_drops_total",
            &format!("reason=\"{reason}\""),
        )
        .unwrap_or_else(|| panic!("no drops counter for {reason} in\n{}", page.body))
    }

    /// `sngate_limit{limit=…}` on the real `/metrics` page.
    async fn limit(&self, key: &str) -> f64 {
        let page = common::http::get(self.http, "/metrics").await;
        assert_eq!(page.status, 200);
        common::http::sample(&page.body, "sngate_limit", &format!("limit=\"{key}\""))
            .unwrap_or_else(|| panic!("no limit {key} in\n{}", page.body))
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        self.signal("-TERM");
        assert!(self.child.wait().expect("sngate exits").success());
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn topic(name: &str) -> SubscribeTopic {
    SubscribeTopic::Name(name.to_owned())
}

fn expect_rejected<T: std::fmt::Debug>(what: &str, result: Result<T, ClientError>) {
    match result {
        Err(ClientError::Rejected(ReturnCode::NotSupported)) => {}
        other => panic!("{what}: expected return code 0x03, got {other:?}"),
    }
}

// ------------------------------------------------------------ --allow-client and --acl-file

/// Devices may write their own `sensors/<id>/…` and read `cmd/#`.
const DEVICE_ACL: &str = "\
topic read cmd/#
pattern write sensors/%c/#
";

/// `--allow-client` and `--acl-file` as a user passes them: an id outside
/// the globs gets CONNACK 0x03, one inside connects; an ACL-denied publish
/// gets PUBACK 0x03 and a denied subscription a SUBACK 0x03, while what
/// the ACL allows goes through; refusals and denials are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_client_and_acl_file_flags_govern_devices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acl = dir.path().join("acl");
    write(&acl, DEVICE_ACL);
    let acl_arg = acl.to_str().expect("UTF-8 path");
    let gw = start(&[
        "--allow-client",
        "sensor-*",
        "--allow-client",
        "probe-?",
        "--acl-file",
        acl_arg,
    ]);

    expect_rejected(
        "CONNECT as intruder",
        Client::connect(gw.udp, options("intruder")).await.map(drop),
    );
    expect_rejected(
        "CONNECT as probe-12",
        Client::connect(gw.udp, options("probe-12")).await.map(drop),
    );
    assert_eq!(gw.drops("not_admitted").await, 2.0);
    let _probe = Client::connect(gw.udp, options("probe-1"))
        .await
        .expect("probe-1 matches probe-?");

    let mut dev = Client::connect(gw.udp, options("sensor-1"))
        .await
        .expect("sensor-1 matches sensor-*");
    dev.publish_named("sensors/sensor-1/t", &b"21"[..], QoS::AtLeastOnce, false)
        .await
        .expect("its own topic is writable");
    expect_rejected(
        "PUBLISH to another device's topic",
        dev.publish_named("sensors/sensor-2/t", &b"x"[..], QoS::AtLeastOnce, false)
            .await,
    );
    expect_rejected(
        "SUBSCRIBE where it may not read",
        dev.subscribe(topic("sensors/#"), QoS::AtLeastOnce).await,
    );
    dev.subscribe(topic("cmd/#"), QoS::AtLeastOnce)
        .await
        .expect("cmd/# is readable");
    assert_eq!(gw.drops("acl_denied").await, 2.0);
    gw.stop();
}

// ------------------------------------------------------------ ACL reload on SIGHUP

/// The ACL file is read again on SIGHUP: a publish it allowed is refused
/// once the file denies it (and counted on /metrics); a file that no longer
/// parses is logged and the rules in force are kept. The same reload
/// changes a limit, which /metrics shows as soon as the reload is logged,
/// and `gateway.max_packet_bytes`, which the serial framers and the bridge
/// were sized by: it needs a restart, and /metrics keeps the value in force.
async fn sighup_reloads_the_acl_file(state_dir: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let acl = dir.path().join("acl");
    write(&acl, "topic write site/#\n");
    let acl_arg = acl.to_str().expect("UTF-8 path");
    let config = dir.path().join("sngate.toml");
    write(
        &config,
        "[gateway]\nmax_packet_bytes = 1024\n[limits]\nmax_clients = 5\n",
    );
    let config_arg = config.to_str().expect("UTF-8 path");
    let gw = start_command(
        "off",
        run_command_in(
            state_dir,
            "off",
            &["--acl-file", acl_arg, "--config", config_arg],
        ),
    );
    // The start-up line, so the one after SIGHUP cannot be mistaken for it.
    let loaded = wait_for_line(&gw.lines, "ACL loaded");
    assert!(loaded.contains("rules=1"), "{loaded}");

    let mut dev = Client::connect(gw.udp, options("d1"))
        .await
        .expect("connect");
    dev.publish_named("site/door", &b"open"[..], QoS::AtLeastOnce, false)
        .await
        .expect("allowed by the first file");
    assert_eq!(gw.drops("acl_denied").await, 0.0);

    write(
        &acl,
        "# site/ is read-only now\ntopic read site/#\ntopic read other/#\n",
    );
    write(
        &config,
        "[gateway]\nmax_packet_bytes = 4096\n[limits]\nmax_clients = 7\n",
    );
    gw.signal("-HUP");
    let loaded = wait_for_line(&gw.lines, "ACL loaded");
    assert!(loaded.contains("rules=2"), "{loaded}");
    let reloaded = wait_for_line(&gw.lines, "configuration reloaded");
    assert!(
        reloaded.contains("applied=[\"limits\"]")
            && reloaded.contains("needs_restart=[\"gateway.max_packet_bytes\"]"),
        "{reloaded}"
    );
    assert_eq!(gw.limit("limits.max_clients").await, 7.0);
    assert_eq!(gw.limit("gateway.max_packet_bytes").await, 1024.0);
    expect_rejected(
        "PUBLISH after the reload",
        dev.publish_named("site/door", &b"open"[..], QoS::AtLeastOnce, false)
            .await,
    );
    assert_eq!(gw.drops("acl_denied").await, 1.0);

    // A broken file: logged with its line, and the rules in force stay.
    write(&acl, "topic write site/#\ntopic sometimes site/#\n");
    gw.signal("-HUP");
    let refused = wait_for_line(&gw.lines, "configuration not reloaded");
    assert!(refused.contains("line 2"), "{refused}");
    expect_rejected(
        "PUBLISH after the failed reload",
        dev.publish_named("site/door", &b"open"[..], QoS::AtLeastOnce, false)
            .await,
    );
    assert_eq!(gw.drops("acl_denied").await, 2.0);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_acl_file_and_keeps_the_old_rules_when_it_is_malformed() {
    sighup_reloads_the_acl_file("off").await;
}

/// With the store on, inputs are taken in groups before each commit: the
/// group must meet the reloaded rules too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_acl_file_with_the_store_on() {
    let state = tempfile::tempdir().expect("tempdir");
    sighup_reloads_the_acl_file(state.path().to_str().expect("UTF-8 path")).await;
}

// ------------------------------------------------------------ radio addresses over a pty

/// A 0x90 Zigbee Receive Packet from `src64` carrying `packet`, in API
/// mode 1 (unescaped), as the configs below set it.
fn from_radio(src64: u64, packet: &Packet) -> Vec<u8> {
    let mut rf = BytesMut::new();
    proto::encode(packet, &mut rf).expect("encode");
    xbee_frame(false, &zigbee_rx(src64, &rf))
}

/// The next transmit request the gateway writes: its destination and the
/// MQTT-SN packet it carries.
async fn to_radio(pty: &Pty, buf: &mut Vec<u8>) -> (u64, Packet) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(fd) = take_xbee(buf, false) {
            let (to, rf) = xbee_transmit_request(&fd);
            let packet =
                proto::decode(rf).unwrap_or_else(|e| panic!("bad MQTT-SN in {fd:02X?}: {e}"));
            return (to, packet);
        }
        let mut chunk = [0u8; 512];
        let n = pty
            .read_until(&mut chunk, deadline)
            .await
            .expect("a frame from the gateway in time");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn connect_packet(client_id: &str) -> Packet {
    Packet::Connect {
        will: false,
        clean_session: true,
        protocol_id: PROTOCOL_ID_V1_2,
        duration: 60,
        client_id: client_id.to_owned(),
    }
}

/// A serial link's `allow_radio_addresses`, with the real binary on a
/// pseudo-terminal playing an XBee module: a radio not on the list gets
/// CONNACK 0x03 at its own address (and is counted), the listed one —
/// written in lower case — connects with the same client id; a list
/// changed on SIGHUP admits the other radio too; a list that moved to
/// another position in the file (links added in front) is not applied to
/// the running link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_links_radio_allow_list_admits_only_the_listed_radio() {
    const LISTED: u64 = 0x0013_A200_40A1_B2C3;
    const STRANGER: u64 = 0x0013_A200_40A1_B2C4;
    const THIRD: u64 = 0x0013_A200_40A1_B2C5;
    let pty = Pty::open();
    let path = SerialPath::new(&pty);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sngate.toml");
    write(
        &config,
        &format!(
            "[[serial]]\ndevice = \"{}\"\nframing = \"xbee\"\nxbee_escaped = false\n\
             allow_radio_addresses = [\"0013a20040a1b2c3\"]\n",
            path.device()
        ),
    );
    let gw = start(&["--config", config.to_str().expect("UTF-8 path")]);
    pty.wait_opened(WAIT).await;

    let mut buf = Vec::new();
    pty.write_all(&from_radio(STRANGER, &connect_packet("node-1")))
        .await;
    assert_eq!(
        to_radio(&pty, &mut buf).await,
        (
            STRANGER,
            Packet::ConnAck {
                return_code: ReturnCode::NotSupported
            }
        )
    );
    assert_eq!(gw.drops("not_admitted").await, 1.0);

    pty.write_all(&from_radio(LISTED, &connect_packet("node-1")))
        .await;
    assert_eq!(
        to_radio(&pty, &mut buf).await,
        (
            LISTED,
            Packet::ConnAck {
                return_code: ReturnCode::Accepted
            }
        )
    );
    assert_eq!(gw.drops("not_admitted").await, 1.0);

    // The list is applied on SIGHUP, without reopening the port.
    write(
        &config,
        &format!(
            "[[serial]]\ndevice = \"{}\"\nframing = \"xbee\"\nxbee_escaped = false\n\
             allow_radio_addresses = [\"0013A20040A1B2C3\", \"0013A20040A1B2C4\"]\n",
            path.device()
        ),
    );
    gw.signal("-HUP");
    let reloaded = wait_for_line(&gw.lines, "configuration reloaded");
    assert!(
        reloaded.contains("applied=[\"serial.allow_radio_addresses\"]")
            && reloaded.contains("needs_restart=[]"),
        "{reloaded}"
    );
    pty.write_all(&from_radio(STRANGER, &connect_packet("node-2")))
        .await;
    assert_eq!(
        to_radio(&pty, &mut buf).await,
        (
            STRANGER,
            Packet::ConnAck {
                return_code: ReturnCode::Accepted
            }
        )
    );

    // A second link added in front (a restart opens it): the running link
    // is now the file's second entry, and keeps the list in force rather
    // than take the new first entry's empty one (which admits everyone).
    write(
        &config,
        &format!(
            "[[serial]]\ndevice = \"{}/absent\"\nframing = \"raw\"\n\
             [[serial]]\ndevice = \"{}\"\nframing = \"xbee\"\nxbee_escaped = false\n\
             allow_radio_addresses = [\"0013A20040A1B2C3\", \"0013A20040A1B2C4\", \"{THIRD:016X}\"]\n",
            dir.path().display(),
            path.device()
        ),
    );
    gw.signal("-HUP");
    let kept = wait_for_line(&gw.lines, "allow_radio_addresses in force");
    assert!(kept.contains("port=0"), "{kept}");
    let reloaded = wait_for_line(&gw.lines, "configuration reloaded");
    assert!(
        reloaded.contains("applied=[]") && reloaded.contains("needs_restart=[\"serial\"]"),
        "{reloaded}"
    );
    pty.write_all(&from_radio(THIRD, &connect_packet("node-3")))
        .await;
    assert_eq!(
        to_radio(&pty, &mut buf).await,
        (
            THIRD,
            Packet::ConnAck {
                return_code: ReturnCode::NotSupported
            }
        )
    );
    gw.stop();
}

// ------------------------------------------------------------ the broker's anonymous clients

/// A broker listener beyond loopback, no users, `allow_anonymous` unset.
const LAN_BROKER: &str = "[broker]\nlisten = [\"0.0.0.0:1883\"]\n";

/// `[[broker.users]]`: `app`, password `secret`.
const APP_USER: &str = "[[broker.users]]\nname = \"app\"\n\
    password_hash = \"$pbkdf2-sha256$i=1000,l=32$yBVTmZ9SB3lR1wmOsu4fLQ$\
    sNh8STjvO62FcreVLlU4QK/6bbOrwBF0axbQgllKuCM\"\n";

/// Says what to do: the listener's key, and both ways out.
fn assert_names_the_way_out(text: &str) {
    assert!(
        text.contains("broker.listen[0]")
            && text.contains("[[broker.users]]")
            && text.contains("allow_anonymous = true"),
        "{text}"
    );
}

/// Local-only mode (modelled on mosquitto 2.0's) with the real binary: with `allow_anonymous` unset
/// and no users, anonymous clients are let in only while every listener is
/// on loopback. A listener beyond loopback is then a config error, from
/// `check-config` and from `run` (which binds nothing), until users are
/// added or `allow_anonymous = true` is said; with users, anonymous clients
/// are refused and users let in.
#[test]
fn the_broker_lets_anonymous_clients_in_only_in_local_only_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sngate.toml");
    let file_arg = file.to_str().expect("UTF-8 path");
    let check = |text: &str| {
        write(&file, text);
        let out = sngate()
            .args(["check-config", file_arg])
            .output()
            .expect("check-config runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = check(LAN_BROKER);
    assert_eq!(code, Some(2), "{stderr}");
    assert_names_the_way_out(&stderr);
    assert_eq!(
        check(&format!("{LAN_BROKER}allow_anonymous = true\n")).0,
        Some(0)
    );
    assert_eq!(check(&format!("{LAN_BROKER}{APP_USER}")).0, Some(0));

    // `run` refuses the same from the command line, before binding.
    let (mut child, lines) = spawn_logged(run_command("0.0.0.0:0", &[]));
    assert_names_the_way_out(&wait_for_line(&lines, "allow_anonymous"));
    assert_eq!(child.wait().expect("sngate exits").code(), Some(2));

    // Local-only mode: an anonymous mosquitto_pub is let in.
    let gw = start_with_broker("127.0.0.1:0", &[]);
    let broker = gw.broker.expect("broker address");
    let (ok, out) = publish(broker, &["-t", "t", "-m", "anon", "-q", "1"]);
    assert!(ok, "anonymous refused on loopback: {out}");
    gw.stop();

    // Users configured: anonymous refused, the user let in.
    write(&file, APP_USER);
    let gw = start_with_broker("127.0.0.1:0", &["--config", file_arg]);
    let broker = gw.broker.expect("broker address");
    let (ok, out) = publish(broker, &["-t", "t", "-m", "anon", "-q", "1"]);
    assert!(
        !ok && out.contains("refused"),
        "anonymous let in beside users: {out}"
    );
    let (ok, out) = publish(
        broker,
        &[
            "-u", "app", "-P", "secret", "-t", "t", "-m", "app", "-q", "1",
        ],
    );
    assert!(ok, "user refused: {out}");
    gw.stop();
}
