//! Upstream subscriptions (sent again on every CONNACK, one identifier per
//! filter) and what comes down: duplicate copies, echoes, the rules.

use super::*;
use crate::config::{BridgeRule, Direction};

fn subscribe(filter: &str, qos: u8) -> UpstreamCommand {
    UpstreamCommand::Subscribe {
        filter: filter.into(),
        qos,
    }
}

fn subscribes(sent: Vec<Request>) -> Vec<(String, u8, usize)> {
    sent.into_iter()
        .filter_map(|r| match r {
            Request::Subscribe(f, q, id) => Some((f, q, id)),
            _ => None,
        })
        .collect()
}

fn messages(events: &[BridgeEvent]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            BridgeEvent::Message(m) => Some((m.topic.clone(), m.filter.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn every_connack_subscribes_everything_again_with_the_same_identifiers() {
    let mut h = Harness::shared(config());
    h.command(subscribe("b", 0));
    h.command(subscribe("a/#", 1));
    assert!(h.take_sent().is_empty(), "sent at the CONNACK");
    h.connack(false);
    let first = subscribes(h.take_sent());
    assert_eq!(
        first
            .iter()
            .map(|(f, q, _)| (f.as_str(), *q))
            .collect::<Vec<_>>(),
        [("a/#", 1), ("b", 0)],
        "one SUBSCRIBE per filter"
    );
    assert_ne!(first[0].2, first[1].2, "each its own identifier");
    h.event(LinkEvent::SubAck { refused: 0 });
    h.event(LinkEvent::SubAck { refused: 0 });
    h.lose();
    h.connack(true);
    assert_eq!(
        subscribes(h.take_sent()),
        first,
        "again, although the broker kept the session"
    );
}

#[test]
fn a_subscription_changes_only_when_its_qos_does_and_an_unsubscribed_filter_stays_gone() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.command(subscribe("a", 1));
    let first = subscribes(h.take_sent());
    assert_eq!(first.len(), 1);
    h.command(subscribe("a", 1));
    assert!(
        h.take_sent().is_empty(),
        "the same subscription is not sent again"
    );
    h.command(subscribe("a", 2));
    assert_eq!(subscribes(h.take_sent()), [("a".to_owned(), 2, first[0].2)]);
    h.command(UpstreamCommand::Unsubscribe { filter: "a".into() });
    assert_eq!(h.take_sent(), [Request::Unsubscribe("a".into())]);
    h.lose();
    h.connack(false);
    assert!(h.take_sent().is_empty(), "not subscribed again");
}

#[test]
fn with_rules_the_in_rules_are_the_subscriptions() {
    let cfg = UpstreamConfig {
        rules: vec![BridgeRule {
            direction: Direction::In,
            topic: "cmd/#".into(),
            qos: 1,
            remote_prefix: "site/".into(),
            ..BridgeRule::default()
        }],
        ..config()
    };
    let mut h = Harness::shared(cfg);
    h.command(subscribe("other", 0));
    h.connack(false);
    let sent = subscribes(h.take_sent());
    assert_eq!(
        sent.iter()
            .map(|(f, q, _)| (f.as_str(), *q))
            .collect::<Vec<_>>(),
        [("site/cmd/#", 1)]
    );
    h.event(incoming("site/cmd/x", "1", &[]));
    assert_eq!(messages(&h.take_events()), [("cmd/x".to_owned(), None)]);
    h.event(incoming("elsewhere", "1", &[]));
    assert_eq!(h.gauge(&h.counters.not_bridged_in), 1);
}

/// A connected shared session subscribed to `a/#` and `a/b`: their
/// identifiers, in that order.
fn overlapping() -> (Harness, Vec<usize>) {
    let mut h = Harness::shared(config());
    h.command(subscribe("a/#", 0));
    h.command(subscribe("a/b", 0));
    h.connack(false);
    let ids = subscribes(h.take_sent()).into_iter().map(|s| s.2).collect();
    (h, ids)
}

#[test]
fn one_copy_passes_for_overlapping_confirmed_subscriptions() {
    let (mut h, ids) = overlapping();
    // Before any SUBACK nothing is confirmed: every copy passes.
    h.event(incoming("a/b", "1", &[ids[1]]));
    assert_eq!(messages(&h.take_events()).len(), 1);
    h.event(LinkEvent::SubAck { refused: 0 });
    h.event(LinkEvent::SubAck { refused: 0 });
    // The broker sends one copy per subscription: the representative ("a/#",
    // the smallest confirmed match) passes, the other is a duplicate.
    h.event(incoming("a/b", "2", &[ids[0]]));
    h.event(incoming("a/b", "2", &[ids[1]]));
    assert_eq!(messages(&h.take_events()).len(), 1);
    assert_eq!(h.gauge(&h.counters.duplicates_suppressed), 1);
    // One copy with both identifiers passes once.
    h.event(incoming("a/b", "3", &[ids[0], ids[1]]));
    assert_eq!(messages(&h.take_events()).len(), 1);
}

#[test]
fn a_refused_filter_is_never_the_representative() {
    let (mut h, ids) = overlapping();
    h.event(LinkEvent::SubAck { refused: 1 });
    h.event(LinkEvent::SubAck { refused: 0 });
    h.event(incoming("a/b", "1", &[ids[1]]));
    assert_eq!(
        messages(&h.take_events()).len(),
        1,
        "the copy the broker does send passes"
    );
}

#[test]
fn a_retained_copy_with_one_identifier_goes_to_that_filters_subscribers() {
    let mut h = Harness::shared(config());
    h.command(subscribe("a/+", 0));
    h.connack(false);
    let ids: Vec<usize> = subscribes(h.take_sent()).into_iter().map(|s| s.2).collect();
    h.event(LinkEvent::Publish {
        pkid: 1,
        topic: Some("a/b".into()),
        payload: Bytes::from_static(b"r"),
        qos: 0,
        retain: true,
        subscription_ids: vec![ids[0]],
        origin: None,
    });
    assert_eq!(
        messages(&h.take_events()),
        [("a/b".to_owned(), Some("a/+".to_owned()))]
    );
}

#[test]
fn mqtt311_swallows_one_echo_per_publication_within_the_window() {
    let cfg = UpstreamConfig {
        protocol_version: 4,
        ..config()
    };
    let mut h = Harness::shared(cfg);
    h.command(subscribe("t", 0));
    h.connack(false);
    h.take_sent();
    h.take_events();
    h.command(publish("t", "hi", 0));
    assert_eq!(h.published(), ["hi"]);
    h.event(incoming("t", "hi", &[]));
    assert!(messages(&h.take_events()).is_empty(), "our own echo");
    assert_eq!(h.gauge(&h.counters.echoes_suppressed), 1);
    h.event(incoming("t", "hi", &[]));
    assert_eq!(
        messages(&h.take_events()).len(),
        1,
        "one copy per publication"
    );
    // Past the window an echo is no longer expected.
    h.command(publish("t", "late", 0));
    h.take_sent();
    h.advance(ECHO_WINDOW + Duration::from_secs(1));
    h.event(incoming("t", "late", &[]));
    assert_eq!(messages(&h.take_events()).len(), 1);
}

#[test]
fn mqtt5_per_device_copies_tagged_with_our_origin_are_echoes() {
    let mut h = Harness::device_up(config(), "d");
    h.event(LinkEvent::Publish {
        pkid: 1,
        topic: Some("t".into()),
        payload: Bytes::from_static(b"1"),
        qos: 0,
        retain: false,
        subscription_ids: Vec::new(),
        origin: Some("gw".into()),
    });
    assert!(h.take_events().is_empty());
    assert_eq!(h.gauge(&h.counters.echoes_suppressed), 1);
    h.event(incoming("t", "2", &[]));
    assert!(matches!(
        h.take_events().as_slice(),
        [BridgeEvent::SessionMessage { .. }]
    ));
}

fn outcomes(events: &[BridgeEvent]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            BridgeEvent::Subscribed {
                filter, accepted, ..
            } => Some((filter.clone(), *accepted)),
            _ => None,
        })
        .collect()
}

