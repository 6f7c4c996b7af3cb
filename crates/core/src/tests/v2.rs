//! MQTT-SN 2.0 devices (issue 21, first slice; `devices/v2.rs`): each test
//! sends 2.0 datagrams through the codec and asserts on the 2.0 packets the
//! engine answers with, beside 1.2 devices that must not notice.

use sngate_wire::v2::{self, Ack, AliasKind, Delivery, Publish, ReasonCode, Topic};

use super::*;

fn v2_connect(packet_id: u16, client_id: &str, clean_start: bool) -> v2::Packet {
    v2::Packet::Connect(Box::new(v2::Connect {
        clean_start,
        allow_address_change: false,
        allow_server_suggested: false,
        packet_id,
        keep_alive: 60,
        max_packet_size: 0,
        default_awake_messages: None,
        // A session kept after its connection needs an expiry (§3.1.9).
        session_expiry: (!clean_start).then_some(600),
        will: None,
        auth: None,
        client_id: client_id.to_owned(),
    }))
}

fn v2_publish(delivery: Delivery, topic: Topic, payload: &str) -> v2::Packet {
    v2::Packet::Publish(Publish {
        delivery,
        retain: false,
        topic,
        payload: b(payload),
    })
}

/// The 2.0 packets sent to `peer`, in order.
fn v2_to(out: &[Output], peer: &Peer) -> Vec<v2::Packet> {
    out.iter()
        .filter_map(|o| match o {
            Output::TransmitV2 { to, packet } if to == peer => Some(packet.clone()),
            _ => None,
        })
        .collect()
}

/// The (topic, payload, qos) of every upstream publish.
fn published(out: &[Output]) -> Vec<(String, Bytes, u8)> {
    upstream(out)
        .into_iter()
        .filter_map(|c| match c {
            UpstreamCommand::Publish {
                topic,
                payload,
                qos,
                ..
            } => Some((topic, payload, qos)),
            _ => None,
        })
        .collect()
}

impl Harness {
    fn send_v2(&mut self, from: &Peer, packet: v2::Packet) -> Vec<Output> {
        let mut buf = BytesMut::new();
        assert!(
            v2::encode(&packet, &mut buf).is_ok(),
            "test packet must encode"
        );
        self.raw(from, &buf)
    }

    /// Connects a 2.0 device, asserts the CONNACK, returns it.
    fn connect_v2(&mut self, from: &Peer, client_id: &str) -> v2::ConnAck {
        let out = self.send_v2(from, v2_connect(7, client_id, true));
        assert!(
            packets_to(&out, from).is_empty(),
            "no 1.2 packet to a 2.0 device: {out:?}"
        );
        match v2_to(&out, from).as_slice() {
            [v2::Packet::ConnAck(c)] if c.reason == ReasonCode::SUCCESS && c.packet_id == 7 => {
                (**c).clone()
            }
            other => panic!("a 2.0 CONNACK expected, got {other:?}"),
        }
    }
}

fn upstream_cfg() -> EngineConfig {
    EngineConfig {
        upstream: true,
        ..EngineConfig::default()
    }
}

#[test]
fn connect_answers_in_2_0_echoing_the_packet_id() {
    let mut h = Harness::new();
    let dev = peer(21_000);
    let ack = h.connect_v2(&dev, "dev2");
    assert!(!ack.session_present);
    assert_eq!(ack.assigned_client_id, "");
    assert_eq!(h.gw.client_state("dev2"), Some(&ClientState::Active));
}

#[test]
fn an_empty_client_id_gets_an_assigned_one() {
    let mut h = Harness::new();
    let (a, b2) = (peer(21_001), peer(21_002));
    let first = h.connect_v2(&a, "").assigned_client_id;
    let second = h.connect_v2(&b2, "").assigned_client_id;
    assert!(first.starts_with("sngate-") && first.len() <= 36, "{first}");
    assert_ne!(first, second, "an assigned id is not in use [3.2.11-3]");
    assert_eq!(h.gw.client_state(&first), Some(&ClientState::Active));
    assert_eq!(h.gw.client_state(&second), Some(&ClientState::Active));
}

#[test]
fn session_present_when_a_session_is_resumed() {
    let mut h = Harness::new();
    let dev = peer(21_003);
    let out = h.send_v2(&dev, v2_connect(1, "keep", false));
    let got = v2_to(&out, &dev);
    let [v2::Packet::ConnAck(first)] = got.as_slice() else {
        panic!("CONNACK expected: {out:?}");
    };
    assert!(!first.session_present, "no session existed");
    let out = h.send_v2(&dev, v2_connect(2, "keep", false));
    let got = v2_to(&out, &dev);
    let [v2::Packet::ConnAck(again)] = got.as_slice() else {
        panic!("CONNACK expected: {out:?}");
    };
    assert!(again.session_present && again.packet_id == 2, "{again:?}");
}

#[test]
fn connects_the_slice_cannot_serve_are_refused_with_their_reason() {
    let mut h = Harness::new();
    let dev = peer(21_004);
    let refused = |h: &mut Harness, packet: v2::Packet| match v2_to(&h.send_v2(&dev, packet), &dev)
        .as_slice()
    {
        [v2::Packet::ConnAck(c)] => c.reason,
        other => panic!("a refusing CONNACK expected, got {other:?}"),
    };
    let base = |f: &dyn Fn(&mut v2::Connect)| {
        let v2::Packet::Connect(mut c) = v2_connect(3, "x", true) else {
            unreachable!()
        };
        f(&mut c);
        v2::Packet::Connect(c)
    };
    assert_eq!(
        refused(&mut h, base(&|c| c.keep_alive = 0)),
        ReasonCode::PROTOCOL_ERROR
    );
    assert_eq!(
        refused(
            &mut h,
            base(&|c| c.auth = Some(v2::AuthData {
                method: "SCRAM-SHA-1".into(),
                data: Bytes::new()
            }))
        ),
        ReasonCode::BAD_AUTHENTICATION_METHOD
    );
    assert_eq!(
        refused(
            &mut h,
            base(&|c| c.will = Some(v2::Will {
                qos: v2::QoS::AtMostOnce,
                retain: false,
                topic: Topic::SessionAlias(1),
                payload: Bytes::new()
            }))
        ),
        ReasonCode::PROTOCOL_ERROR
    );
    assert_eq!(
        refused(
            &mut h,
            base(&|c| c.will = Some(v2::Will {
                qos: v2::QoS::AtMostOnce,
                retain: false,
                topic: Topic::PredefinedAlias(77),
                payload: Bytes::new()
            }))
        ),
        ReasonCode::TOPIC_NAME_INVALID
    );
    assert_eq!(
        refused(&mut h, base(&|c| c.client_id = "c".repeat(1000))),
        ReasonCode::CLIENT_ID_NOT_VALID
    );
    assert_eq!(
        h.gw.session_count(),
        0,
        "no refused CONNECT makes a session"
    );
    // A 2.0-shaped CONNECT of another version: CONNACK 0x84 [3.1.5-2].
    let out = h.raw(
        &dev,
        &[0x0c, 0x01, 0x01, 0x00, 0x09, 0x03, 0, 60, 0, 0, b'c', b'1'],
    );
    match v2_to(&out, &dev).as_slice() {
        [v2::Packet::ConnAck(c)] => {
            assert_eq!(
                (c.reason, c.packet_id),
                (ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, 9)
            );
        }
        other => panic!("CONNACK 0x84 expected, got {other:?}"),
    }
}

