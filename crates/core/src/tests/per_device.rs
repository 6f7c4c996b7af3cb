//! Per-device upstream sessions (`per_device_sessions`): the CONNACK waits for
//! the device's own session, acknowledgements wait for the broker's,
//! subscriptions and wills ride on the device's session, downlinks reach only
//! their device, and local routing keeps working.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn per_device() -> Harness {
    Harness::with(EngineConfig {
        upstream: true,
        per_device_sessions: true,
        ..EngineConfig::default()
    })
}

fn connect_packet(client_id: &str, clean_session: bool, will: bool) -> Packet {
    Packet::Connect {
        will,
        clean_session,
        protocol_id: 1,
        duration: 60,
        client_id: client_id.to_owned(),
    }
}

/// CONNECT, the session opens upstream, Up: CONNACK.
fn connect_up(h: &mut Harness, from: &Peer, client_id: &str) {
    let out = h.send(from, connect_packet(client_id, true, false));
    assert!(packets_to(&out, from).is_empty(), "CONNACK waits: {out:?}");
    h.gw.handle_session_status(h.now, client_id, SessionStatus::Up);
    assert_eq!(
        packets_to(&h.drain(), from),
        vec![Packet::ConnAck {
            return_code: ReturnCode::Accepted
        }]
    );
}

