//! Admission (client id globs, UDP source networks, radio addresses per
//! serial link) and the ACL in the
//! engine: refused CONNECTs, denied publishes, subscriptions, wills and
//! deliveries for devices and local MQTT clients, each counted.

use std::sync::Arc;

use super::*;
use crate::acl::{Acl, Permission};
use crate::admission::{Admission, RadioAddr, Refusal};
use crate::session::Will;

/// One rule of a test ACL, as a line of mosquitto's `acl_file` would give it
/// (the file format itself is the shell's, tested there).
enum Line<'a> {
    /// `user NAME` then `topic PERMISSION FILTER`, or no user: anonymous.
    Topic(Option<&'a str>, Permission, &'a str),
    /// `pattern PERMISSION TEMPLATE`.
    Pattern(Permission, &'a str),
}

fn acl(lines: &[Line<'_>]) -> Option<Arc<Acl>> {
    let mut acl = Acl::default();
    for line in lines {
        match *line {
            Line::Topic(user, permission, filter) => acl.add_topic(user, permission, filter),
            Line::Pattern(permission, template) => acl.add_pattern(permission, template),
        }
    }
    Some(Arc::new(acl))
}

/// Devices may write `dev/<id>/#` and read `cmd/#`; nothing else
/// (`topic read cmd/#`, `topic deny cmd/secret`, `pattern write dev/%c/#`,
/// `user app`, `topic readwrite #`).
const DEVICE_ACL: &[Line<'static>] = &[
    Line::Topic(None, Permission::Read, "cmd/#"),
    Line::Topic(None, Permission::Deny, "cmd/secret"),
    Line::Pattern(Permission::Write, "dev/%c/#"),
    Line::Topic(Some("app"), Permission::ReadWrite, "#"),
];

fn connect_packet(id: &str) -> Packet {
    Packet::Connect {
        will: false,
        clean_session: true,
        protocol_id: 1,
        duration: 60,
        client_id: id.to_owned(),
    }
}

#[test]
fn a_client_id_outside_the_allow_list_gets_connack_0x03_and_is_counted() {
    let mut h = Harness::with(EngineConfig {
        admission: Admission {
            allow_clients: vec!["sensor-*".into()],
            ..Admission::default()
        },
        ..EngineConfig::default()
    });
    let a = peer(1);
    let out = h.send(&a, connect_packet("intruder"));
    assert_eq!(
        packets_to(&out, &a),
        vec![Packet::ConnAck {
            return_code: ReturnCode::NotSupported
        }]
    );
    assert_eq!(h.gw.session_count(), 0);
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 1);
    h.connect(&a, "sensor-7", true);
}

#[test]
fn a_refused_client_can_be_dropped_silently() {
    let mut h = Harness::with(EngineConfig {
        admission: Admission {
            allow_clients: vec!["ok".into()],
            refusal: Refusal::Drop,
            ..Admission::default()
        },
        ..EngineConfig::default()
    });
    let a = peer(1);
    assert!(h.send(&a, connect_packet("nope")).is_empty());
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 1);
}

#[test]
fn a_source_outside_the_allowed_networks_is_refused() {
    let cidr = |s: &str| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    let mut h = Harness::with(EngineConfig {
        admission: Admission {
            allow_udp_sources: vec![cidr("10.0.0.0/8")],
            ..Admission::default()
        },
        predefined_topics: vec![(3, "m/pre".into())],
        ..EngineConfig::default()
    });
    let outside = peer(1); // 127.0.0.1
    let out = h.send(&outside, connect_packet("d"));
    assert_eq!(
        packets_to(&out, &outside),
        vec![Packet::ConnAck {
            return_code: ReturnCode::NotSupported
        }]
    );
    // QoS −1 from the same source is dropped too.
    h.send(
        &outside,
        publish(QoS::MinusOne, TopicRef::Predefined(3), 0, "x"),
    );
    assert_eq!(h.gw.stats().publishes_in, 0);
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 2);
    let inside = Peer::udp(SocketAddr::from(([10, 1, 2, 3], 4000)));
    h.connect(&inside, "d", true);
    h.send(
        &inside,
        publish(QoS::MinusOne, TopicRef::Predefined(3), 0, "x"),
    );
    assert_eq!(h.gw.stats().publishes_in, 1);
}

fn radios(addressed: bool, list: &[&str]) -> Vec<RadioAddr> {
    list.iter()
        .map(|a| RadioAddr::parse(a, addressed).unwrap_or_else(|e| panic!("{a}: {e}")))
        .collect()
}

