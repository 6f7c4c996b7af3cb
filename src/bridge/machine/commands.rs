//! The machine's inputs from the engine's side: commands (publish,
//! subscriptions, a device's session opening and closing), the durable
//! outbox restored at start-up, and messages adopted from a refused device
//! session. This is where a message enters the outbox or is refused, and
//! where the acknowledgement ticket that tells a device its message is safe
//! is issued and answered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::{Machine, Role};
use crate::bridge::outbox::{self, OutMessage};
use crate::bridge::{BridgeEvent, TaskEvent, bump};
use crate::config::OutboxFull;
use crate::core::{UpstreamAck, UpstreamCommand};

impl Machine {
    /// A command from the driver (through the handle or the pool).
    pub(in crate::bridge) fn handle_command(&mut self, now: Instant, cmd: UpstreamCommand) {
        self.input(now);
        self.command(cmd);
    }

    /// The durable outbox found at start-up, in order: taken whatever the
    /// bounds (acknowledged to their senders before the restart).
    pub(in crate::bridge) fn handle_restore(&mut self, now: Instant, cmds: Vec<UpstreamCommand>) {
        self.input(now);
        self.restoring = true;
        for cmd in cmds {
            self.command(cmd);
        }
        self.restoring = false;
        self.restored();
    }

    /// Messages another (refused) session could not deliver: kept whatever
    /// the bounds, as a restored outbox is (they were accepted).
    pub(in crate::bridge) fn handle_adopt(&mut self, now: Instant, msgs: Vec<OutMessage>) {
        self.input(now);
        for msg in msgs {
            self.taken.0 += 1;
            self.taken.1 += (msg.topic.len() + msg.payload.len()) as u64;
            if msg.qos == 0 && !self.connected && !self.common.cfg.queue_qos0_offline {
                bump(&self.common.counters.dropped_offline, 1);
                self.settled.extend(msg.store_id);
                continue;
            }
            self.outbox.push_unbounded(msg);
        }
    }

    fn command(&mut self, cmd: UpstreamCommand) {
        if let Role::Device(d) = &mut self.role {
            d.received();
        }
        if let UpstreamCommand::Publish { topic, payload, .. } = &cmd {
            // Published with the outbox gauges (publish_gauges), never before:
            // the driver must always see a message in the channel or in an
            // outbox, never in neither, or it would grant room twice.
            self.taken.0 += 1;
            self.taken.1 += (topic.len() + payload.len()) as u64;
        }
        let connected = self.connected;
        match cmd {
            UpstreamCommand::Publish {
                topic,
                payload,
                qos,
                retain,
                store_id,
                from,
            } => {
                let ack = from.and_then(|o| o.ack.map(|a| (o.client_id, a)));
                self.publish(topic, payload, qos, retain, store_id, ack);
            }
            UpstreamCommand::Subscribe { filter, qos } if self.is_shared() => {
                if !self.common.rules.is_transparent() {
                    debug!(%filter, "upstream: subscriptions come from the rules; ignored");
                    self.answer_at_once(filter);
                    return;
                }
                let local = filter.clone();
                if !self.subs.subscribe(filter, qos, connected) {
                    self.answer_at_once(local);
                }
            }
            UpstreamCommand::Unsubscribe { filter } if self.is_shared() => {
                if self.common.rules.is_transparent() {
                    self.subs.unsubscribe(&filter, connected);
                }
            }
            UpstreamCommand::SessionSubscribe { filter, qos, .. } if !self.is_shared() => {
                match self.common.rules.remote_filter(&filter) {
                    Some(remote) => {
                        self.subs.set_local(&remote, &filter);
                        if !self.subs.subscribe(remote, qos, connected) {
                            self.answer_at_once(filter);
                        }
                    }
                    None => {
                        debug!(%filter, "no `in` rule covers a device's filter; not subscribed upstream");
                        self.answer_at_once(filter);
                    }
                }
            }
            UpstreamCommand::SessionUnsubscribe { filter, .. } if !self.is_shared() => {
                if let Some(remote) = self.common.rules.remote_filter(&filter) {
                    self.subs.unsubscribe(&remote, connected);
                }
            }
            UpstreamCommand::AckDownlink { token, .. } if !self.is_shared() => {
                self.ack_downlink(token)
            }
            UpstreamCommand::OpenSession(params) => self.open(params),
            UpstreamCommand::CloseSession { publish_will, .. } => self.close(publish_will),
            other => {
                debug!(session = %self.name(), ?other, "command not for this session; ignored")
            }
        }
    }

