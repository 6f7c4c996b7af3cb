//! `$SYS/broker/…` status topics, as mosquitto publishes them, so local tools
//! that watch `$SYS/#` see the gateway's health. Published retained every
//! `[broker] sys_interval_secs` to local subscribers only (never upstream,
//! and `#` does not match `$SYS` names).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::Gateway;

/// The `$SYS` publisher: when it started and how often it speaks.
#[derive(Debug, Clone)]
pub struct SysTopics {
    /// How often to publish; `None` when turned off.
    pub interval: Option<Duration>,
    started: Instant,
}

impl SysTopics {
    /// A publisher started at `now`, every `interval_secs` (0: off).
    pub fn new(interval_secs: u32, now: Instant) -> Self {
        SysTopics {
            interval: (interval_secs > 0).then(|| Duration::from_secs(u64::from(interval_secs))),
            started: now,
        }
    }

    /// The topics and payloads for the engine's state at `now`, with
    /// `connections` local MQTT connections open.
    pub fn messages(
        &self,
        gateway: &Gateway,
        now: Instant,
        connections: usize,
    ) -> Vec<(&'static str, String)> {
        let stats = gateway.stats();
        let uptime = now.saturating_duration_since(self.started).as_secs();
        vec![
            (
                "$SYS/broker/version",
                format!("sngate {}", env!("CARGO_PKG_VERSION")),
            ),
            ("$SYS/broker/uptime", format!("{uptime} seconds")),
            ("$SYS/broker/clients/connected", connections.to_string()),
            (
                "$SYS/broker/sngate/devices",
                gateway.session_count().to_string(),
            ),
            (
                "$SYS/broker/messages/received",
                (stats.publishes_in + stats.local_in).to_string(),
            ),
            (
                "$SYS/broker/messages/sent",
                (stats.publishes_out + stats.local_out).to_string(),
            ),
            (
                "$SYS/broker/sngate/upstream/sent",
                stats.upstream_out.to_string(),
            ),
            (
                "$SYS/broker/sngate/dropped",
                stats.total_drops().to_string(),
            ),
        ]
    }

    /// Publishes every status topic, retained, to local subscribers.
    pub fn publish(&self, gateway: &mut Gateway, now: Instant, connections: usize) {
        for (topic, payload) in self.messages(gateway, now, connections) {
            gateway.publish_internal(now, topic, Bytes::from(payload), true);
        }
    }
}
