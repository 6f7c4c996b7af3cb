//! A device's own session (per-device mode): how its connection opens,
//! is reused, switches to new parameters, is closed with or without the
//! will, and how each [`UpstreamCommand::OpenSession`] gets exactly one
//! [`SessionStatus`].
//!
//! - **Open** on a connected session with the very same parameters and
//!   CleanSession off: reused, `Up` at once. Otherwise (new parameters, or
//!   a clean session) the current connection ends with DISCONNECT (so the
//!   old will is discarded) and a new one is made; what the outbox holds
//!   goes on the new connection.
//! - **Status**: `Up` at the CONNACK, `Unreachable` at a network failure
//!   before it (the session keeps retrying with its jittered backoff, and a
//!   later CONNACK needs no new status), `Refused` at a refusing CONNACK —
//!   also later, unasked, so the engine disconnects the device. A refused
//!   session stops: no retry; what it held is refused to the device when
//!   the device still waits for the answer, and handed to the shared
//!   session (the last resort) when it was acknowledged already.
//! - **Close**: a session that still has something for the broker — its
//!   undelivered messages, or a will that must be published — stays alive
//!   under the device's own identity (client id and credentials,
//!   CleanSession off, the will configured only if it must be published),
//!   reconnecting with its backoff for as long as the gateway runs, until
//!   it has delivered everything; then it drops the connection without
//!   DISCONNECT (the broker publishes the will) or sends DISCONNECT. Messages
//!   restored from the store for a device with no session are delivered
//!   the same way (no will). An OpenSession meanwhile simply continues the
//!   session with the device's parameters, outbox kept.
//! - A session with no connection and nothing to do tells the pool, which
//!   forgets it once it has had every command (`pool.rs`).
//!
//! The machine decides ([`Machine::poll_transition`]); the session task
//! carries it out (ends the connection, then [`Machine::handle_link_ended`];
//! or builds the connection it is given).
//!
//! [`UpstreamCommand::OpenSession`]: crate::core::UpstreamCommand::OpenSession

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::{Machine, Role};
use crate::bridge::identities::DeviceIdentities;
use crate::bridge::link::Identity;
use crate::bridge::outbox::{OutMessage, Replay};
use crate::bridge::{BridgeEvent, TaskEvent, bump};
use crate::core::{SessionParams, SessionStatus};

/// The device has gone (or, for restored messages, is not here): what the
/// session holds still goes up under its identity, then it ends.
#[derive(Debug, Clone)]
struct Closing {
    /// What to connect with if the session must (re)connect: the device's
    /// identity, CleanSession off, the will only if it must be published.
    params: SessionParams,
    /// A will must be published: the connection ends without DISCONNECT,
    /// and only once the broker has accepted it (CONNACK).
    will: bool,
}

/// How a connection ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum End {
    /// Nothing left for the broker: DISCONNECT, or (`publish_will`) the
    /// connection is dropped without it so the broker publishes the will.
    Close { publish_will: bool },
    /// New parameters: keep the outbox for the next connection; DISCONNECT,
    /// or (`publish_will`) without it, as for `Close`.
    Switch { publish_will: bool },
}

/// What a device session's connection needs, for the session task to carry
/// out (see [`Machine::poll_transition`]).
#[derive(Debug)]
pub(in crate::bridge) enum Transition {
    /// End the current connection: with DISCONNECT (waiting briefly for it
    /// to be written), or, with `publish_will`, by dropping it without (the
    /// broker publishes the will; what rumqttc buffered is handled first).
    /// Then [`Machine::handle_link_ended`].
    End {
        /// Drop the connection without DISCONNECT.
        publish_will: bool,
    },
    /// Connect with this identity, `replays` in rumqttc's pending list.
    Open {
        /// Who to connect as.
        identity: Box<Identity>,
        /// What the previous connection had on the wire, same packet ids.
        replays: Vec<Replay>,
    },
}

