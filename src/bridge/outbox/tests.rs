//! Outbox unit tests: the delicate bookkeeping cases, without a broker.

use super::*;

fn msg(n: u32, qos: u8) -> OutMessage {
    OutMessage {
        store_id: None,
        ticket: None,
        topic: "t".into(),
        payload: Bytes::from(n.to_string()),
        qos,
        retain: false,
    }
}

fn payload(m: &OutMessage) -> String {
    String::from_utf8(m.payload.to_vec()).unwrap()
}

/// Submits everything queued (like the bridge task does while connected).
fn submit_all(o: &mut Outbox) -> usize {
    let mut n = 0;
    while o.peek_queued().is_some() {
        o.mark_submitted();
        n += 1;
    }
    n
}

#[test]
fn qos1_completes_on_puback() {
    let mut o = Outbox::new(10, 1000);
    o.push(msg(1, 1)).unwrap();
    o.push(msg(2, 0)).unwrap();
    assert_eq!(submit_all(&mut o), 2);
    assert_eq!(o.on_outgoing_publish(1), Some(1));
    assert_eq!(o.on_outgoing_publish(0), Some(0));
    assert_eq!(o.len(), 1, "QoS 0 done once written");
    assert_eq!(o.on_puback(7, 0), Ack::Unmatched);
    assert_eq!(o.on_puback(1, 0), Ack::Completed);
    assert!(o.is_empty());
    assert_eq!(o.bytes(), 0);
}

#[test]
fn qos2_needs_pubrec_then_pubcomp() {
    let mut o = Outbox::new(10, 1000);
    o.push(msg(1, 2)).unwrap();
    submit_all(&mut o);
    o.on_outgoing_publish(3);
    assert_eq!(o.on_puback(3, 0), Ack::Unmatched, "wrong ack kind");
    assert_eq!(o.on_pubcomp(3), Ack::Unmatched, "too early");
    assert_eq!(o.on_pubrec(3, 0), Ack::Progressed);
    assert_eq!(o.on_pubcomp(3), Ack::Completed);
    assert!(o.is_empty());
}

#[test]
fn rejections_remove_the_message() {
    let mut o = Outbox::new(10, 1000);
    o.push(msg(1, 1)).unwrap();
    o.push(msg(2, 2)).unwrap();
    submit_all(&mut o);
    o.on_outgoing_publish(1);
    o.on_outgoing_publish(2);
    assert_eq!(o.on_puback(1, 0x87), Ack::Rejected);
    assert_eq!(o.on_pubrec(2, 0x87), Ack::Rejected);
    assert!(o.is_empty());
}

fn ticketed(n: u32, qos: u8, ticket: u64) -> OutMessage {
    OutMessage {
        ticket: Some(ticket),
        store_id: Some(u64::from(n)),
        ..msg(n, qos)
    }
}

#[test]
fn tickets_are_answered_when_their_messages_leave() {
    let mut o = Outbox::new(10, 1000);
    o.push(ticketed(1, 1, 10)).unwrap();
    o.push(ticketed(2, 2, 20)).unwrap();
    o.push(ticketed(3, 1, 30)).unwrap();
    submit_all(&mut o);
    o.on_outgoing_publish(1);
    o.on_outgoing_publish(2);
    o.on_outgoing_publish(3);
    assert_eq!(o.on_puback(1, 0), Ack::Completed);
    assert_eq!(o.on_pubrec(2, 0), Ack::Progressed);
    assert_eq!(
        o.take_answered(),
        vec![(10, true)],
        "QoS 2 waits for PUBCOMP"
    );
    assert_eq!(o.on_pubcomp(2), Ack::Completed);
    assert_eq!(o.on_puback(3, 0x87), Ack::Rejected);
    assert_eq!(o.take_answered(), vec![(20, true), (30, false)]);
    assert_eq!(o.take_settled(), vec![1, 2, 3]);
    assert!(o.take_answered().is_empty());
}

#[test]
fn released_tickets_are_not_answered_again() {
    let mut o = Outbox::new(10, 1000);
    o.push(ticketed(1, 1, 10)).unwrap();
    o.push(ticketed(2, 1, 20)).unwrap();
    submit_all(&mut o);
    o.on_outgoing_publish(1);
    let _ = o.connection_lost(false);
    assert_eq!(o.release_tickets(), vec![10, 20]);
    assert!(o.release_tickets().is_empty());
    o.connected(true);
    assert_eq!(o.on_puback(1, 0), Ack::Completed);
    assert!(o.take_answered().is_empty(), "answered when released");
    assert_eq!(o.take_settled(), vec![1], "still settled in the store");
}

