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
    topics: BTreeMap<(ClientKey, u16), String>,
    subscriptions: BTreeMap<(ClientKey, String), u8>,
    inbound_qos2: std::collections::BTreeSet<(ClientKey, u16)>,
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
                StoreOp::PutTopic(k, id, name) => {
                    self.topics.insert((k, id), name);
                }
                StoreOp::DelTopic(k, id) => {
                    self.topics.remove(&(k, id));
                }
                StoreOp::PutSubscription(k, filter, qos) => {
                    self.subscriptions.insert((k, filter), qos);
                }
                StoreOp::DelSubscription(k, filter) => {
                    self.subscriptions.remove(&(k, filter));
                }
                StoreOp::PutInboundQos2(k, m) => {
                    self.inbound_qos2.insert((k, m));
                }
                StoreOp::DelInboundQos2(k, m) => {
                    self.inbound_qos2.remove(&(k, m));
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
            topics: self
                .topics
                .iter()
                .map(|((k, id), name)| (k.clone(), *id, name.clone()))
                .collect(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|((k, filter), qos)| (k.clone(), filter.clone(), *qos))
                .collect(),
            queued: self.queued.iter().map(|(id, r)| (*id, r.clone())).collect(),
            retained: self
                .retained
                .iter()
                .map(|(t, m)| (t.clone(), m.clone()))
                .collect(),
            inbound_qos2: self.inbound_qos2.iter().cloned().collect(),
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
    // Its subscription is an item of its own, not inside the head.
    assert!(record.subscriptions.is_empty());
    assert_eq!(
        store.subscriptions.get(&(key.clone(), "cmd/#".to_owned())),
        Some(&1)
    );
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
    assert!(store.subscriptions.is_empty() && store.topics.is_empty());
}

