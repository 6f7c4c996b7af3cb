//! What the engine and the operations page are told of a configuration:
//! [`Config::engine_config`] maps the file-level sections onto the engine's
//! [`EngineConfig`] (durations from `_secs`, the policies' engine-side
//! enums, admission from `[security]` and `[[serial]]`), and
//! [`Config::fixed_limits`] lists the limits enforced outside the engine.
//! Both are pure; the driver calls them at start and on every reload.

use std::time::Duration;

use super::{BridgeMode, Config, QueueOverflow};
use crate::core::{EngineConfig, OverflowPolicy};

impl Config {
    /// The engine's settings from the file-level configuration. Two fields
    /// are the caller's to fill: `persist` (on once the store is open) and
    /// `acl` ([`SecurityConfig::load_acl`](super::SecurityConfig::load_acl)).
    pub fn engine_config(&self) -> EngineConfig {
        let config = self;
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        EngineConfig {
            identity_binding: crate::core::identity::IdentityBinding::new(
                &config.dtls.client_id_pattern,
            ),
            gateway_id: config.gateway.gateway_id,
            max_client_id_len: config.gateway.max_client_id_len,
            max_packet_bytes: config.gateway.max_packet_bytes,
            accept_qos_minus_one: config.gateway.accept_qos_minus_one,
            accept_qos_minus_one_named: config.gateway.accept_qos_minus_one_named,
            keep_alive_default: Duration::from_secs(u64::from(
                config.gateway.keep_alive_default_secs,
            )),
            keep_alive_max: Duration::from_secs(u64::from(config.gateway.keep_alive_max_secs)),
            retry_interval: secs(config.timers.retry_interval_secs),
            max_retries: config.timers.max_retries,
            will_handshake_timeout: secs(config.timers.will_handshake_timeout_secs),
            advertise_interval: config
                .discovery
                .advertise
                .then(|| secs(config.discovery.advertise_interval_secs)),
            answer_searchgw: config.discovery.answer_searchgw,
            max_clients: config.limits.max_clients,
            session_expiry: match config.limits.session_expiry_secs {
                0 => None,
                s => Some(secs(s)),
            },
            max_topics_per_client: config.limits.max_topics_per_client,
            max_subscriptions_per_client: config.limits.max_subscriptions_per_client,
            max_queued_messages_per_client: config.limits.max_queued_messages_per_client,
            max_queued_bytes_per_client: config.limits.max_queued_bytes_per_client,
            max_queued_bytes_total: config.limits.max_queued_bytes_total,
            queue_qos0: config.limits.queue_qos0,
            sleep_buffer_qos0: config.limits.sleep_buffer_qos0,
            queue_overflow: match config.limits.queue_overflow {
                QueueOverflow::RefuseNewest => OverflowPolicy::RefuseNewest,
                QueueOverflow::DropOldest => OverflowPolicy::DropOldest,
            },
            max_messages_per_wake: config.limits.max_messages_per_wake,
            max_retained_messages: config.limits.max_retained_messages,
            per_source_packets_per_sec: config.limits.per_source_packets_per_sec,
            per_source_burst: config.limits.per_source_burst,
            predefined_topics: config
                .predefined_topics
                .iter()
                .map(|p| (p.id, p.topic.clone()))
                .collect(),
            upstream: config.upstream.is_some(),
            per_device_sessions: config
                .upstream
                .as_ref()
                .is_some_and(|u| u.bridge_mode == BridgeMode::PerDevice),
            upstream_session_wait: config
                .upstream
                .as_ref()
                .map_or(Duration::from_secs(5), |u| {
                    secs(u.per_device.connect_wait_secs.max(1))
                }),
            // Turned on by `start` once the store is open.
            persist: false,
            trace_client: config.log.trace_client.clone(),
            outbox_linger: Duration::from_millis(u64::from(config.store.linger_ms)),
            // Read from its file by `start` and `reload` (`with_acl`).
            acl: None,
            admission: config.security.admission(&config.serial),
            max_retained_bytes: config.limits.max_retained_bytes,
            max_topic_bytes_total: config.limits.max_topic_bytes_total,
            max_subscription_bytes_total: config.limits.max_subscription_bytes_total,
            per_session_packets_per_sec: config.limits.per_session_packets_per_sec,
            per_session_burst: config.limits.per_session_burst,
        }
    }

    /// The limits enforced outside the engine, which need a restart to change:
    /// the embedded broker's (when it listens) and the upstream outbox's (when
    /// there is an upstream).
    pub fn fixed_limits(&self) -> Vec<(&'static str, u64)> {
        let config = self;
        let mut limits = Vec::new();
        let b = &config.broker;
        if b.enabled() {
            limits.extend([
                ("broker.max_connections", count(b.max_connections)),
                ("broker.max_packet_bytes", count(b.max_packet_bytes)),
                (
                    "broker.max_inflight_messages",
                    u64::from(b.max_inflight_messages),
                ),
                ("broker.max_queued_messages", count(b.max_queued_messages)),
                ("broker.max_queued_bytes", count(b.max_queued_bytes)),
                (
                    "broker.max_queued_bytes_total",
                    count(b.max_queued_bytes_total),
                ),
            ]);
        }
        if let Some(u) = &config.upstream {
            limits.extend([
                (
                    "upstream.max_pending_messages",
                    count(u.max_pending_messages),
                ),
                ("upstream.max_pending_bytes", count(u.max_pending_bytes)),
            ]);
        }
        limits
    }
}

/// `n` as a figure on the operations page.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_config_carries_the_sleep_and_queue_settings() -> Result<(), crate::config::ConfigError>
    {
        let config = Config::from_toml_str(
            "[limits]\nqueue_overflow = \"drop-oldest\"\nsleep_buffer_qos0 = false\nmax_messages_per_wake = 5\n\
             [timers]\nretry_interval_secs = 7\nmax_retries = 2\n",
            std::path::Path::new("test.toml"),
        )?;
        let engine = config.engine_config();
        assert_eq!(engine.queue_overflow, OverflowPolicy::DropOldest);
        assert!(!engine.sleep_buffer_qos0);
        assert_eq!(engine.max_messages_per_wake, 5);
        assert_eq!(engine.retry_interval, Duration::from_secs(7));
        assert_eq!(engine.max_retries, 2);
        assert!(!engine.upstream);
        assert_eq!(
            engine.advertise_interval, None,
            "advertising is off by default"
        );
        Ok(())
    }

    #[test]
    fn the_default_config_gives_the_engine_defaults() {
        // Two sets of defaults (file-level and engine-level) must not drift.
        assert_eq!(Config::default().engine_config(), EngineConfig::default());
    }

    #[test]
    fn an_unknown_overflow_policy_is_a_config_error() {
        let err = Config::from_toml_str(
            "[limits]\nqueue_overflow = \"drop-random\"\n",
            std::path::Path::new("test.toml"),
        );
        assert!(err.is_err_and(|e| e.to_string().contains("drop-random")));
    }
}