fn filters(sent: Vec<Request>) -> Vec<String> {
    subscribes(sent).into_iter().map(|(f, ..)| f).collect()
}

#[test]
fn a_filter_refused_in_a_suback_leaves_the_set_and_is_never_sent_again() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.take_events();
    h.command(subscribe("bad", 1));
    h.command(subscribe("good", 1));
    assert_eq!(filters(h.take_sent()), ["bad", "good"]);
    h.event(LinkEvent::SubAck { refused: 1 });
    h.event(LinkEvent::SubAck { refused: 0 });
    assert_eq!(
        outcomes(&h.take_events()),
        [("bad".to_owned(), false), ("good".to_owned(), true)]
    );
    assert_eq!(h.gauge(&h.counters.filters_refused), 1);
    h.event(LinkEvent::SubAck { refused: 0 });
    h.lose();
    h.connack(false);
    assert_eq!(
        filters(h.take_sent()),
        ["good"],
        "the refused one stays gone"
    );
}

#[test]
fn a_filter_the_broker_closes_the_connection_on_is_sent_alone_then_refused() {
    let mut h = Harness::shared(config());
    for f in ["a", "bad", "z"] {
        h.command(subscribe(f, 1));
    }
    h.connack(false);
    assert_eq!(filters(h.take_sent()), ["a", "bad", "z"], "one batch");
    // The broker answers "a", then closes on "bad" ("z" never answered).
    h.event(LinkEvent::SubAck { refused: 0 });
    h.lose();
    h.advance(Duration::from_secs(10));
    h.connack(false);
    assert_eq!(filters(h.take_sent()), ["a"], "the innocent first");
    h.event(LinkEvent::SubAck { refused: 0 });
    assert_eq!(filters(h.take_sent()), ["bad"], "then a suspect, alone");
    h.lose();
    assert_eq!(h.gauge(&h.counters.filters_refused), 1);
    assert!(outcomes(&h.take_events()).contains(&("bad".to_owned(), false)));
    h.advance(Duration::from_secs(10));
    h.connack(false);
    assert_eq!(filters(h.take_sent()), ["a"]);
    h.event(LinkEvent::SubAck { refused: 0 });
    assert_eq!(filters(h.take_sent()), ["z"], "the other suspect, alone");
    h.event(LinkEvent::SubAck { refused: 0 });
    assert!(outcomes(&h.take_events()).contains(&("z".to_owned(), true)));
    // Proven: the next connection sends both at once.
    h.lose();
    h.advance(Duration::from_secs(10));
    h.connack(false);
    assert_eq!(filters(h.take_sent()), ["a", "z"]);
    assert_eq!(h.gauge(&h.counters.connects), 4);
}

