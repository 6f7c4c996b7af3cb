//! `$SYS/` belongs to the broker, through the real tools: a retained
//! `$SYS/broker/version` published with `mosquitto_pub` to the embedded
//! broker is refused (never served as the broker's own, never sent
//! upstream, counted), and a local `$SYS` subscription is not bridged to
//! the real upstream mosquitto (whose own `$SYS/broker/version` would
//! otherwise come down).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::sample;
use common::mosquitto::Mosquitto;
use common::mqtt_tools::{is_debug, publish, subscriber};
use common::{start_gateway_with, upstream_to};

/// Every line `tool` printed within `wait` (the gateway's `$SYS` comes
/// every second: a tool is never quiet for long).
fn lines_for(tool: &common::mqtt_tools::Tool, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut lines = Vec::new();
    while let Ok(line) = tool
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        lines.push(line);
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_is_the_brokers_own_and_is_not_bridged() {
    let upstream = Mosquitto::start().await;
    let up: SocketAddr = upstream.addr().parse().expect("mosquitto address");
    let gw = start_gateway_with(|c| {
        c.upstream = Some(upstream_to(up.port(), "gw-sys-test"));
        c.broker.sys_interval_secs = 1;
    })
    .await;
    let broker = gw.broker.expect("broker enabled");

    // The bridge is up: an ordinary filter is bridged (retry the upstream
    // publish until the subscription has reached mosquitto).
    let local_sub = subscriber(broker, "down/#", &["-q", "1"]);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (ok, out) = publish(up, &["-t", "down/x", "-q", "1", "-m", "m"]);
        assert!(ok, "{out}");
        match local_sub.lines.recv_timeout(Duration::from_millis(300)) {
            Ok(line) if !is_debug(&line) => break,
            _ => assert!(attempt < 20, "the bridge never carried down/#"),
        }
    }

    // A forged, retained broker version, published locally, is refused ...
    let upstream_sys = subscriber(up, "$SYS/broker/version", &[]);
    let (ok, out) = publish(
        broker,
        &["-t", "$SYS/broker/version", "-r", "-q", "1", "-m", "forged"],
    );
    assert!(ok, "{out}");
    // ... and a local `$SYS` subscriber gets the gateway's own version
    // (within the 1 s status interval), never the forged one and never
    // mosquitto's (the subscription is not bridged).
    let local_sys = subscriber(broker, "$SYS/broker/version", &[]);
    let seen = lines_for(&local_sys, Duration::from_millis(2500));
    let messages: Vec<&String> = seen.iter().filter(|l| !is_debug(l)).collect();
    assert!(
        messages.iter().any(|l| l.contains("sngate")),
        "the gateway's own version: {seen:?}"
    );
    assert!(
        messages
            .iter()
            .all(|l| !l.contains("forged") && !l.contains("mosquitto")),
        "{seen:?}"
    );
    // Upstream never got the forged one.
    let up_seen = lines_for(&upstream_sys, Duration::from_millis(500));
    assert!(up_seen.iter().all(|l| !l.contains("forged")), "{up_seen:?}");
    // Counted.
    let page = common::metrics_page(&gw.running().queries()).await;
    assert_eq!(
        sample(&page, "sngate_drops_total", "reason=\"sys_reserved\""),
        Some(1.0),
        "{page}"
    );
    gw.stop().await;
}
