//! The one-port version rule (`sngate_wire::version`): no 1.2 datagram is
//! ever read as 2.0, a 2.0 CONNECT is never a valid 1.2 packet and a 1.2
//! CONNECT never a valid 2.0 one, and each type byte the two versions share
//! goes where the rule says — with concrete datagrams for every ambiguous
//! byte (fact sheet §12), a sweep over all 256 type bytes, and properties
//! over arbitrary CONNECTs of both versions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "common/v2_strategies.rs"]
#[allow(dead_code)]
mod strategies;

use bytes::BytesMut;
use proptest::prelude::*;
use sngate_wire::version::{
    FirstDatagram, ProtocolVersion, classify_first_datagram, connect_version,
};
use sngate_wire::{v1, v2};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// What a datagram must classify as.
#[derive(Debug)]
enum Want {
    /// 1.2, with the 1.2 packet type, and whether it is valid 2.0 too.
    V1(v1::MsgType, bool),
    /// 2.0 only, with the 2.0 packet type.
    V2(v2::PacketType),
}

#[track_caller]
fn check(bytes: &str, want: Want) {
    let d = hex(bytes);
    let got = classify_first_datagram(&d);
    match (&got, &want) {
        (FirstDatagram::V1_2 { packet, as_v2 }, Want::V1(t, also)) => {
            assert_eq!(packet.msg_type(), *t, "{bytes}");
            assert_eq!(as_v2.is_some(), *also, "{bytes}: also valid 2.0? {as_v2:?}");
        }
        (FirstDatagram::V2_0(p), Want::V2(t)) => assert_eq!(p.packet_type(), *t, "{bytes}"),
        _ => panic!("{bytes}: classified {got:?}, wanted {want:?}"),
    }
}