fn xbee_peer(addr: u64) -> Peer {
    Peer {
        link: LinkAddr::Radio { port: 0, addr },
        node: None,
    }
}

/// Port 0 is an XBee link allowing one radio; port 1 a SLIP link allowing
/// one forwarded node.
fn radio_gateway(refusal: Refusal) -> Harness {
    Harness::with(EngineConfig {
        admission: Admission {
            allow_radio: vec![radios(true, &["0013A20040A1B2C3"]), radios(false, &["0A"])],
            refusal,
            ..Admission::default()
        },
        predefined_topics: vec![(3, "m/pre".into())],
        ..EngineConfig::default()
    })
}

#[test]
fn a_radio_address_outside_its_links_allow_list_gets_connack_0x03() {
    let mut h = radio_gateway(Refusal::ConnAck);
    let stranger = xbee_peer(0x0013_A200_40A1_B2C4);
    let out = h.send(&stranger, connect_packet("d"));
    assert_eq!(
        packets_to(&out, &stranger),
        vec![Packet::ConnAck {
            return_code: ReturnCode::NotSupported
        }]
    );
    assert_eq!(h.gw.session_count(), 0);
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 1);
    // The listed radio connects, with the same client id.
    h.connect(&xbee_peer(0x0013_A200_40A1_B2C3), "d", true);

    // SLIP: node 0x0A behind the forwarder is listed, node 0x0B is not, and
    // the port itself (a device not behind a forwarder) has no address.
    let port = Peer::serial(1);
    let wrap = |node: u8, inner: Packet| Packet::Encapsulated {
        radius: 0,
        node_id: Bytes::copy_from_slice(&[node]),
        inner: Box::new(inner),
    };
    let out = h.send(&port, wrap(0x0B, connect_packet("e")));
    let refused_node = port.forwarded(Bytes::from_static(&[0x0B]));
    assert_eq!(
        packets_to(&out, &refused_node),
        vec![Packet::ConnAck {
            return_code: ReturnCode::NotSupported
        }]
    );
    let out = h.send(&port, connect_packet("f"));
    assert_eq!(
        packets_to(&out, &port),
        vec![Packet::ConnAck {
            return_code: ReturnCode::NotSupported
        }]
    );
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 3);
    let out = h.send(&port, wrap(0x0A, connect_packet("e")));
    let listed_node = port.forwarded(Bytes::from_static(&[0x0A]));
    assert_eq!(
        packets_to(&out, &listed_node),
        vec![Packet::ConnAck {
            return_code: ReturnCode::Accepted
        }]
    );
    assert_eq!(h.gw.session_count(), 2);
}

#[test]
fn a_refused_radio_can_be_dropped_silently() {
    let mut h = radio_gateway(Refusal::Drop);
    assert!(
        h.send(&xbee_peer(0x42), connect_packet("d")).is_empty(),
        "no answer at all"
    );
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 1);
    assert_eq!(h.gw.session_count(), 0);
}

/// A refused source learns nothing in "drop" mode, not even that its
/// CONNECT was malformed: the source is checked before the protocol id and
/// the client id's length (and only then the client id globs).
#[test]
fn a_refused_source_gets_no_answer_to_a_malformed_connect_in_drop_mode() {
    let mut h = radio_gateway(Refusal::Drop);
    let stranger = xbee_peer(0x42);
    let too_long = "x".repeat(EngineConfig::default().max_client_id_len + 1);
    assert!(
        h.send(&stranger, connect_packet(&too_long)).is_empty(),
        "a too-long client id was answered"
    );
    let bad_protocol = Packet::Connect {
        will: false,
        clean_session: true,
        protocol_id: 9,
        duration: 60,
        client_id: "d".into(),
    };
    assert!(
        h.send(&stranger, bad_protocol).is_empty(),
        "a bad protocol id was answered"
    );
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 2);
    assert_eq!(h.gw.stats().limit_hits(LimitHit::MaxClientIdLen), 0);
    // From an admitted radio the same CONNECT gets its answer.
    let listed = xbee_peer(0x0013_A200_40A1_B2C3);
    let out = h.send(&listed, connect_packet(&too_long));
    assert_eq!(
        packets_to(&out, &listed),
        vec![Packet::ConnAck {
            return_code: ReturnCode::NotSupported
        }]
    );
    assert_eq!(h.gw.stats().limit_hits(LimitHit::MaxClientIdLen), 1);
}