/// What a device session must do now (see [`Machine::step`]).
#[derive(Debug, Clone, Copy)]
enum Step {
    End(End),
    /// The closing session is not connected with its closing parameters:
    /// drop the attempt, connect with those.
    Reconnect,
    /// No connection, parameters waiting: connect.
    Open,
    /// No connection, nothing to do: tell the pool.
    Finish,
}

/// A device session's own state.
pub(crate) struct Device {
    client_id: Arc<str>,
    /// The pool's id for this task.
    task: u64,
    identities: Arc<DeviceIdentities>,
    /// Commands received (the pool compares it with what it sent).
    received: u64,
    /// Parameters of the current connection.
    params: Option<SessionParams>,
    /// Parameters to connect with once the current connection is gone.
    next: Option<SessionParams>,
    /// OpenSession commands not answered yet.
    owed: u32,
    close: Option<Closing>,
    /// The device came back while its will was owed on a connected session:
    /// the switch drops the connection without DISCONNECT (will published).
    will_on_switch: bool,
    /// `Finished` was sent and no command came since.
    finished_reported: bool,
    /// Replays (same packet ids) for the next connection after a switch.
    replays: Vec<Replay>,
}

impl Device {
    pub(super) fn new(client_id: Arc<str>, task: u64, identities: Arc<DeviceIdentities>) -> Self {
        Self {
            client_id,
            task,
            identities,
            received: 0,
            params: None,
            next: None,
            owed: 0,
            close: None,
            will_on_switch: false,
            // Nothing to report before the first command.
            finished_reported: true,
            replays: Vec::new(),
        }
    }

    pub(super) fn client_id(&self) -> &str {
        &self.client_id
    }

    pub(super) fn client_id_arc(&self) -> Arc<str> {
        Arc::clone(&self.client_id)
    }

    /// A command came in.
    pub(super) fn received(&mut self) {
        self.received += 1;
        self.finished_reported = false;
    }

    fn answer_all(&mut self, status: SessionStatus) -> Vec<SessionStatus> {
        let n = std::mem::take(&mut self.owed);
        (0..n).map(|_| status.clone()).collect()
    }

    /// A CONNACK: every open waiting is answered `Up`.
    pub(super) fn connected(&mut self) -> Vec<SessionStatus> {
        self.answer_all(SessionStatus::Up)
    }

    /// A network failure: every open waiting is answered `Unreachable`.
    pub(super) fn unreachable(&mut self) -> Vec<SessionStatus> {
        self.answer_all(SessionStatus::Unreachable)
    }
}

impl Machine {
    /// The session's device state, if it is a device's.
    fn dev(&self) -> Option<&Device> {
        match &self.role {
            Role::Device(d) => Some(d),
            Role::Shared => None,
        }
    }

    pub(super) fn push_statuses(&mut self, client_id: &Arc<str>, statuses: Vec<SessionStatus>) {
        for status in statuses {
            self.events
                .push(TaskEvent::Public(BridgeEvent::SessionStatus {
                    client_id: Arc::clone(client_id),
                    status,
                }));
        }
    }

    /// [`UpstreamCommand::OpenSession`](crate::core::UpstreamCommand::OpenSession).
    pub(super) fn open(&mut self, params: SessionParams) {
        let connected = self.connected;
        let has_link = self.linked;
        let Role::Device(d) = &mut self.role else {
            debug!("OpenSession on the shared session; ignored");
            return;
        };
        d.owed += 1;
        // The device is back: the session carries on with its parameters,
        // outbox kept. A will still owed on a live connection is published
        // by ending it without DISCONNECT; one whose session never got to
        // the broker is not published any more (the device is back).
        if let Some(c) = d.close.take() {
            d.will_on_switch = c.will && connected;
        }
        let reuse = has_link
            && d.next.is_none()
            && !params.clean_session
            && d.params.as_ref() == Some(&params);
        if reuse {
            d.will_on_switch = false;
            if connected {
                let id = d.client_id_arc();
                let up = d.connected();
                self.push_statuses(&id, up);
            }
            // Otherwise the next CONNACK or failure answers.
            return;
        }
        let clean = params.clean_session;
        d.next = Some(params);
        if clean {
            // The device's subscriptions went with its session; it makes
            // new ones (SessionSubscribe) after this.
            self.subs.forget_all(connected);
        }
    }