#[test]
fn drain_all_hands_everything_over_in_order() {
    let mut o = Outbox::new(10, 1000);
    for n in 1..=3 {
        o.push(ticketed(n, 1, u64::from(n))).unwrap();
    }
    submit_all(&mut o);
    o.on_outgoing_publish(1);
    let all = o.drain_all();
    assert_eq!(all.iter().map(payload).collect::<Vec<_>>(), ["1", "2", "3"]);
    assert!(o.is_empty());
    assert_eq!(o.bytes(), 0);
    assert_eq!(o.in_flight(), 0);
    assert!(
        o.take_settled().is_empty(),
        "their store ids travel with them"
    );
    assert_eq!(o.on_puback(1, 0), Ack::Unmatched);
}

#[test]
fn drain_all_settles_what_the_broker_has_pubreced() {
    let mut o = Outbox::new(10, 1000);
    o.push(ticketed(1, 2, 10)).unwrap();
    o.push(ticketed(2, 2, 20)).unwrap();
    o.push(ticketed(3, 1, 30)).unwrap();
    submit_all(&mut o);
    o.on_outgoing_publish(1);
    o.on_outgoing_publish(2);
    assert_eq!(o.on_pubrec(1, 0), Ack::Progressed);
    let rest = o.drain_all();
    assert_eq!(
        rest.iter().map(payload).collect::<Vec<_>>(),
        ["2", "3"],
        "the PUBREC'd one is the broker's: not handed over"
    );
    assert_eq!(o.take_settled(), vec![1]);
    assert_eq!(o.take_answered(), vec![(10, true)]);
    assert!(o.is_empty());
    assert_eq!(o.bytes(), 0);
}

#[test]
fn bounds_refuse_new_messages() {
    let mut o = Outbox::new(2, 1000);
    o.push(msg(1, 1)).unwrap();
    o.push(msg(2, 1)).unwrap();
    assert_eq!(o.push(msg(3, 1)), Err(Refused::Full));
    let mut o = Outbox::new(100, 5);
    o.push(msg(1, 1)).unwrap(); // "t" + "1" = 2 bytes
    o.push(msg(2, 1)).unwrap();
    assert_eq!(o.push(msg(3, 1)), Err(Refused::Full));
    assert_eq!(o.bytes(), 4);
}

#[test]
fn loss_without_session_resends_everything_in_order() {
    let mut o = Outbox::new(100, 10_000);
    for n in 0..6 {
        o.push(msg(n, if n == 3 { 0 } else { 1 })).unwrap();
    }
    o.push(msg(6, 2)).unwrap();
    // 0..=3 written (3 is QoS 0), 4 and 5 still in the channel, 6 queued.
    for _ in 0..6 {
        o.mark_submitted();
    }
    assert_eq!(o.on_outgoing_publish(18), Some(1));
    assert_eq!(o.on_outgoing_publish(19), Some(1));
    assert_eq!(o.on_outgoing_publish(1), Some(1)); // packet ids wrapped
    assert_eq!(o.on_outgoing_publish(0), Some(0));
    assert_eq!(o.on_puback(19, 0), Ack::Completed);
    let (replays, dropped) = o.connection_lost(false);
    assert_eq!(dropped, 0);
    let ids: Vec<_> = replays
        .iter()
        .map(|r| match r {
            Replay::Publish { pkid, .. } => *pkid,
            Replay::PubRel(p) => *p,
        })
        .collect();
    assert_eq!(ids, vec![18, 1], "message order, not packet-id order");
    assert_eq!(o.queued(), 3, "4, 5 back in the queue, 6 still there");
    // Broker restarted: no session.
    assert_eq!(o.connected(false), 2);
    let mut order = Vec::new();
    while let Some(m) = o.peek_queued() {
        order.push(payload(m));
        o.mark_submitted();
    }
    assert_eq!(order, ["0", "2", "4", "5", "6"]);
}

