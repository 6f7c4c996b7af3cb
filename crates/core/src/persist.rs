//! What the engine keeps across restarts, and how it tells the shell what to
//! write — still sans-IO: the engine produces [`StoreOp`]s, the driver commits
//! them (one transaction per batch) *before* it carries out the outputs of
//! the same batch, so an acknowledgement never leaves before what it
//! promises is on disk.
//!
//! What is durable:
//! - device sessions that outlive their connection (CleanSession = false,
//!   or asleep): topic ids, subscriptions, will, sleep state;
//! - their queued QoS 1/2 messages, the one in flight included (sleep
//!   buffers are these queues);
//! - local MQTT clients' persistent sessions and the messages queued while
//!   they are away;
//! - retained messages;
//! - messages bound upstream (the outbox), until the bridge reports them
//!   settled.
//!
//! How changes are found: every input marks the sessions it touched dirty;
//! [`Gateway::take_store_ops`] compares each dirty session with what was
//! last written for it (its record, each topic id and subscription, and the
//! set of queued message ids) and emits only the difference. So no code
//! path that moves a message has to remember to delete it from disk, and a
//! busy session costs one small write per batch, not one per change.
//!
//! Deltas, not records: a session is written as a small head
//! ([`SessionRecord`] with its `topics` and `subscriptions` empty: flags,
//! will, sleep state, the last message id) and one item per topic id
//! ([`StoreOp::PutTopic`]) and per subscription
//! ([`StoreOp::PutSubscription`]). A REGISTER or SUBSCRIBE writes its one
//! item; a delivery that moves the last message id rewrites only the head.
//! A store written before items existed holds whole records (topics and
//! subscriptions inside the head): [`Restored`] keeps them as they are, and
//! such a session is migrated the first time it changes (its head is written
//! without them, and each of them as an item).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::gateway::{Gateway, RetainedMessage, Subscriber};
use super::local::{LocalDelivery, LocalSession};
use super::session::{ClientState, Delivery, InflightKind, Session, SessionId, Will};
use super::topic_table::TopicTable;

/// Which kind of client a durable record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ClientKind {
    /// An MQTT-SN device.
    Device,
    /// A local MQTT client of the embedded broker.
    Local,
}

/// A client's durable identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientKey {
    /// Device or local client.
    pub kind: ClientKind,
    /// Client id.
    pub client_id: String,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 0..=2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
}

/// A message bound upstream, as stored in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The message.
    pub message: StoredMessage,
    /// Per-device mode: the device whose own upstream session publishes it
    /// (so a message stored before a restart still goes up under the
    /// device's identity); `None`: the shared session.
    pub device: Option<String>,
}

/// A message queued for a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecord {
    /// Whose queue.
    pub owner: ClientKey,
    /// The message.
    pub msg: StoredMessage,
    /// The message id of an earlier send to a device (resent with DUP).
    pub sent_as: Option<u16>,
}

/// A will as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWill {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 0..=2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
}

/// A session that outlives its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// CleanSession flag of the last CONNECT.
    pub clean: bool,
    /// Asleep (a device that sent DISCONNECT with a duration).
    pub asleep: bool,
    /// Sleep duration, seconds.
    pub sleep_secs: u64,
    /// Keep-alive, seconds.
    pub keep_alive_secs: u64,
    /// A device's topic ids: (id, name).
    pub topics: Vec<(u16, String)>,
    /// Subscriptions: (filter, granted QoS).
    pub subscriptions: Vec<(String, u8)>,
    /// Pre-defined ids a device subscribed to by id.
    pub predefined_subscriptions: Vec<u16>,
    /// The will.
    pub will: Option<StoredWill>,
    /// The last message id used towards a device.
    pub last_msg_id: u16,
    /// The transport identity (DTLS PSK identity or certificate name) the
    /// session is bound to, so a restart does not unbind it: only a peer
    /// proving it may take the session over or wake it. `None` over plain
    /// links, for local clients, and in records written before it existed.
    pub identity: Option<String>,
}

