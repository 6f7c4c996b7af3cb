//! Proptest strategies for arbitrary MQTT-SN 2.0 packets, shared by the v2
//! property tests and the version-rule tests (`#[path]`-included; under `common/` so cargo does not build it as a test of its own).

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use sngate_wire::v2::{
    Ack, AliasKind, Auth, AuthData, ConnAck, Connect, Delivery, Disconnect, Forwarder,
    ForwarderForm, MonotonicCounter, Packet, Protection, PubWos, Publish, QoS, ReasonCode, RegAck,
    Register, RetainHandling, SubAck, Subscribe, SubscribeOptions, Topic, Unsubscribe, Will,
    encode,
};

/// Arbitrary Unicode without U+0000 (which the draft makes Malformed).
pub fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..max).prop_map(String::from_iter)
}

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

pub fn reason() -> impl Strategy<Value = ReasonCode> {
    any::<u8>().prop_map(ReasonCode)
}

pub fn topic() -> impl Strategy<Value = Topic> {
    prop_oneof![
        any::<u16>().prop_map(Topic::SessionAlias),
        any::<u16>().prop_map(Topic::PredefinedAlias),
        text(30).prop_map(Topic::Name),
    ]
}

fn alias_kind() -> impl Strategy<Value = AliasKind> {
    prop_oneof![Just(AliasKind::Session), Just(AliasKind::Predefined)]
}

fn auth_data() -> impl Strategy<Value = AuthData> {
    (text(20), bytes(40)).prop_map(|(method, data)| AuthData { method, data })
}

pub fn connect() -> impl Strategy<Value = Connect> {
    (
        (any::<[bool; 3]>(), any::<u16>(), any::<u16>(), any::<u16>()),
        (
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u32>()),
        ),
        proptest::option::of((qos(), any::<bool>(), topic(), bytes(40))),
        proptest::option::of(auth_data()),
        text(30),
    )
        .prop_map(
            |(([clean, addr, sugg], packet_id, keep_alive, mps), (dam, sei), will, auth, id)| {
                Connect {
                    clean_start: clean,
                    allow_address_change: addr,
                    allow_server_suggested: sugg,
                    packet_id,
                    keep_alive,
                    max_packet_size: mps,
                    default_awake_messages: dam,
                    session_expiry: sei,
                    will: will.map(|(qos, retain, topic, payload)| Will {
                        qos,
                        retain,
                        topic,
                        payload,
                    }),
                    auth,
                    client_id: id,
                }
            },
        )
}

fn ack() -> impl Strategy<Value = Ack> {
    (any::<u16>(), proptest::option::of(reason()))
        .prop_map(|(packet_id, reason)| Ack { packet_id, reason })
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![
        Just(Delivery::AtMostOnce),
        any::<u16>().prop_map(|packet_id| Delivery::AtLeastOnce { packet_id }),
        (any::<u16>(), any::<bool>())
            .prop_map(|(packet_id, dup)| Delivery::ExactlyOnce { packet_id, dup }),
    ]
}

fn subscribe_options() -> impl Strategy<Value = SubscribeOptions> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend)
        ],
    )
        .prop_map(
            |(no_local, max_qos, retain_as_published, retain_handling)| SubscribeOptions {
                no_local,
                max_qos,
                retain_as_published,
                retain_handling,
            },
        )
}

/// Every packet that is not an envelope; `payload` bounds payloads (600
/// reaches the long Length form).
pub fn plain_packet(payload: usize) -> BoxedStrategy<Packet> {
    prop_oneof![
        connect().prop_map(|c| Packet::Connect(Box::new(c))),
        (
            any::<[bool; 1]>(),
            any::<u16>(),
            reason(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(auth_data()),
            text(36),
        )
            .prop_map(|([sp], packet_id, reason, sei, ka, auth, id)| {
                Packet::ConnAck(Box::new(ConnAck {
                    session_present: sp,
                    packet_id,
                    reason,
                    session_expiry: sei,
                    server_keep_alive: ka,
                    auth,
                    assigned_client_id: id,
                }))
            }),
        (any::<u16>(), reason(), text(20), bytes(40)).prop_map(
            |(packet_id, reason, method, data)| Packet::Auth(Auth {
                packet_id,
                reason,
                method,
                data
            })
        ),
        (any::<u16>(), proptest::option::of(any::<u16>()), text(30)).prop_map(
            |(packet_id, alias, topic_name)| Packet::Register(Register {
                packet_id,
                alias,
                topic_name
            })
        ),
        (
            alias_kind(),
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(reason())
        )
            .prop_map(
                |(alias_kind, packet_id, alias, reason)| Packet::RegAck(RegAck {
                    alias_kind,
                    packet_id,
                    alias,
                    reason
                })
            ),
        (
            any::<bool>(),
            prop_oneof![
                any::<u16>().prop_map(Topic::PredefinedAlias),
                text(30).prop_map(Topic::Name)
            ],
            bytes(payload)
        )
            .prop_map(|(retain, topic, payload)| Packet::PubWos(PubWos {
                retain,
                topic,
                payload
            })),
        (delivery(), any::<bool>(), topic(), bytes(payload)).prop_map(
            |(delivery, retain, topic, payload)| Packet::Publish(Publish {
                delivery,
                retain,
                topic,
                payload
            })
        ),
        ack().prop_map(Packet::PubAck),
        ack().prop_map(Packet::PubRec),
        ack().prop_map(Packet::PubRel),
        ack().prop_map(Packet::PubComp),
        ack().prop_map(Packet::UnsubAck),
        (subscribe_options(), any::<u16>(), topic()).prop_map(|(options, packet_id, topic)| {
            Packet::Subscribe(Subscribe {
                options,
                packet_id,
                topic,
            })
        }),
        (
            alias_kind(),
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(reason())
        )
            .prop_map(
                |(alias_kind, packet_id, alias, reason)| Packet::SubAck(SubAck {
                    alias_kind,
                    packet_id,
                    alias,
                    reason
                })
            ),
        (any::<u16>(), topic())
            .prop_map(|(packet_id, topic)| Packet::Unsubscribe(Unsubscribe { packet_id, topic })),
        any::<u16>().prop_map(|packet_id| Packet::PingReq { packet_id }),
        (any::<u16>(), proptest::option::of(any::<u8>())).prop_map(
            |(packet_id, messages_remaining)| Packet::PingResp {
                packet_id,
                messages_remaining
            }
        ),
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(reason()),
            proptest::option::of(any::<u32>()),
            text(20)
        )
            .prop_map(|(packet_id, reason, session_expiry, reason_string)| {
                Packet::Disconnect(Disconnect {
                    packet_id,
                    reason,
                    session_expiry,
                    reason_string,
                })
            }),
        Just(Packet::WakeUp),
        (any::<bool>(), any::<u16>(), any::<u32>()).prop_map(
            |(retain_aliases, packet_id, duration)| Packet::SleepReq {
                retain_aliases,
                packet_id,
                duration
            }
        ),
        (
            any::<u16>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(reason())
        )
            .prop_map(|(packet_id, duration, reason)| Packet::SleepResp {
                packet_id,
                duration,
                reason
            }),
        (any::<u8>(), any::<u16>())
            .prop_map(|(gw_id, duration)| Packet::Advertise { gw_id, duration }),
        bytes(8).prop_map(|network_info| Packet::SearchGw { network_info }),
        (any::<u8>(), bytes(16))
            .prop_map(|(gw_id, gw_address)| Packet::GwInfo { gw_id, gw_address }),
    ]
    .boxed()
}

