//! Messages from the gateway to a device: the per-client queue (bounded per
//! client and in total), the pump that keeps one exchange in flight at a time
//! (trap T-6), REGISTER before the first PUBLISH on a topic the client has no id
//! for, waiting for REGACK (traps T-2/T-4), retransmission after T_RETRY up to
//! N_RETRY, and the acknowledgements: REGACK, PUBACK (with the one-time
//! re-REGISTER on "invalid topic id", trap T-3), PUBREC, PUBCOMP.

use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use crate::engine_config::OverflowPolicy;
use crate::gateway::Gateway;
use crate::session::{ClientState, Delivery, Inflight, InflightKind, SessionId};
use crate::stats::DropReason;
use sngate_wire::v1::{self as proto, Packet, QoS, ReturnCode, TopicRef};

/// Drops the oldest of `queue` while `full(messages, held, total)` says
/// it has no room (`queue_overflow = "drop-oldest"`), keeping the queue's
/// `held` bytes and every queue's `total` in step; returns how many went.
pub(crate) fn drop_oldest_while<T>(
    queue: &mut std::collections::VecDeque<T>,
    held: &mut usize,
    total: &mut usize,
    size: impl Fn(&T) -> usize,
    full: impl Fn(usize, usize, usize) -> bool,
) -> usize {
    let mut dropped = 0;
    while full(queue.len(), *held, *total) {
        let Some(oldest) = queue.pop_front() else {
            break;
        };
        *held = held.saturating_sub(size(&oldest));
        *total = total.saturating_sub(size(&oldest));
        dropped += 1;
    }
    dropped
}

impl Gateway {
    /// Queues a message for a session, then delivers if the client can receive.
    pub(crate) fn enqueue(&mut self, now: Instant, sid: SessionId, mut delivery: Delivery) {
        if delivery.store_id.is_none() {
            delivery.store_id = self.queue_id(delivery.qos);
        }
        self.touch(sid);
        let cfg = &self.cfg;
        let Some(s) = self.sessions.get_mut(&sid) else {
            self.stats.drop(DropReason::SessionGone);
            return;
        };
        let keep = match s.state {
            ClientState::Active | ClientState::Awake | ClientState::Connecting(_) => true,
            ClientState::Asleep => delivery.qos > 0 || cfg.sleep_buffer_qos0,
            ClientState::Disconnected | ClientState::Lost => delivery.qos > 0 || cfg.queue_qos0,
        };
        if !keep {
            self.stats.drop(DropReason::SessionGone);
            return;
        }
        let len = delivery.payload.len();
        let full = |s: &crate::session::Session, total: usize| {
            !cfg.queue_has_room(s.queue.len(), s.queued_bytes, total, len)
        };
        if cfg.queue_overflow == OverflowPolicy::DropOldest {
            let dropped = drop_oldest_while(
                &mut s.queue,
                &mut s.queued_bytes,
                &mut self.queued_bytes_total,
                |d| d.payload.len(),
                |n, held, total| !cfg.queue_has_room(n, held, total, len),
            );
            for _ in 0..dropped {
                debug!(client = %s.client_id, "queue full, dropping the oldest message");
                self.stats.drop(DropReason::QueueFull);
            }
        }
        if full(s, self.queued_bytes_total) {
            debug!(client = %s.client_id, topic = %delivery.topic, "queue full, refusing the newest message");
            self.stats.drop(DropReason::QueueFull);
            return;
        }
        s.queued_bytes += len;
        self.queued_bytes_total += len;
        s.queue.push_back(delivery);
        if s.is_reachable() && s.inflight.is_none() {
            self.pump(now, sid);
            self.arm(sid);
        }
    }