/// "sleepy" connects from `listed`, subscribes to `z/1`, falls asleep, and
/// a QoS 0 message is buffered for it; then a PINGREQ with its client id
/// from `stranger` is dropped and counted (nothing sent anywhere, the
/// session left where it was), and one from `listed` is answered with the
/// message and PINGRESP.
fn wake_from_a_stranger_collects_nothing(admission: Admission, listed: Peer, stranger: Peer) {
    let mut h = Harness::with(EngineConfig {
        admission,
        ..EngineConfig::default()
    });
    let app = Peer::udp(SocketAddr::from(([10, 0, 0, 1], 1000)));
    h.connect(&app, "app", true);
    h.connect(&listed, "sleepy", false);
    h.subscribe(&listed, 1, "z/1", QoS::AtMostOnce);
    h.send(
        &listed,
        Packet::Disconnect {
            duration: Some(300),
        },
    );
    let id = h.register(&app, 1, "z/1");
    h.send(
        &app,
        publish(QoS::AtMostOnce, TopicRef::Id(id), 0, "private"),
    );
    assert_eq!(h.gw.queued_for("sleepy"), 1);

    let wake = Packet::PingReq {
        client_id: Some("sleepy".into()),
    };
    let out = h.send(&stranger, wake.clone());
    assert!(out.is_empty(), "a stranger's wake-up was answered: {out:?}");
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 1);
    assert_eq!(h.gw.queued_for("sleepy"), 1);
    assert_eq!(h.gw.client_state("sleepy"), Some(&ClientState::Asleep));
    assert_eq!(
        h.gw.device("sleepy", h.now).and_then(|d| d.peer),
        Some(listed.clone()),
        "the session moved to the stranger"
    );

    let out = h.send(&listed, wake);
    match packets_to(&out, &listed).as_slice() {
        [Packet::Publish { payload, .. }, Packet::PingResp] => {
            assert_eq!(payload.as_ref(), b"private");
        }
        other => panic!("expected the buffered message and PINGRESP, got {other:?}"),
    }
    assert_eq!(h.gw.queued_for("sleepy"), 0);
}

#[test]
fn a_wake_up_from_a_radio_not_on_the_list_collects_nothing() {
    wake_from_a_stranger_collects_nothing(
        Admission {
            allow_radio: vec![radios(true, &["0013A20040A1B2C3"])],
            ..Admission::default()
        },
        xbee_peer(0x0013_A200_40A1_B2C3),
        xbee_peer(0x0013_A200_40A1_B2C4),
    );
}

#[test]
fn a_wake_up_from_a_udp_source_outside_the_networks_collects_nothing() {
    let cidr = |s: &str| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    wake_from_a_stranger_collects_nothing(
        Admission {
            allow_udp_sources: vec![cidr("10.0.0.0/8")],
            ..Admission::default()
        },
        Peer::udp(SocketAddr::from(([10, 1, 2, 3], 4000))),
        Peer::udp(SocketAddr::from(([192, 0, 2, 1], 4000))),
    );
}

#[test]
fn a_wake_up_with_an_id_outside_the_globs_from_a_new_address_collects_nothing() {
    // The client connected before the list changed (a reload): a wake-up
    // from its own address is still its own, from a new one is refused.
    let mut h = Harness::new();
    let (a, b) = (peer(1), peer(2));
    h.connect(&a, "sleepy", false);
    h.send(&a, Packet::Disconnect { duration: Some(60) });
    h.gw.reconfigure(EngineConfig {
        admission: Admission {
            allow_clients: vec!["sensor-*".into()],
            ..Admission::default()
        },
        ..EngineConfig::default()
    });
    let wake = Packet::PingReq {
        client_id: Some("sleepy".into()),
    };
    assert!(h.send(&b, wake.clone()).is_empty());
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 1);
    assert_eq!(packets_to(&h.send(&a, wake), &a), vec![Packet::PingResp]);
}

#[test]
fn qos_minus_one_is_taken_only_from_allowed_radio_addresses() {
    let mut h = radio_gateway(Refusal::ConnAck);
    let pre = || publish(QoS::MinusOne, TopicRef::Predefined(3), 0, "x");
    h.send(&xbee_peer(0x42), pre());
    h.send(&Peer::serial(1), pre());
    assert_eq!(h.gw.stats().publishes_in, 0);
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 2);
    h.send(&xbee_peer(0x0013_A200_40A1_B2C3), pre());
    h.send(
        &Peer::serial(1),
        Packet::Encapsulated {
            radius: 0,
            node_id: Bytes::from_static(&[0x0A]),
            inner: Box::new(pre()),
        },
    );
    assert_eq!(h.gw.stats().publishes_in, 2);
    assert_eq!(h.gw.stats().drops(DropReason::NotAdmitted), 2);
}