    /// [`UpstreamCommand::CloseSession`](crate::core::UpstreamCommand::CloseSession).
    pub(super) fn close(&mut self, publish_will: bool) {
        let has_link = self.linked;
        let nothing_queued = self.outbox.is_empty();
        let rules = &self.common.rules;
        let Role::Device(d) = &mut self.role else {
            debug!("CloseSession on the shared session; ignored");
            return;
        };
        d.will_on_switch = false;
        d.close = None;
        // The latest parameters the device asked for.
        let Some(base) = d.next.take().or_else(|| d.params.clone()) else {
            return;
        };
        let params = SessionParams {
            clean_session: false,
            will: base.will.filter(|_| publish_will),
            ..base
        };
        // A will no `out` rule lets out is never given to the broker.
        let will = params.will.is_some() && d.identities.identity(&params, rules).will.is_some();
        if !has_link && nothing_queued && !will {
            return;
        }
        d.close = Some(Closing { params, will });
    }

    /// Messages restored from the store reached this session: with no
    /// connection (the device has not come back yet), it delivers them under
    /// the device's own identity — no will, CleanSession off — as a closing
    /// session does. The device's OpenSession meanwhile takes the session
    /// over with its own parameters.
    pub(super) fn restored(&mut self) {
        let idle = !self.linked && !self.outbox.is_empty();
        let keep_alive_secs = u32::from(self.common.cfg.keep_alive_secs);
        if let Role::Device(d) = &mut self.role
            && idle
            && d.next.is_none()
            && d.close.is_none()
        {
            let params = SessionParams {
                client_id: d.client_id_arc(),
                clean_session: false,
                keep_alive_secs,
                will: None,
            };
            d.close = Some(Closing {
                params,
                will: false,
            });
        }
    }

    /// Whether a device's message can still go up on this session (not
    /// refused, not ended).
    pub(super) fn can_publish(&self) -> bool {
        self.dev()
            .is_none_or(|d| self.linked || d.next.is_some() || d.close.is_some())
    }

    /// What a device session must do now, if anything (never during
    /// shutdown).
    fn step(&self) -> Option<Step> {
        let d = self.dev()?;
        if self.deadline.is_some() {
            return None;
        }
        if !self.linked {
            if d.next.is_some() || d.close.is_some() {
                return Some(Step::Open);
            }
            return (!d.finished_reported).then_some(Step::Finish);
        }
        if d.next.is_some() {
            return Some(Step::End(End::Switch {
                publish_will: d.will_on_switch,
            }));
        }
        let c = d.close.as_ref()?;
        if self.outbox.is_empty() && !c.will {
            return Some(Step::End(End::Close {
                publish_will: false,
            }));
        }
        // Not connected: connect as the closing session must. Connected with
        // another will than the one to publish (the device changed it just
        // before it went): DISCONNECT, and connect with the right one.
        let current = d.params.as_ref();
        let other_will = c.will && current.map(|p| &p.will) != Some(&c.params.will);
        if other_will || (!self.connected && current != Some(&c.params)) {
            return Some(Step::Reconnect);
        }
        if self.outbox.is_empty() && self.connected {
            return Some(Step::End(End::Close { publish_will: true }));
        }
        None
    }

    /// Whether [`poll_transition`](Self::poll_transition) has something to
    /// do now (the task stops waiting for its connection then).
    pub(in crate::bridge) fn needs_transition(&self) -> bool {
        self.ending.is_none() && self.step().is_some()
    }