#[test]
fn every_ambiguous_type_byte_goes_where_the_rule_says() {
    use Want::{V1, V2};
    use v1::MsgType as M;
    use v2::PacketType as P;
    // 0x01: 1.2 SEARCHGW (3 bytes, or 5 in the long form) vs 2.0 CONNECT (>= 10).
    check("03 01 00", V1(M::SearchGw, false));
    check("01 0005 01 00", V1(M::SearchGw, false));
    check("0c 01 01 0001 02 003c 0000 6331", V2(P::Connect));
    check("01 000e 01 01 0001 02 003c 0000 6331", V2(P::Connect));
    // With a will the version byte is at offset 6, not 5.
    check(
        "1e 01 5b 17 1234 02 001e 0100 05 00000e10 0003 772f74 0003 627965 64657631",
        V2(P::Connect),
    );
    // 0x04: 1.2 CONNECT (>= 6 bytes) vs 2.0 PUBACK (4 or 5).
    check("08 04 04 01 003c 6331", V1(M::Connect, false));
    check("04 04 0007", V2(P::PubAck));
    check("05 04 0007 10", V2(P::PubAck));
    // 0x07: 1.2 WILLTOPIC "a" is also 2.0 PUBCOMP 0x2061: 1.2 wins.
    check("04 07 20 61", V1(M::WillTopic, true));
    check("05 07 0008 92", V2(P::PubComp));
    // 0x0A: 1.2 REGISTER vs 2.0 UNSUBSCRIBE; both valid here: 1.2.
    check("07 0a 03 000a 612f", V1(M::Register, true));
    check("08 0a 03 000a 732f2b", V1(M::Register, true));
    check("07 0a 00 000b 0006", V1(M::Register, true));
    // 0x0C: 1.2 PUBLISH (>= 7, QoS -1 too) vs 2.0 PINGREQ (4).
    check("09 0c 00 0001 0001 6869", V1(M::Publish, false));
    check("09 0c 61 0001 0000 6869", V1(M::Publish, false));
    check("04 0c 000b", V2(P::PingReq));
    // 0x0E: 1.2 PUBCOMP `04 0e id` is also 2.0 DISCONNECT + reason code.
    check("04 0e 04 f4", V1(M::PubComp, true));
    check("04 0e 00 07", V1(M::PubComp, true));
    check("03 0e 00", V2(P::Disconnect));
    check("07 0e 02 0000003c", V2(P::Disconnect));
    // 0x0F / 0x10: 1.2 PUBREC / PUBREL (4 bytes) vs 2.0 AUTH / REGISTER (>= 6).
    check("04 0f 0007", V1(M::PubRec, false));
    check(
        "15 0f 1234 18 0b 534352414d2d5348412d31 723d6162",
        V2(P::Auth),
    );
    check("04 10 0007", V1(M::PubRel, false));
    check("08 10 00 0002 612f62", V2(P::Register));
    // 0x12: 1.2 SUBSCRIBE by predefined id (7 bytes) is also a PUBWOS with a
    // 2-byte payload: 1.2. Any other PUBWOS length is 2.0.
    check("07 12 01 0001 0005", V1(M::Subscribe, true));
    check("09 12 01 0001 32312e35", V2(P::PubWos));
    check("08 12 13 0001 74 6869", V2(P::PubWos));
    // 0x16: 1.2 PINGREQ (2, or 2 + client id) vs 2.0 ADVERTISE (5).
    check("02 16", V1(M::PingReq, false));
    check("05 16 616263", V1(M::PingReq, true));
    check("05 16 01 0384", V2(P::Advertise));
    // 0x17: 1.2 PINGRESP and 2.0 SEARCHGW are the same two bytes.
    check("02 17", V1(M::PingResp, true));
    check("03 17 01", V2(P::SearchGw));
    // 0x18: 1.2 DISCONNECT (2 or 4) vs 2.0 GWINFO (>= 3).
    check("02 18", V1(M::Disconnect, false));
    check("04 18 003c", V1(M::Disconnect, true));
    check("03 18 01", V2(P::GwInfo));
    // 0xFE: 1.2 forwarder (Length covers the wrapper) vs 2.0 connection
    // encapsulation (Length covers everything).
    check(
        "04 fe 00 0a 08 04 04 01 003c 6331",
        V1(M::Encapsulated, false),
    );
    check(
        "0c fe 0004 64657631 040c000d",
        V2(P::ConnectionEncapsulation),
    );
    // Types only 1.2 clients send, or reserved in 2.0.
    check("05 00 01 0384", V1(M::Advertise, false));
    check("03 02 01", V1(M::GwInfo, false));
    check("03 05 00", V1(M::ConnAck, false));
    check("04 09 6869", V1(M::WillMsg, false));
    check("07 0b 0001 0001 00", V1(M::RegAck, false));
    check("07 0d 0001 0001 00", V1(M::PubAck, false));
    check("07 14 01 0001 0005", V1(M::Unsubscribe, false));
    check("05 1a 00 612f", V1(M::WillTopicUpd, false));
    check("04 1c 6869", V1(M::WillMsgUpd, false));
    // Types only 2.0 has.
    check("07 03 00 0005 6869", V2(P::Publish));
    check("04 05 0008", V2(P::PubRec));
    check("04 06 0008", V2(P::PubRel));
    check("08 08 ab 0009 732f2b", V2(P::Subscribe));
    check("05 11 00 0101", V2(P::RegAck));
    check("09 13 01 000c 00000258", V2(P::SleepReq));
    check("09 fc 02 0a0b 040c000b", V2(P::ForwarderEncapsulation));
    check(
        "1e ff 41 00 0102030405060708 deadbeef 002a 040c000b e45fa7d4500e5b0a",
        V2(P::ProtectionEncapsulation),
    );
}

#[test]
fn a_2_0_shaped_connect_of_another_version_is_reported_for_a_connack_0x84() {
    assert_eq!(
        classify_first_datagram(&hex("0c 01 01 0001 01 003c 0000 6331")),
        FirstDatagram::V2ConnectUnsupportedVersion {
            packet_id: 1,
            version: 1
        }
    );
    assert_eq!(
        classify_first_datagram(&hex("0c 01 01 beef 03 003c 0000 6331")),
        FirstDatagram::V2ConnectUnsupportedVersion {
            packet_id: 0xbeef,
            version: 3
        }
    );
}

#[test]
fn garbage_is_neither() {
    for d in ["", "00", "02 fd", "03 01 00 00", "05 0c 000b"] {
        let got = classify_first_datagram(&hex(d));
        assert!(
            matches!(got, FirstDatagram::Undecodable { .. }),
            "{d}: {got:?}"
        );
        assert_eq!(got.version(), None);
    }
}