/// One change for the store; the driver commits a batch of them at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Create or replace a session's head: its record with `topics` and
    /// `subscriptions` empty (they are items of their own).
    PutSession(ClientKey, SessionRecord),
    /// Forget a session's head (its items are deleted by their own ops).
    DelSession(ClientKey),
    /// A session's topic id and its name.
    PutTopic(ClientKey, u16, String),
    /// A session's topic id forgotten.
    DelTopic(ClientKey, u16),
    /// A session's subscription: filter and granted QoS.
    PutSubscription(ClientKey, String, u8),
    /// A session's subscription forgotten.
    DelSubscription(ClientKey, String),
    /// A device's QoS 2 PUBLISH whose PUBREL has not come yet (its MsgId):
    /// a retransmission after a restart is acknowledged, not forwarded
    /// again (exactly once).
    PutInboundQos2(ClientKey, u16),
    /// That MsgId released (PUBREL) or forgotten.
    DelInboundQos2(ClientKey, u16),
    /// A queued message.
    PutQueued(u64, QueuedRecord),
    /// A queued message left its queue (delivered, dropped, session gone).
    DelQueued(u64),
    /// A retained message set.
    PutRetained(String, StoredMessage),
    /// A retained message cleared.
    DelRetained(String),
    /// A message handed to the upstream bridge, kept until it is settled.
    PutOutbox(u64, OutboxRecord),
}

/// What the store held at start-up, for [`Gateway::restore`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Session heads as stored (a store written before items existed holds
    /// whole records, topics and subscriptions inside).
    pub sessions: Vec<(ClientKey, SessionRecord)>,
    /// Topic-id items: (owner, id, name).
    pub topics: Vec<(ClientKey, u16, String)>,
    /// Subscription items: (owner, filter, granted QoS).
    pub subscriptions: Vec<(ClientKey, String, u8)>,
    /// A device's unreleased inbound QoS 2 MsgIds: (owner, MsgId).
    pub inbound_qos2: Vec<(ClientKey, u16)>,
    /// Queued messages, by id (oldest first).
    pub queued: Vec<(u64, QueuedRecord)>,
    /// Retained messages.
    pub retained: Vec<(String, StoredMessage)>,
    /// The largest id in use anywhere in the store (queue or outbox).
    pub max_id: u64,
}

/// What was last written for one session.
#[derive(Debug, Clone, Default)]
pub(super) struct Persisted {
    /// Its head as on disk (a whole record, for a store not yet migrated).
    record: Option<SessionRecord>,
    /// Its topic-id items on disk.
    topics: BTreeMap<u16, String>,
    /// Its subscription items on disk.
    subscriptions: BTreeMap<String, u8>,
    /// Its unreleased inbound QoS 2 MsgIds on disk.
    inbound_qos2: BTreeMap<u16, ()>,
    ids: BTreeSet<u64>,
}

/// The engine's persistence bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Persistence {
    pub(super) enabled: bool,
    next_id: u64,
    ops: Vec<StoreOp>,
    dirty: BTreeSet<SessionId>,
    dirty_retained: BTreeSet<Arc<str>>,
    /// What was last written, per session (device or local).
    written: HashMap<SessionId, Persisted>,
}

impl Persistence {
    /// A fresh id for a durable message.
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Adds one operation to the next commit.
    pub(super) fn push_op(&mut self, op: StoreOp) {
        self.ops.push(op);
    }

    /// Gives `slot` a fresh id.
    pub(super) fn next_id_into(&mut self, slot: &mut Option<u64>) {
        *slot = Some(self.next_id());
    }

    /// Marks a session as changed (as `Gateway::touch`, where the gateway
    /// itself is borrowed).
    pub(super) fn mark(&mut self, sid: SessionId) {
        if self.enabled {
            self.dirty.insert(sid);
        }
    }
}

impl StoredMessage {
    fn new(topic: &str, payload: &Bytes, qos: u8, retain: bool) -> Self {
        StoredMessage {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            retain,
        }
    }
}

fn stored_will(w: &Will) -> StoredWill {
    StoredWill {
        topic: w.topic.clone(),
        payload: w.payload.to_vec(),
        qos: w.qos,
        retain: w.retain,
    }
}

fn will_of(w: StoredWill) -> Will {
    Will {
        topic: w.topic,
        payload: Bytes::from(w.payload),
        qos: w.qos,
        retain: w.retain,
    }
}

/// A device session worth keeping: one that outlives its connection.
fn device_is_durable(s: &Session) -> bool {
    match s.state {
        ClientState::Connecting(_) => false,
        ClientState::Asleep | ClientState::Awake => true,
        _ => !s.clean_session,
    }
}