#[test]
fn publish_to_a_full_topic_name_goes_upstream_and_is_acknowledged() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_005);
    h.connect_v2(&dev, "pub2");
    let out = h.send_v2(
        &dev,
        v2_publish(
            Delivery::AtLeastOnce { packet_id: 9 },
            Topic::Name("a/b".into()),
            "hi",
        ),
    );
    assert_eq!(published(&out), vec![("a/b".to_owned(), b("hi"), 1)]);
    // Only the PUBACK: the REGISTER the engine made of the name is internal.
    assert_eq!(
        v2_to(&out, &dev),
        vec![v2::Packet::PubAck(Ack {
            packet_id: 9,
            reason: None
        })]
    );
    assert!(packets_to(&out, &dev).is_empty());
    // QoS 0 by name: upstream, no answer.
    let out = h.send_v2(
        &dev,
        v2_publish(Delivery::AtMostOnce, Topic::Name("a/c".into()), "q0"),
    );
    assert_eq!(published(&out), vec![("a/c".to_owned(), b("q0"), 0)]);
    assert!(v2_to(&out, &dev).is_empty());
}

#[test]
fn register_gives_a_session_alias_to_publish_with() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_006);
    h.connect_v2(&dev, "reg2");
    let out = h.send_v2(
        &dev,
        v2::Packet::Register(v2::Register {
            packet_id: 3,
            alias: None,
            topic_name: "t/x".into(),
        }),
    );
    let alias = match v2_to(&out, &dev).as_slice() {
        [
            v2::Packet::RegAck(v2::RegAck {
                alias_kind: AliasKind::Session,
                packet_id: 3,
                alias: Some(alias),
                reason: Some(ReasonCode::SUCCESS),
            }),
        ] => *alias,
        other => panic!("REGACK expected, got {other:?}"),
    };
    let out = h.send_v2(
        &dev,
        v2_publish(
            Delivery::ExactlyOnce {
                packet_id: 4,
                dup: false,
            },
            Topic::SessionAlias(alias),
            "2",
        ),
    );
    assert_eq!(published(&out), vec![("t/x".to_owned(), b("2"), 2)]);
    assert_eq!(
        v2_to(&out, &dev),
        vec![v2::Packet::PubRec(Ack {
            packet_id: 4,
            reason: None
        })]
    );
    let out = h.send_v2(
        &dev,
        v2::Packet::PubRel(Ack {
            packet_id: 4,
            reason: None,
        }),
    );
    assert_eq!(
        v2_to(&out, &dev),
        vec![v2::Packet::PubComp(Ack {
            packet_id: 4,
            reason: None
        })]
    );
    // An alias never given out: the PUBACK says so.
    let out = h.send_v2(
        &dev,
        v2_publish(
            Delivery::AtLeastOnce { packet_id: 5 },
            Topic::SessionAlias(999),
            "x",
        ),
    );
    assert!(published(&out).is_empty());
    assert_eq!(
        v2_to(&out, &dev),
        vec![v2::Packet::PubAck(Ack {
            packet_id: 5,
            reason: Some(ReasonCode::UNKNOWN_TOPIC_ALIAS)
        })]
    );
}

#[test]
fn pingreq_is_answered_with_its_packet_id_and_keep_alive_supervises() {
    let mut h = Harness::new();
    let dev = peer(21_007);
    // A persistent session, so its state outlives the connection.
    let out = h.send_v2(&dev, v2_connect(1, "ping2", false));
    assert_eq!(v2_to(&out, &dev).len(), 1);
    let out = h.send_v2(&dev, v2::Packet::PingReq { packet_id: 0x55 });
    assert_eq!(
        v2_to(&out, &dev),
        vec![v2::Packet::PingResp {
            packet_id: 0x55,
            messages_remaining: None
        }]
    );
    // Silence past 1.5 × the 60 s keep-alive: the device is lost.
    h.advance(Duration::from_secs(91));
    assert_eq!(h.gw.client_state("ping2"), Some(&ClientState::Lost));
}

#[test]
fn disconnect_is_never_answered() {
    let mut h = Harness::new();
    let dev = peer(21_008);
    let out = h.send_v2(&dev, v2_connect(1, "bye2", false));
    assert_eq!(v2_to(&out, &dev).len(), 1);
    let out = h.send_v2(
        &dev,
        v2::Packet::Disconnect(v2::Disconnect {
            packet_id: None,
            reason: None,
            session_expiry: None,
            reason_string: String::new(),
        }),
    );
    assert!(out.is_empty(), "a 2.0 DISCONNECT gets no answer: {out:?}");
    assert_eq!(h.gw.client_state("bye2"), Some(&ClientState::Disconnected));
}

fn v2_subscribe(packet_id: u16, topic: Topic, max_qos: v2::QoS) -> v2::Packet {
    v2::Packet::Subscribe(v2::Subscribe {
        options: v2::SubscribeOptions {
            no_local: false,
            max_qos,
            retain_as_published: false,
            retain_handling: v2::RetainHandling::SendAtSubscribe,
        },
        packet_id,
        topic,
    })
}