fn opened(out: &[Output]) -> Vec<SessionParams> {
    upstream(out)
        .into_iter()
        .filter_map(|c| match c {
            UpstreamCommand::OpenSession(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn the_ack(out: &[Output]) -> (Arc<str>, UpstreamAck) {
    let acks: Vec<_> = upstream(out)
        .into_iter()
        .filter_map(|c| match c {
            UpstreamCommand::Publish {
                from:
                    Some(DeviceOrigin {
                        client_id,
                        ack: Some(ack),
                    }),
                ..
            } => Some((client_id, ack)),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1, "one publish owing an ack: {out:?}");
    acks[0].clone()
}

#[test]
fn connack_waits_for_the_devices_upstream_session() {
    let mut h = per_device();
    let a = peer(1);
    let out = h.send(&a, connect_packet("dev-a", false, false));
    assert!(packets_to(&out, &a).is_empty(), "no CONNACK yet: {out:?}");
    assert_eq!(
        opened(&out),
        vec![SessionParams {
            client_id: Arc::from("dev-a"),
            clean_session: false,
            keep_alive_secs: 60,
            will: None,
        }]
    );
    assert_eq!(
        h.gw.client_state("dev-a").map(|s| s.label()),
        Some("connecting")
    );
    // A PINGREQ before the CONNACK is dropped, not fatal.
    let out = h.send(&a, Packet::PingReq { client_id: None });
    assert!(packets_to(&out, &a).is_empty());
    h.gw.handle_session_status(h.now, "dev-a", SessionStatus::Up);
    assert_eq!(
        packets_to(&h.drain(), &a),
        vec![Packet::ConnAck {
            return_code: ReturnCode::Accepted
        }]
    );
    assert_eq!(
        h.gw.client_state("dev-a").map(|s| s.label()),
        Some("active")
    );
}

#[test]
fn an_unreachable_or_silent_upstream_lets_the_device_work_offline() {
    let mut h = per_device();
    let (a, b2) = (peer(1), peer(2));
    h.send(&a, connect_packet("a", true, false));
    h.gw.handle_session_status(h.now, "a", SessionStatus::Unreachable);
    assert_eq!(
        packets_to(&h.drain(), &a),
        vec![Packet::ConnAck {
            return_code: ReturnCode::Accepted
        }]
    );
    assert_eq!(h.gw.client_state("a").map(|s| s.label()), Some("active"));

    // No answer at all: accepted once upstream_session_wait (5 s) passed.
    let out = h.send(&b2, connect_packet("b", true, false));
    assert!(packets_to(&out, &b2).is_empty());
    let out = h.advance(Duration::from_secs(4));
    assert!(packets_to(&out, &b2).is_empty(), "still waiting at 4 s");
    let out = h.advance(Duration::from_secs(2));
    assert_eq!(
        packets_to(&out, &b2),
        vec![Packet::ConnAck {
            return_code: ReturnCode::Accepted
        }]
    );
    // A late status changes nothing.
    h.gw.handle_session_status(h.now, "b", SessionStatus::Up);
    assert!(packets_to(&h.drain(), &b2).is_empty());
}

#[test]
fn a_refused_session_refuses_the_device_or_disconnects_it() {
    let mut h = per_device();
    let (a, b2) = (peer(1), peer(2));
    h.send(&a, connect_packet("a", true, false));
    h.gw.handle_session_status(
        h.now,
        "a",
        SessionStatus::Refused {
            reason: "bad user name or password".into(),
        },
    );
    let out = h.drain();
    assert_eq!(
        packets_to(&out, &a),
        vec![Packet::ConnAck {
            return_code: ReturnCode::NotSupported
        }]
    );
    assert_eq!(h.gw.client_state("a"), None, "clean session forgotten");
    assert!(
        !upstream(&out)
            .iter()
            .any(|c| matches!(c, UpstreamCommand::CloseSession { .. })),
        "the shell ended the refused session itself: {out:?}"
    );

    // Already connected: DISCONNECT, kept for CleanSession = false.
    h.send(&b2, connect_packet("b", false, false));
    h.gw.handle_session_status(h.now, "b", SessionStatus::Up);
    h.drain();
    h.gw.handle_session_status(
        h.now,
        "b",
        SessionStatus::Refused {
            reason: "not authorised".into(),
        },
    );
    assert_eq!(
        packets_to(&h.drain(), &b2),
        vec![Packet::Disconnect { duration: None }]
    );
    assert_eq!(
        h.gw.client_state("b").map(|s| s.label()),
        Some("disconnected")
    );
}

#[test]
fn qos1_and_qos2_are_acknowledged_when_the_broker_has_the_message() {
    let mut h = per_device();
    let a = peer(1);
    connect_up(&mut h, &a, "a");
    let id = h.register(&a, 1, "data/a");
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 7, "v1"));
    assert!(packets_to(&out, &a).is_empty(), "no PUBACK yet: {out:?}");
    let (client, ack) = the_ack(&out);
    assert_eq!(&*client, "a");
    // The device's retransmission is not forwarded again.
    let mut dup = publish(QoS::AtLeastOnce, TopicRef::Id(id), 7, "v1");
    if let Packet::Publish { dup: d, .. } = &mut dup {
        *d = true;
    }
    let out = h.send(&a, dup);
    assert!(upstream(&out).is_empty() && packets_to(&out, &a).is_empty());
    h.gw.handle_session_ack(h.now, "a", ack, true);
    assert_eq!(
        packets_to(&h.drain(), &a),
        vec![Packet::PubAck {
            topic_id: id,
            msg_id: 7,
            return_code: ReturnCode::Accepted
        }]
    );

    // Refused by the broker: PUBACK "not supported", counted.
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 8, "v2"));
    let (_, ack) = the_ack(&out);
    h.gw.handle_session_ack(h.now, "a", ack, false);
    assert_eq!(
        packets_to(&h.drain(), &a),
        vec![Packet::PubAck {
            topic_id: id,
            msg_id: 8,
            return_code: ReturnCode::NotSupported
        }]
    );
    assert_eq!(h.gw.stats().drops(DropReason::UpstreamRefused), 1);

    // QoS 2: PUBREC once the broker has it, then the usual PUBREL/PUBCOMP.
    let out = h.send(&a, publish(QoS::ExactlyOnce, TopicRef::Id(id), 9, "v3"));
    assert!(packets_to(&out, &a).is_empty());
    let (_, ack) = the_ack(&out);
    h.gw.handle_session_ack(h.now, "a", ack, true);
    assert_eq!(
        packets_to(&h.drain(), &a),
        vec![Packet::PubRec { msg_id: 9 }]
    );
    let out = h.send(&a, Packet::PubRel { msg_id: 9 });
    assert_eq!(packets_to(&out, &a), vec![Packet::PubComp { msg_id: 9 }]);
}

#[test]
fn qos0_goes_up_on_the_devices_session_and_qos_minus_one_on_the_shared_one() {
    let mut h = Harness::with(EngineConfig {
        upstream: true,
        per_device_sessions: true,
        predefined_topics: vec![(5, "pre/five".into())],
        ..EngineConfig::default()
    });
    let a = peer(1);
    connect_up(&mut h, &a, "a");
    let id = h.register(&a, 1, "data/a");
    let out = h.send(&a, publish(QoS::AtMostOnce, TopicRef::Id(id), 0, "z"));
    let froms: Vec<_> = upstream(&out)
        .into_iter()
        .filter_map(|c| match c {
            UpstreamCommand::Publish { from, .. } => Some(from),
            _ => None,
        })
        .collect();
    assert_eq!(
        froms,
        vec![Some(DeviceOrigin {
            client_id: Arc::from("a"),
            ack: None
        })]
    );
    let anon = peer(9);
    let out = h.send(
        &anon,
        publish(QoS::MinusOne, TopicRef::Predefined(5), 0, "m"),
    );
    assert!(matches!(
        upstream(&out).as_slice(),
        [UpstreamCommand::Publish { from: None, .. }]
    ));
}

#[test]
fn subscriptions_ride_on_the_devices_session_and_downlinks_reach_only_it() {
    let mut h = per_device();
    let (a, b2) = (peer(1), peer(2));
    connect_up(&mut h, &a, "a");
    connect_up(&mut h, &b2, "b");
    let out = h.send(&a, subscribe(QoS::AtLeastOnce, 1, "cmd/#"));
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::SessionSubscribe {
            client_id: Arc::from("a"),
            filter: "cmd/#".into(),
            qos: 1
        }],
        "no shared-session subscription for a device"
    );
    h.send(&b2, subscribe(QoS::AtMostOnce, 1, "cmd/#"));

    // Down a's session: a only, at a's QoS.
    h.gw.handle_session_message(
        h.now,
        "a",
        UpstreamMessage {
            topic: "cmd/x".into(),
            payload: b("go"),
            qos: 2,
            retain: false,
            filter: None,
        },
    );
    let out = h.drain();
    let to_a = packets_to(&out, &a);
    let Some(Packet::Register {
        topic_id, msg_id, ..
    }) = to_a
        .iter()
        .find(|p| matches!(p, Packet::Register { topic_name, .. } if topic_name == "cmd/x"))
        .cloned()
    else {
        panic!("a gets cmd/x registered first: {to_a:?}");
    };
    assert!(packets_to(&out, &b2).is_empty(), "b does not: {out:?}");
    let out = h.send(
        &a,
        Packet::RegAck {
            topic_id,
            msg_id,
            return_code: ReturnCode::Accepted,
        },
    );
    assert!(
        packets_to(&out, &a).iter().any(|p| matches!(
            p,
            Packet::Publish {
                qos: QoS::AtLeastOnce,
                ..
            }
        )),
        "then the message at a's QoS 1: {out:?}"
    );
    assert_eq!(h.gw.stats().session_messages_in, 1);

    // The shared session's messages are for local clients, not devices.
    h.gw.handle_upstream(
        h.now,
        UpstreamMessage {
            topic: "cmd/y".into(),
            payload: b("no"),
            qos: 0,
            retain: false,
            filter: None,
        },
    );
    let out = h.drain();
    assert!(packets_to(&out, &a).is_empty() && packets_to(&out, &b2).is_empty());

    // A message on a session that matches none of its subscriptions.
    h.gw.handle_session_message(
        h.now,
        "b",
        UpstreamMessage {
            topic: "other".into(),
            payload: b("x"),
            qos: 0,
            retain: false,
            filter: None,
        },
    );
    assert!(packets_to(&h.drain(), &b2).is_empty());
    assert_eq!(h.gw.stats().drops(DropReason::NoSubscription), 1);

    // Unsubscribe follows on the session.
    let out = h.send(
        &a,
        Packet::Unsubscribe {
            msg_id: 2,
            topic: SubscribeTopic::Name("cmd/#".into()),
        },
    );
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::SessionUnsubscribe {
            client_id: Arc::from("a"),
            filter: "cmd/#".into()
        }]
    );
}

