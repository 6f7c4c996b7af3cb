//! The outbox linger (`linger.rs`): a device's QoS 1/2 message bound
//! upstream is acknowledged on its first safe copy — the broker's
//! acknowledgement, or the store's once the linger is over — and its outbox
//! record is written only in the second case.

use super::*;
use crate::persist::StoreOp;

const LINGER: Duration = Duration::from_millis(5);

fn lingering(connected: bool) -> Harness {
    let mut h = Harness::with(EngineConfig {
        upstream: true,
        persist: true,
        outbox_linger: LINGER,
        ..EngineConfig::default()
    });
    if connected {
        h.gw.handle_upstream_connected(h.now, true);
    }
    h
}

/// A connected device with a registered topic; the set-up's store
/// operations are taken.
fn device(h: &mut Harness, a: &Peer) -> u16 {
    h.connect(a, "a", true);
    let id = h.register(a, 1, "data/a");
    h.gw.take_store_ops();
    id
}

/// The durable ids of the messages handed upstream.
fn store_ids(out: &[Output]) -> Vec<u64> {
    upstream(out)
        .into_iter()
        .filter_map(|c| match c {
            UpstreamCommand::Publish { store_id, .. } => store_id,
            _ => None,
        })
        .collect()
}

fn outbox_writes(ops: &[StoreOp]) -> Vec<u64> {
    ops.iter()
        .filter_map(|op| match op {
            StoreOp::PutOutbox(id, _) => Some(*id),
            _ => None,
        })
        .collect()
}

fn puback(msg_id: u16, topic_id: u16) -> Packet {
    Packet::PubAck {
        topic_id,
        msg_id,
        return_code: ReturnCode::Accepted,
    }
}

#[test]
fn the_brokers_acknowledgement_within_the_linger_acknowledges_and_nothing_is_written() {
    let mut h = lingering(true);
    let a = peer(1);
    let topic = device(&mut h, &a);
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "v"));
    let ids = store_ids(&out);
    assert_eq!(ids.len(), 1, "handed upstream at once: {out:?}");
    assert!(
        packets_to(&out, &a).is_empty(),
        "no PUBACK before a safe copy"
    );
    assert!(outbox_writes(&h.gw.take_store_ops()).is_empty());
    assert_eq!(h.gw.lingering(), 1);
    let written = h.gw.handle_settled(h.now, ids);
    assert!(written.is_empty(), "never written, nothing to delete");
    assert_eq!(packets_to(&h.drain(), &a), vec![puback(7, topic)]);
    assert!(h.gw.take_store_ops().is_empty());
    assert_eq!(h.gw.lingering(), 0);
    assert_eq!(h.gw.stats().outbox_writes_saved, 1);
    // Nothing is left to fire.
    assert!(packets_to(&h.advance(LINGER * 2), &a).is_empty());
}

#[test]
fn after_the_linger_the_store_takes_it_and_the_device_is_acknowledged_behind_the_write() {
    let mut h = lingering(true);
    let a = peer(1);
    let topic = device(&mut h, &a);
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "v"));
    let ids = store_ids(&out);
    assert_eq!(h.gw.poll_timeout(), Some(h.now + LINGER));
    let out = h.advance(LINGER);
    // The write and the PUBACK come out of the same step: the driver
    // commits the write before it sends the PUBACK.
    assert_eq!(outbox_writes(&h.gw.take_store_ops()), ids);
    assert_eq!(packets_to(&out, &a), vec![puback(7, topic)]);
    // The broker's acknowledgement later: the record is deleted, and the
    // device is not acknowledged twice.
    assert_eq!(h.gw.handle_settled(h.now, ids.clone()), ids);
    assert!(packets_to(&h.drain(), &a).is_empty());
    assert_eq!(h.gw.stats().outbox_writes_lingered, 1);
}

#[test]
fn with_the_broker_away_it_is_written_at_once_as_without_a_linger() {
    let mut h = lingering(false);
    let a = peer(1);
    let topic = device(&mut h, &a);
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "v"));
    assert_eq!(packets_to(&out, &a), vec![puback(7, topic)]);
    assert_eq!(outbox_writes(&h.gw.take_store_ops()), store_ids(&out));
    assert_eq!(h.gw.lingering(), 0);
}

#[test]
fn losing_the_broker_writes_what_lingered_and_acknowledges_it() {
    let mut h = lingering(true);
    let a = peer(1);
    let topic = device(&mut h, &a);
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "v"));
    let ids = store_ids(&out);
    h.gw.handle_upstream_connected(h.now, false);
    assert_eq!(outbox_writes(&h.gw.take_store_ops()), ids);
    assert_eq!(packets_to(&h.drain(), &a), vec![puback(7, topic)]);
}

