//! `sngate status`: the running gateway's `/status`, fetched over HTTP and
//! summarised for a terminal — for operators over ssh, where the dashboard
//! is out of reach: the gateway and its upstream, message rates, devices by
//! state, drops, and the busiest devices. The client is the least HTTP/1.1
//! our own server needs (one GET, `Connection: close`, bounded in time and
//! size); the summary is a pure function of the JSON.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// How long the connection, the request and the answer may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read, in bytes (a `/status` with every device of a
/// large gateway fits well within it).
pub const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// How many devices the summary lists.
pub const BUSIEST: usize = 10;

/// Why the summary could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// No connection, or it failed.
    #[error("cannot read http://{addr}/status")]
    Io {
        /// The endpoint.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The answer is not `200` with a JSON body.
    #[error("http://{addr}/status answered {what}")]
    Answer {
        /// The endpoint.
        addr: SocketAddr,
        /// What came back instead.
        what: String,
    },
}

/// Fetches `/status` from the gateway's HTTP endpoint at `addr`.
pub fn fetch(addr: SocketAddr) -> Result<Value, SummaryError> {
    let io = |source| SummaryError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .map_err(io)?;
    let bad = |what: String| SummaryError::Answer { addr, what };
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP answer".to_owned()))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(bad(format!("{status:?}: {}", body.trim())));
    }
    serde_json::from_str(body).map_err(|e| bad(format!("JSON that does not parse: {e}")))
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) if m == 0 => format!("{secs}s"),
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

