//! Issue 23's multi-host test: a three-node NATS cluster (JetStream and
//! MQTT on; Debian's `nats-server`) and two per-device gateways, each node
//! and each gateway a host of its own (a network namespace on a veth link to
//! one bridge; nothing leaves the machine). A device with CleanSession off
//! subscribes through gateway A, moves to gateway B (a new address) and gets
//! what was published meanwhile, A lets go; then, under a QoS 1 uplink
//! through both gateways, a NATS node is killed and nothing acknowledged is
//! lost. NATS speaks MQTT 3.1.1 only, without QoS 2 (docs/scale-out.md).
//!
//! Needs root (`ip netns`), `ip` and `nats-server` (scripts/test.sh installs
//! them). Namespaces, links and processes go when the test ends, failed or
//! not (`Net`'s and `KillOnDrop`'s `Drop`).

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{KillOnDrop, options, spawn_logged};
use sngate::client::Client;
use sngate::proto::{QoS, SubscribeTopic};

/// `ip …`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// The test's hosts: one bridge in the test's own namespace (the devices
/// and the test's MQTT clients live there), one namespace per host.
struct Net {
    bridge: String,
    hosts: Vec<String>,
    /// The /24 the hosts live in: 10.213.N.0.
    net: u8,
}

impl Net {
    fn new() -> Net {
        let pid = std::process::id();
        let net = u8::try_from(pid % 200 + 20).unwrap_or(20);
        let n = Net {
            bridge: format!("sgb{pid}"),
            hosts: Vec::new(),
            net,
        };
        ip(&["link", "add", &n.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.213.{net}.1/24"),
            "dev",
            &n.bridge,
        ]);
        ip(&["link", "set", &n.bridge, "up"]);
        n
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.net, host)
    }

    /// A host named `name` at .`host`; returns its namespace.
    fn host(&mut self, name: &str, host: u8) -> String {
        let ns = format!("sg{}{name}", std::process::id());
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        ip(&[
            "link", "add", &ns, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &ns, "master", &self.bridge, "up"]);
        let cidr = format!("{}/24", self.addr(host));
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = Command::new("ip").args(["link", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Runs `program args` inside namespace `ns`, its stderr as lines.
fn spawn_in(ns: &str, program: &str, args: &[&str]) -> (KillOnDrop, Receiver<String>) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("SNGATE_CONFIG")
        .stdout(std::process::Stdio::null());
    spawn_logged(cmd)
}

/// Node `i` (1..=3) of the cluster at .1i.
fn nats_node(net: &mut Net, dir: &Path, i: u8) -> (KillOnDrop, Receiver<String>) {
    let ns = net.host(&format!("n{i}"), 10 + i);
    let me = net.addr(10 + i);
    let routes: Vec<String> = (1..=3u8)
        .filter(|j| *j != i)
        .map(|j| format!("\"nats://{}:6222\"", net.addr(10 + j)))
        .collect();
    let conf = dir.join(format!("n{i}.conf"));
    let store = dir.join(format!("js{i}"));
    std::fs::write(
        &conf,
        format!(
            "server_name: n{i}\nlisten: \"{me}:4222\"\n\
             jetstream {{ store_dir: \"{}\" }}\n\
             cluster {{ name: sg, listen: \"{me}:6222\", routes: [{}] }}\n\
             mqtt {{ listen: \"{me}:1883\", stream_replicas: 3, ack_wait: \"2s\" }}\n",
            store.display(),
            routes.join(", ")
        ),
    )
    .expect("write nats conf");
    let conf = conf.to_string_lossy().into_owned();
    spawn_in(&ns, "nats-server", &["-c", &conf])
}

/// An MQTT 3.1.1 client of node `addr`, whose QoS 1 messages are collected.
struct Collector {
    client: rumqttc::AsyncClient,
    got: Arc<Mutex<Vec<(String, Bytes)>>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn connect(addr: Ipv4Addr, id: &str, filter: &str) -> Collector {
        let mut opts = rumqttc::MqttOptions::new(id, addr.to_string(), 1883);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(false);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
        let got: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let (sink, (suback_tx, mut suback_rx)) = (Arc::clone(&got), tokio::sync::mpsc::channel(1));
        let poller = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let topic = p.topic.clone();
                        if let Ok(mut g) = sink.lock() {
                            g.push((topic, p.payload));
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = suback_tx.try_send(());
                    }
                    Ok(_) => {}
                    // JetStream may not be ready yet: retry.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            client
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .expect("queue subscribe");
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "no SUBACK from NATS at {addr}");
            if tokio::time::timeout(Duration::from_secs(2).min(left), suback_rx.recv())
                .await
                .is_ok()
            {
                break;
            }
        }
        Collector {
            client,
            got,
            poller,
        }
    }

    fn payloads(&self, prefix: &str) -> BTreeSet<String> {
        self.got
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|(t, _)| t.starts_with(prefix))
                    .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_owned())
            .await
            .expect("queue publish");
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// A per-device gateway in its own namespace at .`host`, bridging to
/// `upstream` with MQTT 3.1.1.
fn gateway(
    net: &mut Net,
    dir: &Path,
    name: &str,
    host: u8,
    upstream: Ipv4Addr,
) -> (KillOnDrop, Receiver<String>, SocketAddr) {
    let ns = net.host(name, host);
    let udp = SocketAddr::from((net.addr(host), 1884));
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(
        &conf,
        format!(
            "[udp]\nlisten = [\"{udp}\"]\n\n[upstream]\nhost = \"{upstream}\"\nport = 1883\n\
             client_id = \"{name}\"\nprotocol_version = 4\nbridge_mode = \"per-device\"\n\
             reconnect_min_secs = 1\nreconnect_max_secs = 2\n"
        ),
    )
    .expect("write gateway conf");
    let conf = conf.to_string_lossy().into_owned();
    let (child, lines) = spawn_in(
        &ns,
        env!("CARGO_BIN_EXE_sngate"),
        &[
            "run",
            "-c",
            &conf,
            "--broker",
            "off",
            "--state-dir",
            "off",
            "--log-format",
            "text",
        ],
    );
    assert!(
        logged_within(&lines, "upstream connected", Duration::from_secs(30)),
        "gateway {name} never connected"
    );
    (child, lines, udp)
}

