//! SUBACK means subscribed: with the bridge connected, a SUBSCRIBE that
//! needs a new upstream subscription is answered when the bridge says what
//! the broker answered (or after SUBACK_WAIT); retained messages follow.

use super::*;
use crate::SUBACK_WAIT;

fn bridged_connected() -> Harness {
    let mut h = Harness::with(EngineConfig {
        upstream: true,
        ..EngineConfig::default()
    });
    let now = h.now;
    h.gw.handle_upstream_connected(now, true);
    h
}

fn subacks(out: &[Output], to: &Peer) -> Vec<ReturnCode> {
    packets_to(out, to)
        .into_iter()
        .filter_map(|p| match p {
            Packet::SubAck { return_code, .. } => Some(return_code),
            _ => None,
        })
        .collect()
}

#[test]
fn the_suback_waits_for_the_brokers_and_retained_messages_follow_it() {
    let mut h = bridged_connected();
    let now = h.now;
    h.gw.handle_upstream(
        now,
        crate::UpstreamMessage {
            topic: "a/r".into(),
            payload: b("kept"),
            qos: 0,
            retain: true,
            filter: None,
        },
    );
    h.drain();
    let dev = peer(1);
    h.connect(&dev, "d", true);
    let out = h.send(&dev, subscribe(QoS::AtLeastOnce, 1, "a/#"));
    assert!(subacks(&out, &dev).is_empty(), "held: {out:?}");
    assert_eq!(
        upstream(&out),
        [UpstreamCommand::Subscribe {
            filter: "a/#".into(),
            qos: 2
        }]
    );
    h.gw.handle_upstream_subscribed(now, None, "a/#", true);
    let out = h.drain();
    let packets = packets_to(&out, &dev);
    assert!(
        matches!(
            packets.as_slice(),
            [
                Packet::SubAck {
                    return_code: ReturnCode::Accepted,
                    msg_id: 1,
                    ..
                },
                // The retained message's topic, registered before it.
                Packet::Register { .. }
            ]
        ),
        "SUBACK, then the retained message: {packets:?}"
    );
}

#[test]
fn a_filter_the_broker_refused_is_refused_to_the_device_and_removed() {
    let mut h = bridged_connected();
    let now = h.now;
    let dev = peer(1);
    h.connect(&dev, "d", true);
    h.send(&dev, subscribe(QoS::AtLeastOnce, 1, "bad/#"));
    h.gw.handle_upstream_subscribed(now, None, "bad/#", false);
    let out = h.drain();
    assert_eq!(subacks(&out, &dev), [ReturnCode::NotSupported]);
    assert_eq!(
        upstream(&out),
        [UpstreamCommand::Unsubscribe {
            filter: "bad/#".into()
        }],
        "the subscription is gone"
    );
    assert_eq!(h.gw.stats().drops(DropReason::UpstreamRefused), 1);
}

#[test]
fn whoever_subscribes_the_same_filter_meanwhile_waits_for_the_same_answer() {
    let mut h = bridged_connected();
    let now = h.now;
    let (d1, d2) = (peer(1), peer(2));
    h.connect(&d1, "d1", true);
    h.connect(&d2, "d2", true);
    h.send(&d1, subscribe(QoS::AtLeastOnce, 1, "x"));
    let out = h.send(&d2, subscribe(QoS::AtLeastOnce, 1, "x"));
    assert!(subacks(&out, &d2).is_empty());
    assert!(upstream(&out).is_empty(), "one upstream SUBSCRIBE");
    h.gw.handle_upstream_subscribed(now, None, "x", true);
    let out = h.drain();
    assert_eq!(subacks(&out, &d1), [ReturnCode::Accepted]);
    assert_eq!(subacks(&out, &d2), [ReturnCode::Accepted]);
    // Subscribed now: a third one is answered at once.
    let d3 = peer(3);
    h.connect(&d3, "d3", true);
    let out = h.send(&d3, subscribe(QoS::AtLeastOnce, 1, "x"));
    assert_eq!(subacks(&out, &d3), [ReturnCode::Accepted]);
}