fn from_broker(h: &mut Harness, topic: &str, payload: &str, qos: u8) -> Vec<Output> {
    h.gw.handle_upstream(
        h.now,
        UpstreamMessage {
            topic: topic.into(),
            payload: b(payload),
            qos,
            retain: false,
            filter: None,
        },
    );
    h.drain()
}

#[test]
fn a_wildcard_subscription_delivers_with_register_then_publish() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_020);
    h.connect_v2(&dev, "sub2");
    let out = h.send_v2(
        &dev,
        v2_subscribe(2, Topic::Name("s/+".into()), v2::QoS::AtLeastOnce),
    );
    // A filter with wildcards: no alias, type Predefined [3.8.2.1-2].
    assert_eq!(
        v2_to(&out, &dev),
        vec![v2::Packet::SubAck(v2::SubAck {
            alias_kind: AliasKind::Predefined,
            packet_id: 2,
            alias: None,
            reason: Some(ReasonCode::GRANTED_QOS_1)
        })]
    );
    let out = from_broker(&mut h, "s/a", "m1", 1);
    let (alias, reg_id) = match v2_to(&out, &dev).as_slice() {
        [
            v2::Packet::Register(v2::Register {
                packet_id,
                alias: Some(alias),
                topic_name,
            }),
        ] if topic_name == "s/a" => (*alias, *packet_id),
        other => panic!("REGISTER before the delivery expected, got {other:?}"),
    };
    // The client's REGACK carries no alias [3.5.4-1].
    let out = h.send_v2(
        &dev,
        v2::Packet::RegAck(v2::RegAck {
            alias_kind: AliasKind::Session,
            packet_id: reg_id,
            alias: None,
            reason: None,
        }),
    );
    let pub_id = match v2_to(&out, &dev).as_slice() {
        [
            v2::Packet::Publish(Publish {
                delivery: Delivery::AtLeastOnce { packet_id },
                topic: Topic::SessionAlias(a),
                payload,
                ..
            }),
        ] if *a == alias && &payload[..] == b"m1" => *packet_id,
        other => panic!("PUBLISH by session alias expected, got {other:?}"),
    };
    let out = h.send_v2(
        &dev,
        v2::Packet::PubAck(Ack {
            packet_id: pub_id,
            reason: None,
        }),
    );
    assert!(v2_to(&out, &dev).is_empty());
    // The next message on that topic goes straight out by its alias.
    let out = from_broker(&mut h, "s/a", "m2", 0);
    assert!(matches!(
        v2_to(&out, &dev).as_slice(),
        [v2::Packet::Publish(Publish { delivery: Delivery::AtMostOnce, topic: Topic::SessionAlias(a), .. })] if *a == alias
    ));
}

#[test]
fn subscribing_to_one_topic_returns_its_session_alias() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_021);
    h.connect_v2(&dev, "one2");
    let out = h.send_v2(
        &dev,
        v2_subscribe(3, Topic::Name("a/b".into()), v2::QoS::ExactlyOnce),
    );
    let alias = match v2_to(&out, &dev).as_slice() {
        [
            v2::Packet::SubAck(v2::SubAck {
                alias_kind: AliasKind::Session,
                packet_id: 3,
                alias: Some(alias),
                reason: Some(ReasonCode::GRANTED_QOS_2),
            }),
        ] => *alias,
        other => panic!("SUBACK with a session alias expected, got {other:?}"),
    };
    // Delivery uses that alias without a REGISTER [3.8.4-1].
    let out = from_broker(&mut h, "a/b", "x", 0);
    assert!(
        matches!(
            v2_to(&out, &dev).as_slice(),
            [v2::Packet::Publish(Publish { topic: Topic::SessionAlias(a), .. })] if *a == alias
        ),
        "{out:?}"
    );
    let out = h.send_v2(
        &dev,
        v2::Packet::Unsubscribe(v2::Unsubscribe {
            packet_id: 4,
            topic: Topic::SessionAlias(alias),
        }),
    );
    assert_eq!(
        v2_to(&out, &dev),
        vec![v2::Packet::UnsubAck(Ack {
            packet_id: 4,
            reason: None
        })]
    );
    assert!(v2_to(&from_broker(&mut h, "a/b", "y", 0), &dev).is_empty());
}

#[test]
fn a_delivery_over_the_devices_maximum_packet_size_is_dropped_as_if_delivered() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_022);
    let v2::Packet::Connect(mut c) = v2_connect(1, "small2", true) else {
        unreachable!()
    };
    c.max_packet_size = 20;
    let out = h.send_v2(&dev, v2::Packet::Connect(c));
    assert_eq!(v2_to(&out, &dev).len(), 1);
    h.send_v2(
        &dev,
        v2_subscribe(2, Topic::Name("t".into()), v2::QoS::AtLeastOnce),
    );
    // 30 bytes of payload cannot fit in 20: not sent, nothing waits for it.
    let out = from_broker(&mut h, "t", &"x".repeat(30), 1);
    assert!(v2_to(&out, &dev).is_empty(), "{out:?}");
    assert_eq!(h.gw.stats().drops(DropReason::TooLarge), 1);
    let out = from_broker(&mut h, "t", "fits", 1);
    assert!(
        matches!(
            v2_to(&out, &dev).as_slice(),
            [v2::Packet::Publish(Publish { payload, .. })] if &payload[..] == b"fits"
        ),
        "{out:?}"
    );
}

#[test]
fn a_1_2_device_publishes_to_a_2_0_device_and_back() {
    let mut h = Harness::new();
    let (old, new) = (peer(21_023), peer(21_024));
    h.connect_v2(&new, "new2");
    h.connect(&old, "old12", true);
    h.send_v2(
        &new,
        v2_subscribe(1, Topic::Name("x/#".into()), v2::QoS::AtMostOnce),
    );
    h.subscribe(&old, 1, "y/#", QoS::AtMostOnce);
    let id = h.register(&old, 2, "x/1");
    let out = h.send(
        &old,
        publish(QoS::AtMostOnce, TopicRef::Id(id), 0, "12->20"),
    );
    assert!(
        matches!(v2_to(&out, &new).as_slice(), [v2::Packet::Register(r)] if r.topic_name == "x/1"),
        "{out:?}"
    );
    let out = h.send_v2(
        &new,
        v2_publish(Delivery::AtMostOnce, Topic::Name("y/2".into()), "20->12"),
    );
    assert!(
        matches!(packets_to(&out, &old).as_slice(), [Packet::Register { topic_name, .. }] if topic_name == "y/2"),
        "{out:?}"
    );
}