    /// What a device session's connection needs now, if anything: end it,
    /// or open one. An idle session (no connection, nothing to do) tells
    /// the pool here.
    pub(in crate::bridge) fn poll_transition(&mut self) -> Option<Transition> {
        if self.ending.is_some() {
            return None;
        }
        loop {
            match self.step()? {
                Step::End(end) => {
                    let (End::Close { publish_will } | End::Switch { publish_will }) = end;
                    self.ending = Some(end);
                    return Some(Transition::End { publish_will });
                }
                Step::Reconnect => {
                    self.ending = Some(End::Switch {
                        publish_will: false,
                    });
                    return Some(Transition::End {
                        publish_will: false,
                    });
                }
                Step::Open => {
                    if let Role::Device(d) = &mut self.role
                        && d.next.is_none()
                    {
                        d.next = d.close.as_ref().map(|c| c.params.clone());
                    }
                    return self.open_link();
                }
                Step::Finish => self.finish(),
            }
        }
    }

    /// No connection and nothing to do: tells the pool.
    fn finish(&mut self) {
        let Role::Device(d) = &mut self.role else {
            return;
        };
        d.finished_reported = true;
        let id = d.client_id_arc();
        // Opened, then closed before any answer: the device has gone.
        let owed = d.unreachable();
        let finished = TaskEvent::Finished {
            client_id: Arc::clone(&id),
            task: d.task,
            received: d.received,
        };
        self.push_statuses(&id, owed);
        self.events.push(finished);
        self.dirty = true;
    }

    /// Connects with the parameters waiting, if any.
    fn open_link(&mut self) -> Option<Transition> {
        let Role::Device(d) = &mut self.role else {
            return None;
        };
        let params = d.next.take()?;
        let identity = d.identities.identity(&params, &self.common.rules);
        debug!(session = %d.client_id, upstream_id = %identity.client_id, clean = params.clean_session, closing = d.close.is_some(), "device session connecting");
        let replays = std::mem::take(&mut d.replays);
        d.params = Some(params);
        d.finished_reported = false;
        self.linked = true;
        self.backoff.reset();
        self.retry_at = None;
        Some(Transition::Open {
            identity: Box::new(identity),
            replays,
        })
    }

    /// The task ended the connection [`Transition::End`] asked for (and
    /// dropped it).
    pub(in crate::bridge) fn handle_link_ended(&mut self, now: Instant) {
        self.input(now);
        let Some(end) = self.ending.take() else {
            return;
        };
        let (End::Close { publish_will } | End::Switch { publish_will }) = end;
        if publish_will {
            self.will_echo();
        }
        match end {
            End::Close { .. } => {
                // Nothing is left in the outbox (see `step`).
                self.link_gone();
                self.subs.clear_requests();
                if let Role::Device(d) = &mut self.role {
                    d.params = None;
                    d.close = None;
                    debug!(session = %d.client_id, publish_will, "device session closed");
                }
            }
            End::Switch { .. } => {
                let (replays, _) = self.mark_down();
                if let Role::Device(d) = &mut self.role {
                    d.replays = replays;
                    d.params = None;
                    d.will_on_switch = false;
                }
            }
        }
        self.linked = false;
        self.retry_at = None;
    }

    /// MQTT 3.1.1: the broker is about to publish the will, and the other
    /// sessions must not deliver it again (the engine did, locally).
    fn will_echo(&self) {
        let (Some(log), Some(d)) = (&self.common.echo, self.dev()) else {
            return;
        };
        let Some(params) = &d.params else {
            return;
        };
        let Some(will) = d.identities.identity(params, &self.common.rules).will else {
            return;
        };
        if let Ok(mut log) = log.lock() {
            log.published(self.now, &will.topic, &will.payload);
        }
    }

    /// The last resort for messages a refused session had already
    /// acknowledged to its device: the shared session takes them (they are
    /// durable with the store on) and they go up under the gateway's own
    /// identity, so the broker's ACL for the gateway applies to them.
    fn hand_over(&mut self, msgs: Vec<OutMessage>) {
        if msgs.is_empty() {
            return;
        }
        let bytes: usize = msgs.iter().map(|m| m.topic.len() + m.payload.len()).sum();
        let c = &self.common.counters;
        // Counted as handed over before this outbox stops counting them
        // (publish_gauges), so they are never unsettled in neither place.
        c.handed_over(msgs.len() as u64, bytes as u64);
        bump(&c.device_messages_to_shared, msgs.len() as u64);
        warn!(
            session = %self.name(),
            messages = msgs.len(),
            "a device session that stopped for good (refused, or taken over) held messages acknowledged to the device; the shared session takes them"
        );
        self.events.push(TaskEvent::Adopt(msgs));
    }

