//! The machine's inputs from the broker's side: a CONNACK (re-subscribe
//! everything, resend the outbox), acknowledgements by packet id, what
//! rumqttc reports having written, messages coming down (origin echo,
//! duplicate copies, 3.1.1 echoes, the rules), and a connection that fails
//! (requeue, answer held tickets, back off) or is refused.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::takeover::Takeover;
use super::{LinkEvent, Machine, Role};
use crate::bridge::link::LinkError;
use crate::bridge::outbox::{Ack, Replay};
use crate::bridge::{BridgeEvent, TaskEvent, bump};
use crate::core::UpstreamMessage;

/// What the task does with its connection after a failure.
#[derive(Debug)]
pub(in crate::bridge) enum Failure {
    /// Keep it: put these replays in rumqttc's pending list, wait out the
    /// backoff (if [`Machine::backing_off`]) and poll it again.
    Retry(Vec<Replay>),
    /// Drop it: the broker refused this device session for good.
    Drop,
}

impl Machine {
    /// Something happened on the connection.
    pub(in crate::bridge) fn handle_event(&mut self, now: Instant, ev: LinkEvent) {
        self.input(now);
        self.event(ev);
    }

    /// What rumqttc had buffered when the connection failed or was ended
    /// (acks read, publishes written: they did happen); a CONNACK among
    /// them changes nothing any more.
    pub(in crate::bridge) fn handle_buffered(&mut self, now: Instant, ev: LinkEvent) {
        if !matches!(ev, LinkEvent::ConnAck { .. }) {
            self.handle_event(now, ev);
        }
    }

