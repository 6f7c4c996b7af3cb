//! Local MQTT clients (the embedded broker's connections) as engine sessions:
//! connect and takeover, persistent sessions and their queues, wills, expiry,
//! upstream parking, limits, `$SYS`, and topic checks.

use super::*;
use crate::session::Will;

fn conn(n: u64) -> LocalConnId {
    LocalConnId(n)
}

fn delivery(topic: &str, payload: &str, qos: u8) -> LocalDelivery {
    LocalDelivery {
        store_id: None,
        topic: Arc::from(topic),
        payload: b(payload),
        qos,
        retain: false,
    }
}

fn lpublish(pkid: u16, topic: &str, payload: &str, qos: u8) -> LocalInput {
    LocalInput::Publish {
        pkid,
        topic: topic.to_owned(),
        payload: b(payload),
        qos,
        retain: false,
    }
}

fn closed(graceful: bool, unacked: Vec<LocalDelivery>) -> LocalInput {
    LocalInput::Closed {
        graceful,
        unacked,
        releasing: Vec::new(),
    }
}

use std::sync::Arc;

impl Harness {
    /// Feeds `input` from local connection `c`, returns every output.
    fn local(&mut self, c: LocalConnId, input: LocalInput) -> Vec<Output> {
        self.gw.handle_local(self.now, c, input);
        self.drain()
    }

    /// A CONNECT from `c`; returns what the engine said to `c`.
    pub(super) fn local_connect(
        &mut self,
        c: LocalConnId,
        client_id: &str,
        clean_session: bool,
        will: Option<Will>,
    ) -> Vec<LocalAction> {
        let out = self.local(
            c,
            LocalInput::Connect(LocalConnect {
                client_id: client_id.to_owned(),
                clean_session,
                will,
                username: None,
            }),
        );
        actions_to(&out, c)
    }

    /// SUBSCRIBEs `c` to one filter and checks it was granted.
    fn local_subscribe(&mut self, c: LocalConnId, pkid: u16, filter: &str, qos: u8) -> Vec<Output> {
        let out = self.local(
            c,
            LocalInput::Subscribe {
                pkid,
                filters: vec![(filter.to_owned(), qos)],
            },
        );
        assert_eq!(
            actions_to(&out, c).first(),
            Some(&LocalAction::SubAck {
                pkid,
                granted: vec![Some(qos)]
            }),
            "{out:?}"
        );
        out
    }
}

/// The actions for local connection `c`, in order.
fn actions_to(out: &[Output], c: LocalConnId) -> Vec<LocalAction> {
    out.iter()
        .filter_map(|o| match o {
            Output::Local { conn, action } if *conn == c => Some(action.clone()),
            _ => None,
        })
        .collect()
}