#[test]
fn devices_still_reach_each_other_locally() {
    let mut h = per_device();
    let (a, b2) = (peer(1), peer(2));
    connect_up(&mut h, &a, "a");
    connect_up(&mut h, &b2, "b");
    h.send(&b2, subscribe(QoS::AtMostOnce, 1, "data/#"));
    let id = h.register(&a, 1, "data/a");
    let out = h.send(&a, publish(QoS::AtMostOnce, TopicRef::Id(id), 0, "hi"));
    assert!(
        packets_to(&out, &b2)
            .iter()
            .any(|p| matches!(p, Packet::Register { topic_name, .. } if topic_name == "data/a")),
        "b gets a's message through the engine: {out:?}"
    );
}

#[test]
fn the_will_rides_on_the_session_and_the_broker_publishes_it() {
    let mut h = per_device();
    let (a, w) = (peer(1), peer(2));
    let out = h.will_handshake(
        &a,
        connect_packet("a", true, true),
        "dev/a/status",
        QoS::AtLeastOnce,
        true,
        "gone",
    );
    let params = opened(&out);
    assert_eq!(params.len(), 1);
    assert_eq!(
        params[0].will,
        Some(crate::session::Will {
            topic: "dev/a/status".into(),
            payload: b("gone"),
            qos: 1,
            retain: true
        })
    );
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    h.drain();
    // A will update opens the session again with the new will.
    let out = h.send(&a, Packet::WillMsgUpd { payload: b("lost") });
    let params = opened(&out);
    assert_eq!(params.len(), 1, "{out:?}");
    assert_eq!(
        params[0].will.as_ref().map(|w| w.payload.clone()),
        Some(b("lost"))
    );

    connect_up(&mut h, &w, "watcher");
    h.send(&w, subscribe(QoS::AtMostOnce, 1, "dev/+/status"));
    h.advance(Duration::from_secs(60));
    h.send(&w, Packet::PingReq { client_id: None });
    // a goes silent: 60 s keep-alive + 50 %.
    let out = h.advance(Duration::from_secs(31));
    let ups = upstream(&out);
    assert!(
        ups.contains(&UpstreamCommand::CloseSession {
            client_id: Arc::from("a"),
            publish_will: true
        }),
        "dropped so the broker publishes the will: {ups:?}"
    );
    assert!(
        !ups.iter()
            .any(|c| matches!(c, UpstreamCommand::Publish { .. })),
        "the gateway does not publish the will upstream itself: {ups:?}"
    );
    assert!(
        packets_to(&out, &w).iter().any(
            |p| matches!(p, Packet::Register { topic_name, .. } if topic_name == "dev/a/status")
        ),
        "local subscribers still get the will"
    );
}

