//! Byte-exact vectors for the MQTT-SN v1.2 codec, written by hand from the fact
//! sheet (`shared/reference/mqtt-sn-facts.md` §1–§6, §7.10, traps T-8, T-9, T-14),
//! not from the codec. Every valid vector is checked in both directions:
//! `decode(bytes) == packet`, `encode(packet) == bytes` and
//! `encoded_len(packet) == bytes.len()`.

use bytes::{Bytes, BytesMut};
use sngate::proto::{
    DecodeError, EncodeError, MsgType, Packet, QoS, ReturnCode, SubscribeTopic, TopicRef,
    WillTopic, decode, encode, encoded_len,
};

// ---------------------------------------------------------------------------
// helpers

/// Both directions: the canonical encoding of `packet` is exactly `bytes`.
#[track_caller]
fn both_ways(bytes: &[u8], packet: Packet) {
    assert_eq!(decode(bytes), Ok(packet.clone()), "decode {bytes:02x?}");
    let mut buf = BytesMut::new();
    encode(&packet, &mut buf).unwrap_or_else(|e| panic!("encode {packet:?}: {e}"));
    assert_eq!(&buf[..], bytes, "encode {packet:?}");
    assert_eq!(
        encoded_len(&packet),
        Ok(bytes.len()),
        "encoded_len {packet:?}"
    );
}

/// Decode only: `bytes` is valid but not the canonical encoding (unused flag
/// bits set, long Length form on a short message, …).
#[track_caller]
fn decodes_to(bytes: &[u8], packet: Packet) {
    assert_eq!(decode(bytes), Ok(packet), "decode {bytes:02x?}");
}

#[track_caller]
fn rejects(bytes: &[u8], err: DecodeError) {
    assert_eq!(decode(bytes), Err(err), "decode {bytes:02x?}");
}

#[track_caller]
fn truncated(bytes: &[u8], msg_type: MsgType, field: &'static str) {
    rejects(bytes, DecodeError::Truncated { msg_type, field });
}

#[track_caller]
fn trailing(bytes: &[u8], msg_type: MsgType, extra: usize) {
    rejects(bytes, DecodeError::TrailingBytes { msg_type, extra });
}

fn encoded(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, &mut buf).unwrap();
    buf.to_vec()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn publish(
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: TopicRef,
    msg_id: u16,
    payload: &[u8],
) -> Packet {
    Packet::Publish {
        dup,
        qos,
        retain,
        topic,
        msg_id,
        payload: Bytes::copy_from_slice(payload),
    }
}