fn device_record(s: &Session) -> SessionRecord {
    let subscriptions = s.sorted_subscriptions();
    let mut predefined: Vec<u16> = s.predefined_subscriptions.iter().copied().collect();
    predefined.sort_unstable();
    SessionRecord {
        clean: s.clean_session,
        asleep: matches!(s.state, ClientState::Asleep | ClientState::Awake),
        sleep_secs: s.sleep_duration.as_secs(),
        keep_alive_secs: s.keep_alive.as_secs(),
        topics: s.topics.entries(),
        subscriptions,
        predefined_subscriptions: predefined,
        will: s.will.as_ref().map(stored_will),
        last_msg_id: s.last_msg_id,
        identity: s.identity.as_deref().map(str::to_owned),
    }
}

/// A session's topic ids and subscriptions as restored items.
type ItemMaps = (BTreeMap<u16, String>, BTreeMap<String, u8>);

/// Emits a deletion for every item of `old` not in `new`, and a write for
/// every item of `new` that is not in `old` as it is.
fn diff_items<K: Ord, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    del: impl Fn(&K) -> StoreOp,
    put: impl Fn(&K, &V) -> StoreOp,
    ops: &mut Vec<StoreOp>,
) {
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        ops.push(del(k));
    }
    for (k, v) in new {
        if old.get(k) != Some(v) {
            ops.push(put(k, v));
        }
    }
}

fn device_queue(s: &Session) -> impl Iterator<Item = &Delivery> {
    let inflight = match &s.inflight {
        Some(i) => match &i.kind {
            InflightKind::Publish { delivery, .. } => Some(delivery),
            _ => None,
        },
        None => None,
    };
    inflight.into_iter().chain(s.queue.iter())
}

fn local_record(s: &LocalSession) -> SessionRecord {
    SessionRecord {
        clean: s.clean,
        asleep: false,
        sleep_secs: 0,
        keep_alive_secs: 0,
        topics: Vec::new(),
        subscriptions: s
            .subscriptions
            .iter()
            .map(|(f, q)| (f.clone(), *q))
            .collect(),
        predefined_subscriptions: Vec::new(),
        will: None,
        last_msg_id: 0,
        identity: None,
    }
}

impl Gateway {
    /// Whether store operations are produced (set by
    /// [`EngineConfig::persist`](super::EngineConfig)).
    pub fn persistence_enabled(&self) -> bool {
        self.persist.enabled
    }

    /// Marks a session as changed; its durable state is compared with what
    /// was written at the next [`take_store_ops`](Self::take_store_ops).
    pub(super) fn touch(&mut self, sid: SessionId) {
        if self.persist.enabled {
            self.persist.dirty.insert(sid);
        }
    }

    /// Marks a retained topic as changed.
    pub(super) fn touch_retained(&mut self, topic: &Arc<str>) {
        if self.persist.enabled {
            self.persist.dirty_retained.insert(topic.clone());
        }
    }

    /// A durable id for a QoS 1/2 message bound upstream, with its store
    /// operation; `None` when persistence is off or the message is QoS 0.
    /// `linger`: a device's message at `now`, whose record waits for the
    /// broker's acknowledgement when it may (`linger.rs`).
    pub(super) fn outbox_id(
        &mut self,
        topic: &str,
        payload: &Bytes,
        qos: u8,
        retain: bool,
        device: Option<&str>,
        linger: Option<Instant>,
    ) -> Option<u64> {
        if !self.persist.enabled || qos == 0 {
            return None;
        }
        let id = self.persist.next_id();
        let record = OutboxRecord {
            message: StoredMessage::new(topic, payload, qos, retain),
            device: device.map(str::to_owned),
        };
        match linger {
            Some(now) if self.may_linger(now) => self.hold_outbox(now, id, record),
            _ => self.persist.ops.push(StoreOp::PutOutbox(id, record)),
        }
        Some(id)
    }

    /// A durable id for a QoS 1/2 message queued for a client.
    pub(super) fn queue_id(&mut self, qos: u8) -> Option<u64> {
        (self.persist.enabled && qos > 0).then(|| self.persist.next_id())
    }