/// The messages delivered to local connection `c`, in order.
fn delivered_to(out: &[Output], c: LocalConnId) -> Vec<LocalDelivery> {
    actions_to(out, c)
        .into_iter()
        .filter_map(|a| match a {
            LocalAction::Deliver(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn connack(session_present: bool) -> LocalAction {
    LocalAction::ConnAck { session_present }
}

fn will(topic: &str, payload: &str) -> Option<Will> {
    Some(Will {
        topic: topic.to_owned(),
        payload: b(payload),
        qos: 1,
        retain: false,
    })
}

fn bridged() -> Harness {
    Harness::with(EngineConfig {
        upstream: true,
        ..EngineConfig::default()
    })
}

fn upstream_publishes(out: &[Output]) -> Vec<(String, u8)> {
    upstream(out)
        .into_iter()
        .filter_map(|c| match c {
            UpstreamCommand::Publish { topic, qos, .. } => Some((topic, qos)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------- connect

#[test]
fn a_local_connect_is_answered_with_connack_and_the_client_is_listed() {
    let mut h = Harness::new();
    assert_eq!(
        h.local_connect(conn(1), "nodered", true, None),
        vec![connack(false)]
    );
    let clients = h.gw.local_clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].client_id, "nodered");
    assert!(clients[0].connected && clients[0].clean_session);
    // Local ids are their own namespace: no device session was made.
    assert_eq!(h.gw.session_count(), 0);
}

#[test]
fn local_clients_beyond_max_clients_are_refused_but_a_known_id_may_take_over() {
    let mut h = Harness::with(EngineConfig {
        max_clients: 1,
        ..EngineConfig::default()
    });
    assert_eq!(
        h.local_connect(conn(1), "one", true, None),
        vec![connack(false)]
    );
    assert_eq!(
        h.local_connect(conn(2), "two", true, None),
        vec![LocalAction::Refuse]
    );
    assert_eq!(h.gw.stats().limit_hits(LimitHit::MaxClients), 1);
    // What the refused connection sends next is not routed.
    let out = h.local(conn(2), lpublish(0, "a", "x", 0));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.gw.stats().local_in, 0);
    // A connection with a known id takes its session over.
    let out = h.local(
        conn(3),
        LocalInput::Connect(LocalConnect {
            client_id: "one".into(),
            clean_session: true,
            will: None,
            username: None,
        }),
    );
    assert_eq!(actions_to(&out, conn(1)), vec![LocalAction::Close]);
    assert_eq!(actions_to(&out, conn(3)), vec![connack(false)]);
    // The refused one's close is harmless.
    assert!(h.local(conn(2), closed(true, vec![])).is_empty());
    assert_eq!(h.gw.local_clients().len(), 1);
}

// ---------------------------------------------------------------- routing

#[test]
fn a_device_publish_reaches_a_local_subscriber_at_the_lower_qos() {
    let mut h = Harness::new();
    let l = conn(1);
    h.local_connect(l, "sub", true, None);
    h.local_subscribe(l, 1, "sensors/#", 1);
    let d = peer(10);
    h.connect(&d, "dev", true);
    let id = h.register(&d, 1, "sensors/t");
    for (qos, payload, expect) in [
        (QoS::ExactlyOnce, "q2", 1),
        (QoS::AtLeastOnce, "q1", 1),
        (QoS::AtMostOnce, "q0", 0),
    ] {
        let out = h.send(&d, publish(qos, TopicRef::Id(id), 2, payload));
        assert_eq!(
            delivered_to(&out, l),
            vec![delivery("sensors/t", payload, expect)],
            "{qos:?}"
        );
    }
    assert_eq!(h.gw.stats().local_out, 3);
}

#[test]
fn a_local_publish_reaches_devices_and_goes_upstream_then_is_acknowledged() {
    let mut h = bridged();
    let d = peer(10);
    h.connect(&d, "dev", true);
    h.subscribe(&d, 1, "cmd/#", QoS::AtLeastOnce);
    let l = conn(1);
    h.local_connect(l, "pub", true, None);
    let out = h.local(l, lpublish(5, "cmd/led", "on", 2));
    assert_eq!(upstream_publishes(&out), vec![("cmd/led".to_owned(), 2)]);
    // The device gets it at its subscription's QoS (after a REGISTER).
    let to_device = packets_to(&out, &d);
    assert!(
        matches!(
            to_device.as_slice(),
            [Packet::Register { topic_name, .. }] if topic_name == "cmd/led"
        ),
        "{to_device:?}"
    );
    assert_eq!(
        actions_to(&out, l),
        vec![LocalAction::Ack { pkid: 5, qos: 2 }]
    );
    assert_eq!(h.gw.stats().local_in, 1);
    assert_eq!(h.gw.stats().upstream_out, 1);
}

#[test]
fn a_local_publish_reaches_other_local_subscribers_but_not_upstream_without_a_bridge() {
    let mut h = Harness::new();
    let (p, s) = (conn(1), conn(2));
    h.local_connect(p, "pub", true, None);
    h.local_connect(s, "sub", true, None);
    h.local_subscribe(s, 1, "a/+", 2);
    let out = h.local(p, lpublish(1, "a/b", "x", 1));
    assert_eq!(delivered_to(&out, s), vec![delivery("a/b", "x", 1)]);
    assert!(upstream(&out).is_empty());
    assert_eq!(
        actions_to(&out, p),
        vec![LocalAction::Ack { pkid: 1, qos: 1 }]
    );
}

#[test]
fn retained_messages_follow_the_suback_at_the_granted_qos() {
    let mut h = Harness::new();
    let p = conn(1);
    h.local_connect(p, "pub", true, None);
    h.local(
        p,
        LocalInput::Publish {
            pkid: 1,
            topic: "site/mode".into(),
            payload: b("eco"),
            qos: 2,
            retain: true,
        },
    );
    let s = conn(2);
    h.local_connect(s, "sub", true, None);
    let out = h.local(
        s,
        LocalInput::Subscribe {
            pkid: 9,
            filters: vec![("site/#".into(), 1)],
        },
    );
    assert_eq!(
        actions_to(&out, s),
        vec![
            LocalAction::SubAck {
                pkid: 9,
                granted: vec![Some(1)]
            },
            LocalAction::Deliver(LocalDelivery {
                retain: true,
                ..delivery("site/mode", "eco", 1)
            }),
        ]
    );
}

#[test]
fn unsubscribe_is_acknowledged_and_stops_deliveries_and_the_upstream_subscription() {
    let mut h = bridged();
    let l = conn(1);
    h.local_connect(l, "sub", true, None);
    let out = h.local_subscribe(l, 1, "x/#", 1);
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::Subscribe {
            filter: "x/#".into(),
            qos: 2
        }]
    );
    let out = h.local(
        l,
        LocalInput::Unsubscribe {
            pkid: 2,
            filters: vec!["x/#".into(), "never/subscribed".into()],
        },
    );
    assert_eq!(actions_to(&out, l), vec![LocalAction::UnsubAck { pkid: 2 }]);
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::Unsubscribe {
            filter: "x/#".into()
        }]
    );
    let out = h.local(conn(2), lpublish(0, "x/y", "v", 0));
    assert!(delivered_to(&out, l).is_empty());
}

// ---------------------------------------------------------------- takeover

#[test]
fn a_takeover_closes_the_old_connection_whose_late_close_keeps_the_session_and_its_will_quiet() {
    let mut h = Harness::new();
    let watcher = conn(9);
    h.local_connect(watcher, "watcher", true, None);
    h.local_subscribe(watcher, 1, "status/#", 1);
    let (old, new) = (conn(1), conn(2));
    h.local_connect(old, "plc", false, will("status/plc", "gone"));
    h.local_subscribe(old, 1, "cmd/#", 1);
    let out = h.local(
        new,
        LocalInput::Connect(LocalConnect {
            client_id: "plc".into(),
            clean_session: false,
            will: None,
            username: None,
        }),
    );
    assert_eq!(actions_to(&out, old), vec![LocalAction::Close]);
    assert_eq!(actions_to(&out, new), vec![connack(true)]);
    // The old connection still says something before it goes: ignored.
    let out = h.local(old, lpublish(3, "cmd/late", "x", 1));
    assert!(out.is_empty(), "{out:?}");
    // It closes abruptly with messages the client never acknowledged: the
    // QoS 1/2 ones reach the new connection; no will.
    let out = h.local(
        old,
        closed(
            false,
            vec![delivery("cmd/a", "1", 1), delivery("cmd/b", "0", 0)],
        ),
    );
    assert_eq!(delivered_to(&out, new), vec![delivery("cmd/a", "1", 1)]);
    assert!(
        actions_to(&out, watcher).is_empty(),
        "will published: {out:?}"
    );
    assert_eq!(h.gw.stats().wills_published, 0);
    // The session lives on, on the new connection, with its subscription.
    let clients = h.gw.local_clients();
    let plc = clients.iter().find(|c| c.client_id == "plc");
    assert!(
        plc.is_some_and(|c| c.connected && c.subscriptions == vec![("cmd/#".to_owned(), 1)]),
        "{clients:?}"
    );
    let out = h.local(watcher, lpublish(2, "cmd/x", "y", 1));
    assert_eq!(delivered_to(&out, new), vec![delivery("cmd/x", "y", 1)]);
    assert!(delivered_to(&out, old).is_empty());
}

#[test]
fn a_clean_takeover_starts_afresh_and_the_old_connections_messages_are_forgotten() {
    let mut h = Harness::new();
    let (old, new) = (conn(1), conn(2));
    h.local_connect(old, "c", false, None);
    h.local_subscribe(old, 1, "t", 1);
    let actions = h.local_connect(new, "c", true, None);
    assert_eq!(actions, vec![connack(false)]);
    let out = h.local(old, closed(false, vec![delivery("t", "x", 1)]));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.gw.local_clients()[0].subscriptions, vec![]);
}

