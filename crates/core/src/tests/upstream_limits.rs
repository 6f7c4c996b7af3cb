//! The upstream broker's limits, known from the bridge's CONNACK: a
//! device's QoS 1/2 message the broker would refuse is refused before it
//! is acknowledged (PUBACK "not supported"), counted, and never routed.

use super::*;
use crate::upstream_limits::UpstreamLimits;

fn bridged() -> Harness {
    Harness::with(EngineConfig {
        upstream: true,
        ..EngineConfig::default()
    })
}

fn limits(max_packet_size: usize, max_qos: u8, retain_available: bool) -> Option<UpstreamLimits> {
    Some(UpstreamLimits {
        max_packet_size,
        packet_overhead: 5,
        max_qos,
        retain_available,
    })
}

fn publish_on(
    h: &mut Harness,
    from: &Peer,
    id: u16,
    qos: QoS,
    retain: bool,
    payload: &str,
) -> Vec<Output> {
    h.send(
        from,
        Packet::Publish {
            dup: false,
            qos,
            retain,
            topic: TopicRef::Id(id),
            msg_id: 7,
            payload: b(payload),
        },
    )
}

fn pub_ack_code(out: &[Output], from: &Peer) -> Option<ReturnCode> {
    packets_to(out, from).into_iter().find_map(|p| match p {
        Packet::PubAck { return_code, .. } => Some(return_code),
        _ => None,
    })
}

#[test]
fn a_message_over_the_brokers_maximum_packet_size_is_refused_before_it_is_acknowledged() {
    let mut h = bridged();
    let now = h.now;
    h.gw.handle_upstream_limits(now, limits(100, 2, true));
    let dev = peer(1);
    h.connect(&dev, "d", true);
    let id = h.register(&dev, 1, "t/x");
    // 5 + 5 + 3 + 87 = 100 bytes: fits exactly; one more does not.
    let out = publish_on(&mut h, &dev, id, QoS::AtLeastOnce, false, &"a".repeat(87));
    assert_eq!(pub_ack_code(&out, &dev), Some(ReturnCode::Accepted));
    assert_eq!(upstream(&out).len(), 1);
    let out = publish_on(&mut h, &dev, id, QoS::AtLeastOnce, false, &"a".repeat(88));
    assert_eq!(pub_ack_code(&out, &dev), Some(ReturnCode::NotSupported));
    assert!(upstream(&out).is_empty(), "never handed to the bridge");
    assert_eq!(h.gw.stats().drops(DropReason::UpstreamRefused), 1);
}

#[test]
fn qos_and_retain_the_broker_does_not_support_are_refused() {
    let mut h = bridged();
    let now = h.now;
    h.gw.handle_upstream_limits(now, limits(10_000, 1, false));
    let dev = peer(1);
    h.connect(&dev, "d", true);
    let id = h.register(&dev, 1, "t/x");
    let out = publish_on(&mut h, &dev, id, QoS::ExactlyOnce, false, "q2");
    assert_eq!(pub_ack_code(&out, &dev), Some(ReturnCode::NotSupported));
    let out = publish_on(&mut h, &dev, id, QoS::AtLeastOnce, true, "kept");
    assert_eq!(pub_ack_code(&out, &dev), Some(ReturnCode::NotSupported));
    let out = publish_on(&mut h, &dev, id, QoS::AtLeastOnce, false, "fine");
    assert_eq!(pub_ack_code(&out, &dev), Some(ReturnCode::Accepted));
    assert_eq!(h.gw.stats().drops(DropReason::UpstreamRefused), 2);
}

#[test]
fn without_limits_or_without_a_bridge_everything_is_taken() {
    let mut h = Harness::new();
    let now = h.now;
    // Not bridged: the broker's limits do not concern local delivery.
    h.gw.handle_upstream_limits(now, limits(10, 0, false));
    let dev = peer(1);
    h.connect(&dev, "d", true);
    let id = h.register(&dev, 1, "t/x");
    let out = publish_on(&mut h, &dev, id, QoS::AtLeastOnce, true, &"a".repeat(100));
    assert_eq!(pub_ack_code(&out, &dev), Some(ReturnCode::Accepted));
    let mut h = bridged();
    let now = h.now;
    h.gw.handle_upstream_limits(now, limits(10, 0, false));
    h.gw.handle_upstream_limits(now, None);
    let dev = peer(1);
    h.connect(&dev, "d", true);
    let id = h.register(&dev, 1, "t/x");
    let out = publish_on(&mut h, &dev, id, QoS::AtLeastOnce, true, &"a".repeat(100));
    assert_eq!(pub_ack_code(&out, &dev), Some(ReturnCode::Accepted));
}
