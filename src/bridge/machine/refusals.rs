//! What the broker refuses, isolated per message: the limits its CONNACK
//! announced are checked before a message is handed to rumqttc, a refusal
//! by reason code is recorded, and a broker that refuses by closing the
//! connection is answered with suspects sent alone and, when it closes
//! again on one, a quarantine (see [`Outbox::isolate_suspects`]). Every
//! message given up on goes to the dead-letter record
//! ([`crate::bridge::DeadLetter`]) and the outbox goes on with the next.
//!
//! [`Outbox::isolate_suspects`]: crate::bridge::outbox::Outbox::isolate_suspects

use std::sync::Arc;

use super::{Machine, Role};
use crate::bridge::DeadLetter;
use crate::bridge::bump;
use crate::bridge::outbox::OutMessage;

/// The length of a variable byte integer encoding `n`.
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The size of the PUBLISH packet carrying `msg`, in bytes, as rumqttc
/// encodes it (`v5`: MQTT 5, with the origin user property if any).
pub(in crate::bridge) fn publish_size(msg: &OutMessage, v5: bool, origin: Option<&str>) -> usize {
    let mut rest = 2 + msg.topic.len() + msg.payload.len();
    if msg.qos > 0 {
        rest += 2;
    }
    if v5 {
        let props = origin.map_or(0, |o| {
            1 + 2 + crate::bridge::link::ORIGIN_PROPERTY.len() + 2 + o.len()
        });
        rest += varint_len(props) + props;
    }
    1 + varint_len(rest) + rest
}

impl Machine {
    /// The broker's limits for the engine (`None` with bridge rules: a
    /// message's remote topic, and whether it goes up at all, are the
    /// bridge's business then).
    pub(super) fn engine_limits(&self) -> Option<crate::core::UpstreamLimits> {
        if !self.common.rules.is_transparent() {
            return None;
        }
        let probe = OutMessage {
            topic: String::new(),
            payload: bytes::Bytes::new(),
            qos: 1,
            retain: false,
            store_id: None,
            ticket: None,
        };
        // The empty message's size less its fixed header (two bytes).
        let packet_overhead = self.publish_size(&probe).saturating_sub(2);
        Some(crate::core::UpstreamLimits {
            max_packet_size: self.max_packet_size(),
            packet_overhead,
            max_qos: self.limits.max_qos,
            retain_available: self.limits.retain_available,
        })
    }

    /// The size of `msg`'s PUBLISH packet on this session.
    fn publish_size(&self, msg: &OutMessage) -> usize {
        let v5 = self.common.cfg.protocol_version == 5;
        let origin = self
            .common
            .origin
            .as_deref()
            .filter(|_| self.common.per_device);
        publish_size(msg, v5, origin)
    }

    fn max_packet_size(&self) -> usize {
        let own = crate::bridge::link::MAX_PACKET_BYTES;
        self.limits
            .max_packet_size
            .map_or(own, |m| usize::try_from(m).unwrap_or(own).min(own))
    }