fn sleep_req(packet_id: u16, duration: u32) -> v2::Packet {
    v2::Packet::SleepReq {
        retain_aliases: true,
        packet_id,
        duration,
    }
}

fn sleep_resp(packet_id: u16, duration: Option<u32>, reason: ReasonCode) -> v2::Packet {
    v2::Packet::SleepResp {
        packet_id,
        duration,
        reason: Some(reason),
    }
}

fn ping_resp(packet_id: u16, remaining: Option<u8>) -> v2::Packet {
    v2::Packet::PingResp {
        packet_id,
        messages_remaining: remaining,
    }
}

#[test]
fn sleepreq_puts_the_device_to_sleep_under_the_sleep_timer() {
    let mut h = Harness::new();
    let dev = peer(21_009);
    // A kept session, so its end is visible after the device is lost.
    let connect = connect_expiring("sleep2", Some(3600), false);
    assert_eq!(v2_to(&h.send_v2(&dev, connect), &dev).len(), 1);
    let out = h.send_v2(&dev, sleep_req(6, 600));
    assert_eq!(
        v2_to(&out, &dev),
        vec![sleep_resp(6, None, ReasonCode::SUCCESS)]
    );
    assert!(
        packets_to(&out, &dev).is_empty(),
        "no 1.2 DISCONNECT: {out:?}"
    );
    assert_eq!(h.gw.client_state("sleep2"), Some(&ClientState::Asleep));
    // The 60 s keep-alive no longer applies; 1.5 × the sleep duration does.
    h.advance(Duration::from_secs(600));
    assert_eq!(h.gw.client_state("sleep2"), Some(&ClientState::Asleep));
    // A SLEEPREQ while asleep restarts the timer [3.15.5-7].
    let out = h.send_v2(&dev, sleep_req(7, 600));
    assert_eq!(
        v2_to(&out, &dev),
        vec![sleep_resp(7, None, ReasonCode::SUCCESS)]
    );
    h.advance(Duration::from_secs(899));
    assert_eq!(h.gw.client_state("sleep2"), Some(&ClientState::Asleep));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.gw.client_state("sleep2"), Some(&ClientState::Lost));
}

#[test]
fn a_sleep_of_0_is_a_protocol_error_and_a_long_one_is_granted_as_65535_s() {
    let mut h = Harness::new();
    let dev = peer(21_010);
    h.connect_v2(&dev, "nap2");
    let out = h.send_v2(&dev, sleep_req(2, 0));
    assert_eq!(
        v2_to(&out, &dev),
        vec![sleep_resp(2, None, ReasonCode::PROTOCOL_ERROR)]
    );
    assert_eq!(h.gw.client_state("nap2"), Some(&ClientState::Active));

    // Server-suggested values allowed: the SLEEPRESP says what was granted.
    let other = peer(21_011);
    let mut connect = connect_expiring("long2", None, true);
    if let v2::Packet::Connect(c) = &mut connect {
        c.packet_id = 7;
    }
    let out = h.send_v2(&other, connect);
    assert_eq!(v2_to(&out, &other).len(), 1);
    let out = h.send_v2(&other, sleep_req(3, 100_000));
    assert_eq!(
        v2_to(&out, &other),
        vec![sleep_resp(3, Some(65_535), ReasonCode::SUCCESS)]
    );
    // Not allowed: granted the same, silently [3.16.2.1-3].
    let out = h.send_v2(&dev, sleep_req(4, 100_000));
    assert_eq!(
        v2_to(&out, &dev),
        vec![sleep_resp(4, None, ReasonCode::SUCCESS)]
    );
}

/// The PUBLISH to `dev` in `out`: (packet id, alias, payload).
fn delivered(out: &[Output], dev: &Peer) -> Vec<(u16, u16, Bytes)> {
    v2_to(out, dev)
        .into_iter()
        .filter_map(|p| match p {
            v2::Packet::Publish(Publish {
                delivery: Delivery::AtLeastOnce { packet_id },
                topic: Topic::SessionAlias(alias),
                payload,
                ..
            }) => Some((packet_id, alias, payload)),
            _ => None,
        })
        .collect()
}

#[test]
fn pingreq_wakes_a_sleeper_for_its_default_awake_messages_then_pingresp_says_what_remains() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_012);
    let mut connect = v2_connect(7, "dam2", false);
    if let v2::Packet::Connect(c) = &mut connect {
        c.default_awake_messages = Some(2);
    }
    assert_eq!(v2_to(&h.send_v2(&dev, connect), &dev).len(), 1);
    let out = h.send_v2(
        &dev,
        v2_subscribe(2, Topic::Name("z/t".into()), v2::QoS::AtLeastOnce),
    );
    let alias = match v2_to(&out, &dev).as_slice() {
        [v2::Packet::SubAck(v2::SubAck { alias: Some(a), .. })] => *a,
        other => panic!("SUBACK with an alias expected, got {other:?}"),
    };
    // Nothing buffered: the wake ends at once, nothing remains [4.14.2-7].
    h.send_v2(&dev, sleep_req(3, 300));
    let out = h.send_v2(&dev, v2::Packet::PingReq { packet_id: 0x40 });
    assert_eq!(v2_to(&out, &dev), vec![ping_resp(0x40, Some(0))]);

    // Three messages while asleep: buffered, nothing sent (not even WAKEUP).
    for m in ["m1", "m2", "m3"] {
        let out = from_broker(&mut h, "z/t", m, 1);
        assert!(v2_to(&out, &dev).is_empty(), "{out:?}");
    }
    assert_eq!(h.gw.client_state("dam2"), Some(&ClientState::Asleep));

    // Wake: at most two (its Default Awake Messages), one at a time, each
    // acknowledged, then PINGRESP echoing the PINGREQ with one remaining.
    let mut out = h.send_v2(&dev, v2::Packet::PingReq { packet_id: 0x41 });
    let mut got = Vec::new();
    for _ in 0..2 {
        let [(packet_id, a, ref payload)] = delivered(&out, &dev)[..] else {
            panic!("one PUBLISH at a time expected, got {out:?}");
        };
        assert_eq!(a, alias);
        got.push(payload.clone());
        out = h.send_v2(
            &dev,
            v2::Packet::PubAck(Ack {
                packet_id,
                reason: None,
            }),
        );
    }
    assert_eq!(got, vec![b("m1"), b("m2")]);
    assert_eq!(v2_to(&out, &dev), vec![ping_resp(0x41, Some(1))]);
    assert_eq!(h.gw.client_state("dam2"), Some(&ClientState::Asleep));

    // The next wake collects the last one.
    let out = h.send_v2(&dev, v2::Packet::PingReq { packet_id: 0x42 });
    let [(packet_id, _, ref payload)] = delivered(&out, &dev)[..] else {
        panic!("the third message expected, got {out:?}");
    };
    assert_eq!(payload, &b("m3"));
    let out = h.send_v2(
        &dev,
        v2::Packet::PubAck(Ack {
            packet_id,
            reason: None,
        }),
    );
    assert_eq!(v2_to(&out, &dev), vec![ping_resp(0x42, Some(0))]);

    // CONNECT makes it active again: messages go straight out.
    assert_eq!(
        v2_to(&h.send_v2(&dev, v2_connect(8, "dam2", false)), &dev).len(),
        1
    );
    assert_eq!(h.gw.client_state("dam2"), Some(&ClientState::Active));
}

