//! MQTT-SN 2.0 byte vectors worked by hand from the draft's packet layouts
//! (CSD01, §3.1–§3.20; field order as in each section): every packet of the
//! catalogue decodes to the expected typed packet and encodes back to the
//! same bytes, and each kind of malformed packet gets its named error.
//! Each vector's Length byte was checked by counting its fields.

// Tests may unwrap and panic: the crate's panic lints guard library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{Bytes, BytesMut};
use sngate_wire::v2::{
    self, Ack, AliasKind, Auth, AuthData, ConnAck, Connect, DecodeError, Delivery, Disconnect,
    EncodeError, Forwarder, ForwarderForm, MonotonicCounter, Packet, PacketType, Protection,
    PubWos, Publish, QoS, ReasonCode, RegAck, Register, RetainHandling, SubAck, Subscribe,
    SubscribeOptions, Topic, Unsubscribe, Will,
};

/// Bytes from hex with spaces ("0c 01 0001").
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex: {s}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn enc(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    v2::encode(p, &mut b).unwrap_or_else(|e| panic!("encode {p:?}: {e}"));
    assert_eq!(v2::encoded_len(p), Ok(b.len()));
    b.to_vec()
}

/// `bytes` decodes to `packet` and `packet` encodes to `bytes`.
#[track_caller]
fn vector(bytes: &str, packet: Packet) {
    let wire = hex(bytes);
    assert_eq!(v2::decode(&wire), Ok(packet.clone()), "decode {bytes}");
    assert_eq!(enc(&packet), wire, "encode {packet:?}");
}

