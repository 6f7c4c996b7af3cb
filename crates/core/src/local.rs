//! Local MQTT clients — the embedded broker's connections — as the engine sees
//! them.
//!
//! The broker (`crate::broker`) speaks MQTT 3.1.1 over TCP: framing, packet
//! ids, the QoS handshakes with the client, keep-alive and credentials. What
//! must be shared with MQTT-SN devices lives here, in the engine: sessions by
//! client id (clean, or persistent with the messages kept while the client is
//! away), subscriptions in the same trie as the devices', retained messages,
//! wills, and the upstream bridge. So a device and a local program see one
//! broker.
//!
//! Decisions (docs/broker.md):
//! - Local client ids are their own namespace: a local client and a device
//!   may share an id without taking over each other.
//! - A second connection with a connected client id takes the session over;
//!   the old connection is closed without publishing its will (its client is
//!   evidently alive).
//! - A persistent session's QoS 1/2 messages are queued while the client is
//!   away (QoS 0 only with `queue_qos0`), and expire with `session_expiry`
//!   like a device's. The queue is bounded as a device's queue is:
//!   `max_queued_messages_per_client`, `max_queued_bytes_per_client` and the
//!   gateway-wide `max_queued_bytes_total` (payload bytes, shared with the
//!   devices), with `queue_overflow` deciding what goes. The durable
//!   messages handed to a connected client and not yet acknowledged count
//!   in the same message count and total (not in the per-client bytes, so
//!   a reading client's burst in flight is not cut); beyond them a client
//!   that does not acknowledge gets no more. Every message left out is
//!   counted as `queue_full`.
//! - A QoS 1/2 PUBLISH bound upstream is acknowledged only when the bridge
//!   has room, exactly as for devices (backpressure, not loss).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, info};

use super::acl::Access;
use super::engine_config::OverflowPolicy;
use super::gateway::{Gateway, Origin, Subscriber};
use super::output::{LocalAction, Output};
use super::session::{SessionId, Will};
use super::stats::DropReason;

/// A broker connection, numbered by the broker; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalConnId(pub u64);

impl std::fmt::Display for LocalConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mqtt#{}", self.0)
    }
}

/// A CONNECT the broker has accepted (protocol and credentials checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConnect {
    /// The client id (never empty: the broker names anonymous clean clients).
    pub client_id: String,
    /// CleanSession flag.
    pub clean_session: bool,
    /// The will, if any.
    pub will: Option<Will>,
    /// The username the client authenticated with, if any (ACL `user` and
    /// `%u`).
    pub username: Option<String>,
}

/// A message for a local client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDelivery {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0..=2 (already the minimum of the message's and the granted QoS).
    pub qos: u8,
    /// Retain flag (set for retained messages sent on SUBSCRIBE).
    pub retain: bool,
    /// Its durable id while it waits in a persistent session's queue.
    pub store_id: Option<u64>,
}

/// What a broker connection tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalInput {
    /// The client connected; answered with [`LocalAction::ConnAck`] or
    /// [`LocalAction::Refuse`].
    Connect(LocalConnect),
    /// A PUBLISH. QoS 1/2 is answered with [`LocalAction::Ack`] once routed.
    Publish {
        /// The client's packet id (0 at QoS 0).
        pkid: u16,
        /// Topic name.
        topic: String,
        /// Payload.
        payload: Bytes,
        /// QoS 0..=2.
        qos: u8,
        /// Retain flag.
        retain: bool,
    },
    /// A SUBSCRIBE: (filter, QoS) pairs.
    Subscribe {
        /// The client's packet id.
        pkid: u16,
        /// Filters with the QoS asked for.
        filters: Vec<(String, u8)>,
    },
    /// An UNSUBSCRIBE.
    Unsubscribe {
        /// The client's packet id.
        pkid: u16,
        /// Filters.
        filters: Vec<String>,
    },
    /// The client acknowledged a message that had a durable id (PUBACK, or
    /// PUBREC at QoS 2): the store may forget it.
    Acked {
        /// The message's durable id.
        store_id: u64,
    },
    /// The connection ended: `graceful` after a DISCONNECT (no will).
    /// `unacked` are the messages handed to the connection that the client
    /// had not acknowledged (or not yet received), oldest first; a persistent
    /// session keeps them for the client's return.
    Closed {
        /// True after a DISCONNECT packet.
        graceful: bool,
        /// Messages not acknowledged by the client.
        unacked: Vec<LocalDelivery>,
        /// QoS 2 messages the client had answered with PUBREC and not yet
        /// completed (PUBCOMP), by packet id: a persistent session's next
        /// connection sends their PUBREL again (MQTT-4.4.0-1).
        releasing: Vec<u16>,
    },
}