    /// Everything to write since the last call: the differences of every
    /// dirty session and retained topic. The driver commits them in one
    /// transaction before carrying out the outputs of the same batch.
    pub fn take_store_ops(&mut self) -> Vec<StoreOp> {
        if !self.persist.enabled {
            return Vec::new();
        }
        let dirty = std::mem::take(&mut self.persist.dirty);
        for sid in dirty {
            self.diff_session(sid);
        }
        let topics = std::mem::take(&mut self.persist.dirty_retained);
        for topic in topics {
            let op = match self.retained.get(&topic) {
                Some(m) => StoreOp::PutRetained(
                    topic.to_string(),
                    StoredMessage::new(&topic, &m.payload, m.qos, true),
                ),
                None => StoreOp::DelRetained(topic.to_string()),
            };
            self.persist.ops.push(op);
        }
        std::mem::take(&mut self.persist.ops)
    }

    /// Emits what changed for one session since it was last written.
    fn diff_session(&mut self, sid: SessionId) {
        let mut inbound_qos2: BTreeMap<u16, ()> = BTreeMap::new();
        let (key, record, current) = if let Some(s) = self.sessions.get(&sid) {
            let key = ClientKey {
                kind: ClientKind::Device,
                client_id: s.client_id.to_string(),
            };
            if device_is_durable(s) {
                inbound_qos2.extend(s.inbound_qos2.iter().map(|&m| (m, ())));
                let current: Vec<(u64, QueuedRecord)> = device_queue(s)
                    .filter_map(|d| {
                        d.store_id.map(|id| {
                            (
                                id,
                                QueuedRecord {
                                    owner: key.clone(),
                                    msg: StoredMessage::new(&d.topic, &d.payload, d.qos, d.retain),
                                    sent_as: d.sent_as,
                                },
                            )
                        })
                    })
                    .collect();
                (key, Some(device_record(s)), current)
            } else {
                (key, None, Vec::new())
            }
        } else if let Some(s) = self.locals.sessions.get(&sid) {
            let key = ClientKey {
                kind: ClientKind::Local,
                client_id: s.client_id.to_string(),
            };
            if s.clean {
                (key, None, Vec::new())
            } else {
                let current = s
                    .sent
                    .iter()
                    .chain(s.queue.iter())
                    .filter_map(|d| {
                        d.store_id.map(|id| {
                            (
                                id,
                                QueuedRecord {
                                    owner: key.clone(),
                                    msg: StoredMessage::new(&d.topic, &d.payload, d.qos, d.retain),
                                    sent_as: None,
                                },
                            )
                        })
                    })
                    .collect();
                (key, Some(local_record(s)), current)
            }
        } else {
            // Removed: forget_session already wrote its deletions.
            return;
        };
        let written = self.persist.written.entry(sid).or_default();
        let ops = &mut self.persist.ops;
        let current_ids: BTreeSet<u64> = current.iter().map(|(id, _)| *id).collect();
        for id in written.ids.difference(&current_ids) {
            ops.push(StoreOp::DelQueued(*id));
        }
        for (id, rec) in current {
            if !written.ids.contains(&id) {
                ops.push(StoreOp::PutQueued(id, rec));
            }
        }
        written.ids = current_ids;
        // The items first: a head is written only once what it lost to
        // them is in the same batch.
        let (head, topics, subscriptions) = match record {
            Some(mut r) => {
                let topics: BTreeMap<u16, String> =
                    std::mem::take(&mut r.topics).into_iter().collect();
                let subscriptions: BTreeMap<String, u8> =
                    std::mem::take(&mut r.subscriptions).into_iter().collect();
                (Some(r), topics, subscriptions)
            }
            None => (None, BTreeMap::new(), BTreeMap::new()),
        };
        diff_items(
            &written.topics,
            &topics,
            |id| StoreOp::DelTopic(key.clone(), *id),
            |id, name| StoreOp::PutTopic(key.clone(), *id, name.clone()),
            ops,
        );
        written.topics = topics;
        diff_items(
            &written.subscriptions,
            &subscriptions,
            |filter| StoreOp::DelSubscription(key.clone(), filter.clone()),
            |filter, qos| StoreOp::PutSubscription(key.clone(), filter.clone(), *qos),
            ops,
        );
        written.subscriptions = subscriptions;
        diff_items(
            &written.inbound_qos2,
            &inbound_qos2,
            |m| StoreOp::DelInboundQos2(key.clone(), *m),
            |m, ()| StoreOp::PutInboundQos2(key.clone(), *m),
            ops,
        );
        written.inbound_qos2 = inbound_qos2;
        match (head, &written.record) {
            (Some(new), Some(old)) if new == *old => {}
            (Some(new), _) => {
                ops.push(StoreOp::PutSession(key, new.clone()));
                written.record = Some(new);
            }
            (None, Some(_)) => {
                ops.push(StoreOp::DelSession(key));
                written.record = None;
            }
            (None, None) => {}
        }
        if written.record.is_none() && written.ids.is_empty() {
            self.persist.written.remove(&sid);
        }
    }

