//! The operations endpoint end to end: real UDP devices (src/client), a real
//! TCP client, the in-process gateway — and the real binary for the log.
//! `/metrics` counts known traffic exactly (devices, the embedded broker's
//! real `mosquitto_pub`/`mosquitto_sub` clients, the durable store's
//! commits), `/status` lists the devices and local clients, `/healthz`
//! answers, and bad or slow clients get bounded answers.

mod common;

use common::{spawn_logged, wait_for_line};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::http::{self, sample};
use common::{RawDevice, connect, expect_message, start_gateway_with};
use sngate::proto::{QoS, SubscribeTopic, TopicRef};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn loopback_any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

/// Scrapes until `done` holds for the page (the engine has taken what the
/// test sent), within 10 s.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = http::get(addr, "/metrics").await;
        assert_eq!(page.status, 200, "{}", page.body);
        if done(&page.body) {
            return page.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never reached the expected state:\n{}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The page is well formed: every sample's family has its HELP and TYPE
/// first, each family is declared once, names are sngate_ and counters end
/// in _total.
fn check_format(page: &str) {
    let mut declared = HashSet::new();
    let mut helped = HashSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or_default();
            let kind = parts.next().unwrap_or_default();
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(declared.insert(name.to_owned()), "TYPE twice for {name}");
            assert!(name.starts_with("sngate_"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(declared.contains(name), "sample before TYPE: {line}");
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
        }
    }
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly_and_status_lists_the_device() {
    let gw = start_gateway_with(|c| c.http.listen = Some(loopback_any())).await;
    let http_addr = gw.running().http_addr().expect("an HTTP address");

    let mut device = connect(gw.addr, "dev-1").await;
    device
        .subscribe(SubscribeTopic::Name("t/#".into()), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let id = device.register("t/x").await.expect("register");
    for i in 0..3 {
        device
            .publish(TopicRef::Id(id), format!("q0-{i}"), QoS::AtMostOnce, false)
            .await
            .expect("QoS 0 publish");
    }
    for i in 0..2 {
        device
            .publish(TopicRef::Id(id), format!("q1-{i}"), QoS::AtLeastOnce, false)
            .await
            .expect("QoS 1 publish");
    }
    for _ in 0..5 {
        expect_message(&mut device).await;
    }
    let raw = RawDevice::new(gw.addr).await;
    raw.send_bytes(&[0x05, 0x0C, 0x00]).await; // Length 5, 3 bytes: malformed

    // Wait until the engine has taken the malformed datagram and the last
    // PUBACK; from then on nothing moves.
    let page = scrape_until(http_addr, |p| {
        sample(p, "sngate_drops_total", "reason=\"malformed\"") == Some(1.0)
            && sample(p, "sngate_in_flight_messages", "") == Some(0.0)
    })
    .await;
    check_format(&page);
    let v = |name: &str, labels: &str| {
        sample(&page, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{page}"))
    };
    let messages = "sngate_messages_total";
    assert_eq!(v(messages, "direction=\"in\",qos=\"-1\""), 0.0);
    assert_eq!(v(messages, "direction=\"in\",qos=\"0\""), 3.0);
    assert_eq!(v(messages, "direction=\"in\",qos=\"1\""), 2.0);
    assert_eq!(v(messages, "direction=\"in\",qos=\"2\""), 0.0);
    assert_eq!(v(messages, "direction=\"out\",qos=\"0\""), 3.0);
    assert_eq!(v(messages, "direction=\"out\",qos=\"1\""), 2.0);
    assert_eq!(v(messages, "direction=\"out\",qos=\"2\""), 0.0);
    for reason in sngate::core::DropReason::ALL {
        let want = if reason.label() == "malformed" {
            1.0
        } else {
            0.0
        };
        let labels = format!("reason=\"{}\"", reason.label());
        assert_eq!(v("sngate_drops_total", &labels), want, "{labels}");
    }
    for (state, want) in [("active", 1.0), ("asleep", 0.0), ("lost", 0.0)] {
        assert_eq!(v("sngate_devices", &format!("state=\"{state}\"")), want);
    }
    assert_eq!(v("sngate_devices_by_transport", "transport=\"udp\""), 1.0);
    assert_eq!(
        v("sngate_devices_by_transport", "transport=\"serial\""),
        0.0
    );
    assert_eq!(v("sngate_subscriptions", ""), 1.0);
    assert_eq!(v("sngate_buffered_messages", ""), 0.0);
    assert_eq!(v("sngate_buffered_bytes", ""), 0.0);
    assert_eq!(v("sngate_parked_publishes", ""), 0.0);
    assert_eq!(v("sngate_sessions_expired_total", ""), 0.0);
    // In: CONNECT, SUBSCRIBE, REGISTER, 5 PUBLISH, 2 PUBACK, the malformed
    // one. Out: CONNACK, SUBACK, REGACK, 2 PUBACK, 5 PUBLISH.
    let listener = format!("listener=\"{}\"", gw.addr);
    assert_eq!(
        v(
            "sngate_udp_datagrams_total",
            &format!("{listener},direction=\"in\"")
        ),
        11.0
    );
    assert_eq!(
        v(
            "sngate_udp_datagrams_total",
            &format!("{listener},direction=\"out\"")
        ),
        10.0
    );
    assert_eq!(v("sngate_packets_total", "direction=\"in\""), 11.0);
    assert_eq!(v("sngate_shutting_down", ""), 0.0);
    assert!(
        sample(&page, "sngate_upstream_connected", "").is_none(),
        "no bridge, no bridge figures"
    );
    assert!(page.contains("sngate_info{version=\""), "{page}");
    assert_eq!(v("sngate_store_enabled", ""), 0.0, "tests run in memory");
    assert_eq!(v("sngate_store_commits_total", ""), 0.0);

    let status = http::get(http_addr, "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    assert_eq!(json["gateway_id"], 1);
    assert_eq!(json["upstream"]["state"], "none");
    let devices = json["devices"].as_array().expect("a device list");
    assert_eq!(devices.len(), 1, "{json}");
    let d = &devices[0];
    assert_eq!(d["client_id"], "dev-1");
    assert_eq!(d["state"], "active");
    assert_eq!(d["transport"], "udp");
    let local = device.local_addr().expect("device address");
    assert_eq!(d["address"], local.to_string());
    assert_eq!(
        d["subscriptions"],
        serde_json::json!([{ "filter": "t/#", "qos": 1 }])
    );
    assert_eq!(d["buffered_messages"], 0);
    assert_eq!(d["in_flight"], false);
    assert!(
        d["last_seen_secs_ago"].as_u64().is_some_and(|s| s < 10),
        "{d}"
    );
    let last_seen = d["last_seen"].as_str().expect("a wall time");
    assert!(
        humantime::parse_rfc3339(last_seen).is_ok(),
        "{last_seen} is not RFC 3339"
    );
    assert!(json["uptime_secs"].as_u64().is_some(), "{json}");
    gw.stop().await;
}

/// Runs `program` (`mosquitto_pub` or `mosquitto_sub`) against `broker` to
/// completion, on a blocking thread (the gateway runs on this runtime), and
/// killed by coreutils' `timeout` if it has not ended within 10 s. Returns
/// whether it succeeded, and its stdout and stderr.
async fn mosquitto(program: &str, broker: SocketAddr, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["10", program, "-h", &broker.ip().to_string()])
        .args(["-p", &broker.port().to_string()])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the blocking thread")
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn broker_figures_count_real_mqtt_clients_exactly_and_status_lists_them() {
    let gw = start_gateway_with(|c| c.http.listen = Some(loopback_any())).await;
    let http_addr = gw.running().http_addr().expect("an HTTP address");
    let broker = gw.broker.expect("the embedded broker");

    // A persistent session subscribes and leaves (-E: exit on SUBACK)...
    let keeper = ["-c", "-i", "keeper", "-q", "1", "-t", "a/#"];
    let (ok, out) = mosquitto("mosquitto_sub", broker, &[&keeper[..], &["-E"]].concat()).await;
    assert!(ok, "{out}");
    // ...a message is kept for it, handed over when it comes back (and
    // leaves after one message), then another is kept.
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        broker,
        &["-q", "1", "-t", "a/1", "-m", "one"],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = mosquitto(
        "mosquitto_sub",
        broker,
        &[&keeper[..], &["-C", "1"]].concat(),
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out, "one\n");
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        broker,
        &["-q", "1", "-t", "a/2", "-m", "two"],
    )
    .await;
    assert!(ok, "{out}");
    // MQTT 5 is refused (the broker speaks 3.1.1).
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        broker,
        &["-V", "mqttv5", "-q", "1", "-t", "a/3", "-m", "three"],
    )
    .await;
    assert!(!ok, "MQTT 5 accepted: {out}");

    // Five connections in all, every one closed and its task ended.
    let page = scrape_until(http_addr, |p| {
        sample(p, "sngate_broker_connections_accepted_total", "") == Some(5.0)
            && sample(p, "sngate_broker_sockets", "") == Some(0.0)
            && sample(p, "sngate_broker_connections", "") == Some(0.0)
    })
    .await;
    check_format(&page);
    let v = |name: &str, labels: &str| {
        sample(&page, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{page}"))
    };
    assert_eq!(v("sngate_broker_listening", ""), 1.0);
    assert_eq!(v("sngate_broker_connects_refused_total", ""), 1.0);
    assert_eq!(v("sngate_broker_protocol_errors_total", ""), 0.0);
    assert_eq!(v("sngate_broker_timeouts_total", ""), 0.0);
    assert_eq!(
        v("sngate_broker_dropped_total", "reason=\"slow_client\""),
        0.0
    );
    assert_eq!(v("sngate_broker_publishes_total", "direction=\"in\""), 2.0);
    assert_eq!(v("sngate_broker_publishes_total", "direction=\"out\""), 1.0);
    assert_eq!(v("sngate_broker_messages_total", "direction=\"in\""), 2.0);
    assert_eq!(v("sngate_broker_messages_total", "direction=\"out\""), 1.0);
    assert_eq!(v("sngate_broker_sessions", "state=\"connected\""), 0.0);
    assert_eq!(v("sngate_broker_sessions", "state=\"away\""), 1.0);
    assert_eq!(v("sngate_broker_queued_messages", ""), 1.0);
    // Local clients are not devices.
    assert_eq!(
        v("sngate_messages_total", "direction=\"in\",qos=\"1\""),
        0.0
    );
    assert_eq!(v("sngate_devices", "state=\"active\""), 0.0);

    let status = http::get(http_addr, "/status").await;
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    assert_eq!(
        json["local_clients"],
        serde_json::json!([{
            "client_id": "keeper",
            "connected": false,
            "clean_session": false,
            "subscriptions": [{ "filter": "a/#", "qos": 1 }],
            "queued": 1,
        }]),
        "{json}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn store_figures_count_the_commit_behind_a_qos1_acknowledgement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().to_str().expect("a UTF-8 path").to_owned();
    let gw = start_gateway_with(|c| {
        c.http.listen = Some(loopback_any());
        c.store.enabled = true;
        c.store.state_dir = state_dir;
        // No broker: its retained $SYS messages would be committed too.
        c.broker.listen = Vec::new();
    })
    .await;
    let http_addr = gw.running().http_addr().expect("an HTTP address");

    // A clean session has nothing durable: no commit yet.
    let mut device = connect(gw.addr, "dev-1").await;
    let id = device.register("t/r").await.expect("register");
    let page = http::get(http_addr, "/metrics").await.body;
    check_format(&page);
    assert_eq!(
        sample(&page, "sngate_store_enabled", ""),
        Some(1.0),
        "{page}"
    );
    assert_eq!(sample(&page, "sngate_store_commits_total", ""), Some(0.0));
    assert_eq!(sample(&page, "sngate_store_records_total", ""), Some(0.0));
    assert!(
        sample(&page, "sngate_broker_listening", "").is_none(),
        "no broker, no broker figures"
    );

    // A retained QoS 1 message is acknowledged once on disk: by the time
    // the PUBACK is here, its commit is counted.
    device
        .publish(TopicRef::Id(id), "21.5", QoS::AtLeastOnce, true)
        .await
        .expect("QoS 1 publish");
    let page = http::get(http_addr, "/metrics").await.body;
    check_format(&page);
    assert_eq!(
        sample(&page, "sngate_store_commits_total", ""),
        Some(1.0),
        "{page}"
    );
    assert_eq!(sample(&page, "sngate_store_records_total", ""), Some(1.0));
    assert!(
        sample(&page, "sngate_store_written_bytes_total", "").is_some_and(|b| b > 4.0),
        "{page}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn healthz_answers_and_bad_requests_get_4xx() {
    let gw = start_gateway_with(|c| c.http.listen = Some(loopback_any())).await;
    let addr = gw.running().http_addr().expect("an HTTP address");

    let health = http::get(addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let head = http::raw(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("content-length"), Some("3"));

    assert_eq!(http::get(addr, "/nope").await.status, 404);
    assert_eq!(http::get(addr, "/metrics?x=1").await.status, 200);
    let post = http::raw(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        http::raw(addr, b"\x00\x01garbage\r\n\r\n").await.status,
        400
    );
    assert_eq!(
        http::raw(addr, b"GET / HTTP/1.1\r\nbad header\r\n\r\n")
            .await
            .status,
        400
    );
    let many: String = (0..40).map(|i| format!("x-{i}: y\r\n")).collect();
    let req = format!("GET /healthz HTTP/1.1\r\n{many}\r\n");
    assert_eq!(http::raw(addr, req.as_bytes()).await.status, 431);
    let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(10_000));
    assert_eq!(http::raw(addr, huge.as_bytes()).await.status, 431);

    // Still serving after all that.
    assert_eq!(http::get(addr, "/healthz").await.status, 200);
    gw.stop().await;

    let quiet = start_gateway_with(|_| {}).await;
    assert_eq!(quiet.running().http_addr(), None, "off by default");
    quiet.stop().await;
}

#[tokio::test]
async fn slow_and_excess_connections_are_bounded() {
    let gw = start_gateway_with(|c| c.http.listen = Some(loopback_any())).await;
    let addr = gw.running().http_addr().expect("an HTTP address");
    let limits = sngate::ops::http::Limits::default();

    // Slow-loris clients: half a request head each, then nothing.
    let mut slow = Vec::new();
    for _ in 0..limits.max_connections {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("send");
        slow.push(s);
    }
    // Wait until the server holds all of them: one more is turned away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let answer = http::get(addr, "/metrics").await;
        if answer.status == 503 {
            assert_eq!(answer.body, "too many connections\n");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection limit never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Busy is not dead: /healthz still answers its own question, while
    // everything else is turned away.
    for _ in 0..5 {
        let health = http::get(addr, "/healthz").await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    }
    let head = http::raw(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let status = http::get(addr, "/status").await;
    assert_eq!(
        (status.status, status.body.as_str()),
        (503, "too many connections\n")
    );
    // Each slow client is answered 408 and closed once the read timeout
    // has passed.
    let started = tokio::time::Instant::now();
    for s in &mut slow {
        let mut bytes = Vec::new();
        let read = tokio::time::timeout(
            limits.read_timeout + Duration::from_secs(3),
            tokio::io::AsyncReadExt::read_to_end(s, &mut bytes),
        )
        .await;
        assert!(read.is_ok(), "a slow client was not closed in time");
        assert_eq!(http::parse(&bytes).status, 408);
    }
    assert!(started.elapsed() <= limits.read_timeout + Duration::from_secs(3));
    assert_eq!(http::get(addr, "/healthz").await.status, 200);
    gw.stop().await;
}

#[test]
fn the_binary_logs_where_http_listens_and_serves_there() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
    cmd.args(["run", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args([
            "--log-format",
            "text",
            "--broker",
            "off",
            "--state-dir",
            "off",
        ])
        .env_remove("RUST_LOG")
        .env_remove("SNGATE_CONFIG");
    let (mut child, lines) = spawn_logged(cmd);
    let line = wait_for_line(&lines, "HTTP endpoint listening");
    let addr: SocketAddr = line
        .split("addr=")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert_ne!(addr.port(), 0, "the bound port, not the configured 0");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let health = runtime.block_on(http::get(addr, "/healthz"));
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let ok = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok);
    wait_for_line(&lines, "shutdown complete");
    assert!(child.wait().expect("sngate exits").success());
}

#[tokio::test]
async fn serial_link_figures_are_labelled_by_port() {
    use common::pty::Pty;
    use sngate::config::{SerialConfig, SerialFraming};

    let pty = Pty::open();
    let port = pty.path.to_str().expect("UTF-8 pty path").to_owned();
    let device = port.clone();
    let gw = start_gateway_with(|c| {
        c.http.listen = Some(loopback_any());
        c.serial = vec![SerialConfig {
            device,
            framing: SerialFraming::Raw,
            ..SerialConfig::default()
        }];
    })
    .await;
    let addr = gw.running().http_addr().expect("an HTTP address");
    pty.wait_opened(Duration::from_secs(5)).await;

    // CONNECT over the raw link until a CONNACK comes back (a first frame
    // may be read before the port is set up; see tests/serial.rs).
    let mut connect = bytes::BytesMut::new();
    sngate::proto::encode(
        &sngate::proto::Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: sngate::proto::PROTOCOL_ID_V1_2,
            duration: 60,
            client_id: "radio-1".into(),
        },
        &mut connect,
    )
    .expect("encode CONNECT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    loop {
        pty.write_all(&connect).await;
        let wait = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
        if let Some(n) = pty.read_until(&mut buf, wait).await {
            assert!(buf[..n].starts_with(&[0x03, 0x05, 0x00]), "{:?}", &buf[..n]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no CONNACK");
    }

    let port_label = format!("port=\"{port}\"");
    let page = scrape_until(addr, |p| {
        sample(
            p,
            "sngate_serial_frames_total",
            &format!("{port_label},direction=\"out\""),
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    check_format(&page);
    let v = |name: &str, labels: &str| {
        sample(&page, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{page}"))
    };
    let frames = "sngate_serial_frames_total";
    // Every packet in and out went over the serial link.
    assert_eq!(
        v(frames, &format!("{port_label},direction=\"in\"")),
        v("sngate_packets_total", "direction=\"in\"")
    );
    assert_eq!(
        v(frames, &format!("{port_label},direction=\"out\"")),
        v("sngate_packets_total", "direction=\"out\"")
    );
    assert_eq!(v("sngate_serial_opens_total", &port_label), 1.0);
    assert_eq!(v("sngate_serial_tx_failures_total", &port_label), 0.0);
    for direction in ["in", "out"] {
        let labels = format!("{port_label},direction=\"{direction}\"");
        assert_eq!(v("sngate_serial_dropped_total", &labels), 0.0);
    }
    assert_eq!(
        v("sngate_devices_by_transport", "transport=\"serial\""),
        1.0
    );

    let status = http::get(addr, "/status").await;
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    let d = &json["devices"][0];
    assert_eq!(
        (&d["client_id"], &d["transport"], &d["address"]),
        (
            &serde_json::json!("radio-1"),
            &serde_json::json!("serial"),
            &serde_json::json!(port)
        )
    );
    gw.stop().await;
}

/// Every configured limit is on the page as `sngate_limit{limit=KEY}`, and
/// refusals at the limits with no drop reason of their own are
/// `sngate_limit_hits_total{limit=KEY}`: each limit is hit here once, by
/// real devices and real TCP clients of the embedded broker.
#[tokio::test]
async fn limits_and_the_refusals_at_them_are_on_the_page() {
    let gw = start_gateway_with(|c| {
        c.http.listen = Some(loopback_any());
        c.gateway.max_client_id_len = 8;
        c.limits.max_clients = 2;
        c.limits.max_topics_per_client = 1;
        c.limits.max_subscriptions_per_client = 1;
        c.limits.max_retained_messages = 1;
        c.broker.max_connections = 1;
        c.broker.max_packet_bytes = 128;
        // The broker's retained $SYS topics would take the one retained slot.
        c.broker.sys_interval_secs = 0;
    })
    .await;
    let addr = gw.running().http_addr().expect("an HTTP address");
    let broker = gw.broker.expect("the broker listens");
    let congestion = |r: Result<(), sngate::client::ClientError>, what: &str| match r {
        Err(sngate::client::ClientError::Rejected(sngate::proto::ReturnCode::Congestion)) => {}
        other => panic!("{what}: expected congestion, got {other:?}"),
    };

    match sngate::client::Client::connect(gw.addr, common::options("id-too-long")).await {
        Err(sngate::client::ClientError::Rejected(sngate::proto::ReturnCode::NotSupported)) => {}
        other => panic!("a long id: expected 0x03, got {:?}", other.map(drop)),
    }
    let mut a = connect(gw.addr, "a").await;
    let mut b = connect(gw.addr, "b").await;
    // Both speak after their CONNACK (a session that never did would be
    // evicted to make room).
    a.ping().await.expect("a's ping");
    b.ping().await.expect("b's ping");
    congestion(
        sngate::client::Client::connect(gw.addr, common::options("c"))
            .await
            .map(drop),
        "a third client",
    );
    a.register("t/1").await.expect("the first topic");
    congestion(a.register("t/2").await.map(drop), "a second topic");
    a.subscribe(SubscribeTopic::Name("s/#".into()), QoS::AtMostOnce)
        .await
        .expect("the first subscription");
    congestion(
        a.subscribe(SubscribeTopic::Name("u/#".into()), QoS::AtMostOnce)
            .await
            .map(drop),
        "a second subscription",
    );
    // Short topic names: no topic id needed. The second retained message
    // is still accepted, just not kept.
    for short in ["r1", "r2"] {
        a.publish_named(short, &b"x"[..], QoS::AtLeastOnce, true)
            .await
            .expect("a retained publish");
    }

    // The broker: one idle connection holds max_connections; the next is
    // closed at once.
    let idle = TcpStream::connect(broker).await.expect("connect");
    let mut refused = TcpStream::connect(broker).await.expect("connect");
    let mut rest = Vec::new();
    tokio::time::timeout(
        common::WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut refused, &mut rest),
    )
    .await
    .expect("the refused connection closed in time")
    .expect("read");
    drop(idle);
    scrape_until(addr, |p| {
        sample(p, "sngate_broker_sockets", "") == Some(0.0)
    })
    .await;
    // A CONNECT announcing 1000 bytes, over max_packet_bytes: closed
    // before the rest is read.
    let mut big = TcpStream::connect(broker).await.expect("connect");
    big.write_all(&[0x10, 0xE8, 0x07]).await.expect("send");
    tokio::time::timeout(
        common::WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut big, &mut rest),
    )
    .await
    .expect("the oversized CONNECT closed in time")
    .expect("read");

    let hits = "sngate_limit_hits_total";
    let page = scrape_until(addr, |p| {
        sample(p, hits, "limit=\"broker.max_packet_bytes\"") == Some(1.0)
    })
    .await;
    check_format(&page);
    let v = |name: &str, key: &str| {
        sample(&page, name, &format!("limit=\"{key}\""))
            .unwrap_or_else(|| panic!("no {name}{{limit={key}}} in\n{page}"))
    };
    for (key, value) in [
        ("gateway.max_client_id_len", 8.0),
        ("gateway.max_packet_bytes", 2048.0),
        ("limits.max_clients", 2.0),
        ("limits.max_topics_per_client", 1.0),
        ("limits.max_subscriptions_per_client", 1.0),
        ("limits.max_queued_messages_per_client", 1000.0),
        ("limits.max_queued_bytes_per_client", 1048576.0),
        ("limits.max_queued_bytes_total", 67108864.0),
        ("limits.max_messages_per_wake", 0.0),
        ("limits.max_retained_messages", 1.0),
        ("limits.per_source_packets_per_sec", 0.0),
        ("limits.per_source_burst", 200.0),
        ("limits.per_session_packets_per_sec", 100.0),
        ("limits.per_session_burst", 200.0),
        ("broker.max_connections", 1.0),
        ("broker.max_packet_bytes", 128.0),
        ("broker.max_inflight_messages", 20.0),
        ("broker.max_queued_messages", 1000.0),
    ] {
        assert_eq!(v("sngate_limit", key), value, "{key}");
    }
    assert_eq!(
        sample(
            &page,
            "sngate_limit",
            "limit=\"upstream.max_pending_messages\""
        ),
        None,
        "no upstream, no outbox limit"
    );
    for key in [
        "gateway.max_client_id_len",
        "limits.max_clients",
        "limits.max_topics_per_client",
        "limits.max_subscriptions_per_client",
        "limits.max_retained_messages",
        "broker.max_connections",
        "broker.max_packet_bytes",
    ] {
        assert_eq!(v(hits, key), 1.0, "{key}");
    }
    gw.stop().await;
}
