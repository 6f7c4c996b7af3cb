//! A device's own session: opening, reuse, statuses, closing, refusal.

use super::*;

fn statuses(events: &[BridgeEvent]) -> Vec<SessionStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            BridgeEvent::SessionStatus { status, .. } => Some(status.clone()),
            _ => None,
        })
        .collect()
}

fn open(h: &mut Harness, clean: bool) -> Option<Transition> {
    h.command(UpstreamCommand::OpenSession(params("d", clean)));
    transition(h)
}

#[test]
fn open_connects_as_the_device_and_the_connack_answers_up() {
    let mut h = Harness::device(config(), "d");
    match open(&mut h, false) {
        Some(Transition::Open { identity, replays }) => {
            assert!(identity.client_id.ends_with('d'), "{}", identity.client_id);
            assert!(!identity.clean_session);
            assert!(replays.is_empty());
        }
        other => panic!("expected Open, got {other:?}"),
    }
    assert!(
        statuses(&h.take_events()).is_empty(),
        "answered at the CONNACK"
    );
    h.connack(false);
    assert_eq!(statuses(&h.take_events()), [SessionStatus::Up]);
    assert_eq!(h.gauge(&h.counters.device_sessions_connected), 1);
    // The same parameters again, connected: reused, Up at once.
    assert!(open(&mut h, false).is_none());
    assert_eq!(statuses(&h.take_events()), [SessionStatus::Up]);
}

#[test]
fn new_parameters_end_the_connection_and_open_another_keeping_the_outbox() {
    let mut h = Harness::device_up(config(), "d");
    h.command(device_publish("d", "a", None));
    h.written(&[1]);
    assert!(matches!(
        open(&mut h, true),
        Some(Transition::End {
            publish_will: false
        })
    ));
    h.m.handle_link_ended(h.now);
    match transition(&mut h) {
        Some(Transition::Open { identity, replays }) => {
            assert!(identity.clean_session);
            assert_eq!(
                replays.len(),
                1,
                "what was on the wire goes on the new connection"
            );
        }
        other => panic!("expected Open, got {other:?}"),
    }
    assert_eq!(h.m.pending(), 1);
}

#[test]
fn a_failure_before_the_connack_answers_unreachable_and_retries() {
    let mut h = Harness::device(config(), "d");
    open(&mut h, false);
    h.lose();
    assert_eq!(statuses(&h.take_events()), [SessionStatus::Unreachable]);
    assert!(h.m.backing_off());
    h.lose();
    assert!(statuses(&h.take_events()).is_empty(), "answered once");
}

#[test]
fn close_with_nothing_left_disconnects_and_tells_the_pool() {
    let mut h = Harness::device_up(config(), "d");
    h.command(UpstreamCommand::CloseSession {
        client_id: Arc::from("d"),
        publish_will: false,
    });
    assert!(h.m.needs_transition());
    assert!(matches!(
        transition(&mut h),
        Some(Transition::End {
            publish_will: false
        })
    ));
    assert!(h.m.poll_transition().is_none(), "one end at a time");
    h.m.handle_link_ended(h.now);
    assert!(transition(&mut h).is_none());
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, TaskEvent::Finished { received: 2, .. })),
        "{:?}",
        h.events
    );
}

#[test]
fn a_closed_session_delivers_what_it_holds_before_it_ends() {
    let mut h = Harness::device_up(config(), "d");
    h.command(device_publish("d", "a", None));
    h.command(UpstreamCommand::CloseSession {
        client_id: Arc::from("d"),
        publish_will: false,
    });
    assert!(transition(&mut h).is_none(), "the outbox is not empty yet");
    h.written(&[1]);
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert!(matches!(
        transition(&mut h),
        Some(Transition::End {
            publish_will: false
        })
    ));
}

