//! Sleeping clients (fact sheet §7.9, traps T-10/T-11/T-12): buffering while
//! asleep, the awake hand-over and its ordering, supervision, transitions and
//! faults, each with a virtual clock.

use super::*;

/// A publisher "a" with `topic` registered, and a client "sleepy" subscribed
/// to `filter` at `qos` and put to sleep for `secs`. Returns (a, sleepy, id).
fn asleep(h: &mut Harness, filter: &str, qos: QoS, topic: &str, secs: u16) -> (Peer, Peer, u16) {
    let (a, s) = (peer(1), peer(2));
    h.connect(&a, "a", true);
    h.connect(&s, "sleepy", false);
    h.subscribe(&s, 1, filter, qos);
    let out = h.send(
        &s,
        Packet::Disconnect {
            duration: Some(secs),
        },
    );
    assert_eq!(
        packets_to(&out, &s),
        vec![Packet::Disconnect { duration: None }]
    );
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    let id = h.register(&a, 1, topic);
    (a, s, id)
}

fn wake(h: &mut Harness, from: &Peer) -> Vec<Packet> {
    let out = h.send(
        from,
        Packet::PingReq {
            client_id: Some("sleepy".into()),
        },
    );
    packets_to(&out, from)
}

/// Acknowledges whatever the gateway sent (REGACK, PUBACK, PUBREC/PUBCOMP) until
/// it sends PINGRESP or nothing; returns every packet received, in order.
fn ack_until_pingresp(h: &mut Harness, from: &Peer, mut pending: Vec<Packet>) -> Vec<Packet> {
    let mut seen = Vec::new();
    while let Some(p) = pending.first().cloned() {
        seen.extend(pending.iter().cloned());
        let reply = match p {
            Packet::Register {
                topic_id, msg_id, ..
            } => Packet::RegAck {
                topic_id,
                msg_id,
                return_code: ReturnCode::Accepted,
            },
            Packet::Publish {
                qos: QoS::AtLeastOnce,
                topic,
                msg_id,
                ..
            } => Packet::PubAck {
                topic_id: topic.raw(),
                msg_id,
                return_code: ReturnCode::Accepted,
            },
            Packet::Publish {
                qos: QoS::ExactlyOnce,
                msg_id,
                ..
            } => Packet::PubRec { msg_id },
            Packet::PubRel { msg_id } => Packet::PubComp { msg_id },
            _ => break,
        };
        let out = h.send(from, reply);
        pending = packets_to(&out, from);
    }
    seen
}

fn payloads(packets: &[Packet]) -> Vec<String> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish { payload, .. } => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_sleeping_client_gets_its_buffer_on_wake_then_pingresp() {
    let mut h = Harness::new();
    let (a, s) = (peer(1), peer(2));
    h.connect(&a, "a", true);
    h.connect(&s, "sleepy", false);
    h.subscribe(&s, 1, "z/#", QoS::AtLeastOnce);
    let out = h.send(
        &s,
        Packet::Disconnect {
            duration: Some(300),
        },
    );
    assert_eq!(
        packets_to(&out, &s),
        vec![Packet::Disconnect { duration: None }]
    );
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    let id = h.register(&a, 1, "z/1");
    h.send(
        &a,
        publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "buffered"),
    );
    assert_eq!(h.gw.queued_for("sleepy"), 1);
    // Wakes from a new address.
    let s2 = peer(3);
    let out = h.send(
        &s2,
        Packet::PingReq {
            client_id: Some("sleepy".into()),
        },
    );
    let Some(Packet::Register {
        topic_id, msg_id, ..
    }) = packets_to(&out, &s2).first().cloned()
    else {
        panic!("REGISTER expected, got {out:?}");
    };
    let out = h.send(
        &s2,
        Packet::RegAck {
            topic_id,
            msg_id,
            return_code: ReturnCode::Accepted,
        },
    );
    let Some(Packet::Publish { msg_id, .. }) = packets_to(&out, &s2).first().cloned() else {
        panic!("PUBLISH expected, got {out:?}");
    };
    assert!(
        !packets_to(&out, &s2).contains(&Packet::PingResp),
        "PINGRESP only after the ack"
    );
    let out = h.send(
        &s2,
        Packet::PubAck {
            topic_id,
            msg_id,
            return_code: ReturnCode::Accepted,
        },
    );
    assert_eq!(packets_to(&out, &s2), vec![Packet::PingResp]);
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    // Nothing new: the next wake is answered at once.
    let out = h.send(
        &s2,
        Packet::PingReq {
            client_id: Some("sleepy".into()),
        },
    );
    assert_eq!(packets_to(&out, &s2), vec![Packet::PingResp]);
}