#[test]
fn a_qos2_pubrec_waits_for_the_first_safe_copy_and_a_retransmission_is_not_forwarded() {
    let mut h = lingering(true);
    let a = peer(1);
    let topic = device(&mut h, &a);
    let out = h.send(&a, publish(QoS::ExactlyOnce, TopicRef::Id(topic), 9, "v"));
    let ids = store_ids(&out);
    assert!(packets_to(&out, &a).is_empty());
    // The device retransmits before the broker answered: not forwarded
    // again (its MsgId is known).
    let again = h.send(&a, publish(QoS::ExactlyOnce, TopicRef::Id(topic), 9, "v"));
    assert!(store_ids(&again).is_empty(), "{again:?}");
    h.gw.handle_settled(h.now, ids);
    assert_eq!(
        packets_to(&h.drain(), &a),
        vec![Packet::PubRec { msg_id: 9 }]
    );
    assert!(h.gw.take_store_ops().is_empty());
}

#[test]
fn an_acknowledgement_held_for_an_earlier_connection_is_dropped() {
    let mut h = lingering(true);
    let a = peer(1);
    let topic = device(&mut h, &a);
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "v"));
    let ids = store_ids(&out);
    // The device reconnects (a reboot) before the broker answered.
    h.connect(&a, "a", true);
    h.gw.handle_settled(h.now, ids);
    assert!(packets_to(&h.drain(), &a).is_empty());
}

#[test]
fn a_local_clients_message_is_written_before_it_goes_up() {
    // Only a device's acknowledgement is held: a local client's is given by
    // the broker module at once, so its record cannot wait.
    let mut h = lingering(true);
    h.local_connect(LocalConnId(1), "l", true, None);
    h.gw.take_store_ops();
    h.gw.handle_local(
        h.now,
        LocalConnId(1),
        LocalInput::Publish {
            topic: "data/l".into(),
            payload: b("v"),
            qos: 1,
            retain: false,
            pkid: 3,
        },
    );
    let out = h.drain();
    assert_eq!(outbox_writes(&h.gw.take_store_ops()), store_ids(&out));
    assert_eq!(h.gw.lingering(), 0);
}

#[test]
fn per_device_an_acknowledgement_not_from_the_broker_writes_the_record_first() {
    let mut h = Harness::with(EngineConfig {
        upstream: true,
        per_device_sessions: true,
        persist: true,
        outbox_linger: LINGER,
        ..EngineConfig::default()
    });
    h.gw.handle_upstream_connected(h.now, true);
    let a = peer(1);
    let out = h.send(
        &a,
        Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 1,
            duration: 60,
            client_id: "a".into(),
        },
    );
    assert!(packets_to(&out, &a).is_empty());
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    h.drain();
    let topic = h.register(&a, 1, "data/a");
    h.gw.take_store_ops();
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "v"));
    let ids = store_ids(&out);
    let ack = upstream(&out)
        .into_iter()
        .find_map(|c| match c {
            UpstreamCommand::Publish {
                from: Some(DeviceOrigin { ack: Some(ack), .. }),
                ..
            } => Some(ack),
            _ => None,
        })
        .expect("the acknowledgement travels with the message");
    assert!(outbox_writes(&h.gw.take_store_ops()).is_empty());
    // The session queued it while down and says so: the store keeps it
    // before the device hears it is safe.
    h.gw.handle_session_ack(h.now, "a", ack, true);
    assert_eq!(packets_to(&h.drain(), &a), vec![puback(7, topic)]);
    assert_eq!(outbox_writes(&h.gw.take_store_ops()), ids);
}

#[test]
fn per_device_the_brokers_acknowledgement_within_the_linger_writes_nothing() {
    let mut h = Harness::with(EngineConfig {
        upstream: true,
        per_device_sessions: true,
        persist: true,
        outbox_linger: LINGER,
        ..EngineConfig::default()
    });
    h.gw.handle_upstream_connected(h.now, true);
    let a = peer(1);
    h.send(
        &a,
        Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 1,
            duration: 60,
            client_id: "a".into(),
        },
    );
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    h.drain();
    let topic = h.register(&a, 1, "data/a");
    h.gw.take_store_ops();
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "v"));
    let ids = store_ids(&out);
    let ack = upstream(&out)
        .into_iter()
        .find_map(|c| match c {
            UpstreamCommand::Publish {
                from: Some(DeviceOrigin { ack: Some(ack), .. }),
                ..
            } => Some(ack),
            _ => None,
        })
        .expect("the acknowledgement travels with the message");
    // The bridge reports the message settled before the acknowledgement.
    assert!(h.gw.handle_settled(h.now, ids).is_empty());
    h.gw.handle_session_ack(h.now, "a", ack, true);
    assert_eq!(packets_to(&h.drain(), &a), vec![puback(7, topic)]);
    assert!(outbox_writes(&h.gw.take_store_ops()).is_empty());
}

