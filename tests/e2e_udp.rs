//! End to end over real UDP sockets: each test starts the real gateway
//! in-process on an ephemeral port (`driver::start`), drives it with devices
//! from `sngate::client` (and raw sockets where the wire order itself is the
//! point), and stops it. No upstream broker: messages are routed inside the
//! gateway. Every wait is bounded by a timeout; nothing sleeps a fixed time to
//! let something happen.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    RawDevice, WAIT, connect, connect_with, expect_message, options, predefined, start_gateway,
    start_gateway_with,
};
use sngate::client::{
    ClientError, Will, publish_minus_one, publish_minus_one_named, search_gateway,
};
use sngate::proto::{self, Packet, QoS, ReturnCode, SubscribeTopic, TopicRef};

fn name(topic: &str) -> SubscribeTopic {
    SubscribeTopic::Name(topic.to_owned())
}

#[tokio::test]
async fn uplink_and_downlink_at_qos_0_1_2() {
    let gw = start_gateway().await;
    let mut a = connect(gw.addr, "dev-a").await;
    let mut b = connect(gw.addr, "dev-b").await;
    let sub_a = a
        .subscribe(name("qos/to-a"), QoS::ExactlyOnce)
        .await
        .unwrap();
    assert_eq!(sub_a.qos, QoS::ExactlyOnce);
    assert_ne!(sub_a.topic_id, 0, "a plain name gets a topic id");
    b.subscribe(name("qos/to-b"), QoS::ExactlyOnce)
        .await
        .unwrap();

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("b to a at {qos:?}");
        b.publish_named("qos/to-a", payload.clone(), qos, false)
            .await
            .unwrap();
        let m = expect_message(&mut a).await;
        assert_eq!(m.topic, "qos/to-a");
        assert_eq!(m.topic_ref, TopicRef::Id(sub_a.topic_id));
        assert_eq!(m.payload, payload.as_bytes());
        assert_eq!(m.qos, qos);
        assert!(!m.retain);

        let payload = format!("a to b at {qos:?}");
        a.publish_named("qos/to-b", payload.clone(), qos, false)
            .await
            .unwrap();
        let m = expect_message(&mut b).await;
        assert_eq!(m.topic, "qos/to-b");
        assert_eq!(m.payload, payload.as_bytes());
        assert_eq!(m.qos, qos);
    }

    // Delivery QoS is min(subscription, message).
    let granted = a
        .subscribe(name("qos/capped"), QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(granted.qos, QoS::AtLeastOnce);
    b.publish_named("qos/capped", "x", QoS::ExactlyOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut a).await;
    assert_eq!((m.topic.as_str(), m.qos), ("qos/capped", QoS::AtLeastOnce));

    // After UNSUBSCRIBE nothing more arrives on that topic: the next message
    // `a` gets is the one on the topic it still holds.
    a.unsubscribe(name("qos/to-a")).await.unwrap();
    b.publish_named("qos/to-a", "unwanted", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    b.publish_named("qos/capped", "wanted", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, "wanted");

    // A PUBLISH on an id the gateway never gave out is refused with 0x02.
    let refused = b
        .publish(TopicRef::Id(4321), "?", QoS::AtLeastOnce, false)
        .await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Rejected(ReturnCode::InvalidTopicId))
        ),
        "{refused:?}"
    );
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn wildcard_subscription_registers_before_publishing() {
    let gw = start_gateway().await;
    let raw = RawDevice::new(gw.addr).await;
    raw.connect("wild-raw", true, 60).await;
    raw.send(&Packet::Subscribe {
        dup: false,
        qos: QoS::AtLeastOnce,
        msg_id: 1,
        topic: name("sensors/+/temp"),
    })
    .await;
    match raw.recv().await {
        Packet::SubAck {
            qos: QoS::AtLeastOnce,
            topic_id: 0,
            msg_id: 1,
            return_code: ReturnCode::Accepted,
        } => {}
        other => panic!("expected SUBACK with topic id 0 for a wildcard, got {other:?}"),
    }

    let mut publisher = connect(gw.addr, "wild-pub").await;
    publisher
        .publish_named("sensors/kitchen/temp", "21.5", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let (topic_id, reg_msg_id) = match raw.recv().await {
        Packet::Register {
            topic_id,
            msg_id,
            topic_name,
        } => {
            assert_eq!(topic_name, "sensors/kitchen/temp");
            assert!(
                topic_id != 0 && topic_id != 0xFFFF,
                "reserved id {topic_id}"
            );
            (topic_id, msg_id)
        }
        other => panic!("expected REGISTER before the first PUBLISH, got {other:?}"),
    };
    // The gateway waits for REGACK before it publishes with the new id.
    let early =
        tokio::time::timeout(Duration::from_millis(300), raw.socket.recv(&mut [0; 64])).await;
    assert!(early.is_err(), "the gateway sent something before REGACK");
    raw.send(&Packet::RegAck {
        topic_id,
        msg_id: reg_msg_id,
        return_code: ReturnCode::Accepted,
    })
    .await;
    match raw.recv().await {
        Packet::Publish {
            qos: QoS::AtLeastOnce,
            topic: TopicRef::Id(id),
            msg_id,
            payload,
            ..
        } => {
            assert_eq!(id, topic_id);
            assert_eq!(payload, "21.5");
            raw.send(&Packet::PubAck {
                topic_id,
                msg_id,
                return_code: ReturnCode::Accepted,
            })
            .await;
        }
        other => panic!("expected the PUBLISH after REGACK, got {other:?}"),
    }
    // The id is known now: the next message on that topic needs no REGISTER.
    publisher
        .publish_named("sensors/kitchen/temp", "22.0", QoS::AtMostOnce, false)
        .await
        .unwrap();
    match raw.recv().await {
        Packet::Publish {
            topic: TopicRef::Id(id),
            payload,
            ..
        } => assert_eq!((id, &payload[..]), (topic_id, &b"22.0"[..])),
        other => panic!("expected a PUBLISH, got {other:?}"),
    }

    // The same through the client library: the message carries the name.
    let mut sub = connect(gw.addr, "wild-client").await;
    let granted = sub
        .subscribe(name("sensors/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(granted.topic_id, 0);
    publisher
        .publish_named("sensors/hall/humidity", "40", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut sub).await;
    assert_eq!(m.topic, "sensors/hall/humidity");
    assert_eq!(m.payload, "40");
    gw.stop().await;
}

#[tokio::test]
async fn predefined_topics_and_short_names() {
    let gw = start_gateway_with(|c| {
        c.predefined_topics = vec![predefined(10, "factory/line1/temp")];
    })
    .await;
    let mut by_id = connect_with(
        gw.addr,
        options("pre-sub").predefined(10, "factory/line1/temp"),
    )
    .await;
    let granted = by_id
        .subscribe(SubscribeTopic::Predefined(10), QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(granted.topic_id, 10);
    // A subscriber by name or filter may not hold the pre-defined table: the
    // gateway uses the pre-defined id only for clients that subscribed by it,
    // and REGISTERs a normal id for the others (docs/protocol.md).
    let mut by_name = connect(gw.addr, "name-sub").await;
    by_name
        .subscribe(name("factory/+/temp"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut publisher = connect(gw.addr, "pre-pub").await;

    // Published by pre-defined id: both subscribers get it.
    publisher
        .publish(TopicRef::Predefined(10), "7", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut by_id).await;
    assert_eq!(m.topic_ref, TopicRef::Predefined(10));
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("factory/line1/temp", &b"7"[..])
    );
    let m = expect_message(&mut by_name).await;
    assert!(matches!(m.topic_ref, TopicRef::Id(id) if id != 0), "{m:?}");
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("factory/line1/temp", &b"7"[..])
    );

    // Published by name (a registered id): delivered on the pre-defined id.
    let id = publisher.register("factory/line1/temp").await.unwrap();
    assert_ne!(id, 0);
    publisher
        .publish(TopicRef::Id(id), "8", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut by_id).await;
    assert_eq!(m.topic_ref, TopicRef::Predefined(10));
    assert_eq!(m.payload, "8");
    assert_eq!(expect_message(&mut by_name).await.payload, "8");

    // Unknown pre-defined ids are refused with "invalid topic id".
    let refused = publisher
        .publish(TopicRef::Predefined(99), "?", QoS::AtLeastOnce, false)
        .await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Rejected(ReturnCode::InvalidTopicId))
        ),
        "{refused:?}"
    );
    let refused = by_id
        .subscribe(SubscribeTopic::Predefined(99), QoS::AtMostOnce)
        .await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Rejected(ReturnCode::InvalidTopicId))
        ),
        "{refused:?}"
    );

    // Short topic names, both ways.
    let granted = by_name
        .subscribe(SubscribeTopic::Short(*b"ab"), QoS::ExactlyOnce)
        .await
        .unwrap();
    assert_eq!(granted.topic_id, 0, "SUBACK for a short name carries id 0");
    publisher
        .publish(TopicRef::Short(*b"ab"), "short", QoS::ExactlyOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut by_name).await;
    assert_eq!(m.topic_ref, TopicRef::Short(*b"ab"));
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("ab", &b"short"[..]));
    assert_eq!(m.qos, QoS::ExactlyOnce);
    // publish_named picks the short form for a two-character name.
    by_id
        .publish_named("ab", "via name", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut by_name).await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("ab", &b"via name"[..]));
    gw.stop().await;
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let gw = start_gateway().await;
    let mut publisher = connect(gw.addr, "ret-pub").await;
    publisher
        .publish_named("status/door", "open", QoS::AtLeastOnce, true)
        .await
        .unwrap();

    let mut late = connect(gw.addr, "ret-late").await;
    late.subscribe(name("status/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let m = expect_message(&mut late).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("status/door", &b"open"[..])
    );
    assert!(
        m.retain,
        "a retained message sent on subscribe has the retain flag"
    );
    assert_eq!(m.qos, QoS::AtLeastOnce);

    // A live message to an existing subscriber is not flagged retained.
    publisher
        .publish_named("status/door", "closed", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let m = expect_message(&mut late).await;
    assert_eq!(m.payload, "closed");
    assert!(!m.retain);

    // A subscriber by exact name gets the latest retained value.
    let mut later = connect(gw.addr, "ret-later").await;
    later
        .subscribe(name("status/door"), QoS::AtMostOnce)
        .await
        .unwrap();
    let m = expect_message(&mut later).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("status/door", &b"closed"[..])
    );
    assert!(m.retain);
    assert_eq!(m.qos, QoS::AtMostOnce);
    gw.stop().await;
}

