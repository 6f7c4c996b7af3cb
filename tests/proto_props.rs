//! Property tests for the MQTT-SN codec: arbitrary packets round-trip through
//! encode/decode, `encoded_len` agrees with `encode`, the Length field takes the
//! short form iff the message fits in 255 bytes (trap T-8), and the decoder never
//! panics on any input while whatever it accepts re-encodes to the same packet.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use sngate::proto::{
    Packet, QoS, ReturnCode, SubscribeTopic, TopicRef, WillTopic, decode, encode, encoded_len,
};

// ---------------------------------------------------------------------------
// strategies

/// Size limits for generated packets: full size (payloads up to 600 bytes, so
/// that long Length forms occur) and small (so that mutations of short
/// messages are frequent in the decoder property).
#[derive(Clone, Copy)]
struct Sizes {
    text: usize,
    payload: usize,
}

const FULL: Sizes = Sizes {
    text: 40,
    payload: 600,
};
const SMALL: Sizes = Sizes {
    text: 8,
    payload: 24,
};

/// Arbitrary Unicode, any scalar value (not only printable ones).
fn text(sz: Sizes) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..sz.text).prop_map(String::from_iter)
}

fn payload(sz: Sizes) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..sz.payload).prop_map(Bytes::from)
}

/// Up to `max` pseudo-random bytes from one seed: far cheaper to generate than
/// a `vec` of `any::<u8>()` (which builds a value tree per byte), at the price of
/// coarse shrinking.
fn noise(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..max, any::<u64>()).prop_map(|(n, seed)| {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                // xorshift64
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    })
}

fn small_bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::MinusOne),
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce),
    ]
}

fn return_code() -> impl Strategy<Value = ReturnCode> {
    prop_oneof![
        Just(ReturnCode::Accepted),
        Just(ReturnCode::Congestion),
        Just(ReturnCode::InvalidTopicId),
        Just(ReturnCode::NotSupported),
        (0x04u8..=0xFF).prop_map(ReturnCode::Other),
    ]
}

fn topic_ref() -> impl Strategy<Value = TopicRef> {
    prop_oneof![
        any::<u16>().prop_map(TopicRef::Id),
        any::<u16>().prop_map(TopicRef::Predefined),
        any::<[u8; 2]>().prop_map(TopicRef::Short),
    ]
}

fn subscribe_topic(sz: Sizes) -> impl Strategy<Value = SubscribeTopic> {
    prop_oneof![
        text(sz).prop_map(SubscribeTopic::Name),
        any::<u16>().prop_map(SubscribeTopic::Predefined),
        any::<[u8; 2]>().prop_map(SubscribeTopic::Short),
    ]
}

fn will_topic(sz: Sizes) -> impl Strategy<Value = Option<WillTopic>> {
    proptest::option::of(
        (qos(), any::<bool>(), text(sz)).prop_map(|(qos, retain, topic)| WillTopic {
            qos,
            retain,
            topic,
        }),
    )
}

/// Every variant except `Encapsulated`.
fn plain_packet() -> BoxedStrategy<Packet> {
    plain_packet_sized(FULL)
}