#[test]
fn one_slow_acknowledgement_costs_one_write_not_a_hold() {
    let mut h = lingering(true);
    let a = peer(1);
    let topic = device(&mut h, &a);
    h.send(
        &a,
        publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "slow"),
    );
    h.advance(LINGER);
    h.gw.take_store_ops();
    let out = h.send(
        &a,
        publish(QoS::AtLeastOnce, TopicRef::Id(topic), 8, "next"),
    );
    assert!(packets_to(&out, &a).is_empty(), "still lingers: {out:?}");
    assert!(outbox_writes(&h.gw.take_store_ops()).is_empty());
}

#[test]
fn while_the_broker_lags_for_many_new_messages_are_written_at_once_then_linger_again() {
    let mut h = lingering(true);
    let a = peer(1);
    let topic = device(&mut h, &a);
    // As many devices' messages lingering together (one device here, its
    // acknowledgements held per message).
    for m in 0..crate::linger::LAGGING_BATCH as u16 {
        h.send(
            &a,
            publish(QoS::AtLeastOnce, TopicRef::Id(topic), 100 + m, "slow"),
        );
    }
    h.advance(LINGER);
    h.gw.take_store_ops();
    // The linger ran out: the next message is written and acknowledged at
    // once, as without a linger (one group commit, no wait).
    let out = h.send(
        &a,
        publish(QoS::AtLeastOnce, TopicRef::Id(topic), 8, "next"),
    );
    assert_eq!(packets_to(&out, &a), vec![puback(8, topic)]);
    assert_eq!(outbox_writes(&h.gw.take_store_ops()), store_ids(&out));
    // After the hold it lingers again: a probe of the broker.
    h.advance(crate::linger::LAGGING_HOLD);
    let out = h.send(
        &a,
        publish(QoS::AtLeastOnce, TopicRef::Id(topic), 9, "probe"),
    );
    assert!(packets_to(&out, &a).is_empty(), "{out:?}");
    assert!(outbox_writes(&h.gw.take_store_ops()).is_empty());
    h.gw.handle_settled(h.now, store_ids(&out));
    assert_eq!(packets_to(&h.drain(), &a), vec![puback(9, topic)]);
}

#[test]
fn per_device_when_the_linger_runs_out_first_the_store_acknowledges_once() {
    let mut h = Harness::with(EngineConfig {
        upstream: true,
        per_device_sessions: true,
        persist: true,
        outbox_linger: LINGER,
        ..EngineConfig::default()
    });
    h.gw.handle_upstream_connected(h.now, true);
    let a = peer(1);
    h.send(
        &a,
        Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 1,
            duration: 60,
            client_id: "a".into(),
        },
    );
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    h.drain();
    let topic = h.register(&a, 1, "data/a");
    h.gw.take_store_ops();
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 7, "v"));
    let ids = store_ids(&out);
    let ack = upstream(&out)
        .into_iter()
        .find_map(|c| match c {
            UpstreamCommand::Publish {
                from: Some(DeviceOrigin { ack: Some(ack), .. }),
                ..
            } => Some(ack),
            _ => None,
        })
        .expect("the acknowledgement travels with the message");
    assert!(packets_to(&out, &a).is_empty());
    // The broker is slow: the store takes it, the device hears it behind
    // the commit.
    let out = h.advance(LINGER);
    assert_eq!(outbox_writes(&h.gw.take_store_ops()), ids);
    assert_eq!(packets_to(&out, &a), vec![puback(7, topic)]);
    // The broker's acknowledgement later: the record is deleted, the device
    // not acknowledged twice.
    assert_eq!(h.gw.handle_settled(h.now, ids.clone()), ids);
    h.gw.handle_session_ack(h.now, "a", ack, true);
    assert!(packets_to(&h.drain(), &a).is_empty());
}

#[test]
fn a_publisher_subscribed_to_its_own_topic_is_acknowledged_before_the_echo_not_after_the_broker() {
    // Paho's pub0sub1 (docs/protocol.md): the echo is local and immediate,
    // so holding the PUBACK for the broker would put it behind the echo.
    // Such a message skips the linger: its record is written with this
    // batch, and the PUBACK goes ahead of the echo.
    let mut h = lingering(true);
    let a = peer(1);
    let topic = device(&mut h, &a);
    h.subscribe(&a, 2, "data/a", QoS::AtLeastOnce);
    h.gw.take_store_ops();
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(topic), 8, "me"));
    let ids = store_ids(&out);
    assert_eq!(ids.len(), 1, "handed upstream at once: {out:?}");
    let to_device = packets_to(&out, &a);
    assert_eq!(to_device.first(), Some(&puback(8, topic)), "{to_device:?}");
    assert!(
        to_device
            .iter()
            .any(|p| matches!(p, Packet::Publish { payload, .. } if payload == &b("me"))),
        "the echo follows: {to_device:?}"
    );
    assert_eq!(
        outbox_writes(&h.gw.take_store_ops()),
        ids,
        "acknowledged before the broker's copy: on disk with this batch"
    );
    assert_eq!(h.gw.lingering(), 0);
}