#[tokio::test]
async fn will_is_published_when_a_device_goes_silent() {
    let gw = start_gateway().await;
    let mut watcher = connect(gw.addr, "will-watch").await;
    watcher
        .subscribe(name("devices/+/status"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let will = Will {
        topic: "devices/w/status".to_owned(),
        payload: "offline".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    let mut device = connect_with(gw.addr, options("dev-w").keep_alive(1).will(will)).await;
    // Automatic pings keep the device alive past its 1.5 s tolerance.
    let early = watcher.recv_message(Duration::from_millis(2500)).await;
    assert!(
        early.is_err(),
        "will published while the device pinged: {early:?}"
    );
    device.ping().await.unwrap();

    drop(device); // silent: no DISCONNECT, no more pings
    let m = watcher
        .recv_message(Duration::from_secs(5))
        .await
        .expect("the will within a few seconds of the keep-alive expiring");
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("devices/w/status", &b"offline"[..])
    );
    assert_eq!(m.qos, QoS::AtLeastOnce);
    gw.stop().await;
}

#[tokio::test]
async fn session_takeover_by_client_id() {
    let gw = start_gateway().await;
    let mut old = connect_with(gw.addr, options("dev-t").clean_session(false)).await;
    old.subscribe(name("takeover/cmd"), QoS::AtLeastOnce)
        .await
        .unwrap();

    // Same client id, new socket: the session (and its subscription) follows.
    let mut new = connect_with(gw.addr, options("dev-t").clean_session(false)).await;
    assert_ne!(new.local_addr().unwrap(), old.local_addr().unwrap());
    let mut publisher = connect(gw.addr, "takeover-pub").await;
    publisher
        .publish_named("takeover/cmd", "go", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut new).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("takeover/cmd", &b"go"[..])
    );

    // The old socket is nobody now: its PUBLISH is answered with DISCONNECT.
    let answer = old
        .publish(TopicRef::Short(*b"tk"), "stale", QoS::AtLeastOnce, false)
        .await;
    assert!(
        matches!(answer, Err(ClientError::Disconnected)),
        "{answer:?}"
    );
    assert!(old.try_message().is_none());
    gw.stop().await;
}

#[tokio::test]
async fn clean_session_false_resumes_with_queued_messages_in_order() {
    let gw = start_gateway().await;
    let mut device = connect_with(gw.addr, options("dev-r").clean_session(false)).await;
    device
        .subscribe(name("resume/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    device.disconnect().await.unwrap();

    let mut publisher = connect(gw.addr, "resume-pub").await;
    let mut expected = Vec::new();
    for i in 0..6 {
        let topic = if i % 2 == 0 { "resume/a" } else { "resume/b" };
        let payload = format!("m{i}");
        publisher
            .publish_named(topic, payload.clone(), QoS::AtLeastOnce, false)
            .await
            .unwrap();
        expected.push((topic.to_owned(), payload));
    }

    // Back from a new socket, packet by packet: CONNACK, then for each topic a
    // REGISTER before the first PUBLISH that uses it, messages in order.
    let raw = RawDevice::new(gw.addr).await;
    raw.connect("dev-r", false, 60).await;
    let mut ids: HashMap<u16, String> = HashMap::new();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        match raw.recv().await {
            Packet::Register {
                topic_id,
                msg_id,
                topic_name,
            } => {
                ids.insert(topic_id, topic_name);
                raw.send(&Packet::RegAck {
                    topic_id,
                    msg_id,
                    return_code: ReturnCode::Accepted,
                })
                .await;
            }
            Packet::Publish {
                qos,
                topic: TopicRef::Id(id),
                msg_id,
                payload,
                ..
            } => {
                assert_eq!(qos, QoS::AtLeastOnce);
                let topic = ids
                    .get(&id)
                    .unwrap_or_else(|| panic!("PUBLISH on id {id} before its REGISTER"));
                received.push((
                    topic.clone(),
                    String::from_utf8_lossy(&payload).into_owned(),
                ));
                raw.send(&Packet::PubAck {
                    topic_id: id,
                    msg_id,
                    return_code: ReturnCode::Accepted,
                })
                .await;
            }
            other => panic!("unexpected {other:?} while resuming"),
        }
    }
    assert_eq!(received, expected);
    gw.stop().await;
}

#[tokio::test]
async fn searchgw_is_answered_with_gwinfo() {
    let gw = start_gateway_with(|c| c.gateway.gateway_id = 42).await;
    let info = search_gateway(gw.addr, 1, WAIT).await.unwrap();
    assert_eq!(info.gw_id, 42);
    assert_eq!(info.addr, gw.addr);
    assert!(info.gw_addr.is_empty());

    // On the wire: GWINFO from a gateway is exactly 3 bytes.
    let raw = RawDevice::new(gw.addr).await;
    raw.send(&Packet::SearchGw { radius: 0 }).await;
    assert_eq!(raw.recv_bytes().await, [3, 0x02, 42]);
    gw.stop().await;
}

#[tokio::test]
async fn qos_minus_one_from_an_unconnected_socket() {
    let gw = start_gateway_with(|c| c.predefined_topics = vec![predefined(20, "minus/pre")]).await;
    let mut sub = connect_with(gw.addr, options("m1-sub").predefined(20, "minus/pre")).await;
    sub.subscribe(name("#"), QoS::AtLeastOnce).await.unwrap();

    publish_minus_one(gw.addr, TopicRef::Predefined(20), "by id", false)
        .await
        .unwrap();
    publish_minus_one(gw.addr, TopicRef::Short(*b"mo"), "by short name", false)
        .await
        .unwrap();
    publish_minus_one_named(gw.addr, "minus/named", "by name", false)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = expect_message(&mut sub).await;
        assert_eq!(m.qos, QoS::AtMostOnce, "QoS -1 travels on as QoS 0");
        got.push((m.topic, String::from_utf8_lossy(&m.payload).into_owned()));
    }
    got.sort();
    let want = [
        ("minus/named", "by name"),
        ("minus/pre", "by id"),
        ("mo", "by short name"),
    ]
    .map(|(t, p)| (t.to_owned(), p.to_owned()));
    assert_eq!(got, want);

    let refused = publish_minus_one(gw.addr, TopicRef::Id(5), "x", false).await;
    assert!(
        matches!(refused, Err(ClientError::InvalidArgument(_))),
        "{refused:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn payloads_of_300_and_1000_bytes_both_ways() {
    let gw = start_gateway().await;
    let mut a = connect(gw.addr, "big-a").await;
    let mut b = connect(gw.addr, "big-b").await;
    a.subscribe(name("big/a"), QoS::ExactlyOnce).await.unwrap();
    b.subscribe(name("big/b"), QoS::ExactlyOnce).await.unwrap();
    let raw = RawDevice::new(gw.addr).await;
    raw.connect("big-raw", true, 60).await;
    raw.send(&Packet::Subscribe {
        dup: false,
        qos: QoS::AtMostOnce,
        msg_id: 1,
        topic: name("big/a"),
    })
    .await;
    assert!(matches!(
        raw.recv().await,
        Packet::SubAck {
            return_code: ReturnCode::Accepted,
            ..
        }
    ));

    for size in [300usize, 1000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            b.publish_named("big/a", payload.clone(), qos, false)
                .await
                .unwrap();
            let m = expect_message(&mut a).await;
            assert_eq!(m.payload.len(), size);
            assert_eq!(m.payload, payload);

            a.publish_named("big/b", payload.clone(), qos, false)
                .await
                .unwrap();
            let m = expect_message(&mut b).await;
            assert_eq!(m.payload, payload);

            // The raw subscriber sees the 3-byte Length form (trap T-8).
            let bytes = raw.recv_bytes().await;
            assert_eq!(bytes[0], 0x01, "long Length form expected");
            assert_eq!(
                usize::from(u16::from_be_bytes([bytes[1], bytes[2]])),
                bytes.len()
            );
            match proto::decode(&bytes).unwrap() {
                Packet::Publish { payload: got, .. } => assert_eq!(got, payload),
                other => panic!("expected a PUBLISH, got {other:?}"),
            }
        }
    }
    gw.stop().await;
}

/// A small deterministic generator, for reproducible "random" datagrams.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u8
    }
}