#[test]
fn disconnect_closes_without_will_and_sleep_keeps_the_session() {
    let mut h = per_device();
    let (a, s) = (peer(1), peer(2));
    connect_up(&mut h, &a, "a");
    let out = h.send(&a, Packet::Disconnect { duration: None });
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::CloseSession {
            client_id: Arc::from("a"),
            publish_will: false
        }]
    );

    connect_up(&mut h, &s, "sleepy");
    let out = h.send(&s, Packet::Disconnect { duration: Some(30) });
    assert!(upstream(&out).is_empty(), "asleep: the session stays up");
    // Not heard from beyond the sleep (+50 %): lost, the will is the broker's.
    let out = h.advance(Duration::from_secs(46));
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::CloseSession {
            client_id: Arc::from("sleepy"),
            publish_will: true
        }]
    );
}

#[test]
fn a_reconnect_opens_the_session_again_with_every_subscription() {
    let mut h = per_device();
    let a = peer(1);
    let out = h.send(&a, connect_packet("a", false, false));
    assert_eq!(opened(&out).len(), 1);
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    h.drain();
    h.send(&a, subscribe(QoS::AtLeastOnce, 1, "cmd/a"));
    h.send(&a, subscribe(QoS::AtMostOnce, 2, "all/#"));
    let out = h.send(&a, connect_packet("a", false, false));
    assert_eq!(
        upstream(&out)[1..],
        [
            UpstreamCommand::SessionSubscribe {
                client_id: Arc::from("a"),
                filter: "all/#".into(),
                qos: 0
            },
            UpstreamCommand::SessionSubscribe {
                client_id: Arc::from("a"),
                filter: "cmd/a".into(),
                qos: 1
            }
        ]
    );
}

#[test]
fn a_stored_outbox_message_remembers_whose_session_sends_it() {
    let mut h = Harness::with(EngineConfig {
        upstream: true,
        per_device_sessions: true,
        persist: true,
        ..EngineConfig::default()
    });
    let a = peer(1);
    connect_up(&mut h, &a, "a");
    let id = h.register(&a, 1, "data/a");
    h.gw.take_store_ops();
    h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 3, "v"));
    let devices: Vec<Option<String>> =
        h.gw.take_store_ops()
            .into_iter()
            .filter_map(|op| match op {
                StoreOp::PutOutbox(_, r) => Some(r.device),
                _ => None,
            })
            .collect();
    assert_eq!(devices, vec![Some("a".to_owned())]);
}