fn will(qos: QoS, retain: bool, topic: &str) -> Option<WillTopic> {
    Some(WillTopic {
        qos,
        retain,
        topic: topic.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// §6: one or more vectors per message type

#[test]
fn advertise_0x00() {
    // GwId 7, Duration 900 s.
    both_ways(
        &[0x05, 0x00, 0x07, 0x03, 0x84],
        Packet::Advertise {
            gw_id: 7,
            duration: 900,
        },
    );
    both_ways(
        &[0x05, 0x00, 0xFF, 0xFF, 0xFF],
        Packet::Advertise {
            gw_id: 255,
            duration: 65535,
        },
    );
}

#[test]
fn searchgw_0x01() {
    both_ways(&[0x03, 0x01, 0x00], Packet::SearchGw { radius: 0 });
    both_ways(&[0x03, 0x01, 0x01], Packet::SearchGw { radius: 1 });
}

#[test]
fn gwinfo_0x02_from_gateway_without_gwadd() {
    both_ways(
        &[0x03, 0x02, 0x05],
        Packet::GwInfo {
            gw_id: 5,
            gw_addr: Bytes::new(),
        },
    );
}

#[test]
fn gwinfo_0x02_from_client_with_gwadd() {
    both_ways(
        &[0x05, 0x02, 0x05, 0x12, 0x34],
        Packet::GwInfo {
            gw_id: 5,
            gw_addr: Bytes::from_static(&[0x12, 0x34]),
        },
    );
    // GwAdd is opaque: an IPv4 address and port, 6 bytes.
    both_ways(
        &[0x09, 0x02, 0x01, 192, 168, 0, 7, 0x06, 0x1E],
        Packet::GwInfo {
            gw_id: 1,
            gw_addr: Bytes::from_static(&[192, 168, 0, 7, 0x06, 0x1E]),
        },
    );
}

#[test]
fn connect_0x04_each_flag_combination() {
    let cases = [
        (0x00, false, false),
        (0x04, false, true),
        (0x08, true, false),
        (0x0C, true, true),
    ];
    for (flags, will, clean_session) in cases {
        // Flags, ProtocolId 0x01, Duration 60, ClientId "sensor1" (7) → 6+7 = 13.
        let bytes = cat(&[&[0x0D, 0x04, flags, 0x01, 0x00, 0x3C], b"sensor1"]);
        both_ways(
            &bytes,
            Packet::Connect {
                will,
                clean_session,
                protocol_id: 0x01,
                duration: 60,
                client_id: "sensor1".into(),
            },
        );
    }
}

#[test]
fn connect_0x04_keeps_other_protocol_ids_and_empty_client_id() {
    both_ways(
        &[0x06, 0x04, 0x04, 0x02, 0xFF, 0xFF],
        Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 0x02,
            duration: 65535,
            client_id: String::new(),
        },
    );
}

#[test]
fn connect_0x04_utf8_client_id() {
    // "é" is two bytes in UTF-8: the length counts bytes, not characters.
    let bytes = cat(&[&[0x09, 0x04, 0x00, 0x01, 0x00, 0x0A], "né".as_bytes()]);
    both_ways(
        &bytes,
        Packet::Connect {
            will: false,
            clean_session: false,
            protocol_id: 1,
            duration: 10,
            client_id: "né".into(),
        },
    );
}

#[test]
fn connack_0x05_every_defined_return_code() {
    let codes = [
        (0x00, ReturnCode::Accepted),
        (0x01, ReturnCode::Congestion),
        (0x02, ReturnCode::InvalidTopicId),
        (0x03, ReturnCode::NotSupported),
    ];
    for (code, return_code) in codes {
        both_ways(&[0x03, 0x05, code], Packet::ConnAck { return_code });
    }
}

#[test]
fn connack_0x05_unknown_return_codes_are_kept() {
    for code in [0x04u8, 0x80, 0x84, 0xFF] {
        both_ways(
            &[0x03, 0x05, code],
            Packet::ConnAck {
                return_code: ReturnCode::Other(code),
            },
        );
        assert!(!ReturnCode::Other(code).is_accepted());
    }
}

#[test]
fn willtopicreq_0x06() {
    both_ways(&[0x02, 0x06], Packet::WillTopicReq);
}

#[test]
fn willtopic_0x07_with_topic() {
    // Flags 0x30 = QoS 1 + Retain; "will/t" (6) → 3+6 = 9.
    let bytes = cat(&[&[0x09, 0x07, 0x30], b"will/t"]);
    both_ways(
        &bytes,
        Packet::WillTopic(will(QoS::AtLeastOnce, true, "will/t")),
    );
    let bytes = cat(&[&[0x09, 0x07, 0x40], b"will/t"]);
    both_ways(
        &bytes,
        Packet::WillTopic(will(QoS::ExactlyOnce, false, "will/t")),
    );
    let bytes = cat(&[&[0x09, 0x07, 0x00], b"will/t"]);
    both_ways(
        &bytes,
        Packet::WillTopic(will(QoS::AtMostOnce, false, "will/t")),
    );
}

#[test]
fn willtopic_0x07_empty_form_is_two_bytes() {
    // No Flags, no topic: deletes the will.
    both_ways(&[0x02, 0x07], Packet::WillTopic(None));
}

#[test]
fn willmsgreq_0x08() {
    both_ways(&[0x02, 0x08], Packet::WillMsgReq);
}

#[test]
fn willmsg_0x09() {
    both_ways(
        &[0x05, 0x09, b'o', b'f', b'f'],
        Packet::WillMsg {
            payload: Bytes::from_static(b"off"),
        },
    );
    // The will message is opaque: invalid UTF-8 is fine.
    both_ways(
        &[0x04, 0x09, 0xFF, 0x00],
        Packet::WillMsg {
            payload: Bytes::from_static(&[0xFF, 0x00]),
        },
    );
}

#[test]
fn register_0x0a_from_client_and_from_gateway() {
    // Client: TopicId 0, MsgId 1, "temp/out" (8) → 6+8 = 14.
    let bytes = cat(&[&[0x0E, 0x0A, 0x00, 0x00, 0x00, 0x01], b"temp/out"]);
    both_ways(
        &bytes,
        Packet::Register {
            topic_id: 0,
            msg_id: 1,
            topic_name: "temp/out".into(),
        },
    );
    // Gateway: assigned TopicId 0x0401, MsgId 0xBEEF.
    let bytes = cat(&[&[0x0E, 0x0A, 0x04, 0x01, 0xBE, 0xEF], b"temp/out"]);
    both_ways(
        &bytes,
        Packet::Register {
            topic_id: 0x0401,
            msg_id: 0xBEEF,
            topic_name: "temp/out".into(),
        },
    );
}

#[test]
fn regack_0x0b() {
    both_ways(
        &[0x07, 0x0B, 0x04, 0x01, 0x00, 0x01, 0x00],
        Packet::RegAck {
            topic_id: 0x0401,
            msg_id: 1,
            return_code: ReturnCode::Accepted,
        },
    );
    both_ways(
        &[0x07, 0x0B, 0x00, 0x00, 0x12, 0x34, 0x03],
        Packet::RegAck {
            topic_id: 0,
            msg_id: 0x1234,
            return_code: ReturnCode::NotSupported,
        },
    );
    both_ways(
        &[0x07, 0x0B, 0x00, 0x00, 0x12, 0x34, 0x81],
        Packet::RegAck {
            topic_id: 0,
            msg_id: 0x1234,
            return_code: ReturnCode::Other(0x81),
        },
    );
}

#[test]
fn publish_0x0c_normal_id_each_qos() {
    // Flags: QoS bits 6–5, TopicIdType 00; TopicId 1; MsgId; Data "21.5".
    let cases = [
        (0x00, QoS::AtMostOnce, 0x0000),
        (0x20, QoS::AtLeastOnce, 0x0007),
        (0x40, QoS::ExactlyOnce, 0xFFFF),
    ];
    for (flags, qos, msg_id) in cases {
        let [hi, lo] = u16::to_be_bytes(msg_id);
        let bytes = cat(&[&[0x0B, 0x0C, flags, 0x00, 0x01, hi, lo], b"21.5"]);
        both_ways(
            &bytes,
            publish(false, qos, false, TopicRef::Id(1), msg_id, b"21.5"),
        );
    }
}

#[test]
fn publish_0x0c_predefined_id_each_qos() {
    let cases = [
        (0x61, QoS::MinusOne, 0),
        (0x01, QoS::AtMostOnce, 0),
        (0x21, QoS::AtLeastOnce, 9),
        (0x41, QoS::ExactlyOnce, 10),
    ];
    for (flags, qos, msg_id) in cases {
        let bytes = [0x08, 0x0C, flags, 0x00, 0x2A, 0x00, msg_id, 0x55];
        both_ways(
            &bytes,
            publish(
                false,
                qos,
                false,
                TopicRef::Predefined(42),
                u16::from(msg_id),
                &[0x55],
            ),
        );
    }
}

#[test]
fn publish_0x0c_short_name_each_qos() {
    // The two characters of the short name travel in the TopicId field.
    let cases = [
        (0x62, QoS::MinusOne, 0),
        (0x02, QoS::AtMostOnce, 0),
        (0x22, QoS::AtLeastOnce, 3),
        (0x42, QoS::ExactlyOnce, 4),
    ];
    for (flags, qos, msg_id) in cases {
        let bytes = [0x07, 0x0C, flags, b'a', b'b', 0x00, msg_id];
        both_ways(
            &bytes,
            publish(
                false,
                qos,
                false,
                TopicRef::Short(*b"ab"),
                u16::from(msg_id),
                b"",
            ),
        );
    }
    assert_eq!(TopicRef::short("ab"), Some(TopicRef::Short(*b"ab")));
    assert_eq!(TopicRef::short("abc"), None);
    assert_eq!(TopicRef::Short(*b"ab").raw(), 0x6162);
}

#[test]
fn publish_0x0c_dup_and_retain_flags() {
    // DUP 0x80 + QoS 1 0x20 + Retain 0x10 = 0xB0.
    both_ways(
        &[0x08, 0x0C, 0xB0, 0x00, 0x05, 0x00, 0x06, 0x01],
        publish(true, QoS::AtLeastOnce, true, TopicRef::Id(5), 6, &[0x01]),
    );
    both_ways(
        &[0x08, 0x0C, 0x80, 0x00, 0x05, 0x00, 0x06, 0x01],
        publish(true, QoS::AtMostOnce, false, TopicRef::Id(5), 6, &[0x01]),
    );
    both_ways(
        &[0x08, 0x0C, 0x10, 0x00, 0x05, 0x00, 0x06, 0x01],
        publish(false, QoS::AtMostOnce, true, TopicRef::Id(5), 6, &[0x01]),
    );
}

#[test]
fn publish_0x0c_payload_is_opaque_and_may_be_empty() {
    both_ways(
        &[0x07, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00],
        publish(false, QoS::AtMostOnce, false, TopicRef::Id(1), 0, b""),
    );
    both_ways(
        &[0x09, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00, 0xFF, 0xFE],
        publish(
            false,
            QoS::AtMostOnce,
            false,
            TopicRef::Id(1),
            0,
            &[0xFF, 0xFE],
        ),
    );
}

#[test]
fn publish_0x0c_paho_qos_minus_one_named_form() {
    // Trap T-14, Paho's MQTTSNSerialize_publish: Flags (QoS 11, TopicIdType 00),
    // TopicNameLength(2), MsgId(2), TopicName(n), Data(rest).
    // "sensors/t" is 9 bytes; 1+1+1+2+2+9+2 = 18.
    let bytes = cat(&[
        &[0x12, 0x0C, 0x60, 0x00, 0x09, 0x00, 0x00],
        b"sensors/t",
        b"21",
    ]);
    both_ways(
        &bytes,
        Packet::PublishNamedMinusOne {
            dup: false,
            retain: false,
            msg_id: 0,
            topic_name: "sensors/t".into(),
            payload: Bytes::from_static(b"21"),
        },
    );
    // With Retain and DUP, a non-zero MsgId and an empty payload.
    let bytes = cat(&[&[0x0C, 0x0C, 0xF0, 0x00, 0x05, 0x00, 0x07], b"a/b/c"]);
    both_ways(
        &bytes,
        Packet::PublishNamedMinusOne {
            dup: true,
            retain: true,
            msg_id: 7,
            topic_name: "a/b/c".into(),
            payload: Bytes::new(),
        },
    );
}

#[test]
fn publish_0x0c_paho_named_form_data_is_exactly_the_rest() {
    // Name length 0: the whole rest is Data.
    both_ways(
        &[0x09, 0x0C, 0x60, 0x00, 0x00, 0x00, 0x00, b'h', b'i'],
        Packet::PublishNamedMinusOne {
            dup: false,
            retain: false,
            msg_id: 0,
            topic_name: String::new(),
            payload: Bytes::from_static(b"hi"),
        },
    );
    // Name takes every remaining byte: empty Data.
    both_ways(
        &[0x09, 0x0C, 0x60, 0x00, 0x02, 0x00, 0x00, b'h', b'i'],
        Packet::PublishNamedMinusOne {
            dup: false,
            retain: false,
            msg_id: 0,
            topic_name: "hi".into(),
            payload: Bytes::new(),
        },
    );
}

#[test]
fn puback_0x0d() {
    both_ways(
        &[0x07, 0x0D, 0x00, 0x05, 0x00, 0x09, 0x00],
        Packet::PubAck {
            topic_id: 5,
            msg_id: 9,
            return_code: ReturnCode::Accepted,
        },
    );
    // Error answer echoing a short name's raw TopicId field.
    both_ways(
        &[0x07, 0x0D, b'a', b'b', 0x00, 0x00, 0x02],
        Packet::PubAck {
            topic_id: 0x6162,
            msg_id: 0,
            return_code: ReturnCode::InvalidTopicId,
        },
    );
    both_ways(
        &[0x07, 0x0D, 0x00, 0x05, 0x00, 0x09, 0x01],
        Packet::PubAck {
            topic_id: 5,
            msg_id: 9,
            return_code: ReturnCode::Congestion,
        },
    );
    both_ways(
        &[0x07, 0x0D, 0x00, 0x05, 0x00, 0x09, 0x04],
        Packet::PubAck {
            topic_id: 5,
            msg_id: 9,
            return_code: ReturnCode::Other(0x04),
        },
    );
}

#[test]
fn pubcomp_0x0e_pubrec_0x0f_pubrel_0x10() {
    // Note the order quirk: PUBCOMP is 0x0E, before PUBREC 0x0F.
    both_ways(
        &[0x04, 0x0E, 0x12, 0x34],
        Packet::PubComp { msg_id: 0x1234 },
    );
    both_ways(&[0x04, 0x0F, 0x12, 0x34], Packet::PubRec { msg_id: 0x1234 });
    both_ways(&[0x04, 0x10, 0x12, 0x34], Packet::PubRel { msg_id: 0x1234 });
}

#[test]
fn subscribe_0x12_by_name() {
    // QoS 1, TopicIdType 00, MsgId 2, "a/+/b" (5) → 5+5 = 10.
    let bytes = cat(&[&[0x0A, 0x12, 0x20, 0x00, 0x02], b"a/+/b"]);
    both_ways(
        &bytes,
        Packet::Subscribe {
            dup: false,
            qos: QoS::AtLeastOnce,
            msg_id: 2,
            topic: SubscribeTopic::Name("a/+/b".into()),
        },
    );
    // DUP + QoS 2, filter "#".
    both_ways(
        &[0x06, 0x12, 0xC0, 0x00, 0x03, b'#'],
        Packet::Subscribe {
            dup: true,
            qos: QoS::ExactlyOnce,
            msg_id: 3,
            topic: SubscribeTopic::Name("#".into()),
        },
    );
}

#[test]
fn subscribe_0x12_by_predefined_id() {
    both_ways(
        &[0x07, 0x12, 0x21, 0x00, 0x03, 0x00, 0x2A],
        Packet::Subscribe {
            dup: false,
            qos: QoS::AtLeastOnce,
            msg_id: 3,
            topic: SubscribeTopic::Predefined(42),
        },
    );
}

#[test]
fn subscribe_0x12_by_short_name() {
    both_ways(
        &[0x07, 0x12, 0x02, 0x00, 0x04, b'h', b'i'],
        Packet::Subscribe {
            dup: false,
            qos: QoS::AtMostOnce,
            msg_id: 4,
            topic: SubscribeTopic::Short(*b"hi"),
        },
    );
}

#[test]
fn suback_0x13() {
    both_ways(
        &[0x08, 0x13, 0x20, 0x00, 0x2A, 0x00, 0x02, 0x00],
        Packet::SubAck {
            qos: QoS::AtLeastOnce,
            topic_id: 42,
            msg_id: 2,
            return_code: ReturnCode::Accepted,
        },
    );
    // Wildcard: TopicId 0; granted QoS 2.
    both_ways(
        &[0x08, 0x13, 0x40, 0x00, 0x00, 0x00, 0x03, 0x00],
        Packet::SubAck {
            qos: QoS::ExactlyOnce,
            topic_id: 0,
            msg_id: 3,
            return_code: ReturnCode::Accepted,
        },
    );
    both_ways(
        &[0x08, 0x13, 0x00, 0x00, 0x00, 0x00, 0x03, 0x82],
        Packet::SubAck {
            qos: QoS::AtMostOnce,
            topic_id: 0,
            msg_id: 3,
            return_code: ReturnCode::Other(0x82),
        },
    );
}

#[test]
fn unsubscribe_0x14_by_name_predefined_and_short() {
    let bytes = cat(&[&[0x0A, 0x14, 0x00, 0x00, 0x02], b"a/+/b"]);
    both_ways(
        &bytes,
        Packet::Unsubscribe {
            msg_id: 2,
            topic: SubscribeTopic::Name("a/+/b".into()),
        },
    );
    both_ways(
        &[0x07, 0x14, 0x01, 0x00, 0x03, 0x00, 0x2A],
        Packet::Unsubscribe {
            msg_id: 3,
            topic: SubscribeTopic::Predefined(42),
        },
    );
    both_ways(
        &[0x07, 0x14, 0x02, 0x00, 0x04, b'h', b'i'],
        Packet::Unsubscribe {
            msg_id: 4,
            topic: SubscribeTopic::Short(*b"hi"),
        },
    );
}

#[test]
fn unsuback_0x15() {
    both_ways(&[0x04, 0x15, 0x00, 0x02], Packet::UnsubAck { msg_id: 2 });
}

#[test]
fn pingreq_0x16_with_and_without_client_id() {
    both_ways(&[0x02, 0x16], Packet::PingReq { client_id: None });
    let bytes = cat(&[&[0x09, 0x16], b"sensor1"]);
    both_ways(
        &bytes,
        Packet::PingReq {
            client_id: Some("sensor1".into()),
        },
    );
}

#[test]
fn pingresp_0x17() {
    both_ways(&[0x02, 0x17], Packet::PingResp);
}

#[test]
fn disconnect_0x18_with_and_without_duration() {
    both_ways(&[0x02, 0x18], Packet::Disconnect { duration: None });
    both_ways(
        &[0x04, 0x18, 0x0E, 0x10],
        Packet::Disconnect {
            duration: Some(3600),
        },
    );
    // Duration 0 is still "with Duration", distinct from the 2-byte form.
    both_ways(
        &[0x04, 0x18, 0x00, 0x00],
        Packet::Disconnect { duration: Some(0) },
    );
}

#[test]
fn willtopicupd_0x1a() {
    let bytes = cat(&[&[0x08, 0x1A, 0x20], b"lwt/x"]);
    both_ways(
        &bytes,
        Packet::WillTopicUpd(will(QoS::AtLeastOnce, false, "lwt/x")),
    );
    let bytes = cat(&[&[0x08, 0x1A, 0x50], b"lwt/x"]);
    both_ways(
        &bytes,
        Packet::WillTopicUpd(will(QoS::ExactlyOnce, true, "lwt/x")),
    );
    // Empty form, 2 bytes: deletes will topic and message.
    both_ways(&[0x02, 0x1A], Packet::WillTopicUpd(None));
}

#[test]
fn willtopicresp_0x1b() {
    both_ways(
        &[0x03, 0x1B, 0x00],
        Packet::WillTopicResp {
            return_code: ReturnCode::Accepted,
        },
    );
    both_ways(
        &[0x03, 0x1B, 0xEE],
        Packet::WillTopicResp {
            return_code: ReturnCode::Other(0xEE),
        },
    );
}

#[test]
fn willmsgupd_0x1c() {
    both_ways(
        &[0x06, 0x1C, b'd', b'e', b'a', b'd'],
        Packet::WillMsgUpd {
            payload: Bytes::from_static(b"dead"),
        },
    );
}

#[test]
fn willmsgresp_0x1d() {
    both_ways(
        &[0x03, 0x1D, 0x03],
        Packet::WillMsgResp {
            return_code: ReturnCode::NotSupported,
        },
    );
    both_ways(
        &[0x03, 0x1D, 0x04],
        Packet::WillMsgResp {
            return_code: ReturnCode::Other(0x04),
        },
    );
}

// ---------------------------------------------------------------------------
// §7.10 / T-9: forwarder encapsulation

fn connect_sensor1() -> (Vec<u8>, Packet) {
    (
        cat(&[&[0x0D, 0x04, 0x04, 0x01, 0x00, 0x3C], b"sensor1"]),
        Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: 1,
            duration: 60,
            client_id: "sensor1".into(),
        },
    )
}

#[test]
fn encapsulated_0xfe_node_ids_of_several_lengths() {
    let (inner_bytes, inner) = connect_sensor1();
    let node_ids: [&[u8]; 4] = [
        &[],
        &[0x07],
        &[0xAB, 0xCD],
        &[0x00, 0x13, 0xA2, 0x00, 0x40, 0x8B, 0x2C, 0x11],
    ];
    for (radius, node_id) in node_ids.into_iter().enumerate() {
        let radius = radius as u8; // 0..=3
        // Wrapper Length = Len + 0xFE + Ctrl + node id; the inner message follows.
        let wrapper_len = 3 + node_id.len() as u8;
        let bytes = cat(&[&[wrapper_len, 0xFE, radius], node_id, &inner_bytes]);
        both_ways(
            &bytes,
            Packet::Encapsulated {
                radius,
                node_id: Bytes::copy_from_slice(node_id),
                inner: Box::new(inner.clone()),
            },
        );
    }
}

#[test]
fn encapsulated_0xfe_length_covers_only_the_wrapper_even_around_a_long_form_publish() {
    // Inner PUBLISH of 258 bytes (needs the long form); the wrapper stays 1-byte.
    let payload = vec![0x5A; 249];
    let inner_bytes = cat(&[
        &[0x01, 0x01, 0x02, 0x0C, 0x22, b'x', b'y', 0x00, 0x01],
        &payload,
    ]);
    assert_eq!(inner_bytes.len(), 258);
    let bytes = cat(&[&[0x05, 0xFE, 0x01, 0xBE, 0xEF], &inner_bytes]);
    both_ways(
        &bytes,
        Packet::Encapsulated {
            radius: 1,
            node_id: Bytes::from_static(&[0xBE, 0xEF]),
            inner: Box::new(publish(
                false,
                QoS::AtLeastOnce,
                false,
                TopicRef::Short(*b"xy"),
                1,
                &payload,
            )),
        },
    );
}

#[test]
fn encapsulated_0xfe_reserved_ctrl_bits_are_ignored() {
    // Ctrl bits 7–2 reserved; radius = bits 1–0.
    decodes_to(
        &[0x04, 0xFE, 0xFD, 0x01, 0x02, 0x17],
        Packet::Encapsulated {
            radius: 1,
            node_id: Bytes::from_static(&[0x01]),
            inner: Box::new(Packet::PingResp),
        },
    );
}

#[test]
fn encapsulation_does_not_nest_on_encode() {
    let nested = Packet::Encapsulated {
        radius: 0,
        node_id: Bytes::from_static(&[1]),
        inner: Box::new(Packet::Encapsulated {
            radius: 0,
            node_id: Bytes::from_static(&[2]),
            inner: Box::new(Packet::PingResp),
        }),
    };
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert_eq!(
        encode(&nested, &mut buf),
        Err(EncodeError::NestedEncapsulation)
    );
    assert_eq!(&buf[..], b"keep", "nothing appended on error");
}

#[test]
fn encoded_len_agrees_with_encode_on_nested_encapsulation() {
    let nested = Packet::Encapsulated {
        radius: 0,
        node_id: Bytes::new(),
        inner: Box::new(Packet::Encapsulated {
            radius: 0,
            node_id: Bytes::new(),
            inner: Box::new(Packet::PingResp),
        }),
    };
    assert_eq!(encoded_len(&nested), Err(EncodeError::NestedEncapsulation));
}

// ---------------------------------------------------------------------------
// §4: unused flag bits are ignored on decode (and written as 0 on encode, which
// the exact vectors above already check)

#[test]
fn connect_ignores_unused_flag_bits() {
    // 0xF7 = DUP + QoS 11 + Retain + CleanSession + TopicIdType 11; Will clear.
    let bytes = cat(&[&[0x0D, 0x04, 0xF7, 0x01, 0x00, 0x3C], b"sensor1"]);
    decodes_to(&bytes, connect_sensor1().1);
    // 0xFB = everything but CleanSession: only Will is read.
    let bytes = [0x06, 0x04, 0xFB, 0x01, 0x00, 0x3C];
    decodes_to(
        &bytes,
        Packet::Connect {
            will: true,
            clean_session: false,
            protocol_id: 1,
            duration: 60,
            client_id: String::new(),
        },
    );
}

#[test]
fn willtopic_and_willtopicupd_ignore_unused_flag_bits() {
    // 0xAF = DUP + QoS 01 + Will + Clean + TopicIdType 11; Retain clear.
    decodes_to(
        &[0x04, 0x07, 0xAF, b't'],
        Packet::WillTopic(will(QoS::AtLeastOnce, false, "t")),
    );
    decodes_to(
        &[0x04, 0x1A, 0x9F, b't'],
        Packet::WillTopicUpd(will(QoS::AtMostOnce, true, "t")),
    );
}

#[test]
fn publish_ignores_will_and_clean_bits() {
    // 0x2D = QoS 1 + Will + Clean + TopicIdType 01.
    decodes_to(
        &[0x07, 0x0C, 0x2D, 0x00, 0x01, 0x00, 0x02],
        publish(
            false,
            QoS::AtLeastOnce,
            false,
            TopicRef::Predefined(1),
            2,
            b"",
        ),
    );
}

#[test]
fn subscribe_ignores_retain_will_and_clean_bits() {
    // 0x3D = QoS 1 + Retain + Will + Clean + TopicIdType 01.
    decodes_to(
        &[0x07, 0x12, 0x3D, 0x00, 0x03, 0x00, 0x2A],
        Packet::Subscribe {
            dup: false,
            qos: QoS::AtLeastOnce,
            msg_id: 3,
            topic: SubscribeTopic::Predefined(42),
        },
    );
}

#[test]
fn suback_reads_only_the_qos_bits() {
    // 0x9F = DUP + Retain + Will + Clean + TopicIdType 11; QoS 00.
    decodes_to(
        &[0x08, 0x13, 0x9F, 0x00, 0x2A, 0x00, 0x02, 0x00],
        Packet::SubAck {
            qos: QoS::AtMostOnce,
            topic_id: 42,
            msg_id: 2,
            return_code: ReturnCode::Accepted,
        },
    );
}

#[test]
fn unsubscribe_reads_only_the_topic_id_type() {
    // 0xFE = DUP + QoS 11 + Retain + Will + Clean + TopicIdType 10.
    decodes_to(
        &[0x07, 0x14, 0xFE, 0x00, 0x04, b'h', b'i'],
        Packet::Unsubscribe {
            msg_id: 4,
            topic: SubscribeTopic::Short(*b"hi"),
        },
    );
}

// ---------------------------------------------------------------------------
// Malformed input

#[test]
fn empty_input() {
    rejects(&[], DecodeError::Empty);
}

#[test]
fn length_zero() {
    rejects(&[0x00], DecodeError::ZeroLength);
    rejects(&[0x00, 0x17], DecodeError::ZeroLength);
}

#[test]
fn length_disagrees_with_datagram_size() {
    // Declared longer than received.
    rejects(
        &[0x03, 0x17],
        DecodeError::LengthMismatch {
            declared: 3,
            actual: 2,
        },
    );
    rejects(
        &[0x07, 0x0D, 0x00, 0x05, 0x00, 0x09],
        DecodeError::LengthMismatch {
            declared: 7,
            actual: 6,
        },
    );
    // Declared shorter than received: no trailing bytes are ignored.
    rejects(
        &[0x02, 0x17, 0x00],
        DecodeError::LengthMismatch {
            declared: 2,
            actual: 3,
        },
    );
    rejects(
        &[0x03, 0x09, b'a', b'b'],
        DecodeError::LengthMismatch {
            declared: 3,
            actual: 4,
        },
    );
    // Same in the long form.
    rejects(
        &[0x01, 0x00, 0x06, 0x17],
        DecodeError::LengthMismatch {
            declared: 6,
            actual: 4,
        },
    );
    rejects(
        &[0x01, 0x00, 0x04, 0x17, 0x00],
        DecodeError::LengthMismatch {
            declared: 4,
            actual: 5,
        },
    );
}

#[test]
fn header_cut_off() {
    // 1-byte Length but no MsgType.
    rejects(&[0x05], DecodeError::TruncatedHeader(1));
    // Long form cut after 0x01, after 0x01 xx, and before MsgType.
    rejects(&[0x01], DecodeError::TruncatedHeader(1));
    rejects(&[0x01, 0x00], DecodeError::TruncatedHeader(2));
    rejects(&[0x01, 0x01], DecodeError::TruncatedHeader(2));
    rejects(&[0x01, 0x00, 0x04], DecodeError::TruncatedHeader(3));
}

#[test]
fn long_form_value_below_four() {
    for v in 0..4u8 {
        rejects(
            &[0x01, 0x00, v],
            DecodeError::LongLengthTooSmall(u16::from(v)),
        );
        rejects(
            &[0x01, 0x00, v, 0x17],
            DecodeError::LongLengthTooSmall(u16::from(v)),
        );
    }
}

#[test]
fn every_reserved_message_type() {
    let reserved = [0x03u8, 0x11, 0x19, 0xFF].into_iter().chain(0x1E..=0xFD);
    let mut n = 0;
    for code in reserved {
        rejects(&[0x02, code], DecodeError::ReservedMsgType(code));
        rejects(&[0x03, code, 0x00], DecodeError::ReservedMsgType(code));
        rejects(
            &[0x01, 0x00, 0x04, code],
            DecodeError::ReservedMsgType(code),
        );
        n += 1;
    }
    assert_eq!(n, 4 + (0xFD - 0x1E + 1));
}

#[test]
fn every_defined_message_type_is_known() {
    let defined = (0x00u8..=0x1D)
        .filter(|c| ![0x03, 0x11, 0x19].contains(c))
        .chain([0xFE]);
    for code in defined {
        let t = MsgType::from_code(code).unwrap_or_else(|| panic!("0x{code:02x}"));
        assert_eq!(t.code(), code);
    }
}

#[test]
fn truncated_fixed_fields() {
    use MsgType::*;
    truncated(&[0x02, 0x00], Advertise, "GwId");
    truncated(&[0x04, 0x00, 0x07, 0x03], Advertise, "Duration");
    truncated(&[0x02, 0x01], SearchGw, "Radius");
    truncated(&[0x02, 0x02], GwInfo, "GwId");
    truncated(&[0x02, 0x04], Connect, "Flags");
    truncated(&[0x03, 0x04, 0x04], Connect, "ProtocolId");
    truncated(&[0x05, 0x04, 0x04, 0x01, 0x00], Connect, "Duration");
    truncated(&[0x02, 0x05], ConnAck, "ReturnCode");
    truncated(&[0x05, 0x0A, 0x00, 0x00, 0x00], Register, "MsgId");
    truncated(&[0x03, 0x0A, 0x00], Register, "TopicId");
    truncated(&[0x06, 0x0B, 0x00, 0x01, 0x00, 0x01], RegAck, "ReturnCode");
    truncated(&[0x02, 0x0C], Publish, "Flags");
    truncated(&[0x04, 0x0C, 0x20, 0x00], Publish, "TopicId");
    truncated(&[0x06, 0x0C, 0x20, 0x00, 0x01, 0x00], Publish, "MsgId");
    truncated(&[0x06, 0x0D, 0x00, 0x01, 0x00, 0x01], PubAck, "ReturnCode");
    truncated(&[0x02, 0x0E], PubComp, "MsgId");
    truncated(&[0x03, 0x0F, 0x00], PubRec, "MsgId");
    truncated(&[0x03, 0x10, 0x00], PubRel, "MsgId");
    truncated(&[0x04, 0x12, 0x20, 0x00], Subscribe, "MsgId");
    truncated(&[0x06, 0x12, 0x21, 0x00, 0x01, 0x00], Subscribe, "TopicId");
    truncated(
        &[0x07, 0x13, 0x20, 0x00, 0x2A, 0x00, 0x02],
        SubAck,
        "ReturnCode",
    );
    truncated(&[0x02, 0x14], Unsubscribe, "Flags");
    truncated(&[0x05, 0x14, 0x01, 0x00, 0x01], Unsubscribe, "TopicId");
    truncated(&[0x03, 0x15, 0x00], UnsubAck, "MsgId");
    // DISCONNECT with one byte: neither the empty nor the 2-byte Duration form.
    truncated(&[0x03, 0x18, 0x00], Disconnect, "Duration");
    truncated(&[0x02, 0x1B], WillTopicResp, "ReturnCode");
    truncated(&[0x02, 0x1D], WillMsgResp, "ReturnCode");
    truncated(&[0x02, 0xFE, 0x02, 0x17], Encapsulated, "Ctrl");
}

#[test]
fn truncated_short_topic_name_in_subscribe_and_unsubscribe() {
    // A short name is exactly 2 bytes; one is not enough. (Field name not
    // asserted: the fact sheet calls it TopicId, the codec may call it TopicName.)
    for bytes in [
        [0x06, 0x12, 0x22, 0x00, 0x01, b'a'],
        [0x06, 0x14, 0x02, 0x00, 0x01, b'a'],
    ] {
        assert!(
            matches!(
                decode(&bytes),
                Err(DecodeError::Truncated {
                    msg_type: MsgType::Subscribe | MsgType::Unsubscribe,
                    ..
                })
            ),
            "{bytes:02x?} → {:?}",
            decode(&bytes)
        );
    }
}

#[test]
fn trailing_bytes_on_fixed_size_messages() {
    use MsgType::*;
    trailing(&[0x06, 0x00, 0x07, 0x03, 0x84, 0x00], Advertise, 1);
    trailing(&[0x04, 0x01, 0x00, 0x00], SearchGw, 1);
    trailing(&[0x04, 0x05, 0x00, 0x00], ConnAck, 1);
    trailing(&[0x03, 0x06, 0x00], WillTopicReq, 1);
    trailing(&[0x03, 0x08, 0x00], WillMsgReq, 1);
    trailing(&[0x08, 0x0B, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00], RegAck, 1);
    trailing(&[0x08, 0x0D, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00], PubAck, 1);
    trailing(&[0x05, 0x0E, 0x00, 0x01, 0x00], PubComp, 1);
    trailing(&[0x05, 0x0F, 0x00, 0x01, 0x00], PubRec, 1);
    trailing(&[0x06, 0x10, 0x00, 0x01, 0x00, 0x00], PubRel, 2);
    trailing(
        &[0x08, 0x12, 0x21, 0x00, 0x01, 0x00, 0x2A, 0x00],
        Subscribe,
        1,
    );
    trailing(
        &[0x09, 0x12, 0x22, 0x00, 0x01, b'a', b'b', b'c', b'd'],
        Subscribe,
        2,
    );
    trailing(
        &[0x09, 0x13, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00],
        SubAck,
        1,
    );
    trailing(
        &[0x08, 0x14, 0x01, 0x00, 0x01, 0x00, 0x2A, 0x00],
        Unsubscribe,
        1,
    );
    trailing(
        &[0x08, 0x14, 0x02, 0x00, 0x01, b'a', b'b', b'c'],
        Unsubscribe,
        1,
    );
    trailing(&[0x05, 0x15, 0x00, 0x01, 0x00], UnsubAck, 1);
    trailing(&[0x03, 0x17, 0x00], PingResp, 1);
    trailing(&[0x05, 0x18, 0x00, 0x3C, 0x00], Disconnect, 1);
    trailing(&[0x04, 0x1B, 0x00, 0x00], WillTopicResp, 1);
    trailing(&[0x04, 0x1D, 0x00, 0x00], WillMsgResp, 1);
}

#[test]
fn reserved_topic_id_type_carries_the_msg_id() {
    // TopicIdType 11 in PUBLISH (QoS 1 and QoS −1), SUBSCRIBE, UNSUBSCRIBE.
    rejects(
        &[0x07, 0x0C, 0x23, 0x00, 0x01, 0x00, 0x2A],
        DecodeError::ReservedTopicIdType {
            msg_type: MsgType::Publish,
            msg_id: 0x2A,
        },
    );
    rejects(
        &[0x08, 0x0C, 0x63, 0x00, 0x01, 0x12, 0x34, 0x00],
        DecodeError::ReservedTopicIdType {
            msg_type: MsgType::Publish,
            msg_id: 0x1234,
        },
    );
    rejects(
        &[0x07, 0x12, 0x23, 0x00, 0x2B, 0x00, 0x01],
        DecodeError::ReservedTopicIdType {
            msg_type: MsgType::Subscribe,
            msg_id: 0x2B,
        },
    );
    rejects(
        &[0x07, 0x14, 0x03, 0x00, 0x2C, 0x00, 0x01],
        DecodeError::ReservedTopicIdType {
            msg_type: MsgType::Unsubscribe,
            msg_id: 0x2C,
        },
    );
}

#[test]
fn bad_utf8_in_text_fields() {
    use MsgType::*;
    let bad = [0xC3, 0x28]; // an invalid 2-byte sequence
    let cases: [(Vec<u8>, MsgType, &str); 9] = [
        (
            cat(&[&[0x08, 0x04, 0x04, 0x01, 0x00, 0x3C], &bad]),
            Connect,
            "ClientId",
        ),
        (cat(&[&[0x04, 0x16], &bad]), PingReq, "ClientId"),
        (
            cat(&[&[0x08, 0x0A, 0x00, 0x00, 0x00, 0x01], &bad]),
            Register,
            "TopicName",
        ),
        (
            cat(&[&[0x07, 0x12, 0x00, 0x00, 0x01], &bad]),
            Subscribe,
            "TopicName",
        ),
        (
            cat(&[&[0x07, 0x14, 0x00, 0x00, 0x01], &bad]),
            Unsubscribe,
            "TopicName",
        ),
        (cat(&[&[0x05, 0x07, 0x00], &bad]), WillTopic, "WillTopic"),
        (cat(&[&[0x05, 0x1A, 0x00], &bad]), WillTopicUpd, "WillTopic"),
        (
            cat(&[&[0x09, 0x0C, 0x60, 0x00, 0x02, 0x00, 0x00], &bad]),
            Publish,
            "TopicName",
        ),
        // A lone continuation byte.
        (
            vec![0x07, 0x0A, 0x00, 0x00, 0x00, 0x01, 0x80],
            Register,
            "TopicName",
        ),
    ];
    for (bytes, msg_type, field) in cases {
        rejects(&bytes, DecodeError::InvalidUtf8 { msg_type, field });
    }
}

#[test]
fn nested_encapsulation_is_rejected() {
    let bytes = [0x03, 0xFE, 0x00, 0x03, 0xFE, 0x00, 0x02, 0x17];
    rejects(&bytes, DecodeError::NestedEncapsulation);
}

#[test]
fn malformed_message_inside_an_encapsulation() {
    rejects(
        &[0x03, 0xFE, 0x00],
        DecodeError::InEncapsulation(Box::new(DecodeError::Empty)),
    );
    rejects(
        &[0x03, 0xFE, 0x00, 0x03, 0x17],
        DecodeError::InEncapsulation(Box::new(DecodeError::LengthMismatch {
            declared: 3,
            actual: 2,
        })),
    );
    rejects(
        &[0x03, 0xFE, 0x00, 0x02, 0x03],
        DecodeError::InEncapsulation(Box::new(DecodeError::ReservedMsgType(0x03))),
    );
    // Wrapper Length runs past the datagram.
    rejects(
        &[0x09, 0xFE, 0x00, 0x01],
        DecodeError::LengthMismatch {
            declared: 9,
            actual: 4,
        },
    );
}

#[test]
fn qos_minus_one_named_form_with_name_longer_than_the_rest() {
    // Name length 5, only 3 bytes follow the MsgId.
    truncated(
        &[0x0A, 0x0C, 0x60, 0x00, 0x05, 0x00, 0x00, b'a', b'b', b'c'],
        MsgType::Publish,
        "TopicName",
    );
    // Name length 0xFFFF in a tiny message.
    truncated(
        &[0x07, 0x0C, 0x60, 0xFF, 0xFF, 0x00, 0x00],
        MsgType::Publish,
        "TopicName",
    );
}

#[test]
fn payloads_are_not_checked_for_utf8() {
    decodes_to(
        &[0x08, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00, 0xFF],
        publish(false, QoS::AtMostOnce, false, TopicRef::Id(1), 0, &[0xFF]),
    );
}

#[test]
fn publish_qos_minus_one_with_normal_id_is_not_silently_reinterpreted() {
    // v1.2 allows QoS −1 only with TopicIdType 01/10; flags 0x60 mean the Paho
    // named form (T-14). The encoder refuses this packet and writes nothing.
    let p = publish(false, QoS::MinusOne, false, TopicRef::Id(2), 0, b"hi");
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(&p, &mut buf),
        Err(EncodeError::QosMinusOneWithNormalId)
    );
    assert_eq!(encoded_len(&p), Err(EncodeError::QosMinusOneWithNormalId));
    assert!(buf.is_empty());
}