    /// A session is being removed: delete whatever was written for it.
    pub(super) fn forget_session(&mut self, sid: SessionId, key: ClientKey) {
        self.persist.dirty.remove(&sid);
        if let Some(written) = self.persist.written.remove(&sid) {
            for id in written.ids {
                self.persist.ops.push(StoreOp::DelQueued(id));
            }
            for id in written.topics.into_keys() {
                self.persist.ops.push(StoreOp::DelTopic(key.clone(), id));
            }
            for filter in written.subscriptions.into_keys() {
                self.persist
                    .ops
                    .push(StoreOp::DelSubscription(key.clone(), filter));
            }
            for m in written.inbound_qos2.into_keys() {
                self.persist
                    .ops
                    .push(StoreOp::DelInboundQos2(key.clone(), m));
            }
            if written.record.is_some() {
                self.persist.ops.push(StoreOp::DelSession(key));
            }
        }
    }

    /// Rebuilds sessions, queues and retained messages from the store at
    /// start-up (before any input). Restored devices are asleep (their sleep
    /// timer starts again at `now`) or disconnected; they find their session
    /// when they wake or reconnect. Local persistent sessions wait for their
    /// client. Subscriptions are subscribed upstream again.
    pub fn restore(&mut self, now: Instant, restored: Restored) {
        self.persist.next_id = self.persist.next_id.max(restored.max_id);
        for (topic, msg) in restored.retained {
            let topic: Arc<str> = Arc::from(topic.as_str());
            let weight = msg.payload.len();
            let kept = self.retained.set_weighed(
                &topic,
                RetainedMessage {
                    payload: Bytes::from(msg.payload),
                    qos: msg.qos,
                },
                weight,
                self.cfg.max_retained_bytes,
            );
            if kept.is_err() {
                // Over a bound lowered since it was written: forgotten on
                // disk too, so the store and the memory agree.
                self.persist
                    .ops
                    .push(StoreOp::DelRetained(topic.to_string()));
            }
        }
        // Each session's items, joined to its head.
        let mut items: HashMap<ClientKey, ItemMaps> = HashMap::new();
        for (key, id, name) in restored.topics {
            items.entry(key).or_default().0.insert(id, name);
        }
        for (key, filter, qos) in restored.subscriptions {
            items.entry(key).or_default().1.insert(filter, qos);
        }
        let mut inbound: HashMap<ClientKey, BTreeMap<u16, ()>> = HashMap::new();
        for (key, m) in restored.inbound_qos2 {
            inbound.entry(key).or_default().insert(m, ());
        }
        let mut by_key: HashMap<ClientKey, SessionId> = HashMap::new();
        for (key, head) in restored.sessions {
            let (topics, subscriptions) = items.remove(&key).unwrap_or_default();
            // A whole record (a store not yet migrated) carries its own.
            let mut record = head.clone();
            let mut all_topics: BTreeMap<u16, String> =
                std::mem::take(&mut record.topics).into_iter().collect();
            all_topics.extend(topics.iter().map(|(id, n)| (*id, n.clone())));
            let mut all_subscriptions: BTreeMap<String, u8> =
                std::mem::take(&mut record.subscriptions)
                    .into_iter()
                    .collect();
            all_subscriptions.extend(subscriptions.iter().map(|(f, q)| (f.clone(), *q)));
            record.topics = all_topics.into_iter().collect();
            record.subscriptions = all_subscriptions.into_iter().collect();
            let sid = match key.kind {
                ClientKind::Device => self.restore_device(now, &key, &record),
                ClientKind::Local => self.restore_local(now, &key, &record),
            };
            let inbound_qos2 = inbound.remove(&key).unwrap_or_default();
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.inbound_qos2 = inbound_qos2.keys().copied().collect();
            }
            self.persist.written.insert(
                sid,
                Persisted {
                    record: Some(head),
                    topics,
                    subscriptions,
                    inbound_qos2,
                    ids: BTreeSet::new(),
                },
            );
            by_key.insert(key, sid);
        }
        // Items whose head is gone: deleted.
        for (key, ids) in inbound {
            for m in ids.into_keys() {
                self.persist
                    .ops
                    .push(StoreOp::DelInboundQos2(key.clone(), m));
            }
        }
        for (key, (topics, subscriptions)) in items {
            for id in topics.into_keys() {
                self.persist.ops.push(StoreOp::DelTopic(key.clone(), id));
            }
            for filter in subscriptions.into_keys() {
                self.persist
                    .ops
                    .push(StoreOp::DelSubscription(key.clone(), filter));
            }
        }
        for (id, rec) in restored.queued {
            let Some(&sid) = by_key.get(&rec.owner) else {
                // An orphan (its session record was lost): delete it.
                self.persist.ops.push(StoreOp::DelQueued(id));
                continue;
            };
            let topic: Arc<str> = Arc::from(rec.msg.topic.as_str());
            let payload = Bytes::from(rec.msg.payload);
            match rec.owner.kind {
                ClientKind::Device => {
                    if let Some(s) = self.sessions.get_mut(&sid) {
                        s.queued_bytes += payload.len();
                        self.queued_bytes_total += payload.len();
                        s.queue.push_back(Delivery {
                            topic,
                            payload,
                            qos: rec.msg.qos,
                            retain: rec.msg.retain,
                            reregistered: false,
                            sent_as: rec.sent_as,
                            store_id: Some(id),
                            downlink: None,
                        });
                    }
                }
                ClientKind::Local => {
                    if let Some(s) = self.locals.sessions.get_mut(&sid) {
                        s.queued_bytes += payload.len();
                        self.queued_bytes_total += payload.len();
                        s.queue.push_back(LocalDelivery {
                            topic,
                            payload,
                            qos: rec.msg.qos,
                            retain: rec.msg.retain,
                            store_id: Some(id),
                        });
                    }
                }
            }
            if let Some(written) = self.persist.written.get_mut(&sid) {
                written.ids.insert(id);
            }
        }
    }

    fn restore_device(&mut self, now: Instant, key: &ClientKey, r: &SessionRecord) -> SessionId {
        let sid = self.new_session_id();
        let client_id: Arc<str> = Arc::from(key.client_id.as_str());
        let mut s = Session::detached(client_id.clone(), now, self.cfg.max_topics_per_client);
        s.clean_session = r.clean;
        s.state = if r.asleep {
            ClientState::Asleep
        } else {
            ClientState::Disconnected
        };
        s.sleep_duration = Duration::from_secs(r.sleep_secs);
        s.keep_alive = Duration::from_secs(r.keep_alive_secs);
        s.topics = TopicTable::restore(self.cfg.max_topics_per_client, &r.topics);
        s.topics.attach(&self.topic_bytes);
        s.predefined_subscriptions = r.predefined_subscriptions.iter().copied().collect();
        s.will = r.will.clone().map(will_of);
        s.last_msg_id = r.last_msg_id;
        s.identity = r.identity.as_deref().map(Arc::from);
        s.expiry = if r.clean && !r.asleep {
            Some(Duration::ZERO)
        } else {
            self.cfg.session_expiry
        };
        s.subscriptions = r.subscriptions.iter().cloned().collect();
        self.sessions.insert(sid, s);
        self.by_client.insert(client_id, sid);
        if self.per_device() {
            self.restore_device_session(sid);
        } else {
            for (filter, qos) in &r.subscriptions {
                self.subscribe_filter(Subscriber::Device(sid), filter, *qos, true);
            }
        }
        self.arm(sid);
        sid
    }

    fn restore_local(&mut self, now: Instant, key: &ClientKey, r: &SessionRecord) -> SessionId {
        let sid = self.new_session_id();
        let client_id: Arc<str> = Arc::from(key.client_id.as_str());
        let expires = self.cfg.session_expiry.map(|e| now + e);
        self.locals.sessions.insert(
            sid,
            LocalSession {
                subscriptions: r.subscriptions.iter().cloned().collect(),
                expires,
                ..LocalSession::new(client_id.clone(), r.clean)
            },
        );
        if let Some(at) = expires {
            self.locals.expiry.insert((at, sid));
        }
        self.locals.by_client.insert(client_id, sid);
        for (filter, qos) in &r.subscriptions {
            self.subscribe_filter(Subscriber::Local(sid), filter, *qos, true);
        }
        sid
    }
}
