//! The decisions of one upstream session, sans IO: what to send next and in
//! which order, which acknowledgement settles which message, what the room
//! is, which filters are subscribed and when to send them again, which
//! incoming copy is an echo or a duplicate, and how long to wait before
//! reconnecting. The shared session and a device's own session are both
//! this one machine; the role ([`device`]) decides which commands it takes
//! and how a device's connection opens, switches and closes.
//!
//! It owns no socket, task or clock, in the style of the engine
//! (`core::Gateway`): the session task ([`super::session`]) feeds it what it
//! observes with the time it read — `handle_command`, `handle_event` (a
//! CONNACK, an acknowledgement, a message), `handle_connection_failed`,
//! `handle_timeout`… — then drains [`Machine::poll_output`] until `None`
//! (events for the driver, requests for rumqttc's channel, a room wake-up),
//! asks [`Machine::poll_transition`] what a device's connection needs, and
//! sleeps until [`Machine::poll_timeout`]. Each [`Output::Submit`] is
//! answered with [`Machine::handle_submitted`] before the next poll (an
//! unanswered one counts as taken).
//!
//! The shared gauges (outbox size, what was taken from the command channel)
//! are published as deltas when outputs are drained, so that the driver's
//! `room()`/`unsettled()` bound all sessions together.

mod commands;
mod device;
mod event;
mod refusals;
mod subscriptions;
mod takeover;
#[cfg(test)]
mod tests;
mod upstream;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::warn;

use super::backoff::Backoff;
use super::echo::EchoSeen;
use super::identities::DeviceIdentities;
use super::link::Window;
use super::outbox::{OutMessage, Outbox};
use super::{Common, ECHO_CAPACITY, ROOM_NOTIFY_BATCH, TaskEvent, bump, shift};
use crate::core::UpstreamAck;
pub(super) use device::Transition;
use device::{Device, End};
pub use event::{BrokerLimits, LinkEvent};
use subscriptions::Subscriptions;
pub(super) use upstream::Failure;

/// A request for rumqttc's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    /// One SUBSCRIBE: remote filter, QoS, subscription identifier.
    Subscribe(String, u8, usize),
    /// One UNSUBSCRIBE.
    Unsubscribe(String),
    /// The next message of the outbox, in order.
    Publish(OutMessage),
    /// Acknowledge an incoming QoS 1/2 PUBLISH (a device's session, manual
    /// acknowledgements): QoS, packet id.
    Ack(u8, u16),
}

/// What the session task must do.
#[derive(Debug)]
pub(super) enum Output {
    /// Hand this request to rumqttc's channel, then say whether it took it
    /// ([`Machine::handle_submitted`]).
    Submit(Request),
    /// Wake the driver: enough outbox room has freed.
    RoomFreed,
    /// Send this to the driver (in order).
    Event(TaskEvent),
}

/// What a session is for.
enum Role {
    /// The gateway's own session.
    Shared,
    /// A device's own session (per-device mode).
    Device(Box<Device>),
}

/// A request handed out by [`Machine::poll_output`] and not answered yet.
#[derive(Debug)]
enum Offer {
    Subscribe(String),
    Unsubscribe,
    Publish,
    Ack(u8, u16),
}

/// One session's state. See the module documentation.
pub(super) struct Machine {
    common: Arc<Common>,
    role: Role,
    /// The task holds a connection (rumqttc's two halves); a device session
    /// has none while refused, or closed and idle.
    linked: bool,
    window: Window,
    outbox: Outbox,
    subs: Subscriptions,
    connected: bool,
    /// Requests in rumqttc's channel, not yet taken by its event loop.
    in_channel: usize,
    /// MQTT 3.1.1: the echoes this session has swallowed.
    echo_seen: Option<EchoSeen>,
    backoff: Backoff,
    /// Waiting out the backoff after a connection failure until then.
    retry_at: Option<Instant>,
    /// Set once shutdown is asked: stop at this instant at the latest.
    deadline: Option<Instant>,
    /// The deadline has passed (or the command channel is gone): stop now.
    expired: bool,
    /// Consecutive messages refused by a full outbox (for logging).
    full_streak: u64,
    /// Durable ids settled outside the outbox (not bridged, dropped), until
    /// reported.
    settled: Vec<u64>,
    /// Replaying the durable outbox at start-up: its messages bypass the
    /// bounds (they were acknowledged before the restart).
    restoring: bool,
    /// Publish commands taken from the channel since the gauges were last
    /// published: (messages, bytes).
    taken: (u64, u64),
    /// The outbox size last added to the shared gauges: (messages, bytes).
    reported: (u64, u64),
    /// Outbox slots freed since the driver was last told.
    freed_since_notify: u64,
    /// Acknowledgements owed, by ticket: (device, token).
    acks: HashMap<u64, (Arc<str>, UpstreamAck)>,
    next_ticket: u64,
    /// Connections so far (bumped at each CONNACK): a downlink token names
    /// the connection its packet id belongs to.
    epoch: u32,
    /// Acknowledgements of incoming messages due (a device's session):
    /// (QoS, packet id) on the current connection.
    acks_due: VecDeque<(u8, u16)>,
    /// rumqttc's channel refused an acknowledgement: try again after the
    /// next input.
    acks_stalled: bool,
    /// Events for the driver, handed out at the next flush (in order).
    events: Vec<TaskEvent>,
    /// Outputs ready to be polled.
    out: VecDeque<Output>,
    offered: Option<Offer>,
    /// An input came since the gauges were last published.
    dirty: bool,
    /// The time of the latest input.
    now: Instant,
    /// The gauges were given back (the task panicked).
    given_back: bool,
    /// How the connection being ended by the task ends.
    ending: Option<End>,
    /// What the broker's latest CONNACK allows.
    limits: BrokerLimits,
    /// Whether another client keeps taking this session over.
    takeover: takeover::TakeoverWatch,
}

