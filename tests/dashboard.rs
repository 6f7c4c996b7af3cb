//! The dashboard (`/`) in a real browser: headless Chromium opens it
//! against the real gateway binary, bridged to a real mosquitto, with
//! devices connected by the project's client, and the test checks what the
//! page rendered — a device's id and its state, a non-zero rate after
//! traffic, the upstream state. It also writes a screenshot
//! (`SNGATE_DASHBOARD_SCREENSHOT=PATH`, how docs/dashboard.png was made).
//!
//! Chromium: `scripts/test.sh` installs Debian's `chromium` when missing.
//! Without it the test fails under CI (`CI` set) and is skipped with a loud
//! message elsewhere.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::mosquitto::Mosquitto;
use common::{KillOnDrop, connect, spawn_logged, wait_for_line};
use sngate::proto::{QoS, SubscribeTopic};

/// The browser, if installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// Runs headless Chromium on `url` with `extra` arguments (a fresh profile,
/// nothing fetched from the Internet); returns its stdout.
fn headless(browser: &PathBuf, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id="ID"` in `dom`.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    dom.split_once(&open)
        .and_then(|(_, rest)| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(text, _)| text)
        .unwrap_or_else(|| panic!("no element {id} in the page:\n{dom}"))
}

#[tokio::test]
async fn the_dashboard_renders_devices_rates_and_the_upstream_in_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required under CI (scripts/test.sh installs it)"
        );
        eprintln!("\n!!! SKIPPED: chromium not found (apt-get install chromium) !!!\n");
        return;
    };
    let broker = Mosquitto::start().await;
    let upstream = broker.addr();
    let cmd = common::binary_gateway_command(&["--http", "127.0.0.1:0", "--upstream", &upstream]);
    let (_gw, lines): (KillOnDrop, _) = spawn_logged(cmd);
    let udp = common::logged_addr(&lines, "listening on UDP");
    let http = common::logged_addr(&lines, "HTTP endpoint listening");
    wait_for_line(&lines, "upstream connected");

    // Devices: one active and subscribed, publishing to itself; one asleep.
    let mut sensor = connect(udp, "sensor-kitchen").await;
    sensor
        .subscribe(SubscribeTopic::Name("home/#".into()), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let topic = sensor
        .register("home/kitchen/temp")
        .await
        .expect("register");
    for i in 0..20 {
        sensor
            .publish(
                sngate::proto::TopicRef::Id(topic),
                format!("21.{i}"),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .expect("publish");
    }
    let mut sleepy = connect(udp, "sensor-garden").await;
    sleepy.sleep(300).await.expect("sleep");
    // A drop: QoS −1 to a predefined id nobody defined.
    let stray = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut bytes = bytes::BytesMut::new();
    sngate::proto::encode(
        &sngate::proto::Packet::Publish {
            dup: false,
            qos: QoS::MinusOne,
            retain: false,
            topic: sngate::proto::TopicRef::Predefined(999),
            msg_id: 0,
            payload: "?".into(),
        },
        &mut bytes,
    )
    .expect("encode");
    stray.send_to(&bytes, udp).await.expect("send");
    wait_for_line(&lines, "dropped:");
    // For the screenshot, some history in the chart: a message a second
    // for half a minute.
    if std::env::var_os("SNGATE_DASHBOARD_SCREENSHOT").is_some() {
        for i in 0..30u32 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            for _ in 0..(1 + i % 7) {
                sensor
                    .publish(
                        sngate::proto::TopicRef::Id(topic),
                        "20.5",
                        QoS::AtMostOnce,
                        false,
                    )
                    .await
                    .expect("publish");
            }
        }
    }

    let url = format!("http://{http}/");
    let dom = headless(&browser, &url, &["--dump-dom"]);
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page never rendered /status:\n{dom}"
    );
    // A device's id and its state.
    let row = dom
        .split("<tr data-client=\"sensor-kitchen\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for sensor-kitchen:\n{dom}"));
    assert!(row.contains(">active<"), "{row}");
    assert!(row.contains("home/# (1)"), "{row}");
    let row = dom
        .split("<tr data-client=\"sensor-garden\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for sensor-garden:\n{dom}"));
    assert!(row.contains(">asleep<"), "{row}");
    // A rate after traffic: 20 in, 20 echoes out and 20 to the broker.
    let rate_in: f64 = text_of(&dom, "rate-in").parse().expect("a number");
    let rate_out: f64 = text_of(&dom, "rate-out").parse().expect("a number");
    assert!(
        rate_in > 0.0 && rate_out > 0.0,
        "in {rate_in}/s, out {rate_out}/s"
    );
    assert!(dom.contains("<polyline"), "no chart:\n{dom}");
    assert_eq!(text_of(&dom, "up-state"), "connected");
    assert_eq!(text_of(&dom, "device-count"), "2");
    // Drops by reason.
    assert!(
        dom.contains("qos minus one refused"),
        "no drop shown:\n{dom}"
    );

    // The screenshot for docs/, when asked (a phone-sized window).
    if let Some(path) = std::env::var_os("SNGATE_DASHBOARD_SCREENSHOT") {
        let path = PathBuf::from(path);
        let arg = format!("--screenshot={}", path.display());
        headless(&browser, &url, &[&arg, "--window-size=1100,900"]);
        assert!(path.is_file(), "no screenshot written");
    }
}