#[test]
fn the_sleep_timer_replaces_keep_alive() {
    let mut h = Harness::new();
    let s = peer(2);
    h.connect(&s, "sleepy", false); // keep-alive 60 s
    h.send(
        &s,
        Packet::Disconnect {
            duration: Some(1000),
        },
    );
    h.advance(Duration::from_secs(1099));
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Lost));
}

#[test]
fn the_hand_over_is_register_regack_publish_ack_in_order_then_pingresp() {
    let mut h = Harness::new();
    let (a, s, id) = asleep(&mut h, "z/#", QoS::ExactlyOnce, "z/1", 300);
    let id2 = h.register(&a, 2, "z/2");
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "one"));
    h.send(&a, publish(QoS::ExactlyOnce, TopicRef::Id(id2), 2, "two"));
    h.send(&a, publish(QoS::AtMostOnce, TopicRef::Id(id), 0, "three"));
    assert_eq!(
        h.gw.queued_for("sleepy"),
        3,
        "QoS 0 is buffered too by default"
    );
    let first = wake(&mut h, &s);
    let seen = ack_until_pingresp(&mut h, &s, first);
    let kinds: Vec<&str> = seen.iter().map(|p| p.msg_type().name()).collect();
    assert_eq!(
        kinds,
        [
            "REGISTER", "PUBLISH", // one (QoS 1) on z/1
            "REGISTER", "PUBLISH", "PUBREL", // two (QoS 2) on z/2
            "PUBLISH", "PINGRESP", // three (QoS 0) on z/1, then the end of the burst
        ]
    );
    assert_eq!(payloads(&seen), ["one", "two", "three"]);
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    assert_eq!(h.gw.queued_for("sleepy"), 0);
}

#[test]
fn a_buffer_is_handed_over_once_and_the_next_wake_gets_only_what_is_new() {
    let mut h = Harness::new();
    let (a, s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 300);
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "old"));
    let woke = wake(&mut h, &s);
    let seen = ack_until_pingresp(&mut h, &s, woke);
    assert_eq!(payloads(&seen), ["old"]);
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 2, "new"));
    let woke = wake(&mut h, &s);
    let seen = ack_until_pingresp(&mut h, &s, woke);
    assert_eq!(
        payloads(&seen),
        ["new"],
        "no replay of what was handed over"
    );
    assert_eq!(seen.last(), Some(&Packet::PingResp));
}

#[test]
fn qos0_is_not_buffered_while_asleep_when_configured_off() {
    let mut h = Harness::with(EngineConfig {
        sleep_buffer_qos0: false,
        ..EngineConfig::default()
    });
    let (a, _s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 300);
    h.send(&a, publish(QoS::AtMostOnce, TopicRef::Id(id), 0, "lossy"));
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "kept"));
    assert_eq!(h.gw.queued_for("sleepy"), 1);
    assert_eq!(h.gw.stats().drops(DropReason::SessionGone), 1);
}

#[test]
fn overflow_refuses_the_newest_by_default() {
    let mut h = Harness::with(EngineConfig {
        max_queued_messages_per_client: 2,
        ..EngineConfig::default()
    });
    let (a, s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 300);
    for (i, p) in ["m1", "m2", "m3", "m4"].iter().enumerate() {
        h.send(
            &a,
            publish(QoS::AtLeastOnce, TopicRef::Id(id), i as u16 + 1, p),
        );
    }
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 2);
    let woke = wake(&mut h, &s);
    let seen = ack_until_pingresp(&mut h, &s, woke);
    assert_eq!(payloads(&seen), ["m1", "m2"]);
}

#[test]
fn overflow_can_drop_the_oldest_instead() {
    let mut h = Harness::with(EngineConfig {
        max_queued_messages_per_client: 2,
        queue_overflow: OverflowPolicy::DropOldest,
        ..EngineConfig::default()
    });
    let (a, s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 300);
    for (i, p) in ["m1", "m2", "m3", "m4"].iter().enumerate() {
        h.send(
            &a,
            publish(QoS::AtLeastOnce, TopicRef::Id(id), i as u16 + 1, p),
        );
    }
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 2);
    let woke = wake(&mut h, &s);
    let seen = ack_until_pingresp(&mut h, &s, woke);
    assert_eq!(payloads(&seen), ["m3", "m4"]);
}