#[test]
fn no_answer_in_time_grants_the_subscription() {
    let mut h = bridged_connected();
    let dev = peer(1);
    h.connect(&dev, "d", true);
    h.send(&dev, subscribe(QoS::AtLeastOnce, 1, "slow"));
    let out = h.advance(SUBACK_WAIT - Duration::from_millis(1));
    assert!(subacks(&out, &dev).is_empty());
    let out = h.advance(Duration::from_millis(1));
    assert_eq!(subacks(&out, &dev), [ReturnCode::Accepted]);
}

#[test]
fn offline_the_suback_goes_at_once_and_a_lost_connection_answers_those_held() {
    let mut h = bridged_connected();
    let now = h.now;
    let dev = peer(1);
    h.connect(&dev, "d", true);
    h.send(&dev, subscribe(QoS::AtLeastOnce, 1, "held"));
    h.gw.handle_upstream_connected(now, false);
    assert_eq!(subacks(&h.drain(), &dev), [ReturnCode::Accepted]);
    let out = h.send(&dev, subscribe(QoS::AtLeastOnce, 2, "offline"));
    assert_eq!(subacks(&out, &dev), [ReturnCode::Accepted]);
}

// ------------------------------------------------------------ local clients

fn local_subacks(out: &[Output]) -> Vec<(u16, Vec<Option<u8>>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Local {
                action: crate::LocalAction::SubAck { pkid, granted },
                ..
            } => Some((*pkid, granted.clone())),
            _ => None,
        })
        .collect()
}

fn local_client(h: &mut Harness) -> crate::LocalConnId {
    let c = crate::LocalConnId(1);
    let now = h.now;
    h.gw.handle_local(
        now,
        c,
        crate::LocalInput::Connect(crate::LocalConnect {
            client_id: "local".into(),
            clean_session: true,
            will: None,
            username: None,
        }),
    );
    h.drain();
    c
}

fn local_subscribe(h: &mut Harness, c: crate::LocalConnId, pkid: u16, filters: Vec<(String, u8)>) {
    let now = h.now;
    h.gw.handle_local(now, c, crate::LocalInput::Subscribe { pkid, filters });
}

#[test]
fn a_local_clients_suback_waits_for_every_filter_that_asked_the_bridge() {
    let mut h = bridged_connected();
    let now = h.now;
    let c = local_client(&mut h);
    local_subscribe(
        &mut h,
        c,
        4,
        vec![("good/#".into(), 1), ("bad/#".into(), 1)],
    );
    let out = h.drain();
    assert!(local_subacks(&out).is_empty(), "held: {out:?}");
    assert_eq!(upstream(&out).len(), 2, "two upstream SUBSCRIBEs");
    h.gw.handle_upstream_subscribed(now, None, "good/#", true);
    assert!(local_subacks(&h.drain()).is_empty(), "one still awaited");
    h.gw.handle_upstream_subscribed(now, None, "bad/#", false);
    let out = h.drain();
    assert_eq!(local_subacks(&out), [(4, vec![Some(1), None])]);
    assert_eq!(
        upstream(&out),
        [UpstreamCommand::Unsubscribe {
            filter: "bad/#".into()
        }]
    );
}

#[test]
fn a_local_clients_suback_goes_at_once_offline_and_after_the_wait() {
    let mut h = bridged_connected();
    let now = h.now;
    let c = local_client(&mut h);
    local_subscribe(&mut h, c, 1, vec![("slow".into(), 1)]);
    assert!(local_subacks(&h.drain()).is_empty());
    let out = h.advance(SUBACK_WAIT);
    assert_eq!(local_subacks(&out), [(1, vec![Some(1)])]);
    h.gw.handle_upstream_connected(now, false);
    local_subscribe(&mut h, c, 2, vec![("offline".into(), 0)]);
    assert_eq!(local_subacks(&h.drain()), [(2, vec![Some(0)])]);
}
