//! Shared helpers for the end-to-end tests: a real gateway started in-process
//! on an ephemeral UDP port, clients from `sngate::client`, and a raw device
//! that speaks packet by packet when a test must see the wire order.
//!
//! Every wait is bounded: helpers take or use a timeout and panic with a clear
//! message when it passes.

#![allow(dead_code)] // each test binary uses a different subset

pub mod checker;
pub mod http;
pub mod mosquitto;
pub mod mqtt_tools;
pub mod pty;
pub mod xbee;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use sngate::client::{Client, ConnectOptions, Message};
use sngate::config::{Config, PredefinedTopic, UpstreamConfig};
use sngate::driver::{self, RunningGateway};
use sngate::ops::QueryHandle;
use sngate::proto::{self, PROTOCOL_ID_V1_2, Packet, QoS, SubscribeTopic};
use tokio::net::UdpSocket;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(3);

/// A gateway running in this process.
pub struct TestGateway {
    running: RunningGateway,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Its embedded MQTT broker's TCP address, when enabled.
    pub broker: Option<SocketAddr>,
}

impl TestGateway {
    /// Stops the gateway and waits for its task.
    pub async fn stop(self) {
        self.running.shutdown().await.expect("gateway shuts down");
    }

    /// The running gateway, for what these helpers do not cover.
    pub fn running(&self) -> &RunningGateway {
        &self.running
    }

    /// Takes the running gateway (e.g. to shut it down with a report).
    pub fn into_running(self) -> RunningGateway {
        self.running
    }
}

/// The test configuration: the defaults, listening on an ephemeral
/// 127.0.0.1 port, with a 1 s retry timer so retransmissions show quickly,
/// no per-source rate limit (all test devices share 127.0.0.1), and a 2 s
/// shutdown drain (a test that ends with a broker gone or a
/// device silent waits no longer than that).
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.udp.listen = vec!["127.0.0.1:0".parse().expect("address")];
    // Never the default 127.0.0.1:1883: tests run side by side.
    config.broker.listen = vec!["127.0.0.1:0".parse().expect("address")];
    // In memory unless a test gives it a state directory.
    config.store.enabled = false;
    config.timers.retry_interval_secs = 1;
    config.gateway.shutdown_grace_secs = 2;
    // Every test device sends from 127.0.0.1, which the per-source rate
    // limit counts as one source; tests of the limit turn it back on.
    config.limits.per_source_packets_per_sec = 0;
    config
}

/// Starts a gateway with the test configuration.
pub async fn start_gateway() -> TestGateway {
    start_gateway_with(|_| {}).await
}

/// Starts a gateway with the test configuration changed by `tweak`.
pub async fn start_gateway_with(tweak: impl FnOnce(&mut Config)) -> TestGateway {
    let mut config = test_config();
    tweak(&mut config);
    let running = driver::start(config).await.expect("gateway starts");
    let addr = *running.udp_addrs().first().expect("a UDP listener");
    let broker = running.broker_addrs().first().copied();
    TestGateway {
        running,
        addr,
        broker,
    }
}

/// Waits (up to 5 s) until the gateway `queries` reach says it is shutting
/// down: its drain has started.
pub async fn wait_for_drain(queries: &QueryHandle) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !queries
        .health(Duration::from_secs(1))
        .await
        .is_ok_and(|h| h.shutting_down)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the drain never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A pre-defined topic entry for a configuration.
pub fn predefined(id: u16, topic: &str) -> PredefinedTopic {
    PredefinedTopic {
        id,
        topic: topic.to_owned(),
    }
}

/// Client options for tests: a short retry timer, so a lost datagram costs
/// a second, not ten.
pub fn options(client_id: &str) -> ConnectOptions {
    ConnectOptions::new(client_id).retry(Duration::from_secs(1), 3)
}

/// Connects a client with [`options`].
pub async fn connect(gateway: SocketAddr, client_id: &str) -> Client {
    connect_with(gateway, options(client_id)).await
}

/// Connects a client with the given options.
pub async fn connect_with(gateway: SocketAddr, opts: ConnectOptions) -> Client {
    let id = opts.client_id.clone();
    Client::connect(gateway, opts)
        .await
        .unwrap_or_else(|e| panic!("client {id} cannot connect: {e}"))
}