/// The summary of a `/status` document, as lines for a terminal.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!(
        "sngate gateway {} · v{} · up {}{}",
        u(status, "gateway_id"),
        s(status, "version"),
        duration(u(status, "uptime_secs")),
        if status.get("shutting_down") == Some(&Value::Bool(true)) {
            " · SHUTTING DOWN"
        } else {
            ""
        }
    ));
    let empty = Value::Null;
    let up = status.get("upstream").unwrap_or(&empty);
    let refused = status
        .get("upstream_dead_letters")
        .map_or(0, |d| u(d, "quarantined"));
    line(format!(
        "upstream: {} · reconnects {} · outbox {} · refused {}",
        s(up, "state"),
        u(up, "reconnects"),
        u(up, "outbox_messages"),
        refused
    ));
    if let Some(rates) = status.get("rates") {
        let last = |key: &str| {
            rates
                .get(key)
                .and_then(Value::as_array)
                .and_then(|a| a.last())
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        };
        line(format!(
            "messages: in {:.1}/s · out {:.1}/s",
            last("in_per_sec"),
            last("out_per_sec")
        ));
    }
    let no_devices = Vec::new();
    let devices = status
        .get("devices")
        .and_then(Value::as_array)
        .unwrap_or(&no_devices);
    let mut by_state = std::collections::BTreeMap::<&str, usize>::new();
    for d in devices {
        *by_state.entry(s(d, "state")).or_default() += 1;
    }
    let states: Vec<String> = by_state.iter().map(|(k, n)| format!("{k} {n}")).collect();
    line(format!(
        "devices: {}{}{}",
        devices.len(),
        if states.is_empty() { "" } else { " — " },
        states.join(", ")
    ));
    if let Some(locals) = status.get("local_clients").and_then(Value::as_array) {
        let connected = locals
            .iter()
            .filter(|c| c.get("connected") == Some(&Value::Bool(true)))
            .count();
        line(format!(
            "local clients: {} ({connected} connected)",
            locals.len()
        ));
    }
    if let Some(drops) = status.get("drops").and_then(Value::as_object) {
        let mut nonzero: Vec<(&String, u64)> = drops
            .iter()
            .filter_map(|(k, v)| v.as_u64().filter(|&n| n > 0).map(|n| (k, n)))
            .collect();
        nonzero.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = nonzero.iter().map(|(k, n)| format!("{k} {n}")).collect();
        line(format!(
            "drops: {}",
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.join(", ")
            }
        ));
    }
    if devices.is_empty() {
        return out;
    }
    let mut busiest: Vec<&Value> = devices.iter().collect();
    busiest.sort_by(|a, b| {
        let load = |d: &Value| {
            (
                u(d, "buffered_messages"),
                d.get("in_flight") == Some(&Value::Bool(true)),
            )
        };
        load(b)
            .cmp(&load(a))
            .then_with(|| s(a, "client_id").cmp(s(b, "client_id")))
    });
    line(String::new());
    line(format!(
        "busiest devices ({} of {}, by buffered messages):",
        busiest.len().min(BUSIEST),
        devices.len()
    ));
    line(format!(
        "  {:<24} {:<12} {:<9} {:<24} {:>10} {:>9} {:>9} {:>5}",
        "CLIENT ID", "STATE", "TRANSPORT", "ADDRESS", "LAST SEEN", "BUFFERED", "IN FLIGHT", "SUBS"
    ));
    for d in busiest.iter().take(BUSIEST) {
        let subs = d
            .get("subscriptions_total")
            .and_then(Value::as_u64)
            .or_else(|| {
                d.get("subscriptions")
                    .and_then(Value::as_array)
                    .map(|a| a.len() as u64)
            })
            .unwrap_or(0);
        line(format!(
            "  {:<24} {:<12} {:<9} {:<24} {:>10} {:>9} {:>9} {:>5}",
            s(d, "client_id"),
            s(d, "state"),
            s(d, "transport"),
            s(d, "address"),
            format!("{} ago", duration(u(d, "last_seen_secs_ago"))),
            u(d, "buffered_messages"),
            if d.get("in_flight") == Some(&Value::Bool(true)) {
                "yes"
            } else {
                "-"
            },
            subs
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_states_and_lists_the_busiest_first() {
        let status = serde_json::json!({
            "gateway_id": 3, "version": "9.9.9", "uptime_secs": 3700, "shutting_down": false,
            "upstream": {"state": "connected", "reconnects": 2, "outbox_messages": 5},
            "upstream_dead_letters": {"quarantined": 1, "last": []},
            "rates": {"bucket_secs": 5, "in_per_sec": [1.0, 2.5], "out_per_sec": [0.0, 4.0]},
            "drops": {"too_large": 2, "malformed": 0, "queue_full": 7},
            "local_clients": [{"client_id": "nodered", "connected": true}],
            "devices": [
                {"client_id": "a", "state": "active", "transport": "udp", "address": "10.0.0.1:1",
                 "last_seen_secs_ago": 4, "buffered_messages": 0, "in_flight": false,
                 "subscriptions": [{"filter": "x", "qos": 0}]},
                {"client_id": "b", "state": "asleep", "transport": "serial", "address": "ttyUSB0",
                 "last_seen_secs_ago": 90, "buffered_messages": 12, "in_flight": true,
                 "subscriptions": []}
            ]
        });
        let text = render(&status);
        assert!(
            text.starts_with("sngate gateway 3 · v9.9.9 · up 1h 1m\n"),
            "{text}"
        );
        assert!(
            text.contains("upstream: connected · reconnects 2 · outbox 5 · refused 1"),
            "{text}"
        );
        assert!(text.contains("messages: in 2.5/s · out 4.0/s"), "{text}");
        assert!(text.contains("devices: 2 — active 1, asleep 1"), "{text}");
        assert!(text.contains("local clients: 1 (1 connected)"), "{text}");
        assert!(text.contains("drops: queue_full 7, too_large 2"), "{text}");
        let b = text.find("\n  b ").expect("b listed");
        let a = text.find("\n  a ").expect("a listed");
        assert!(b < a, "the busiest first:\n{text}");
    }

    #[test]
    fn an_empty_gateway_is_summarised_without_a_table() {
        let text = render(&serde_json::json!({"devices": []}));
        assert!(text.contains("devices: 0\n"), "{text}");
        assert!(!text.contains("busiest"), "{text}");
    }
}
