//! The memory budget: every store input can grow is bounded in bytes as well
//! as in count — away local sessions' queues and their unacknowledged
//! messages, the retained store, topic names and subscriptions summed over
//! every client — and each refusal is counted where `/metrics` shows it.

use super::*;
use crate::stats::LimitHit;

fn lconnect(h: &mut Harness, c: u64, client_id: &str, clean: bool) {
    h.gw.handle_local(
        h.now,
        LocalConnId(c),
        LocalInput::Connect(LocalConnect {
            client_id: client_id.to_owned(),
            clean_session: clean,
            will: None,
            username: None,
        }),
    );
    h.drain();
}

fn lsubscribe(h: &mut Harness, c: u64, filter: &str) -> Vec<Option<u8>> {
    h.gw.handle_local(
        h.now,
        LocalConnId(c),
        LocalInput::Subscribe {
            pkid: 1,
            filters: vec![(filter.to_owned(), 1)],
        },
    );
    h.drain()
        .into_iter()
        .find_map(|o| match o {
            Output::Local {
                action: LocalAction::SubAck { granted, .. },
                ..
            } => Some(granted),
            _ => None,
        })
        .unwrap_or_default()
}

fn lpublish(h: &mut Harness, c: u64, topic: &str, payload: Vec<u8>, retain: bool) -> Vec<Output> {
    h.gw.handle_local(
        h.now,
        LocalConnId(c),
        LocalInput::Publish {
            pkid: 7,
            topic: topic.to_owned(),
            payload: Bytes::from(payload),
            qos: 1,
            retain,
        },
    );
    h.drain()
}

fn lclose(h: &mut Harness, c: u64) {
    h.gw.handle_local(
        h.now,
        LocalConnId(c),
        LocalInput::Closed {
            graceful: true,
            unacked: Vec::new(),
            releasing: Vec::new(),
        },
    );
    h.drain();
}

#[test]
fn away_local_sessions_share_the_gateway_wide_byte_bound() {
    // Two away sessions, 1,000 bytes each allowed, 1,500 for everyone.
    let mut h = Harness::with(EngineConfig {
        max_queued_bytes_per_client: 1000,
        max_queued_bytes_total: 1500,
        ..EngineConfig::default()
    });
    for (c, id) in [(1, "a"), (2, "b")] {
        lconnect(&mut h, c, id, false);
        assert_eq!(lsubscribe(&mut h, c, "s/#"), vec![Some(1)]);
        lclose(&mut h, c);
    }
    lconnect(&mut h, 3, "pub", true);
    for _ in 0..4 {
        lpublish(&mut h, 3, "s/x", vec![0; 300], false);
    }
    // 4 × 300 to each: "a" takes 3 (900 ≤ 1000), "b" then 2 (1500 in all);
    // the rest is refused.
    let queued: Vec<usize> = h.gw.local_clients().iter().map(|c| c.queued).collect();
    assert_eq!(queued, vec![3, 2, 0]);
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 3);
    assert_eq!(h.gw.check_invariants(), Ok(()));
    // Its client back, "a" takes its messages: the room is given back.
    lconnect(&mut h, 4, "a", false);
    lclose(&mut h, 4);
    lpublish(&mut h, 3, "s/x", vec![0; 300], false);
    let queued: Vec<usize> = h.gw.local_clients().iter().map(|c| c.queued).collect();
    assert_eq!(queued, vec![1, 3, 0]);
    assert_eq!(h.gw.check_invariants(), Ok(()));
}

#[test]
fn drop_oldest_makes_room_in_an_away_local_session() {
    let mut h = Harness::with(EngineConfig {
        max_queued_bytes_per_client: 1000,
        queue_overflow: OverflowPolicy::DropOldest,
        ..EngineConfig::default()
    });
    lconnect(&mut h, 1, "a", false);
    lsubscribe(&mut h, 1, "s/#");
    lclose(&mut h, 1);
    lconnect(&mut h, 3, "pub", true);
    for i in 0..5u8 {
        lpublish(&mut h, 3, "s/x", vec![i; 400], false);
    }
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 3);
    h.gw.handle_local(
        h.now,
        LocalConnId(4),
        LocalInput::Connect(LocalConnect {
            client_id: "a".into(),
            clean_session: false,
            will: None,
            username: None,
        }),
    );
    let firsts: Vec<u8> = h
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Output::Local {
                action: LocalAction::Deliver(d),
                ..
            } => d.payload.first().copied(),
            _ => None,
        })
        .collect();
    assert_eq!(firsts, vec![3, 4], "the newest two are kept");
}

#[test]
fn a_persistent_local_client_that_never_acknowledges_holds_a_bounded_amount() {
    let mut h = Harness::with(EngineConfig {
        persist: true,
        max_queued_bytes_per_client: 300,
        max_queued_bytes_total: 1000,
        ..EngineConfig::default()
    });
    lconnect(&mut h, 1, "slow", false);
    lsubscribe(&mut h, 1, "s/#");
    lconnect(&mut h, 3, "pub", true);
    let mut handed = 0;
    for _ in 0..10 {
        let out = lpublish(&mut h, 3, "s/x", vec![0; 300], false);
        handed += out
            .iter()
            .filter(|o| {
                matches!(o, Output::Local { conn, action: LocalAction::Deliver(_) } if *conn == LocalConnId(1))
            })
            .count();
        h.gw.take_store_ops();
    }
    // The per-client 300 bytes do not cut a burst in flight; the
    // gateway-wide 1,000 bytes do.
    assert_eq!(handed, 3, "1,000 bytes hold three unacknowledged messages");
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 7);
    assert_eq!(h.gw.check_invariants(), Ok(()));
}