// ---------------------------------------------------------------- close, will, queue

#[test]
fn the_will_is_published_on_an_abrupt_close_only() {
    let mut h = Harness::new();
    let watcher = conn(9);
    h.local_connect(watcher, "watcher", true, None);
    h.local_subscribe(watcher, 1, "status/#", 2);
    h.local_connect(conn(1), "polite", true, will("status/polite", "gone"));
    h.local_connect(conn(2), "rude", true, will("status/rude", "gone"));
    let out = h.local(conn(1), closed(true, vec![]));
    assert!(delivered_to(&out, watcher).is_empty(), "{out:?}");
    let out = h.local(conn(2), closed(false, vec![]));
    assert_eq!(
        delivered_to(&out, watcher),
        vec![delivery("status/rude", "gone", 1)]
    );
    assert_eq!(h.gw.stats().wills_published, 1);
    // Clean sessions are gone with their connections.
    assert_eq!(h.gw.local_clients().len(), 1);
}

#[test]
fn a_clean_session_is_forgotten_on_close_with_its_upstream_subscription() {
    let mut h = bridged();
    let l = conn(1);
    h.local_connect(l, "c", true, None);
    h.local_subscribe(l, 1, "x/#", 1);
    let out = h.local(l, closed(true, vec![delivery("x/1", "u", 1)]));
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::Unsubscribe {
            filter: "x/#".into()
        }]
    );
    assert!(h.gw.local_clients().is_empty());
    assert_eq!(
        h.local_connect(conn(2), "c", true, None),
        vec![connack(false)]
    );
}

