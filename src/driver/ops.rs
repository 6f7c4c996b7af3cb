//! The driver's side of operations: the counts only it sees (UDP datagrams
//! per listener) and its answers to [`Query`]s from the HTTP endpoint (or any
//! holder of a `QueryHandle`), taken between two engine inputs on the
//! driver task — the engine needs no lock, and nothing is computed while
//! nobody asks.
//!
//! A component with figures of its own adds them here: a section pushed in
//! [`Driver::metrics`] (see `ops::figures`) and, if it has something to show
//! in `/status`, a key inserted in [`Driver::status`]'s `extra`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::Driver;
use crate::broker::{Broker, BrokerStats};
use crate::core::{EngineConfig, LimitHit, LinkAddr, LocalClientInfo, Peer};
use crate::ops::figures::{
    BrokerFigures, EngineFigures, LimitFigures, ProcessFigures, SerialFigures, StoreFigures,
    UdpCounts, UdpFigures, UpstreamFigures, UpstreamState,
};
use crate::ops::{Health, MetricsSnapshot, Query, StatusSnapshot};

/// What the driver keeps for operations.
pub(super) struct OpsState {
    /// When the gateway started.
    pub(super) started: tokio::time::Instant,
    /// Per UDP listener, by index.
    pub(super) udp: Vec<UdpCounts>,
    /// Whether an `[upstream]` is configured (a missing bridge then means
    /// it stopped).
    pub(super) upstream_configured: bool,
    /// The embedded broker's counters, when one was started (kept if it
    /// stops, so its figures stay on the page).
    pub(super) broker: Option<Arc<BrokerStats>>,
    /// The limits outside the engine, fixed at start
    /// ([`Config::fixed_limits`](crate::config::Config::fixed_limits)).
    pub(super) fixed_limits: Vec<(&'static str, u64)>,
    /// Message rates over the last minutes (the dashboard's chart).
    pub(super) rates: crate::ops::rates::Rates,
}

/// The engine's messages in (from devices and local clients) and out (to
/// devices, local clients and the bridge), for the rates.
pub(super) fn message_totals(stats: &crate::core::Stats) -> (u64, u64) {
    (
        stats.publishes_in + stats.local_in,
        stats.publishes_out + stats.local_out + stats.upstream_out,
    )
}

impl OpsState {
    pub(super) fn new(
        listeners: usize,
        upstream_configured: bool,
        broker: Option<Arc<BrokerStats>>,
        fixed_limits: Vec<(&'static str, u64)>,
    ) -> Self {
        OpsState {
            started: tokio::time::Instant::now(),
            udp: vec![UdpCounts::default(); listeners],
            upstream_configured,
            broker,
            fixed_limits,
            rates: crate::ops::rates::Rates::new(tokio::time::Instant::now().into_std(), 0, 0),
        }
    }

    /// Counts a datagram received from `peer` (UDP ones only).
    pub(super) fn received(&mut self, peer: &Peer) {
        if let LinkAddr::Udp { listener, .. } = peer.link
            && let Some(c) = self.udp.get_mut(usize::from(listener))
        {
            c.received += 1;
        }
    }

    /// Counts a datagram sent (or refused by the OS) on `listener`.
    pub(super) fn sent(&mut self, listener: u16, ok: bool) {
        if let Some(c) = self.udp.get_mut(usize::from(listener)) {
            if ok {
                c.sent += 1;
            } else {
                c.send_errors += 1;
            }
        }
    }
}

impl Driver {
    /// Answers one query at once (a receiver that gave up is ignored).
    pub(super) fn answer(&mut self, query: Query) {
        match query {
            Query::Health(reply) => {
                let _ = reply.send(Health {
                    shutting_down: self.gateway.is_draining(),
                });
            }
            Query::Metrics(reply) => {
                let _ = reply.send(self.metrics());
            }
            Query::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn upstream_state(&self) -> UpstreamState {
        match &self.bridge {
            _ if !self.ops.upstream_configured => UpstreamState::None,
            None => UpstreamState::Stopped,
            Some(b) if b.stats().connected => UpstreamState::Connected,
            Some(_) => UpstreamState::Disconnected,
        }
    }

    /// Every section of `/metrics`.
    fn metrics(&self) -> MetricsSnapshot {
        let mut m = MetricsSnapshot::new();
        m.push(ProcessFigures {
            gateway_id: self.gateway.config().gateway_id,
            uptime: self.ops.started.elapsed(),
            shutting_down: self.gateway.is_draining(),
        });
        m.push(EngineFigures {
            stats: self.gateway.stats().clone(),
            gauges: self.gateway.gauges(),
        });
        if self.ops.upstream_configured {
            m.push(UpstreamFigures {
                state: self.upstream_state(),
                stats: self.bridge.as_ref().map(|b| b.stats()).unwrap_or_default(),
            });
        }
        m.push(crate::transport::dtls::figures::DtlsFigures {
            listeners: self
                .dtls_links
                .iter()
                .map(|l| (l.local_addr, l.counts()))
                .collect(),
        });
        m.push(UdpFigures {
            listeners: self
                .listeners
                .iter()
                .zip(&self.ops.udp)
                .map(|(l, c)| (l.local_addr, *c))
                .collect(),
        });
        if !self.serial_links.is_empty() {
            m.push(SerialFigures {
                ports: self
                    .serial_links
                    .iter()
                    .map(|l| (l.device.clone(), l.stats.snapshot()))
                    .collect(),
            });
        }
        if let Some(stats) = &self.ops.broker {
            m.push(self.broker_figures(stats));
        }
        m.push(StoreFigures {
            enabled: self.store.is_some(),
            counters: self.store_stats,
        });
        m.push(self.limit_figures());
        m
    }

    /// The limits in force: the engine's as it runs now (a reload changes
    /// them), the rest as started; refusals at each.
    fn limit_figures(&self) -> LimitFigures {
        let mut maxima = engine_limits(self.gateway.config());
        maxima.extend(self.ops.fixed_limits.iter().copied());
        let stats = self.gateway.stats();
        let mut hits: Vec<(&'static str, u64)> = LimitHit::ALL
            .iter()
            .map(|&l| (l.key(), stats.limit_hits(l)))
            .collect();
        if let Some(broker) = &self.ops.broker {
            let c = broker.snapshot();
            hits.push(("broker.max_connections", c.refused_max_connections));
            hits.push(("broker.max_packet_bytes", c.packets_too_large));
        }
        LimitFigures { maxima, hits }
    }

    fn broker_figures(&self, stats: &BrokerStats) -> BrokerFigures {
        let engine = self.gateway.stats();
        let clients = self.gateway.local_clients();
        let connected = clients.iter().filter(|c| c.connected).count();
        BrokerFigures {
            listening: self.broker.is_some(),
            connections: self.broker.as_ref().map_or(0, Broker::connections),
            counts: stats.snapshot(),
            messages_in: engine.local_in,
            messages_out: engine.local_out,
            sessions_connected: connected,
            sessions_away: clients.len() - connected,
            queued_messages: clients.iter().map(|c| c.queued).sum(),
        }
    }

    /// `/status`: the gateway, its upstream, every device and every local
    /// MQTT client.
    fn status(&self) -> StatusSnapshot {
        let now = tokio::time::Instant::now();
        let bridge = self.bridge.as_ref().map(|b| b.stats()).unwrap_or_default();
        StatusSnapshot {
            gateway_id: self.gateway.config().gateway_id,
            uptime: now.duration_since(self.ops.started),
            taken_at: SystemTime::now(),
            shutting_down: self.gateway.is_draining(),
            upstream: self.upstream_state(),
            upstream_reconnects: bridge.reconnects,
            upstream_outbox_messages: bridge.pending_messages,
            devices: self.gateway.devices(now.into_std()),
            serial_ports: self.serial_links.iter().map(|l| l.device.clone()).collect(),
            extra: BTreeMap::from([
                (
                    "local_clients".to_owned(),
                    local_clients_json(&self.gateway.local_clients()),
                ),
                (
                    "upstream_dead_letters".to_owned(),
                    crate::bridge::dead_letters_json(bridge.quarantined, &bridge.dead_letters),
                ),
                ("rates".to_owned(), self.ops.rates.to_json(now.into_std())),
                ("drops".to_owned(), drops_json(self.gateway.stats())),
            ]),
        }
    }
}

/// Drops by reason (every reason, zeros included), by its metrics label.
fn drops_json(stats: &crate::core::Stats) -> serde_json::Value {
    crate::core::DropReason::ALL
        .into_iter()
        .map(|r| {
            (
                r.label().to_owned(),
                serde_json::Value::from(stats.drops(r)),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The engine's limits, by configuration key.
fn engine_limits(cfg: &EngineConfig) -> Vec<(&'static str, u64)> {
    vec![
        ("gateway.max_packet_bytes", count(cfg.max_packet_bytes)),
        ("gateway.max_client_id_len", count(cfg.max_client_id_len)),
        ("limits.max_clients", count(cfg.max_clients)),
        (
            "limits.max_topics_per_client",
            count(cfg.max_topics_per_client),
        ),
        (
            "limits.max_subscriptions_per_client",
            count(cfg.max_subscriptions_per_client),
        ),
        (
            "limits.max_queued_messages_per_client",
            count(cfg.max_queued_messages_per_client),
        ),
        (
            "limits.max_queued_bytes_per_client",
            count(cfg.max_queued_bytes_per_client),
        ),
        (
            "limits.max_queued_bytes_total",
            count(cfg.max_queued_bytes_total),
        ),
        (
            "limits.max_messages_per_wake",
            count(cfg.max_messages_per_wake),
        ),
        (
            "limits.max_retained_messages",
            count(cfg.max_retained_messages),
        ),
        (
            "limits.per_source_packets_per_sec",
            u64::from(cfg.per_source_packets_per_sec),
        ),
        ("limits.per_source_burst", u64::from(cfg.per_source_burst)),
        ("limits.max_retained_bytes", count(cfg.max_retained_bytes)),
        (
            "limits.max_topic_bytes_total",
            count(cfg.max_topic_bytes_total),
        ),
        (
            "limits.max_subscription_bytes_total",
            count(cfg.max_subscription_bytes_total),
        ),
        (
            "limits.per_session_packets_per_sec",
            u64::from(cfg.per_session_packets_per_sec),
        ),
        ("limits.per_session_burst", u64::from(cfg.per_session_burst)),
    ]
}

/// `/status`'s `local_clients`: every local MQTT session (connected, or
/// persistent and away), by client id.
fn local_clients_json(clients: &[LocalClientInfo]) -> serde_json::Value {
    clients
        .iter()
        .map(|c| {
            let (listed, total) = crate::ops::status::listed_subscriptions(&c.subscriptions);
            let mut client = serde_json::json!({
                "client_id": c.client_id,
                "connected": c.connected,
                "clean_session": c.clean_session,
                "subscriptions": listed,
                "queued": c.queued,
            });
            if let (Some(total), Some(fields)) = (total, client.as_object_mut()) {
                fields.insert("subscriptions_total".into(), total.into());
            }
            client
        })
        .collect()
}