    /// Sends queued messages until one awaits an acknowledgement or the queue is
    /// empty; ends an awake period when everything was handed over.
    pub(crate) fn pump(&mut self, now: Instant, sid: SessionId) {
        loop {
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            if !s.is_reachable() || s.inflight.is_some() {
                return;
            }
            // A 2.0 device's Default Awake Messages caps its wakes too (§3.1.8).
            let cap = match s.v2.as_ref().map(|l| usize::from(l.default_awake_messages)) {
                Some(dam)
                    if dam > 0
                        && (self.cfg.max_messages_per_wake == 0
                            || dam < self.cfg.max_messages_per_wake) =>
                {
                    dam
                }
                _ => self.cfg.max_messages_per_wake,
            };
            let wake_over = s.state == ClientState::Awake
                && (s.queue.is_empty() || (cap > 0 && s.delivered_this_wake >= cap));
            if wake_over {
                // Everything (or the cap) handed over and acknowledged: PINGRESP.
                self.finish_awake(now, sid);
                return;
            }
            let Some(head_topic) = s.queue.front().map(|d| d.topic.clone()) else {
                return;
            };

            // How the client will know the topic: the pre-defined id it
            // subscribed with, a short name, or a normal id it holds —
            // otherwise REGISTER first.
            let predefined = self
                .predefined_by_name
                .get(&head_topic)
                .filter(|id| s.predefined_subscriptions.contains(id));
            let topic = if let Some(&id) = predefined {
                TopicRef::Predefined(id)
            } else if let Some(short) = TopicRef::short(&head_topic) {
                short
            } else {
                let lookup = match s.topics.lookup(&head_topic) {
                    Some(found) => Ok(found),
                    None => s
                        .topics
                        .assign_within(
                            &head_topic,
                            false,
                            Some(&self.topic_bytes),
                            self.cfg.max_topic_bytes_total,
                        )
                        .map(|id| (id, false)),
                };
                match lookup {
                    Ok((id, true)) => TopicRef::Id(id),
                    Ok((id, false)) => {
                        let msg_id = s.next_msg_id();
                        let packet = Packet::Register {
                            topic_id: id,
                            msg_id,
                            topic_name: head_topic.to_string(),
                        };
                        s.inflight = Some(Inflight {
                            kind: InflightKind::Register { topic_id: id },
                            msg_id,
                            packet: packet.clone(),
                            retries: 0,
                            deadline: now + self.cfg.retry_interval,
                        });
                        self.send_to(sid, packet);
                        return;
                    }
                    Err(full) => {
                        debug!(client = %s.client_id, error = %full, "no topic id for delivery");
                        self.pop_head(sid);
                        self.stats.drop(DropReason::RefusedByDevice);
                        self.stats.limit_hit(full.limit());
                        continue;
                    }
                }
            };

            let Some(delivery) = self.pop_head(sid) else {
                return;
            };
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            let qos = match delivery.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            let msg_id = match (qos, delivery.sent_as) {
                (QoS::AtMostOnce, _) => 0,
                (_, Some(earlier)) => earlier,
                _ => s.next_msg_id(),
            };
            let packet = Packet::Publish {
                dup: delivery.sent_as.is_some(),
                qos,
                retain: delivery.retain,
                topic,
                msg_id,
                payload: delivery.payload.clone(),
            };
            // Too big for the link: dropped silently per spec (§7.4), but counted.
            // A 2.0 device's own Maximum Packet Size too [MQTT-SN-3.1.7-3].
            if proto::encoded_len(&packet).map_or(true, |n| n > self.cfg.max_packet_bytes)
                || s.v2
                    .as_deref()
                    .is_some_and(|link| super::v2::over_max_packet_size(link, &packet))
            {
                debug!(client = %s.client_id, topic = %delivery.topic, "delivery too large for the link");
                self.stats.drop(DropReason::TooLarge);
                continue;
            }
            if delivery.sent_as.is_none() {
                self.stats.publishes_out += 1;
                self.stats.publish_out(qos);
            }
            s.delivered_this_wake += 1;
            if qos != QoS::AtMostOnce {
                s.inflight = Some(Inflight {
                    kind: InflightKind::Publish {
                        delivery: Delivery {
                            sent_as: Some(msg_id),
                            ..delivery
                        },
                        topic,
                    },
                    msg_id,
                    packet: packet.clone(),
                    retries: 0,
                    deadline: now + self.cfg.retry_interval,
                });
            }
            self.send_to(sid, packet);
        }
    }

    /// Takes the head of the queue, keeping byte counts right.
    fn pop_head(&mut self, sid: SessionId) -> Option<Delivery> {
        let s = self.sessions.get_mut(&sid)?;
        let d = s.queue.pop_front()?;
        s.queued_bytes = s.queued_bytes.saturating_sub(d.payload.len());
        self.queued_bytes_total = self.queued_bytes_total.saturating_sub(d.payload.len());
        Some(d)
    }

    /// T_RETRY expired for the exchange in flight.
    pub(crate) fn retry(&mut self, now: Instant, sid: SessionId) {
        let max_retries = self.cfg.max_retries;
        let retry_interval = self.cfg.retry_interval;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(inflight) = s.inflight.as_mut() else {
            return;
        };
        if inflight.retries < max_retries {
            inflight.retries += 1;
            inflight.deadline = now + retry_interval;
            if let Packet::Publish { dup, .. } = &mut inflight.packet {
                *dup = true;
            }
            let packet = inflight.packet.clone();
            self.stats.retransmissions += 1;
            self.send_to(sid, packet);
            return;
        }
        self.stats.drop(DropReason::RetriesExhausted);
        if s.state == ClientState::Awake {
            // The client fell asleep mid-hand-over: what was not acknowledged
            // stays buffered for the next wake, and nothing is lost.
            debug!(client = %s.client_id, "awake client fell silent, back to sleep");
            s.state = ClientState::Asleep;
            s.last_seen = now;
            let requeued = s.requeue_inflight();
            self.queued_bytes_total += requeued;
        } else {
            self.lose(now, sid, "no acknowledgement after all retries");
        }
    }