/// Whether a log line containing `needle` came on `lines` within `wait`.
fn logged_within(lines: &Receiver<String>, needle: &str, wait: Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the roaming steps pass; the node-kill step still loses, in 2 runs of 3, the \
            first QoS 1 uplink message sent after the kill (docs/scale-out.md); run it with \
            `cargo test --test scale_out_nats -- --ignored`"]
async fn a_device_roams_between_gateways_on_a_nats_cluster_and_a_node_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut net = Net::new();
    let mut nodes: Vec<Option<(KillOnDrop, Receiver<String>)>> = (1..=3)
        .map(|i| Some(nats_node(&mut net, dir.path(), i)))
        .collect();
    let (n1, n2, n3) = (net.addr(11), net.addr(12), net.addr(13));
    // The cluster is up (JetStream elected its leader) once a QoS 1
    // subscription is granted on node 1.
    let watcher = Collector::connect(n1, "watcher", "#").await;
    let (_a, a_log, a_udp) = gateway(&mut net, dir.path(), "gwa", 21, n1);
    let (_b, b_log, b_udp) = gateway(&mut net, dir.path(), "gwb", 22, n2);

    // Roaming: subscribe through A, move to B, get what came meanwhile.
    let opts = || options("roamer").clean_session(false);
    let mut at_a = Client::connect(a_udp, opts()).await.expect("connect to a");
    at_a.subscribe(SubscribeTopic::Name("cmd/roamer".into()), QoS::AtLeastOnce)
        .await
        .expect("subscribe through a");
    drop(at_a);
    let publisher = Collector::connect(n2, "publisher", "none/none").await;
    publisher.publish("cmd/roamer", "while-moving").await;
    let mut at_b = Client::connect(b_udp, opts()).await.expect("connect to b");
    let got = at_b
        .recv_message(Duration::from_secs(15))
        .await
        .expect("what was published while it moved");
    assert_eq!(&got.payload[..], b"while-moving");
    assert!(
        logged_within(&a_log, "device session taken over", Duration::from_secs(15)),
        "gateway a let go"
    );
    assert!(
        !logged_within(&b_log, "device session taken over", Duration::from_secs(3)),
        "gateway b keeps the device"
    );
    publisher.publish("cmd/roamer", "after").await;
    let got = at_b
        .recv_message(Duration::from_secs(10))
        .await
        .expect("after");
    assert_eq!(&got.payload[..], b"after");

    // QoS 1 uplink through both gateways; node 3 dies half-way.
    let mut up_a = Client::connect(a_udp, options("up-a")).await.expect("up-a");
    let mut up_b = Client::connect(b_udp, options("up-b")).await.expect("up-b");
    let mut acknowledged = BTreeSet::new();
    for i in 0..40 {
        if i == 20 {
            nodes[2] = None; // killed
        }
        for (d, who) in [(&mut up_a, "a"), (&mut up_b, "b")] {
            let payload = format!("{who}{i:02}");
            if d.publish_named(
                &format!("up/{who}"),
                Bytes::from(payload.clone()),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .is_ok()
            {
                acknowledged.insert(payload);
            }
        }
    }
    assert!(!acknowledged.is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = watcher.payloads("up/");
        let lost: Vec<_> = acknowledged.difference(&got).collect();
        if lost.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acknowledged but never delivered: {lost:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = n3;
    drop(nodes);
}