    fn publish(
        &mut self,
        topic: String,
        payload: bytes::Bytes,
        qos: u8,
        retain: bool,
        store_id: Option<u64>,
        ack: Option<(Arc<str>, UpstreamAck)>,
    ) {
        let Some((remote, qos)) = self.common.rules.outbound(&topic, qos.min(2)) else {
            bump(&self.common.counters.not_bridged_out, 1);
            self.settled.extend(store_id);
            // Where the rules send it (nowhere upstream) it has gone.
            self.answer(ack, true);
            return;
        };
        if !self.restoring && !self.can_publish() {
            // A device session the broker refused, or one that has ended.
            bump(&self.common.counters.rejected, 1);
            self.settled.extend(store_id);
            self.answer(ack, false);
            return;
        }
        if qos == 0 && !self.connected && !self.common.cfg.queue_qos0_offline {
            bump(&self.common.counters.dropped_offline, 1);
            self.settled.extend(store_id);
            return;
        }
        // Connected: the device hears when the broker acknowledges. Not
        // connected: when it is queued (below), as safe as it gets until the
        // session is back (docs/bridge.md).
        let ticket = (ack.is_some() && self.connected).then(|| {
            self.next_ticket += 1;
            self.next_ticket
        });
        let msg = OutMessage {
            topic: remote,
            payload,
            qos,
            retain,
            store_id,
            ticket,
        };
        if store_id.is_some() && self.restoring {
            // Acknowledged before a restart: never refused now.
            self.outbox.push_unbounded(msg);
            return;
        }
        let pushed = if self.over_global_bound(&msg) {
            Err(outbox::Refused::Full)
        } else {
            self.outbox.push(msg)
        };
        match pushed {
            Ok(()) => {
                if self.full_streak > 0 {
                    info!(dropped = self.full_streak, "upstream outbox has room again");
                    self.full_streak = 0;
                }
                match (ticket, ack) {
                    (Some(ticket), Some(ack)) => {
                        self.acks.insert(ticket, ack);
                    }
                    (None, ack) => self.answer(ack, true),
                    (Some(_), None) => {}
                }
            }
            Err(outbox::Refused::Full) => {
                bump(&self.common.counters.dropped_full, 1);
                self.settled.extend(store_id);
                // `outbox_full = "drop-newest"`: senders are never held
                // back — acknowledged, routed locally, upstream copy dropped.
                self.answer(ack, self.common.cfg.outbox_full == OutboxFull::DropNewest);
                if self.full_streak == 0 {
                    warn!(
                        messages = self.outbox.len(),
                        bytes = self.outbox.bytes(),
                        "upstream outbox full: dropping new messages until it drains"
                    );
                }
                self.full_streak += 1;
            }
        }
    }

    /// Per-device mode: the outboxes of all sessions share the bounds.
    fn over_global_bound(&self, msg: &OutMessage) -> bool {
        if !self.common.per_device {
            return false;
        }
        let c = &self.common.counters;
        let r = &c.room;
        c.pending_messages.load(Ordering::Acquire) >= r.max_messages
            || c.pending_bytes.load(Ordering::Acquire)
                + (msg.topic.len() + msg.payload.len()) as u64
                > r.max_bytes
    }

    /// Tells the device its message is safe (`accepted`) or not.
    pub(super) fn answer(&mut self, ack: Option<(Arc<str>, UpstreamAck)>, accepted: bool) {
        if let Some((client_id, ack)) = ack {
            self.events.push(TaskEvent::Public(BridgeEvent::SessionAck {
                client_id,
                ack,
                accepted,
            }));
        }
    }

    /// Answers the tickets the outbox reports, and `released` ones (held
    /// messages now answered as queued) as accepted.
    pub(super) fn answer_tickets(&mut self, released: Vec<u64>) {
        let answered = self.outbox.take_answered();
        for (ticket, ok) in released.into_iter().map(|t| (t, true)).chain(answered) {
            let ack = self.acks.remove(&ticket);
            self.answer(ack, ok);
        }
    }
}