#[test]
fn a_persistent_session_keeps_unacked_and_qos1_messages_but_not_qos0_while_away() {
    let mut h = Harness::new();
    let l = conn(1);
    h.local_connect(l, "p", false, None);
    h.local_subscribe(l, 1, "s/#", 2);
    h.local(
        l,
        closed(
            true,
            vec![delivery("s/u1", "u1", 1), delivery("s/u0", "u0", 0)],
        ),
    );
    let p = conn(2);
    h.local_connect(p, "pub", true, None);
    h.local(p, lpublish(1, "s/m2", "m2", 2));
    h.local(p, lpublish(0, "s/m0", "m0", 0));
    assert_eq!(
        h.gw.stats().drops(DropReason::SessionGone),
        1,
        "the QoS 0 one"
    );
    let clients = h.gw.local_clients();
    let away = clients.iter().find(|c| c.client_id == "p");
    assert!(
        away.is_some_and(|c| !c.connected && c.queued == 2),
        "{clients:?}"
    );
    let out = h.local(
        conn(3),
        LocalInput::Connect(LocalConnect {
            client_id: "p".into(),
            clean_session: false,
            will: None,
            username: None,
        }),
    );
    // CONNACK first, then the kept messages, oldest first.
    assert_eq!(
        actions_to(&out, conn(3)),
        vec![
            connack(true),
            LocalAction::Deliver(delivery("s/u1", "u1", 1)),
            LocalAction::Deliver(delivery("s/m2", "m2", 2)),
        ]
    );
}

#[test]
fn with_queue_qos0_a_persistent_session_keeps_qos0_messages_too() {
    let mut h = Harness::with(EngineConfig {
        queue_qos0: true,
        ..EngineConfig::default()
    });
    let l = conn(1);
    h.local_connect(l, "p", false, None);
    h.local_subscribe(l, 1, "s/#", 0);
    h.local(l, closed(false, vec![delivery("s/u0", "u0", 0)]));
    h.local_connect(conn(2), "pub", true, None);
    h.local(conn(2), lpublish(0, "s/m0", "m0", 0));
    let actions = h.local_connect(conn(3), "p", false, None);
    assert_eq!(
        actions,
        vec![
            connack(true),
            LocalAction::Deliver(delivery("s/u0", "u0", 0)),
            LocalAction::Deliver(delivery("s/m0", "m0", 0)),
        ]
    );
}

#[test]
fn the_queue_of_an_away_session_is_bounded() {
    let mut h = Harness::with(EngineConfig {
        max_queued_messages_per_client: 2,
        ..EngineConfig::default()
    });
    let l = conn(1);
    h.local_connect(l, "p", false, None);
    h.local_subscribe(l, 1, "s/#", 1);
    // More unacknowledged messages than the bound: the oldest are kept.
    let unacked = (0..3)
        .map(|i| delivery("s/u", &format!("u{i}"), 1))
        .collect();
    h.local(l, closed(true, unacked));
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 1);
    h.local_connect(conn(2), "pub", true, None);
    for i in 0..3 {
        h.local(conn(2), lpublish(i + 1, "s/m", &format!("m{i}"), 1));
    }
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 4);
    let actions = h.local_connect(conn(3), "p", false, None);
    assert_eq!(
        actions,
        vec![
            connack(true),
            LocalAction::Deliver(delivery("s/u", "u0", 1)),
            LocalAction::Deliver(delivery("s/u", "u1", 1)),
        ]
    );
}

// ---------------------------------------------------------------- expiry