#[track_caller]
fn refused(bytes: &str, error: DecodeError) {
    assert_eq!(v2::decode(&hex(bytes)), Err(error), "decode {bytes}");
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn connect() -> Connect {
    Connect {
        clean_start: true,
        allow_address_change: false,
        allow_server_suggested: false,
        packet_id: 1,
        keep_alive: 60,
        max_packet_size: 0,
        default_awake_messages: None,
        session_expiry: None,
        will: None,
        auth: None,
        client_id: "c1".into(),
    }
}

#[test]
fn connect_minimal_and_with_every_optional_field() {
    // §3.1: Flags · PacketId · ProtocolVersion · KeepAlive · MaxPacketSize · ClientId.
    vector(
        "0c 01 01 0001 02 003c 0000 6331",
        Packet::Connect(Box::new(connect())),
    );
    // Flags 0x5B: server-suggested values, DAM, session expiry, will, clean
    // start; Will Flags 0x17: retain, QoS 1, topic name. The Will Flags come
    // before the packet id, so the version byte moves to offset 5 (T-2).
    vector(
        "1e 01 5b 17 1234 02 001e 0100 05 00000e10 0003 772f74 0003 627965 64657631",
        Packet::Connect(Box::new(Connect {
            clean_start: true,
            allow_address_change: false,
            allow_server_suggested: true,
            packet_id: 0x1234,
            keep_alive: 30,
            max_packet_size: 256,
            default_awake_messages: Some(5),
            session_expiry: Some(3600),
            will: Some(Will {
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: Topic::Name("w/t".into()),
                payload: b(b"bye"),
            }),
            auth: None,
            client_id: "dev1".into(),
        })),
    );
    // Will on a predefined alias (no name field), address changes allowed,
    // empty client id (the server assigns one).
    vector(
        "10 01 22 09 0002 02 0001 000a 0007 0001 78",
        Packet::Connect(Box::new(Connect {
            clean_start: false,
            allow_address_change: true,
            will: Some(Will {
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: Topic::PredefinedAlias(7),
                payload: b(b"x"),
            }),
            packet_id: 2,
            keep_alive: 1,
            max_packet_size: 10,
            client_id: String::new(),
            ..connect()
        })),
    );
}

#[test]
fn connect_with_mqtt_basic_authentication() {
    // §4.11: method "MQTT-BASIC", data = 2-byte length + user "M" + 2-byte
    // length + password "PW"; MPS 100, client id "C".
    vector(
        "1f 01 05 0001 02 003c 0064 0a 4d5154542d4241534943 0007 00014d 00025057 43",
        Packet::Connect(Box::new(Connect {
            max_packet_size: 100,
            auth: Some(AuthData {
                method: "MQTT-BASIC".into(),
                data: b(b"\x00\x01M\x00\x02PW"),
            }),
            client_id: "C".into(),
            ..connect()
        })),
    );
    let Ok(Packet::Connect(c)) = v2::decode(&hex(
        "1f 01 05 0001 02 003c 0064 0a 4d5154542d4241534943 0007 00014d 00025057 43",
    )) else {
        panic!("not a CONNECT");
    };
    let auth = c.auth.unwrap();
    assert_eq!(auth.method, v2::basic_auth::METHOD);
    let basic = v2::basic_auth::MqttBasic::parse(&auth.data).unwrap();
    assert_eq!(
        (basic.user_name.as_str(), &basic.password[..]),
        ("M", &b"PW"[..])
    );
}

#[test]
fn connack_variants() {
    // §3.2: Flags · PacketId · ReasonCode · [SEI] · [Server KA] · [Auth] · [Assigned id].
    let base = ConnAck {
        session_present: false,
        packet_id: 0x1234,
        reason: ReasonCode::SUCCESS,
        session_expiry: None,
        server_keep_alive: None,
        auth: None,
        assigned_client_id: String::new(),
    };
    vector(
        "0c 02 02 1234 00 00000e10 4131",
        Packet::ConnAck(Box::new(ConnAck {
            session_expiry: Some(3600),
            assigned_client_id: "A1".into(),
            ..base.clone()
        })),
    );
    vector(
        "09 02 05 0001 00 012c 78",
        Packet::ConnAck(Box::new(ConnAck {
            session_present: true,
            packet_id: 1,
            server_keep_alive: Some(300),
            assigned_client_id: "x".into(),
            ..base.clone()
        })),
    );
    // The success CONNACK of an MQTT-BASIC exchange still carries the method.
    vector(
        "13 02 08 0001 00 0a 4d5154542d4241534943 0000",
        Packet::ConnAck(Box::new(ConnAck {
            packet_id: 1,
            auth: Some(AuthData {
                method: "MQTT-BASIC".into(),
                data: Bytes::new(),
            }),
            ..base.clone()
        })),
    );
    vector(
        "06 02 00 0007 84",
        Packet::ConnAck(Box::new(ConnAck {
            packet_id: 7,
            reason: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            ..base
        })),
    );
}

#[test]
fn auth_data_runs_to_the_end() {
    // §3.3: PacketId · ReasonCode · MethodLength(1) · Method · Data (no length).
    vector(
        "15 0f 1234 18 0b 534352414d2d5348412d31 723d6162",
        Packet::Auth(Auth {
            packet_id: 0x1234,
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            method: "SCRAM-SHA-1".into(),
            data: b(b"r=ab"),
        }),
    );
}

#[test]
fn register_and_regack() {
    vector(
        "08 10 00 0002 612f62",
        Packet::Register(Register {
            packet_id: 2,
            alias: None,
            topic_name: "a/b".into(),
        }),
    );
    vector(
        "0a 10 01 0101 0005 612f62",
        Packet::Register(Register {
            packet_id: 0x0101,
            alias: Some(5),
            topic_name: "a/b".into(),
        }),
    );
    vector(
        "08 11 04 0002 0005 00",
        Packet::RegAck(RegAck {
            alias_kind: AliasKind::Session,
            packet_id: 2,
            alias: Some(5),
            reason: Some(ReasonCode::SUCCESS),
        }),
    );
    // A predefined name registered: type 01, the predefined alias, 0x1A.
    vector(
        "08 11 05 0003 0001 1a",
        Packet::RegAck(RegAck {
            alias_kind: AliasKind::Predefined,
            packet_id: 3,
            alias: Some(1),
            reason: Some(ReasonCode::TOPIC_ALIAS_EXISTS),
        }),
    );
    // A client's REGACK: no alias, no reason code (= success).
    vector(
        "05 11 00 0101",
        Packet::RegAck(RegAck {
            alias_kind: AliasKind::Session,
            packet_id: 0x0101,
            alias: None,
            reason: None,
        }),
    );
}

#[test]
fn publish_variants() {
    // §3.6.2: Flags · [PacketId if QoS > 0] · alias-or-length · [name] · payload.
    vector(
        "0c 03 23 0007 0003 612f62 6869",
        Packet::Publish(Publish {
            delivery: Delivery::AtLeastOnce { packet_id: 7 },
            retain: false,
            topic: Topic::Name("a/b".into()),
            payload: b(b"hi"),
        }),
    );
    // QoS 0 has no packet id field at all (T-3).
    vector(
        "07 03 00 0005 6869",
        Packet::Publish(Publish {
            delivery: Delivery::AtMostOnce,
            retain: false,
            topic: Topic::SessionAlias(5),
            payload: b(b"hi"),
        }),
    );
    vector(
        "09 03 d1 0008 0001 4f4e",
        Packet::Publish(Publish {
            delivery: Delivery::ExactlyOnce {
                packet_id: 8,
                dup: true,
            },
            retain: true,
            topic: Topic::PredefinedAlias(1),
            payload: b(b"ON"),
        }),
    );
    // QoS 0 with a full name and an empty payload.
    vector(
        "06 03 03 0001 74",
        Packet::Publish(Publish {
            delivery: Delivery::AtMostOnce,
            retain: false,
            topic: Topic::Name("t".into()),
            payload: Bytes::new(),
        }),
    );
    vector(
        "09 12 01 0001 32312e35",
        Packet::PubWos(PubWos {
            retain: false,
            topic: Topic::PredefinedAlias(1),
            payload: b(b"21.5"),
        }),
    );
    vector(
        "08 12 13 0001 74 6869",
        Packet::PubWos(PubWos {
            retain: true,
            topic: Topic::Name("t".into()),
            payload: b(b"hi"),
        }),
    );
}

#[test]
fn long_length_form_is_read_and_written_above_255() {
    // A 300-byte payload: 1 type + 1 flags + 2 alias + 300 = 304 body bytes,
    // 307 in all with the 3-byte Length 01 0133.
    let payload = Bytes::from(vec![0xAB; 300]);
    let p = Packet::Publish(Publish {
        delivery: Delivery::AtMostOnce,
        retain: false,
        topic: Topic::SessionAlias(1),
        payload,
    });
    let wire = enc(&p);
    assert_eq!(wire.len(), 307);
    assert_eq!(&wire[..7], &hex("01 0133 03 00 0001")[..]);
    assert_eq!(v2::decode(&wire), Ok(p));
    // Receivers MUST accept the long form for small packets too [2.1.2-1].
    assert_eq!(
        v2::decode(&hex("01 0006 0c 000b")),
        Ok(Packet::PingReq { packet_id: 11 })
    );
}

#[test]
fn acks_with_and_without_reason_code() {
    let ack = |packet_id, reason| Ack { packet_id, reason };
    vector(
        "05 04 0007 00",
        Packet::PubAck(ack(7, Some(ReasonCode::SUCCESS))),
    );
    vector("04 04 0007", Packet::PubAck(ack(7, None)));
    vector(
        "05 05 0008 10",
        Packet::PubRec(ack(8, Some(ReasonCode::NO_MATCHING_SUBSCRIBERS))),
    );
    vector("04 06 0008", Packet::PubRel(ack(8, None)));
    vector(
        "05 06 0008 92",
        Packet::PubRel(ack(8, Some(ReasonCode::PACKET_ID_NOT_FOUND))),
    );
    vector("04 07 0008", Packet::PubComp(ack(8, None)));
    vector(
        "05 0b 000a 11",
        Packet::UnsubAck(ack(10, Some(ReasonCode::NO_SUBSCRIPTION_EXISTED))),
    );
    assert_eq!(ack(1, None).reason_or_success(), ReasonCode::SUCCESS);
}

#[test]
fn subscribe_suback_unsubscribe() {
    // Flags 0xAB: No Local, max QoS 1, RaP 0, Retain Handling 2, filter.
    vector(
        "08 08 ab 0009 732f2b",
        Packet::Subscribe(Subscribe {
            options: SubscribeOptions {
                no_local: true,
                max_qos: QoS::AtLeastOnce,
                retain_as_published: false,
                retain_handling: RetainHandling::DoNotSend,
            },
            packet_id: 9,
            topic: Topic::Name("s/+".into()),
        }),
    );
    // By predefined alias, QoS 2, Retain As Published, Retain Handling 1.
    vector(
        "07 08 55 000a 0001",
        Packet::Subscribe(Subscribe {
            options: SubscribeOptions {
                no_local: false,
                max_qos: QoS::ExactlyOnce,
                retain_as_published: true,
                retain_handling: RetainHandling::SendIfNew,
            },
            packet_id: 10,
            topic: Topic::PredefinedAlias(1),
        }),
    );
    vector(
        "08 09 04 0009 0006 01",
        Packet::SubAck(SubAck {
            alias_kind: AliasKind::Session,
            packet_id: 9,
            alias: Some(6),
            reason: Some(ReasonCode::GRANTED_QOS_1),
        }),
    );
    // A wildcard filter: no alias, type 01 [3.8.2.1-2].
    vector(
        "06 09 01 0009 01",
        Packet::SubAck(SubAck {
            alias_kind: AliasKind::Predefined,
            packet_id: 9,
            alias: None,
            reason: Some(ReasonCode::GRANTED_QOS_1),
        }),
    );
    vector(
        "08 0a 03 000a 732f2b",
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 10,
            topic: Topic::Name("s/+".into()),
        }),
    );
    vector(
        "07 0a 00 000b 0006",
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 11,
            topic: Topic::SessionAlias(6),
        }),
    );
}