#[test]
fn an_awake_pingreq_while_active_is_a_plain_ping() {
    let mut h = Harness::new();
    let dev = peer(21_013);
    h.connect_v2(&dev, "act2");
    let out = h.send_v2(&dev, v2::Packet::PingReq { packet_id: 9 });
    assert_eq!(v2_to(&out, &dev), vec![ping_resp(9, None)]);
}

#[test]
fn a_2_0_packet_without_a_virtual_connection_gets_disconnect_0xf4() {
    let mut h = Harness::new();
    let stranger = peer(21_010);
    // 04 0c 000b: a 2.0 PINGREQ, which no 1.2 packet can be.
    let out = h.raw(&stranger, &[0x04, 0x0c, 0x00, 0x0b]);
    match v2_to(&out, &stranger).as_slice() {
        [v2::Packet::Disconnect(d)] => {
            assert_eq!(d.reason, Some(ReasonCode::NO_VIRTUAL_CONNECTION));
        }
        other => panic!("DISCONNECT 0xF4 expected, got {other:?}"),
    }
    assert!(packets_to(&out, &stranger).is_empty());
}

#[test]
fn pubwos_from_anyone_goes_upstream_at_qos_0() {
    let mut h = Harness::with(upstream_cfg());
    let anyone = peer(21_011);
    let out = h.send_v2(
        &anyone,
        v2::Packet::PubWos(v2::PubWos {
            retain: false,
            topic: Topic::Name("free/t".into()),
            payload: b("21.5"),
        }),
    );
    assert_eq!(published(&out), vec![("free/t".to_owned(), b("21.5"), 0)]);
    assert!(v2_to(&out, &anyone).is_empty() && packets_to(&out, &anyone).is_empty());
}

#[test]
fn a_malformed_2_0_datagram_ends_the_virtual_connection() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_012);
    let out = h.send_v2(&dev, v2_connect(1, "mal2", false));
    assert_eq!(v2_to(&out, &dev).len(), 1);
    let before = h.gw.stats().drops(DropReason::Malformed);
    // A reserved PUBLISH flag bit: DISCONNECT 0x81, the device is lost
    // (§4.12.1; its will would be published).
    let out = h.raw(&dev, &[0x07, 0x03, 0x04, 0x00, 0x05, b'h', b'i']);
    match v2_to(&out, &dev).as_slice() {
        [v2::Packet::Disconnect(d)] => assert_eq!(d.reason, Some(ReasonCode::MALFORMED_PACKET)),
        other => panic!("DISCONNECT 0x81 expected, got {other:?}"),
    }
    assert_eq!(h.gw.client_state("mal2"), Some(&ClientState::Lost));
    assert_eq!(h.gw.stats().drops(DropReason::Malformed), before + 1);
    // No virtual connection any more: a truncated PUBLISH is only 2.0 junk.
    let out = h.raw(&dev, &[0x0c, 0x03, 0x23, 0x00]);
    assert!(v2_to(&out, &dev).is_empty() && packets_to(&out, &dev).is_empty());
    // It connects again and publishes.
    let out = h.send_v2(&dev, v2_connect(2, "mal2", false));
    assert_eq!(v2_to(&out, &dev).len(), 1);
    let out = h.send_v2(
        &dev,
        v2_publish(
            Delivery::AtLeastOnce { packet_id: 1 },
            Topic::Name("ok".into()),
            "1",
        ),
    );
    assert_eq!(published(&out).len(), 1);
    assert_eq!(v2_to(&out, &dev).len(), 1);
}

#[test]
fn a_1_2_device_beside_a_2_0_one_is_unchanged() {
    let mut h = Harness::with(upstream_cfg());
    let (old, new) = (peer(21_013), peer(21_014));
    h.connect_v2(&new, "new2");
    h.connect(&old, "old12", true);
    let id = h.register(&old, 1, "a/b");
    let out = h.send(&old, publish(QoS::AtLeastOnce, TopicRef::Id(id), 2, "x"));
    assert_eq!(
        packets_to(&out, &old),
        vec![Packet::PubAck {
            topic_id: id,
            msg_id: 2,
            return_code: ReturnCode::Accepted
        }]
    );
    assert!(v2_to(&out, &old).is_empty());
    // The 1.2 PINGREQ of the old device still gets a 1.2 PINGRESP.
    let out = h.send(&old, Packet::PingReq { client_id: None });
    assert_eq!(packets_to(&out, &old), vec![Packet::PingResp]);
}

