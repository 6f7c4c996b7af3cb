//! The engine's memory bounds and index consistency, checked as a whole:
//! every limit of `EngineConfig` that bounds what the engine holds, and the
//! agreement of its indexes (sessions, client ids, peers, timers). Used by the
//! fuzz target and the stable chaos harness (`core::chaos`) after every input;
//! cheap enough for tests, too slow for every packet in production.

use super::gateway::{Gateway, RATE_LIMIT_SOURCES};

impl Gateway {
    /// Checks that what the engine holds is within its configured bounds and
    /// that its indexes agree; the first violation found, described.
    pub fn check_invariants(&self) -> Result<(), String> {
        let cfg = &self.cfg;
        if self.sessions.len() > cfg.max_clients {
            return Err(format!(
                "{} sessions over max_clients {}",
                self.sessions.len(),
                cfg.max_clients
            ));
        }
        if self.by_client.len() != self.sessions.len() {
            return Err(format!(
                "{} client ids for {} sessions",
                self.by_client.len(),
                self.sessions.len()
            ));
        }
        for (client, sid) in &self.by_client {
            match self.sessions.get(sid) {
                Some(s) if s.client_id == *client => {}
                _ => {
                    return Err(format!(
                        "client id {client} points to no session of its own"
                    ));
                }
            }
        }
        for (peer, sid) in &self.by_peer {
            if !self.sessions.contains_key(sid) {
                return Err(format!("peer {peer} points to a removed session"));
            }
        }
        if self.by_peer.len() > self.sessions.len() {
            return Err(format!(
                "{} peers for {} sessions",
                self.by_peer.len(),
                self.sessions.len()
            ));
        }
        if self.timers.len() > self.sessions.len() {
            return Err(format!(
                "{} timer entries for {} sessions",
                self.timers.len(),
                self.sessions.len()
            ));
        }
        let mut queued_bytes = 0usize;
        for s in self.sessions.values() {
            let bytes: usize = s.queue.iter().map(|d| d.payload.len()).sum();
            if bytes != s.queued_bytes {
                return Err(format!(
                    "{}: queue holds {bytes} bytes, counted {}",
                    s.client_id, s.queued_bytes
                ));
            }
            if s.queue.len() > cfg.max_queued_messages_per_client {
                return Err(format!(
                    "{}: {} queued over max_queued_messages_per_client",
                    s.client_id,
                    s.queue.len()
                ));
            }
            if s.queued_bytes > cfg.max_queued_bytes_per_client {
                return Err(format!(
                    "{}: {} bytes queued over max_queued_bytes_per_client",
                    s.client_id, s.queued_bytes
                ));
            }
            // A subscription by pre-defined id is also in `subscriptions`
            // (by name); the id set only marks how to deliver.
            if s.subscriptions.len() > cfg.max_subscriptions_per_client {
                return Err(format!("{}: subscriptions over the limit", s.client_id));
            }
            if s.predefined_subscriptions.len() > self.predefined_by_id.len() {
                return Err(format!(
                    "{}: unknown pre-defined subscriptions",
                    s.client_id
                ));
            }
            if s.topics.len() > cfg.max_topics_per_client {
                return Err(format!("{}: topic ids over the limit", s.client_id));
            }
            if s.inbound_qos2.len() > super::session::MAX_INBOUND_QOS2 {
                return Err(format!(
                    "{}: {} inbound QoS 2 ids remembered",
                    s.client_id,
                    s.inbound_qos2.len()
                ));
            }
            queued_bytes += s.queued_bytes;
        }
        for s in self.locals.sessions.values() {
            let bytes: usize = s
                .queue
                .iter()
                .chain(s.sent.iter())
                .map(|d| d.payload.len())
                .sum();
            if bytes != s.queued_bytes {
                return Err(format!(
                    "local {}: holds {bytes} bytes, counted {}",
                    s.client_id, s.queued_bytes
                ));
            }
            queued_bytes += s.queued_bytes;
        }
        if queued_bytes > self.queued_bytes_total {
            return Err(format!(
                "sessions queue {queued_bytes} bytes, total counted {}",
                self.queued_bytes_total
            ));
        }
        if self.queued_bytes_total > cfg.max_queued_bytes_total {
            return Err(format!(
                "{} bytes queued over max_queued_bytes_total {}",
                self.queued_bytes_total, cfg.max_queued_bytes_total
            ));
        }
        if self.retained.bytes() > cfg.max_retained_bytes {
            return Err(format!(
                "{} retained bytes over max_retained_bytes",
                self.retained.bytes()
            ));
        }
        let topic_bytes: usize = self.sessions.values().map(|s| s.topics.bytes()).sum();
        if topic_bytes != self.topic_bytes.get() {
            return Err(format!(
                "topic tables hold {topic_bytes} bytes of names, counted {}",
                self.topic_bytes.get()
            ));
        }
        if topic_bytes > cfg.max_topic_bytes_total {
            return Err(format!(
                "{topic_bytes} bytes of topic names over max_topic_bytes_total"
            ));
        }
        if self.subscriptions.filter_bytes() > cfg.max_subscription_bytes_total {
            return Err(format!(
                "{} bytes of filters over max_subscription_bytes_total",
                self.subscriptions.filter_bytes()
            ));
        }
        if self.retained.len() > cfg.max_retained_messages {
            return Err(format!(
                "{} retained over max_retained_messages",
                self.retained.len()
            ));
        }
        if self.rate_limited_sources() > RATE_LIMIT_SOURCES {
            return Err("rate limiter table over its bound".into());
        }
        Ok(())
    }
}
