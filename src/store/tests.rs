//! The store on a real directory: what is committed comes back after a
//! reopen, in order; session items by owner; a whole record from an older
//! store read and migrated by the engine; a corrupt store is moved aside; a
//! second opener is refused.

use super::*;
use crate::core::{QueuedRecord, SessionRecord};

fn outbox(message: StoredMessage, device: Option<&str>) -> OutboxRecord {
    OutboxRecord {
        message,
        device: device.map(str::to_owned),
    }
}

#[test]
fn an_outbox_value_from_before_per_device_sessions_still_reads() -> Result<(), postcard::Error> {
    let legacy = postcard::to_allocvec(&msg("up/old", "kept"))?;
    assert_eq!(
        super::decode_outbox(&legacy)?,
        outbox(msg("up/old", "kept"), None)
    );
    let current = postcard::to_allocvec(&outbox(msg("up/new", "x"), Some("d")))?;
    assert_eq!(
        super::decode_outbox(&current)?,
        outbox(msg("up/new", "x"), Some("d"))
    );
    assert!(super::decode_outbox(&[0xff, 0xff, 0xff]).is_err());
    Ok(())
}

fn msg(topic: &str, payload: &str) -> StoredMessage {
    StoredMessage {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        qos: 1,
        retain: false,
    }
}

fn device(id: &str) -> ClientKey {
    ClientKey {
        kind: ClientKind::Device,
        client_id: id.into(),
    }
}

fn record() -> SessionRecord {
    SessionRecord {
        clean: false,
        asleep: true,
        sleep_secs: 60,
        keep_alive_secs: 30,
        topics: vec![(1, "a/b".into())],
        subscriptions: vec![("cmd/#".into(), 1)],
        predefined_subscriptions: vec![],
        will: None,
        last_msg_id: 7,
        identity: None,
    }
}

#[test]
fn a_session_head_from_before_the_identity_still_reads() -> Result<(), postcard::Error> {
    // The same record, as a store written before the field held it: every
    // field but the last (postcard writes `None` as one 0 byte, last).
    let current = postcard::to_allocvec(&record())?;
    let (none, legacy) = current
        .split_last()
        .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
    assert_eq!(*none, 0);
    assert_eq!(super::decode_session(legacy)?, record());
    let bound = SessionRecord {
        identity: Some("dev1".into()),
        ..record()
    };
    assert_eq!(
        super::decode_session(&postcard::to_allocvec(&bound)?)?,
        bound
    );
    assert!(super::decode_session(&[0xff, 0xff, 0xff]).is_err());
    Ok(())
}

#[test]
fn committed_state_comes_back_after_a_reopen() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|source| StoreError::Dir {
        dir: "tmp".into(),
        source,
    })?;
    {
        let (store, loaded) = Store::open(dir.path())?;
        assert!(loaded.outbox.is_empty() && loaded.restored.sessions.is_empty());
        let ops = vec![
            StoreOp::PutSession(device("d1"), record()),
            StoreOp::PutQueued(
                3,
                QueuedRecord {
                    owner: device("d1"),
                    msg: msg("cmd/x", "q"),
                    sent_as: Some(9),
                },
            ),
            StoreOp::PutRetained("site/mode".into(), msg("site/mode", "eco")),
            StoreOp::PutOutbox(10, outbox(msg("up/1", "one"), None)),
            StoreOp::PutOutbox(11, outbox(msg("up/2", "two"), None)),
            StoreOp::PutOutbox(300, outbox(msg("up/3", "three"), Some("dev-7"))),
        ];
        store.commit(&ops, &[])?;
        // Settle one outbox message and delete the retained one.
        store.commit(&[StoreOp::DelRetained("site/mode".into())], &[11])?;
    }
    let (_store, loaded) = Store::open(dir.path())?;
    assert_eq!(loaded.restored.sessions, vec![(device("d1"), record())]);
    assert_eq!(loaded.restored.queued.len(), 1);
    assert_eq!(loaded.restored.queued[0].0, 3);
    assert_eq!(loaded.restored.queued[0].1.sent_as, Some(9));
    assert!(loaded.restored.retained.is_empty());
    let outbox: Vec<(u64, String, Option<String>)> = loaded
        .outbox
        .iter()
        .map(|(id, r)| (*id, r.message.topic.clone(), r.device.clone()))
        .collect();
    // In id order (big-endian keys), 300 after 10 although "300" < "10";
    // the device whose session publishes it is kept.
    assert_eq!(
        outbox,
        vec![
            (10, "up/1".into(), None),
            (300, "up/3".into(), Some("dev-7".into()))
        ]
    );
    assert_eq!(loaded.restored.max_id, 300);
    Ok(())
}