#[test]
fn pingreq_with_empty_client_id_is_not_silently_changed() {
    let p = Packet::PingReq {
        client_id: Some(String::new()),
    };
    let mut buf = BytesMut::new();
    assert_eq!(encode(&p, &mut buf), Err(EncodeError::EmptyPingClientId));
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------
// T-8: Length form boundaries

fn publish_with_payload(n: usize) -> Packet {
    publish(
        false,
        QoS::AtMostOnce,
        false,
        TopicRef::Id(1),
        0,
        &vec![0xA5; n],
    )
}

#[test]
fn total_254_and_255_use_the_short_form() {
    // PUBLISH = Len + Type + Flags + TopicId(2) + MsgId(2) + Data = 7 + n.
    for (n, total) in [(247usize, 254usize), (248, 255)] {
        let payload = vec![0xA5; n];
        let bytes = cat(&[&[total as u8, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00], &payload]);
        assert_eq!(bytes.len(), total);
        both_ways(&bytes, publish_with_payload(n));
    }
    // WILLMSG = 2 + n: 253 bytes of will message → 255.
    let bytes = cat(&[&[0xFF, 0x09], &[0x33; 253]]);
    both_ways(
        &bytes,
        Packet::WillMsg {
            payload: Bytes::from(vec![0x33; 253]),
        },
    );
}

#[test]
fn totals_256_and_257_switch_to_the_long_form_258_and_259() {
    for (n, lo) in [(249usize, 0x02u8), (250, 0x03)] {
        let payload = vec![0xA5; n];
        let bytes = cat(&[
            &[0x01, 0x01, lo, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00],
            &payload,
        ]);
        assert_eq!(bytes.len(), 0x0100 + usize::from(lo));
        both_ways(&bytes, publish_with_payload(n));
    }
    // Fact sheet T-8 example: a 254-byte variable part → 258 in all.
    let bytes = cat(&[&[0x01, 0x01, 0x02, 0x09], &[0x33; 254]]);
    both_ways(
        &bytes,
        Packet::WillMsg {
            payload: Bytes::from(vec![0x33; 254]),
        },
    );
}

#[test]
fn long_form_header_on_small_messages_is_accepted() {
    decodes_to(&[0x01, 0x00, 0x04, 0x17], Packet::PingResp);
    decodes_to(
        &[0x01, 0x00, 0x05, 0x05, 0x00],
        Packet::ConnAck {
            return_code: ReturnCode::Accepted,
        },
    );
    let bytes = cat(&[
        &[0x01, 0x00, 0x0F, 0x04, 0x04, 0x01, 0x00, 0x3C],
        b"sensor1",
    ]);
    decodes_to(&bytes, connect_sensor1().1);
    // …and re-encoded in the short form.
    assert_eq!(encoded(&Packet::PingResp), [0x02, 0x17]);
}

#[test]
fn maximum_65535_encodes_and_decodes() {
    // 3 (Length) + 1 (Type) + 5 + n = 65535 → n = 65526.
    let p = publish_with_payload(65526);
    let bytes = encoded(&p);
    assert_eq!(bytes.len(), 65535);
    assert_eq!(
        &bytes[..9],
        &[0x01, 0xFF, 0xFF, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(encoded_len(&p), Ok(65535));
    assert_eq!(decode(&bytes), Ok(p));
}

#[test]
fn one_byte_over_65535_is_too_long() {
    let p = publish_with_payload(65527);
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert_eq!(
        encode(&p, &mut buf),
        Err(EncodeError::TooLong {
            msg_type: MsgType::Publish,
            len: 65536,
        })
    );
    assert_eq!(&buf[..], b"keep", "nothing appended on error");
    let p = Packet::WillMsgUpd {
        payload: Bytes::from(vec![0; 65535 - 4 + 1]),
    };
    assert!(matches!(
        encode(&p, &mut BytesMut::new()),
        Err(EncodeError::TooLong {
            msg_type: MsgType::WillMsgUpd,
            len: 65536
        })
    ));
}

#[test]
fn encode_appends_to_existing_buffer() {
    let mut buf = BytesMut::from(&[0xAA][..]);
    encode(&Packet::PingResp, &mut buf).unwrap();
    encode(&Packet::UnsubAck { msg_id: 1 }, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0xAA, 0x02, 0x17, 0x04, 0x15, 0x00, 0x01]);
}
