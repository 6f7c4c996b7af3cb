//! What the engine tells operators (per-QoS counters, gauges, the device
//! list) and the shutdown drain, with a virtual clock.

use super::*;
use crate::snapshot::DEVICE_STATES;

/// The PUBLISH packets sent to `to` (QoS, msg id), in order.
fn publishes(out: &[Output], to: &Peer) -> Vec<(QoS, u16)> {
    packets_to(out, to)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish { qos, msg_id, .. } => Some((qos, msg_id)),
            _ => None,
        })
        .collect()
}

fn puback(topic_id: u16, msg_id: u16) -> Packet {
    Packet::PubAck {
        topic_id,
        msg_id,
        return_code: ReturnCode::Accepted,
    }
}

/// The short topic name every message of [`traffic`] goes to (no REGISTER
/// on either side).
const AB: TopicRef = TopicRef::Short(*b"ab");

/// A publisher "p" and "s" subscribed to the short name "ab" at QoS 1; "p"
/// then publishes to it at QoS −1 (from another peer), 0, 1 and 2. Returns
/// (p, s, what "s" was sent).
fn traffic(h: &mut Harness) -> (Peer, Peer, Vec<(QoS, u16)>) {
    let (p, s, anon) = (peer(1), peer(2), peer(3));
    h.connect(&p, "p", true);
    h.connect(&s, "s", true);
    h.subscribe(&s, 1, "ab", QoS::AtLeastOnce);
    let mut to_s = Vec::new();
    let out = h.send(&anon, publish(QoS::MinusOne, AB, 0, "m-1"));
    to_s.extend(publishes(&out, &s));
    for (qos, msg_id) in [
        (QoS::AtMostOnce, 0),
        (QoS::AtLeastOnce, 2),
        (QoS::ExactlyOnce, 3),
    ] {
        let out = h.send(&p, publish(qos, AB, msg_id, "m"));
        to_s.extend(publishes(&out, &s));
    }
    (p, s, to_s)
}

#[test]
fn publishes_are_counted_by_qos_both_ways() {
    let mut h = Harness::new();
    let (_, _, to_s) = traffic(&mut h);
    let stats = h.gw.stats();
    assert_eq!(stats.publishes_in_by_qos, [1, 1, 1, 1]);
    assert_eq!(stats.publishes_in, 4);
    // QoS −1 and 0 arrive at QoS 0; QoS 1 is in flight, so the QoS 2
    // message (granted 1) waits in the queue.
    assert_eq!(
        to_s.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
        vec![QoS::AtMostOnce, QoS::AtMostOnce, QoS::AtLeastOnce]
    );
    assert_eq!(stats.publishes_out_by_qos, [0, 2, 1, 0]);
    assert_eq!(stats.publishes_out, 3);
}

#[test]
fn gauges_count_states_transports_and_what_is_held() {
    let mut h = Harness::new();
    let (_, s, _) = traffic(&mut h);
    // A device behind a forwarder, and one put to sleep.
    let fwd = peer(50);
    h.send(
        &fwd,
        Packet::Encapsulated {
            radius: 0,
            node_id: Bytes::from_static(&[7]),
            inner: Box::new(Packet::Connect {
                will: false,
                clean_session: true,
                protocol_id: 1,
                duration: 60,
                client_id: "node".into(),
            }),
        },
    );
    let z = peer(9);
    h.connect(&z, "z", false);
    h.send(&z, Packet::Disconnect { duration: Some(60) });

    let g = h.gw.gauges();
    assert_eq!(g.sessions, 4);
    assert_eq!(
        (
            g.in_state("active"),
            g.in_state("asleep"),
            g.in_state("lost")
        ),
        (3, 1, 0)
    );
    assert_eq!(g.by_state.iter().sum::<usize>(), 4);
    assert_eq!(DEVICE_STATES.len(), g.by_state.len());
    assert_eq!(g.over(Transport::Udp), 3);
    assert_eq!(g.over(Transport::Forwarded), 1);
    assert_eq!(g.over(Transport::Serial), 0);
    assert_eq!((g.in_flight, g.buffered_messages), (1, 1));
    assert_eq!(g.buffered_bytes, 1, "the queued message's payload");
    assert_eq!(g.subscriptions, 1);

    let view = h.gw.device("s", h.now).expect("s is known");
    assert_eq!(view.peer.as_ref(), Some(&s));
    assert_eq!(view.state, "active");
    assert!(view.in_flight);
}

