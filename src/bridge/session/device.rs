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
//!   session stops: no retry; what it held is refused too.
//! - **Close**: what the session holds keeps going up for a short bounded
//!   while ([`CLOSE_DRAIN`]); then DISCONNECT (`publish_will: false`), or
//!   the connection is simply dropped so the broker publishes the will
//!   (`publish_will: true`). What could not be delivered in time is handed
//!   to the shared session (it was accepted from the device; docs/bridge.md).
//! - A session with no connection and nothing to do tells the pool, which
//!   forgets it once it has had every command (`pool.rs`).
//!
//! [`UpstreamCommand::OpenSession`]: crate::core::UpstreamCommand::OpenSession

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Role, Session, TaskEvent};
use crate::bridge::identities::DeviceIdentities;
use crate::bridge::link::{self, LinkLoop};
use crate::bridge::outbox::Replay;
use crate::bridge::{BridgeEvent, bump};
use crate::core::{SessionParams, SessionStatus};

/// How long a closing session keeps delivering what it holds.
pub(crate) const CLOSE_DRAIN: Duration = Duration::from_secs(3);

/// How long a device's messages restored from the store wait for the
/// device's session to be opened before the shared session takes them.
pub(crate) const RESTORED_HOLD: Duration = Duration::from_secs(60);

/// A close asked for.
#[derive(Debug, Clone, Copy)]
struct Close {
    until: Instant,
    publish_will: bool,
}

/// How a connection ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The device left: with DISCONNECT, or (`publish_will`) without.
    Close { publish_will: bool },
    /// New parameters: DISCONNECT, keep the outbox for the next connection.
    Switch,
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
    close: Option<Close>,
    /// `Finished` was sent and no command came since.
    finished_reported: bool,
    /// Replays (same packet ids) for the next connection after a switch.
    replays: Vec<Replay>,
    /// Restored messages wait for an OpenSession until then.
    hold_until: Option<Instant>,
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
            // Nothing to report before the first command.
            finished_reported: true,
            replays: Vec::new(),
            hold_until: None,
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

impl Session {
    /// The session's device state, if it is a device's.
    fn dev(&self) -> Option<&Device> {
        match &self.role {
            Role::Device(d) => Some(d),
            Role::Shared => None,
        }
    }

    fn push_statuses(&mut self, client_id: &Arc<str>, statuses: Vec<SessionStatus>) {
        for status in statuses {
            self.out.push(TaskEvent::Public(BridgeEvent::SessionStatus {
                client_id: Arc::clone(client_id),
                status,
            }));
        }
    }

    /// [`UpstreamCommand::OpenSession`](crate::core::UpstreamCommand::OpenSession).
    pub(super) fn open(&mut self, params: SessionParams) {
        let connected = self.connected;
        let has_link = self.client.is_some();
        let Role::Device(d) = &mut self.role else {
            debug!("OpenSession on the shared session; ignored");
            return;
        };
        d.owed += 1;
        let reuse = has_link
            && d.close.is_none()
            && d.next.is_none()
            && !params.clean_session
            && d.params.as_ref() == Some(&params);
        if reuse {
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
            self.forget_subscriptions();
        }
    }

    /// [`UpstreamCommand::CloseSession`](crate::core::UpstreamCommand::CloseSession).
    pub(super) fn close(&mut self, publish_will: bool) {
        let has_link = self.client.is_some();
        let Role::Device(d) = &mut self.role else {
            debug!("CloseSession on the shared session; ignored");
            return;
        };
        d.next = None;
        if has_link {
            d.close = Some(Close {
                until: Instant::now() + CLOSE_DRAIN,
                publish_will,
            });
        }
    }

    /// Whether a device's message can still go up on this session (not
    /// refused, not ended).
    pub(super) fn can_publish(&self) -> bool {
        self.dev()
            .is_none_or(|d| self.client.is_some() || d.next.is_some())
    }

    /// When the session must act at the latest without being asked: a
    /// closing session ends, restored messages stop waiting.
    pub(super) fn wake_deadline(&self) -> Option<Instant> {
        let d = self.dev()?;
        match &self.client {
            Some(_) => d.close.map(|c| c.until),
            None => d.hold_until.filter(|_| !self.outbox.is_empty()),
        }
    }

    /// Messages restored from the store reached a session with no
    /// connection: they wait for the device's OpenSession (sleeping devices
    /// get theirs at once after a restart; others when they reconnect).
    pub(super) fn hold_restored(&mut self) {
        let idle = self.client.is_none();
        if let Role::Device(d) = &mut self.role
            && idle
            && d.next.is_none()
            && d.hold_until.is_none()
        {
            d.hold_until = Some(Instant::now() + RESTORED_HOLD);
        }
    }

    /// Restored messages still waiting for the device's session.
    fn holding(&self) -> bool {
        self.dev()
            .and_then(|d| d.hold_until)
            .is_some_and(|t| Instant::now() < t && !self.outbox.is_empty())
    }