/// The next message for `client`, within [`WAIT`].
pub async fn expect_message(client: &mut Client) -> Message {
    client
        .recv_message(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{}: no message: {e}", client.client_id()))
}

/// A device driven packet by packet, for tests that check what the gateway
/// puts on the wire and in which order.
pub struct RawDevice {
    /// The socket, connected to the gateway.
    pub socket: UdpSocket,
}

impl RawDevice {
    /// A fresh socket connected to `gateway`.
    pub async fn new(gateway: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.connect(gateway).await.expect("connect UDP socket");
        RawDevice { socket }
    }

    /// Sends one packet.
    pub async fn send(&self, packet: &Packet) {
        let mut buf = BytesMut::new();
        proto::encode(packet, &mut buf).expect("encode");
        self.send_bytes(&buf).await;
    }

    /// Sends raw bytes as one datagram.
    pub async fn send_bytes(&self, bytes: &[u8]) {
        self.socket.send(bytes).await.expect("send");
    }

    /// The next datagram, raw, within [`WAIT`].
    pub async fn recv_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65_536];
        let n = tokio::time::timeout(WAIT, self.socket.recv(&mut buf))
            .await
            .expect("a datagram from the gateway in time")
            .expect("recv");
        buf.truncate(n);
        buf
    }

    /// The next packet, within [`WAIT`].
    pub async fn recv(&self) -> Packet {
        let bytes = self.recv_bytes().await;
        proto::decode(&bytes).unwrap_or_else(|e| panic!("gateway sent a bad datagram: {e}"))
    }

    /// SUBSCRIBE (message id 1) to `topic` at `qos`, expecting a SUBACK.
    pub async fn subscribe(&self, topic: SubscribeTopic, qos: QoS) {
        self.send(&Packet::Subscribe {
            dup: false,
            qos,
            msg_id: 1,
            topic,
        })
        .await;
        assert!(matches!(self.recv().await, Packet::SubAck { .. }));
    }

    /// CONNECT without will, expecting an accepting CONNACK.
    pub async fn connect(&self, client_id: &str, clean_session: bool, keep_alive: u16) {
        self.send(&Packet::Connect {
            will: false,
            clean_session,
            protocol_id: PROTOCOL_ID_V1_2,
            duration: keep_alive,
            client_id: client_id.to_owned(),
        })
        .await;
        match self.recv().await {
            Packet::ConnAck { return_code } if return_code.is_accepted() => {}
            other => panic!("expected an accepting CONNACK, got {other:?}"),
        }
    }
}

/// A bridge to a mosquitto on 127.0.0.1:`port` that reconnects within a
/// second, as the tests want; adjust the rest with struct update syntax.
#[allow(dead_code)]
pub fn upstream_to(port: u16, client_id: &str) -> UpstreamConfig {
    UpstreamConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: Some(client_id.into()),
        reconnect_min_secs: 1,
        reconnect_max_secs: 1,
        ..UpstreamConfig::default()
    }
}

/// A child process (the real `sngate` binary) killed when the test ends, so
/// a test that fails half-way never leaves a process holding CI's output.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (usually the real `sngate run`) with stderr piped; its log
/// lines arrive on the returned channel, read by a thread of their own.
pub fn spawn_logged(
    mut cmd: std::process::Command,
) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the command starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens any more: the child
        // keeps a stderr to write to.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (KillOnDrop(child), lines)
}

/// The next log line containing `needle`, within 10 s (else the test fails).
pub fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no log line with {needle:?} within 10 s"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// The address in the next log line containing `needle` (its `addr=` field,
/// last on the line), within 10 s.
pub fn logged_addr(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> SocketAddr {
    let line = wait_for_line(lines, needle);
    line.rsplit("addr=")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// `sngate run` (the real binary) with the default configuration but for an
/// ephemeral 127.0.0.1 UDP port, no embedded broker, no store and text
/// logs, the environment's `RUST_LOG`/`SNGATE_CONFIG` ignored, plus `extra`
/// flags: for [`spawn_logged`].
pub fn binary_gateway_command(extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sngate"));
    cmd.args([
        "run",
        "--udp",
        "127.0.0.1:0",
        "--broker",
        "off",
        "--state-dir",
        "off",
        "--log-format",
        "text",
    ])
    .args(extra)
    .env_remove("RUST_LOG")
    .env_remove("SNGATE_CONFIG")
    .stdout(std::process::Stdio::null());
    cmd
}

/// The real `sngate run` with the default configuration but for an
/// ephemeral 127.0.0.1 UDP port, no embedded broker and no store, and the
/// address it bound (from its log).
pub fn run_binary_gateway() -> (KillOnDrop, String) {
    let (child, lines) = spawn_logged(binary_gateway_command(&[]));
    let addr = logged_addr(&lines, "listening on UDP").to_string();
    (child, addr)
}

/// The gateway's `/metrics` page, straight from its engine task.
pub async fn metrics_page(queries: &QueryHandle) -> String {
    queries
        .metrics(Duration::from_secs(2))
        .await
        .expect("metrics")
        .render()
}