#[test]
fn qos_minus_one_goes_only_to_topics_the_anonymous_rules_allow() {
    let mut h = Harness::with(EngineConfig {
        acl: acl(&[Line::Topic(None, Permission::Write, "m/open")]),
        predefined_topics: vec![(1, "m/open".into()), (2, "m/closed".into())],
        ..EngineConfig::default()
    });
    let s = peer(9);
    h.send(&s, publish(QoS::MinusOne, TopicRef::Predefined(1), 0, "a"));
    h.send(&s, publish(QoS::MinusOne, TopicRef::Predefined(2), 0, "b"));
    assert_eq!(h.gw.stats().publishes_in, 1);
    assert_eq!(h.gw.stats().drops(DropReason::AclDenied), 1);
}

#[test]
fn a_denied_device_publish_gets_puback_not_supported_and_goes_nowhere() {
    let mut h = Harness::with(EngineConfig {
        acl: acl(DEVICE_ACL),
        upstream: true,
        ..EngineConfig::default()
    });
    let a = peer(1);
    h.connect(&a, "n1", true);
    let own = h.register(&a, 1, "dev/n1/temp");
    let other = h.register(&a, 2, "dev/n2/temp");
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(other), 3, "x"));
    assert_eq!(
        packets_to(&out, &a),
        vec![Packet::PubAck {
            topic_id: other,
            msg_id: 3,
            return_code: ReturnCode::NotSupported
        }]
    );
    assert!(upstream(&out).is_empty());
    // QoS 0 has no answer: dropped and counted.
    let out = h.send(&a, publish(QoS::AtMostOnce, TopicRef::Id(other), 0, "x"));
    assert!(packets_to(&out, &a).is_empty() && upstream(&out).is_empty());
    assert_eq!(h.gw.stats().drops(DropReason::AclDenied), 2);
    // Its own topic goes through.
    let out = h.send(&a, publish(QoS::AtLeastOnce, TopicRef::Id(own), 4, "y"));
    assert_eq!(
        packets_to(&out, &a),
        vec![Packet::PubAck {
            topic_id: own,
            msg_id: 4,
            return_code: ReturnCode::Accepted
        }]
    );
    assert_eq!(upstream(&out).len(), 1);
}

#[test]
fn a_denied_device_subscribe_gets_a_rejecting_suback() {
    let mut h = Harness::with(EngineConfig {
        acl: acl(DEVICE_ACL),
        ..EngineConfig::default()
    });
    let a = peer(1);
    h.connect(&a, "n1", true);
    for filter in ["dev/#", "cmd/secret"] {
        let answer = h.subscribe(&a, 1, filter, QoS::AtMostOnce);
        assert!(
            matches!(
                answer.as_slice(),
                [Packet::SubAck {
                    return_code: ReturnCode::NotSupported,
                    ..
                }]
            ),
            "{filter}: {answer:?}"
        );
    }
    assert_eq!(h.gw.stats().drops(DropReason::AclDenied), 2);
    let answer = h.subscribe(&a, 2, "cmd/#", QoS::AtMostOnce);
    assert!(matches!(
        answer.as_slice(),
        [Packet::SubAck {
            return_code: ReturnCode::Accepted,
            ..
        }]
    ));
}

#[test]
fn delivery_skips_a_subscriber_that_may_not_read_the_topic() {
    let mut h = Harness::with(EngineConfig {
        acl: acl(DEVICE_ACL),
        ..EngineConfig::default()
    });
    let a = peer(1);
    h.connect(&a, "n1", true);
    h.subscribe(&a, 1, "cmd/#", QoS::AtMostOnce);
    // The app (username "app") may write anything; cmd/secret is denied
    // to devices, so only cmd/open reaches n1.
    let c = LocalConnId(1);
    h.gw.handle_local(
        h.now,
        c,
        LocalInput::Connect(LocalConnect {
            client_id: "app1".into(),
            clean_session: true,
            will: None,
            username: Some("app".into()),
        }),
    );
    for topic in ["cmd/secret", "cmd/open"] {
        h.gw.handle_local(
            h.now,
            c,
            LocalInput::Publish {
                pkid: 0,
                topic: topic.into(),
                payload: b("go"),
                qos: 0,
                retain: false,
            },
        );
    }
    let out = h.drain();
    let topics: Vec<_> = packets_to(&out, &a)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Register { topic_name, .. } => Some(topic_name),
            _ => None,
        })
        .collect();
    assert_eq!(topics, vec!["cmd/open".to_owned()]);
    assert_eq!(h.gw.stats().drops(DropReason::AclDenied), 1);
}