#[test]
fn an_away_persistent_session_expires_and_leaves_the_trie_and_upstream() {
    let mut h = Harness::with(EngineConfig {
        upstream: true,
        session_expiry: Some(Duration::from_secs(60)),
        ..EngineConfig::default()
    });
    let (p, other) = (conn(1), conn(2));
    h.local_connect(p, "p", false, None);
    h.local_subscribe(p, 1, "mine/#", 1);
    h.local_subscribe(p, 2, "shared/#", 1);
    h.local_connect(other, "other", true, None);
    h.local_subscribe(other, 1, "shared/#", 1);
    assert_eq!(h.gw.poll_timeout(), None);
    let closed_at = h.now;
    h.local(p, closed(false, vec![]));
    assert_eq!(
        h.gw.poll_timeout(),
        Some(closed_at + Duration::from_secs(60))
    );
    assert!(h.advance(Duration::from_secs(59)).is_empty());
    assert_eq!(h.gw.local_clients().len(), 2);
    let out = h.advance(Duration::from_secs(2));
    // Only the filter nobody else holds is unsubscribed upstream.
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::Unsubscribe {
            filter: "mine/#".into()
        }]
    );
    assert_eq!(h.gw.stats().sessions_expired, 1);
    assert_eq!(h.gw.poll_timeout(), None);
    let clients = h.gw.local_clients();
    assert_eq!(clients.len(), 1, "{clients:?}");
    // Out of the trie: nothing is routed (or queued) for it any more.
    let out = h.local(other, lpublish(1, "mine/x", "v", 1));
    assert!(
        out.iter().all(|o| matches!(o, Output::Upstream(_))
            || *o
                == Output::Local {
                    conn: other,
                    action: LocalAction::Ack { pkid: 1, qos: 1 }
                }),
        "{out:?}"
    );
    assert_eq!(h.gw.stats().drops(DropReason::SessionGone), 0);
    let out = h.local(other, lpublish(0, "shared/x", "v", 0));
    assert_eq!(
        delivered_to(&out, other),
        vec![delivery("shared/x", "v", 0)]
    );
    // Coming back finds no session.
    assert_eq!(
        h.local_connect(conn(3), "p", false, None),
        vec![connack(false)]
    );
}

#[test]
fn coming_back_before_expiry_cancels_it() {
    let mut h = Harness::with(EngineConfig {
        session_expiry: Some(Duration::from_secs(60)),
        ..EngineConfig::default()
    });
    h.local_connect(conn(1), "p", false, None);
    h.local(conn(1), closed(false, vec![]));
    assert!(h.gw.poll_timeout().is_some());
    h.advance(Duration::from_secs(30));
    assert_eq!(
        h.local_connect(conn(2), "p", false, None),
        vec![connack(true)]
    );
    assert_eq!(h.gw.poll_timeout(), None);
    h.advance(Duration::from_secs(120));
    assert_eq!(h.gw.stats().sessions_expired, 0);
    assert!(h.gw.local_clients()[0].connected);
}

// ---------------------------------------------------------------- upstream backpressure

#[test]
fn local_qos12_publishes_wait_for_upstream_room_and_are_acked_in_order() {
    let mut h = bridged();
    let (p, s) = (conn(1), conn(2));
    h.local_connect(p, "pub", true, None);
    h.local_connect(s, "sub", true, None);
    h.local_subscribe(s, 1, "bp/#", 2);
    h.gw.set_upstream_room(h.now, 0);
    for (pkid, qos) in [(1, 1), (2, 2)] {
        let out = h.local(p, lpublish(pkid, &format!("bp/{pkid}"), "v", qos));
        assert!(out.is_empty(), "held without an answer: {out:?}");
    }
    assert!(h.gw.has_parked_publishes());
    assert_eq!(h.gw.stats().publishes_parked, 2);
    // QoS 0 is not held: local subscribers get it, the upstream copy is dropped.
    let out = h.local(p, lpublish(0, "bp/0", "v", 0));
    assert_eq!(delivered_to(&out, s), vec![delivery("bp/0", "v", 0)]);
    assert_eq!(h.gw.stats().drops(DropReason::UpstreamFull), 1);
    // Room for one: the oldest goes, and only it is acknowledged.
    h.gw.set_upstream_room(h.now, 1);
    let out = h.drain();
    assert_eq!(upstream_publishes(&out), vec![("bp/1".to_owned(), 1)]);
    assert_eq!(
        actions_to(&out, p),
        vec![LocalAction::Ack { pkid: 1, qos: 1 }]
    );
    assert_eq!(delivered_to(&out, s), vec![delivery("bp/1", "v", 1)]);
    h.gw.set_upstream_room(h.now, 10);
    let out = h.drain();
    assert_eq!(upstream_publishes(&out), vec![("bp/2".to_owned(), 2)]);
    assert_eq!(
        actions_to(&out, p),
        vec![LocalAction::Ack { pkid: 2, qos: 2 }]
    );
    assert!(!h.gw.has_parked_publishes());
}