    /// Whether [`transition`](Self::transition) has something to do now.
    pub(super) fn needs_transition(&self) -> bool {
        let Some(d) = self.dev() else {
            return false;
        };
        if self.deadline.is_some() {
            return false;
        }
        match (&self.client, &d.close) {
            (Some(_), Some(c)) => self.outbox.is_empty() || Instant::now() >= c.until,
            (Some(_), None) => d.next.is_some(),
            (None, _) => d.next.is_some() || (!d.finished_reported && !self.holding()),
        }
    }

    /// Ends, replaces or opens a device session's connection as its state
    /// asks; an idle session tells the pool.
    pub(super) async fn transition(&mut self, link: &mut Option<LinkLoop>) {
        if !self.needs_transition() {
            return;
        }
        let Some(d) = self.dev() else {
            return;
        };
        let (close, switching) = (d.close, d.next.is_some());
        if link.is_some() {
            match close {
                Some(c) if self.outbox.is_empty() || Instant::now() >= c.until => {
                    if let Role::Device(d) = &mut self.role {
                        d.close = None;
                    }
                    let publish_will = c.publish_will;
                    self.end_link(link, End::Close { publish_will }).await;
                }
                None if switching => self.end_link(link, End::Switch).await,
                _ => {}
            }
        }
        if link.is_none() {
            *link = self.open_link();
        }
        if link.is_none() && !self.outbox.is_empty() {
            if self.holding() {
                return;
            }
            // Restored messages whose device did not come back in time.
            self.hand_over();
        }
        if link.is_none()
            && let Role::Device(d) = &mut self.role
            && !d.finished_reported
        {
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
            self.out.push(finished);
        }
    }

    /// Connects with the parameters waiting, if any.
    fn open_link(&mut self) -> Option<LinkLoop> {
        let Role::Device(d) = &mut self.role else {
            return None;
        };
        let params = d.next.take()?;
        let identity = d.identities.identity(&params, &self.common.rules);
        debug!(session = %d.client_id, upstream_id = %identity.client_id, clean = params.clean_session, "device session connecting");
        let (client, mut event_loop) = link::build(&self.common.cfg, &identity);
        event_loop.replace_pending(&std::mem::take(&mut d.replays));
        d.params = Some(params);
        d.finished_reported = false;
        d.hold_until = None;
        self.client = Some(client);
        self.backoff.reset();
        Some(event_loop)
    }

    /// Ends the current connection (see [`End`]).
    async fn end_link(&mut self, link: &mut Option<LinkLoop>, end: End) {
        let Some(mut event_loop) = link.take() else {
            return;
        };
        match end {
            End::Close { publish_will: true } => {
                self.take_buffered(&mut event_loop);
                self.will_echo();
            }
            End::Close {
                publish_will: false,
            }
            | End::Switch => self.disconnect(&mut event_loop).await,
        }
        // Closes the socket; without DISCONNECT the broker publishes the will.
        drop(event_loop);
        match end {
            End::Close { publish_will } => {
                self.link_gone();
                self.control.clear();
                if let Role::Device(d) = &mut self.role {
                    d.params = None;
                    debug!(session = %d.client_id, publish_will, "device session closed");
                }
                self.hand_over();
            }
            End::Switch => {
                let (replays, _) = self.mark_down();
                if let Role::Device(d) = &mut self.role {
                    d.replays = replays;
                    d.params = None;
                }
            }
        }
        self.client = None;
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
            log.published(std::time::Instant::now(), &will.topic, &will.payload);
        }
    }

    /// A closed session's undelivered messages go to the shared session:
    /// they were accepted from the device (and are durable with the store
    /// on), so they are not dropped; they go up under the gateway's own
    /// identity.
    fn hand_over(&mut self) {
        let released = self.outbox.release_tickets();
        self.answer_tickets(released);
        let msgs = self.outbox.drain_all();
        if msgs.is_empty() {
            return;
        }
        let bytes: usize = msgs.iter().map(|m| m.topic.len() + m.payload.len()).sum();
        // Counted as handed over before this outbox stops counting them
        // (publish_gauges), so they are never unsettled in neither place.
        self.common
            .counters
            .handed_over(msgs.len() as u64, bytes as u64);
        warn!(
            session = %self.name(),
            messages = msgs.len(),
            "device session closed before delivering everything; the shared session takes the rest"
        );
        self.out.push(TaskEvent::Adopt(msgs));
    }

    /// The broker refused the session: it stops (no retry), and what it
    /// held is refused too (the device is told, the store forgets it).
    pub(super) fn on_refused(&mut self, reason: String) {
        self.link_gone();
        self.control.clear();
        self.client = None;
        bump(&self.common.counters.device_session_refusals, 1);
        for ticket in self.outbox.release_tickets() {
            let ack = self.acks.remove(&ticket);
            self.answer(ack, false);
        }
        for msg in self.outbox.drain_all() {
            bump(&self.common.counters.rejected, 1);
            self.settled.extend(msg.store_id);
        }
        let Role::Device(d) = &mut self.role else {
            return;
        };
        d.params = None;
        d.next = None;
        d.close = None;
        d.replays.clear();
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
}
