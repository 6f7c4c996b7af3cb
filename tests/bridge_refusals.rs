//! What the upstream broker refuses is isolated (issue 17), end to end: a
//! real mosquitto started on a free port, the gateway in this process with
//! its durable store, real MQTT-SN devices on UDP and real MQTT clients.
//!
//! Each refused item is followed by normal traffic that must all arrive,
//! and the gateway may reconnect at most twice for it; the poison topic is
//! also left in the durable outbox across a restart.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mosquitto::{Mosquitto, MosquittoOptions};
use common::mqtt_tools::{Tool, host_port, is_debug};
use common::{TestGateway, WAIT, connect, start_gateway_with, upstream_to};
use sngate::config::Config;
use sngate::proto::QoS;

/// How long the traffic behind a refused item may take to arrive (the
/// reconnections it costs are a second each).
const ARRIVE: Duration = Duration::from_secs(15);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A broker that keeps its persistent subscriber's session across a
/// restart, with `extra` configuration lines.
fn broker_options(extra: &[&str]) -> MosquittoOptions {
    MosquittoOptions {
        persistence: true,
        max_queued_messages: Some(0),
        extra: extra.iter().map(|l| (*l).to_owned()).collect(),
        ..MosquittoOptions::default()
    }
}

/// `mosquitto_sub` with a persistent session, printing payloads.
fn subscriber(upstream: &Mosquitto, filter: &str, id: &str) -> Tool {
    let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
    let (host, port) = host_port(up);
    let tool = Tool::spawn(
        "mosquitto_sub",
        &[
            "-h", &host, "-p", &port, "-t", filter, "-q", "1", "-c", "-i", id, "-d", "-F", "%p",
        ],
    );
    tool.expect_line("received SUBACK");
    tool
}

/// The distinct payloads starting with `prefix` until `want` of them came
/// or `within` passed.
fn collect(sub: &Tool, prefix: &str, want: usize, within: Duration) -> BTreeSet<String> {
    let deadline = Instant::now() + within;
    let mut got = BTreeSet::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.lines.recv_timeout(left) {
            Ok(line) if is_debug(&line) || !line.starts_with(prefix) => {}
            Ok(line) => {
                got.insert(line);
            }
            Err(_) => break,
        }
    }
    got
}