#[test]
fn an_acknowledgement_owed_to_an_earlier_connection_is_not_given_to_the_next() {
    let mut h = per_device();
    let a = peer(1);
    connect_up(&mut h, &a, "a");
    let id = h.register(&a, 1, "data/a");
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "old"));
    let (_, stale) = the_ack(&out);
    // The device reconnects (a reboot) and reuses MsgId 1.
    connect_up(&mut h, &a, "a");
    let id = h.register(&a, 1, "data/a");
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "new"));
    let (_, fresh) = the_ack(&out);
    h.gw.handle_session_ack(h.now, "a", stale, true);
    assert!(
        packets_to(&h.drain(), &a).is_empty(),
        "the old message's PUBACK does not acknowledge the new one"
    );
    // Still awaited: the retransmission is not forwarded again.
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(id), 1, "new"));
    assert!(upstream(&out).is_empty());
    h.gw.handle_session_ack(h.now, "a", fresh, true);
    assert_eq!(
        packets_to(&h.drain(), &a),
        vec![Packet::PubAck {
            topic_id: id,
            msg_id: 1,
            return_code: ReturnCode::Accepted
        }]
    );
}

#[test]
fn a_failed_will_handshake_closes_the_upstream_session() {
    let mut h = per_device();
    let a = peer(1);
    h.send(&a, connect_packet("a", false, false));
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    h.drain();
    // A new CONNECT with a will whose handshake never completes.
    h.send(&a, connect_packet("a", false, true));
    let out = h.advance(Duration::from_secs(11));
    assert!(
        upstream(&out).contains(&UpstreamCommand::CloseSession {
            client_id: Arc::from("a"),
            publish_will: false
        }),
        "{out:?}"
    );
    assert_eq!(
        h.gw.client_state("a").map(|s| s.label()),
        Some("disconnected")
    );
}

/// `$SYS` is the gateway's own broker's: a device's `$SYS` subscription is
/// answered (and served locally) but never made on its upstream session,
/// not when it subscribes, not when its session is opened again, not when
/// it unsubscribes.
#[test]
fn a_devices_sys_subscription_never_goes_up_its_session() {
    let mut h = per_device();
    let a = peer(1);
    connect_up(&mut h, &a, "a");
    let out = h.send(&a, subscribe(QoS::AtMostOnce, 1, "$SYS/#"));
    assert!(upstream(&out).is_empty(), "{out:?}");
    assert!(
        packets_to(&out, &a).iter().any(|p| matches!(
            p,
            Packet::SubAck {
                return_code: ReturnCode::Accepted,
                ..
            }
        )),
        "the device is answered: {out:?}"
    );
    // A will update re-opens the session with every subscription but $SYS.
    h.send(&a, subscribe(QoS::AtMostOnce, 2, "cmd/#"));
    let out = h.send(
        &a,
        Packet::WillTopicUpd(Some(WillTopic {
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "dev/a/status".into(),
        })),
    );
    assert_eq!(opened(&out).len(), 1, "{out:?}");
    let resubscribed: Vec<String> = upstream(&out)
        .into_iter()
        .filter_map(|c| match c {
            UpstreamCommand::SessionSubscribe { filter, .. } => Some(filter),
            _ => None,
        })
        .collect();
    assert_eq!(resubscribed, ["cmd/#"]);
    let out = h.send(
        &a,
        Packet::Unsubscribe {
            msg_id: 3,
            topic: SubscribeTopic::Name("$SYS/#".into()),
        },
    );
    assert!(upstream(&out).is_empty(), "{out:?}");
}