/// Every type byte, with bodies of 0–20 bytes in several fills and both
/// Length forms: whatever the 1.2 decoder accepts is classified 1.2 with
/// that very packet, and nothing 1.2 accepts is ever classified 2.0.
#[test]
fn sweep_every_type_byte_no_1_2_datagram_is_read_as_2_0() {
    let fills: [fn(usize) -> u8; 7] = [
        |_| 0x00,
        |_| 0x01,
        |_| 0x02,
        |_| 0x41,
        |_| 0xFF,
        |i| i as u8,
        |i| if i % 2 == 0 { 0x00 } else { 0x61 },
    ];
    let (mut as_v1, mut as_v2, mut both) = (0, 0, 0);
    for t in 0..=255u8 {
        for len in 0..=20 {
            for fill in fills {
                let body: Vec<u8> = (0..len).map(fill).collect();
                let mut short = vec![(body.len() + 2) as u8, t];
                short.extend(&body);
                let mut long = vec![0x01, 0x00, (body.len() + 4) as u8, t];
                long.extend(&body);
                for d in [short, long] {
                    let got = classify_first_datagram(&d);
                    match v1::decode(&d) {
                        Ok(p) => {
                            let FirstDatagram::V1_2 { packet, as_v2: v2p } = &got else {
                                panic!("{d:02x?} is valid 1.2 {p:?} but classified {got:?}");
                            };
                            assert_eq!(packet, &p);
                            as_v1 += 1;
                            both += usize::from(v2p.is_some());
                        }
                        Err(_) => {
                            assert_ne!(got.version(), Some(ProtocolVersion::V1_2), "{d:02x?}");
                            if let FirstDatagram::V2_0(p) = &got {
                                assert_eq!(v2::decode(&d).as_ref(), Ok(p));
                                as_v2 += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    // The sweep reaches both versions and their overlap.
    assert!(
        as_v1 > 1000 && as_v2 > 1000 && both > 100,
        "{as_v1} {as_v2} {both}"
    );
}

/// A 1.2 CONNECT with any fields: flags, protocol id, duration, client id.
fn v1_connect() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), any::<u8>(), any::<u16>(), "[ -~]{0,40}").prop_map(|(flags, pid, dur, id)| {
        let mut body = vec![0x04, flags, pid];
        body.extend(dur.to_be_bytes());
        body.extend(id.as_bytes());
        let mut d = vec![(body.len() + 1) as u8];
        d.extend(body);
        d
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn a_2_0_connect_is_never_valid_1_2(c in strategies::connect()) {
        let p = v2::Packet::Connect(Box::new(c));
        let mut b = BytesMut::new();
        v2::encode(&p, &mut b).unwrap();
        prop_assert!(v1::decode(&b).is_err());
        prop_assert_eq!(classify_first_datagram(&b), FirstDatagram::V2_0(p));
        prop_assert_eq!(connect_version(&b), Some(ProtocolVersion::V2_0));
    }

    #[test]
    fn a_1_2_connect_is_never_valid_2_0(d in v1_connect()) {
        prop_assert!(v2::decode(&d).is_err());
        let got = classify_first_datagram(&d);
        let is_v1_connect = matches!(
            &got,
            FirstDatagram::V1_2 { packet: v1::Packet::Connect { .. }, as_v2: None }
        );
        prop_assert!(is_v1_connect, "{:?}", got);
        prop_assert_eq!(connect_version(&d), Some(ProtocolVersion::V1_2));
    }

    #[test]
    fn every_2_0_packet_is_2_0_unless_its_bytes_are_valid_1_2(p in strategies::packet(40)) {
        let mut b = BytesMut::new();
        v2::encode(&p, &mut b).unwrap();
        match v1::decode(&b) {
            Ok(p1) => prop_assert_eq!(
                classify_first_datagram(&b),
                FirstDatagram::V1_2 { packet: p1, as_v2: Some(p) }
            ),
            Err(_) => prop_assert_eq!(classify_first_datagram(&b), FirstDatagram::V2_0(p)),
        }
    }

    #[test]
    fn arbitrary_bytes_valid_as_1_2_are_1_2(d in proptest::collection::vec(any::<u8>(), 0..48)) {
        if v1::decode(&d).is_ok() {
            prop_assert_eq!(classify_first_datagram(&d).version(), Some(ProtocolVersion::V1_2));
        }
        if connect_version(&d) == Some(ProtocolVersion::V2_0) {
            prop_assert!(v1::decode(&d).is_err());
        }
    }
}