#[test]
fn session_items_come_back_by_owner_and_deleted_ones_stay_gone() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|source| StoreError::Dir {
        dir: "tmp".into(),
        source,
    })?;
    let local = ClientKey {
        kind: ClientKind::Local,
        client_id: "d".into(),
    };
    {
        let (store, _) = Store::open(dir.path())?;
        // "d" is a prefix of "d1": the length in the key keeps them apart.
        let ops = vec![
            StoreOp::PutTopic(device("d1"), 1, "a/b".into()),
            StoreOp::PutTopic(device("d1"), 2, "a/c".into()),
            StoreOp::PutTopic(device("d"), 1, "z".into()),
            StoreOp::PutSubscription(device("d1"), "cmd/#".into(), 2),
            StoreOp::PutSubscription(local.clone(), "cmd/#".into(), 1),
        ];
        let stats = store.commit(&ops, &[])?;
        assert_eq!(stats.bytes, 3 + 3 + 1 + 1 + 1, "only the values count");
        store.commit(
            &[
                StoreOp::DelTopic(device("d1"), 1),
                StoreOp::DelSubscription(local.clone(), "cmd/#".into()),
            ],
            &[],
        )?;
    }
    let (_store, loaded) = Store::open(dir.path())?;
    let mut topics = loaded.restored.topics.clone();
    topics.sort();
    assert_eq!(
        topics,
        vec![
            (device("d"), 1, "z".to_string()),
            (device("d1"), 2, "a/c".to_string())
        ]
    );
    assert_eq!(
        loaded.restored.subscriptions,
        vec![(device("d1"), "cmd/#".to_string(), 2)]
    );
    Ok(())
}

#[test]
fn an_unreadable_item_key_is_refused_not_misread() {
    assert_eq!(super::decode_item(b"", b""), None);
    assert_eq!(super::decode_item(b"d\x00\x05ab", b"x"), None);
    assert_eq!(super::decode_item(b"x\x00\x01at\x00\x01", b"n"), None);
    let key = super::topic_item_key(&device("ab"), 7);
    assert_eq!(
        super::decode_item(&key, b"n/m"),
        Some((device("ab"), super::Item::Topic(7, "n/m".into())))
    );
}

#[test]
fn a_second_opener_is_refused_with_a_clear_error() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|source| StoreError::Dir {
        dir: "tmp".into(),
        source,
    })?;
    let (_first, _) = Store::open(dir.path())?;
    match Store::open(dir.path()) {
        Err(e @ StoreError::Engine { .. }) => {
            assert!(e.to_string().contains("Locked"), "{e}");
            Ok(())
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("two processes opened one store"),
    }
}

#[test]
fn an_unreadable_record_moves_the_store_aside_and_starts_fresh() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|source| StoreError::Dir {
        dir: "tmp".into(),
        source,
    })?;
    {
        let (store, _) = Store::open(dir.path())?;
        // A value that is not a valid session record.
        let mut batch = store.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(&store.sessions, b"dbroken".to_vec(), vec![0xff; 3]);
        batch.commit().map_err(|source| StoreError::Engine {
            dir: store.dir.clone(),
            source,
        })?;
    }
    let (_store, loaded) = Store::open(dir.path())?;
    assert!(loaded.restored.sessions.is_empty());
    assert!(
        dir.path().join("store.corrupt-1").is_dir(),
        "the bad store is kept aside"
    );
    Ok(())
}

#[test]
fn a_whole_record_from_an_older_store_is_migrated_to_items_by_the_engine() -> Result<(), StoreError>
{
    use crate::core::{EngineConfig, Gateway, Peer};
    use crate::proto::{Packet, QoS, SubscribeTopic};
    let dir = tempfile::tempdir().map_err(|source| StoreError::Dir {
        dir: "tmp".into(),
        source,
    })?;
    // What a store written before session items holds: one whole record.
    let legacy = SessionRecord {
        asleep: false,
        ..record()
    };
    {
        let (store, _) = Store::open(dir.path())?;
        store.commit(&[StoreOp::PutSession(device("d1"), legacy)], &[])?;
    }
    let now = std::time::Instant::now();
    let engine = || {
        Gateway::new(
            EngineConfig {
                persist: true,
                ..EngineConfig::default()
            },
            now,
        )
    };
    {
        let (store, loaded) = Store::open(dir.path())?;
        let mut gw = engine();
        gw.restore(now, loaded.restored);
        assert!(gw.take_store_ops().is_empty(), "read as it is");
        // The device comes back and subscribes once more: the session
        // changes, and is written as a head and items.
        let peer = Peer::udp(std::net::SocketAddr::from(([127, 0, 0, 1], 5000)));
        for packet in [
            Packet::Connect {
                will: false,
                clean_session: false,
                protocol_id: 1,
                duration: 60,
                client_id: "d1".into(),
            },
            Packet::Subscribe {
                dup: false,
                qos: QoS::AtLeastOnce,
                msg_id: 1,
                topic: SubscribeTopic::Name("cfg/#".into()),
            },
        ] {
            let mut buf = bytes::BytesMut::new();
            assert!(crate::proto::encode(&packet, &mut buf).is_ok());
            gw.handle_datagram(now, peer.clone(), &buf);
            while gw.poll_output().is_some() {}
        }
        store.commit(&gw.take_store_ops(), &[])?;
    }
    let (_store, loaded) = Store::open(dir.path())?;
    let heads = &loaded.restored.sessions;
    assert_eq!(heads.len(), 1);
    assert!(heads[0].1.topics.is_empty() && heads[0].1.subscriptions.is_empty());
    assert_eq!(
        loaded.restored.topics,
        vec![(device("d1"), 1, "a/b".to_string())]
    );
    let mut filters: Vec<String> = loaded
        .restored
        .subscriptions
        .iter()
        .map(|(_, f, _)| f.clone())
        .collect();
    filters.sort();
    assert_eq!(filters, ["cfg/#", "cmd/#"]);
    Ok(())
}