/// Issue 23: the broker handed the device's session to another gateway.
#[test]
fn a_session_taken_over_lets_the_device_go_without_its_will() {
    let mut h = per_device();
    let (a, w, back) = (peer(1), peer(2), peer(3));
    connect_up(&mut h, &w, "watcher");
    h.send(&w, subscribe(QoS::AtMostOnce, 1, "dev/+/status"));
    h.drain();
    h.will_handshake(
        &a,
        connect_packet("a", false, true),
        "dev/a/status",
        QoS::AtLeastOnce,
        false,
        "gone",
    );
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    h.send(&a, subscribe(QoS::AtLeastOnce, 2, "cmd/a"));
    h.drain();
    h.gw.handle_session_status(h.now, "a", SessionStatus::TakenOver);
    let out = h.drain();
    assert_eq!(
        packets_to(&out, &a),
        vec![Packet::Disconnect { duration: None }],
        "told at its old address, in case it is still there"
    );
    assert!(
        upstream(&out).is_empty(),
        "the shell ended the session itself: {out:?}"
    );
    assert_eq!(
        h.gw.client_state("a").map(|s| s.label()),
        Some("disconnected"),
        "CleanSession off: kept"
    );
    // Long past its keep-alive (the watcher keeps pinging): never lost, so
    // no will, locally either.
    for _ in 0..4 {
        let out = h.advance(Duration::from_secs(50));
        assert!(
            !upstream(&out)
                .iter()
                .any(|c| matches!(c, UpstreamCommand::CloseSession { .. })),
            "nothing more upstream: {out:?}"
        );
        assert!(
            packets_to(&out, &w).is_empty(),
            "no will for the watcher: {out:?}"
        );
        h.send(&w, Packet::PingReq { client_id: None });
    }
    // Back here, from a new address: the session opens again at once, with
    // its subscription.
    let out = h.send(&back, connect_packet("a", false, false));
    assert_eq!(opened(&out).len(), 1, "{out:?}");
    assert!(
        upstream(&out).iter().any(|c| matches!(
            c,
            UpstreamCommand::SessionSubscribe { filter, .. } if filter == "cmd/a"
        )),
        "{out:?}"
    );
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    assert_eq!(
        packets_to(&h.drain(), &back),
        vec![Packet::ConnAck {
            return_code: ReturnCode::Accepted
        }]
    );

    // CleanSession on: forgotten.
    connect_up(&mut h, &peer(4), "b");
    h.gw.handle_session_status(h.now, "b", SessionStatus::TakenOver);
    h.drain();
    assert_eq!(h.gw.client_state("b"), None);
}

/// Issue 23: a device with CleanSession off that roamed here from another
/// gateway has subscriptions in the broker's session this engine never saw;
/// what the broker sends on the device's own session is delivered. With
/// CleanSession on there is no such session, so an unmatched message is
/// dropped as before.
#[test]
fn a_roamed_devices_session_delivers_what_the_broker_queued_for_it() {
    let mut h = per_device();
    let (a, c) = (peer(1), peer(2));
    h.send(&a, connect_packet("roamer", false, false));
    h.gw.handle_session_status(h.now, "roamer", SessionStatus::Up);
    h.drain();
    let queued = |topic: &str| UpstreamMessage {
        topic: topic.into(),
        payload: b("while you moved"),
        qos: 1,
        retain: false,
        filter: None,
    };
    h.gw.handle_session_message(h.now, "roamer", queued("cmd/roamer"));
    let to_a = packets_to(&h.drain(), &a);
    assert!(
        to_a.iter().any(
            |p| matches!(p, Packet::Register { topic_name, .. } if topic_name == "cmd/roamer")
        ),
        "delivered (registered first): {to_a:?}"
    );

    connect_up(&mut h, &c, "clean");
    h.gw.handle_session_message(h.now, "clean", queued("cmd/clean"));
    assert!(packets_to(&h.drain(), &c).is_empty());
}

fn downlink_acks(out: &[Output]) -> Vec<(Arc<str>, u64)> {
    upstream(out)
        .into_iter()
        .filter_map(|c| match c {
            UpstreamCommand::AckDownlink { client_id, token } => Some((client_id, token)),
            _ => None,
        })
        .collect()
}