#[test]
fn ping_sleep_wakeup() {
    vector("04 0c 000b", Packet::PingReq { packet_id: 11 });
    vector(
        "05 0d 000b 03",
        Packet::PingResp {
            packet_id: 11,
            messages_remaining: Some(3),
        },
    );
    vector(
        "04 0d 000b",
        Packet::PingResp {
            packet_id: 11,
            messages_remaining: None,
        },
    );
    vector(
        "09 13 01 000c 00000258",
        Packet::SleepReq {
            retain_aliases: true,
            packet_id: 12,
            duration: 600,
        },
    );
    vector(
        "06 14 00 000c 00",
        Packet::SleepResp {
            packet_id: 12,
            duration: None,
            reason: Some(ReasonCode::SUCCESS),
        },
    );
    vector(
        "0a 14 01 000c 0000012c 00",
        Packet::SleepResp {
            packet_id: 12,
            duration: Some(300),
            reason: Some(ReasonCode::SUCCESS),
        },
    );
    vector("02 15", Packet::WakeUp);
}

#[test]
fn disconnect_variants() {
    let d = Disconnect {
        packet_id: None,
        reason: None,
        session_expiry: None,
        reason_string: String::new(),
    };
    vector("03 0e 00", Packet::Disconnect(d.clone()));
    vector(
        "04 0e 04 04",
        Packet::Disconnect(Disconnect {
            reason: Some(ReasonCode::DISCONNECT_WITH_WILL),
            ..d.clone()
        }),
    );
    vector(
        "07 0e 02 0000003c",
        Packet::Disconnect(Disconnect {
            session_expiry: Some(60),
            ..d.clone()
        }),
    );
    // A server answering a packet with no virtual connection, echoing its id.
    vector(
        "06 0e 05 000b f4",
        Packet::Disconnect(Disconnect {
            packet_id: Some(11),
            reason: Some(ReasonCode::NO_VIRTUAL_CONNECTION),
            ..d.clone()
        }),
    );
    vector(
        "06 0e 04 8d 6b61",
        Packet::Disconnect(Disconnect {
            reason: Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            reason_string: "ka".into(),
            ..d.clone()
        }),
    );
    // Every field: the Reason Code comes before the Session Expiry Interval
    // (§3.13.3–§3.13.6 in order; docs/protocol-v2.md on the fact sheet).
    vector(
        "0d 0e 07 0001 04 0000003c 627965",
        Packet::Disconnect(Disconnect {
            packet_id: Some(1),
            reason: Some(ReasonCode::DISCONNECT_WITH_WILL),
            session_expiry: Some(60),
            reason_string: "bye".into(),
        }),
    );
}