#[test]
fn a_refused_session_refuses_owed_messages_and_hands_over_acknowledged_ones() {
    let mut h = Harness::device(config(), "d");
    let tokens = acks("d", 1);
    open(&mut h, false);
    // Queued while down: acknowledged to the device already.
    h.command(device_publish("d", "queued", Some(tokens[0])));
    h.take_events();
    let f =
        h.m.handle_connection_failed(h.now, LinkError::Refused("NotAuthorized".into()));
    h.drain();
    assert!(matches!(f, super::super::Failure::Drop));
    let adopted: Vec<usize> = h
        .events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::Adopt(msgs) => Some(msgs.len()),
            _ => None,
        })
        .collect();
    assert_eq!(adopted, [1], "to the shared session, the last resort");
    assert_eq!(
        statuses(&h.take_events()),
        [SessionStatus::Refused {
            reason: "NotAuthorized".into()
        }]
    );
    assert_eq!(h.gauge(&h.counters.device_session_refusals), 1);
    assert_eq!(h.gauge(&h.counters.device_messages_to_shared), 1);
    // A refused session takes no more messages.
    h.command(device_publish("d", "late", None));
    assert_eq!(h.gauge(&h.counters.rejected), 1);
    assert_eq!(h.m.pending(), 0);
}

fn fail(h: &mut Harness, error: LinkError) -> bool {
    let f = h.m.handle_connection_failed(h.now, error);
    h.drain();
    matches!(f, super::super::Failure::Drop)
}

fn finished(h: &Harness) -> bool {
    h.events
        .iter()
        .any(|e| matches!(e, TaskEvent::Finished { .. }))
}

/// Issue 23: the device roamed to another gateway, whose session for it
/// took the broker's session over (MQTT 5 says so).
#[test]
fn a_reported_takeover_is_final_and_the_device_may_come_back() {
    let mut h = Harness::device_up(config(), "d");
    h.take_events();
    assert!(fail(&mut h, LinkError::TakenOver), "no reconnect");
    assert_eq!(statuses(&h.take_events()), [SessionStatus::TakenOver]);
    assert_eq!(h.gauge(&h.counters.device_session_takeovers), 1);
    assert_eq!(h.gauge(&h.counters.device_session_refusals), 0);
    assert_eq!(h.gauge(&h.counters.device_sessions_connected), 0);
    assert!(!h.m.backing_off());
    // Idle: the pool may forget it; nothing is opened again by itself.
    assert!(transition(&mut h).is_none());
    assert!(finished(&h), "{:?}", h.events);
    h.advance(Duration::from_secs(3600));
    assert!(transition(&mut h).is_none(), "never reconnected on its own");
    // The device comes back here: it opens at once.
    assert!(matches!(open(&mut h, false), Some(Transition::Open { .. })));
    h.connack(true);
    assert_eq!(statuses(&h.take_events()), [SessionStatus::Up]);
}

/// With MQTT 3.1.1 (and mosquitto 2.0 on MQTT 5) the broker only closes the
/// connection: a loss is retried (a blip, or the first takeover), and a
/// second one soon after the CONNACK that follows is taken as the takeover.
#[test]
fn a_quick_second_loss_is_an_inferred_takeover() {
    let mut h = Harness::device_up(config(), "d");
    h.take_events();
    // Connected for an hour, then closed: a blip as far as anyone knows.
    h.advance(Duration::from_secs(3600));
    assert!(!fail(&mut h, LinkError::Lost("closed".into())), "retried");
    assert!(h.m.backing_off());
    h.advance(Duration::from_secs(120));
    assert!(!h.m.backing_off());
    h.connack(true);
    // It lasts: still a blip, the streak starts again.
    h.advance(Duration::from_secs(60));
    assert!(!fail(&mut h, LinkError::Lost("closed".into())), "retried");
    h.advance(Duration::from_secs(120));
    h.connack(true);
    h.take_events();
    // Closed again within seconds of its CONNACK: taken over, final.
    h.advance(Duration::from_secs(1));
    assert!(fail(&mut h, LinkError::Lost("closed".into())), "final");
    assert_eq!(statuses(&h.take_events()), [SessionStatus::TakenOver]);
    assert_eq!(h.gauge(&h.counters.device_session_takeovers), 1);
    // Back here: a fresh start, and a lone quick loss is a blip again.
    open(&mut h, false);
    h.connack(true);
    h.advance(Duration::from_secs(1));
    assert!(!fail(&mut h, LinkError::Lost("closed".into())));
}