/// The size of what `ops` write, as postcard would encode the records.
fn written_size(ops: &[StoreOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            StoreOp::PutSession(k, r) => {
                k.client_id.len() + r.will.as_ref().map_or(0, |w| w.payload.len()) + 32
            }
            StoreOp::PutTopic(k, _, name) => k.client_id.len() + name.len() + 4,
            StoreOp::PutSubscription(k, filter, _) => k.client_id.len() + filter.len() + 2,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_register_or_subscribe_on_a_persistent_session_writes_only_what_changed() {
    let mut h = durable_harness();
    let d = peer(3);
    h.connect(&d, "keeper", false);
    h.gw.take_store_ops();
    let name = |i: usize| format!("{i:04}/{}", "n".repeat(1900));
    for i in 0..50 {
        h.register(&d, 10 + i as u16, &name(i));
        let ops = h.gw.take_store_ops();
        assert!(
            matches!(ops.as_slice(), [StoreOp::PutTopic(_, _, n)] if *n == name(i)),
            "REGISTER {i} writes its one topic: {ops:?}"
        );
        assert!(written_size(&ops) < 2000);
    }
    h.subscribe(&d, 99, "cmd/+/set", QoS::AtLeastOnce);
    let ops = h.gw.take_store_ops();
    assert!(
        ops.iter()
            .all(|o| matches!(o, StoreOp::PutSubscription(..) | StoreOp::PutTopic(..))),
        "{ops:?}"
    );
    assert_eq!(ops.len(), 1, "{ops:?}");
    // UNSUBSCRIBE deletes its item only.
    h.send(
        &d,
        Packet::Unsubscribe {
            msg_id: 100,
            topic: SubscribeTopic::Name("cmd/+/set".into()),
        },
    );
    let ops = h.gw.take_store_ops();
    assert!(
        matches!(ops.as_slice(), [StoreOp::DelSubscription(_, f)] if f == "cmd/+/set"),
        "{ops:?}"
    );
}

#[test]
fn sessions_written_as_items_are_restored_identically_and_not_rewritten() {
    let mut h = durable_harness();
    let d = peer(3);
    h.connect(&d, "keeper", false);
    let id = h.register(&d, 1, "up/temp");
    h.subscribe(&d, 2, "cmd/#", QoS::ExactlyOnce);
    h.subscribe(&d, 3, "cfg/x", QoS::AtLeastOnce);
    h.send(&d, Packet::Disconnect { duration: None });
    let mut store = FakeStore::default();
    store.apply(h.gw.take_store_ops());
    let key = ClientKey {
        kind: ClientKind::Device,
        client_id: "keeper".into(),
    };
    let before = h.gw.devices(h.now);

    let mut h2 = durable_harness();
    h2.gw.restore(h2.now, store.restored());
    assert!(
        h2.gw.take_store_ops().is_empty(),
        "a restore rewrites nothing"
    );
    let after = h2.gw.devices(h2.now);
    let subs = |ds: &[crate::DeviceView]| {
        ds.iter()
            .find(|d| &*d.client_id == "keeper")
            .map(|d| d.subscriptions.clone())
    };
    assert_eq!(subs(&before), subs(&after));
    assert!(subs(&after).is_some_and(|s| s.len() == 2));
    // The topic id is the one it had (a restored id is told again first).
    assert_eq!(
        store.topics.get(&(key, id)).map(String::as_str),
        Some("up/temp")
    );
    assert_eq!(h2.gw.check_invariants(), Ok(()));
}

#[test]
fn a_whole_record_from_an_older_store_is_read_and_migrated_when_it_changes() {
    let key = ClientKey {
        kind: ClientKind::Device,
        client_id: "old".into(),
    };
    // As stores before items wrote it: everything in one record.
    let legacy = SessionRecord {
        clean: false,
        asleep: false,
        sleep_secs: 0,
        keep_alive_secs: 60,
        topics: vec![(1, "up/a".into()), (2, "up/b".into())],
        subscriptions: vec![("cmd/#".into(), 1)],
        predefined_subscriptions: Vec::new(),
        will: None,
        last_msg_id: 7,
        identity: None,
    };
    let mut store = FakeStore::default();
    store.sessions.insert(key.clone(), legacy);
    let mut h = durable_harness();
    h.gw.restore(h.now, store.restored());
    assert!(h.gw.take_store_ops().is_empty(), "read as it is");
    // The device comes back and subscribes to one more filter: the session
    // is written as a head and items.
    let d = peer(4);
    h.connect(&d, "old", false);
    h.subscribe(&d, 1, "cfg/#", QoS::AtLeastOnce);
    store.apply(h.gw.take_store_ops());
    let head = store.sessions.get(&key).cloned();
    assert!(head.is_some_and(|r| r.topics.is_empty() && r.subscriptions.is_empty()));
    let names: Vec<&str> = store.topics.values().map(String::as_str).collect();
    assert_eq!(names, ["up/a", "up/b"]);
    let filters: Vec<&str> = store
        .subscriptions
        .keys()
        .map(|(_, f)| f.as_str())
        .collect();
    assert_eq!(filters, ["cfg/#", "cmd/#"]);
    // And a gateway restored from the migrated store has it all.
    let mut h2 = durable_harness();
    h2.gw.restore(h2.now, store.restored());
    assert!(h2.gw.take_store_ops().is_empty());
    let subs = h2
        .gw
        .devices(h2.now)
        .into_iter()
        .find(|d| &*d.client_id == "old")
        .map(|d| d.subscriptions.len());
    assert_eq!(subs, Some(2));
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

#[test]
fn a_qos2_retransmission_after_a_restart_is_acknowledged_not_forwarded_again() {
    // A persistent device's QoS 2 PUBLISH, acknowledged (PUBREC), whose
    // PUBREL has not come when the gateway stops: its MsgId is kept with the
    // session, so the device's retransmission to the restarted gateway is
    // recognised (exactly once across the restart).
    let mut h = durable_harness();
    let mut store = FakeStore::default();
    let (a, watcher) = (peer(1), peer(2));
    h.connect(&watcher, "watcher", true);
    h.subscribe(&watcher, 1, "data/#", QoS::ExactlyOnce);
    h.connect(&a, "a", false);
    let topic = h.register(&a, 1, "data/a");
    store.apply(h.gw.take_store_ops());
    let out = h.send(
        &a,
        publish(QoS::ExactlyOnce, TopicRef::Id(topic), 9, "once"),
    );
    assert!(packets_to(&out, &a).contains(&Packet::PubRec { msg_id: 9 }));
    let ops = h.gw.take_store_ops();
    assert!(
        ops.iter()
            .any(|op| matches!(op, StoreOp::PutInboundQos2(k, 9) if k.client_id == "a")),
        "{ops:?}"
    );
    store.apply(ops);

    let mut h2 = durable_harness();
    h2.gw.restore(h2.now, store.restored());
    h2.gw.take_store_ops();
    let w = peer(3);
    h2.connect(&w, "watcher", true);
    h2.subscribe(&w, 1, "data/#", QoS::ExactlyOnce);
    h2.connect(&a, "a", false);
    let topic = h2.register(&a, 2, "data/a");
    let mut again = publish(QoS::ExactlyOnce, TopicRef::Id(topic), 9, "once");
    if let Packet::Publish { dup, .. } = &mut again {
        *dup = true;
    }
    let out = h2.send(&a, again);
    assert_eq!(packets_to(&out, &a), vec![Packet::PubRec { msg_id: 9 }]);
    assert!(
        packets_to(&out, &w).is_empty(),
        "delivered a second time: {out:?}"
    );
    // PUBREL releases it, on disk too.
    let out = h2.send(&a, Packet::PubRel { msg_id: 9 });
    assert_eq!(packets_to(&out, &a), vec![Packet::PubComp { msg_id: 9 }]);
    let ops = h2.gw.take_store_ops();
    assert!(
        ops.iter()
            .any(|op| matches!(op, StoreOp::DelInboundQos2(k, 9) if k.client_id == "a")),
        "{ops:?}"
    );
}

#[test]
fn a_clean_sessions_qos2_ids_are_not_written() {
    let mut h = durable_harness();
    let a = peer(1);
    h.connect(&a, "a", true);
    let topic = h.register(&a, 1, "data/a");
    h.gw.take_store_ops();
    h.send(&a, publish(QoS::ExactlyOnce, TopicRef::Id(topic), 9, "v"));
    h.send(&a, Packet::PubRel { msg_id: 9 });
    assert!(h.gw.take_store_ops().is_empty());
}

#[test]
fn a_sessions_dtls_identity_survives_a_restart() {
    // Bound before the restart, bound after it: a plain-UDP peer cannot
    // wake the restored sleeper and collect its buffer (docs/security.md),
    // while its own identity from a new address and DTLS session can.
    let mut h = durable_harness();
    let dev = Peer::udp_on(1, SocketAddr::from(([127, 0, 0, 1], 7001)));
    h.gw.handle_peer_authenticated(dev.link.clone(), std::sync::Arc::from("dev1"));
    h.connect(&dev, "dev1", false);
    h.subscribe(&dev, 1, "cmd/#", QoS::AtLeastOnce);
    h.send(
        &dev,
        Packet::Disconnect {
            duration: Some(600),
        },
    );
    let p = peer(1);
    h.connect(&p, "pub", true);
    let id = h.register(&p, 1, "cmd/x");
    h.send(&p, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "secret"));
    let mut store = FakeStore::default();
    store.apply(h.gw.take_store_ops());
    let key = ClientKey {
        kind: ClientKind::Device,
        client_id: "dev1".into(),
    };
    assert_eq!(
        store.sessions.get(&key).and_then(|r| r.identity.clone()),
        Some("dev1".to_owned())
    );

    let mut h2 = durable_harness();
    h2.gw.restore(h2.now, store.restored());
    assert_eq!(h2.gw.queued_for("dev1"), 1);
    let wake = Packet::PingReq {
        client_id: Some("dev1".into()),
    };
    assert!(
        h2.send(&peer(66), wake.clone()).is_empty(),
        "plain UDP ignored"
    );
    assert_eq!(h2.gw.queued_for("dev1"), 1);
    let back = Peer::udp_on(1, SocketAddr::from(([127, 0, 0, 1], 7002)));
    h2.gw
        .handle_peer_authenticated(back.link.clone(), std::sync::Arc::from("dev1"));
    let out = h2.send(&back, wake);
    // Its buffer starts to flow: the topic's REGISTER, then the message.
    assert!(
        matches!(packets_to(&out, &back).as_slice(), [Packet::Register { topic_name, .. }] if topic_name == "cmd/x"),
        "{out:?}"
    );
}