#[tokio::test]
async fn malformed_datagrams_then_a_healthy_client() {
    let gw = start_gateway().await;
    let garbage = RawDevice::new(gw.addr).await;
    let mut datagrams: Vec<Vec<u8>> = vec![
        vec![],                                               // empty
        vec![0x00],                                           // Length 0
        vec![0x00, 0x04, 0x00],                               // Length 0 with a body
        vec![0x01],                                           // long form cut short
        vec![0x01, 0x00, 0x02, 0x04],                         // long form declaring < 4
        vec![0x01, 0x03, 0xE8, 0x0C, 0x00],                   // long form declaring 1000
        vec![0x05, 0x04, 0x04],                               // declares 5, has 3
        vec![0x03, 0x0C, 0x00, 0x00],                         // declares 3, has 4
        vec![0x02, 0x0C],                                     // PUBLISH with no fields
        vec![0x03, 0x03, 0x00],                               // reserved type 0x03
        vec![0x02, 0x11],                                     // reserved type 0x11
        vec![0x02, 0x19],                                     // reserved type 0x19
        vec![0x02, 0x1E],                                     // reserved type 0x1E
        vec![0x02, 0xFF],                                     // reserved type 0xFF
        vec![0x04, 0xFE, 0x00, 0x02], // encapsulation with a bad inner message
        vec![0x07, 0x0C, 0x23, 0x00, 0x01, 0x00, 0x01], // PUBLISH, reserved id type
        vec![0x08, 0x04, 0x04, 0x01, 0x00, 0x3C, 0xFF, 0xFE], // CONNECT, id not UTF-8
    ];
    let mut rng = Lcg(0x5eed);
    for _ in 0..300 {
        let len = usize::from(rng.next() % 48);
        datagrams.push((0..len).map(|_| rng.next()).collect());
    }
    for datagram in &datagrams {
        garbage.send_bytes(datagram).await;
    }

    // The gateway is still there and serves a healthy client normally.
    let mut healthy = connect(gw.addr, "healthy").await;
    healthy
        .subscribe(name("ok/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    healthy
        .publish_named("ok/after-garbage", "fine", QoS::ExactlyOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut healthy).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("ok/after-garbage", &b"fine"[..])
    );
    healthy.ping().await.unwrap();
    // And the socket that sent the garbage can connect too.
    let again = RawDevice::new(gw.addr).await;
    again.connect("after-garbage", true, 60).await;
    gw.stop().await;
}

#[tokio::test]
async fn sleeping_device_collects_buffered_messages_on_wake() {
    let gw = start_gateway().await;
    let mut sleeper = connect_with(gw.addr, options("dev-s").clean_session(false)).await;
    sleeper
        .subscribe(name("home/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    sleeper.sleep(30).await.unwrap();

    let mut publisher = connect(gw.addr, "sleep-pub").await;
    let sent = [
        ("home/a", "1", QoS::AtLeastOnce),
        ("home/b", "2", QoS::AtMostOnce),
        ("home/a", "3", QoS::ExactlyOnce),
        ("home/c", "4", QoS::AtLeastOnce),
    ];
    for (topic, payload, qos) in sent {
        publisher
            .publish_named(topic, payload, qos, false)
            .await
            .unwrap();
    }

    // PINGREQ with the client id: REGISTERs and PUBLISHes, then PINGRESP.
    let got = sleeper.wake_and_collect().await.unwrap();
    let got: Vec<(String, String, QoS)> = got
        .into_iter()
        .map(|m| {
            (
                m.topic,
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.qos,
            )
        })
        .collect();
    let want: Vec<(String, String, QoS)> = sent
        .iter()
        .map(|(t, p, q)| ((*t).to_owned(), (*p).to_owned(), (*q).min(QoS::AtLeastOnce)))
        .collect();
    assert_eq!(got, want);

    // The buffer was emptied: a second wake gets PINGRESP and nothing else.
    assert!(sleeper.wake_and_collect().await.unwrap().is_empty());

    // Back to sleep in between; a CONNECT instead of PINGREQ still gets the
    // buffered message.
    publisher
        .publish_named("home/d", "5", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    sleeper.reconnect().await.unwrap();
    let m = expect_message(&mut sleeper).await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("home/d", &b"5"[..]));
    sleeper.ping().await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn device_answering_invalid_topic_id_gets_one_reregister() {
    let gw = start_gateway().await;
    let raw = RawDevice::new(gw.addr).await;
    raw.connect("forgetful", true, 60).await;
    raw.send(&Packet::Subscribe {
        dup: false,
        qos: QoS::AtLeastOnce,
        msg_id: 1,
        topic: name("forget/me"),
    })
    .await;
    let topic_id = match raw.recv().await {
        Packet::SubAck {
            topic_id,
            return_code: ReturnCode::Accepted,
            ..
        } => topic_id,
        other => panic!("expected SUBACK, got {other:?}"),
    };
    let mut publisher = connect(gw.addr, "forget-pub").await;
    publisher
        .publish_named("forget/me", "once", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let msg_id = match raw.recv().await {
        Packet::Publish {
            topic: TopicRef::Id(id),
            msg_id,
            ..
        } => {
            assert_eq!(id, topic_id);
            msg_id
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    // The device lost its id table (trap T-3): PUBACK "invalid topic id".
    raw.send(&Packet::PubAck {
        topic_id,
        msg_id,
        return_code: ReturnCode::InvalidTopicId,
    })
    .await;
    let (new_id, reg_msg_id) = match raw.recv().await {
        Packet::Register {
            topic_id,
            msg_id,
            topic_name,
        } => {
            assert_eq!(topic_name, "forget/me");
            (topic_id, msg_id)
        }
        other => panic!("expected a REGISTER after PUBACK 0x02, got {other:?}"),
    };
    raw.send(&Packet::RegAck {
        topic_id: new_id,
        msg_id: reg_msg_id,
        return_code: ReturnCode::Accepted,
    })
    .await;
    match raw.recv().await {
        Packet::Publish {
            topic: TopicRef::Id(id),
            msg_id,
            payload,
            ..
        } => {
            assert_eq!((id, &payload[..]), (new_id, &b"once"[..]));
            raw.send(&Packet::PubAck {
                topic_id: id,
                msg_id,
                return_code: ReturnCode::Accepted,
            })
            .await;
        }
        other => panic!("expected the message again after REGACK, got {other:?}"),
    }
    // Delivery goes on normally afterwards.
    publisher
        .publish_named("forget/me", "twice", QoS::AtMostOnce, false)
        .await
        .unwrap();
    match raw.recv().await {
        Packet::Publish { payload, .. } => assert_eq!(payload, "twice"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_reused_source_port_does_not_hijack_a_session() {
    let gw = start_gateway().await;
    let shared = RawDevice::new(gw.addr).await;
    // Device X on the socket, with a persistent subscription.
    shared.connect("dev-x", false, 60).await;
    shared
        .send(&Packet::Subscribe {
            dup: false,
            qos: QoS::AtLeastOnce,
            msg_id: 1,
            topic: name("hijack/x"),
        })
        .await;
    assert!(matches!(shared.recv().await, Packet::SubAck { .. }));
    // Device Y now uses the same address (a reboot with a new id, or NAT).
    shared.connect("dev-y", true, 60).await;
    shared
        .send(&Packet::Subscribe {
            dup: false,
            qos: QoS::AtMostOnce,
            msg_id: 2,
            topic: name("hijack/y"),
        })
        .await;
    assert!(matches!(shared.recv().await, Packet::SubAck { .. }));

    let mut publisher = connect(gw.addr, "hijack-pub").await;
    publisher
        .publish_named("hijack/x", "for x", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    publisher
        .publish_named("hijack/y", "for y", QoS::AtMostOnce, false)
        .await
        .unwrap();
    // The socket now belongs to Y: the first thing it gets is Y's message.
    match shared.recv().await {
        Packet::Publish { payload, .. } => assert_eq!(payload, "for y"),
        other => panic!("expected Y's PUBLISH, got {other:?}"),
    }
    // X's message waited in X's session for X to come back.
    let mut x = connect_with(gw.addr, options("dev-x").clean_session(false)).await;
    let m = expect_message(&mut x).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("hijack/x", &b"for x"[..])
    );
    gw.stop().await;
}

/// IPv4 and IPv6 listeners side by side (IPv6 sockets are IPv6-only, so both
/// can be bound): a device on each family, routed to each other.
#[tokio::test]
async fn ipv4_and_ipv6_devices_talk_through_one_gateway() {
    let mut config = common::test_config();
    config.udp.listen = vec![
        "127.0.0.1:0".parse().expect("v4 address"),
        "[::1]:0".parse().expect("v6 address"),
    ];
    let running = sngate::driver::start(config).await.expect("gateway starts");
    let (v4, v6) = match running.udp_addrs() {
        [v4, v6] => (*v4, *v6),
        other => panic!("two listeners expected, got {other:?}"),
    };
    assert!(v4.is_ipv4() && v6.is_ipv6());

    let mut on_v6 = common::connect(v6, "on-v6").await;
    on_v6
        .subscribe(SubscribeTopic::Name("fam/#".into()), QoS::AtLeastOnce)
        .await
        .expect("subscribe over IPv6");
    let mut on_v4 = common::connect(v4, "on-v4").await;
    let id = on_v4
        .register("fam/from-v4")
        .await
        .expect("register over IPv4");
    on_v4
        .publish(TopicRef::Id(id), "hello v6", QoS::AtLeastOnce, false)
        .await
        .expect("publish over IPv4");
    let m = common::expect_message(&mut on_v6).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("fam/from-v4", &b"hello v6"[..])
    );
    running.shutdown().await.expect("clean shutdown");
}
