//! The per-source rate limit as the engine applies it: before decoding, per
//! source address, excess dropped and counted, other sources unaffected.

use super::*;

fn limited(pps: u32, burst: u32) -> Harness {
    Harness::with(EngineConfig {
        per_source_packets_per_sec: pps,
        per_source_burst: burst,
        ..EngineConfig::default()
    })
}

#[test]
fn a_flooding_source_is_cut_off_and_counted_while_another_is_served() {
    let mut h = limited(10, 20);
    let flooder = Peer::udp(SocketAddr::from(([10, 0, 0, 66], 4000)));
    let device = Peer::udp(SocketAddr::from(([10, 0, 0, 7], 5000)));
    h.connect(&device, "dev", true);
    // 1000 garbage datagrams at the same instant: 20 pass (and are malformed).
    for _ in 0..1000 {
        h.raw(&flooder, &[0xff, 0x00, 0x13]);
    }
    let s = h.gw.stats();
    assert_eq!(s.drops(DropReason::RateLimited), 980);
    assert_eq!(s.drops(DropReason::Malformed), 20);
    // The device is not affected: its PINGREQ is answered.
    let out = h.send(&device, Packet::PingReq { client_id: None });
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Transmit {
                packet: Packet::PingResp,
                ..
            }
        )),
        "{out:?}"
    );
}

#[test]
fn another_port_of_the_same_address_shares_the_budget() {
    let mut h = limited(10, 5);
    for port in 0..10 {
        h.raw(&Peer::udp(SocketAddr::from(([10, 0, 0, 66], port))), &[0]);
    }
    assert_eq!(h.gw.stats().drops(DropReason::RateLimited), 5);
}

#[test]
fn the_budget_refills_with_time() {
    let mut h = limited(10, 1);
    let device = Peer::udp(SocketAddr::from(([10, 0, 0, 7], 5000)));
    h.raw(&device, &[0]);
    h.raw(&device, &[0]);
    assert_eq!(h.gw.stats().drops(DropReason::RateLimited), 1);
    h.advance(Duration::from_millis(100));
    h.raw(&device, &[0]);
    assert_eq!(h.gw.stats().drops(DropReason::RateLimited), 1);
}

#[test]
fn zero_turns_the_limit_off() {
    let mut h = limited(0, 0);
    let device = Peer::udp(SocketAddr::from(([10, 0, 0, 7], 5000)));
    for _ in 0..10_000 {
        h.raw(&device, &[0]);
    }
    assert_eq!(h.gw.stats().drops(DropReason::RateLimited), 0);
    assert_eq!(h.gw.rate_limited_sources(), 0);
}

#[test]
fn spoofed_sources_keep_the_table_bounded() {
    let mut h = limited(1, 1);
    for i in 0..50_000u32 {
        let spoofed = Peer::udp(SocketAddr::from((i.to_be_bytes(), 1)));
        h.raw(&spoofed, &[0]);
    }
    assert!(h.gw.rate_limited_sources() <= RATE_LIMIT_SOURCES);
}
