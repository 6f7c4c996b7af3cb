//! Property tests for the MQTT-SN 2.0 codec: arbitrary packets (the envelopes
//! included) round-trip through encode/decode, `encoded_len` agrees with
//! `encode`, the Length field takes the short form iff the packet fits in
//! 255 bytes, and the decoder never panics on any input while whatever it
//! accepts re-encodes to a packet that decodes the same.

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
use proptest::collection::vec;
use proptest::prelude::*;
use sngate_wire::v2::{Packet, decode, encode, encoded_len};

fn encode_ok(p: &Packet) -> BytesMut {
    let mut b = BytesMut::new();
    encode(p, &mut b).unwrap_or_else(|e| panic!("encode {p:?}: {e}"));
    b
}

/// Valid encodings with small fields, as seeds for mutation.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        strategies::packet(24),
        vec((any::<usize>(), any::<u8>()), 0..4),
        any::<usize>(),
        any::<bool>(),
    )
        .prop_map(|(p, flips, cut, do_cut)| {
            let mut b = encode_ok(&p).to_vec();
            for (at, byte) in flips {
                if !b.is_empty() {
                    let i = at % b.len();
                    b[i] = byte;
                }
            }
            if do_cut && !b.is_empty() {
                b.truncate(cut % b.len());
            }
            b
        })
}

fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        // A plausible header then noise: reaches every packet type's body.
        (any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(|(t, mut body)| {
            body.insert(0, t);
            body.insert(0, (body.len() + 1) as u8);
            body
        }),
        mutated(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn encode_then_decode_is_identity(p in strategies::packet(600)) {
        let b = encode_ok(&p);
        prop_assert_eq!(encoded_len(&p), Ok(b.len()));
        prop_assert_eq!(decode(&b), Ok(p));
    }

    #[test]
    fn length_field_is_short_iff_the_packet_fits_255(p in strategies::plain_packet(600)) {
        let b = encode_ok(&p);
        if b.len() <= 255 {
            prop_assert_eq!(usize::from(b[0]), b.len());
        } else {
            prop_assert_eq!(b[0], 0x01);
            prop_assert_eq!(usize::from(u16::from_be_bytes([b[1], b[2]])), b.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn decode_never_panics_and_successes_round_trip(bytes in hostile()) {
        if let Ok(p) = decode(&bytes) {
            let again = encode_ok(&p);
            prop_assert_eq!(encoded_len(&p), Ok(again.len()));
            prop_assert_eq!(decode(&again), Ok(p));
        }
    }
}