#[test]
fn a_publish_behind_a_parked_one_waits_its_turn_even_with_room() {
    let mut h = bridged();
    let p = conn(1);
    h.local_connect(p, "pub", true, None);
    h.gw.set_upstream_room(h.now, 0);
    h.local(p, lpublish(1, "bp/a", "v", 1));
    // Room is there, but nothing told the engine yet: it keeps the order.
    h.gw.upstream_room = 5;
    let out = h.local(p, lpublish(2, "bp/b", "v", 1));
    assert!(out.is_empty(), "{out:?}");
    h.gw.set_upstream_room(h.now, 5);
    let out = h.drain();
    assert_eq!(
        actions_to(&out, p),
        vec![
            LocalAction::Ack { pkid: 1, qos: 1 },
            LocalAction::Ack { pkid: 2, qos: 1 }
        ]
    );
}

#[test]
fn a_close_while_parked_drops_the_parked_publishes_without_ack() {
    let mut h = bridged();
    let p = conn(1);
    h.local_connect(p, "pub", false, None);
    h.gw.set_upstream_room(h.now, 0);
    h.local(p, lpublish(1, "bp/a", "v", 1));
    h.local(p, lpublish(2, "bp/b", "v", 2));
    h.local(p, closed(false, vec![]));
    assert!(!h.gw.has_parked_publishes());
    h.gw.set_upstream_room(h.now, 10);
    let out = h.drain();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.gw.stats().upstream_out, 0);
    // Nor are they acknowledged when the client comes back.
    let actions = h.local_connect(conn(2), "pub", false, None);
    assert_eq!(actions, vec![connack(true)]);
    h.gw.set_upstream_room(h.now, 10);
    assert!(h.drain().is_empty());
}

#[test]
fn a_takeover_while_parked_does_not_acknowledge_the_old_connections_publishes_on_the_new_one() {
    let mut h = bridged();
    let (old, new) = (conn(1), conn(2));
    h.local_connect(old, "pub", false, None);
    h.gw.set_upstream_room(h.now, 0);
    h.local(old, lpublish(7, "bp/a", "v", 2));
    h.local_connect(new, "pub", false, None);
    h.local(old, closed(false, vec![]));
    // The client resends pkid 7 on its new connection (MQTT-4.4.0-1).
    h.local(new, lpublish(7, "bp/a", "v", 2));
    h.gw.set_upstream_room(h.now, 10);
    let out = h.drain();
    // Routed once, acknowledged once: exactly once at QoS 2.
    assert_eq!(upstream_publishes(&out), vec![("bp/a".to_owned(), 2)]);
    assert_eq!(
        actions_to(&out, new),
        vec![LocalAction::Ack { pkid: 7, qos: 2 }]
    );
    assert!(actions_to(&out, old).is_empty());
}

// ---------------------------------------------------------------- $SYS

#[test]
fn sys_messages_reach_local_sys_subscribers_only() {
    let mut h = bridged();
    let (sys, all) = (conn(1), conn(2));
    h.local_connect(sys, "sys", true, None);
    h.local_subscribe(sys, 1, "$SYS/#", 0);
    h.local_connect(all, "all", true, None);
    h.local_subscribe(all, 1, "#", 0);
    let d = peer(10);
    h.connect(&d, "dev", true);
    h.subscribe(&d, 1, "#", QoS::AtMostOnce);
    h.gw.publish_internal(h.now, "$SYS/broker/uptime", b("5 seconds"), true);
    let out = h.drain();
    assert_eq!(
        delivered_to(&out, sys),
        vec![delivery("$SYS/broker/uptime", "5 seconds", 0)]
    );
    assert!(delivered_to(&out, all).is_empty(), "{out:?}");
    assert!(packets_to(&out, &d).is_empty(), "{out:?}");
    assert!(upstream(&out).is_empty(), "{out:?}");
    assert_eq!(h.gw.stats().upstream_out, 0);
    // Retained: a later `$SYS` subscriber gets it, a later `#` one does not.
    let later = conn(3);
    h.local_connect(later, "later", true, None);
    let out = h.local_subscribe(later, 1, "#", 0);
    assert!(delivered_to(&out, later).is_empty(), "{out:?}");
    let out = h.local_subscribe(later, 2, "$SYS/broker/+", 0);
    assert_eq!(
        delivered_to(&out, later),
        vec![LocalDelivery {
            retain: true,
            ..delivery("$SYS/broker/uptime", "5 seconds", 0)
        }]
    );
}

