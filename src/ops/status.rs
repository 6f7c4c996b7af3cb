//! What `/status` shows: a [`StatusSnapshot`] taken on the driver task (the
//! engine's device views, ages relative to the driver's `now`, plus the
//! wall-clock time of that `now`), turned into JSON on the HTTP task. Wall
//! times (RFC 3339, UTC) are computed here, in the shell; the engine only
//! knows durations.
//!
//! Its size is bounded: at most [`MAX_LISTED_SUBSCRIPTIONS`] subscriptions
//! are listed per client (the first by filter, with `subscriptions_total`
//! saying how many it holds when there are more), and every listed filter
//! counts against `limits.max_subscription_bytes_total`; the number of
//! clients against `limits.max_clients`.
//!
//! Another component adds its own part with one line in the driver's
//! `status()` (`src/driver/ops.rs`): `status.extra.insert("broker".into(),
//! serde_json::json!({ … }))`; it appears as a top-level key.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::figures::UpstreamState;
use crate::core::{DeviceView, LinkAddr, Peer};

/// Most subscriptions `/status` lists per client; the rest is counted
/// (`subscriptions_total`), not listed.
pub const MAX_LISTED_SUBSCRIPTIONS: usize = 32;

/// The first [`MAX_LISTED_SUBSCRIPTIONS`] of `subscriptions` as JSON, and
/// their total when some were left out.
pub fn listed_subscriptions(
    subscriptions: &[(String, u8)],
) -> (Vec<serde_json::Value>, Option<usize>) {
    let listed = subscriptions
        .iter()
        .take(MAX_LISTED_SUBSCRIPTIONS)
        .map(|(filter, qos)| serde_json::json!({ "filter": filter, "qos": qos }))
        .collect();
    let total = (subscriptions.len() > MAX_LISTED_SUBSCRIPTIONS).then_some(subscriptions.len());
    (listed, total)
}

/// Everything `/status` shows, as copied from the driver task.
#[derive(Debug, Clone)]
pub struct StatusSnapshot {
    /// The gateway id in force.
    pub gateway_id: u8,
    /// Time since start.
    pub uptime: Duration,
    /// The wall-clock time at which the snapshot was taken.
    pub taken_at: SystemTime,
    /// The shutdown drain is under way.
    pub shutting_down: bool,
    /// The upstream bridge's state.
    pub upstream: UpstreamState,
    /// Reconnections to the upstream broker.
    pub upstream_reconnects: u64,
    /// Messages in the bridge's outbox.
    pub upstream_outbox_messages: u64,
    /// Every device (ages relative to `taken_at`).
    pub devices: Vec<DeviceView>,
    /// Serial device paths by port index, for addresses.
    pub serial_ports: Vec<String>,
    /// Other components' parts, each a top-level key.
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Status<'a> {
    gateway_id: u8,
    version: &'static str,
    now: String,
    started_at: String,
    uptime_secs: u64,
    shutting_down: bool,
    upstream: Upstream,
    devices: Vec<Device<'a>>,
    #[serde(flatten)]
    extra: &'a BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Upstream {
    state: &'static str,
    reconnects: u64,
    outbox_messages: u64,
}

#[derive(Serialize)]
struct Device<'a> {
    client_id: &'a str,
    /// The MQTT-SN version it speaks (every session is v1.2 today).
    protocol_version: &'static str,
    state: &'static str,
    transport: &'static str,
    address: Option<String>,
    last_seen: String,
    last_seen_secs_ago: u64,
    keep_alive_secs: u64,
    clean_session: bool,
    subscriptions: Vec<Subscription<'a>>,
    /// How many it holds, when more than are listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_total: Option<usize>,
    buffered_messages: usize,
    buffered_bytes: usize,
    in_flight: bool,
}

#[derive(Serialize)]
struct Subscription<'a> {
    filter: &'a str,
    qos: u8,
}