#[test]
fn the_byte_bounds_per_client_and_in_total_hold_while_asleep() {
    let mut h = Harness::with(EngineConfig {
        max_queued_bytes_per_client: 10,
        ..EngineConfig::default()
    });
    let (a, _s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 300);
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "123456"));
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 2, "123456"));
    assert_eq!(h.gw.queued_for("sleepy"), 1);
    let mut t = Harness::with(EngineConfig {
        max_queued_bytes_total: 10,
        ..EngineConfig::default()
    });
    let (a, _s, id) = asleep(&mut t, "z/#", QoS::AtLeastOnce, "z/1", 300);
    t.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "123456"));
    t.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 2, "123456"));
    assert_eq!(t.gw.queued_for("sleepy"), 1);
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 1);
    assert_eq!(t.gw.stats().drops(DropReason::QueueFull), 1);
}

#[test]
fn a_cap_per_wake_leaves_the_rest_for_the_next_pingreq() {
    let mut h = Harness::with(EngineConfig {
        max_messages_per_wake: 2,
        ..EngineConfig::default()
    });
    let (a, s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 300);
    for (i, p) in ["m1", "m2", "m3"].iter().enumerate() {
        h.send(
            &a,
            publish(QoS::AtLeastOnce, TopicRef::Id(id), i as u16 + 1, p),
        );
    }
    let woke = wake(&mut h, &s);
    let seen = ack_until_pingresp(&mut h, &s, woke);
    assert_eq!(payloads(&seen), ["m1", "m2"]);
    assert_eq!(seen.last(), Some(&Packet::PingResp));
    assert_eq!(h.gw.queued_for("sleepy"), 1);
    let woke = wake(&mut h, &s);
    let seen = ack_until_pingresp(&mut h, &s, woke);
    assert_eq!(payloads(&seen), ["m3"]);
}

#[test]
fn a_new_disconnect_with_duration_changes_the_sleep_time() {
    let mut h = Harness::new();
    let (_a, s, _) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 100);
    h.advance(Duration::from_secs(50));
    let out = h.send(
        &s,
        Packet::Disconnect {
            duration: Some(1000),
        },
    );
    assert_eq!(
        packets_to(&out, &s),
        vec![Packet::Disconnect { duration: None }]
    );
    h.advance(Duration::from_secs(500)); // well past the old 100 s + 10 %
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    h.advance(Duration::from_secs(700)); // past 1000 s + 10 % from the change
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Lost));
}

#[test]
fn sleep_timer_expiry_makes_the_client_lost_and_publishes_its_will() {
    let mut h = Harness::new();
    let s = peer(2);
    h.will_handshake(
        &s,
        Packet::Connect {
            will: true,
            clean_session: false,
            protocol_id: 1,
            duration: 60,
            client_id: "sleepy".into(),
        },
        "sleepy/gone",
        QoS::AtMostOnce,
        false,
        "bye",
    );
    h.send(&s, Packet::Disconnect { duration: Some(30) });
    h.advance(Duration::from_secs(44));
    assert_eq!(h.gw.stats().wills_published, 0);
    h.advance(Duration::from_secs(2)); // 30 s + 50 %
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Lost));
    assert_eq!(h.gw.stats().wills_published, 1);
}

#[test]
fn the_sleep_timer_restarts_after_each_awake_period() {
    let mut h = Harness::new();
    let (_a, s, _) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 100); // lost after 110 s
    for _ in 0..5 {
        h.advance(Duration::from_secs(100));
        assert_eq!(wake(&mut h, &s), vec![Packet::PingResp]);
    }
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
}

#[test]
fn pingreq_without_client_id_from_a_sleeping_client_is_ignored() {
    let mut h = Harness::new();
    let (a, s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 300);
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "held"));
    let out = h.send(&s, Packet::PingReq { client_id: None });
    assert!(packets_to(&out, &s).is_empty(), "{out:?}");
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    assert_eq!(h.gw.queued_for("sleepy"), 1);
}