#[test]
fn the_device_list_is_sorted_with_ages_from_now_and_sorted_subscriptions() {
    let mut h = Harness::new();
    let (a, b_) = (peer(1), peer(2));
    h.connect(&b_, "b", true);
    h.advance(Duration::from_secs(5));
    h.connect(&a, "a", true);
    h.subscribe(&a, 1, "z/#", QoS::AtMostOnce);
    h.subscribe(&a, 2, "m/+", QoS::ExactlyOnce);
    h.advance(Duration::from_secs(2));
    let devices = h.gw.devices(h.now);
    let ids: Vec<&str> = devices.iter().map(|d| &*d.client_id).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(devices[0].last_seen_ago, Duration::from_secs(2));
    assert_eq!(devices[1].last_seen_ago, Duration::from_secs(7));
    assert_eq!(
        devices[0].subscriptions,
        vec![("m/+".to_owned(), 2), ("z/#".to_owned(), 0)]
    );
    assert_eq!(devices[0].transport, Transport::Udp);
    assert_eq!(devices[0].keep_alive, Duration::from_secs(60));
}

#[test]
fn draining_takes_acknowledgements_and_refuses_new_work() {
    let mut h = Harness::new();
    let (p, s, to_s) = traffic(&mut h);
    let (_, first) = to_s[2];
    h.gw.start_draining();
    assert!(h.gw.is_draining());
    let left = h.gw.undelivered();
    assert_eq!((left.in_flight, left.queued, left.deliverable()), (1, 1, 2));

    // New work: no answer, counted.
    let newcomer = peer(77);
    let out = h.send(
        &newcomer,
        Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 1,
            duration: 60,
            client_id: "late".into(),
        },
    );
    assert!(out.is_empty(), "{out:?}");
    let out = h.send(&p, publish(QoS::AtLeastOnce, AB, 9, "x"));
    assert!(
        out.is_empty(),
        "a QoS 1 PUBLISH is not acknowledged: {out:?}"
    );
    assert_eq!(h.gw.stats().drops(DropReason::ShuttingDown), 2);
    assert_eq!(h.gw.session_count(), 2);

    // Acknowledgements complete the deliveries under way.
    let out = h.send(&s, puback(AB.raw(), first));
    let next = publishes(&out, &s);
    assert_eq!(next.len(), 1, "the queued message goes out: {out:?}");
    assert_eq!(h.gw.undelivered().deliverable(), 1);
    h.send(&s, puback(AB.raw(), next[0].1));
    assert_eq!(h.gw.undelivered(), Undelivered::default());
}

#[test]
fn messages_for_sleeping_devices_are_reported_as_unreachable() {
    let mut h = Harness::new();
    let (p, z) = (peer(1), peer(2));
    h.connect(&p, "p", true);
    h.connect(&z, "z", false);
    h.subscribe(&z, 1, "t", QoS::AtLeastOnce);
    h.send(&z, Packet::Disconnect { duration: Some(60) });
    let id = h.register(&p, 1, "t");
    h.send(&p, publish(QoS::AtLeastOnce, TopicRef::Id(id), 2, "a"));
    h.send(&p, publish(QoS::AtLeastOnce, TopicRef::Id(id), 3, "b"));
    let left = h.gw.undelivered();
    assert_eq!((left.deliverable(), left.buffered_unreachable), (0, 2));
}