#[test]
fn a_will_to_a_denied_topic_is_dropped_when_it_would_be_published() {
    let mut h = Harness::with(EngineConfig {
        acl: acl(DEVICE_ACL),
        upstream: true,
        ..EngineConfig::default()
    });
    let a = peer(1);
    h.will_handshake(
        &a,
        Packet::Connect {
            will: true,
            clean_session: true,
            protocol_id: 1,
            duration: 10,
            client_id: "n1".into(),
        },
        "dev/n2/status",
        QoS::AtMostOnce,
        false,
        "gone",
    );
    assert_eq!(h.gw.client_state("n1"), Some(&ClientState::Active));
    let out = h.advance(Duration::from_secs(60));
    assert_eq!(h.gw.stats().wills_published, 0);
    assert!(upstream(&out).is_empty());
    assert_eq!(h.gw.stats().drops(DropReason::AclDenied), 1);
}

#[test]
fn local_clients_are_matched_by_username_and_client_id() {
    let mut h = Harness::with(EngineConfig {
        acl: acl(&[
            Line::Topic(Some("ann"), Permission::Write, "ann/#"),
            Line::Pattern(Permission::Read, "in/%u/%c"),
        ]),
        ..EngineConfig::default()
    });
    let c = LocalConnId(1);
    let will = Will {
        topic: "elsewhere".into(),
        payload: b("bye"),
        qos: 0,
        retain: false,
    };
    h.gw.handle_local(
        h.now,
        c,
        LocalInput::Connect(LocalConnect {
            client_id: "c1".into(),
            clean_session: true,
            will: Some(will),
            username: Some("ann".into()),
        }),
    );
    h.gw.handle_local(
        h.now,
        c,
        LocalInput::Subscribe {
            pkid: 1,
            filters: vec![("in/ann/c1".into(), 1), ("ann/#".into(), 1)],
        },
    );
    // A denied QoS 1 publish is acknowledged (MQTT 3.1.1 has no refusal)
    // but not routed; the allowed one is.
    for (pkid, topic) in [(2, "other/x"), (3, "ann/x")] {
        h.gw.handle_local(
            h.now,
            c,
            LocalInput::Publish {
                pkid,
                topic: topic.into(),
                payload: b("p"),
                qos: 1,
                retain: false,
            },
        );
    }
    let out = h.drain();
    let actions: Vec<LocalAction> = out
        .iter()
        .filter_map(|o| match o {
            Output::Local { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect();
    assert!(actions.contains(&LocalAction::SubAck {
        pkid: 1,
        granted: vec![Some(1), None]
    }));
    assert!(actions.contains(&LocalAction::Ack { pkid: 2, qos: 1 }));
    assert!(actions.contains(&LocalAction::Ack { pkid: 3, qos: 1 }));
    assert_eq!(h.gw.stats().local_in, 1);
    // ann may write ann/x but not read it (no subscription was granted).
    assert!(!actions.iter().any(|a| matches!(a, LocalAction::Deliver(_))));
    // Its will goes to a topic it may not write: dropped when it would fire.
    h.gw.handle_local(
        h.now,
        c,
        LocalInput::Closed {
            graceful: false,
            unacked: Vec::new(),
            releasing: Vec::new(),
        },
    );
    h.drain();
    assert_eq!(h.gw.stats().wills_published, 0);
    // subscribe ann/#, publish other/x, will.
    assert_eq!(h.gw.stats().drops(DropReason::AclDenied), 3);
}

#[test]
fn no_acl_allows_everything_and_an_empty_acl_nothing() {
    let mut acl_empty = Acl::default();
    assert!(acl_empty.is_empty());
    acl_empty.add_topic(None, Permission::Deny, "x");
    let mut h = Harness::new();
    let a = peer(1);
    h.connect(&a, "d", true);
    let answer = h.subscribe(&a, 1, "anything/#", QoS::AtMostOnce);
    assert!(matches!(
        answer.as_slice(),
        [Packet::SubAck {
            return_code: ReturnCode::Accepted,
            ..
        }]
    ));
    let mut h = Harness::with(EngineConfig {
        acl: Some(Arc::new(acl_empty)),
        ..EngineConfig::default()
    });
    h.connect(&a, "d", true);
    let answer = h.subscribe(&a, 1, "anything/#", QoS::AtMostOnce);
    assert!(matches!(
        answer.as_slice(),
        [Packet::SubAck {
            return_code: ReturnCode::NotSupported,
            ..
        }]
    ));
}
