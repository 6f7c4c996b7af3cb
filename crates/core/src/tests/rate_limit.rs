//! The rate limits as the engine applies them: per source address for what
//! creates state or comes from no session, per session for the rest; excess
//! dropped and counted, other sources and sessions unaffected — with the
//! defaults, a fleet behind one address loses nothing.

use super::lockout::connect_packet;
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

// ------------------------------------------- fair admission with defaults

fn at(ip: [u8; 4], port: u16) -> Peer {
    Peer::udp(SocketAddr::from((ip, port)))
}

fn pingresps(out: &[Output], to: &Peer) -> usize {
    packets_to(out, to)
        .iter()
        .filter(|p| matches!(p, Packet::PingResp))
        .count()
}

#[test]
fn a_flood_from_one_port_does_not_starve_another_port_of_the_same_address() {
    let mut h = Harness::new();
    let device = at([10, 0, 0, 1], 5000);
    let flooder = at([10, 0, 0, 1], 6000);
    let stranger = at([10, 0, 0, 1], 7000);
    h.connect(&device, "dev", true);
    h.connect(&flooder, "flood", true);
    // For ten seconds: the flooding session sends 1,000 PINGREQs a
    // millisecond apart... (10,000 a second), a port with no session as
    // many garbage datagrams, and the device one PINGREQ a second.
    let mut answered = 0;
    for ms in 0..10_000u32 {
        h.send(&flooder, Packet::PingReq { client_id: None });
        h.raw(&stranger, &[0xff, 0x00, 0x13]);
        if ms % 1000 == 0 {
            let out = h.send(&device, Packet::PingReq { client_id: None });
            answered += pingresps(&out, &device);
        }
        h.advance(Duration::from_millis(1));
    }
    assert_eq!(answered, 10, "every one of the device's pings answered");
    // The flooders got their own budgets' worth, no more: the session its
    // burst (200) and 100/s, the port with no session its address's.
    let limited = h.gw.stats().drops(DropReason::RateLimited);
    assert!(limited >= 2 * 10_000 - 2 * (200 + 1000) - 2, "{limited}");
    assert_eq!(h.gw.client_state("dev"), Some(&ClientState::Active));
}

#[test]
fn a_thousand_devices_behind_one_address_at_one_message_a_second_lose_nothing() {
    let mut h = Harness::new();
    let nat = [192, 0, 2, 1];
    let sub = at(nat, 1);
    h.connect(&sub, "sub", true);
    h.subscribe(&sub, 1, "fleet/#", QoS::AtLeastOnce);
    // They connect at 100 a second (a fleet coming up after an outage
    // retries its CONNECTs; here each one lands).
    let devices: Vec<Peer> = (0..1000).map(|i| at(nat, 10_000 + i)).collect();
    let mut ids = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        h.connect(d, &format!("d{i}"), true);
        ids.push(h.register(d, 1, &format!("fleet/{i}")));
        h.advance(Duration::from_millis(10));
    }
    // Ten seconds at one QoS 1 message a second each; the subscriber acks
    // every delivery at once.
    let (mut acked, mut delivered) = (0, 0);
    for second in 0..10u16 {
        for (d, id) in devices.iter().zip(&ids) {
            let msg_id = second + 2;
            let mut out = h.send(d, publish(QoS::AtLeastOnce, TopicRef::Id(*id), msg_id, "v"));
            acked += packets_to(&out, d)
                .iter()
                .filter(|p| {
                    matches!(p, Packet::PubAck { msg_id: m, return_code: ReturnCode::Accepted, .. } if *m == msg_id)
                })
                .count();
            // Deliver and acknowledge until the subscriber's queue is empty.
            while let Some((topic, m)) = packets_to(&out, &sub).iter().find_map(|p| match p {
                Packet::Publish { topic, msg_id, .. } => Some((topic.raw(), *msg_id)),
                Packet::Register {
                    topic_id, msg_id, ..
                } => Some((*topic_id, *msg_id)),
                _ => None,
            }) {
                let is_publish = packets_to(&out, &sub)
                    .iter()
                    .any(|p| matches!(p, Packet::Publish { .. }));
                delivered += usize::from(is_publish);
                let ack = if is_publish {
                    Packet::PubAck {
                        topic_id: topic,
                        msg_id: m,
                        return_code: ReturnCode::Accepted,
                    }
                } else {
                    Packet::RegAck {
                        topic_id: topic,
                        msg_id: m,
                        return_code: ReturnCode::Accepted,
                    }
                };
                out = h.send(&sub, ack);
            }
        }
        h.send(&sub, Packet::PingReq { client_id: None });
        h.advance(Duration::from_secs(1));
    }
    assert_eq!(acked, 10_000);
    assert_eq!(delivered, 10_000);
    assert_eq!(h.gw.stats().drops(DropReason::RateLimited), 0);
    assert_eq!(h.gw.stats().total_drops(), 0);
}

