//! What the broker refuses is isolated: a message it closes the connection
//! on (suspect, alone, quarantined), one over a CONNACK limit (quarantined
//! unsent), one refused by reason code (a dead letter); the rest goes on.

use super::*;
use crate::bridge::machine::BrokerLimits;

fn connack_with(h: &mut Harness, limits: BrokerLimits) {
    h.event(LinkEvent::ConnAck {
        session_present: false,
        limits,
    });
}

fn dead_reasons(h: &Harness) -> Vec<String> {
    h.counters
        .dead_letters
        .lock()
        .map(|d| d.snapshot().into_iter().map(|l| l.reason).collect())
        .unwrap_or_default()
}

#[test]
fn a_message_the_broker_closes_the_connection_on_is_quarantined_after_two_connections() {
    let mut h = Harness::shared(config());
    h.connack(false);
    for p in ["ok1", "poison", "ok2", "ok3"] {
        h.command(publish("t", p, 1));
    }
    assert_eq!(h.published(), ["ok1", "poison", "ok2", "ok3"]);
    h.written(&[1, 2, 3, 4]);
    // The broker completes what came before, then closes on "poison".
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    h.lose();
    h.advance(Duration::from_secs(10));
    h.connack(false);
    assert_eq!(h.published(), ["poison"], "the first suspect goes alone");
    h.written(&[1]);
    // It closes again: "poison" was alone, it is the culprit.
    h.lose();
    assert_eq!(h.gauge(&h.counters.quarantined), 1);
    assert_eq!(dead_reasons(&h).len(), 1);
    h.advance(Duration::from_secs(10));
    h.connack(false);
    // The other suspects are proven one by one, then everything flows.
    assert_eq!(h.published(), ["ok2"]);
    h.written(&[1]);
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert_eq!(h.published(), ["ok3"]);
    h.written(&[2]);
    h.event(LinkEvent::PubAck { pkid: 2, code: 0 });
    h.command(publish("t", "ok4", 1));
    h.command(publish("t", "ok5", 1));
    assert_eq!(
        h.published(),
        ["ok4", "ok5"],
        "no suspects left: the window again"
    );
    h.written(&[3, 4]);
    h.event(LinkEvent::PubAck { pkid: 3, code: 0 });
    h.event(LinkEvent::PubAck { pkid: 4, code: 0 });
    assert_eq!(h.m.pending(), 0);
    assert_eq!(h.gauge(&h.counters.published), 5, "all but the poison");
    assert_eq!(
        h.gauge(&h.counters.connects),
        3,
        "two reconnections for the poison"
    );
}

#[test]
fn a_network_fault_once_costs_no_message() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.command(publish("t", "a", 1));
    h.command(publish("t", "b", 1));
    h.published();
    h.written(&[1, 2]);
    h.lose();
    h.advance(Duration::from_secs(10));
    h.connack(false);
    assert_eq!(h.published(), ["a"]);
    h.written(&[1]);
    h.event(LinkEvent::PubAck { pkid: 1, code: 0 });
    assert_eq!(h.published(), ["b"]);
    h.written(&[2]);
    h.event(LinkEvent::PubAck { pkid: 2, code: 0 });
    // A later fault with new messages out makes new suspects only.
    h.command(publish("t", "c", 1));
    h.published();
    h.written(&[3]);
    h.lose();
    assert_eq!(h.gauge(&h.counters.quarantined), 0);
    assert_eq!(h.m.pending(), 1);
}

#[test]
fn a_connection_that_never_came_up_makes_no_suspect() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.command(publish("t", "a", 1));
    h.published();
    h.written(&[1]);
    h.lose();
    // Failed attempts (no CONNACK) in between are no evidence.
    for _ in 0..3 {
        h.advance(Duration::from_secs(10));
        h.lose();
    }
    h.advance(Duration::from_secs(10));
    h.connack(false);
    assert_eq!(h.published(), ["a"]);
    assert_eq!(h.gauge(&h.counters.quarantined), 0);
}

#[test]
fn a_message_over_the_brokers_maximum_packet_size_is_quarantined_unsent() {
    let mut h = Harness::shared(config());
    connack_with(
        &mut h,
        BrokerLimits {
            max_packet_size: Some(100),
            ..BrokerLimits::default()
        },
    );
    h.command(publish("t", &"x".repeat(200), 1));
    h.command(publish("t", "small", 1));
    assert_eq!(h.published(), ["small"], "the big one is never sent");
    assert_eq!(h.gauge(&h.counters.quarantined), 1);
    let reasons = dead_reasons(&h);
    assert!(
        reasons[0].contains("maximum packet size (100)"),
        "{reasons:?}"
    );
}

#[test]
fn qos_and_retain_the_broker_does_not_support_are_quarantined_unsent() {
    let mut h = Harness::shared(config());
    connack_with(
        &mut h,
        BrokerLimits {
            max_qos: 1,
            retain_available: false,
            ..BrokerLimits::default()
        },
    );
    h.command(publish("t", "q2", 2));
    h.command(UpstreamCommand::Publish {
        topic: "t".into(),
        payload: Bytes::from_static(b"kept"),
        qos: 1,
        retain: true,
        store_id: None,
        from: None,
    });
    h.command(publish("t", "fine", 1));
    assert_eq!(h.published(), ["fine"]);
    assert_eq!(h.gauge(&h.counters.quarantined), 2);
}

#[test]
fn a_refusal_by_reason_code_is_a_dead_letter_and_settles_its_durable_id() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.command(UpstreamCommand::Publish {
        topic: "denied".into(),
        payload: Bytes::from_static(b"p"),
        qos: 1,
        retain: false,
        store_id: Some(42),
        from: None,
    });
    h.command(publish("t", "next", 1));
    assert_eq!(h.published(), ["p", "next"]);
    h.written(&[1, 2]);
    h.event(LinkEvent::PubAck {
        pkid: 1,
        code: 0x87,
    });
    h.event(LinkEvent::PubAck { pkid: 2, code: 0 });
    assert_eq!(h.gauge(&h.counters.quarantined), 1);
    assert_eq!(h.gauge(&h.counters.rejected), 1);
    assert!(dead_reasons(&h)[0].contains("0x87"));
    let settled: Vec<u64> = h
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            BridgeEvent::Settled(ids) => Some(ids),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(settled, [42]);
}

#[test]
fn the_dead_letter_record_is_bounded() {
    let mut h = Harness::shared(config());
    connack_with(
        &mut h,
        BrokerLimits {
            max_qos: 0,
            ..BrokerLimits::default()
        },
    );
    for i in 0..100 {
        h.command(publish("t", &i.to_string(), 1));
    }
    assert_eq!(h.gauge(&h.counters.quarantined), 100);
    assert_eq!(
        dead_reasons(&h).len(),
        crate::bridge::dead_letters::DEAD_LETTERS_KEPT
    );
}