    pub(crate) fn on_regack(
        &mut self,
        now: Instant,
        sid: SessionId,
        topic_id: u16,
        msg_id: u16,
        return_code: ReturnCode,
    ) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let registered = match &s.inflight {
            Some(Inflight {
                kind: InflightKind::Register { topic_id: id },
                msg_id: m,
                ..
            }) if *m == msg_id => *id,
            _ => {
                debug!(client = %s.client_id, msg_id, topic_id, "REGACK matches nothing in flight");
                self.stats.drop(DropReason::UnmatchedAck);
                return;
            }
        };
        s.inflight = None;
        if return_code.is_accepted() {
            s.topics.confirm(registered);
        } else {
            // The client refused the topic: drop the message that needed it
            // (trap T-2), never publish with an id it does not hold.
            // Every queued message on that topic goes: the client refused it.
            debug!(client = %s.client_id, ?return_code, "client refused a REGISTER");
            let name = s.topics.name(registered).cloned();
            s.topics.remove(registered);
            if let Some(name) = name {
                let before = s.queue.len();
                let mut freed = 0;
                s.queue.retain(|d| {
                    let keep = d.topic != name;
                    if !keep {
                        freed += d.payload.len();
                    }
                    keep
                });
                let dropped = before - s.queue.len();
                s.queued_bytes = s.queued_bytes.saturating_sub(freed);
                self.queued_bytes_total = self.queued_bytes_total.saturating_sub(freed);
                for _ in 0..dropped {
                    self.stats.drop(DropReason::RefusedByDevice);
                }
            }
        }
        self.pump(now, sid);
    }

    pub(crate) fn on_puback(
        &mut self,
        now: Instant,
        sid: SessionId,
        topic_id: u16,
        msg_id: u16,
        return_code: ReturnCode,
    ) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let matches = matches!(
            &s.inflight,
            Some(Inflight { kind: InflightKind::Publish { .. }, msg_id: m, .. }) if *m == msg_id
        );
        if !matches {
            if return_code == ReturnCode::InvalidTopicId {
                // The answer to a QoS 0 PUBLISH: register before the next one.
                s.topics.unconfirm(topic_id);
            } else {
                self.stats.drop(DropReason::UnmatchedAck);
            }
            return;
        }
        let Some(Inflight {
            kind: InflightKind::Publish { delivery, topic },
            ..
        }) = s.inflight.take()
        else {
            return;
        };
        let client = Arc::clone(&s.client_id);
        match return_code {
            ReturnCode::Accepted => self.ack_downlink(&client, delivery.downlink),
            ReturnCode::InvalidTopicId
                if !delivery.reregistered && matches!(topic, TopicRef::Id(_)) =>
            {
                // Register the name again and redeliver once (trap T-3).
                s.topics.unconfirm(topic.raw());
                s.queued_bytes += delivery.payload.len();
                self.queued_bytes_total += delivery.payload.len();
                s.queue.push_front(Delivery {
                    reregistered: true,
                    sent_as: None,
                    ..delivery
                });
            }
            other => {
                debug!(client = %s.client_id, topic = %delivery.topic, ?other, "client refused a PUBLISH");
                if let TopicRef::Id(id) = topic {
                    s.topics.unconfirm(id);
                }
                self.stats.drop(DropReason::RefusedByDevice);
                // The device's answer: the broker redelivering it would
                // not change it.
                self.ack_downlink(&client, delivery.downlink);
            }
        }
        self.pump(now, sid);
    }

    pub(crate) fn on_pubrec(&mut self, now: Instant, sid: SessionId, msg_id: u16) {
        let retry_at = now + self.cfg.retry_interval;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let qos2 = |kind: &InflightKind| match kind {
            InflightKind::Publish { delivery, .. } => delivery.qos == 2,
            InflightKind::PubRel => true,
            InflightKind::Register { .. } => false,
        };
        match &s.inflight {
            Some(Inflight {
                kind, msg_id: m, ..
            }) if *m == msg_id && qos2(kind) => {
                // The device holds the QoS 2 message from its PUBREC on.
                let downlink = match kind {
                    InflightKind::Publish { delivery, .. } => delivery.downlink,
                    _ => None,
                };
                let client = Arc::clone(&s.client_id);
                let packet = Packet::PubRel { msg_id };
                s.inflight = Some(Inflight {
                    kind: InflightKind::PubRel,
                    msg_id,
                    packet: packet.clone(),
                    retries: 0,
                    deadline: retry_at,
                });
                // A client that fell asleep gets the PUBREL when it wakes.
                if s.is_reachable() {
                    self.send_to(sid, packet);
                }
                self.ack_downlink(&client, downlink);
            }
            _ => {
                self.stats.drop(DropReason::UnmatchedAck);
            }
        }
    }

    pub(crate) fn on_pubcomp(&mut self, now: Instant, sid: SessionId, msg_id: u16) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        match &s.inflight {
            Some(Inflight {
                kind: InflightKind::PubRel,
                msg_id: m,
                ..
            }) if *m == msg_id => {
                s.inflight = None;
                self.pump(now, sid);
            }
            _ => self.stats.drop(DropReason::UnmatchedAck),
        }
    }
}