/// One local client's session.
#[derive(Debug)]
pub(super) struct LocalSession {
    pub(super) client_id: Arc<str>,
    /// The username of its latest CONNECT (for the ACL).
    pub(super) username: Option<String>,
    /// The connection it is on, if connected.
    pub(super) conn: Option<LocalConnId>,
    pub(super) clean: bool,
    pub(super) subscriptions: BTreeMap<String, u8>,
    /// Messages kept while a persistent client is away.
    pub(super) queue: VecDeque<LocalDelivery>,
    /// Durable messages handed to the connection and not yet acknowledged
    /// by the client (persistent sessions only), kept on disk until then.
    pub(super) sent: VecDeque<LocalDelivery>,
    pub(super) will: Option<Will>,
    /// QoS 1/2 publishes waiting for upstream room, oldest first.
    pub(super) parked: VecDeque<ParkedLocal>,
    /// When a disconnected persistent session is forgotten.
    pub(super) expires: Option<Instant>,
    /// Payload bytes in `queue` and `sent`, counted in the gateway's
    /// `queued_bytes_total` too.
    pub(super) queued_bytes: usize,
    /// Packet ids whose PUBREL the client is owed again on its next
    /// connection (persistent sessions; bounded by the connection's
    /// in-flight window).
    pub(super) releasing: Vec<u16>,
}

impl LocalSession {
    /// A session with nothing queued, subscribed or parked.
    pub(super) fn new(client_id: Arc<str>, clean: bool) -> Self {
        LocalSession {
            client_id,
            username: None,
            conn: None,
            clean,
            subscriptions: BTreeMap::new(),
            queue: VecDeque::new(),
            sent: VecDeque::new(),
            will: None,
            parked: VecDeque::new(),
            expires: None,
            queued_bytes: 0,
            releasing: Vec::new(),
        }
    }

    /// Payload bytes in its queue and its unacknowledged durable messages.
    fn held_bytes(&self) -> usize {
        self.queue
            .iter()
            .chain(self.sent.iter())
            .map(|d| d.payload.len())
            .sum()
    }
}

/// A local QoS 1/2 PUBLISH held until the bridge has room.
#[derive(Debug, Clone)]
pub(super) struct ParkedLocal {
    pkid: u16,
    topic: Arc<str>,
    payload: Bytes,
    qos: u8,
    retain: bool,
}

/// Every local session, indexed three ways.
#[derive(Debug, Default)]
pub(super) struct LocalSessions {
    pub(super) sessions: HashMap<SessionId, LocalSession>,
    pub(super) by_client: HashMap<Arc<str>, SessionId>,
    pub(super) by_conn: HashMap<LocalConnId, SessionId>,
    /// Disconnected persistent sessions by expiry time.
    pub(super) expiry: BTreeSet<(Instant, SessionId)>,
}

/// A local client as shown by status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalClientInfo {
    /// Client id.
    pub client_id: String,
    /// Whether a connection is attached.
    pub connected: bool,
    /// CleanSession flag.
    pub clean_session: bool,
    /// Subscriptions: filter and granted QoS.
    pub subscriptions: Vec<(String, u8)>,
    /// Messages kept for its return.
    pub queued: usize,
}

