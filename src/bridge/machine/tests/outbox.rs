//! Delivery: outbox order across reconnections, the in-flight window,
//! acknowledgement tickets, room accounting, and what rumqttc refuses.

use super::*;

#[test]
fn order_is_kept_across_a_reconnection_without_the_brokers_session() {
    let mut h = Harness::shared(config());
    h.connack(false);
    for p in ["1", "2", "3"] {
        h.command(publish("t", p, 1));
    }
    assert_eq!(h.published(), ["1", "2", "3"]);
    h.written(&[1, 2, 3]);
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    // "2" and "3" were on the wire, unanswered, after the last message the
    // broker completed: suspects, queued again (not replayed) to go alone.
    assert!(h.lose().is_empty(), "suspects are not replayed");
    assert_eq!(h.gauge(&h.counters.resent), 2);
    // Queued while down, sent after the older ones.
    h.command(publish("t", "4", 1));
    assert!(h.take_sent().is_empty(), "nothing goes out while down");
    h.connack(false);
    assert_eq!(h.published(), ["2"], "the first suspect, alone");
    h.written(&[1]);
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert_eq!(h.published(), ["3"], "then the next one, alone");
    h.written(&[2]);
    h.event(LinkEvent::PubAck { pkid: 2, code: 0 });
    assert_eq!(h.published(), ["4"], "then the rest, in order");
    assert_eq!(h.m.pending(), 1);
    assert_eq!(h.gauge(&h.counters.quarantined), 0);
}

#[test]
fn with_the_brokers_session_the_replays_go_first_and_only_new_messages_are_submitted() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.command(publish("t", "1", 1));
    h.command(publish("t", "2", 1));
    h.command(publish("t", "3", 1));
    assert_eq!(h.published(), ["1", "2", "3"]);
    h.written(&[1, 2]);
    // The broker completed "2": "1", older, is no suspect (it is replayed);
    // "3" was in rumqttc's channel, never written: queued again.
    h.event(LinkEvent::PubAck { pkid: 2, code: 0 });
    let replays = h.lose();
    assert_eq!(replays.len(), 1);
    h.command(publish("t", "4", 1));
    h.connack(true);
    assert_eq!(
        h.published(),
        ["3", "4"],
        "the unwritten one first, then the new one"
    );
    // rumqttc resends the replay itself: it is no new message.
    h.written(&[1, 3, 4]);
    for pkid in [1, 3, 4] {
        h.event(LinkEvent::PubAck { pkid, code: 0 });
    }
    assert_eq!(h.m.pending(), 0);
    assert_eq!(h.gauge(&h.counters.published), 4);
}

#[test]
fn qos0_messages_are_dropped_while_offline() {
    let mut h = Harness::shared(config());
    h.command(publish("t", "0", 0));
    assert_eq!(h.gauge(&h.counters.dropped_offline), 1);
    assert_eq!(h.m.pending(), 0);
    h.connack(false);
    h.command(publish("t", "1", 0));
    assert_eq!(h.published(), ["1"]);
    h.written(&[0]);
    assert_eq!(h.m.pending(), 0, "a QoS 0 message leaves once written");
    assert_eq!(h.gauge(&h.counters.published), 1);
}

#[test]
fn the_in_flight_window_holds_back_what_does_not_fit() {
    let mut h = Harness::device_up(config(), "d");
    for i in 0..10 {
        h.command(device_publish("d", &i.to_string(), None));
    }
    let window = usize::from(Window::DEVICE.inflight);
    assert_eq!(h.published().len(), window);
    let pkids: Vec<u16> = (1..=Window::DEVICE.inflight).collect();
    h.written(&pkids);
    assert!(
        h.take_sent().is_empty(),
        "written, not acknowledged: the window is full"
    );
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert_eq!(
        h.published(),
        [window.to_string()],
        "the next one, in order"
    );
}

#[test]
fn a_ticket_is_answered_by_its_own_acknowledgement_only() {
    let mut h = Harness::device_up(config(), "d");
    let tokens = acks("d", 2);
    h.command(device_publish("d", "a", Some(tokens[0])));
    assert_eq!(h.published(), ["a"]);
    h.written(&[1]);
    assert!(
        session_acks(&h.take_events()).is_empty(),
        "owed until the PUBACK"
    );
    // Down: the device hears at once that its message is queued.
    h.lose();
    assert_eq!(session_acks(&h.take_events()), [(tokens[0], true)]);
    h.connack(false);
    h.command(device_publish("d", "b", Some(tokens[1])));
    // "a" died on the wire: a suspect, sent alone.
    assert_eq!(h.published(), ["a"]);
    // An acknowledgement from the old connection, arriving late, matches
    // nothing: neither message has a packet id on this connection yet.
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert!(session_acks(&h.take_events()).is_empty());
    assert_eq!(h.m.pending(), 2);
    h.written(&[1]);
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert!(
        session_acks(&h.take_events()).is_empty(),
        "a ticket answered at the loss is never answered again"
    );
    assert_eq!(h.published(), ["b"]);
    h.written(&[2]);
    h.event(LinkEvent::PubAck { pkid: 2, code: 0 });
    assert_eq!(session_acks(&h.take_events()), [(tokens[1], true)]);
    assert_eq!(h.m.pending(), 0);
}

