//! The engine's store operations: what a durable session writes, that only
//! differences are written, that delivered messages are deleted, and that a
//! gateway restored from the written records carries on where the first one
//! stopped.

use std::collections::BTreeMap;

use super::*;
use crate::ClientKey;
use crate::persist::{ClientKind, QueuedRecord, Restored, SessionRecord, StoreOp, StoredMessage};

fn durable_harness() -> Harness {
    Harness::with(EngineConfig {
        persist: true,
        ..EngineConfig::default()
    })
}

/// What a store would hold after applying the operations, in key order.
#[derive(Default)]
struct FakeStore {
    sessions: BTreeMap<ClientKey, SessionRecord>,
    queued: BTreeMap<u64, QueuedRecord>,
    retained: BTreeMap<String, StoredMessage>,
}

impl FakeStore {
    fn apply(&mut self, ops: Vec<StoreOp>) {
        for op in ops {
            match op {
                StoreOp::PutSession(k, r) => {
                    self.sessions.insert(k, r);
                }
                StoreOp::DelSession(k) => {
                    self.sessions.remove(&k);
                }
                StoreOp::PutQueued(id, r) => {
                    self.queued.insert(id, r);
                }
                StoreOp::DelQueued(id) => {
                    self.queued.remove(&id);
                }
                StoreOp::PutRetained(t, m) => {
                    self.retained.insert(t, m);
                }
                StoreOp::DelRetained(t) => {
                    self.retained.remove(&t);
                }
                StoreOp::PutOutbox(..) => {}
            }
        }
    }

    fn restored(&self) -> Restored {
        Restored {
            sessions: self
                .sessions
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
            queued: self.queued.iter().map(|(id, r)| (*id, r.clone())).collect(),
            retained: self
                .retained
                .iter()
                .map(|(t, m)| (t.clone(), m.clone()))
                .collect(),
            max_id: self.queued.keys().max().copied().unwrap_or(0),
        }
    }
}

/// "sleepy" (CleanSession = false) subscribed to `cmd/#` and asleep; "a"
/// connected with `cmd/x` registered. Returns (a, sleepy, topic id).
fn sleeper(h: &mut Harness) -> (Peer, Peer, u16) {
    let (a, s) = (peer(1), peer(2));
    h.connect(&a, "a", true);
    h.connect(&s, "sleepy", false);
    h.subscribe(&s, 1, "cmd/#", QoS::AtLeastOnce);
    h.send(
        &s,
        Packet::Disconnect {
            duration: Some(600),
        },
    );
    let id = h.register(&a, 1, "cmd/x");
    (a, s, id)
}

fn queued_payloads(store: &FakeStore) -> Vec<String> {
    store
        .queued
        .values()
        .map(|r| String::from_utf8_lossy(&r.msg.payload).into_owned())
        .collect()
}

#[test]
fn a_sleepers_buffer_is_written_once_and_deleted_when_delivered() {
    let mut h = durable_harness();
    let (a, s, id) = sleeper(&mut h);
    let mut store = FakeStore::default();
    store.apply(h.gw.take_store_ops());
    let key = ClientKey {
        kind: ClientKind::Device,
        client_id: "sleepy".into(),
    };
    let record = store
        .sessions
        .get(&key)
        .expect("the sleeper's session is written");
    assert!(record.asleep && !record.clean);
    assert_eq!(record.subscriptions, vec![("cmd/#".to_owned(), 1)]);
    assert!(
        !store.sessions.keys().any(|k| k.client_id == "a"),
        "a clean, active device is not written"
    );

    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "one"));
    let ops = h.gw.take_store_ops();
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, StoreOp::PutQueued(..)))
            .count(),
        1,
        "one write for one buffered message: {ops:?}"
    );
    assert!(
        !ops.iter().any(|o| matches!(o, StoreOp::PutSession(..))),
        "the session record did not change, so it is not written again: {ops:?}"
    );
    store.apply(ops);
    assert_eq!(queued_payloads(&store), ["one"]);

    // Nothing changed: nothing to write.
    assert!(h.gw.take_store_ops().is_empty());

    // Woken, the message is handed over and acknowledged: deleted.
    let out = h.send(
        &s,
        Packet::PingReq {
            client_id: Some("sleepy".into()),
        },
    );
    let mut pending = packets_to(&out, &s);
    while let Some(p) = pending.first().cloned() {
        let reply = match p {
            Packet::Register {
                topic_id, msg_id, ..
            } => Packet::RegAck {
                topic_id,
                msg_id,
                return_code: ReturnCode::Accepted,
            },
            Packet::Publish { topic, msg_id, .. } => Packet::PubAck {
                topic_id: topic.raw(),
                msg_id,
                return_code: ReturnCode::Accepted,
            },
            _ => break,
        };
        pending = packets_to(&h.send(&s, reply), &s);
    }
    store.apply(h.gw.take_store_ops());
    assert!(
        store.queued.is_empty(),
        "delivered but still stored: {:?}",
        queued_payloads(&store)
    );
}

#[test]
fn a_restored_gateway_hands_over_what_the_first_one_buffered() {
    let mut h = durable_harness();
    let (a, _s, id) = sleeper(&mut h);
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "kept"));
    h.send(
        &a,
        Packet::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: TopicRef::Id(id),
            msg_id: 2,
            payload: b("retained"),
        },
    );
    let mut store = FakeStore::default();
    store.apply(h.gw.take_store_ops());
    assert_eq!(store.retained.len(), 1);

    // A new engine, restored from what was written; the device wakes from a
    // new address.
    let mut h2 = durable_harness();
    h2.gw.restore(h2.now, store.restored());
    assert_eq!(h2.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    assert_eq!(h2.gw.queued_for("sleepy"), 2);
    let s2 = peer(9);
    let out = h2.send(
        &s2,
        Packet::PingReq {
            client_id: Some("sleepy".into()),
        },
    );
    // The topic id is registered again first (restored ids are unconfirmed).
    assert!(matches!(
        packets_to(&out, &s2).first(),
        Some(Packet::Register { .. })
    ));
    // Restoring wrote nothing new; the queue is what the store already has.
    let ops = h2.gw.take_store_ops();
    assert!(
        !ops.iter().any(|o| matches!(o, StoreOp::PutQueued(..))),
        "restored messages are not written again: {ops:?}"
    );
}

#[test]
fn a_clean_session_that_ends_leaves_nothing_behind() {
    let mut h = durable_harness();
    let s = peer(2);
    h.connect(&s, "tmp", false);
    h.subscribe(&s, 1, "x/#", QoS::AtLeastOnce);
    let mut store = FakeStore::default();
    store.apply(h.gw.take_store_ops());
    assert_eq!(store.sessions.len(), 1);
    // It comes back with CleanSession = true: the old session is forgotten.
    h.connect(&s, "tmp", true);
    store.apply(h.gw.take_store_ops());
    assert!(
        store.sessions.is_empty(),
        "{:?}",
        store.sessions.keys().collect::<Vec<_>>()
    );
}

#[test]
fn without_persistence_nothing_is_produced() {
    let mut h = Harness::new();
    let (a, _s, id) = sleeper(&mut h);
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "x"));
    assert!(h.gw.take_store_ops().is_empty());
}

#[test]
fn the_gateways_own_sys_messages_are_never_written() {
    let mut h = durable_harness();
    h.gw.publish_internal(h.now, "$SYS/broker/uptime", b("10 seconds"), true);
    assert!(h.gw.take_store_ops().is_empty());
}