#[test]
fn loss_with_session_replays_same_ids_then_new_ones() {
    let mut o = Outbox::new(100, 10_000);
    o.push(msg(0, 1)).unwrap();
    o.push(msg(1, 2)).unwrap();
    o.push(msg(2, 2)).unwrap();
    submit_all(&mut o);
    o.on_outgoing_publish(5);
    o.on_outgoing_publish(6);
    o.on_outgoing_publish(7);
    assert_eq!(o.on_pubrec(6, 0), Ack::Progressed);
    o.push(msg(3, 1)).unwrap();
    let (replays, _) = o.connection_lost(false);
    assert_eq!(replays.len(), 3);
    assert!(matches!(&replays[0], Replay::Publish { pkid: 5, msg } if payload(msg) == "0"));
    assert_eq!(replays[1], Replay::PubRel(6));
    assert!(matches!(&replays[2], Replay::Publish { pkid: 7, .. }));
    // A failed reconnect in between gives the same list again.
    assert_eq!(o.connection_lost(false).0, replays);
    assert_eq!(o.connected(true), 0);
    // rumqttc sends the replays first: they do not consume submissions.
    o.on_outgoing_publish(5);
    o.on_outgoing_pubrel(6);
    o.on_outgoing_publish(7);
    assert_eq!(submit_all(&mut o), 1);
    assert_eq!(o.on_outgoing_publish(8), Some(1));
    for (ack, want) in [
        (o.on_puback(5, 0), Ack::Completed),
        (o.on_pubcomp(6), Ack::Completed),
        (o.on_pubrec(7, 0), Ack::Progressed),
        (o.on_pubcomp(7), Ack::Completed),
        (o.on_puback(8, 0), Ack::Completed),
    ] {
        assert_eq!(ack, want);
    }
    assert!(o.is_empty());
}

#[test]
fn qos0_not_yet_written_is_dropped_on_loss() {
    let mut o = Outbox::new(100, 10_000);
    o.push(msg(0, 0)).unwrap();
    o.push(msg(1, 1)).unwrap();
    o.push(msg(2, 0)).unwrap();
    o.mark_submitted();
    let (replays, dropped) = o.connection_lost(false);
    assert!(replays.is_empty());
    assert_eq!(dropped, 2);
    assert_eq!(o.len(), 1);
    assert_eq!(payload(o.peek_queued().unwrap()), "1");
}

#[test]
fn collision_then_resolution() {
    let mut o = Outbox::new(100, 10_000);
    o.push(msg(0, 1)).unwrap();
    o.push(msg(1, 1)).unwrap();
    submit_all(&mut o);
    assert_eq!(o.on_outgoing_publish(1), Some(1));
    o.on_await_ack(1); // second message got id 1 too, held back
    assert_eq!(o.on_puback(1, 0), Ack::Completed); // completes the first
    assert_eq!(o.on_outgoing_publish(1), None); // the held one goes out
    assert_eq!(o.on_puback(1, 0), Ack::Completed);
    assert!(o.is_empty());
}

#[test]
fn replays_sharing_an_id_do_not_steal_new_submissions() {
    let mut o = Outbox::new(100, 10_000);
    o.push(msg(0, 2)).unwrap();
    o.push(msg(1, 1)).unwrap();
    o.mark_submitted();
    o.on_outgoing_publish(4);
    o.on_pubrec(4, 0); // QoS 2 released, id 4 free in rumqttc's table
    o.mark_submitted();
    o.on_outgoing_publish(4); // QoS 1 reuses id 4
    let (replays, _) = o.connection_lost(false);
    assert_eq!(replays.len(), 2);
    o.connected(true);
    o.push(msg(2, 1)).unwrap();
    o.mark_submitted();
    o.on_outgoing_pubrel(4); // replay of the PUBREL
    assert_eq!(
        o.on_outgoing_publish(4),
        None,
        "replay of the QoS 1 PUBLISH"
    );
    assert_eq!(o.on_outgoing_publish(5), Some(1), "the new message");
    assert_eq!(o.on_pubcomp(4), Ack::Completed);
    assert_eq!(o.on_puback(4, 0), Ack::Completed);
    assert_eq!(o.on_puback(5, 0), Ack::Completed);
    assert!(o.is_empty());
}

#[test]
fn qos1_and_qos2_sharing_an_id() {
    // rumqttc frees a QoS 2 id from its publish table at PUBREC, so a
    // QoS 1 message can get the same id while PUBCOMP is outstanding.
    let mut o = Outbox::new(100, 10_000);
    o.push(msg(0, 2)).unwrap();
    o.push(msg(1, 1)).unwrap();
    o.mark_submitted();
    o.on_outgoing_publish(4);
    o.on_pubrec(4, 0);
    o.mark_submitted();
    o.on_outgoing_publish(4);
    assert_eq!(o.on_puback(4, 0), Ack::Completed);
    assert_eq!(o.on_pubcomp(4), Ack::Completed);
    assert!(o.is_empty());
}
