//! One upstream MQTT session as a tokio task — the shared session (every
//! device in aggregate mode; local clients and QoS −1 in per-device mode) or
//! one device's own session. One code path for both: the role only decides
//! which commands a session takes, what it tells the driver about, and (for
//! a device, in [`device`]) how its connection opens, switches and closes.
//!
//! The task owns its outbox, its subscriptions and rumqttc's two halves; it
//! always polls the event loop, never lets a command wait behind it (see
//! [`Session::wait`]), and publishes its share of the bridge's gauges as
//! deltas, so that the driver's `room()`/`unsettled()` bound all sessions
//! together.

mod device;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::echo::EchoSeen;
use super::identities::DeviceIdentities;
use super::link::{self, Identity, LinkClient, LinkError, LinkEvent, LinkLoop, Window};
use super::outbox::{self, Ack, OutMessage, Outbox};
use super::{
    BridgeEvent, Common, Control, DISCONNECT_WAIT, ECHO_CAPACITY, ROOM_NOTIFY_BATCH, TaskEvent,
    bump, shift,
};
use crate::config::OutboxFull;
use crate::core::{UpstreamAck, UpstreamCommand, UpstreamMessage};
pub(super) use device::Device;

/// A SUBSCRIBE or UNSUBSCRIBE waiting for room in rumqttc's channel.
enum Request {
    /// One SUBSCRIBE: remote filter, QoS, subscription identifier.
    Subscribe(String, u8, usize),
    Unsubscribe(String),
}

/// What a session is for.
enum Role {
    /// The gateway's own session.
    Shared,
    /// A device's own session (per-device mode).
    Device(Box<Device>),
}

/// The task's state. See the module documentation.
pub(super) struct Session {
    common: Arc<Common>,
    role: Role,
    /// rumqttc's submitting half; `None` while a device session has no
    /// connection (refused, or closed and idle).
    client: Option<LinkClient>,
    window: Window,
    outbox: Outbox,
    /// Subscription identifiers of the upstream filters.
    sub_ids: SubscriptionIds,
    /// Filters sent in a SUBSCRIBE whose SUBACK has not come yet, in order
    /// (one filter per SUBSCRIBE; brokers answer in order).
    awaiting_suback: VecDeque<String>,
    /// Filters the broker has accepted on this connection: only these can be
    /// the representative in `copy_scope` (a filter still pending or refused
    /// would make the bridge drop the copies it does get).
    confirmed: HashSet<String>,
    /// Upstream subscriptions (remote filter → QoS): the rules' (static) or
    /// the subscribers' (dynamic, when there are no rules).
    subscriptions: BTreeMap<String, u8>,
    /// Subscription requests not yet in rumqttc's channel.
    control: VecDeque<Request>,
    connected: bool,
    /// Requests in rumqttc's channel, not yet taken by its event loop.
    in_channel: usize,
    /// MQTT 3.1.1: the echoes this session has swallowed.
    echo_seen: Option<EchoSeen>,
    backoff: Backoff,
    /// Set once shutdown is asked: stop at this instant at the latest.
    deadline: Option<Instant>,
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
    /// Events for the driver, sent at the next flush (in order).
    out: Vec<TaskEvent>,
}

/// MQTT 5 subscription identifiers for the upstream filters: stable while a
/// filter is subscribed, never reused while the process runs (1..=268,435,455).
#[derive(Debug, Default)]
struct SubscriptionIds {
    by_filter: HashMap<String, usize>,
    by_id: HashMap<usize, String>,
    last: usize,
}

impl SubscriptionIds {
    /// The filter's identifier, assigning one on first use.
    fn id(&mut self, filter: &str) -> usize {
        if let Some(&id) = self.by_filter.get(filter) {
            return id;
        }
        // The identifier is a variable byte integer: at most 268,435,455.
        self.last = if self.last >= 268_435_455 {
            1
        } else {
            self.last + 1
        };
        self.by_filter.insert(filter.to_owned(), self.last);
        self.by_id.insert(self.last, filter.to_owned());
        self.last
    }

    fn get(&self, filter: &str) -> Option<usize> {
        self.by_filter.get(filter).copied()
    }