#[test]
fn state_creating_datagrams_from_one_address_are_limited() {
    let mut h = Harness::new();
    let addr = [10, 0, 0, 9];
    let device = at(addr, 1);
    h.connect(&device, "dev", true);
    // 1,000 CONNECTs from 1,000 ports of the address at one instant: the
    // address's burst (200, less the device's own) is let through.
    let mut accepted = 0;
    for port in 0..1000u16 {
        let from = at(addr, 2000 + port);
        let out = h.send(&from, connect_packet(&format!("c{port}"), 60));
        accepted += packets_to(&out, &from).len();
    }
    assert_eq!(accepted, 199);
    // SEARCHGW and QoS -1 publishes from the address count against it too.
    let out = h.send(&at(addr, 9), Packet::SearchGw { radius: 0 });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.gw.stats().drops(DropReason::RateLimited), 801 + 1);
    // A session created before is not: its pings are answered.
    let out = h.send(&device, Packet::PingReq { client_id: None });
    assert_eq!(pingresps(&out, &device), 1);
    // Another address is not either.
    h.connect(&at([10, 0, 0, 10], 1), "elsewhere", true);
    // A second later the address may create 100 more.
    h.advance(Duration::from_secs(1));
    let accepted = (0..200u16)
        .filter(|i| {
            let from = at(addr, 5000 + i);
            let out = h.send(&from, connect_packet(&format!("later{i}"), 60));
            !packets_to(&out, &from).is_empty()
        })
        .count();
    assert_eq!(accepted, 100);
}

#[test]
fn a_session_is_limited_by_its_own_bucket_and_its_acknowledgements_are_free() {
    let mut h = Harness::with(EngineConfig {
        per_session_packets_per_sec: 10,
        per_session_burst: 5,
        ..EngineConfig::default()
    });
    let (a, b) = (at([10, 0, 0, 1], 1), at([10, 0, 0, 1], 2));
    h.connect(&a, "a", true);
    h.connect(&b, "b", true);
    let answered: usize = (0..50)
        .map(|_| {
            let out = h.send(&a, Packet::PingReq { client_id: None });
            pingresps(&out, &a)
        })
        .sum();
    assert_eq!(answered, 5);
    assert_eq!(h.gw.stats().drops(DropReason::RateLimited), 45);
    // b, behind the same address, has its own budget.
    let out = h.send(&b, Packet::PingReq { client_id: None });
    assert_eq!(pingresps(&out, &b), 1);
    // Acknowledgements are not charged: 1,000 stray PUBACKs from a are
    // dropped as unmatched, not rate-limited, and a's budget is intact
    // for when it refills.
    for _ in 0..1000 {
        h.send(
            &a,
            Packet::PubAck {
                topic_id: 1,
                msg_id: 1,
                return_code: ReturnCode::Accepted,
            },
        );
    }
    assert_eq!(h.gw.stats().drops(DropReason::RateLimited), 45);
    assert_eq!(h.gw.stats().drops(DropReason::UnmatchedAck), 1000);
    h.advance(Duration::from_millis(100));
    let out = h.send(&a, Packet::PingReq { client_id: None });
    assert_eq!(pingresps(&out, &a), 1);
}