#[test]
fn a_persistent_local_client_that_never_acknowledges_holds_at_most_the_message_count() {
    let mut h = Harness::with(EngineConfig {
        persist: true,
        max_queued_messages_per_client: 4,
        ..EngineConfig::default()
    });
    lconnect(&mut h, 1, "slow", false);
    lsubscribe(&mut h, 1, "s/#");
    lconnect(&mut h, 3, "pub", true);
    for _ in 0..10 {
        lpublish(&mut h, 3, "s/x", vec![0; 10], false);
        h.gw.take_store_ops();
    }
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 6);
}

#[test]
fn the_retained_store_is_bounded_in_bytes_and_the_message_still_delivered() {
    let mut h = Harness::with(EngineConfig {
        max_retained_bytes: 1000,
        ..EngineConfig::default()
    });
    lconnect(&mut h, 1, "sub", true);
    lsubscribe(&mut h, 1, "r/#");
    lconnect(&mut h, 2, "pub", true);
    // "r/1" + 400 = 403 bytes each: two fit, the third does not.
    for t in ["r/1", "r/2", "r/3"] {
        let out = lpublish(&mut h, 2, t, vec![1; 400], true);
        assert!(
            out.iter().any(|o| matches!(o, Output::Local { conn, action: LocalAction::Deliver(d) } if *conn == LocalConnId(1) && &*d.topic == t)),
            "{t} delivered"
        );
    }
    assert_eq!(h.gw.gauges().retained_messages, 2);
    assert_eq!(h.gw.stats().limit_hits(LimitHit::MaxRetainedBytes), 1);
    // A larger message for a kept topic is refused too, and the older one
    // is not served as if it were the latest.
    lpublish(&mut h, 2, "r/1", vec![2; 700], true);
    assert_eq!(h.gw.gauges().retained_messages, 1);
    assert_eq!(h.gw.stats().limit_hits(LimitHit::MaxRetainedBytes), 2);
    // Clearing makes room again.
    lpublish(&mut h, 2, "r/2", Vec::new(), true);
    lpublish(&mut h, 2, "r/3", vec![3; 900], true);
    assert_eq!(h.gw.gauges().retained_messages, 1);
}

#[test]
fn topic_names_of_every_device_share_one_byte_bound() {
    let mut h = Harness::with(EngineConfig {
        max_topic_bytes_total: 250,
        ..EngineConfig::default()
    });
    let (a, b) = (peer(1), peer(2));
    h.connect(&a, "a", true);
    h.connect(&b, "b", true);
    let long = |c: char| std::iter::repeat_n(c, 100).collect::<String>();
    h.register(&a, 1, &long('x'));
    h.register(&b, 1, &long('y'));
    // A third 100-byte name would make 300 bytes: REGACK "congestion".
    let out = h.send(
        &a,
        Packet::Register {
            topic_id: 0,
            msg_id: 2,
            topic_name: long('z'),
        },
    );
    assert!(matches!(
        packets_to(&out, &a).as_slice(),
        [Packet::RegAck {
            return_code: ReturnCode::Congestion,
            ..
        }]
    ));
    assert_eq!(h.gw.stats().limit_hits(LimitHit::MaxTopicBytesTotal), 1);
    assert_eq!(h.gw.stats().limit_hits(LimitHit::MaxTopicsPerClient), 0);
    // "b" goes (clean session): its names are given back.
    h.send(&b, Packet::Disconnect { duration: None });
    h.register(&a, 3, &long('z'));
}

#[test]
fn subscriptions_of_every_client_share_one_byte_bound() {
    let mut h = Harness::with(EngineConfig {
        max_subscription_bytes_total: 250,
        ..EngineConfig::default()
    });
    let long = |c: char| format!("{}/#", std::iter::repeat_n(c, 98).collect::<String>());
    let a = peer(1);
    h.connect(&a, "a", true);
    assert!(matches!(
        h.subscribe(&a, 1, &long('x'), QoS::AtLeastOnce).as_slice(),
        [Packet::SubAck {
            return_code: ReturnCode::Accepted,
            ..
        }]
    ));
    lconnect(&mut h, 1, "l", true);
    assert_eq!(lsubscribe(&mut h, 1, &long('y')), vec![Some(1)]);
    // 300 bytes with a third: refused for a device and for a local client.
    assert!(matches!(
        h.subscribe(&a, 2, &long('z'), QoS::AtLeastOnce).as_slice(),
        [Packet::SubAck {
            return_code: ReturnCode::Congestion,
            ..
        }]
    ));
    assert_eq!(lsubscribe(&mut h, 1, &long('z')), vec![None]);
    assert_eq!(
        h.gw.stats().limit_hits(LimitHit::MaxSubscriptionBytesTotal),
        2
    );
    // Subscribing again to a held filter costs nothing.
    assert_eq!(lsubscribe(&mut h, 1, &long('y')), vec![Some(1)]);
    // The local client goes: its filter is given back.
    lclose(&mut h, 1);
    assert!(matches!(
        h.subscribe(&a, 3, &long('z'), QoS::AtLeastOnce).as_slice(),
        [Packet::SubAck {
            return_code: ReturnCode::Accepted,
            ..
        }]
    ));
}