#[test]
fn pingreq_with_the_id_of_an_active_client_from_elsewhere_is_ignored() {
    let mut h = Harness::new();
    let s = peer(2);
    h.connect(&s, "sleepy", false);
    let intruder = peer(66);
    let out = h.send(
        &intruder,
        Packet::PingReq {
            client_id: Some("sleepy".into()),
        },
    );
    assert!(out.is_empty(), "{out:?}");
    // The session still lives at its own address.
    let out = h.send(&s, Packet::PingReq { client_id: None });
    assert_eq!(packets_to(&out, &s), vec![Packet::PingResp]);
}

#[test]
fn connect_from_asleep_makes_it_active_and_still_delivers_the_buffer() {
    let mut h = Harness::new();
    let (a, s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 300);
    h.send(
        &a,
        publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "waiting"),
    );
    let out = h.send(
        &s,
        Packet::Connect {
            will: false,
            clean_session: false,
            protocol_id: 1,
            duration: 60,
            client_id: "sleepy".into(),
        },
    );
    let sent = packets_to(&out, &s);
    assert_eq!(
        sent.first(),
        Some(&Packet::ConnAck {
            return_code: ReturnCode::Accepted
        })
    );
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Active));
    let seen = ack_until_pingresp(&mut h, &s, sent[1..].to_vec());
    assert_eq!(payloads(&seen), ["waiting"]);
    assert!(
        !seen.contains(&Packet::PingResp),
        "an active client gets no PINGRESP"
    );
}

#[test]
fn disconnect_from_asleep_ends_the_session_without_a_will() {
    let mut h = Harness::new();
    let s = peer(2);
    h.will_handshake(
        &s,
        Packet::Connect {
            will: true,
            clean_session: false,
            protocol_id: 1,
            duration: 60,
            client_id: "sleepy".into(),
        },
        "w",
        QoS::AtMostOnce,
        false,
        "bye",
    );
    h.send(&s, Packet::Disconnect { duration: Some(30) });
    let out = h.send(&s, Packet::Disconnect { duration: None });
    assert_eq!(
        packets_to(&out, &s),
        vec![Packet::Disconnect { duration: None }]
    );
    assert_eq!(
        h.gw.client_state("sleepy"),
        Some(&ClientState::Disconnected)
    );
    h.advance(Duration::from_secs(10_000));
    assert_eq!(h.gw.stats().wills_published, 0);
}

#[test]
fn retries_run_during_the_awake_window_and_silence_keeps_the_message_for_next_time() {
    let mut h = Harness::new();
    let (a, s, id) = asleep(&mut h, "z/#", QoS::ExactlyOnce, "z/1", 300);
    h.send(
        &a,
        publish(QoS::ExactlyOnce, TopicRef::Id(id), 1, "precious"),
    );
    let first = wake(&mut h, &s);
    let Some(Packet::Register {
        topic_id, msg_id, ..
    }) = first.first().cloned()
    else {
        panic!("REGISTER expected, got {first:?}");
    };
    let out = h.send(
        &s,
        Packet::RegAck {
            topic_id,
            msg_id,
            return_code: ReturnCode::Accepted,
        },
    );
    let Some(Packet::Publish {
        msg_id: pub_id,
        dup: false,
        ..
    }) = packets_to(&out, &s).first().cloned()
    else {
        panic!("PUBLISH expected");
    };
    // The client falls silent: T_RETRY resends, N_RETRY times, then it is asleep again.
    for _ in 0..3 {
        let out = h.advance(Duration::from_secs(10));
        assert!(
            matches!(
                packets_to(&out, &s).as_slice(),
                [Packet::Publish { dup: true, .. }]
            ),
            "{out:?}"
        );
    }
    h.advance(Duration::from_secs(10));
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    assert_eq!(h.gw.queued_for("sleepy"), 1, "nothing lost");
    // Next wake: the same message, same MsgId, DUP set (the client may have it).
    let again = wake(&mut h, &s);
    match again.as_slice() {
        [
            Packet::Publish {
                msg_id,
                dup: true,
                payload,
                ..
            },
        ] => {
            assert_eq!(*msg_id, pub_id);
            assert_eq!(payload, &b("precious"));
        }
        other => panic!("the kept message expected, got {other:?}"),
    }
}