    fn event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::ConnAck {
                session_present,
                limits,
            } => {
                self.limits = limits;
                self.on_connack(session_present);
            }
            LinkEvent::Publish {
                pkid,
                topic,
                payload,
                qos,
                retain,
                subscription_ids,
                origin,
            } => {
                let token = self.downlink_token(qos, pkid);
                match self.on_publish(topic, payload, qos, retain, &subscription_ids, origin) {
                    Some(message) => self.forward(message, token),
                    // Not for the device at all (not bridged, an echo, a
                    // duplicate): the broker may forget it.
                    None if token.is_some() => self.acks_due.push_back((qos, pkid)),
                    None => {}
                }
            }
            LinkEvent::PubAck { pkid, code } => {
                let ack = self.outbox.on_puback(pkid, code);
                self.count_ack(ack);
                self.record_refused();
            }
            LinkEvent::PubRec { pkid, code } => {
                let ack = self.outbox.on_pubrec(pkid, code);
                self.count_ack(ack);
                self.record_refused();
            }
            LinkEvent::PubComp { pkid } => {
                let ack = self.outbox.on_pubcomp(pkid);
                self.count_ack(ack);
            }
            LinkEvent::SubAck { refused } => {
                if let Some(outcome) = self.subs.on_suback(refused) {
                    self.filter_outcome(outcome);
                }
            }
            LinkEvent::SentPublish(pkid) => {
                if let Some(qos) = self.outbox.on_outgoing_publish(pkid) {
                    self.in_channel = self.in_channel.saturating_sub(1);
                    if qos == 0 {
                        bump(&self.common.counters.published, 1);
                    }
                }
            }
            LinkEvent::HeldPublish(pkid) => {
                self.outbox.on_await_ack(pkid);
                self.in_channel = self.in_channel.saturating_sub(1);
            }
            LinkEvent::SentPubRel(pkid) => self.outbox.on_outgoing_pubrel(pkid),
            LinkEvent::SentControl | LinkEvent::SentDisconnect => {
                self.in_channel = self.in_channel.saturating_sub(1);
            }
            LinkEvent::Other => {}
        }
    }

    fn on_connack(&mut self, session_present: bool) {
        self.connected = true;
        // Packet ids of the earlier connection mean nothing now: the broker
        // redelivers what was not acknowledged.
        self.epoch = self.epoch.wrapping_add(1);
        self.acks_due.clear();
        self.takeover.connected(self.now);
        self.in_channel = 0;
        self.backoff.reset();
        let c = Arc::clone(&self.common.counters);
        match &mut self.role {
            Role::Shared => {
                c.connected.store(true, Ordering::Relaxed);
                bump(&c.connects, 1);
            }
            Role::Device(d) => {
                bump(&c.device_sessions_connected, 1);
                bump(&c.device_session_connects, 1);
                let client_id = d.client_id_arc();
                let up = d.connected();
                self.push_statuses(&client_id, up);
            }
        }
        let resent = if session_present {
            self.outbox.replaying()
        } else {
            self.outbox.connected(false)
        };
        bump(&c.resent, resent as u64);
        if self.is_shared() {
            info!(
                broker = %self.common.endpoint,
                session_present,
                resending = resent,
                queued = self.outbox.queued(),
                "upstream connected"
            );
            self.events.push(TaskEvent::Public(BridgeEvent::Connected));
            let limits = self.engine_limits();
            self.events
                .push(TaskEvent::Public(BridgeEvent::Limits(limits)));
        } else {
            debug!(session = %self.name(), session_present, resending = resent, "device session connected");
        }
        // Re-subscribe everything, every time.
        self.subs.resubscribe_all();
    }

    fn on_publish(
        &mut self,
        topic: Option<String>,
        payload: bytes::Bytes,
        qos: u8,
        retain: bool,
        subscription_ids: &[usize],
        origin: Option<String>,
    ) -> Option<UpstreamMessage> {
        let c = Arc::clone(&self.common.counters);
        let Some(topic) = topic else {
            bump(&c.not_bridged_in, 1);
            return None;
        };
        // Per-device mode on MQTT 5: the broker's copy of what one of our
        // sessions published (or a device's will) — the engine routed the
        // original locally already.
        if let (Some(ours), Some(theirs)) = (&self.common.origin, &origin)
            && **ours == **theirs
        {
            bump(&c.echoes_suppressed, 1);
            return None;
        }
        let transparent = self.common.rules.is_transparent();
        let scope = match self
            .subs
            .copy_scope(&topic, subscription_ids, retain, transparent)
        {
            Some(scope) => scope,
            None => {
                bump(&c.duplicates_suppressed, 1);
                return None;
            }
        };
        if let (Some(log), Some(seen)) = (&self.common.echo, &mut self.echo_seen)
            && let Ok(mut log) = log.lock()
            && log.is_echo(self.now, &topic, &payload, seen)
        {
            bump(&c.echoes_suppressed, 1);
            return None;
        }
        let Some((local, qos)) = self.common.rules.inbound(&topic, qos) else {
            bump(&c.not_bridged_in, 1);
            return None;
        };
        bump(&c.received, 1);
        Some(UpstreamMessage {
            topic: local,
            payload,
            qos,
            retain,
            filter: scope,
        })
    }

    /// A message for the driver: the shared session's, or a device's with
    /// its downlink token.
    fn forward(&mut self, message: UpstreamMessage, token: Option<u64>) {
        let ev = match &self.role {
            Role::Shared => BridgeEvent::Message(message),
            Role::Device(d) => BridgeEvent::SessionMessage {
                client_id: d.client_id_arc(),
                message,
                token,
            },
        };
        self.events.push(TaskEvent::Public(ev));
    }

    /// A device's session acknowledges a QoS 1/2 message only when the
    /// engine says the device has it: the token it carries there names the
    /// connection, the QoS and the packet id. `None`: acknowledged by
    /// rumqttc on receipt (the shared session, QoS 0).
    fn downlink_token(&self, qos: u8, pkid: u16) -> Option<u64> {
        (matches!(self.role, Role::Device(_)) && qos > 0)
            .then(|| (u64::from(self.epoch) << 24) | (u64::from(qos) << 16) | u64::from(pkid))
    }

    /// The engine's [`AckDownlink`](crate::core::UpstreamCommand::AckDownlink):
    /// due now if its connection is still this one; otherwise the broker
    /// redelivers the message on the new connection, and this token is
    /// stale.
    pub(super) fn ack_downlink(&mut self, token: u64) {
        let epoch = (token >> 24) as u32;
        let qos = ((token >> 16) & 0xff) as u8;
        let pkid = (token & 0xffff) as u16;
        if epoch == self.epoch && self.connected && (1..=2).contains(&qos) {
            self.acks_due.push_back((qos, pkid));
        } else {
            debug!(session = %self.name(), token, "downlink acknowledgement for an earlier connection; dropped");
        }
    }

    fn count_ack(&self, ack: Ack) {
        match ack {
            Ack::Completed => bump(&self.common.counters.published, 1),
            // Logged with its dead letter.
            Ack::Rejected => bump(&self.common.counters.rejected, 1),
            Ack::Unmatched => debug!("upstream: acknowledgement matches nothing pending"),
            Ack::Progressed => {}
        }
    }

    /// The connection failed (after the buffered events were handled). A
    /// device session the broker refused (with a code retrying will not
    /// cure) stops for good; otherwise what never
    /// reached the wire is queued again, held acknowledgements are answered
    /// (the messages are queued while the broker is unreachable), and the
    /// backoff starts — unless shutdown is asked and nothing is left.
    pub(in crate::bridge) fn handle_connection_failed(
        &mut self,
        now: Instant,
        error: LinkError,
    ) -> Failure {
        self.input(now);
        let taken_over = matches!(error, LinkError::TakenOver);
        let reason = match error {
            LinkError::Refused(reason) if !self.is_shared() => {
                self.on_refused(reason);
                return Failure::Drop;
            }
            other => other.to_string(),
        };
        let was_connected = self.connected;
        if was_connected {
            // A broker closes the connection on a message or filter it will
            // not take, too: with one awaiting its answer, the loss is
            // theirs (isolated below), not a takeover's.
            let unanswered = self.outbox.in_flight() > 0 || self.subs.awaiting();
            let gone = self.name_takeover(now, taken_over);
            if !self.is_shared() {
                if taken_over || (gone && !unanswered) {
                    self.on_taken_over(taken_over);
                    return Failure::Drop;
                }
                if unanswered {
                    self.takeover.not_a_takeover();
                }
            }
            self.isolate_suspects();
            for outcome in self.subs.isolate() {
                self.filter_outcome(outcome);
            }
        }
        let (replays, dropped) = self.mark_down();
        let c = Arc::clone(&self.common.counters);
        match &mut self.role {
            Role::Shared => {
                bump(&c.connection_errors, 1);
                if was_connected {
                    warn!(
                        broker = %self.common.endpoint,
                        %reason,
                        in_flight = self.outbox.in_flight(),
                        queued = self.outbox.queued(),
                        dropped_qos0 = dropped,
                        "upstream connection lost"
                    );
                    self.events
                        .push(TaskEvent::Public(BridgeEvent::Disconnected { reason }));
                } else {
                    debug!(broker = %self.common.endpoint, %reason, "upstream connection attempt failed");
                }
            }
            Role::Device(d) => {
                let client_id = d.client_id_arc();
                let owed = d.unreachable();
                debug!(session = %client_id, %reason, was_connected, "device session: connection failed");
                self.push_statuses(&client_id, owed);
            }
        }
        if !(self.deadline.is_some() && self.outbox.is_empty()) {
            let delay = self.backoff.next_delay();
            debug!(?delay, "upstream: waiting before reconnecting");
            self.retry_at = Some(now + delay);
        }
        Failure::Retry(replays)
    }

    /// Logs, at warn, that another client with this session's client id is
    /// the likely cause of the loss (see [`super::takeover`]); true if the
    /// session counts as taken over.
    fn name_takeover(&mut self, now: Instant, reported: bool) -> bool {
        let logged = self.takeover.lost(now, reported);
        let taken_over = self.takeover.taken_over(reported);
        // A device session taken over is logged once, as it stops.
        let Some(takeover) = logged.filter(|_| self.is_shared()) else {
            return taken_over;
        };
        let client_id = self.common.cfg.effective_client_id();
        let hint = "give each gateway its own id ([upstream] client_id or --upstream-client-id)";
        match takeover {
            Takeover::Reported { times } => warn!(
                %client_id,
                times,
                hint,
                "upstream session taken over by another client with the same client id (the broker sent DISCONNECT 0x8E)"
            ),
            Takeover::Inferred { times } => warn!(
                %client_id,
                times,
                within = ?super::takeover::QUICK_LOSS,
                hint,
                "the broker keeps closing the upstream session soon after accepting it: another client probably uses the same client id"
            ),
        }
        taken_over
    }

    /// Connection bookkeeping when it ends: (replays for the next
    /// connection, QoS 0 messages dropped).
    pub(super) fn mark_down(&mut self) -> (Vec<Replay>, usize) {
        self.link_gone();
        self.subs.clear_requests();
        let (replays, dropped) = self
            .outbox
            .connection_lost(self.common.cfg.queue_qos0_offline);
        bump(&self.common.counters.dropped_offline, dropped as u64);
        let released = self.outbox.release_tickets();
        self.answer_tickets(released);
        (replays, dropped)
    }

    /// Not connected any more (gauges).
    pub(super) fn link_gone(&mut self) {
        let c = &self.common.counters;
        if self.connected && !self.is_shared() {
            c.device_sessions_connected.fetch_sub(1, Ordering::Relaxed);
        }
        if self.is_shared() {
            c.connected.store(false, Ordering::Relaxed);
        }
        self.connected = false;
        self.in_channel = 0;
    }
}