/// A hash of a client id, to seed its session's backoff differently from
/// every other session's (FNV-1a).
pub(super) fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Machine {
    fn new(now: Instant, common: Arc<Common>, role: Role, window: Window, seed: u64) -> Self {
        let cfg = &common.cfg;
        let backoff = Backoff::new(
            Duration::from_secs(u64::from(cfg.reconnect_min_secs)),
            Duration::from_secs(u64::from(cfg.reconnect_max_secs)),
            seed,
        );
        let subs = match role {
            Role::Shared => Subscriptions::new(common.rules.subscriptions()),
            Role::Device(_) => Subscriptions::new(Vec::new()),
        };
        Machine {
            outbox: Outbox::new(cfg.max_pending_messages, cfg.max_pending_bytes),
            echo_seen: common.echo.is_some().then(|| EchoSeen::new(ECHO_CAPACITY)),
            common,
            role,
            linked: false,
            window,
            subs,
            connected: false,
            in_channel: 0,
            backoff,
            retry_at: None,
            deadline: None,
            expired: false,
            full_streak: 0,
            settled: Vec::new(),
            restoring: false,
            taken: (0, 0),
            reported: (0, 0),
            freed_since_notify: 0,
            acks: HashMap::new(),
            next_ticket: 0,
            events: Vec::new(),
            out: VecDeque::new(),
            offered: None,
            epoch: 0,
            acks_due: VecDeque::new(),
            acks_stalled: false,
            dirty: false,
            now,
            given_back: false,
            ending: None,
            limits: BrokerLimits::default(),
            takeover: takeover::TakeoverWatch::default(),
        }
    }

    /// The shared session, whose connection the task holds from the start.
    /// `seed` spreads its reconnect delays.
    pub(super) fn shared(now: Instant, common: Arc<Common>, window: Window, seed: u64) -> Self {
        let mut m = Machine::new(now, common, Role::Shared, window, seed);
        m.linked = true;
        m
    }

    /// A device's session, with no connection yet: its first command is the
    /// OpenSession that made the pool start it. `seed` is mixed with the
    /// client id's hash.
    pub(super) fn device(
        now: Instant,
        common: Arc<Common>,
        identities: Arc<DeviceIdentities>,
        client_id: Arc<str>,
        task: u64,
        seed: u64,
    ) -> Self {
        bump(&common.counters.device_sessions_open, 1);
        let seed = seed ^ seed_of(&client_id);
        let device = Device::new(client_id, task, identities);
        Machine::new(
            now,
            common,
            Role::Device(Box::new(device)),
            Window::DEVICE,
            seed,
        )
    }

    pub(super) fn is_shared(&self) -> bool {
        matches!(self.role, Role::Shared)
    }

    /// For the log: the session's device, or "shared".
    pub(super) fn name(&self) -> &str {
        match &self.role {
            Role::Shared => "shared",
            Role::Device(d) => d.client_id(),
        }
    }

    /// Connected to the broker (a CONNACK came, no failure since).
    pub(super) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Messages in the outbox (queued or awaiting acknowledgement).
    pub(super) fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// Whether the task may take commands (no shutdown asked).
    pub(super) fn takes_commands(&self) -> bool {
        self.deadline.is_none()
    }

    /// Waiting out the backoff: the task must not poll the connection (it
    /// would reconnect at once) until [`poll_timeout`](Self::poll_timeout).
    pub(super) fn backing_off(&self) -> bool {
        self.retry_at.is_some()
    }

    /// Whether the task must stop: the shutdown deadline passed, or
    /// shutdown was asked and nothing is left to deliver (or no connection
    /// to deliver it on).
    pub(super) fn should_stop(&self) -> bool {
        self.expired || (self.deadline.is_some() && (self.outbox.is_empty() || !self.linked))
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) is due: the
    /// end of the backoff or the shutdown deadline.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match (self.retry_at, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: the backoff ends, the shutdown deadline expires.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.input(now);
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
        }
        if self.deadline.is_some_and(|at| at <= now) {
            self.expired = true;
        }
    }

    /// Shutdown is asked: keep delivering for up to `grace`.
    pub(super) fn handle_shutdown(&mut self, now: Instant, grace: Duration) {
        self.input(now);
        tracing::debug!(session = %self.name(), ?grace, "upstream session: shutdown asked");
        self.deadline = Some(now + grace);
    }

    /// The command channel is gone (the handle was dropped, or the pool
    /// forgot this session): stop now.
    pub(super) fn handle_closed(&mut self, now: Instant) {
        self.input(now);
        self.deadline = Some(now);
        self.expired = true;
    }

    /// The task stops (its connection, if any, was ended).
    pub(super) fn handle_stopped(&mut self, now: Instant) {
        self.input(now);
        self.link_gone();
    }

    fn input(&mut self, now: Instant) {
        self.settle_offer();
        self.acks_stalled = false;
        self.now = now;
        self.dirty = true;
    }

    /// The next thing the task must do; call until `None` after every input.
    pub(super) fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Some(o);
            }
            self.settle_offer();
            if let Some(req) = self.next_submission() {
                return Some(Output::Submit(req));
            }
            if !self.dirty {
                return None;
            }
            self.dirty = false;
            self.publish_gauges();
            self.flush();
        }
    }

    /// An unanswered request counts as taken.
    fn settle_offer(&mut self) {
        if self.offered.is_some() {
            self.handle_submitted(true);
        }
    }

    /// What comes next for rumqttc's channel: subscription requests, then
    /// queued messages in order, as far as its capacity and the in-flight
    /// window allow.
    fn next_submission(&mut self) -> Option<Request> {
        if !self.connected || !self.linked || self.offered.is_some() {
            return None;
        }
        // One slot stays free for a DISCONNECT: a device session that ends
        // or switches must never lose it to a full channel (the broker would
        // then publish the will).
        if self.in_channel + 1 >= self.window.request_channel {
            return None;
        }
        // Acknowledgements first: the broker holds its window for them.
        if !self.acks_stalled
            && let Some((qos, pkid)) = self.acks_due.pop_front()
        {
            self.offered = Some(Offer::Ack(qos, pkid));
            return Some(Request::Ack(qos, pkid));
        }
        while let Some(req) = self.subs.next_request() {
            if let Request::Subscribe(filter, ..) = &req
                && let Some(reason) = self.filter_unsupported(filter)
            {
                let outcome = self.subs.refuse_unsent(filter, reason);
                self.filter_outcome(outcome);
                continue;
            }
            self.offered = Some(match &req {
                Request::Subscribe(filter, ..) => Offer::Subscribe(filter.clone()),
                _ => Offer::Unsubscribe,
            });
            return Some(req);
        }
        let window = self
            .limits
            .receive_max
            .map_or(self.window.inflight, |r| r.min(self.window.inflight));
        loop {
            // A suspect goes alone: nothing else while it is out, and it
            // waits until nothing else is.
            if self.outbox.suspect_out() || self.outbox.in_flight() >= usize::from(window) {
                return None;
            }
            let msg = self.outbox.peek_queued()?;
            if let Some(reason) = self.refusal_before_sending(msg) {
                if let Some(msg) = self.outbox.discard_queued() {
                    self.quarantine(&msg, reason);
                }
                continue;
            }
            if self.outbox.head_is_suspect() && self.outbox.in_flight() > 0 {
                return None;
            }
            let msg = msg.clone();
            self.offered = Some(Offer::Publish);
            return Some(Request::Publish(msg));
        }
    }

    /// Whether rumqttc took the request last handed out by
    /// [`poll_output`](Self::poll_output). The channel has room (the machine
    /// counts), so a refusal is rumqttc's own verdict on the request (e.g.
    /// an invalid topic or filter): it is skipped.
    pub(super) fn handle_submitted(&mut self, taken: bool) {
        let Some(offer) = self.offered.take() else {
            return;
        };
        match offer {
            Offer::Subscribe(filter) if !taken => {
                let outcome = self.subs.rumqttc_refused(&filter);
                self.filter_outcome(outcome);
            }
            Offer::Unsubscribe if !taken => {
                warn!("upstream: rumqttc refused an unsubscribe request; skipped");
            }
            Offer::Subscribe(filter) => {
                self.subs.sent_subscribe(filter);
                self.in_channel += 1;
            }
            Offer::Unsubscribe => self.in_channel += 1,
            // rumqttc takes an acknowledgement from its channel without
            // an event: not counted there.
            Offer::Ack(..) if taken => {}
            Offer::Ack(qos, pkid) => {
                self.acks_due.push_front((qos, pkid));
                self.acks_stalled = true;
            }
            Offer::Publish if taken => {
                if let Some(msg) = self.outbox.peek_queued()
                    && let Some(log) = &self.common.echo
                    && (self.common.per_device || self.subs.any_matches(&msg.topic))
                    && let Ok(mut log) = log.lock()
                {
                    log.published(self.now, &msg.topic, &msg.payload);
                }
                self.outbox.mark_submitted();
                self.in_channel += 1;
            }
            Offer::Publish => {
                if let Some(bad) = self.outbox.discard_queued() {
                    bump(&self.common.counters.rejected, 1);
                    self.quarantine(&bad, "rumqttc would not send it".into());
                }
                self.dirty = true;
            }
        }
    }

    /// Hands out the events in order, then which durable messages left.
    fn flush(&mut self) {
        // Settled ahead of the devices' acknowledgements: the engine then
        // knows the broker has those messages and need not write them
        // (core's linger.rs).
        let mut ids = std::mem::take(&mut self.settled);
        ids.extend(self.outbox.take_settled());
        if !ids.is_empty() {
            self.events
                .push(TaskEvent::Public(super::BridgeEvent::Settled(ids)));
        }
        self.answer_tickets(Vec::new());
        self.out.extend(self.events.drain(..).map(Output::Event));
    }

    fn publish_gauges(&mut self) {
        // Outbox first, then what was taken from the channel, with Release:
        // a reader that sees the new `taken` (Acquire) sees this outbox too.
        let c = &self.common.counters;
        let len = self.outbox.len() as u64;
        let bytes = self.outbox.bytes() as u64;
        let (before, before_bytes) = self.reported;
        shift(&c.pending_messages, before, len);
        shift(&c.pending_bytes, before_bytes, bytes);
        self.reported = (len, bytes);
        let room = &c.room;
        let (taken, taken_bytes) = std::mem::take(&mut self.taken);
        if taken > 0 || taken_bytes > 0 {
            room.taken_messages.fetch_add(taken, Ordering::Release);
            room.taken_bytes.fetch_add(taken_bytes, Ordering::Release);
        }
        // Wake the driver (which releases parked device messages) once enough
        // room has freed, not on every acknowledgement: under sustained load
        // that would bounce between the two threads once per message.
        if len < before {
            self.freed_since_notify += before - len;
            if self.freed_since_notify >= ROOM_NOTIFY_BATCH || len == 0 {
                self.freed_since_notify = 0;
                self.out.push_back(Output::RoomFreed);
            }
        }
    }
}