/// A takeover of a session that still holds messages: the broker took the
/// session, not the messages. Each is acknowledged to the device (which may
/// never resend it from where it is now) and goes to the shared session.
#[test]
fn a_taken_over_session_hands_what_it_held_to_the_shared_session() {
    let mut h = Harness::device(config(), "d");
    let tokens = acks("d", 1);
    open(&mut h, false);
    h.connack(false);
    h.command(device_publish("d", "in flight", Some(tokens[0])));
    h.written(&[1]);
    h.take_events();
    assert!(fail(&mut h, LinkError::TakenOver));
    let adopted: usize = h
        .events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::Adopt(msgs) => Some(msgs.len()),
            _ => None,
        })
        .sum();
    let answered = session_acks(&h.take_events());
    assert_eq!(adopted, 1, "to the shared session");
    assert_eq!(answered, [(tokens[0], true)], "acknowledged to the device");
    assert_eq!(h.gauge(&h.counters.rejected), 0);
    assert_eq!(h.m.pending(), 0);
}

/// A broker also closes the connection on a message it will not take: a
/// loss with a message awaiting its acknowledgement is the refusal
/// machinery's (isolated, retried alone), never a takeover.
#[test]
fn quick_losses_on_an_unacknowledged_message_are_no_takeover() {
    let mut h = Harness::device_up(config(), "d");
    h.take_events();
    for round in 0..4 {
        h.command(device_publish("d", "poison", None));
        h.written(&[1]);
        h.advance(Duration::from_secs(1));
        assert!(
            !fail(&mut h, LinkError::Lost("closed".into())),
            "round {round}: retried"
        );
        h.advance(Duration::from_secs(120));
        h.connack(true);
        h.take_events();
    }
    assert_eq!(h.gauge(&h.counters.device_session_takeovers), 0);
}

fn down(pkid: u16, qos: u8, payload: &str, origin: Option<&str>) -> LinkEvent {
    LinkEvent::Publish {
        pkid,
        topic: Some("t".into()),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        origin: origin.map(Into::into),
    }
}

fn acks_sent(h: &mut Harness) -> Vec<(u8, u16)> {
    h.take_sent()
        .into_iter()
        .filter_map(|r| match r {
            Request::Ack(qos, pkid) => Some((qos, pkid)),
            _ => None,
        })
        .collect()
}

fn the_token(h: &mut Harness) -> Option<u64> {
    match h.take_events().as_slice() {
        [BridgeEvent::SessionMessage { token, .. }] => *token,
        other => panic!("one message for the device: {other:?}"),
    }
}

/// Issue 23: a device's session acknowledges a QoS 1/2 message to the broker
/// only when the engine hands its token back (the device has it); what is
/// not for the device goes at once; a token from an earlier connection
/// acknowledges nothing (the broker redelivers on the new one).
#[test]
fn a_device_session_acknowledges_a_downlink_only_when_the_engine_says() {
    let mut h = Harness::device_up(config(), "d");
    h.event(down(5, 1, "one", None));
    let token = the_token(&mut h).expect("a QoS 1 message carries a token");
    assert!(acks_sent(&mut h).is_empty(), "not on receipt");
    let ack = |token| UpstreamCommand::AckDownlink {
        client_id: Arc::from("d"),
        token,
    };
    h.command(ack(token));
    assert_eq!(acks_sent(&mut h), vec![(1, 5)]);

    // QoS 2 the same way (rumqttc sends PUBREC); QoS 0 carries no token.
    h.event(down(6, 2, "two", None));
    let token2 = the_token(&mut h).expect("QoS 2: a token");
    h.command(ack(token2));
    assert_eq!(acks_sent(&mut h), vec![(2, 6)]);
    h.event(down(0, 0, "zero", None));
    assert_eq!(the_token(&mut h), None);

    // An echo of our own (never for the device): acknowledged at once.
    h.event(down(7, 1, "echo", Some("gw")));
    assert!(h.take_events().is_empty());
    assert_eq!(acks_sent(&mut h), vec![(1, 7)]);

    // Unacknowledged when the connection is lost: its token is stale on
    // the next one.
    h.event(down(8, 1, "lost", None));
    let stale = the_token(&mut h).expect("token");
    h.lose();
    h.connack(true);
    h.take_events();
    h.command(ack(stale));
    assert!(acks_sent(&mut h).is_empty());
}