#[test]
fn a_local_publish_to_sys_is_refused_counted_and_never_retained() {
    let mut h = bridged();
    let (p, sys) = (conn(1), conn(2));
    h.local_connect(sys, "sys", true, None);
    h.local_subscribe(sys, 1, "$SYS/#", 0);
    h.local_connect(p, "forger", true, None);
    for (pkid, topic) in [(1, "$SYS/broker/version"), (2, "$SYS")] {
        let out = h.local(
            p,
            LocalInput::Publish {
                pkid,
                topic: topic.to_owned(),
                payload: b("forged"),
                qos: 1,
                retain: true,
            },
        );
        // MQTT 3.1.1 has no refusing PUBACK: acknowledged, and dropped.
        assert_eq!(
            actions_to(&out, p),
            vec![LocalAction::Ack { pkid, qos: 1 }],
            "{out:?}"
        );
        assert!(delivered_to(&out, sys).is_empty(), "{out:?}");
        assert!(upstream(&out).is_empty(), "{out:?}");
    }
    assert_eq!(h.gw.stats().drops(DropReason::SysReserved), 2);
    assert_eq!(h.gw.stats().local_in, 0);
    // Not retained: a later `$SYS` subscriber gets nothing.
    let later = conn(3);
    h.local_connect(later, "later", true, None);
    let out = h.local_subscribe(later, 1, "$SYS/#", 0);
    assert!(delivered_to(&out, later).is_empty(), "{out:?}");
    // `$SYSTEM` is an ordinary topic.
    let out = h.local(p, lpublish(3, "$SYSTEM/x", "ok", 0));
    assert_eq!(upstream_publishes(&out), vec![("$SYSTEM/x".to_owned(), 0)]);
}

#[test]
fn a_device_publish_or_will_to_sys_is_refused() {
    let mut h = bridged();
    let sys = conn(1);
    h.local_connect(sys, "sys", true, None);
    h.local_subscribe(sys, 1, "$SYS/#", 0);
    let d = peer(10);
    h.connect(&d, "dev", true);
    let id = h.register(&d, 1, "$SYS/broker/version");
    let out = h.send(&d, publish(QoS::AtLeastOnce, TopicRef::Id(id), 2, "forged"));
    assert_eq!(
        packets_to(&out, &d),
        vec![Packet::PubAck {
            topic_id: id,
            msg_id: 2,
            return_code: ReturnCode::NotSupported
        }]
    );
    assert!(delivered_to(&out, sys).is_empty(), "{out:?}");
    assert!(upstream(&out).is_empty(), "{out:?}");
    // QoS -1 with the topic name inline (Paho's form).
    let out = h.send(
        &peer(11),
        Packet::PublishNamedMinusOne {
            dup: false,
            msg_id: 0,
            retain: true,
            topic_name: "$SYS/broker/uptime".into(),
            payload: b("forged"),
        },
    );
    assert!(delivered_to(&out, sys).is_empty(), "{out:?}");
    assert!(upstream(&out).is_empty(), "{out:?}");
    // A will there is not published when the device is lost.
    let w = peer(12);
    h.will_handshake(
        &w,
        Packet::Connect {
            will: true,
            clean_session: true,
            protocol_id: 1,
            duration: 10,
            client_id: "w".into(),
        },
        "$SYS/broker/clients",
        QoS::AtMostOnce,
        true,
        "forged",
    );
    let out = h.advance(Duration::from_secs(20));
    assert!(delivered_to(&out, sys).is_empty(), "{out:?}");
    assert_eq!(h.gw.stats().wills_published, 0);
    assert_eq!(h.gw.stats().drops(DropReason::SysReserved), 3);
}

#[test]
fn sys_subscriptions_are_not_bridged_upstream() {
    let mut h = bridged();
    let c = conn(1);
    h.local_connect(c, "c", true, None);
    let out = h.local_subscribe(c, 1, "$SYS/#", 0);
    assert!(upstream(&out).is_empty(), "{out:?}");
    let d = peer(10);
    h.connect(&d, "dev", true);
    let out = h.send(&d, subscribe(QoS::AtMostOnce, 1, "$SYS/broker/+"));
    assert!(upstream(&out).is_empty(), "{out:?}");
    // Unsubscribing them says nothing upstream either.
    let out = h.local(
        c,
        LocalInput::Unsubscribe {
            pkid: 2,
            filters: vec!["$SYS/#".into()],
        },
    );
    assert!(upstream(&out).is_empty(), "{out:?}");
    // An ordinary filter still is bridged.
    let out = h.local_subscribe(c, 3, "a/#", 0);
    assert_eq!(
        upstream(&out),
        vec![UpstreamCommand::Subscribe {
            filter: "a/#".into(),
            qos: 2
        }]
    );
}

// ---------------------------------------------------------------- bad input