#[test]
fn a_refused_message_answers_its_ticket_with_a_refusal() {
    let mut h = Harness::device_up(config(), "d");
    let tokens = acks("d", 1);
    h.command(device_publish("d", "a", Some(tokens[0])));
    h.written(&[1]);
    h.event(LinkEvent::PubAck {
        pkid: 1,
        code: 0x87,
    });
    assert_eq!(session_acks(&h.take_events()), [(tokens[0], false)]);
    assert_eq!(h.gauge(&h.counters.rejected), 1);
}

#[test]
fn room_gauges_follow_the_outbox_and_wake_the_driver_when_it_empties() {
    let mut h = Harness::shared(config());
    for p in ["1", "2", "3"] {
        h.command(publish("t", p, 1));
    }
    let c = Arc::clone(&h.counters);
    assert_eq!(
        (h.gauge(&c.pending_messages), h.gauge(&c.pending_bytes)),
        (3, 6)
    );
    assert_eq!(
        (
            h.gauge(&c.room.taken_messages),
            h.gauge(&c.room.taken_bytes)
        ),
        (3, 6),
        "taken from the channel, counted with the outbox"
    );
    assert_eq!(h.room_freed, 0);
    h.connack(false);
    h.written(&[1, 2, 3]);
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert_eq!(h.gauge(&c.pending_messages), 2);
    assert_eq!(h.room_freed, 0, "not woken for every acknowledgement");
    h.event(LinkEvent::PubAck { pkid: 2, code: 0 });
    h.event(LinkEvent::PubAck { pkid: 3, code: 0 });
    assert_eq!(
        (h.gauge(&c.pending_messages), h.gauge(&c.pending_bytes)),
        (0, 0)
    );
    assert_eq!(h.room_freed, 1, "woken once the outbox is empty");
}

#[test]
fn a_full_outbox_drops_new_messages_and_counts_them() {
    let mut h = Harness::shared(config());
    for i in 0..11 {
        h.command(publish("t", &i.to_string(), 1));
    }
    assert_eq!(h.m.pending(), 10);
    assert_eq!(h.gauge(&h.counters.dropped_full), 1);
    assert_eq!(
        h.gauge(&h.counters.room.taken_messages),
        11,
        "taken, then dropped"
    );
}

#[test]
fn a_full_outbox_refuses_a_devices_message_under_backpressure() {
    let cfg = UpstreamConfig {
        max_pending_messages: 1,
        ..config()
    };
    let mut h = Harness::device(cfg, "d");
    let tokens = acks("d", 2);
    h.command(UpstreamCommand::OpenSession(params("d", false)));
    transition(&mut h);
    h.command(device_publish("d", "a", Some(tokens[0])));
    h.command(device_publish("d", "b", Some(tokens[1])));
    // Not connected: the first is safe once queued; the second has no room.
    assert_eq!(
        session_acks(&h.take_events()),
        [(tokens[0], true), (tokens[1], false)]
    );
}

#[test]
fn a_publish_rumqttc_refuses_is_dropped_and_the_next_one_goes_out() {
    let mut h = Harness::shared(config());
    h.refuse_topic = Some("bad".into());
    h.connack(false);
    h.command(publish("bad", "1", 1));
    h.command(publish("t", "2", 1));
    assert_eq!(h.published(), ["2"]);
    assert_eq!(h.gauge(&h.counters.rejected), 1);
    assert_eq!(h.m.pending(), 1);
}

#[test]
fn durable_ids_are_settled_when_their_messages_leave() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.take_events();
    h.command(UpstreamCommand::Publish {
        topic: "t".into(),
        payload: Bytes::from_static(b"1"),
        qos: 1,
        retain: false,
        store_id: Some(42),
        from: None,
    });
    h.written(&[1]);
    assert!(h.take_events().is_empty());
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert_eq!(h.take_events(), [BridgeEvent::Settled(vec![42])]);
}