#[test]
fn a_filter_rumqttc_will_not_take_is_refused_at_once() {
    let mut h = Harness::shared(config());
    h.connack(false);
    h.take_events();
    h.refuse_filter = Some("a/#/b".into());
    h.command(subscribe("a/#/b", 1));
    assert!(filters(h.take_sent()).is_empty());
    assert_eq!(outcomes(&h.take_events()), [("a/#/b".to_owned(), false)]);
    h.lose();
    h.connack(false);
    assert!(filters(h.take_sent()).is_empty(), "never sent again");
}

#[test]
fn wildcard_and_shared_filters_a_broker_does_not_support_are_refused_unsent() {
    let mut h = Harness::shared(config());
    h.event(LinkEvent::ConnAck {
        session_present: false,
        limits: crate::bridge::machine::BrokerLimits {
            wildcards_available: false,
            shared_available: false,
            ..Default::default()
        },
    });
    h.take_events();
    for f in ["a/#", "$share/g/b", "plain"] {
        h.command(subscribe(f, 1));
    }
    assert_eq!(filters(h.take_sent()), ["plain"]);
    assert_eq!(
        outcomes(&h.take_events()),
        [("a/#".to_owned(), false), ("$share/g/b".to_owned(), false)]
    );
    assert_eq!(h.gauge(&h.counters.filters_refused), 2);
}