#[test]
fn a_local_publish_to_an_invalid_topic_name_closes_the_connection() {
    let mut h = Harness::new();
    let (p, s) = (conn(1), conn(2));
    h.local_connect(s, "sub", true, None);
    h.local_subscribe(s, 1, "#", 1);
    for (i, topic) in ["a/+/b", "a/#", "", "nul\0"].into_iter().enumerate() {
        let c = conn(10 + i as u64);
        h.local_connect(c, &format!("p{i}"), true, None);
        let out = h.local(c, lpublish(1, topic, "x", 1));
        assert_eq!(actions_to(&out, c), vec![LocalAction::Close], "{topic:?}");
        assert!(delivered_to(&out, s).is_empty());
    }
    assert_eq!(h.gw.stats().drops(DropReason::Malformed), 4);
    assert_eq!(h.gw.stats().local_in, 0);
    let _ = p;
}

#[test]
fn invalid_or_excess_subscribe_filters_are_refused_one_by_one() {
    let mut h = Harness::with(EngineConfig {
        max_subscriptions_per_client: 2,
        ..EngineConfig::default()
    });
    let l = conn(1);
    h.local_connect(l, "sub", true, None);
    let filters = [
        ("ok/#", 1),
        ("bad/#/x", 1),
        ("", 0),
        ("a/b+", 2),
        ("q", 3),
        ("third", 0),
        ("ok/#", 0),
    ];
    let out = h.local(
        l,
        LocalInput::Subscribe {
            pkid: 4,
            filters: filters.iter().map(|(f, q)| (f.to_string(), *q)).collect(),
        },
    );
    assert_eq!(
        actions_to(&out, l),
        vec![LocalAction::SubAck {
            pkid: 4,
            // QoS above 2 is granted 2; the limit counts distinct filters,
            // so re-subscribing an existing one is still allowed.
            granted: vec![Some(1), None, None, None, Some(2), None, Some(0)],
        }]
    );
    assert_eq!(
        h.gw.local_clients()[0].subscriptions,
        vec![("ok/#".to_owned(), 0), ("q".to_owned(), 2)]
    );
    // Only "third" met the limit; the others were invalid.
    assert_eq!(
        h.gw.stats().limit_hits(LimitHit::MaxSubscriptionsPerClient),
        1
    );
}

#[test]
fn inputs_for_unknown_connections_are_ignored() {
    let mut h = Harness::new();
    assert!(h.local(conn(5), lpublish(1, "a", "x", 1)).is_empty());
    assert!(h.local(conn(5), closed(false, vec![])).is_empty());
    assert!(
        h.local(
            conn(5),
            LocalInput::Subscribe {
                pkid: 1,
                filters: vec![("a".into(), 0)]
            }
        )
        .is_empty()
    );
}

#[test]
fn the_queue_of_an_away_session_is_bounded_in_bytes_too() {
    let mut h = Harness::with(EngineConfig {
        max_queued_bytes_per_client: 10,
        ..EngineConfig::default()
    });
    let l = conn(1);
    h.local_connect(l, "p", false, None);
    h.local_subscribe(l, 1, "s/#", 1);
    h.local(l, closed(true, vec![]));
    h.local_connect(conn(2), "pub", true, None);
    for i in 0..3 {
        h.local(conn(2), lpublish(i + 1, "s/m", "8 bytes!", 1));
    }
    assert_eq!(h.gw.local_clients()[0].queued, 1, "10 bytes hold one");
    assert_eq!(h.gw.stats().drops(DropReason::QueueFull), 2);
}

#[test]
fn a_persistent_session_gets_its_pubrels_again_on_its_next_connection() {
    // MQTT-4.4.0-1: a QoS 2 message the client answered with PUBREC on a
    // connection that dropped before its PUBCOMP is released again.
    let mut h = Harness::new();
    assert_eq!(
        h.local_connect(conn(1), "q2", false, None),
        vec![connack(false)]
    );
    h.local(
        conn(1),
        LocalInput::Closed {
            graceful: false,
            unacked: Vec::new(),
            releasing: vec![7, 9],
        },
    );
    assert_eq!(
        h.local_connect(conn(2), "q2", false, None),
        vec![connack(true), LocalAction::Release { pkids: vec![7, 9] }]
    );
    // Once only: the new connection owns them now.
    h.local(
        conn(2),
        LocalInput::Closed {
            graceful: true,
            unacked: Vec::new(),
            releasing: Vec::new(),
        },
    );
    assert_eq!(
        h.local_connect(conn(3), "q2", false, None),
        vec![connack(true)]
    );
}

#[test]
fn a_clean_start_owes_no_pubrel() {
    let mut h = Harness::new();
    h.local_connect(conn(1), "q2", false, None);
    h.local(
        conn(1),
        LocalInput::Closed {
            graceful: false,
            unacked: Vec::new(),
            releasing: vec![7],
        },
    );
    assert_eq!(
        h.local_connect(conn(2), "q2", true, None),
        vec![connack(false)]
    );
}