fn the_publish(packets: &[Packet]) -> (u16, u16) {
    packets
        .iter()
        .find_map(|p| match p {
            Packet::Publish { topic, msg_id, .. } => Some((topic.raw(), *msg_id)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a PUBLISH: {packets:?}"))
}

/// Issue 23's gap: a QoS 1/2 downlink with a token is acknowledged to the
/// broker only when the device acknowledged it (PUBACK at QoS 1, PUBREC at
/// QoS 2). A device that went away without a word leaves it
/// unacknowledged (the broker redelivers it to the session's next holder);
/// what can never be for the device is acknowledged at once; a session
/// the engine does not hold acknowledges nothing.
#[test]
fn a_downlink_is_acknowledged_upstream_only_once_the_device_has_it() {
    let mut h = per_device();
    let a = peer(1);
    h.send(&a, connect_packet("a", false, false));
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    h.drain();
    h.send(&a, subscribe(QoS::ExactlyOnce, 1, "cmd/#"));
    let msg = |qos: u8, topic: &str| UpstreamMessage {
        topic: topic.into(),
        payload: b("go"),
        qos,
        retain: false,
        filter: None,
    };

    // QoS 1: REGISTER, PUBLISH, and the token only with the device's PUBACK.
    h.gw.handle_session_message_with_token(h.now, "a", msg(1, "cmd/x"), 7);
    let out = h.drain();
    assert!(
        downlink_acks(&out).is_empty(),
        "not before the device: {out:?}"
    );
    let Some(Packet::Register {
        topic_id, msg_id, ..
    }) = packets_to(&out, &a).first().cloned()
    else {
        panic!("REGISTER first: {out:?}");
    };
    let out = h.send(
        &a,
        Packet::RegAck {
            topic_id,
            msg_id,
            return_code: ReturnCode::Accepted,
        },
    );
    assert!(downlink_acks(&out).is_empty(), "not on the REGACK: {out:?}");
    let (topic_field, msg_id) = the_publish(&packets_to(&out, &a));
    let puback = |msg_id| Packet::PubAck {
        topic_id: topic_field,
        msg_id,
        return_code: ReturnCode::Accepted,
    };
    let out = h.send(&a, puback(msg_id));
    assert_eq!(downlink_acks(&out), vec![(Arc::from("a"), 7)]);

    // QoS 2: the device's PUBREC.
    h.gw.handle_session_message_with_token(h.now, "a", msg(2, "cmd/x"), 8);
    let out = h.drain();
    assert!(downlink_acks(&out).is_empty(), "{out:?}");
    let (_, msg_id) = the_publish(&packets_to(&out, &a));
    let out = h.send(&a, Packet::PubRec { msg_id });
    assert_eq!(downlink_acks(&out), vec![(Arc::from("a"), 8)]);
    h.send(&a, Packet::PubComp { msg_id });

    // The device goes away without a word: all retries spent, lost, and
    // the message stays unacknowledged upstream.
    h.gw.handle_session_message_with_token(h.now, "a", msg(1, "cmd/x"), 9);
    let mut out = h.drain();
    for _ in 0..10 {
        out.extend(h.advance(Duration::from_secs(10)));
    }
    assert!(downlink_acks(&out).is_empty(), "{out:?}");
    assert_eq!(h.gw.client_state("a").map(|s| s.label()), Some("lost"));
    // It comes back here: the message again, acknowledged with its PUBACK.
    let back = peer(2);
    h.send(&back, connect_packet("a", false, false));
    h.gw.handle_session_status(h.now, "a", SessionStatus::Up);
    let out = h.drain();
    assert!(downlink_acks(&out).is_empty(), "{out:?}");
    let to_back = packets_to(&out, &back);
    let out = match to_back.iter().find_map(|p| match p {
        Packet::Register {
            topic_id, msg_id, ..
        } => Some((*topic_id, *msg_id)),
        _ => None,
    }) {
        Some((topic_id, msg_id)) => h.send(
            &back,
            Packet::RegAck {
                topic_id,
                msg_id,
                return_code: ReturnCode::Accepted,
            },
        ),
        None => out,
    };
    let (topic_field, msg_id) = the_publish(&packets_to(&out, &back));
    let out = h.send(
        &back,
        Packet::PubAck {
            topic_id: topic_field,
            msg_id,
            return_code: ReturnCode::Accepted,
        },
    );
    assert_eq!(downlink_acks(&out), vec![(Arc::from("a"), 9)]);

    // Never for this device (CleanSession on, no matching subscription):
    // at once.
    connect_up(&mut h, &peer(3), "c");
    h.gw.handle_session_message_with_token(h.now, "c", msg(1, "other"), 10);
    assert_eq!(downlink_acks(&h.drain()), vec![(Arc::from("c"), 10)]);
    // No such session here: nothing (the broker redelivers elsewhere).
    h.gw.handle_session_message_with_token(h.now, "nobody", msg(1, "cmd/x"), 11);
    assert!(downlink_acks(&h.drain()).is_empty());
    // QoS 0 carries no token to give back.
    h.gw.handle_session_message_with_token(h.now, "a", msg(0, "cmd/x"), 12);
    assert!(downlink_acks(&h.drain()).is_empty());
}