/// One figure of the gateway's `/metrics` page (the first sample).
async fn metric(gw: &TestGateway, name: &str) -> u64 {
    let page = gw
        .running()
        .queries()
        .metrics(WAIT)
        .await
        .expect("metrics")
        .render();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// The `/status` part listing the dead letters.
async fn dead_letters(gw: &TestGateway) -> serde_json::Value {
    let status = gw.running().queries().status(WAIT).await.expect("status");
    let doc: serde_json::Value = serde_json::from_str(&status.to_json()).expect("json");
    doc["upstream_dead_letters"].clone()
}

/// Everything behind one refused message arrived (`got` of 50), at most
/// two reconnections since `before`, one message quarantined; returns the
/// reconnections.
async fn assert_isolated(gw: &TestGateway, what: &str, got: usize, before: u64) -> u64 {
    let reconnects = metric(gw, "sngate_upstream_reconnects_total").await - before;
    println!("{what}: {got} of 50 delivered, {reconnects} reconnections");
    assert_eq!(
        got, 50,
        "{what}: everything behind the refused message arrives"
    );
    assert!(
        reconnects <= 2,
        "{what}: {reconnects} reconnections for one message"
    );
    assert_eq!(metric(gw, "sngate_upstream_quarantined_total").await, 1);
    reconnects
}

fn durable(c: &mut Config, dir: &std::path::Path, port: u16, upstream: u16, id: &str) {
    c.store.enabled = true;
    c.store.state_dir = dir.display().to_string();
    c.udp.listen = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    c.upstream = Some(upstream_to(upstream, id));
}

/// A device publishes `n` QoS 1 messages `{prefix}{i}` on `ok/x`, each
/// acknowledged.
async fn send_ok(device: &mut sngate::client::Client, prefix: &str, n: usize) {
    for i in 0..n {
        device
            .publish_named(
                "ok/x",
                Bytes::from(format!("{prefix}{i:03}")),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("{prefix}{i} not acknowledged: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_topic_is_quarantined_and_everything_behind_it_arrives_even_across_a_restart() {
    let mut upstream = Mosquitto::start_with(broker_options(&[])).await;
    let sub = subscriber(&upstream, "ok/#", "refusals-sub-topic");
    let dir = tempfile::tempdir().expect("state dir");
    let port = free_udp_port();
    let up = upstream.port;
    let cfg = |c: &mut Config| durable(c, dir.path(), port, up, "gw-poison-topic");
    let gw = start_gateway_with(cfg).await;
    let mut device = connect(gw.addr, "dev").await;
    send_ok(&mut device, "ready", 1).await;
    assert_eq!(collect(&sub, "ready", 1, WAIT).len(), 1, "bridge up");
    let before = metric(&gw, "sngate_upstream_reconnects_total").await;

    // 250 levels: mosquitto (200 at most) closes the connection on it.
    let poison = format!("{}x", "p/".repeat(250));
    device
        .publish_named(&poison, Bytes::from("poison"), QoS::AtLeastOnce, false)
        .await
        .expect("the gateway acknowledges it: it cannot know");
    send_ok(&mut device, "a", 50).await;
    let got = collect(&sub, "a", 50, ARRIVE);
    assert_isolated(&gw, "poison topic, live", got.len(), before).await;
    let dead = dead_letters(&gw).await;
    assert_eq!(dead["quarantined"], 1);
    let last = &dead["last"][0];
    assert!(
        last["topic"]
            .as_str()
            .is_some_and(|t| t.starts_with("p/p/")),
        "{dead}"
    );
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("closed the connection"))
    );
    assert!(last["size"].as_u64().is_some_and(|s| s > 500));

    // The same with the poison in the durable outbox at a restart: the
    // broker is away while the device publishes.
    upstream.stop().await;
    device
        .publish_named(&poison, Bytes::from("poison"), QoS::AtLeastOnce, false)
        .await
        .expect("acknowledged while upstream is down");
    send_ok(&mut device, "b", 50).await;
    drop(device);
    gw.stop().await;
    let gw = start_gateway_with(cfg).await;
    upstream.restart().await;
    let got = collect(&sub, "b", 50, ARRIVE);
    assert_isolated(&gw, "poison topic, after a restart", got.len(), 0).await;
    gw.stop().await;
    // And it is gone from the disk: a third start finds an empty outbox.
    let gw = start_gateway_with(cfg).await;
    send_ok(&mut connect(gw.addr, "dev2").await, "c", 5).await;
    assert_eq!(collect(&sub, "c", 5, WAIT).len(), 5);
    assert_eq!(metric(&gw, "sngate_upstream_quarantined_total").await, 0);
    assert_eq!(metric(&gw, "sngate_upstream_reconnects_total").await, 0);
    // The dead-letter record is durable: both quarantined messages are
    // still listed, with their time.
    let dead = dead_letters(&gw).await;
    let last = dead["last"].as_array().expect("a list");
    assert_eq!(last.len(), 2, "{dead}");
    assert!(
        last.iter()
            .all(|l| l["topic"].as_str().is_some_and(|t| t.starts_with("p/p/")))
    );
    assert!(
        last.iter()
            .all(|l| l["at"].as_str().is_some_and(|t| t.starts_with("20")))
    );
    gw.stop().await;
}

/// A local MQTT client publishes `size` bytes at QoS 1 on `big/x`, then
/// `n` small messages on `ok/x`.
fn local_publish(gw: &TestGateway, size: usize, n: usize, prefix: &str) {
    let broker = gw.broker.expect("the embedded broker");
    let file = tempfile::NamedTempFile::new().expect("payload file");
    std::fs::write(file.path(), vec![b'z'; size]).expect("write payload");
    let path = file.path().display().to_string();
    let (ok, out) = common::mqtt_tools::publish(broker, &["-q", "1", "-t", "big/x", "-f", &path]);
    assert!(ok, "the local broker takes it: {out}");
    for i in 0..n {
        let payload = format!("{prefix}{i:03}");
        let (ok, out) =
            common::mqtt_tools::publish(broker, &["-q", "1", "-t", "ok/x", "-m", &payload]);
        assert!(ok, "{out}");
    }
}

/// A 200,000-byte message against a broker with `max_packet_size 100000`,
/// the bridge speaking `protocol_version`; returns the reconnections.
async fn poison_size(protocol_version: u8) -> u64 {
    let upstream = Mosquitto::start_with(broker_options(&["max_packet_size 100000"])).await;
    let sub = subscriber(
        &upstream,
        "ok/#",
        &format!("refusals-sub-size-{protocol_version}"),
    );
    let up = upstream.port;
    let gw = start_gateway_with(|c| {
        c.upstream = Some(sngate::config::UpstreamConfig {
            protocol_version,
            ..upstream_to(up, &format!("gw-poison-size-{protocol_version}"))
        });
    })
    .await;
    local_publish(&gw, 0, 1, "ready");
    assert_eq!(collect(&sub, "ready", 1, WAIT).len(), 1, "bridge up");
    local_publish(&gw, 200_000, 50, "s");
    let got = collect(&sub, "s", 50, ARRIVE);
    let what = format!("poison size, MQTT {protocol_version}");
    let reconnects = assert_isolated(&gw, &what, got.len(), 0).await;
    let dead = dead_letters(&gw).await;
    assert_eq!(dead["last"][0]["topic"], "big/x", "{dead}");
    gw.stop().await;
    reconnects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_a_message_over_the_connack_maximum_packet_size_is_quarantined_unsent() {
    assert_eq!(poison_size(5).await, 0, "known from CONNACK: never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_a_message_the_broker_closes_the_connection_on_is_quarantined() {
    poison_size(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_a_message_the_acl_refuses_is_a_dead_letter_with_its_reason_code() {
    let upstream = Mosquitto::start_with(MosquittoOptions {
        acl: Some("topic readwrite ok/#\ntopic readwrite ready/#\n".into()),
        ..broker_options(&[])
    })
    .await;
    let sub = subscriber(&upstream, "ok/#", "refusals-sub-acl");
    let up = upstream.port;
    let gw = start_gateway_with(|c| c.upstream = Some(upstream_to(up, "gw-acl"))).await;
    let mut device = connect(gw.addr, "dev").await;
    send_ok(&mut device, "ready", 1).await;
    assert_eq!(collect(&sub, "ready", 1, WAIT).len(), 1, "bridge up");
    device
        .publish_named("denied/x", Bytes::from("no"), QoS::AtLeastOnce, false)
        .await
        .expect("acknowledged by the gateway");
    send_ok(&mut device, "a", 50).await;
    let got = collect(&sub, "a", 50, ARRIVE);
    let reconnects = metric(&gw, "sngate_upstream_reconnects_total").await;
    println!(
        "ACL refusal: {} of 50 delivered, {reconnects} reconnections",
        got.len()
    );
    assert_eq!(got.len(), 50);
    // mosquitto 2.0.11 answers PUBACK 0x87, then closes the connection
    // ("Bad socket read/write"); the message is settled by its reason code
    // already, so the closing costs one reconnection and nothing else.
    assert!(
        reconnects <= 1,
        "{reconnects} reconnections for one refusal"
    );
    assert_eq!(metric(&gw, "sngate_upstream_quarantined_total").await, 1);
    let dead = dead_letters(&gw).await;
    assert_eq!(dead["last"][0]["topic"], "denied/x", "{dead}");
    assert!(
        dead["last"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("0x87")),
        "{dead}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_a_device_is_told_rejected_when_the_broker_announced_it_would_refuse() {
    let upstream = Mosquitto::start_with(broker_options(&["max_packet_size 1000"])).await;
    let sub = subscriber(&upstream, "ok/#", "refusals-sub-device");
    let up = upstream.port;
    let gw = start_gateway_with(|c| c.upstream = Some(upstream_to(up, "gw-device-size"))).await;
    let mut device = connect(gw.addr, "dev").await;
    send_ok(&mut device, "ready", 1).await;
    assert_eq!(collect(&sub, "ready", 1, WAIT).len(), 1, "bridge up");
    let refused = device
        .publish_named(
            "ok/x",
            Bytes::from(vec![b'z'; 1500]),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    assert!(refused.is_err(), "the device is told: {refused:?}");
    send_ok(&mut device, "a", 20).await;
    assert_eq!(collect(&sub, "a", 20, ARRIVE).len(), 20);
    assert_eq!(metric(&gw, "sngate_upstream_reconnects_total").await, 0);
    // Refused before it was acknowledged: no dead letter, nothing lost.
    assert_eq!(metric(&gw, "sngate_upstream_quarantined_total").await, 0);
    gw.stop().await;
}

/// The device subscribes `filter` at QoS 1.
async fn subscribe(
    device: &mut sngate::client::Client,
    filter: impl Into<String>,
) -> Result<sngate::client::Subscribed, sngate::client::ClientError> {
    device
        .subscribe(
            sngate::proto::SubscribeTopic::Name(filter.into()),
            QoS::AtLeastOnce,
        )
        .await
}

/// Publishes `n` QoS 1 messages `{prefix}{i}` on `topic` upstream.
fn upstream_publish(upstream: &Mosquitto, topic: &str, prefix: &str, n: usize) {
    let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
    for i in 0..n {
        let payload = format!("{prefix}{i:03}");
        let (ok, out) = common::mqtt_tools::publish(up, &["-q", "1", "-t", topic, "-m", &payload]);
        assert!(ok, "{out}");
    }
}

/// The distinct payloads starting with `prefix` the device receives until
/// `want` came or `within` passed.
async fn device_collect(
    device: &mut sngate::client::Client,
    prefix: &str,
    want: usize,
    within: Duration,
) -> BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = BTreeSet::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match device.recv_message(left).await {
            Ok(m) => {
                let p = String::from_utf8_lossy(&m.payload).into_owned();
                if p.starts_with(prefix) {
                    got.insert(p);
                }
            }
            Err(_) => break,
        }
    }
    got
}

/// Publishes probes on `topic` upstream until the device receives one: the
/// bridge's subscription is in place.
async fn until_subscribed(upstream: &Mosquitto, device: &mut sngate::client::Client, topic: &str) {
    let deadline = Instant::now() + ARRIVE;
    loop {
        assert!(
            Instant::now() < deadline,
            "the upstream subscription never came"
        );
        upstream_publish(upstream, topic, "probe", 1);
        if !device_collect(device, "probe", 1, Duration::from_millis(300))
            .await
            .is_empty()
        {
            return;
        }
    }
}

/// With a poison filter refused: 50 messages down on `zz/x` (payloads
/// `{down}…`) and 50 up on `ok/x` (`{up}…`) all arrive, at most two
/// reconnections, one filter refused.
async fn traffic_behind_a_poison_filter(
    gw: &TestGateway,
    upstream: &Mosquitto,
    sub: &Tool,
    device: &mut sngate::client::Client,
    [down_prefix, up_prefix]: [&str; 2],
    when: &str,
) {
    until_subscribed(upstream, device, "zz/probe").await;
    upstream_publish(upstream, "zz/x", down_prefix, 50);
    let down = device_collect(device, down_prefix, 50, ARRIVE).await;
    send_ok(device, up_prefix, 50).await;
    let up_got = collect(sub, up_prefix, 50, ARRIVE);
    let reconnects = metric(gw, "sngate_upstream_reconnects_total").await;
    println!(
        "poison filter, {when}: downlink {} of 50, uplink {} of 50, {reconnects} reconnections",
        down.len(),
        up_got.len()
    );
    assert_eq!((down.len(), up_got.len()), (50, 50));
    assert!(reconnects <= 2, "{reconnects} reconnections for one filter");
    assert_eq!(metric(gw, "sngate_upstream_filters_refused_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_filter_is_refused_and_every_other_subscription_and_message_works_even_across_a_restart()
 {
    let upstream = Mosquitto::start_with(broker_options(&[])).await;
    let sub = subscriber(&upstream, "ok/#", "refusals-sub-filter");
    let dir = tempfile::tempdir().expect("state dir");
    let port = free_udp_port();
    let up = upstream.port;
    let cfg = |c: &mut Config| durable(c, dir.path(), port, up, "gw-poison-filter");
    let gw = start_gateway_with(cfg).await;
    let opts = || common::options("subdev").clean_session(false);
    let mut device = common::connect_with(gw.addr, opts()).await;
    send_ok(&mut device, "ready", 1).await;
    assert_eq!(collect(&sub, "ready", 1, WAIT).len(), 1, "bridge up");
    // A filter mosquitto closes the connection on, and one that sorts
    // after it.
    let poison = format!("{}#", "p/".repeat(250));
    let _ = subscribe(&mut device, poison.clone()).await;
    subscribe(&mut device, "zz/#").await.expect("subscribed");
    traffic_behind_a_poison_filter(&gw, &upstream, &sub, &mut device, ["d", "u"], "live").await;
    drop(device);
    gw.stop().await;

    // The device's persistent subscriptions come back from the store: the
    // poison filter too, refused again at no more cost.
    let gw = start_gateway_with(cfg).await;
    let mut device = common::connect_with(gw.addr, opts()).await;
    traffic_behind_a_poison_filter(
        &gw,
        &upstream,
        &sub,
        &mut device,
        ["e", "v"],
        "after a restart",
    )
    .await;
    gw.stop().await;
}

/// A TCP proxy to 127.0.0.1:`target` that holds what the client sends for
/// `delay` before passing it on (the broker is that far away, one way);
/// returns its port.
async fn delaying_proxy(target: u16, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let port = listener.local_addr().expect("proxy address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (tx, mut rx) =
                tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0
                        || tx
                            .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                    {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((due, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if sw.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_right_after_the_suback_reaches_the_device_100_times_in_100() {
    let upstream = Mosquitto::start_with(broker_options(&[])).await;
    // The bridge's broker is 20 ms away (one way); the publisher is next
    // to it. Without the SUBACK wait, 0 of 100 arrive.
    let proxy = delaying_proxy(upstream.port, Duration::from_millis(20)).await;
    let gw = start_gateway_with(|c| c.upstream = Some(upstream_to(proxy, "gw-race"))).await;
    let mut device = connect(gw.addr, "racer").await;
    let mut opts = rumqttc::MqttOptions::new("race-publisher", "127.0.0.1", upstream.port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (publisher, mut events) = rumqttc::AsyncClient::new(opts, 16);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    // The bridge is connected (its SUBACKs wait only then).
    let deadline = Instant::now() + ARRIVE;
    while metric(&gw, "sngate_upstream_connected").await != 1 {
        assert!(Instant::now() < deadline, "the bridge never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut delivered = 0;
    for i in 0..100 {
        let topic = format!("race/{i}");
        device
            .subscribe(
                sngate::proto::SubscribeTopic::Name(topic.clone()),
                QoS::AtLeastOnce,
            )
            .await
            .expect("subscribed");
        publisher
            .publish(&topic, rumqttc::QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .expect("publish");
        if let Ok(m) = device.recv_message(Duration::from_secs(1)).await
            && m.payload.as_ref() == format!("m{i}").as_bytes()
        {
            delivered += 1;
        }
    }
    println!("subscribe then publish at once: {delivered} of 100 delivered");
    assert_eq!(
        delivered, 100,
        "every message published after the SUBACK arrives"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_device_a_devices_poison_message_and_filter_are_its_own_and_its_session_goes_on() {
    let upstream = Mosquitto::start_with(broker_options(&[])).await;
    let sub = subscriber(&upstream, "ok/#", "refusals-sub-per-device");
    let up = upstream.port;
    let gw = start_gateway_with(|c| {
        let mut u = upstream_to(up, "gw-per-device-refusals");
        u.bridge_mode = sngate::config::BridgeMode::PerDevice;
        c.upstream = Some(u);
    })
    .await;
    let mut device = connect(gw.addr, "pd").await;
    let mut other = connect(gw.addr, "pd-other").await;
    send_ok(&mut device, "ready", 1).await;
    assert_eq!(collect(&sub, "ready", 1, WAIT).len(), 1, "session up");
    // A filter mosquitto closes the device's connection on: refused to the
    // device (its SUBACK waited for the broker's verdict).
    let poison_filter = format!("{}#", "p/".repeat(250));
    let refused = subscribe(&mut device, poison_filter).await;
    // A poison message: taken by the device's session, quarantined there.
    let poison = format!("{}x", "p/".repeat(250));
    let _ = device
        .publish_named(&poison, Bytes::from("poison"), QoS::AtLeastOnce, false)
        .await;
    subscribe(&mut device, "zz/#")
        .await
        .expect("its other subscriptions work");
    send_ok(&mut device, "a", 20).await;
    send_ok(&mut other, "o", 20).await;
    let all = collect(&sub, "", 40, ARRIVE);
    let got: Vec<_> = all.iter().filter(|p| p.starts_with('a')).collect();
    let got_other: Vec<_> = all.iter().filter(|p| p.starts_with('o')).collect();
    until_subscribed(&upstream, &mut device, "zz/probe").await;
    println!(
        "per-device: {} of 20 behind the poison, the other device {} of 20, filter refused to the device: {}",
        got.len(),
        got_other.len(),
        refused.is_err()
    );
    assert_eq!(got.len(), 20, "everything behind the poison arrives");
    assert_eq!(got_other.len(), 20, "another device is untouched");
    assert_eq!(metric(&gw, "sngate_upstream_quarantined_total").await, 1);
    assert_eq!(
        metric(&gw, "sngate_upstream_filters_refused_total").await,
        1
    );
    let dead = dead_letters(&gw).await;
    assert_eq!(dead["last"][0]["device"], "pd", "{dead}");
    gw.stop().await;
}