fn plain_packet_sized(sz: Sizes) -> BoxedStrategy<Packet> {
    Union::new(vec![
        (any::<u8>(), any::<u16>())
            .prop_map(|(gw_id, duration)| Packet::Advertise { gw_id, duration })
            .boxed(),
        any::<u8>()
            .prop_map(|radius| Packet::SearchGw { radius })
            .boxed(),
        (any::<u8>(), small_bytes())
            .prop_map(|(gw_id, gw_addr)| Packet::GwInfo { gw_id, gw_addr })
            .boxed(),
        (
            any::<bool>(),
            any::<bool>(),
            any::<u8>(),
            any::<u16>(),
            text(sz),
        )
            .prop_map(
                |(will, clean_session, protocol_id, duration, client_id)| Packet::Connect {
                    will,
                    clean_session,
                    protocol_id,
                    duration,
                    client_id,
                },
            )
            .boxed(),
        return_code()
            .prop_map(|return_code| Packet::ConnAck { return_code })
            .boxed(),
        Just(Packet::WillTopicReq).boxed(),
        will_topic(sz).prop_map(Packet::WillTopic).boxed(),
        Just(Packet::WillMsgReq).boxed(),
        payload(sz)
            .prop_map(|payload| Packet::WillMsg { payload })
            .boxed(),
        (any::<u16>(), any::<u16>(), text(sz))
            .prop_map(|(topic_id, msg_id, topic_name)| Packet::Register {
                topic_id,
                msg_id,
                topic_name,
            })
            .boxed(),
        (any::<u16>(), any::<u16>(), return_code())
            .prop_map(|(topic_id, msg_id, return_code)| Packet::RegAck {
                topic_id,
                msg_id,
                return_code,
            })
            .boxed(),
        (
            any::<bool>(),
            qos(),
            any::<bool>(),
            topic_ref(),
            any::<u16>(),
            payload(sz),
        )
            // QoS −1 with a normal topic id has no v1.2 encoding: flags 0x60 are the
            // Paho named form (T-14). See the ignored test in proto_vectors.rs.
            .prop_filter(
                "QoS -1 needs a predefined id or short name",
                |(_, q, _, t, _, _)| !(*q == QoS::MinusOne && matches!(t, TopicRef::Id(_))),
            )
            .prop_map(
                |(dup, qos, retain, topic, msg_id, payload)| Packet::Publish {
                    dup,
                    qos,
                    retain,
                    topic,
                    msg_id,
                    payload,
                },
            )
            .boxed(),
        (
            any::<bool>(),
            any::<bool>(),
            any::<u16>(),
            text(sz),
            payload(sz),
        )
            .prop_map(
                |(dup, retain, msg_id, topic_name, payload)| Packet::PublishNamedMinusOne {
                    dup,
                    retain,
                    msg_id,
                    topic_name,
                    payload,
                },
            )
            .boxed(),
        (any::<u16>(), any::<u16>(), return_code())
            .prop_map(|(topic_id, msg_id, return_code)| Packet::PubAck {
                topic_id,
                msg_id,
                return_code,
            })
            .boxed(),
        any::<u16>()
            .prop_map(|msg_id| Packet::PubComp { msg_id })
            .boxed(),
        any::<u16>()
            .prop_map(|msg_id| Packet::PubRec { msg_id })
            .boxed(),
        any::<u16>()
            .prop_map(|msg_id| Packet::PubRel { msg_id })
            .boxed(),
        (any::<bool>(), qos(), any::<u16>(), subscribe_topic(sz))
            .prop_map(|(dup, qos, msg_id, topic)| Packet::Subscribe {
                dup,
                qos,
                msg_id,
                topic,
            })
            .boxed(),
        (qos(), any::<u16>(), any::<u16>(), return_code())
            .prop_map(|(qos, topic_id, msg_id, return_code)| Packet::SubAck {
                qos,
                topic_id,
                msg_id,
                return_code,
            })
            .boxed(),
        (any::<u16>(), subscribe_topic(sz))
            .prop_map(|(msg_id, topic)| Packet::Unsubscribe { msg_id, topic })
            .boxed(),
        any::<u16>()
            .prop_map(|msg_id| Packet::UnsubAck { msg_id })
            .boxed(),
        // A client id is 1..n characters; the empty one has no encoding distinct
        // from "no client id" (see the ignored test in proto_vectors.rs).
        proptest::option::of(text(sz).prop_filter("non-empty", |s| !s.is_empty()))
            .prop_map(|client_id| Packet::PingReq { client_id })
            .boxed(),
        Just(Packet::PingResp).boxed(),
        proptest::option::of(any::<u16>())
            .prop_map(|duration| Packet::Disconnect { duration })
            .boxed(),
        will_topic(sz).prop_map(Packet::WillTopicUpd).boxed(),
        return_code()
            .prop_map(|return_code| Packet::WillTopicResp { return_code })
            .boxed(),
        payload(sz)
            .prop_map(|payload| Packet::WillMsgUpd { payload })
            .boxed(),
        return_code()
            .prop_map(|return_code| Packet::WillMsgResp { return_code })
            .boxed(),
    ])
    .boxed()
}

/// Any packet, forwarder encapsulations included (radius 0..=3, never nested).
fn packet() -> BoxedStrategy<Packet> {
    packet_sized(FULL)
}

fn packet_sized(sz: Sizes) -> BoxedStrategy<Packet> {
    prop_oneof![
        4 => plain_packet_sized(sz),
        1 => (0u8..=3, small_bytes(), plain_packet_sized(sz)).prop_map(|(radius, node_id, inner)| {
            Packet::Encapsulated {
                radius,
                node_id,
                inner: Box::new(inner),
            }
        }),
    ]
    .boxed()
}

fn encode_ok(p: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(p, &mut buf).unwrap_or_else(|e| panic!("encode {p:?}: {e}"));
    buf
}

/// The codes that are not reserved (fact sheet §2).
const TYPES: [u8; 28] = [
    0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10,
    0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x1A, 0x1B, 0x1C, 0x1D, 0xFE,
];

