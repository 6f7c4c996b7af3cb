//! One identity per gateway upstream: two gateways started with default
//! settings on one mosquitto connect with two distinct client ids and stay
//! connected (no takeover storm); two configured with the same id are told,
//! at warn, that the broker hands their session to the other.

mod common;

use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::mosquitto::Mosquitto;
use common::{KillOnDrop, spawn_logged, wait_for_line};

/// How long the two gateways must stay connected without a reconnect: a
/// takeover storm reconnects about once a second.
const QUIET_WINDOW: Duration = Duration::from_secs(3);

/// The real `sngate run` with the defaults but for an ephemeral UDP port,
/// no embedded broker, no store, bridging to `broker`, plus `extra` flags.
fn gateway(broker: &Mosquitto, extra: &[&str]) -> (KillOnDrop, Receiver<String>) {
    let upstream = broker.addr();
    let mut cmd = common::binary_gateway_command(&["--upstream", &upstream]);
    cmd.args(extra);
    spawn_logged(cmd)
}

/// The client id a gateway logged it uses upstream.
fn logged_client_id(lines: &Receiver<String>) -> String {
    let line = wait_for_line(lines, "bridging to the upstream broker");
    line.split("client_id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|id| id.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no client_id in {line:?}"))
}

/// The first line containing `needle` within `limit` overall.
fn line_within(lines: &Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {needle:?} within {limit:?}"),
        }
    }
}

/// mosquitto's "New client connected … as ID " lines for `id`.
fn connects(broker: &Mosquitto, id: &str) -> usize {
    broker
        .log_text()
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(&format!(" as {id} ")))
        .count()
}

#[tokio::test]
async fn two_gateways_with_default_settings_have_distinct_ids_and_no_reconnect_storm() {
    let broker = Mosquitto::start().await;
    let (_a, a_lines) = gateway(&broker, &[]);
    let (_b, b_lines) = gateway(&broker, &[]);
    let a = logged_client_id(&a_lines);
    let b = logged_client_id(&b_lines);
    assert!(
        a.starts_with("sngate-") && b.starts_with("sngate-"),
        "{a} {b}"
    );
    assert_ne!(
        a, b,
        "two gateways with default settings share an upstream id"
    );
    wait_for_line(&a_lines, "upstream connected");
    wait_for_line(&b_lines, "upstream connected");
    broker.wait_for_log(&format!(" as {a} ")).await;
    broker.wait_for_log(&format!(" as {b} ")).await;
    // Both stay connected: no further CONNECT from either over the window
    // (a storm of takeovers reconnects about once a second).
    tokio::time::sleep(QUIET_WINDOW).await;
    let log = broker.log_text();
    assert_eq!(connects(&broker, &a), 1, "{a} reconnected; log:\n{log}");
    assert_eq!(connects(&broker, &b), 1, "{b} reconnected; log:\n{log}");
    assert!(
        !log.contains("already connected"),
        "the broker saw a takeover:\n{log}"
    );
    let lost = a_lines
        .try_iter()
        .chain(b_lines.try_iter())
        .find(|l| l.contains("upstream connection lost"));
    assert_eq!(lost, None);
}

#[tokio::test]
async fn two_gateways_sharing_a_client_id_are_told_the_session_is_taken_over() {
    let broker = Mosquitto::start().await;
    let flags = ["--upstream-client-id", "sngate-shared"];
    let (_a, a_lines) = gateway(&broker, &flags);
    assert_eq!(logged_client_id(&a_lines), "sngate-shared");
    wait_for_line(&a_lines, "upstream connected");
    let (_b, b_lines) = gateway(&broker, &flags);
    wait_for_line(&b_lines, "upstream connected");
    // They kick each other off; the log names the likely cause and the id
    // (mosquitto closes the old connection without DISCONNECT 0x8E, so it
    // is inferred from the third connection closed right after CONNACK).
    let warned = line_within(&a_lines, "the same client id", Duration::from_secs(30));
    assert!(warned.contains("WARN"), "{warned}");
    assert!(warned.contains("sngate-shared"), "{warned}");
    assert!(warned.contains("--upstream-client-id"), "{warned}");
}