fn encoded(p: &Packet) -> Bytes {
    let mut b = bytes::BytesMut::new();
    encode(p, &mut b).unwrap_or_else(|e| panic!("strategy made an unencodable {p:?}: {e}"));
    b.freeze()
}

/// A protection envelope in one of the three ways its tag length is known.
fn protection(payload: usize) -> impl Strategy<Value = Protection> {
    let head = (
        any::<[u8; 8]>(),
        any::<[u8; 4]>(),
        prop_oneof![Just(0usize), Just(2usize), Just(4usize), Just(12usize)]
            .prop_flat_map(|n| vec(any::<u8>(), n..=n).prop_map(Bytes::from)),
        prop_oneof![
            Just(MonotonicCounter::Absent),
            any::<u16>().prop_map(MonotonicCounter::U16),
            any::<u32>().prop_map(MonotonicCounter::U32)
        ],
    );
    let tagged = prop_oneof![
        // Truncated authentication-only tags: 2 × code bytes.
        (4u8..=15, any::<u8>()).prop_map(|(code, scheme)| (code, scheme, usize::from(code) * 2)),
        // The nominal size of a defined scheme.
        prop_oneof![
            Just((0x00u8, 32usize)),
            Just((0x02, 16)),
            Just((0x42, 8)),
            Just((0x49, 16))
        ]
        .prop_map(|(scheme, n)| (1u8, scheme, n)),
    ]
    .prop_flat_map(move |(code, scheme, n)| {
        (
            Just(code),
            Just(scheme),
            vec(any::<u8>(), 2..payload.max(3)).prop_map(Bytes::from),
            vec(any::<u8>(), n..=n).prop_map(Bytes::from),
        )
    });
    // Provider-defined tag length: the protected packet delimits itself.
    let delimited = (
        any::<u8>().prop_map(|s| if s < 0x40 { s } else { 0x3C }),
        plain_packet(payload),
        bytes(20),
    )
        .prop_map(|(scheme, inner, tag)| (0u8, scheme, encoded(&inner), tag));
    (head, prop_oneof![tagged, delimited]).prop_map(
        |((sender_id, random, crypto_material, counter), (code, scheme, protected, tag))| {
            Protection {
                tag_length_code: code,
                scheme,
                sender_id,
                random,
                crypto_material,
                counter,
                protected,
                tag,
            }
        },
    )
}

/// Every packet, the envelopes included (nested the ways the draft allows).
pub fn packet(payload: usize) -> BoxedStrategy<Packet> {
    let plain = plain_packet(payload);
    let connection = (text(30), plain.clone())
        .prop_map(|(client_id, inner)| Packet::Connection {
            client_id,
            inner: Box::new(inner),
        })
        .boxed();
    let protected = protection(payload)
        .prop_map(|p| Packet::Protection(Box::new(p)))
        .boxed();
    let forwardable = prop_oneof![
        6 => plain.clone(),
        1 => connection.clone(),
        1 => protected.clone(),
    ];
    let forwarder = (
        prop_oneof![
            Just(ForwarderForm::WholeLength),
            Just(ForwarderForm::WrapperLength)
        ],
        bytes(16),
        forwardable,
    )
        .prop_map(|(form, client_addressing, inner)| {
            Packet::Forwarder(Forwarder {
                form,
                client_addressing,
                inner: Box::new(inner),
            })
        });
    prop_oneof![
        12 => plain,
        1 => connection,
        1 => protected,
        1 => forwarder,
    ]
    .boxed()
}