#[test]
fn discovery_packets() {
    vector(
        "05 16 01 0384",
        Packet::Advertise {
            gw_id: 1,
            duration: 900,
        },
    );
    vector(
        "02 17",
        Packet::SearchGw {
            network_info: Bytes::new(),
        },
    );
    vector(
        "03 17 01",
        Packet::SearchGw {
            network_info: b(b"\x01"),
        },
    );
    vector(
        "03 18 01",
        Packet::GwInfo {
            gw_id: 1,
            gw_address: Bytes::new(),
        },
    );
    vector(
        "07 18 01 c0a80001",
        Packet::GwInfo {
            gw_id: 1,
            gw_address: b(&[192, 168, 0, 1]),
        },
    );
}

#[test]
fn envelopes() {
    let ping = Packet::PingReq { packet_id: 11 };
    // Forwarder, Length over the whole datagram, CAI length 2.
    vector(
        "09 fc 02 0a0b 040c000b",
        Packet::Forwarder(Forwarder {
            form: ForwarderForm::WholeLength,
            client_addressing: b(&[0x0a, 0x0b]),
            inner: Box::new(ping.clone()),
        }),
    );
    // Forwarder, §3.19 as stored: Length 4 covers the wrapper only.
    vector(
        "04 fc 0a0b 040c000b",
        Packet::Forwarder(Forwarder {
            form: ForwarderForm::WrapperLength,
            client_addressing: b(&[0x0a, 0x0b]),
            inner: Box::new(ping.clone()),
        }),
    );
    vector(
        "0c fe 0004 64657631 040c000d",
        Packet::Connection {
            client_id: "dev1".into(),
            inner: Box::new(Packet::PingReq { packet_id: 13 }),
        },
    );
    // A forwarder may carry a connection encapsulation.
    vector(
        "10 fc 01 07 0c fe 0004 64657631 040c000d",
        Packet::Forwarder(Forwarder {
            form: ForwarderForm::WholeLength,
            client_addressing: b(&[0x07]),
            inner: Box::new(Packet::Connection {
                client_id: "dev1".into(),
                inner: Box::new(Packet::PingReq { packet_id: 13 }),
            }),
        }),
    );
    // Protection, HMAC-SHA256 (scheme 0) truncated to 64 bits (tag code 4),
    // a 16-bit counter 42, no crypto material, a PINGREQ inside.
    vector(
        "1e ff 41 00 0102030405060708 deadbeef 002a 040c000b e45fa7d4500e5b0a",
        Packet::Protection(Box::new(Protection {
            tag_length_code: 4,
            scheme: 0x00,
            sender_id: [1, 2, 3, 4, 5, 6, 7, 8],
            random: [0xde, 0xad, 0xbe, 0xef],
            crypto_material: Bytes::new(),
            counter: MonotonicCounter::U16(42),
            protected: b(&hex("040c000b").leak()[..]),
            tag: b(&hex("e45fa7d4500e5b0a").leak()[..]),
        })),
    );
    // AES-GCM (0x46) at its nominal tag (code 1 = 16 bytes), 4 bytes of
    // crypto material, a 32-bit counter: the ciphertext is opaque.
    let mut wire = hex("ff 1a 46 0102030405060708 00000001 aabbccdd 00000007 99999999");
    wire.extend([0x55; 16]);
    wire.insert(0, (wire.len() + 1) as u8);
    let Ok(Packet::Protection(p)) = v2::decode(&wire) else {
        panic!("protection envelope not decoded");
    };
    assert_eq!(p.counter, MonotonicCounter::U32(7));
    assert_eq!(&p.crypto_material[..], &hex("aabbccdd")[..]);
    assert_eq!(&p.protected[..], &hex("99999999")[..]);
    assert_eq!(p.tag.len(), 16);
    assert_eq!(enc(&Packet::Protection(p)), wire);
}