    /// Why the broker would refuse `filter` by what its CONNACK announced
    /// (Wildcard / Shared Subscription Available), if it would.
    pub(super) fn filter_unsupported(&self, filter: &str) -> Option<&'static str> {
        if !self.limits.shared_available && filter.starts_with("$share/") {
            Some("the broker does not support shared subscriptions")
        } else if !self.limits.wildcards_available && filter.contains(['+', '#']) {
            Some("the broker does not support wildcard subscriptions")
        } else {
            None
        }
    }

    /// Why the broker would refuse `msg`, by what its CONNACK announced
    /// (or what MQTT itself forbids), before it is sent; `None`: send it.
    pub(super) fn refusal_before_sending(&self, msg: &OutMessage) -> Option<String> {
        let size = self.publish_size(msg);
        let max = self.max_packet_size();
        if size > max {
            return Some(format!(
                "packet of {size} bytes exceeds the broker's maximum packet size ({max})"
            ));
        }
        if msg.qos > self.limits.max_qos {
            return Some(format!(
                "QoS {} exceeds the broker's maximum QoS ({})",
                msg.qos, self.limits.max_qos
            ));
        }
        if msg.retain && !self.limits.retain_available {
            return Some("the broker does not support retained messages".into());
        }
        if !topic_name_valid(&msg.topic) {
            return Some("not a valid MQTT topic name".into());
        }
        None
    }

    /// Gives up on `msg`: counted, recorded as a dead letter, logged (rate
    /// limited). Its durable id and ticket were settled by the outbox.
    pub(super) fn quarantine(&mut self, msg: &OutMessage, reason: String) {
        let c = Arc::clone(&self.common.counters);
        bump(&c.quarantined, 1);
        let device = match &self.role {
            Role::Shared => None,
            Role::Device(d) => Some(d.client_id().to_owned()),
        };
        let letter = DeadLetter {
            topic: msg.topic.clone(),
            size: msg.topic.len() + msg.payload.len(),
            qos: msg.qos,
            reason,
            device,
            at_unix_secs: 0,
        };
        if let Ok(mut d) = c.dead_letters.lock() {
            d.record(self.now, letter.clone());
        }
        // For the durable record (the driver stamps the time).
        self.events.push(crate::bridge::TaskEvent::Public(
            crate::bridge::BridgeEvent::Quarantined(letter),
        ));
        self.dirty = true;
    }

    /// What became of a filter the broker was asked to subscribe: the
    /// engine is told (a device's SUBACK may wait for it); a refusal is
    /// counted and logged (rate-limited).
    pub(super) fn filter_outcome(&mut self, outcome: super::subscriptions::Outcome) {
        let c = Arc::clone(&self.common.counters);
        let client_id = match &self.role {
            Role::Shared => None,
            Role::Device(d) => Some(d.client_id_arc()),
        };
        if !outcome.accepted {
            bump(&c.filters_refused, 1);
            if let Ok(mut d) = c.dead_letters.lock() {
                d.filter_refused(
                    self.now,
                    &outcome.filter,
                    outcome.reason,
                    client_id.as_deref(),
                );
            }
        }
        self.events.push(crate::bridge::TaskEvent::Public(
            crate::bridge::BridgeEvent::Subscribed {
                client_id,
                filter: outcome.filter,
                accepted: outcome.accepted,
            },
        ));
        self.dirty = true;
    }

    /// A subscription that sends no SUBSCRIBE now (not connected: offline
    /// operation; or already held): the engine need not wait for it.
    pub(super) fn answer_at_once(&mut self, filter: String) {
        if !self.connected {
            tracing::debug!(session = %self.name(), %filter, "upstream not connected: subscription answered at once, sent at the next connection");
        }
        self.filter_outcome(super::subscriptions::Outcome {
            filter,
            accepted: true,
            reason: "",
        });
    }

    /// Records what the broker refused by reason code since the last call.
    pub(super) fn record_refused(&mut self) {
        for (msg, code) in self.outbox.take_refused() {
            self.quarantine(
                &msg,
                format!("refused by the broker (reason code {code:#04x})"),
            );
        }
    }

    /// The connection died after the broker accepted it: suspects are
    /// marked, and a suspect it died on again is quarantined.
    pub(super) fn isolate_suspects(&mut self) {
        let (culprits, suspects) = self.outbox.isolate_suspects();
        bump(&self.common.counters.resent, suspects as u64);
        for msg in culprits {
            self.quarantine(
                &msg,
                "the broker closed the connection on it twice (sent alone the second time)".into(),
            );
        }
    }
}

/// What MQTT forbids in a topic name (a broker closes the connection on
/// it): empty, wildcards, NUL, or longer than 65,535 bytes.
pub(in crate::bridge) fn topic_name_valid(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= usize::from(u16::MAX) && !topic.contains(['+', '#', '\0'])
}