impl Drop for Machine {
    /// A session's share of the gauges leaves with it, however its task
    /// ends: at the end of its run, or when it panicked (or was aborted).
    /// What a panicked session held is lost: it no longer counts as
    /// pending, or room and `unsettled()` would never recover. At an orderly
    /// end what is left stays counted (the shutdown figures say how many
    /// messages were not delivered).
    fn drop(&mut self) {
        self.link_gone();
        if std::thread::panicking() {
            self.give_back();
        }
        if let Role::Device(_) = self.role {
            let c = &self.common.counters;
            c.device_sessions_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Machine {
    /// The task panicked: what this session holds is lost, so its share of
    /// the gauges (and what it took from the channel) is given back at once.
    /// The driver should then be woken; a second call does nothing.
    pub(super) fn give_back(&mut self) {
        if std::mem::replace(&mut self.given_back, true) {
            return;
        }
        let c = Arc::clone(&self.common.counters);
        let (messages, bytes) = std::mem::take(&mut self.reported);
        shift(&c.pending_messages, messages, 0);
        shift(&c.pending_bytes, bytes, 0);
        let (taken, taken_bytes) = std::mem::take(&mut self.taken);
        c.room.taken_messages.fetch_add(taken, Ordering::Release);
        c.room.taken_bytes.fetch_add(taken_bytes, Ordering::Release);
        warn!(session = %self.name(), lost = self.outbox.len(), "upstream session task panicked");
    }
}