#[test]
fn malformed_packets_get_named_errors() {
    use DecodeError as E;
    use PacketType as T;
    refused("", E::Empty);
    refused("00", E::ZeroLength);
    refused("01 0003", E::LongLengthTooSmall(3));
    refused("01 00", E::TruncatedHeader(2));
    refused("02", E::TruncatedHeader(1));
    refused(
        "05 0c 000b",
        E::LengthMismatch {
            declared: 5,
            actual: 4,
        },
    );
    refused("02 00", E::ReservedPacketType(0x00));
    refused("02 19", E::ReservedPacketType(0x19));
    refused("02 fd", E::ReservedPacketType(0xfd));
    refused(
        "0c 01 81 0001 02 003c 0000 6331",
        E::ReservedBits {
            packet_type: T::Connect,
            field: "Connect Flags",
            value: 0x81,
        },
    );
    refused(
        "0f 01 03 20 0001 02 003c 0000 0000 0000",
        E::ReservedBits {
            packet_type: T::Connect,
            field: "Will Flags",
            value: 0x20,
        },
    );
    refused(
        "0c 01 01 0001 01 003c 0000 6331",
        E::UnsupportedProtocolVersion {
            packet_id: 1,
            version: 1,
        },
    );
    refused(
        "08 01 01 0001 02 003c",
        E::Truncated {
            packet_type: T::Connect,
            field: "Maximum Packet Size",
        },
    );
    refused(
        "07 03 60 0005 6869",
        E::ReservedQoS {
            packet_type: T::Publish,
        },
    );
    refused("09 03 a0 0007 0005 6869", E::DupBelowQoS2 { qos: 1 });
    refused(
        "07 03 04 0005 6869",
        E::ReservedBits {
            packet_type: T::Publish,
            field: "PUBLISH Flags",
            value: 0x04,
        },
    );
    refused(
        "07 03 02 0005 6869",
        E::TopicTypeNotAllowed {
            packet_type: T::Publish,
            bits: 0b10,
        },
    );
    refused(
        "07 12 00 0005 6869",
        E::TopicTypeNotAllowed {
            packet_type: T::PubWos,
            bits: 0b00,
        },
    );
    refused(
        "08 11 03 0002 0005 00",
        E::TopicTypeNotAllowed {
            packet_type: T::RegAck,
            bits: 0b11,
        },
    );
    refused("08 08 0f 0009 732f2b", E::ReservedRetainHandling);
    refused(
        "08 08 63 0009 732f2b",
        E::ReservedQoS {
            packet_type: T::Subscribe,
        },
    );
    refused(
        "06 04 0007 00 00",
        E::TrailingBytes {
            packet_type: T::PubAck,
            extra: 1,
        },
    );
    refused(
        "05 0c 000b 00",
        E::TrailingBytes {
            packet_type: T::PingReq,
            extra: 1,
        },
    );
    // A name field longer than what is left.
    refused(
        "0a 03 23 0007 0009 612f62",
        E::Truncated {
            packet_type: T::Publish,
            field: "Topic Name",
        },
    );
    refused(
        "06 10 00 0002 00",
        E::InvalidString {
            packet_type: T::Register,
            field: "Topic Name",
        },
    );
    refused(
        "06 10 00 0002 ff",
        E::InvalidString {
            packet_type: T::Register,
            field: "Topic Name",
        },
    );
    refused(
        "06 fc 00 04 fc 00",
        E::NestedEnvelope {
            outer: T::ForwarderEncapsulation,
            inner: T::ForwarderEncapsulation,
        },
    );
    refused(
        "0c fe 0001 61 07 fc 00 040c000b",
        E::NestedEnvelope {
            outer: T::ConnectionEncapsulation,
            inner: T::ForwarderEncapsulation,
        },
    );
    refused(
        "07 fc 01 0a 04 0c 00",
        E::InEnvelope {
            outer: T::ForwarderEncapsulation,
            error: Box::new(E::LengthMismatch {
                declared: 4,
                actual: 3,
            }),
        },
    );
    refused(
        "16 ff 21 00 0102030405060708 deadbeef 040c000b 0102",
        E::ReservedProtectionCode {
            field: "Authentication Tag Length",
        },
    );
    refused(
        "16 ff 43 00 0102030405060708 deadbeef 040c000b 0102",
        E::ReservedProtectionCode {
            field: "Monotonic Counter Length",
        },
    );
    // Tag code 0 (provider-defined) and a ciphertext that does not delimit itself.
    refused(
        "13 ff 00 f0 0102030405060708 deadbeef 55 6677",
        E::UndeterminedTagLength,
    );
}