/// Prepends a Length field that matches `body` (MsgType + variable part): the
/// short form when it fits, the long form otherwise or when `force_long`.
fn with_header(body: &[u8], force_long: bool) -> Vec<u8> {
    let short_total = body.len() + 1;
    let mut out = Vec::with_capacity(body.len() + 3);
    if short_total <= 255 && !force_long {
        out.push(short_total as u8);
    } else {
        out.push(0x01);
        out.extend_from_slice(&((body.len() + 3) as u16).to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// A well-framed message with a valid type and a random variable part, so the
/// decoder gets past the header into every message's body.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(&TYPES[..]),
        vec(any::<u8>(), 0..24),
        any::<bool>(),
    )
        .prop_map(|(t, rest, force_long)| {
            let mut body = vec![t];
            body.extend_from_slice(&rest);
            with_header(&body, force_long)
        })
}

/// A fixed pool of valid encodings of every packet kind (encapsulations
/// included), drawn once from the packet strategy with a deterministic runner.
/// Mutating one of these is far cheaper per case than generating a fresh packet.
fn valid_encodings() -> Vec<Vec<u8>> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut pool = Vec::new();
    for sz in [SMALL, FULL] {
        let packets = packet_sized(sz);
        for _ in 0..1_000 {
            let p = packets.new_tree(&mut runner).unwrap().current();
            pool.push(encode_ok(&p).to_vec());
        }
    }
    pool
}

/// Bytes the decoder should find interesting: pure noise, framed messages,
/// framed messages behind a forwarder wrapper, and valid encodings that were
/// then damaged (truncated, extended, one byte overwritten).
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => noise(300),
        3 => framed(),
        1 => (any::<u8>(), vec(any::<u8>(), 0..4), framed()).prop_map(|(ctrl, node, inner)| {
            let mut out = vec![(3 + node.len()) as u8, 0xFE, ctrl];
            out.extend_from_slice(&node);
            out.extend_from_slice(&inner);
            out
        }),
        3 => (
            proptest::sample::select(valid_encodings()),
            any::<prop::sample::Index>(),
            any::<u8>(),
            0u8..3
        )
            .prop_map(|(mut bytes, at, byte, how)| {
                let i = at.index(bytes.len());
                match how {
                    0 => bytes.truncate(i),
                    1 => bytes.push(byte),
                    _ => bytes[i] = byte,
                }
                bytes
            }),
    ]
}

// ---------------------------------------------------------------------------
// properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    /// decode(encode(p)) == p, and encoded_len(p) is the encoded size.
    #[test]
    fn encode_then_decode_is_identity(p in packet()) {
        let bytes = encode_ok(&p);
        prop_assert_eq!(encoded_len(&p), Ok(bytes.len()));
        prop_assert_eq!(decode(&bytes), Ok(p));
    }

    /// T-8: the 1-byte Length form iff the whole message is ≤ 255 bytes, and the
    /// Length field always states the total size.
    #[test]
    fn length_field_form_and_value(p in plain_packet()) {
        let bytes = encode_ok(&p);
        let len = bytes.len();
        if len <= 255 {
            prop_assert_eq!(usize::from(bytes[0]), len);
            prop_assert!(bytes[0] >= 2);
        } else {
            prop_assert_eq!(bytes[0], 0x01);
            prop_assert_eq!(usize::from(u16::from_be_bytes([bytes[1], bytes[2]])), len);
        }
        let type_at = if len <= 255 { 1 } else { 3 };
        prop_assert_eq!(bytes[type_at], p.msg_type().code());
    }

    /// T-9: the wrapper's Length covers the wrapper only; the inner message
    /// follows it byte for byte as it encodes on its own.
    #[test]
    fn encapsulation_wraps_the_inner_encoding_unchanged(
        radius in 0u8..=3,
        node_id in small_bytes(),
        inner in plain_packet(),
    ) {
        let inner_bytes = encode_ok(&inner);
        let p = Packet::Encapsulated { radius, node_id: node_id.clone(), inner: Box::new(inner) };
        let bytes = encode_ok(&p);
        let wrapper = 3 + node_id.len();
        prop_assert_eq!(usize::from(bytes[0]), wrapper);
        prop_assert_eq!(&bytes[1..3], &[0xFE, radius][..]);
        prop_assert_eq!(&bytes[3..wrapper], &node_id[..]);
        prop_assert_eq!(&bytes[wrapper..], &inner_bytes[..]);
    }

    /// Re-encoding a decoded message of a well-framed datagram gives the same packet
    /// again (the decoder's output is always encodable).
    #[test]
    fn framed_input_that_decodes_reencodes(bytes in framed()) {
        if let Ok(p) = decode(&bytes) {
            let again = encode_ok(&p);
            prop_assert_eq!(decode(&again), Ok(p));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

    /// The decoder is total: no input panics it, and anything it accepts
    /// re-encodes (with a matching encoded_len) to bytes that decode to the same
    /// packet.
    #[test]
    fn decode_never_panics_and_successes_round_trip(bytes in hostile_bytes()) {
        if let Ok(p) = decode(&bytes) {
            let again = encode_ok(&p);
            prop_assert_eq!(encoded_len(&p), Ok(again.len()));
            prop_assert_eq!(decode(&again), Ok(p));
        }
    }
}