#[test]
fn a_2_0_connect_from_a_1_2_address_starts_a_2_0_session() {
    let mut h = Harness::new();
    let dev = peer(21_015);
    h.connect(&dev, "switch", true);
    h.connect_v2(&dev, "switch");
    let out = h.send_v2(&dev, v2::Packet::PingReq { packet_id: 3 });
    assert_eq!(v2_to(&out, &dev).len(), 1, "{out:?}");
    // And back to 1.2: a 1.2 CONNECT makes the session 1.2 again.
    h.connect(&dev, "switch", true);
    let out = h.send(&dev, Packet::PingReq { client_id: None });
    assert_eq!(packets_to(&out, &dev), vec![Packet::PingResp]);
}

#[test]
fn a_packet_over_the_devices_maximum_packet_size_is_not_sent() {
    let mut h = Harness::new();
    let dev = peer(21_016);
    let v2::Packet::Connect(mut c) = v2_connect(4, "", true) else {
        unreachable!()
    };
    // A CONNACK with a 23-character assigned id is 30 bytes.
    c.max_packet_size = 10;
    let out = h.send_v2(&dev, v2::Packet::Connect(c));
    assert!(v2_to(&out, &dev).is_empty(), "{out:?}");
    assert_eq!(h.gw.stats().drops(DropReason::TooLarge), 1);
    assert_eq!(h.gw.session_count(), 1, "dropped as if delivered [3.1.7-3]");
}

fn connect_with_will(packet_id: u16, client_id: &str) -> v2::Packet {
    let v2::Packet::Connect(mut c) = v2_connect(packet_id, client_id, true) else {
        unreachable!()
    };
    c.will = Some(v2::Will {
        qos: v2::QoS::AtLeastOnce,
        retain: false,
        topic: Topic::Name("will/t".into()),
        payload: b("gone"),
    });
    v2::Packet::Connect(c)
}

#[test]
fn the_will_in_connect_is_published_when_the_device_is_lost() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_030);
    let out = h.send_v2(&dev, connect_with_will(5, "will2"));
    // Only the CONNACK: the engine's will requests are internal.
    match v2_to(&out, &dev).as_slice() {
        [v2::Packet::ConnAck(c)] => assert_eq!((c.packet_id, c.reason), (5, ReasonCode::SUCCESS)),
        other => panic!("CONNACK expected, got {other:?}"),
    }
    assert!(packets_to(&out, &dev).is_empty(), "{out:?}");
    assert_eq!(h.gw.client_state("will2"), Some(&ClientState::Active));
    let out = h.advance(Duration::from_secs(91));
    assert_eq!(published(&out), vec![("will/t".to_owned(), b("gone"), 1)]);
}

#[test]
fn disconnect_0x04_publishes_the_will_and_0x00_discards_it() {
    let mut h = Harness::with(upstream_cfg());
    let (a, c) = (peer(21_031), peer(21_032));
    h.send_v2(&a, connect_with_will(1, "w04"));
    h.send_v2(&c, connect_with_will(1, "w00"));
    let bye = |reason| {
        v2::Packet::Disconnect(v2::Disconnect {
            packet_id: None,
            reason: Some(reason),
            session_expiry: None,
            reason_string: String::new(),
        })
    };
    let out = h.send_v2(&a, bye(ReasonCode::DISCONNECT_WITH_WILL));
    assert_eq!(published(&out), vec![("will/t".to_owned(), b("gone"), 1)]);
    assert!(v2_to(&out, &a).is_empty(), "never answered");
    let out = h.send_v2(&c, bye(ReasonCode::SUCCESS));
    assert!(published(&out).is_empty() && v2_to(&out, &c).is_empty());
    // Nor later: the will was discarded.
    assert!(published(&h.advance(Duration::from_secs(200))).is_empty());
}

fn connect_expiring(client_id: &str, sei: Option<u32>, suggest: bool) -> v2::Packet {
    let v2::Packet::Connect(mut c) = v2_connect(1, client_id, true) else {
        unreachable!()
    };
    c.session_expiry = sei;
    c.allow_server_suggested = suggest;
    v2::Packet::Connect(c)
}

fn normal_disconnect() -> v2::Packet {
    v2::Packet::Disconnect(v2::Disconnect {
        packet_id: None,
        reason: None,
        session_expiry: None,
        reason_string: String::new(),
    })
}

#[test]
fn the_session_expiry_interval_decides_how_long_a_session_outlives_its_connection() {
    let mut h = Harness::new();
    let (a, c) = (peer(21_040), peer(21_041));
    // Absent = 0: the session ends with the virtual connection.
    h.send_v2(&a, connect_expiring("sei0", None, false));
    h.send_v2(&a, normal_disconnect());
    assert_eq!(h.gw.client_state("sei0"), None);
    // 120 s, with Clean Start 1: kept after DISCONNECT, gone after 120 s.
    h.send_v2(&c, connect_expiring("sei120", Some(120), false));
    h.send_v2(&c, normal_disconnect());
    assert_eq!(
        h.gw.client_state("sei120"),
        Some(&ClientState::Disconnected)
    );
    h.advance(Duration::from_secs(119));
    assert!(h.gw.client_state("sei120").is_some());
    h.advance(Duration::from_secs(2));
    assert_eq!(h.gw.client_state("sei120"), None);
}

#[test]
fn the_gateways_bound_on_session_expiry_is_reported_only_when_allowed() {
    let mut h = Harness::with(EngineConfig {
        session_expiry: Some(Duration::from_secs(3600)),
        ..EngineConfig::default()
    });
    let connack = |h: &mut Harness, dev: &Peer, packet| match v2_to(&h.send_v2(dev, packet), dev)
        .as_slice()
    {
        [v2::Packet::ConnAck(c)] => c.session_expiry,
        other => panic!("CONNACK expected, got {other:?}"),
    };
    // Asked for "never", allowed a server value: told 3600 [3.1.2.7-2].
    assert_eq!(
        connack(
            &mut h,
            &peer(21_042),
            connect_expiring("never", Some(u32::MAX), true)
        ),
        Some(3600)
    );
    // Not allowed: no Session Expiry field; the bound applies all the same.
    assert_eq!(
        connack(
            &mut h,
            &peer(21_043),
            connect_expiring("quiet", Some(u32::MAX), false)
        ),
        None
    );
    // Within the bound: nothing to report.
    assert_eq!(
        connack(
            &mut h,
            &peer(21_044),
            connect_expiring("short", Some(60), true)
        ),
        None
    );
}