impl Gateway {
    /// Feeds one event from an embedded-broker connection.
    pub fn handle_local(&mut self, now: Instant, conn: LocalConnId, input: LocalInput) {
        match input {
            LocalInput::Connect(connect) => self.on_local_connect(conn, connect),
            LocalInput::Closed {
                graceful,
                unacked,
                releasing,
            } => self.on_local_closed(now, conn, graceful, unacked, releasing),
            other => {
                let current =
                    self.locals.by_conn.get(&conn).copied().filter(|sid| {
                        self.locals.sessions.get(sid).and_then(|s| s.conn) == Some(conn)
                    });
                let Some(sid) = current else {
                    // Taken over meanwhile: the broker is closing it.
                    self.stats.drop(DropReason::UnknownPeer);
                    return;
                };
                self.touch(sid);
                match other {
                    LocalInput::Publish {
                        pkid,
                        topic,
                        payload,
                        qos,
                        retain,
                    } => self.on_local_publish(now, sid, conn, pkid, topic, payload, qos, retain),
                    LocalInput::Subscribe { pkid, filters } => {
                        self.on_local_subscribe(now, sid, conn, pkid, filters)
                    }
                    LocalInput::Acked { store_id } => {
                        if let Some(s) = self.locals.sessions.get_mut(&sid) {
                            s.sent.retain(|d| d.store_id != Some(store_id));
                        }
                        self.resync_local_bytes(sid);
                    }
                    LocalInput::Unsubscribe { pkid, filters } => {
                        for filter in &filters {
                            self.remove_local_subscription(sid, filter);
                        }
                        self.local(conn, LocalAction::UnsubAck { pkid });
                    }
                    LocalInput::Connect(_) | LocalInput::Closed { .. } => {}
                }
            }
        }
    }

    /// Publishes a message from the gateway itself (`$SYS/…` topics) to local
    /// subscribers only: never upstream.
    pub fn publish_internal(&mut self, now: Instant, topic: &str, payload: Bytes, retain: bool) {
        let topic: Arc<str> = Arc::from(topic);
        self.route(now, &topic, payload, 0, retain, Origin::Internal, None);
    }

