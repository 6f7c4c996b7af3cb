//! Durable state end to end: a real store directory on disk, gateways
//! stopped and started again on it (in-process, and the real binary killed
//! with SIGKILL), a real upstream mosquitto stopped and started, real
//! MQTT-SN devices on UDP.
//!
//! What must hold (issue "offline operation"): a QoS 1 message acknowledged
//! to a device is never lost — not while the upstream broker is down, not
//! across a restart, not across `kill -9`; sleep buffers, persistent
//! subscriptions and retained messages survive a restart.

mod common;

use common::{spawn_logged, wait_for_line};

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mosquitto::{Mosquitto, MosquittoOptions};
use common::mqtt_tools::{Tool, host_port, is_debug};
use common::{
    KillOnDrop, RawDevice, WAIT, connect, connect_with, options, start_gateway_with, upstream_to,
    wait_for_drain,
};
use sngate::config::Config;
use sngate::proto::{Packet, QoS, SubscribeTopic, TopicRef};

/// A free UDP port on 127.0.0.1 (bound, read, released), so a gateway can be
/// started again on the address its devices know.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// The test configuration with the store in `dir` and UDP on `port`.
fn durable(config: &mut Config, dir: &std::path::Path, port: u16) {
    config.store.enabled = true;
    config.store.state_dir = dir.display().to_string();
    config.udp.listen = vec![SocketAddr::from(([127, 0, 0, 1], port))];
}