    fn filter(&self, id: usize) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    fn forget(&mut self, filter: &str) {
        if let Some(id) = self.by_filter.remove(filter) {
            self.by_id.remove(&id);
        }
    }
}

/// How a wait ended.
enum Woke<T> {
    Done(T),
    /// Shutdown: stop now.
    Deadline,
    /// A device session's connection must change (see `device.rs`).
    Interrupted,
}

/// A hash of a client id, to seed its session's backoff differently from
/// every other session's (FNV-1a).
fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Session {
    fn new(common: Arc<Common>, role: Role, window: Window, seed: u64) -> Self {
        let cfg = &common.cfg;
        let backoff = Backoff::new(
            std::time::Duration::from_secs(u64::from(cfg.reconnect_min_secs)),
            std::time::Duration::from_secs(u64::from(cfg.reconnect_max_secs)),
            Backoff::clock_seed() ^ seed,
        );
        let subscriptions = match role {
            Role::Shared => common.rules.subscriptions().into_iter().collect(),
            Role::Device(_) => BTreeMap::new(),
        };
        Session {
            outbox: Outbox::new(cfg.max_pending_messages, cfg.max_pending_bytes),
            echo_seen: common.echo.is_some().then(|| EchoSeen::new(ECHO_CAPACITY)),
            common,
            role,
            client: None,
            window,
            sub_ids: SubscriptionIds::default(),
            awaiting_suback: VecDeque::new(),
            confirmed: HashSet::new(),
            subscriptions,
            control: VecDeque::new(),
            connected: false,
            in_channel: 0,
            backoff,
            deadline: None,
            full_streak: 0,
            settled: Vec::new(),
            restoring: false,
            taken: (0, 0),
            reported: (0, 0),
            freed_since_notify: 0,
            acks: HashMap::new(),
            next_ticket: 0,
            out: Vec::new(),
        }
    }

    /// The shared session and its event loop.
    pub(super) fn shared(common: Arc<Common>, identity: &Identity) -> (Session, LinkLoop) {
        let (client, event_loop) = link::build(&common.cfg, identity);
        let mut s = Session::new(common, Role::Shared, identity.window, 0);
        s.client = Some(client);
        (s, event_loop)
    }

    /// A device's session, not connected yet: its first command is the
    /// OpenSession that made the pool start it.
    pub(super) fn device(
        common: Arc<Common>,
        identities: Arc<DeviceIdentities>,
        client_id: Arc<str>,
        task: u64,
    ) -> Session {
        bump(&common.counters.device_sessions_open, 1);
        let seed = seed_of(&client_id);
        Session::new(
            common,
            Role::Device(Box::new(Device::new(client_id, task, identities))),
            Window::DEVICE,
            seed,
        )
    }

    fn is_shared(&self) -> bool {
        matches!(self.role, Role::Shared)
    }

    /// The task: poll the link (when there is one) while taking commands,
    /// until shutdown (or, for a device session, until the pool forgets it).
    pub(super) async fn run(
        mut self,
        mut link: Option<LinkLoop>,
        control: mpsc::UnboundedReceiver<Control>,
    ) {
        let mut commands = Commands {
            rx: control,
            common: Arc::clone(&self.common),
        };
        let control = &mut commands.rx;
        if self.is_shared() {
            info!(broker = %self.common.endpoint, "upstream bridge started");
        }
        loop {
            self.transition(&mut link).await;
            self.flush().await;
            let woke = match link.as_mut() {
                Some(l) => self.wait(l.poll(), control).await,
                None => {
                    let idle = std::future::pending::<Result<LinkEvent, LinkError>>();
                    self.wait(idle, control).await
                }
            };
            match woke {
                Woke::Deadline => break,
                Woke::Interrupted => {}
                Woke::Done(Ok(ev)) => self.on_event(ev),
                Woke::Done(Err(LinkError::Refused(reason))) if !self.is_shared() => {
                    if let Some(l) = link.as_mut() {
                        self.take_buffered(l);
                    }
                    link = None;
                    self.on_refused(reason);
                }
                Woke::Done(Err(e)) => {
                    if let Some(l) = link.as_mut() {
                        self.on_connection_error(l, e.to_string());
                    }
                    if self.deadline.is_some() && self.outbox.is_empty() {
                        break;
                    }
                    let delay = self.backoff.next_delay();
                    debug!(?delay, "upstream: waiting before reconnecting");
                    self.flush().await;
                    if let Woke::Deadline = self.wait(tokio::time::sleep(delay), control).await {
                        break;
                    }
                }
            }
            self.pump();
            self.publish_gauges();
            self.flush().await;
            if self.deadline.is_some() && (self.outbox.is_empty() || link.is_none()) {
                break;
            }
        }
        if let Some(l) = link.as_mut() {
            self.disconnect(l).await;
        }
        self.link_gone();
        self.publish_gauges();
        self.flush().await;
        let left = self.outbox.len();
        if left > 0 {
            warn!(
                session = %self.name(),
                messages = left,
                "upstream session stopped with undelivered messages"
            );
        }
        if self.is_shared() {
            info!("upstream bridge stopped");
        }
        // `Drop` gives back the session's share of the gauges.
    }

    /// For the log: the session's device, or "shared".
    fn name(&self) -> &str {
        match &self.role {
            Role::Shared => "shared",
            Role::Device(d) => d.client_id(),
        }
    }

    /// Awaits `fut` while handling control messages; never cancels `fut`
    /// (rumqttc's poll is not cancel-safe) except at the shutdown deadline,
    /// or when a device session's connection must be replaced or closed
    /// (it is dropped or disconnected next).
    async fn wait<F: Future>(
        &mut self,
        fut: F,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Woke<F::Output> {
        tokio::pin!(fut);
        loop {
            if self.needs_transition() {
                return Woke::Interrupted;
            }
            let deadline = self.deadline;
            tokio::select! {
                out = &mut fut => return Woke::Done(out),
                msg = control.recv(), if deadline.is_none() => {
                    match msg {
                        Some(Control::Command(cmd)) => self.on_command(cmd),
                        Some(Control::Restore(cmds)) => {
                            self.restoring = true;
                            for cmd in cmds {
                                self.on_command(cmd);
                            }
                            self.restoring = false;
                            self.restored();
                        }
                        Some(Control::Adopt(msgs)) => self.adopt(msgs),
                        Some(Control::Shutdown(grace)) => {
                            debug!(session = %self.name(), ?grace, "upstream session: shutdown asked");
                            self.deadline = Some(Instant::now() + grace);
                            if self.outbox.is_empty() || self.client.is_none() {
                                return Woke::Deadline;
                            }
                        }
                        // The handle was dropped, or the pool forgot this
                        // session: stop now.
                        None => {
                            self.deadline = Some(Instant::now());
                            return Woke::Deadline;
                        }
                    }
                    self.pump();
                    self.publish_gauges();
                    self.flush().await;
                }
                () = sleep_until_opt(deadline) => return Woke::Deadline,
            }
        }
    }

    fn on_command(&mut self, cmd: UpstreamCommand) {
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
                    return;
                }
                self.subscribe(filter, qos);
            }
            UpstreamCommand::Unsubscribe { filter } if self.is_shared() => {
                if self.common.rules.is_transparent() {
                    self.unsubscribe(&filter);
                }
            }
            UpstreamCommand::SessionSubscribe { filter, qos, .. } if !self.is_shared() => {
                match self.common.rules.remote_filter(&filter) {
                    Some(remote) => self.subscribe(remote, qos),
                    None => {
                        debug!(%filter, "no `in` rule covers a device's filter; not subscribed upstream")
                    }
                }
            }
            UpstreamCommand::SessionUnsubscribe { filter, .. } if !self.is_shared() => {
                if let Some(remote) = self.common.rules.remote_filter(&filter) {
                    self.unsubscribe(&remote);
                }
            }
            UpstreamCommand::OpenSession(params) => self.open(params),
            UpstreamCommand::CloseSession { publish_will, .. } => self.close(publish_will),
            other => {
                debug!(session = %self.name(), ?other, "command not for this session; ignored")
            }
        }
    }

    fn subscribe(&mut self, filter: String, qos: u8) {
        let qos = qos.min(2);
        if self.subscriptions.insert(filter.clone(), qos) != Some(qos) && self.connected {
            let id = self.sub_ids.id(&filter);
            self.control.push_back(Request::Subscribe(filter, qos, id));
        }
    }

    fn unsubscribe(&mut self, filter: &str) {
        if self.subscriptions.remove(filter).is_some() {
            self.sub_ids.forget(filter);
            self.confirmed.remove(filter);
            if self.connected {
                self.control
                    .push_back(Request::Unsubscribe(filter.to_owned()));
            }
        }
    }

    /// Forgets every subscription (a device that starts a clean session).
    fn forget_subscriptions(&mut self) {
        let filters: Vec<String> = self.subscriptions.keys().cloned().collect();
        for f in &filters {
            self.unsubscribe(f);
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
    fn answer(&mut self, ack: Option<(Arc<str>, UpstreamAck)>, accepted: bool) {
        if let Some((client_id, ack)) = ack {
            self.out.push(TaskEvent::Public(BridgeEvent::SessionAck {
                client_id,
                ack,
                accepted,
            }));
        }
    }

    /// Answers the tickets the outbox reports, and `released` ones (held
    /// messages now answered as queued) as accepted.
    fn answer_tickets(&mut self, released: Vec<u64>) {
        let answered = self.outbox.take_answered();
        for (ticket, ok) in released.into_iter().map(|t| (t, true)).chain(answered) {
            let ack = self.acks.remove(&ticket);
            self.answer(ack, ok);
        }
    }

    /// Messages another (closed) session could not deliver: kept whatever
    /// the bounds, as a restored outbox is (they were accepted).
    fn adopt(&mut self, msgs: Vec<OutMessage>) {
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

    /// Which copy of a message to pass on when overlapping upstream
    /// subscriptions make the broker send one copy per subscription (MQTT 5,
    /// e.g. mosquitto). `Some(None)`: pass it to every subscriber;
    /// `Some(Some(filter))`: pass it only to subscribers of `filter`;
    /// `None`: a duplicate, drop it.
    ///
    /// - A retained copy carrying one identifier (the broker's answer to that
    ///   subscription, or its per-subscription copy of a retained update)
    ///   goes to that filter's subscribers only; the engine skips it for
    ///   them when its store already holds the same value.
    /// - Otherwise the copy passed on is the one carrying the identifier of
    ///   the smallest of our *confirmed* filters that match the topic:
    ///   exactly one copy carries it, whether the broker sends one copy per
    ///   subscription or one with every identifier. Filters still awaiting
    ///   their SUBACK, or refused, are never the representative, so the
    ///   copies the broker does send are not mistaken for duplicates.
    /// - Without identifiers (MQTT 3.1.1, or a broker that omits them) every
    ///   copy passes (see docs/bridge.md).
    fn copy_scope(&self, topic: &str, ids: &[usize], retain: bool) -> Option<Option<String>> {
        if ids.is_empty() {
            return Some(None);
        }
        // Only transparent mode has local filters equal to remote ones.
        if retain
            && let [id] = ids
            && self.common.rules.is_transparent()
            && let Some(filter) = self.sub_ids.filter(*id)
        {
            return Some(Some(filter.to_owned()));
        }
        let representative = self
            .subscriptions
            .keys()
            .filter(|f| self.confirmed.contains(*f))
            .find(|f| crate::core::topic::matches(f, topic))
            .and_then(|f| self.sub_ids.get(f));
        match representative {
            None => Some(None),
            Some(rep) if ids.contains(&rep) => Some(None),
            Some(_) if retain => Some(None),
            Some(_) => None,
        }
    }

    /// Moves subscription requests, then queued messages, into rumqttc's
    /// channel, as far as its capacity and the in-flight window allow.
    fn pump(&mut self) {
        if !self.connected {
            return;
        }
        let Some(client) = &self.client else {
            return;
        };
        // One slot stays free for a DISCONNECT: a device session that ends
        // or switches must never lose it to a full channel (the broker would
        // then publish the will).
        while self.in_channel + 1 < self.window.request_channel {
            if let Some(req) = self.control.pop_front() {
                let ok = match &req {
                    Request::Subscribe(filter, qos, id) => {
                        let ok = client.try_subscribe(filter, *qos, *id);
                        if ok {
                            self.awaiting_suback.push_back(filter.clone());
                        }
                        ok
                    }
                    Request::Unsubscribe(filter) => client.try_unsubscribe(filter),
                };
                if ok {
                    self.in_channel += 1;
                } else {
                    // The channel has room (we count), so rumqttc refused
                    // the request itself, e.g. an invalid filter.
                    warn!("upstream: rumqttc refused a (un)subscribe request; skipped");
                }
                continue;
            }
            if self.outbox.in_flight() >= usize::from(self.window.inflight) {
                break;
            }
            let Some(msg) = self.outbox.peek_queued() else {
                break;
            };
            if client.try_publish(msg) {
                if let Some(log) = &self.common.echo
                    && (self.common.per_device
                        || self
                            .subscriptions
                            .keys()
                            .any(|f| crate::core::topic::matches(f, &msg.topic)))
                    && let Ok(mut log) = log.lock()
                {
                    log.published(std::time::Instant::now(), &msg.topic, &msg.payload);
                }
                self.outbox.mark_submitted();
                self.in_channel += 1;
            } else if let Some(bad) = self.outbox.discard_queued() {
                warn!(topic = %bad.topic, "upstream: rumqttc refused to publish; dropped");
                bump(&self.common.counters.rejected, 1);
            }
        }
    }

    fn on_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::ConnAck { session_present } => {
                self.connected = true;
                self.in_channel = 0;
                self.backoff.reset();
                let c = &self.common.counters;
                match &mut self.role {
                    Role::Shared => {
                        c.connected.store(true, Ordering::Relaxed);
                        bump(&c.connects, 1);
                    }
                    Role::Device(d) => {
                        bump(&c.device_sessions_connected, 1);
                        bump(&c.device_session_connects, 1);
                        let client_id = d.client_id_arc();
                        for status in d.connected() {
                            self.out.push(TaskEvent::Public(BridgeEvent::SessionStatus {
                                client_id: Arc::clone(&client_id),
                                status,
                            }));
                        }
                    }
                }
                let resent = if session_present {
                    self.outbox.replaying()
                } else {
                    self.outbox.connected(false)
                };
                bump(&self.common.counters.resent, resent as u64);
                if self.is_shared() {
                    info!(
                        broker = %self.common.endpoint,
                        session_present,
                        resending = resent,
                        queued = self.outbox.queued(),
                        "upstream connected"
                    );
                    self.out.push(TaskEvent::Public(BridgeEvent::Connected));
                } else {
                    debug!(session = %self.name(), session_present, resending = resent, "device session connected");
                }
                // Re-subscribe everything, every time.
                self.control.clear();
                self.awaiting_suback.clear();
                self.confirmed.clear();
                // One SUBSCRIBE per filter: each carries its own identifier.
                let all: Vec<(String, u8)> = self
                    .subscriptions
                    .iter()
                    .map(|(f, q)| (f.clone(), *q))
                    .collect();
                for (filter, qos) in all {
                    let id = self.sub_ids.id(&filter);
                    self.control.push_back(Request::Subscribe(filter, qos, id));
                }
            }
            LinkEvent::Publish {
                topic,
                payload,
                qos,
                retain,
                subscription_ids,
                origin,
            } => self.on_publish(topic, payload, qos, retain, &subscription_ids, origin),
            LinkEvent::PubAck { pkid, ok } => {
                let ack = self.outbox.on_puback(pkid, ok);
                self.count_ack(ack);
            }
            LinkEvent::PubRec { pkid, ok } => {
                let ack = self.outbox.on_pubrec(pkid, ok);
                self.count_ack(ack);
            }
            LinkEvent::PubComp { pkid } => {
                let ack = self.outbox.on_pubcomp(pkid);
                self.count_ack(ack);
            }
            LinkEvent::SubAck { refused } => {
                let filter = self.awaiting_suback.pop_front();
                match filter {
                    Some(filter) if refused == 0 => {
                        if self.subscriptions.contains_key(&filter) {
                            self.confirmed.insert(filter);
                        }
                    }
                    Some(filter) => {
                        warn!(session = %self.name(), %filter, "upstream broker refused a subscription filter");
                        self.confirmed.remove(&filter);
                    }
                    None => debug!("upstream: SUBACK for nothing awaited"),
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

    fn on_publish(
        &mut self,
        topic: Option<String>,
        payload: bytes::Bytes,
        qos: u8,
        retain: bool,
        subscription_ids: &[usize],
        origin: Option<String>,
    ) {
        let c = Arc::clone(&self.common.counters);
        let Some(topic) = topic else {
            bump(&c.not_bridged_in, 1);
            return;
        };
        // Per-device mode on MQTT 5: the broker's copy of what one of our
        // sessions published (or a device's will) — the engine routed the
        // original locally already.
        if let (Some(ours), Some(theirs)) = (&self.common.origin, &origin)
            && **ours == **theirs
        {
            bump(&c.echoes_suppressed, 1);
            return;
        }
        let scope = match self.copy_scope(&topic, subscription_ids, retain) {
            Some(scope) => scope,
            None => {
                bump(&c.duplicates_suppressed, 1);
                return;
            }
        };
        if let (Some(log), Some(seen)) = (&self.common.echo, &mut self.echo_seen)
            && let Ok(mut log) = log.lock()
            && log.is_echo(std::time::Instant::now(), &topic, &payload, seen)
        {
            bump(&c.echoes_suppressed, 1);
            return;
        }
        let Some((local, qos)) = self.common.rules.inbound(&topic, qos) else {
            bump(&c.not_bridged_in, 1);
            return;
        };
        bump(&c.received, 1);
        let message = UpstreamMessage {
            topic: local,
            payload,
            qos,
            retain,
            filter: scope,
        };
        let ev = match &self.role {
            Role::Shared => BridgeEvent::Message(message),
            Role::Device(d) => BridgeEvent::SessionMessage {
                client_id: d.client_id_arc(),
                message,
            },
        };
        self.out.push(TaskEvent::Public(ev));
    }

    fn count_ack(&self, ack: Ack) {
        match ack {
            Ack::Completed => bump(&self.common.counters.published, 1),
            Ack::Rejected => {
                bump(&self.common.counters.rejected, 1);
                warn!(session = %self.name(), "upstream broker refused a message (error reason code)");
            }
            Ack::Unmatched => debug!("upstream: acknowledgement matches nothing pending"),
            Ack::Progressed => {}
        }
    }

    /// Handles what rumqttc had buffered when the connection failed (acks
    /// read, publishes written: they did happen).
    fn take_buffered(&mut self, event_loop: &mut LinkLoop) {
        for ev in event_loop.take_buffered() {
            if !matches!(ev, LinkEvent::ConnAck { .. }) {
                self.on_event(ev);
            }
        }
    }

    fn on_connection_error(&mut self, event_loop: &mut LinkLoop, reason: String) {
        self.take_buffered(event_loop);
        let was_connected = self.connected;
        let dropped = self.link_lost(event_loop);
        match &mut self.role {
            Role::Shared => {
                bump(&self.common.counters.connection_errors, 1);
                if was_connected {
                    warn!(
                        broker = %self.common.endpoint,
                        %reason,
                        in_flight = self.outbox.in_flight(),
                        queued = self.outbox.queued(),
                        dropped_qos0 = dropped,
                        "upstream connection lost"
                    );
                    self.out
                        .push(TaskEvent::Public(BridgeEvent::Disconnected { reason }));
                } else {
                    debug!(broker = %self.common.endpoint, %reason, "upstream connection attempt failed");
                }
            }
            Role::Device(d) => {
                let client_id = d.client_id_arc();
                for status in d.unreachable() {
                    self.out.push(TaskEvent::Public(BridgeEvent::SessionStatus {
                        client_id: Arc::clone(&client_id),
                        status,
                    }));
                }
                debug!(session = %client_id, %reason, was_connected, "device session: connection failed");
            }
        }
    }

    /// The connection is gone (the event loop stays, to reconnect): what
    /// never reached the wire is queued again, rumqttc's pending list is
    /// replaced by the outbox's replays, and held acknowledgements are
    /// answered (the messages are queued while the broker is unreachable).
    /// Returns how many QoS 0 messages were dropped.
    fn link_lost(&mut self, event_loop: &mut LinkLoop) -> usize {
        let replays = self.mark_down();
        event_loop.replace_pending(&replays.0);
        replays.1
    }

    /// Connection bookkeeping when it ends: (replays for the next
    /// connection, QoS 0 messages dropped).
    fn mark_down(&mut self) -> (Vec<outbox::Replay>, usize) {
        self.link_gone();
        self.control.clear();
        let (replays, dropped) = self
            .outbox
            .connection_lost(self.common.cfg.queue_qos0_offline);
        bump(&self.common.counters.dropped_offline, dropped as u64);
        let released = self.outbox.release_tickets();
        self.answer_tickets(released);
        (replays, dropped)
    }

    /// Not connected any more (gauges).
    fn link_gone(&mut self) {
        if self.connected {
            match self.role {
                Role::Shared => {}
                Role::Device(_) => {
                    self.common
                        .counters
                        .device_sessions_connected
                        .fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        if self.is_shared() {
            self.common
                .counters
                .connected
                .store(false, Ordering::Relaxed);
        }
        self.connected = false;
        self.in_channel = 0;
    }

    /// Sends DISCONNECT if connected, waiting briefly for it to be written
    /// (and handling what arrives meanwhile).
    async fn disconnect(&mut self, event_loop: &mut LinkLoop) {
        let sent = self.client.as_ref().is_some_and(LinkClient::try_disconnect);
        if !self.connected || !sent {
            return;
        }
        let until = Instant::now() + DISCONNECT_WAIT;
        while let Ok(Ok(ev)) = tokio::time::timeout_at(until, event_loop.poll()).await {
            if matches!(ev, LinkEvent::SentDisconnect) {
                break;
            }
            if !matches!(ev, LinkEvent::ConnAck { .. }) {
                self.on_event(ev);
            }
        }
    }

    /// Sends the driver what happened: events in order, then which durable
    /// messages left.
    async fn flush(&mut self) {
        self.answer_tickets(Vec::new());
        let mut ids = std::mem::take(&mut self.settled);
        ids.extend(self.outbox.take_settled());
        if !ids.is_empty() {
            self.out.push(TaskEvent::Public(BridgeEvent::Settled(ids)));
        }
        for ev in std::mem::take(&mut self.out) {
            // An error means the handle is gone; the task ends on its own.
            let _ = self.common.events.send(ev).await;
        }
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
                room.freed.notify_one();
            }
        }
    }
}

impl Drop for Session {
    /// A session's share of the gauges leaves with it, however its task
    /// ends: at the end of [`run`](Session::run), or when it panicked (or
    /// was aborted). What a panicked session held is lost: it no longer
    /// counts as pending, or room and `unsettled()` would never recover. At
    /// an orderly end what is left stays counted (the shutdown figures say
    /// how many messages were not delivered).
    fn drop(&mut self) {
        self.link_gone();
        let c = Arc::clone(&self.common.counters);
        if std::thread::panicking() {
            let (messages, bytes) = std::mem::take(&mut self.reported);
            shift(&c.pending_messages, messages, 0);
            shift(&c.pending_bytes, bytes, 0);
            let (taken, taken_bytes) = std::mem::take(&mut self.taken);
            c.room.taken_messages.fetch_add(taken, Ordering::Release);
            c.room.taken_bytes.fetch_add(taken_bytes, Ordering::Release);
            c.room.freed.notify_one();
            warn!(session = %self.name(), lost = self.outbox.len(), "upstream session task panicked");
        }
        if let Role::Device(_) = self.role {
            c.device_sessions_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A session task's command channel. When the task panicked, the messages
/// still in it never reach an outbox: they count as taken, so the room
/// they held comes back.
struct Commands {
    rx: mpsc::UnboundedReceiver<Control>,
    common: Arc<Common>,
}

impl Drop for Commands {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.rx.close();
        let room = &self.common.counters.room;
        let cost = |topic: &str, payload: &[u8]| (topic.len() + payload.len()) as u64;
        while let Ok(msg) = self.rx.try_recv() {
            let (messages, bytes) = match msg {
                Control::Command(UpstreamCommand::Publish { topic, payload, .. }) => {
                    (1, cost(&topic, &payload))
                }
                Control::Restore(cmds) => cmds.iter().fold((0, 0), |(n, b), cmd| match cmd {
                    UpstreamCommand::Publish { topic, payload, .. } => {
                        (n + 1, b + cost(topic, payload))
                    }
                    _ => (n, b),
                }),
                Control::Adopt(msgs) => (
                    msgs.len() as u64,
                    msgs.iter().map(|m| cost(&m.topic, &m.payload)).sum(),
                ),
                Control::Command(_) | Control::Shutdown(_) => (0, 0),
            };
            room.taken_messages.fetch_add(messages, Ordering::Release);
            room.taken_bytes.fetch_add(bytes, Ordering::Release);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;
    use crate::bridge::rules::Rules;
    use crate::bridge::{Counters, Room};
    use crate::config::UpstreamConfig;
    use crate::core::{DeviceOrigin, SessionParams};

    fn common() -> (Arc<Common>, mpsc::Receiver<TaskEvent>) {
        let cfg = UpstreamConfig {
            host: "127.0.0.1".into(),
            client_id: "gw".into(),
            ..UpstreamConfig::default()
        };
        let (events, rx) = mpsc::channel(16);
        let common = Common {
            endpoint: "127.0.0.1:1".into(),
            rules: Rules::new(&cfg.rules),
            events,
            counters: Arc::new(Counters {
                room: Room {
                    max_messages: 100,
                    max_bytes: 10_000,
                    ..Room::default()
                },
                ..Counters::default()
            }),
            echo: None,
            per_device: true,
            origin: None,
            cfg,
        };
        (Arc::new(common), rx)
    }

    fn publish(id: &str) -> UpstreamCommand {
        UpstreamCommand::Publish {
            topic: "t".into(),
            payload: bytes::Bytes::from_static(b"12345"),
            qos: 1,
            retain: false,
            store_id: None,
            from: Some(DeviceOrigin {
                client_id: Arc::from(id),
                ack: None,
            }),
        }
    }

    #[test]
    fn a_panicked_session_gives_back_its_share_of_the_gauges() {
        let (common, _events) = common();
        let identities = DeviceIdentities::new(&common.cfg, None, None).expect("device identities");
        let c = Arc::clone(&common.counters);
        let mut s = Session::device(Arc::clone(&common), Arc::new(identities), Arc::from("d"), 0);
        s.on_command(UpstreamCommand::OpenSession(SessionParams {
            client_id: Arc::from("d"),
            clean_session: false,
            keep_alive_secs: 30,
            will: None,
        }));
        s.on_command(publish("d"));
        s.publish_gauges();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!((get(&c.pending_messages), get(&c.pending_bytes)), (1, 6));
        assert_eq!(get(&c.device_sessions_open), 1);
        // Its channel still holds one message when it panics.
        let (tx, rx) = mpsc::unbounded_channel();
        assert!(tx.send(Control::Command(publish("d"))).is_ok());
        let commands = Commands {
            rx,
            common: Arc::clone(&common),
        };
        let panicked = catch_unwind(AssertUnwindSafe(move || {
            let _s = s;
            let _commands = commands;
            panic!("a session task fails");
        }));
        assert!(panicked.is_err());
        assert_eq!((get(&c.pending_messages), get(&c.pending_bytes)), (0, 0));
        assert_eq!(get(&c.device_sessions_open), 0);
        assert_eq!(
            (get(&c.room.taken_messages), get(&c.room.taken_bytes)),
            (2, 12),
            "the published one and the one left in the channel"
        );
    }
}