    /// Local clients (connected, or persistent and away), by client id.
    pub fn local_clients(&self) -> Vec<LocalClientInfo> {
        let mut clients: Vec<LocalClientInfo> = self
            .locals
            .sessions
            .values()
            .map(|s| LocalClientInfo {
                client_id: s.client_id.to_string(),
                connected: s.conn.is_some(),
                clean_session: s.clean,
                subscriptions: s
                    .subscriptions
                    .iter()
                    .map(|(f, q)| (f.clone(), *q))
                    .collect(),
                queued: s.queue.len(),
            })
            .collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    fn local(&mut self, conn: LocalConnId, action: LocalAction) {
        self.push_output(Output::Local { conn, action });
    }

    fn on_local_connect(&mut self, conn: LocalConnId, connect: LocalConnect) {
        let client_id: Arc<str> = Arc::from(connect.client_id.as_str());
        let existing = self.locals.by_client.get(&client_id).copied();
        if existing.is_none() && self.locals.sessions.len() >= self.cfg.max_clients {
            info!(client = %client_id, %conn, "local client refused: max_clients reached");
            self.stats.limit_hit(super::stats::LimitHit::MaxClients);
            return self.local(conn, LocalAction::Refuse);
        }
        let mut session_present = false;
        if let Some(sid) = existing {
            // The old connection stays in `by_conn` until its Closed arrives,
            // so what it had not delivered finds its way back.
            if let Some(old) = self
                .locals
                .sessions
                .get_mut(&sid)
                .and_then(|s| s.conn.take())
            {
                info!(client = %client_id, %old, new = %conn, "local client taken over");
                self.local(old, LocalAction::Close);
                // Its parked publishes were never acknowledged, as on a
                // close: the client resends them on the new connection, which
                // must not be acknowledged for packet ids it did not send.
                let parked = self
                    .locals
                    .sessions
                    .get_mut(&sid)
                    .map_or(0, |s| std::mem::take(&mut s.parked).len());
                if parked > 0 {
                    self.parked.retain(|&p| p != sid);
                }
            }
            let keep =
                !connect.clean_session && self.locals.sessions.get(&sid).is_some_and(|s| !s.clean);
            if keep {
                session_present = true;
            } else {
                self.remove_local_session(sid);
            }
        }
        let sid = match self.locals.by_client.get(&client_id) {
            Some(&sid) => sid,
            None => {
                let sid = self.new_session_id();
                self.locals.sessions.insert(
                    sid,
                    LocalSession::new(client_id.clone(), connect.clean_session),
                );
                self.locals.by_client.insert(client_id.clone(), sid);
                sid
            }
        };
        self.locals.by_conn.insert(conn, sid);
        self.touch(sid);
        let queued = match self.locals.sessions.get_mut(&sid) {
            Some(s) => {
                s.conn = Some(conn);
                s.clean = connect.clean_session;
                s.will = connect.will;
                s.username = connect.username;
                if let Some(at) = s.expires.take() {
                    self.locals.expiry.remove(&(at, sid));
                }
                (
                    std::mem::take(&mut s.queue),
                    std::mem::take(&mut s.releasing),
                )
            }
            None => (VecDeque::new(), Vec::new()),
        };
        let (queued, releasing) = queued;
        debug!(client = %client_id, %conn, session_present, "local client connected");
        self.local(conn, LocalAction::ConnAck { session_present });
        if session_present && !releasing.is_empty() {
            // MQTT-4.4.0-1: the PUBRELs the client has not completed, again.
            self.local(conn, LocalAction::Release { pkids: releasing });
        }
        let keep_sent = self.persist.enabled && !connect.clean_session;
        for delivery in queued {
            self.stats.local_out += 1;
            if keep_sent && delivery.store_id.is_some() {
                // On disk until the client acknowledges it, as any durable
                // message handed to a connection.
                if let Some(s) = self.locals.sessions.get_mut(&sid) {
                    s.sent.push_back(delivery.clone());
                }
            }
            self.local(conn, LocalAction::Deliver(delivery));
        }
        self.resync_local_bytes(sid);
    }

    /// Recounts a local session's held bytes after its queue or its sent
    /// list changed in bulk, keeping the gateway-wide total in step.
    fn resync_local_bytes(&mut self, sid: SessionId) {
        if let Some(s) = self.locals.sessions.get_mut(&sid) {
            let now_held = s.held_bytes();
            self.queued_bytes_total = self
                .queued_bytes_total
                .saturating_sub(s.queued_bytes)
                .saturating_add(now_held);
            s.queued_bytes = now_held;
        }
    }

    fn on_local_closed(
        &mut self,
        now: Instant,
        conn: LocalConnId,
        graceful: bool,
        unacked: Vec<LocalDelivery>,
        releasing: Vec<u16>,
    ) {
        let Some(sid) = self.locals.by_conn.remove(&conn) else {
            return;
        };
        let Some(s) = self.locals.sessions.get_mut(&sid) else {
            return;
        };
        if s.conn != Some(conn) {
            // Taken over: what this connection had not delivered belongs to
            // the session, now on its new connection (a clean one started
            // afresh and owes nothing).
            if !s.clean {
                if let Some(new) = s.conn
                    && !releasing.is_empty()
                {
                    self.local(new, LocalAction::Release { pkids: releasing });
                }
                let Some(s) = self.locals.sessions.get_mut(&sid) else {
                    return;
                };
                s.sent.retain(|d| {
                    !unacked
                        .iter()
                        .any(|u| u.store_id.is_some() && u.store_id == d.store_id)
                });
                self.resync_local_bytes(sid);
                for d in unacked.into_iter().filter(|d| d.qos > 0) {
                    self.deliver_local(sid, d);
                }
            }
            return;
        }
        s.conn = None;
        if !s.clean {
            s.releasing = releasing;
        }
        // What the connection had not had acknowledged comes back in
        // `unacked` (with its durable ids) and is queued again below.
        s.sent.clear();
        self.resync_local_bytes(sid);
        self.touch(sid);
        let Some(s) = self.locals.sessions.get_mut(&sid) else {
            return;
        };
        let will = if graceful { None } else { s.will.take() };
        s.will = None;
        // Parked publishes were never acknowledged: the client will resend.
        let parked = std::mem::take(&mut s.parked).len();
        if parked > 0 {
            self.parked.retain(|&p| p != sid);
        }
        let clean = s.clean;
        if !clean {
            for d in unacked.into_iter().rev() {
                if d.qos > 0 || self.cfg.queue_qos0 {
                    s.queue.push_front(d);
                }
            }
            // Back within the bounds, keeping the oldest (they were
            // handed over first).
            let mut held = s.held_bytes();
            let others = self.queued_bytes_total.saturating_sub(s.queued_bytes);
            while s.queue.len() > self.cfg.max_queued_messages_per_client
                || held > self.cfg.max_queued_bytes_per_client
                || others + held > self.cfg.max_queued_bytes_total
            {
                let Some(d) = s.queue.pop_back() else {
                    break;
                };
                held = held.saturating_sub(d.payload.len());
                self.stats.drop(DropReason::QueueFull);
            }
            self.queued_bytes_total = others + held;
            s.queued_bytes = held;
            if let Some(expiry) = self.cfg.session_expiry {
                let at = now + expiry;
                s.expires = Some(at);
                self.locals.expiry.insert((at, sid));
            }
        }
        debug!(client = %s.client_id, %conn, graceful, "local client disconnected");
        if let Some(will) = will {
            self.publish_will(now, Subscriber::Local(sid), will);
        }
        if clean {
            self.remove_local_session(sid);
        }
    }

    /// Forgets a local session: its subscriptions, queue and timers.
    fn remove_local_session(&mut self, sid: SessionId) {
        let Some(s) = self.locals.sessions.remove(&sid) else {
            return;
        };
        self.queued_bytes_total = self.queued_bytes_total.saturating_sub(s.queued_bytes);
        self.forget_session(
            sid,
            super::persist::ClientKey {
                kind: super::persist::ClientKind::Local,
                client_id: s.client_id.to_string(),
            },
        );
        for filter in s.subscriptions.keys() {
            self.unsubscribe_filter(Subscriber::Local(sid), filter);
        }
        if let Some(at) = s.expires {
            self.locals.expiry.remove(&(at, sid));
        }
        if !s.parked.is_empty() {
            self.parked.retain(|&p| p != sid);
        }
        if let Some(conn) = s.conn {
            self.locals.by_conn.remove(&conn);
        }
        if self.locals.by_client.get(&s.client_id) == Some(&sid) {
            self.locals.by_client.remove(&s.client_id);
        }
    }

    /// Forgets persistent local sessions whose client stayed away too long.
    pub(super) fn expire_local_sessions(&mut self, now: Instant) {
        while let Some(&(at, sid)) = self.locals.expiry.first() {
            if at > now {
                break;
            }
            self.locals.expiry.pop_first();
            if let Some(s) = self.locals.sessions.get_mut(&sid) {
                s.expires = None;
                debug!(client = %s.client_id, "local session expired");
            }
            self.stats.sessions_expired += 1;
            self.remove_local_session(sid);
        }
    }

    /// The next local session expiry.
    pub(super) fn next_local_expiry(&self) -> Option<Instant> {
        self.locals.expiry.first().map(|(at, _)| *at)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_local_publish(
        &mut self,
        now: Instant,
        sid: SessionId,
        conn: LocalConnId,
        pkid: u16,
        topic: String,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) {
        if super::topic::validate_name(&topic).is_err() {
            // MQTT 3.1.1 §4.7.3: a PUBLISH to a filter is a protocol violation.
            debug!(%conn, %topic, "local PUBLISH to an invalid topic name; closing");
            self.stats.drop(DropReason::Malformed);
            return self.local(conn, LocalAction::Close);
        }
        let topic: Arc<str> = Arc::from(topic);
        if !self.acl_check(Subscriber::Local(sid), &topic, Access::Write, "publish") {
            // MQTT 3.1.1 has no refusing PUBACK: acknowledged and dropped,
            // as mosquitto does.
            if qos > 0 {
                self.local(conn, LocalAction::Ack { pkid, qos });
            }
            return;
        }
        if qos == 0 {
            self.stats.local_in += 1;
            return self.route(now, &topic, payload, 0, retain, Origin::Local, None);
        }
        let parked = ParkedLocal {
            pkid,
            topic,
            payload,
            qos,
            retain,
        };
        let upstream_full = self.cfg.upstream && self.upstream_room == 0;
        let Some(s) = self.locals.sessions.get_mut(&sid) else {
            return;
        };
        if upstream_full || !s.parked.is_empty() {
            // Held in order behind any that already wait; the broker stops
            // reading the connection while too many are unacknowledged.
            s.parked.push_back(parked);
            self.parked.push_back(sid);
            self.stats.publishes_parked += 1;
            return;
        }
        self.commit_local_publish(now, conn, parked);
    }

    /// Routes a local QoS 1/2 message and tells the broker to acknowledge it.
    fn commit_local_publish(&mut self, now: Instant, conn: LocalConnId, p: ParkedLocal) {
        self.stats.local_in += 1;
        self.route(
            now,
            &p.topic,
            p.payload,
            p.qos,
            p.retain,
            Origin::Local,
            None,
        );
        self.local(
            conn,
            LocalAction::Ack {
                pkid: p.pkid,
                qos: p.qos,
            },
        );
    }

    /// Releases one parked local publish of session `sid`, if it has one and
    /// is still connected. Returns false when there was nothing to release.
    pub(super) fn release_parked_local(&mut self, now: Instant, sid: SessionId) -> bool {
        let Some(s) = self.locals.sessions.get_mut(&sid) else {
            return false;
        };
        let (Some(conn), Some(p)) = (s.conn, s.parked.pop_front()) else {
            return false;
        };
        self.commit_local_publish(now, conn, p);
        true
    }

    fn on_local_subscribe(
        &mut self,
        now: Instant,
        sid: SessionId,
        conn: LocalConnId,
        pkid: u16,
        filters: Vec<(String, u8)>,
    ) {
        let mut granted = Vec::with_capacity(filters.len());
        let mut accepted = Vec::new();
        let mut waiting = Vec::new();
        for (filter, qos) in filters {
            let qos = qos.min(2);
            let Some(s) = self.locals.sessions.get_mut(&sid) else {
                return;
            };
            let limit = super::devices::subscription_limit(
                &self.cfg,
                self.subscriptions.filter_bytes(),
                s.subscriptions.contains_key(&filter),
                s.subscriptions.len(),
                &filter,
            );
            let valid = super::topic::validate_filter(&filter).is_ok();
            if let (true, Some(limit)) = (valid, limit) {
                self.stats.limit_hit(limit);
            }
            if !valid || limit.is_some() {
                debug!(client = %s.client_id, %filter, "refusing a local SUBSCRIBE filter");
                granted.push(None);
                continue;
            }
            if !self.acl_check_subscribe(Subscriber::Local(sid), &filter) {
                granted.push(None);
                continue;
            }
            let Some(s) = self.locals.sessions.get_mut(&sid) else {
                return;
            };
            let is_new = s.subscriptions.insert(filter.clone(), qos).is_none();
            self.suback_wait.asked = false;
            self.subscribe_filter(Subscriber::Local(sid), &filter, qos, is_new);
            if self.suback_must_wait(&filter) {
                waiting.push(granted.len());
            }
            granted.push(Some(qos));
            accepted.push((filter, qos));
        }
        // SUBACK means subscribed (suback_wait.rs); then the retained
        // messages (MQTT 3.1.1 §3.3.1.3).
        let suback = crate::suback_wait::LocalSuback {
            sid,
            conn,
            pkid,
            granted,
            accepted,
            waiting,
        };
        self.local_suback(now, suback);
    }

    fn remove_local_subscription(&mut self, sid: SessionId, filter: &str) {
        let removed = self
            .locals
            .sessions
            .get_mut(&sid)
            .and_then(|s| s.subscriptions.remove(filter))
            .is_some();
        if removed {
            self.unsubscribe_filter(Subscriber::Local(sid), filter);
        }
    }

    /// Hands a message to a local client, or keeps it for a persistent one
    /// that is away.
    pub(super) fn deliver_local(&mut self, sid: SessionId, mut delivery: LocalDelivery) {
        if self
            .locals
            .sessions
            .get(&sid)
            .is_none_or(|s| s.conn.is_none())
        {
            if delivery.store_id.is_none() {
                delivery.store_id = self.queue_id(delivery.qos);
            }
            self.touch(sid);
        }
        let Some(s) = self.locals.sessions.get_mut(&sid) else {
            self.stats.drop(DropReason::SessionGone);
            return;
        };
        let cfg = &self.cfg;
        let len = delivery.payload.len();
        let full = |s: &LocalSession, total: usize| {
            !cfg.queue_has_room(s.queue.len() + s.sent.len(), s.queued_bytes, total, len)
        };
        match s.conn {
            Some(conn) => {
                if self.persist.enabled && !s.clean && delivery.qos > 0 {
                    // Kept on disk until the client acknowledges it, within
                    // the message count and the gateway-wide bytes (not the
                    // per-client bytes, which a client that reads but has a
                    // burst in flight would pass): a client that does not
                    // acknowledge gets no more durable messages.
                    let total = self.queued_bytes_total;
                    if s.queue.len() + s.sent.len() >= cfg.max_queued_messages_per_client
                        || total + len > cfg.max_queued_bytes_total
                    {
                        debug!(client = %s.client_id, "local client not acknowledging; message dropped");
                        self.stats.drop(DropReason::QueueFull);
                        return;
                    }
                    if delivery.store_id.is_none() {
                        self.persist.next_id_into(&mut delivery.store_id);
                    }
                    s.queued_bytes += len;
                    self.queued_bytes_total += len;
                    s.sent.push_back(delivery.clone());
                    self.persist.mark(sid);
                }
                self.stats.local_out += 1;
                self.local(conn, LocalAction::Deliver(delivery));
            }
            None if delivery.qos > 0 || self.cfg.queue_qos0 => {
                if cfg.queue_overflow == OverflowPolicy::DropOldest {
                    let sent = s.sent.len();
                    let dropped = super::devices::drop_oldest_while(
                        &mut s.queue,
                        &mut s.queued_bytes,
                        &mut self.queued_bytes_total,
                        |d| d.payload.len(),
                        |n, held, total| !cfg.queue_has_room(n + sent, held, total, len),
                    );
                    for _ in 0..dropped {
                        debug!(client = %s.client_id, "local session queue full; oldest message dropped");
                        self.stats.drop(DropReason::QueueFull);
                    }
                }
                if full(s, self.queued_bytes_total) {
                    debug!(client = %s.client_id, "local session queue full; message dropped");
                    self.stats.drop(DropReason::QueueFull);
                } else {
                    s.queued_bytes += len;
                    self.queued_bytes_total += len;
                    s.queue.push_back(delivery);
                }
            }
            None => self.stats.drop(DropReason::SessionGone),
        }
    }
}