    /// The broker refused the session: it stops (no retry). What it held
    /// and the device still waits to hear about is refused to the device
    /// (the store forgets it); what was acknowledged to the device already
    /// goes to the shared session ([`hand_over`](Self::hand_over)).
    pub(super) fn on_refused(&mut self, reason: String) {
        bump(&self.common.counters.device_session_refusals, 1);
        self.stop_for_good(false);
        let Role::Device(d) = &mut self.role else {
            return;
        };
        let id = d.client_id_arc();
        let status = SessionStatus::Refused {
            reason: reason.clone(),
        };
        let mut statuses = d.answer_all(status.clone());
        if statuses.is_empty() {
            // Refused later, unasked: the engine disconnects the device.
            statuses.push(status);
        }
        info!(session = %id, %reason, "the broker refused a device session");
        self.push_statuses(&id, statuses);
    }

    /// The broker gave the session to another client with the same client
    /// id (`reported`: DISCONNECT 0x8E; otherwise inferred from quick
    /// losses in a row): the device went to another gateway. Final: no
    /// reconnect (that would take the session back and start a ping-pong),
    /// no will; what it held is acknowledged to the device and goes to the
    /// shared session (a copy may reach the broker twice, as QoS 1 allows;
    /// none is lost), and the engine
    /// is told [`SessionStatus::TakenOver`] so it lets the device go. The
    /// device's next OpenSession here starts afresh.
    pub(super) fn on_taken_over(&mut self, reported: bool) {
        bump(&self.common.counters.device_session_takeovers, 1);
        // The broker took the session over, not the messages: they still
        // go up, so the device (which may never resend from where it is
        // now) loses nothing.
        self.stop_for_good(true);
        self.takeover = super::takeover::TakeoverWatch::default();
        let Role::Device(d) = &mut self.role else {
            return;
        };
        let id = d.client_id_arc();
        let mut statuses = d.answer_all(SessionStatus::TakenOver);
        if statuses.is_empty() {
            statuses.push(SessionStatus::TakenOver);
        }
        let how = if reported {
            "the broker sent DISCONNECT 0x8E"
        } else {
            "inferred: the broker kept closing it soon after accepting it"
        };
        info!(
            session = %id,
            how,
            "device session taken over by another client (the device roamed to another gateway?): not reconnected, no will"
        );
        self.push_statuses(&id, statuses);
    }

    /// The session stops for good (refused, or taken over): no retry. What
    /// the device still waits to hear about is refused to it (the store
    /// forgets it) or, with `keep_owed`, acknowledged to it and kept; what
    /// is acknowledged goes to the shared session
    /// ([`hand_over`](Self::hand_over)).
    fn stop_for_good(&mut self, keep_owed: bool) {
        self.link_gone();
        self.subs.clear_requests();
        self.linked = false;
        self.retry_at = None;
        let mut acknowledged = Vec::new();
        for mut msg in self.outbox.drain_all() {
            match msg.ticket.take() {
                Some(ticket) if keep_owed => {
                    let ack = self.acks.remove(&ticket);
                    self.answer(ack, true);
                    acknowledged.push(msg);
                }
                Some(ticket) => {
                    let ack = self.acks.remove(&ticket);
                    self.answer(ack, false);
                    bump(&self.common.counters.rejected, 1);
                    self.settled.extend(msg.store_id);
                }
                None => acknowledged.push(msg),
            }
        }
        self.hand_over(acknowledged);
        let Role::Device(d) = &mut self.role else {
            return;
        };
        d.params = None;
        d.next = None;
        d.close = None;
        d.will_on_switch = false;
        d.replays.clear();
    }
}