fn name(topic: &str) -> SubscribeTopic {
    SubscribeTopic::Name(topic.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_buffers_subscriptions_and_retained_messages_survive_a_restart() {
    let dir = tempfile::tempdir().expect("state dir");
    let port = free_udp_port();
    let gw = start_gateway_with(|c| durable(c, dir.path(), port)).await;
    let mut sleeper = connect_with(gw.addr, options("sleeper").clean_session(false)).await;
    sleeper
        .subscribe(name("cmd/#"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    sleeper.sleep(600).await.expect("sleep");
    let mut sender = connect(gw.addr, "sender").await;
    for i in 0..2 {
        sender
            .publish_named(
                "cmd/x",
                Bytes::from(format!("before-{i}")),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .expect("publish before the restart");
    }
    sender
        .publish_named("site/mode", Bytes::from("eco"), QoS::AtLeastOnce, true)
        .await
        .expect("retained publish");
    gw.stop().await;

    // Same directory, same address: a new process as far as the engine knows.
    let gw = start_gateway_with(|c| durable(c, dir.path(), port)).await;
    let mut sender = connect(gw.addr, "sender2").await;
    sender
        .publish_named("cmd/x", Bytes::from("after"), QoS::AtLeastOnce, false)
        .await
        .expect("publish after the restart");
    let got: Vec<String> = sleeper
        .wake_and_collect()
        .await
        .expect("wake")
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(got, ["before-0", "before-1", "after"]);
    // The retained message came back too.
    let mut late = connect(gw.addr, "late").await;
    late.subscribe(name("site/mode"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let msg = common::expect_message(&mut late).await;
    assert_eq!((msg.payload.as_ref(), msg.retain), (b"eco".as_ref(), true));
    gw.stop().await;
}

/// `mosquitto_sub` with a persistent session on the upstream broker, so
/// what the bridge delivers while it reconnects is queued for it.
fn upstream_subscriber(upstream: SocketAddr, filter: &str, id: &str) -> Tool {
    let (host, port) = host_port(upstream);
    let tool = Tool::spawn(
        "mosquitto_sub",
        &[
            "-h", &host, "-p", &port, "-t", filter, "-q", "1", "-c", "-i", id, "-d", "-F", "%p",
        ],
    );
    tool.expect_line("received SUBACK");
    tool
}

/// Collects payloads starting with `prefix` from `sub` until `want`
/// distinct ones arrived or `within` passed; returns them in arrival order
/// (duplicates included: QoS 1 is at least once, and a broker restart may
/// deliver again what its persistent subscriber had not acknowledged).
fn collect(sub: &Tool, prefix: &str, want: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut distinct = BTreeSet::new();
    while distinct.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.lines.recv_timeout(left) {
            Ok(line) if is_debug(&line) || !line.starts_with(prefix) => {}
            Ok(line) => {
                distinct.insert(line.clone());
                got.push(line);
            }
            Err(_) => break,
        }
    }
    got
}

/// A broker that keeps its persistent subscribers' sessions across a
/// restart and queues everything for them meanwhile (QoS 0 too: the bridge
/// may deliver before `mosquitto_sub` has reconnected).
fn upstream_options() -> MosquittoOptions {
    MosquittoOptions {
        persistence: true,
        max_queued_messages: Some(0),
        extra: vec!["queue_qos0_messages true".to_owned()],
        ..MosquittoOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_acknowledged_while_upstream_is_down_arrive_in_order_even_across_a_restart()
 {
    let mut upstream = Mosquitto::start_with(upstream_options()).await;
    let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
    let sub = upstream_subscriber(up, "out/#", "store-test-sub");
    let dir = tempfile::tempdir().expect("state dir");
    let port = free_udp_port();
    let upstream_port = upstream.port;
    let with_upstream = |c: &mut Config| {
        durable(c, dir.path(), port);
        c.upstream = Some(upstream_to(upstream_port, "gw-store-test"));
    };
    let gw = start_gateway_with(with_upstream).await;
    // Proof the bridge is up: one message through.
    let mut device = connect(gw.addr, "dev").await;
    device
        .publish_named("out/x", Bytes::from("ready"), QoS::AtLeastOnce, false)
        .await
        .expect("publish");
    assert_eq!(collect(&sub, "ready", 1, WAIT), ["ready"]);

    upstream.stop().await;
    for i in 0..1000 {
        device
            .publish_named(
                "out/x",
                Bytes::from(format!("m{i:04}")),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("message {i} not acknowledged: {e}"));
    }
    // Every one of them was acknowledged; now the gateway goes away and
    // comes back before the broker does.
    gw.stop().await;
    let gw = start_gateway_with(with_upstream).await;
    upstream.restart().await;
    let got = collect(&sub, "m", 1000, Duration::from_secs(30));
    let expected: Vec<String> = (0..1000).map(|i| format!("m{i:04}")).collect();
    let mut firsts = Vec::new();
    let mut seen = BTreeSet::new();
    for m in got {
        if seen.insert(m.clone()) {
            firsts.push(m);
        }
    }
    assert_eq!(firsts.len(), 1000, "only {} of 1000 arrived", firsts.len());
    if let Some(i) = (0..1000).find(|&i| firsts[i] != expected[i]) {
        panic!(
            "out of order at {i}: {:?}",
            &firsts[i.saturating_sub(2)..(i + 3).min(1000)]
        );
    }
    gw.stop().await;
}

/// Starts the real binary on `port` with the store in `dir`, bridged to
/// `upstream`; returns when it listens.
fn spawn_gateway(
    dir: &std::path::Path,
    port: u16,
    upstream: u16,
) -> (KillOnDrop, mpsc::Receiver<String>) {
    let upstream = format!("127.0.0.1:{upstream}");
    spawn_gateway_with(dir, port, &["--broker", "off", "--upstream", &upstream])
}

/// Starts the real binary on UDP `port` with the store in `dir` and `extra`
/// arguments; returns when it listens.
fn spawn_gateway_with(
    dir: &std::path::Path,
    port: u16,
    extra: &[&str],
) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
    cmd.args(["run", "--log-format", "text"])
        .args(["--udp", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--state-dir")
        .arg(dir)
        .env_remove("RUST_LOG")
        .env_remove("SNGATE_CONFIG");
    let (child, lines) = spawn_logged(cmd);
    wait_for_line(&lines, "listening on UDP");
    (child, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_acknowledged_before_a_kill_9_arrives_upstream_after_the_restart() {
    let upstream = Mosquitto::start_with(upstream_options()).await;
    let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
    let sub = upstream_subscriber(up, "k9/#", "k9-sub");
    let dir = tempfile::tempdir().expect("state dir");
    let port = free_udp_port();
    let gateway: SocketAddr = ([127, 0, 0, 1], port).into();
    let (mut child, _lines) = spawn_gateway(dir.path(), port, upstream.port);

    // A QoS 1 stream. Half-way the broker freezes, so what the devices are
    // told is safe from then on sits only in the gateway; then the gateway
    // is killed.
    let mut device = connect(gateway, "k9-device").await;
    let mut acked = Vec::new();
    for i in 0..300u32 {
        if i == 150 {
            upstream.freeze();
        }
        let payload = format!("k{i:04}");
        device
            .publish_named(
                "k9/x",
                Bytes::from(payload.clone()),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("message {i} not acknowledged: {e}"));
        acked.push(payload);
    }
    // SIGKILL: no drain, no flush; only what was committed survives.
    child.0.kill().expect("kill -9");
    let _ = child.wait();
    upstream.thaw();
    let (_child, _lines) = spawn_gateway(dir.path(), port, upstream.port);
    let got: BTreeSet<String> = collect(&sub, "k", acked.len(), Duration::from_secs(30))
        .into_iter()
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|m| !got.contains(*m)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

#[tokio::test]
async fn an_unusable_state_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file where the state directory should be.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .args([
            "run",
            "--broker",
            "off",
            "--udp",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .expect("sngate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("state directory") && stderr.contains("not-a-dir"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_is_dropped_while_offline_unless_configured_to_be_kept() {
    for keep in [false, true] {
        let mut upstream = Mosquitto::start_with(upstream_options()).await;
        let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
        let sub = upstream_subscriber(up, "q0/#", "q0-sub");
        let port = upstream.port;
        let gw = start_gateway_with(|c| {
            let mut u = upstream_to(port, "gw-q0");
            u.queue_qos0_offline = keep;
            c.upstream = Some(u);
        })
        .await;
        let mut device = connect(gw.addr, "q0-dev").await;
        device
            .publish_named("q0/x", Bytes::from("ready"), QoS::AtLeastOnce, false)
            .await
            .expect("publish");
        assert_eq!(collect(&sub, "ready", 1, WAIT), ["ready"]);
        upstream.stop().await;
        for i in 0..5 {
            device
                .publish_named("q0/x", Bytes::from(format!("z{i}")), QoS::AtMostOnce, false)
                .await
                .expect("QoS 0 publish");
        }
        // A QoS 1 marker behind them: once it arrives, whatever QoS 0 was
        // kept has arrived before it (one ordered outbox).
        device
            .publish_named("q0/x", Bytes::from("zmarker"), QoS::AtLeastOnce, false)
            .await
            .expect("marker");
        upstream.restart().await;
        let got = collect(&sub, "z", if keep { 6 } else { 1 }, Duration::from_secs(20));
        let want: Vec<String> = if keep {
            (0..5)
                .map(|i| format!("z{i}"))
                .chain(["zmarker".to_owned()])
                .collect()
        } else {
            vec!["zmarker".to_owned()]
        };
        assert_eq!(got, want, "queue_qos0_offline = {keep}");
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_devices_going_when_the_outbox_is_full() {
    let upstream = Mosquitto::start().await;
    let port = upstream.port;
    let gw = start_gateway_with(|c| {
        let mut u = upstream_to(port, "gw-full");
        u.max_pending_messages = 10;
        u.outbox_full = sngate::config::OutboxFull::DropNewest;
        c.upstream = Some(u);
    })
    .await;
    let mut device = connect(gw.addr, "full-dev").await;
    device
        .publish_named("f/x", Bytes::from("first"), QoS::AtLeastOnce, false)
        .await
        .expect("publish");
    upstream.freeze();
    // With "backpressure" the eleventh would wait for room (see
    // tests/backpressure.rs); here every one is acknowledged at once.
    for i in 0..30 {
        tokio::time::timeout(
            WAIT,
            device.publish_named("f/x", Bytes::from(format!("f{i}")), QoS::AtLeastOnce, false),
        )
        .await
        .unwrap_or_else(|_| panic!("message {i} held back"))
        .unwrap_or_else(|e| panic!("message {i} refused: {e}"));
    }
    upstream.thaw();
    gw.stop().await;
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_persistent_local_client_had_not_acknowledged_survives_a_kill_9() {
    let dir = tempfile::tempdir().expect("state dir");
    let (udp, tcp) = (free_udp_port(), free_tcp_port());
    let broker_arg = format!("127.0.0.1:{tcp}");
    let (mut child, lines) = spawn_gateway_with(dir.path(), udp, &["--broker", &broker_arg]);
    wait_for_line(&lines, "MQTT broker listening");

    // A persistent local subscriber that never acknowledges (manual acks).
    let (_client, mut events) = persistent_subscriber(tcp, "a/#").await;
    let gateway: SocketAddr = ([127, 0, 0, 1], udp).into();
    let mut device = connect(gateway, "writer").await;
    device
        .publish_named("a/x", Bytes::from("precious"), QoS::AtLeastOnce, false)
        .await
        .expect("acknowledged to the device");
    let first = next_publish(&mut events)
        .await
        .expect("delivered to the local client");
    assert_eq!(first.payload.as_ref(), b"precious");
    // Not acknowledged by the client; the gateway dies.
    child.0.kill().expect("kill -9");
    let _ = child.wait();
    let (_child, lines) = spawn_gateway_with(dir.path(), udp, &["--broker", &broker_arg]);
    wait_for_line(&lines, "MQTT broker listening");
    let again = next_publish(&mut events)
        .await
        .expect("the unacknowledged message is delivered again after the restart");
    assert_eq!(again.payload.as_ref(), b"precious");
}

/// A persistent ("nodered", CleanSession=false) local rumqttc client on the
/// embedded broker at 127.0.0.1:`port` that acknowledges only when told to
/// (manual acks), subscribed to `filter` at QoS 1 (SUBACK received).
async fn persistent_subscriber(
    port: u16,
    filter: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet as MqttPacket};
    let mut opts = MqttOptions::new("nodered", "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe request");
    until_event(&mut events, "a SUBACK", |e| {
        matches!(e, Event::Incoming(MqttPacket::SubAck(_)))
    })
    .await;
    (client, events)
}

/// Polls `events` until one matches `want`, each within [`WAIT`].
async fn until_event(
    events: &mut rumqttc::EventLoop,
    what: &str,
    want: impl Fn(&rumqttc::Event) -> bool,
) {
    loop {
        match tokio::time::timeout(WAIT, events.poll()).await {
            Ok(Ok(event)) if want(&event) => return,
            Ok(Ok(_)) => {}
            other => panic!("no {what}: {other:?}"),
        }
    }
}

/// Connects a device named `client_id` to `gateway` and publishes `payload`
/// on the short topic "ab" at QoS 1, acknowledged.
async fn publish_ab(gateway: SocketAddr, client_id: &str, payload: &'static str) {
    let mut writer = connect(gateway, client_id).await;
    writer
        .publish(TopicRef::Short(*b"ab"), payload, QoS::AtLeastOnce, false)
        .await
        .expect("acknowledged to the writer");
}

/// The next PUBLISH a rumqttc client receives within 15 s, polling through
/// connection losses (rumqttc reconnects on the next poll).
async fn next_publish(events: &mut rumqttc::EventLoop) -> Option<rumqttc::Publish> {
    use rumqttc::{Event, Packet as MqttPacket};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Err(_) => return None,
            Ok(Ok(Event::Incoming(MqttPacket::Publish(p)))) => return Some(p),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The shutdown drain hands the embedded broker's events to the engine too:
/// a persistent local client's PUBACK that comes during the grace period
/// settles its message on disk, so the restarted gateway does not send it
/// again (it used to: the drain loop had no branch for the broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_local_clients_puback_during_the_shutdown_drain_settles_its_message() {
    const GRACE: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("state dir");
    let (udp, tcp) = (free_udp_port(), free_tcp_port());
    let configure = |c: &mut Config| {
        durable(c, dir.path(), udp);
        c.broker.listen = vec![SocketAddr::from(([127, 0, 0, 1], tcp))];
    };
    let gw = start_gateway_with(configure).await;
    let (client, mut events) = persistent_subscriber(tcp, "ab").await;
    // A device subscribed to the same topic that never acknowledges: its
    // delivery in flight holds the drain open for the whole grace period.
    let holder = RawDevice::new(gw.addr).await;
    holder.connect("holder", true, 60).await;
    holder
        .subscribe(SubscribeTopic::Short(*b"ab"), QoS::AtLeastOnce)
        .await;

    publish_ab(gw.addr, "writer", "settled").await;
    let delivered = next_publish(&mut events)
        .await
        .expect("delivered to the local client");
    assert_eq!(delivered.payload.as_ref(), b"settled");
    assert!(matches!(holder.recv().await, Packet::Publish { .. }));

    // Shutdown begins; the local client's PUBACK comes during the drain.
    let queries = gw.running().queries();
    let shutdown = tokio::spawn(gw.into_running().shutdown_within(GRACE));
    wait_for_drain(&queries).await;
    client.ack(&delivered).await.expect("ack request");
    until_event(&mut events, "PUBACK sent", |e| {
        matches!(e, rumqttc::Event::Outgoing(rumqttc::Outgoing::PubAck(_)))
    })
    .await;
    let report = tokio::time::timeout(GRACE + Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown within its bound")
        .expect("driver task")
        .expect("clean shutdown");
    // The device never acknowledged: the drain ran to its bound.
    assert_eq!(report.devices.in_flight, 1, "{report:?}");

    // After the restart the client comes back to its session: what it
    // acknowledged is not delivered again, so the first message it gets is
    // the one published now.
    let gw = start_gateway_with(configure).await;
    publish_ab(gw.addr, "writer2", "after").await;
    let next = next_publish(&mut events)
        .await
        .expect("a message for the local client after the restart");
    assert_eq!(
        String::from_utf8_lossy(&next.payload),
        "after",
        "a message acknowledged during the drain was delivered again"
    );
    gw.stop().await;
}

/// A device on a plain blocking UDP socket, for the kill tests' streams
/// (they run beside a blocking watch of the upstream subscriber).
struct SyncDevice {
    socket: UdpSocket,
}

impl SyncDevice {
    fn new(gateway: SocketAddr) -> SyncDevice {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.connect(gateway).expect("connect UDP socket");
        SyncDevice { socket }
    }

    fn send(&self, packet: &Packet) {
        let mut buf = bytes::BytesMut::new();
        sngate::proto::encode(packet, &mut buf).expect("encode");
        // The gateway may be dead (killed): a refused send is fine.
        let _ = self.socket.send(&buf);
    }

    /// The next packet within `wait`; `None` if none came.
    fn recv(&self, wait: Duration) -> Option<Packet> {
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 2048];
        let n = self.socket.recv(&mut buf).ok()?;
        sngate::proto::decode(&buf[..n]).ok()
    }

    /// CONNECT (clean) and REGISTER `topic`, retried until the gateway
    /// answers (it may be starting); returns the topic id.
    fn connect_and_register(&self, client_id: &str, topic: &str) -> u16 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            self.send(&Packet::Connect {
                will: false,
                clean_session: true,
                protocol_id: 1,
                duration: 60,
                client_id: client_id.to_owned(),
            });
            if !matches!(
                self.recv(Duration::from_millis(500)),
                Some(Packet::ConnAck { .. })
            ) {
                continue;
            }
            self.send(&Packet::Register {
                topic_id: 0,
                msg_id: 1,
                topic_name: topic.to_owned(),
            });
            if let Some(Packet::RegAck { topic_id, .. }) = self.recv(Duration::from_secs(2)) {
                return topic_id;
            }
        }
        panic!("the gateway did not accept {client_id}");
    }

    fn publish(&self, topic_id: u16, msg_id: u16, payload: &str, dup: bool) {
        self.send(&Packet::Publish {
            dup,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: TopicRef::Id(topic_id),
            msg_id,
            payload: Bytes::from(payload.to_owned()),
        });
    }

    /// Waits up to `wait` for the PUBACK of `msg_id` (other packets are
    /// skipped); true if it came, accepted.
    fn puback(&self, msg_id: u16, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.recv(left) {
                Some(Packet::PubAck {
                    msg_id: m,
                    return_code,
                    ..
                }) if m == msg_id => return return_code.is_accepted(),
                Some(_) => {}
                None => return false,
            }
        }
    }
}

/// The real binary with a `[store] linger_ms` of `linger_ms`, bridged to
/// `upstream`; returns once the bridge is connected, so a device's message
/// may linger from the first (keep the log lines: dropping them closes the
/// gateway's stderr).
fn spawn_lingering(
    dir: &std::path::Path,
    config: &std::path::Path,
    port: u16,
    upstream: u16,
) -> (KillOnDrop, mpsc::Receiver<String>) {
    let upstream = format!("127.0.0.1:{upstream}");
    let config = config.display().to_string();
    let (child, lines) = spawn_gateway_with(
        dir,
        port,
        &[
            "--config",
            &config,
            "--broker",
            "off",
            "--upstream",
            &upstream,
        ],
    );
    wait_for_line(&lines, "upstream broker connected");
    (child, lines)
}

/// A config file with only `[store] linger_ms` set.
fn linger_config(dir: &std::path::Path, linger_ms: u32) -> std::path::PathBuf {
    let path = dir.join("sngate.toml");
    std::fs::write(&path, format!("[store]\nlinger_ms = {linger_ms}\n")).expect("config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_inside_the_linger_loses_nothing_the_device_was_told_was_safe() {
    let upstream = Mosquitto::start_with(upstream_options()).await;
    let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
    let sub = upstream_subscriber(up, "lw/#", "lw-sub");
    let dir = tempfile::tempdir().expect("state dir");
    let etc = tempfile::tempdir().expect("config dir");
    // A linger far longer than the test: a PUBACK can only be the broker's.
    let config = linger_config(etc.path(), 60_000);
    let port = free_udp_port();
    let gateway: SocketAddr = ([127, 0, 0, 1], port).into();
    let (mut child, _lines) = spawn_lingering(dir.path(), &config, port, upstream.port);
    let device = SyncDevice::new(gateway);
    let topic = device.connect_and_register("lw-device", "lw/x");

    // The broker acknowledges: so is the device, long before the linger.
    device.publish(topic, 2, "safe", false);
    assert!(
        device.puback(2, WAIT),
        "the broker's PUBACK releases the device's"
    );
    assert_eq!(collect(&sub, "safe", 1, WAIT), ["safe"]);

    // The broker freezes: the next message lingers, unacknowledged — not
    // on disk, not with the broker, and the device not told it is safe.
    upstream.freeze();
    device.publish(topic, 3, "lingered", false);
    assert!(
        !device.puback(3, Duration::from_secs(1)),
        "acknowledged with neither the broker's PUBACK nor the store's commit"
    );
    child.0.kill().expect("kill -9");
    let _ = child.wait();
    upstream.thaw();

    // The device sends it again to the restarted gateway: it arrives.
    let _restarted = spawn_lingering(dir.path(), &config, port, upstream.port);
    let topic = device.connect_and_register("lw-device", "lw/x");
    device.publish(topic, 3, "lingered", true);
    assert!(device.puback(3, WAIT), "the retransmission is acknowledged");
    assert!(
        collect(&sub, "lingered", 1, WAIT).contains(&"lingered".to_owned()),
        "the message the device sent again arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_the_brokers_puback_and_the_devices_loses_nothing() {
    let upstream = Mosquitto::start_with(upstream_options()).await;
    let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
    let sub = upstream_subscriber(up, "lk/#", "lk-sub");
    let dir = tempfile::tempdir().expect("state dir");
    let etc = tempfile::tempdir().expect("config dir");
    // Nothing of the outbox is written while the broker answers: each
    // acknowledgement the device gets is the broker's.
    let config = linger_config(etc.path(), 60_000);
    let port = free_udp_port();
    let gateway: SocketAddr = ([127, 0, 0, 1], port).into();
    let (mut child, _lines) = spawn_lingering(dir.path(), &config, port, upstream.port);

    // A device streams QoS 1, one in flight; the gateway is killed as soon
    // as the subscriber has 100 of them, while the stream goes on — so
    // with messages between the broker's PUBACK and the device's.
    let device = SyncDevice::new(gateway);
    let topic = device.connect_and_register("lk-device", "lk/x");
    let stream = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..10_000u16 {
            let payload = format!("s{i:05}");
            device.publish(topic, i + 2, &payload, false);
            if !device.puback(i + 2, Duration::from_secs(2)) {
                // The gateway is gone: this one is unacknowledged.
                return (device, acked, Some((i + 2, payload)));
            }
            acked.push(payload);
        }
        (device, acked, None)
    });
    let early = collect(&sub, "s", 100, WAIT);
    assert!(early.len() >= 100, "the stream did not start: {early:?}");
    child.0.kill().expect("kill -9");
    let _ = child.wait();
    let (device, acked, unacked) = stream.join().expect("the stream");
    let (msg_id, payload) = unacked.expect("killed before the stream ended");

    // The device sends its unacknowledged message again after the restart.
    let _restarted = spawn_lingering(dir.path(), &config, port, upstream.port);
    let topic = device.connect_and_register("lk-device", "lk/x");
    device.publish(topic, msg_id, &payload, true);
    assert!(
        device.puback(msg_id, WAIT),
        "the retransmission is acknowledged"
    );

    let mut want: BTreeSet<String> = acked.iter().cloned().collect();
    want.insert(payload);
    let mut got: BTreeSet<String> = early.into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want.is_subset(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.lines.recv_timeout(left) {
            Ok(line) if !is_debug(&line) => {
                got.insert(line);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let missing: Vec<&String> = want.iter().filter(|m| !got.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged (or sent again) but lost: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_publish_retransmitted_after_a_restart_is_delivered_once() {
    let upstream = Mosquitto::start_with(upstream_options()).await;
    let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
    let sub = upstream_subscriber(up, "q2r/#", "q2r-sub");
    let dir = tempfile::tempdir().expect("state dir");
    let port = free_udp_port();
    let upstream_port = upstream.port;
    let with_upstream = |c: &mut Config| {
        durable(c, dir.path(), port);
        c.upstream = Some(upstream_to(upstream_port, "gw-q2r"));
    };
    let gw = start_gateway_with(with_upstream).await;
    let device = RawDevice::new(gw.addr).await;
    device.connect("q2r-device", false, 60).await;
    device
        .send(&Packet::Register {
            topic_id: 0,
            msg_id: 1,
            topic_name: "q2r/x".into(),
        })
        .await;
    let Packet::RegAck { topic_id, .. } = device.recv().await else {
        panic!("REGACK expected");
    };
    let publish = |dup| Packet::Publish {
        dup,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: TopicRef::Id(topic_id),
        msg_id: 5,
        payload: Bytes::from("once"),
    };
    device.send(&publish(false)).await;
    assert_eq!(device.recv().await, Packet::PubRec { msg_id: 5 });
    assert_eq!(collect(&sub, "once", 1, WAIT), ["once"]);

    // The PUBREL is not sent before the gateway restarts; the device, not
    // sure its PUBLISH arrived, sends it again (DUP) to the new gateway.
    gw.stop().await;
    let gw = start_gateway_with(with_upstream).await;
    device.connect("q2r-device", false, 60).await;
    device.send(&publish(true)).await;
    assert_eq!(device.recv().await, Packet::PubRec { msg_id: 5 });
    device.send(&Packet::PubRel { msg_id: 5 }).await;
    assert_eq!(device.recv().await, Packet::PubComp { msg_id: 5 });
    let again = collect(&sub, "once", 1, Duration::from_secs(1));
    assert!(again.is_empty(), "delivered twice: {again:?}");
    gw.stop().await;
}