#[test]
fn a_pubrel_pending_across_sleep_is_not_retried_into_the_void_and_is_resent_on_wake() {
    let mut h = Harness::new();
    let (a, s, id) = asleep(&mut h, "z/#", QoS::ExactlyOnce, "z/1", 300);
    h.send(&a, publish(QoS::ExactlyOnce, TopicRef::Id(id), 1, "q2"));
    let seen = wake(&mut h, &s);
    let Some(Packet::Register {
        topic_id, msg_id, ..
    }) = seen.first().cloned()
    else {
        panic!("REGISTER expected");
    };
    let out = h.send(
        &s,
        Packet::RegAck {
            topic_id,
            msg_id,
            return_code: ReturnCode::Accepted,
        },
    );
    let Some(Packet::Publish { msg_id, .. }) = packets_to(&out, &s).first().cloned() else {
        panic!("PUBLISH expected");
    };
    let out = h.send(&s, Packet::PubRec { msg_id });
    assert_eq!(packets_to(&out, &s), vec![Packet::PubRel { msg_id }]);
    // The client goes back to sleep before PUBCOMP.
    h.send(
        &s,
        Packet::Disconnect {
            duration: Some(300),
        },
    );
    let out = h.advance(Duration::from_secs(200));
    assert!(
        packets_to(&out, &s).is_empty(),
        "no PUBREL to a sleeping client: {out:?}"
    );
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    // On wake the PUBREL is resent, then PUBCOMP ends the burst.
    assert_eq!(wake(&mut h, &s), vec![Packet::PubRel { msg_id }]);
    let out = h.send(&s, Packet::PubComp { msg_id });
    assert_eq!(packets_to(&out, &s), vec![Packet::PingResp]);
}

#[test]
fn a_stray_packet_from_a_sleeping_client_does_not_extend_its_sleep() {
    let mut h = Harness::new();
    let (_a, s, id) = asleep(&mut h, "z/#", QoS::AtLeastOnce, "z/1", 100); // lost after 110 s
    h.advance(Duration::from_secs(100));
    // Not valid while asleep: dropped, and the sleep timer keeps running.
    h.send(&s, publish(QoS::AtMostOnce, TopicRef::Id(id), 0, "stray"));
    h.advance(Duration::from_secs(11));
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Lost));
}

#[test]
fn an_ack_sent_as_the_client_falls_asleep_completes_the_message_in_flight() {
    let mut h = Harness::new();
    let (a, s) = (peer(1), peer(2));
    h.connect(&a, "a", true);
    h.connect(&s, "sleepy", false);
    h.subscribe(&s, 1, "live", QoS::AtLeastOnce);
    let id = h.register(&a, 1, "live");
    let out = h.send(
        &a,
        publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "in flight"),
    );
    let Some(Packet::Publish { msg_id, topic, .. }) = packets_to(&out, &s).first().cloned() else {
        panic!("PUBLISH expected, got {out:?}");
    };
    // The client goes to sleep, and its PUBACK arrives just after.
    h.send(
        &s,
        Packet::Disconnect {
            duration: Some(300),
        },
    );
    h.send(
        &s,
        Packet::PubAck {
            topic_id: topic.raw(),
            msg_id,
            return_code: ReturnCode::Accepted,
        },
    );
    // Nothing to hand over on wake: no duplicate.
    assert_eq!(wake(&mut h, &s), vec![Packet::PingResp]);
}

#[test]
fn a_message_unacknowledged_at_sleep_is_resent_on_wake_with_its_msg_id() {
    let mut h = Harness::new();
    let (a, s) = (peer(1), peer(2));
    h.connect(&a, "a", true);
    h.connect(&s, "sleepy", false);
    h.subscribe(&s, 1, "live", QoS::AtLeastOnce);
    let id = h.register(&a, 1, "live");
    let out = h.send(
        &a,
        publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "in flight"),
    );
    let Some(Packet::Publish { msg_id, .. }) = packets_to(&out, &s).first().cloned() else {
        panic!("PUBLISH expected, got {out:?}");
    };
    h.send(
        &s,
        Packet::Disconnect {
            duration: Some(300),
        },
    );
    // Not retried into the void while asleep.
    assert!(packets_to(&h.advance(Duration::from_secs(100)), &s).is_empty());
    match wake(&mut h, &s).as_slice() {
        [
            Packet::Publish {
                msg_id: again,
                dup: true,
                ..
            },
        ] => assert_eq!(*again, msg_id),
        other => panic!("the message resent on wake expected, got {other:?}"),
    }
}
