//! The simulated payload: who sent a message, in which run, with which
//! sequence number, QoS and send time — so a subscriber can count it
//! (delivered, duplicate, foreign) and time it (latency) without any side
//! channel. Pure: no clock, no I/O.
//!
//! Layout, big-endian, then zero padding up to the configured payload size:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SNS1` |
//! | 4 | run id |
//! | 4 | device index |
//! | 8 | sequence number (per device, from 0) |
//! | 8 | send time, µs since the run's epoch |
//! | 1 | publish QoS (−1..=2, two's complement) |

use bytes::{BufMut, Bytes, BytesMut};

/// The magic that starts every simulated payload.
pub const MAGIC: [u8; 4] = *b"SNS1";

/// The header's length: the smallest payload the simulation can send.
pub const HEADER_LEN: usize = 29;

/// What a simulated payload says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The run that sent it.
    pub run: u32,
    /// The sending device's index.
    pub device: u32,
    /// The device's sequence number for it.
    pub seq: u64,
    /// When it was sent: µs since the run's epoch.
    pub sent_us: u64,
    /// The QoS it was published with (−1..=2).
    pub qos: i8,
}

/// The payload for `header`, zero-padded to `size` bytes (at least
/// [`HEADER_LEN`]).
pub fn encode(header: &Header, size: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(size.max(HEADER_LEN));
    out.put_slice(&MAGIC);
    out.put_u32(header.run);
    out.put_u32(header.device);
    out.put_u64(header.seq);
    out.put_u64(header.sent_us);
    out.put_i8(header.qos);
    out.resize(size.max(HEADER_LEN), 0);
    out.freeze()
}

/// The header of a simulated payload; `None` for anything else (a payload
/// too short, or without the magic).
pub fn decode(payload: &[u8]) -> Option<Header> {
    let rest = payload.strip_prefix(&MAGIC)?;
    let run = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?);
    let device = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
    let sent_us = u64::from_be_bytes(rest.get(16..24)?.try_into().ok()?);
    let qos = i8::from_be_bytes([*rest.get(24)?]);
    Some(Header {
        run,
        device,
        seq,
        sent_us,
        qos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_padded_to_size() {
        let h = Header {
            run: 0xDEAD_BEEF,
            device: 7,
            seq: 1 << 40,
            sent_us: 123_456_789,
            qos: -1,
        };
        let p = encode(&h, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(decode(&p), Some(h));
        assert!(p[HEADER_LEN..].iter().all(|&b| b == 0));
        assert_eq!(
            encode(&h, 3).len(),
            HEADER_LEN,
            "never shorter than the header"
        );
    }

    #[test]
    fn anything_else_is_not_a_header() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"21.5"), None);
        let p = encode(
            &Header {
                run: 1,
                device: 2,
                seq: 3,
                sent_us: 4,
                qos: 1,
            },
            HEADER_LEN,
        );
        assert_eq!(decode(&p[..HEADER_LEN - 1]), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