/// `time` as RFC 3339 in UTC, to the second (times before 1970 as 1970).
pub fn rfc3339(time: SystemTime) -> String {
    let time = time.max(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(time).to_string()
}

impl StatusSnapshot {
    /// The JSON document.
    pub fn to_json(&self) -> String {
        let started = self
            .taken_at
            .checked_sub(self.uptime)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let devices = self
            .devices
            .iter()
            .map(|d| Device {
                client_id: &d.client_id,
                protocol_version: d.protocol_version,
                state: d.state,
                transport: d.transport.label(),
                address: d.peer.as_ref().map(|p| self.address(p)),
                last_seen: rfc3339(
                    self.taken_at
                        .checked_sub(d.last_seen_ago)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                ),
                last_seen_secs_ago: d.last_seen_ago.as_secs(),
                keep_alive_secs: d.keep_alive.as_secs(),
                clean_session: d.clean_session,
                subscriptions: d
                    .subscriptions
                    .iter()
                    .take(MAX_LISTED_SUBSCRIPTIONS)
                    .map(|(filter, qos)| Subscription { filter, qos: *qos })
                    .collect(),
                subscriptions_total: (d.subscriptions.len() > MAX_LISTED_SUBSCRIPTIONS)
                    .then_some(d.subscriptions.len()),
                buffered_messages: d.buffered_messages,
                buffered_bytes: d.buffered_bytes,
                in_flight: d.in_flight,
            })
            .collect();
        let status = Status {
            gateway_id: self.gateway_id,
            version: env!("CARGO_PKG_VERSION"),
            now: rfc3339(self.taken_at),
            started_at: rfc3339(started),
            uptime_secs: self.uptime.as_secs(),
            shutting_down: self.shutting_down,
            upstream: Upstream {
                state: self.upstream.label(),
                reconnects: self.upstream_reconnects,
                outbox_messages: self.upstream_outbox_messages,
            },
            devices,
            extra: &self.extra,
        };
        // Plain structs of strings and numbers: serialising cannot fail.
        serde_json::to_string_pretty(&status).unwrap_or_default()
    }

    /// Where a device is: a UDP address as `ip:port`; on a serial link the
    /// port's device, with the radio address (XBee) in hex; a forwarded
    /// device with `/node:` and its wireless node id in hex.
    fn address(&self, peer: &Peer) -> String {
        let port = |i: u16| {
            self.serial_ports
                .get(usize::from(i))
                .cloned()
                .unwrap_or_else(|| format!("serial{i}"))
        };
        let mut s = match &peer.link {
            LinkAddr::Udp { addr, .. } => addr.to_string(),
            LinkAddr::Radio { port: i, addr } => format!("{}/{addr:016x}", port(*i)),
            LinkAddr::Serial { port: i } => port(*i),
        };
        if let Some(node) = &peer.node {
            s.push_str("/node:");
            for b in node.iter() {
                s.push_str(&format!("{b:02x}"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Transport;

    #[test]
    fn wall_times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_document_has_devices_with_wall_times_and_addresses() {
        let taken_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let radio = Peer {
            link: LinkAddr::Radio {
                port: 0,
                addr: 0x0013_a200_4000_0001,
            },
            node: None,
        };
        let device = DeviceView {
            protocol_version: "1.2",
            client_id: "dev\"1".into(),
            state: "asleep",
            transport: Transport::Serial,
            peer: Some(radio),
            last_seen_ago: Duration::from_secs(90),
            keep_alive: Duration::from_secs(60),
            clean_session: false,
            subscriptions: vec![("a/#".into(), 1)],
            buffered_messages: 2,
            buffered_bytes: 10,
            in_flight: false,
        };
        let mut extra = BTreeMap::new();
        extra.insert("broker".to_owned(), serde_json::json!({ "clients": 3 }));
        let snap = StatusSnapshot {
            gateway_id: 7,
            uptime: Duration::from_secs(3600),
            taken_at,
            shutting_down: false,
            upstream: UpstreamState::None,
            upstream_reconnects: 0,
            upstream_outbox_messages: 0,
            devices: vec![device],
            serial_ports: vec!["/dev/ttyUSB0".into()],
            extra,
        };
        let v: serde_json::Value = serde_json::from_str(&snap.to_json()).expect("valid JSON");
        assert_eq!(v["gateway_id"], 7);
        assert_eq!(v["now"], "2001-09-09T01:46:40Z");
        assert_eq!(v["started_at"], "2001-09-09T00:46:40Z");
        assert_eq!(v["upstream"]["state"], "none");
        assert_eq!(v["broker"]["clients"], 3);
        let d = &v["devices"][0];
        assert_eq!(d["client_id"], "dev\"1");
        assert_eq!(d["address"], "/dev/ttyUSB0/0013a20040000001");
        assert_eq!(d["last_seen"], "2001-09-09T01:45:10Z");
        assert_eq!(d["last_seen_secs_ago"], 90);
        assert_eq!(d["subscriptions"][0]["filter"], "a/#");
        assert_eq!(d["subscriptions"][0]["qos"], 1);
        assert!(d.get("subscriptions_total").is_none(), "all are listed");
    }

    #[test]
    fn a_client_with_many_subscriptions_lists_a_bounded_number() {
        let many: Vec<(String, u8)> = (0..100).map(|i| (format!("f/{i:03}"), 1)).collect();
        let (listed, total) = listed_subscriptions(&many);
        assert_eq!(listed.len(), MAX_LISTED_SUBSCRIPTIONS);
        assert_eq!(listed[0]["filter"], "f/000");
        assert_eq!(total, Some(100));
        let (listed, total) = listed_subscriptions(&many[..3]);
        assert_eq!((listed.len(), total), (3, None));
        let device = DeviceView {
            protocol_version: "1.2",
            client_id: "d".into(),
            state: "active",
            transport: Transport::Udp,
            peer: None,
            last_seen_ago: Duration::ZERO,
            keep_alive: Duration::from_secs(60),
            clean_session: true,
            subscriptions: many,
            buffered_messages: 0,
            buffered_bytes: 0,
            in_flight: false,
        };
        let snap = StatusSnapshot {
            gateway_id: 1,
            uptime: Duration::ZERO,
            taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
            shutting_down: false,
            upstream: UpstreamState::None,
            upstream_reconnects: 0,
            upstream_outbox_messages: 0,
            devices: vec![device],
            serial_ports: Vec::new(),
            extra: BTreeMap::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&snap.to_json()).expect("valid JSON");
        let d = &v["devices"][0];
        assert_eq!(
            d["subscriptions"].as_array().map(Vec::len),
            Some(MAX_LISTED_SUBSCRIPTIONS)
        );
        assert_eq!(d["subscriptions_total"], 100);
    }
}
