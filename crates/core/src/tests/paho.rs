//! Habits clients bring from Paho (issue 20): the acknowledgement of a
//! device's PUBLISH goes before that message's delivery back to the same
//! device (the `pub0sub1` sample waits for its PUBACK first), and a PUBLISH
//! from a sleeping client is taken (the GatewayTester sends one; the Paho
//! gateway accepts it) while the client stays asleep.

use super::*;

/// Index of the first packet matching `pred` in `packets`.
fn position(packets: &[Packet], pred: impl Fn(&Packet) -> bool) -> usize {
    packets
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("not found in {packets:?}"))
}

#[test]
fn the_puback_goes_before_the_echo_to_a_subscribed_publisher() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut h = Harness::new();
        let p = peer(1);
        h.connect(&p, "pub0sub1", true);
        h.subscribe(&p, 1, "MQTTSN/test", QoS::AtLeastOnce);
        let id = h.register(&p, 2, "MQTTSN/test");
        let out = h.send(&p, publish(qos, TopicRef::Id(id), 3, "hello"));
        let to_device = packets_to(&out, &p);
        let ack = position(&to_device, |pk| {
            matches!(
                pk,
                Packet::PubAck { msg_id: 3, .. } | Packet::PubRec { msg_id: 3 }
            )
        });
        let echo = position(
            &to_device,
            |pk| matches!(pk, Packet::Publish { payload, .. } if payload == &b("hello")),
        );
        assert!(ack < echo, "{qos:?}: the echo went first: {to_device:?}");
    }
}

#[test]
fn the_puback_goes_first_when_the_topic_must_be_registered_for_the_echo() {
    // Subscribed by a wildcard: the delivery needs a REGISTER first, which
    // must not overtake the PUBACK either.
    let mut h = Harness::new();
    let p = peer(1);
    h.connect(&p, "d", true);
    h.subscribe(&p, 1, "a/#", QoS::AtLeastOnce);
    let out = h.send(
        &p,
        publish(QoS::AtLeastOnce, TopicRef::Short(*b"a/"), 4, "x"),
    );
    let to_device = packets_to(&out, &p);
    assert!(
        matches!(
            to_device.first(),
            Some(Packet::PubAck {
                msg_id: 4,
                return_code: ReturnCode::Accepted,
                ..
            })
        ),
        "{to_device:?}"
    );
}

#[test]
fn a_publish_from_a_sleeping_client_is_accepted_and_it_stays_asleep() {
    let mut h = Harness::new();
    let (sensor, listener) = (peer(1), peer(2));
    h.connect(&listener, "listener", true);
    h.subscribe(&listener, 1, "gt/temp", QoS::AtMostOnce);
    h.connect(&sensor, "gateway-tester", false);
    let id = h.register(&sensor, 1, "gt/temp");
    h.send(&sensor, Packet::Disconnect { duration: Some(60) });
    assert_eq!(
        h.gw.client_state("gateway-tester"),
        Some(&ClientState::Asleep)
    );
    let out = h.send(
        &sensor,
        publish(QoS::AtLeastOnce, TopicRef::Id(id), 7, "21.5"),
    );
    assert_eq!(
        packets_to(&out, &sensor),
        vec![Packet::PubAck {
            topic_id: id,
            msg_id: 7,
            return_code: ReturnCode::Accepted
        }]
    );
    assert!(
        packets_to(&out, &listener)
            .iter()
            .any(|pk| matches!(pk, Packet::Publish { payload, .. } if payload == &b("21.5"))),
        "{out:?}"
    );
    assert_eq!(
        h.gw.client_state("gateway-tester"),
        Some(&ClientState::Asleep)
    );
    assert_eq!(h.gw.stats().drops(DropReason::OutOfState), 0);
}