#[test]
fn encoder_refuses_what_the_wire_cannot_carry() {
    let mut out = BytesMut::new();
    let pubwos = Packet::PubWos(PubWos {
        retain: false,
        topic: Topic::SessionAlias(1),
        payload: Bytes::new(),
    });
    assert_eq!(
        v2::encode(&pubwos, &mut out),
        Err(EncodeError::PubWosSessionAlias)
    );
    let long_method = Packet::Auth(Auth {
        packet_id: 1,
        reason: ReasonCode::SUCCESS,
        method: "m".repeat(256),
        data: Bytes::new(),
    });
    assert!(matches!(
        v2::encode(&long_method, &mut out),
        Err(EncodeError::FieldTooLong {
            field: "Authentication Method",
            ..
        })
    ));
    let too_long = Packet::SearchGw {
        network_info: Bytes::from(vec![0; 65_535]),
    };
    assert!(matches!(
        v2::encode(&too_long, &mut out),
        Err(EncodeError::TooLong { .. })
    ));
    let nested = Packet::Connection {
        client_id: "a".into(),
        inner: Box::new(Packet::Connection {
            client_id: "b".into(),
            inner: Box::new(Packet::WakeUp),
        }),
    };
    assert!(matches!(
        v2::encode(&nested, &mut out),
        Err(EncodeError::NestedEnvelope { .. })
    ));
    let bad_tag = Packet::Protection(Box::new(Protection {
        tag_length_code: 4,
        scheme: 0,
        sender_id: [0; 8],
        random: [0; 4],
        crypto_material: Bytes::new(),
        counter: MonotonicCounter::Absent,
        protected: b(b"\x04\x0c\x00\x01"),
        tag: b(b"\x00"),
    }));
    assert_eq!(
        v2::encode(&bad_tag, &mut out),
        Err(EncodeError::TagLength {
            expected: 8,
            actual: 1
        })
    );
    assert!(out.is_empty(), "a refused packet writes nothing");
}
