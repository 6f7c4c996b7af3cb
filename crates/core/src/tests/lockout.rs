//! No lockout: a CONNECT that is never followed by anything holds no lasting
//! place. At `max_clients` such sessions are evicted first, oldest first,
//! once they are [`UNPROVEN_GRACE`] old; keep-alive is capped
//! (`keep_alive_max`) and supervised with the cap.

use super::*;
use crate::gateway::UNPROVEN_GRACE;

/// A CONNECT (CleanSession = false, no will) for `client_id`.
pub(super) fn connect_packet(client_id: &str, duration: u16) -> Packet {
    Packet::Connect {
        will: false,
        clean_session: false,
        protocol_id: 1,
        duration,
        client_id: client_id.to_owned(),
    }
}

/// A source address of its own for flood entry `i` (no address budget
/// shared).
fn spoofed(i: u32) -> Peer {
    let [_, b, c, d] = i.to_be_bytes();
    Peer::udp(SocketAddr::from(([10, b, c, d], 4000)))
}

fn connack(out: &[Output], to: &Peer) -> Option<ReturnCode> {
    packets_to(out, to).iter().find_map(|p| match p {
        Packet::ConnAck { return_code } => Some(*return_code),
        _ => None,
    })
}

#[test]
fn ten_thousand_silent_connects_do_not_lock_a_new_device_out() {
    let mut h = Harness::new();
    let max = h.gw.config().max_clients as u32;
    for i in 0..max {
        let from = spoofed(i);
        let out = h.send(&from, connect_packet(&format!("silent-{i}"), u16::MAX));
        assert_eq!(connack(&out, &from), Some(ReturnCode::Accepted));
    }
    assert_eq!(h.gw.session_count(), max as usize);
    h.advance(Duration::from_secs(1));
    let device = peer(1);
    let out = h.send(&device, connect_packet("real", 60));
    assert_eq!(connack(&out, &device), Some(ReturnCode::Accepted));
    // The oldest silent session made room; the others are still there.
    assert_eq!(h.gw.client_state("silent-0"), None);
    assert!(h.gw.client_state("silent-1").is_some());
    assert_eq!(h.gw.session_count(), max as usize);
    assert_eq!(h.gw.stats().unproven_evicted, 1);
    assert_eq!(h.gw.stats().sessions_evicted, 1);
    // The flood goes on: the new device, once it has spoken, keeps its
    // place while the flood evicts its own; the flood's newest, younger
    // than the grace period, are not evicted for more of it.
    h.send(&device, Packet::PingReq { client_id: None });
    for i in 0..max {
        let from = spoofed(max + i);
        h.send(&from, connect_packet(&format!("more-{i}"), u16::MAX));
    }
    assert_eq!(h.gw.client_state("real"), Some(&ClientState::Active));
    assert_eq!(h.gw.stats().unproven_evicted, u64::from(max));
    assert_eq!(h.gw.stats().limit_hits(LimitHit::MaxClients), 1);
}

#[test]
fn a_silent_session_younger_than_the_grace_period_is_not_evicted() {
    let mut h = Harness::with(EngineConfig {
        max_clients: 1,
        ..EngineConfig::default()
    });
    let (a, b) = (peer(1), peer(2));
    h.send(&a, connect_packet("a", 60));
    // More devices than places arriving together do not evict each other
    // before they had a moment to speak: the newcomer is refused.
    let out = h.send(&b, connect_packet("b", 60));
    assert_eq!(connack(&out, &b), Some(ReturnCode::Congestion));
    h.advance(UNPROVEN_GRACE - Duration::from_millis(1));
    let out = h.send(&b, connect_packet("b", 60));
    assert_eq!(connack(&out, &b), Some(ReturnCode::Congestion));
    // Silent for the whole grace period: it gives way.
    h.advance(Duration::from_millis(1));
    let out = h.send(&b, connect_packet("b", 60));
    assert_eq!(connack(&out, &b), Some(ReturnCode::Accepted));
    assert_eq!(h.gw.client_state("a"), None);
}

#[test]
fn sessions_that_spoke_stay_and_only_silent_ones_give_way() {
    let mut h = Harness::with(EngineConfig {
        max_clients: 2,
        ..EngineConfig::default()
    });
    let (a, b, c, d) = (peer(1), peer(2), peer(3), peer(4));
    h.connect(&a, "a", true);
    h.send(&a, Packet::PingReq { client_id: None });
    h.connect(&b, "b", true);
    // b said nothing after its CONNACK for a second: c takes its place,
    // not a's.
    h.advance(UNPROVEN_GRACE);
    let out = h.send(&c, connect_packet("c", 60));
    assert_eq!(connack(&out, &c), Some(ReturnCode::Accepted));
    assert_eq!(h.gw.client_state("b"), None);
    assert_eq!(h.gw.client_state("a"), Some(&ClientState::Active));
    // Nothing is sent to the evicted session's address (it may be spoofed).
    assert!(packets_to(&out, &b).is_empty(), "{out:?}");
    // c registers a topic: proven. With a and c both proven and connected,
    // d is refused as before.
    h.register(&c, 1, "t");
    let out = h.send(&d, connect_packet("d", 60));
    assert_eq!(connack(&out, &d), Some(ReturnCode::Congestion));
    // b, evicted, comes back speaking: told to connect again.
    let out = h.send(&b, Packet::PingReq { client_id: None });
    assert_eq!(
        packets_to(&out, &b),
        vec![Packet::Disconnect { duration: None }]
    );
}

#[test]
fn a_reconnecting_known_client_is_not_made_evictable() {
    let mut h = Harness::with(EngineConfig {
        max_clients: 2,
        ..EngineConfig::default()
    });
    let (a, b, c) = (peer(1), peer(2), peer(3));
    h.connect(&a, "a", false);
    h.subscribe(&a, 1, "x", QoS::AtLeastOnce);
    // a's id connects again (e.g. after a reboot, or someone knowing it):
    // no new state, so the session keeps its place.
    h.send(&a, connect_packet("a", 60));
    h.connect(&b, "b", true);
    h.advance(UNPROVEN_GRACE);
    let out = h.send(&c, connect_packet("c", 60));
    assert_eq!(connack(&out, &c), Some(ReturnCode::Accepted));
    assert_eq!(h.gw.client_state("b"), None, "the silent newcomer went");
    assert!(h.gw.client_state("a").is_some());
}

#[test]
fn keep_alive_is_capped_and_supervised_with_the_cap() {
    let mut h = Harness::new();
    assert_eq!(h.gw.config().keep_alive_max, Duration::from_secs(3600));
    let d = peer(1);
    let out = h.send(&d, connect_packet("d", u16::MAX));
    assert_eq!(connack(&out, &d), Some(ReturnCode::Accepted));
    // Supervised at 3600 s + 10 %, not 65,535 s.
    h.advance(Duration::from_secs(3959));
    assert_eq!(h.gw.client_state("d"), Some(&ClientState::Active));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.gw.client_state("d"), Some(&ClientState::Lost));
}