#[test]
fn a_refused_2_0_connect_leaves_the_addresses_1_2_session_alone() {
    let mut h = Harness::with(EngineConfig {
        max_clients: 1,
        ..EngineConfig::default()
    });
    let dev = peer(21_050);
    h.connect(&dev, "first12", true);
    // The only place is taken by a connected client: 0x89 Server busy.
    let out = h.send_v2(&dev, v2_connect(9, "other", true));
    match v2_to(&out, &dev).as_slice() {
        [v2::Packet::ConnAck(c)] => assert_eq!(c.reason, ReasonCode::SERVER_BUSY),
        other => panic!("a refusing CONNACK expected, got {other:?}"),
    }
    // The 1.2 session at that address still speaks 1.2.
    let out = h.send(&dev, Packet::PingReq { client_id: None });
    assert_eq!(packets_to(&out, &dev), vec![Packet::PingResp]);
}

#[test]
fn a_second_request_while_one_is_outstanding_is_disconnected_with_0x93() {
    let mut h = Harness::with(upstream_cfg());
    let dev = peer(21_060);
    let out = h.send_v2(&dev, v2_connect(1, "flow2", false));
    assert_eq!(v2_to(&out, &dev).len(), 1);
    // No upstream room: the QoS 1 PUBLISH waits, unacknowledged.
    h.gw.set_upstream_room(h.now, 0);
    h.drain();
    let first = v2_publish(
        Delivery::AtLeastOnce { packet_id: 1 },
        Topic::Name("f".into()),
        "1",
    );
    assert!(v2_to(&h.send_v2(&dev, first.clone()), &dev).is_empty());
    // Its retransmission is no violation.
    assert!(v2_to(&h.send_v2(&dev, first), &dev).is_empty());
    assert_eq!(h.gw.client_state("flow2"), Some(&ClientState::Active));
    // A new request with another packet id is [4.9-1].
    let out = h.send_v2(&dev, v2::Packet::PingReq { packet_id: 2 });
    match v2_to(&out, &dev).as_slice() {
        [v2::Packet::Disconnect(d)] => {
            assert_eq!(d.reason, Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
        }
        other => panic!("DISCONNECT 0x93 expected, got {other:?}"),
    }
    assert_eq!(h.gw.client_state("flow2"), Some(&ClientState::Lost));
}

#[test]
fn a_2_0_publisher_subscribed_to_its_own_topic_gets_the_puback_before_the_echo() {
    // Paho's habit (docs/protocol.md) holds for 2.0 devices too: their
    // answers are captured while their packet is handled, and the
    // acknowledgement goes ahead of what the message caused.
    let mut h = Harness::new();
    let dev = peer(21_030);
    h.connect_v2(&dev, "echo2");
    let out = h.send_v2(
        &dev,
        v2_subscribe(1, Topic::Name("e/#".into()), v2::QoS::AtLeastOnce),
    );
    assert!(
        matches!(v2_to(&out, &dev).as_slice(), [v2::Packet::SubAck(_)]),
        "{out:?}"
    );
    let out = h.send_v2(
        &dev,
        v2_publish(
            Delivery::AtLeastOnce { packet_id: 4 },
            Topic::Name("e/1".into()),
            "me",
        ),
    );
    let got = v2_to(&out, &dev);
    assert!(
        matches!(
            got.first(),
            Some(v2::Packet::PubAck(Ack {
                packet_id: 4,
                reason: None
            }))
        ),
        "the PUBACK first: {got:?}"
    );
    assert!(
        got.iter()
            .skip(1)
            .any(|p| matches!(p, v2::Packet::Publish(_) | v2::Packet::Register(_))),
        "then the message back to its publisher: {got:?}"
    );
}

#[test]
fn the_operators_view_names_each_devices_protocol_version() {
    let mut h = Harness::new();
    let (new, old) = (peer(21_031), peer(21_032));
    h.connect_v2(&new, "view2");
    h.connect(&old, "view12", true);
    let version = |id: &str| h.gw.device(id, h.now).map(|d| d.protocol_version);
    assert_eq!(version("view2"), Some("2.0"));
    assert_eq!(version("view12"), Some("1.2"));
}

fn subscribe_with(packet_id: u16, filter: &str, rh: v2::RetainHandling) -> v2::Packet {
    v2::Packet::Subscribe(v2::Subscribe {
        options: v2::SubscribeOptions {
            no_local: false,
            max_qos: v2::QoS::AtMostOnce,
            retain_as_published: false,
            retain_handling: rh,
        },
        packet_id,
        topic: Topic::Name(filter.into()),
    })
}

/// The retained messages (payloads) among the packets sent to `dev`,
/// after its SUBACK.
fn retained_after_suback(out: &[Output], dev: &Peer) -> Vec<Bytes> {
    let packets = v2_to(out, dev);
    assert!(
        matches!(packets.first(), Some(v2::Packet::SubAck(a)) if a.reason.is_some_and(|r| r.0 < 0x80)),
        "a SUBACK first: {packets:?}"
    );
    packets
        .into_iter()
        .filter_map(|p| match p {
            v2::Packet::Publish(Publish {
                retain: true,
                payload,
                ..
            }) => Some(payload),
            _ => None,
        })
        .collect()
}

#[test]
fn retain_handling_sends_retained_messages_always_only_when_new_or_never() {
    use v2::RetainHandling::{DoNotSend, SendAtSubscribe, SendIfNew};
    let mut h = Harness::new();
    let publisher = peer(21_030);
    h.connect_v2(&publisher, "rpub2");
    h.send_v2(
        &publisher,
        v2::Packet::Publish(Publish {
            delivery: Delivery::AtMostOnce,
            retain: true,
            topic: Topic::Name("r/t".into()),
            payload: b("kept"),
        }),
    );
    let dev = peer(21_031);
    h.connect_v2(&dev, "rsub2");
    // 2: never, even for a new subscription.
    let out = h.send_v2(&dev, subscribe_with(1, "r/#", DoNotSend));
    assert!(retained_after_suback(&out, &dev).is_empty(), "{out:?}");
    // 1: for a new subscription only.
    let out = h.send_v2(&dev, subscribe_with(2, "r/t", SendIfNew));
    assert_eq!(retained_after_suback(&out, &dev), vec![b("kept")]);
    let out = h.send_v2(&dev, subscribe_with(3, "r/t", SendIfNew));
    assert!(retained_after_suback(&out, &dev).is_empty(), "{out:?}");
    // 0: at every SUBSCRIBE, the existing one included.
    let out = h.send_v2(&dev, subscribe_with(4, "r/#", SendAtSubscribe));
    assert_eq!(retained_after_suback(&out, &dev), vec![b("kept")]);
    // A 1.2 device is unchanged: retained messages at every SUBSCRIBE.
    let old = peer(21_032);
    h.connect(&old, "rold12", true);
    for msg_id in [1, 2] {
        let out = h.send(
            &old,
            Packet::Subscribe {
                dup: false,
                qos: QoS::AtMostOnce,
                msg_id,
                topic: SubscribeTopic::Name("r/t".into()),
            },
        );
        let retained = packets_to(&out, &old)
            .into_iter()
            .filter(|p| matches!(p, Packet::Publish { retain: true, .. }))
            .count();
        assert_eq!(retained, 1, "{out:?}");
    }
}

fn subscribe_no_local(packet_id: u16, filter: &str, no_local: bool) -> v2::Packet {
    v2::Packet::Subscribe(v2::Subscribe {
        options: v2::SubscribeOptions {
            no_local,
            max_qos: v2::QoS::AtMostOnce,
            retain_as_published: false,
            retain_handling: v2::RetainHandling::SendAtSubscribe,
        },
        packet_id,
        topic: Topic::Name(filter.into()),
    })
}

/// The payloads of the PUBLISHes sent to `dev`.
fn payloads_to(out: &[Output], dev: &Peer) -> Vec<Bytes> {
    v2_to(out, dev)
        .into_iter()
        .filter_map(|p| match p {
            v2::Packet::Publish(Publish { payload, .. }) => Some(payload),
            _ => None,
        })
        .collect()
}

#[test]
fn no_local_keeps_a_devices_own_publications_from_it_and_only_from_it() {
    let mut h = Harness::new();
    let (me, other) = (peer(21_040), peer(21_041));
    h.connect_v2(&me, "nl2");
    h.connect_v2(&other, "nlother2");
    h.send_v2(&me, subscribe_no_local(1, "n/#", true));
    h.send_v2(&other, subscribe_no_local(1, "n/#", false));
    let publish =
        |payload: &str| v2_publish(Delivery::AtMostOnce, Topic::Name("n/a".into()), payload);
    // Wildcard matches deliver after a REGISTER; count what arrives.
    let out = h.send_v2(&me, publish("one"));
    assert!(payloads_to(&out, &me).is_empty(), "No Local: {out:?}");
    assert!(
        v2_to(&out, &other)
            .iter()
            .any(|p| matches!(p, v2::Packet::Register(r) if r.topic_name == "n/a")),
        "the other subscriber still gets it: {out:?}"
    );
    // A second subscription of its own without No Local matches too: the
    // device gets its publication again (one copy).
    let out = h.send_v2(&me, subscribe_no_local(2, "n/a", false));
    assert!(
        matches!(v2_to(&out, &me).as_slice(), [v2::Packet::SubAck(_)]),
        "{out:?}"
    );
    let out = h.send_v2(&me, publish("two"));
    assert_eq!(payloads_to(&out, &me), vec![b("two")]);
    // A publication from someone else reaches a No Local subscriber.
    let out = h.send_v2(&me, subscribe_no_local(3, "n/a", true));
    assert!(
        matches!(v2_to(&out, &me).as_slice(), [v2::Packet::SubAck(_)]),
        "{out:?}"
    );
    assert!(payloads_to(&h.send_v2(&me, publish("three")), &me).is_empty());
    let out = h.send_v2(&other, publish("four"));
    assert_eq!(payloads_to(&out, &me), vec![b("four")]);
}

#[test]
fn retain_as_published_keeps_the_flag_of_a_live_retained_message() {
    let mut h = Harness::with(upstream_cfg());
    let (publisher, rap, plain) = (peer(21_050), peer(21_051), peer(21_052));
    h.connect_v2(&publisher, "rappub2");
    for (dev, id, on) in [(&rap, "rap2", true), (&plain, "norap2", false)] {
        h.connect_v2(dev, id);
        let out = h.send_v2(
            dev,
            v2::Packet::Subscribe(v2::Subscribe {
                options: v2::SubscribeOptions {
                    no_local: false,
                    max_qos: v2::QoS::AtMostOnce,
                    retain_as_published: on,
                    retain_handling: v2::RetainHandling::SendAtSubscribe,
                },
                packet_id: 1,
                topic: Topic::Name("ra/t".into()),
            }),
        );
        assert!(
            matches!(v2_to(&out, dev).as_slice(), [v2::Packet::SubAck(_)]),
            "{out:?}"
        );
    }
    let flags = |out: &[Output], dev: &Peer| -> Vec<bool> {
        v2_to(out, dev)
            .into_iter()
            .filter_map(|p| match p {
                v2::Packet::Publish(Publish { retain, .. }) => Some(retain),
                _ => None,
            })
            .collect()
    };
    // From a device, published retained.
    let out = h.send_v2(
        &publisher,
        v2::Packet::Publish(Publish {
            delivery: Delivery::AtMostOnce,
            retain: true,
            topic: Topic::Name("ra/t".into()),
            payload: b("dev"),
        }),
    );
    assert_eq!(
        (flags(&out, &rap), flags(&out, &plain)),
        (vec![true], vec![false])
    );
    // From the broker, live and published retained (the bridge subscribes
    // with Retain As Published upstream).
    h.gw.handle_upstream(
        h.now,
        UpstreamMessage {
            topic: "ra/t".into(),
            payload: b("up"),
            qos: 0,
            retain: true,
            filter: None,
        },
    );
    let out = h.drain();
    assert_eq!(
        (flags(&out, &rap), flags(&out, &plain)),
        (vec![true], vec![false])
    );
    // Not published retained: never flagged.
    let out = h.send_v2(
        &publisher,
        v2_publish(Delivery::AtMostOnce, Topic::Name("ra/t".into()), "x"),
    );
    assert_eq!(
        (flags(&out, &rap), flags(&out, &plain)),
        (vec![false], vec![false])
    );
}
