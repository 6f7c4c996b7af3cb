//! SLIP framing (RFC 1055) for a microcontroller forwarder: owns the escaping
//! and the optional per-frame CRC.
//!
//! A frame is the bytes between two END (0xC0) bytes, with END inside sent as
//! ESC ESC_END (0xDB 0xDC) and ESC as ESC ESC_ESC (0xDB 0xDD). The encoder sends
//! END before and after every frame; the decoder ignores empty frames, so the
//! leading END flushes any line noise into a frame of its own.
//!
//! With `crc` on, every frame ends with a CRC-16/CCITT-FALSE (polynomial
//! 0x1021, initial value 0xFFFF, no reflection, no final XOR; check value
//! 0x29B1 for "123456789") over the unescaped message, big-endian, escaped like
//! the rest, before the closing END. A frame whose CRC does not match is dropped
//! as [`FrameError::BadCrc`].

use alloc::vec::Vec;
use bytes::{BufMut, Bytes, BytesMut};

use super::{Deframer, FrameError, Framer, Inbound};

/// Frame delimiter.
pub const END: u8 = 0xC0;
/// Escape byte.
pub const ESC: u8 = 0xDB;
/// ESC ESC_END stands for a data END.
pub const ESC_END: u8 = 0xDC;
/// ESC ESC_ESC stands for a data ESC.
pub const ESC_ESC: u8 = 0xDD;

/// Bytes the CRC adds to a frame.
const CRC_LEN: usize = 2;

/// CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, MSB first, no final XOR.
pub fn crc16_ccitt_false(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The SLIP codec. Implements both [`Deframer`] and [`Framer`].
#[derive(Debug)]
pub struct SlipCodec {
    crc: bool,
    max_frame: usize,
    /// Raw (escaped) bytes of the frame in progress.
    buf: BytesMut,
    /// After an oversize frame: drop everything up to the next END.
    discarding: bool,
}

impl SlipCodec {
    /// A codec carrying messages of up to `max_frame` bytes, each followed by a
    /// CRC-16 when `crc`.
    pub fn new(crc: bool, max_frame: usize) -> Self {
        SlipCodec {
            crc,
            max_frame,
            buf: BytesMut::new(),
            discarding: false,
        }
    }

    /// How many received bytes are held, waiting for the end of their frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The most unescaped bytes a frame may hold (message plus CRC).
    fn max_unescaped(&self) -> usize {
        self.max_frame
            .saturating_add(if self.crc { CRC_LEN } else { 0 })
    }

    /// Unescapes and checks one frame (without its END).
    fn decode_frame(&self, raw: &[u8]) -> Result<Inbound, FrameError> {
        let mut frame = Vec::with_capacity(raw.len());
        let mut bytes = raw.iter();
        while let Some(&b) = bytes.next() {
            frame.push(if b == ESC {
                match bytes.next() {
                    Some(&ESC_END) => END,
                    Some(&ESC_ESC) => ESC,
                    _ => return Err(FrameError::BadEscape),
                }
            } else {
                b
            });
        }
        if frame.len() > self.max_unescaped() {
            return Err(FrameError::Oversize);
        }
        if self.crc {
            let Some((body, crc)) = frame
                .split_last_chunk::<CRC_LEN>()
                .filter(|(body, _)| !body.is_empty())
            else {
                return Err(FrameError::Truncated);
            };
            if *crc != crc16_ccitt_false(body).to_be_bytes() {
                return Err(FrameError::BadCrc);
            }
            let split = body.len();
            frame.truncate(split);
        }
        Ok(Inbound::Message {
            from: None,
            bytes: Bytes::from(frame),
        })
    }
}

impl Deframer for SlipCodec {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next(&mut self) -> Option<Result<Inbound, FrameError>> {
        loop {
            let Some(end) = self.buf.iter().position(|&b| b == END) else {
                if self.discarding {
                    self.buf.clear();
                } else if self.buf.len() > self.max_unescaped().saturating_mul(2) {
                    // No escaped frame that fits can be this long: drop it and
                    // everything up to the next END.
                    self.buf.clear();
                    self.discarding = true;
                    return Some(Err(FrameError::Oversize));
                }
                return None;
            };
            let raw = self.buf.split_to(end + 1);
            if core::mem::take(&mut self.discarding) || end == 0 {
                continue;
            }
            return Some(self.decode_frame(raw.get(..end).unwrap_or_default()));
        }
    }
}

impl Framer for SlipCodec {
    fn encode(
        &mut self,
        _to: Option<u64>,
        message: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        if message.is_empty() {
            return Err(FrameError::Truncated);
        }
        if message.len() > self.max_frame {
            return Err(FrameError::Oversize);
        }
        let crc = self.crc.then(|| crc16_ccitt_false(message).to_be_bytes());
        out.reserve(2 * (message.len() + CRC_LEN) + 2);
        out.put_u8(END);
        for &b in message.iter().chain(crc.iter().flatten()) {
            match b {
                END => out.put_slice(&[ESC, ESC_END]),
                ESC => out.put_slice(&[ESC, ESC_ESC]),
                _ => out.put_u8(b),
            }
        }
        out.put_u8(END);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::{vec, vec::Vec};

    fn drain(d: &mut SlipCodec) -> Vec<Result<Inbound, FrameError>> {
        std::iter::from_fn(|| d.next()).collect()
    }

    fn msg(bytes: &[u8]) -> Result<Inbound, FrameError> {
        Ok(Inbound::Message {
            from: None,
            bytes: Bytes::copy_from_slice(bytes),
        })
    }

    /// PUBLISH QoS 0, topic id 0xC0DB, msg id 0, payload C0 DB: ENDs and ESCs to escape.
    const PUBLISH: [u8; 9] = [0x09, 0x0C, 0x00, 0xC0, 0xDB, 0x00, 0x00, 0xC0, 0xDB];
    const PUBLISH_SLIP: [u8; 15] = [
        0xC0, 0x09, 0x0C, 0x00, 0xDB, 0xDC, 0xDB, 0xDD, 0x00, 0x00, 0xDB, 0xDC, 0xDB, 0xDD, 0xC0,
    ];

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
        assert_eq!(crc16_ccitt_false(b""), 0xFFFF);
    }

    #[test]
    fn escapes_byte_for_byte() {
        let mut c = SlipCodec::new(false, 64);
        let mut out = BytesMut::new();
        c.encode(Some(3), &PUBLISH, &mut out).expect("encodes");
        assert_eq!(&out[..], &PUBLISH_SLIP);
        c.push(&out);
        assert_eq!(drain(&mut c), vec![msg(&PUBLISH)]);
    }

    #[test]
    fn crc_appended_big_endian_and_checked() {
        let mut c = SlipCodec::new(true, 64);
        let mut out = BytesMut::new();
        // PINGREQ: 02 16; CRC-16/CCITT-FALSE of it, computed bit by bit above.
        let crc = crc16_ccitt_false(&[0x02, 0x16]);
        c.encode(None, &[0x02, 0x16], &mut out).expect("encodes");
        let mut want = vec![0xC0, 0x02, 0x16];
        for b in crc.to_be_bytes() {
            match b {
                0xC0 => want.extend_from_slice(&[0xDB, 0xDC]),
                0xDB => want.extend_from_slice(&[0xDB, 0xDD]),
                b => want.push(b),
            }
        }
        want.push(0xC0);
        assert_eq!(&out[..], &want[..]);
        c.push(&out);
        assert_eq!(drain(&mut c), vec![msg(&[0x02, 0x16])]);

        // A fixed vector: "123456789" framed carries 29 B1.
        let mut out = BytesMut::new();
        SlipCodec::new(true, 64)
            .encode(None, b"123456789", &mut out)
            .expect("encodes");
        assert_eq!(&out[out.len() - 3..], &[0x29, 0xB1, 0xC0]);

        // Corrupt one message byte: dropped as BadCrc, the next frame still read.
        let mut bad = out.to_vec();
        bad[3] ^= 0x01;
        let mut c = SlipCodec::new(true, 64);
        c.push(&bad);
        c.push(&out);
        assert_eq!(
            drain(&mut c),
            vec![Err(FrameError::BadCrc), msg(b"123456789")]
        );
        // Too short to hold a CRC and a message.
        c.push(&[0xC0, 0x29, 0xB1, 0xC0, 0x01, 0xC0]);
        assert_eq!(
            drain(&mut c),
            vec![Err(FrameError::Truncated), Err(FrameError::Truncated)]
        );
    }

    #[test]
    fn split_at_every_boundary_and_several_per_push() {
        let stream: Vec<u8> = PUBLISH_SLIP.repeat(3);
        for cut in 0..=stream.len() {
            let mut c = SlipCodec::new(false, 64);
            let mut got = Vec::new();
            c.push(&stream[..cut]);
            got.extend(drain(&mut c));
            c.push(&stream[cut..]);
            got.extend(drain(&mut c));
            assert_eq!(got, vec![msg(&PUBLISH); 3], "cut {cut}");
        }
    }

    #[test]
    fn empty_frames_ignored_and_leading_noise_is_its_own_frame() {
        let mut c = SlipCodec::new(true, 64);
        let mut good = BytesMut::new();
        c.encode(None, &[0x02, 0x16], &mut good).expect("encodes");
        // Noise before the first END: a (bad) frame of its own, then the good one.
        c.push(&[0x55, 0xAA, 0x13]);
        c.push(&good);
        c.push(&[0xC0, 0xC0, 0xC0]);
        assert_eq!(
            drain(&mut c),
            vec![Err(FrameError::BadCrc), msg(&[0x02, 0x16])]
        );
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn bad_escape_dropped() {
        let mut c = SlipCodec::new(false, 64);
        c.push(&[0xC0, 0x03, 0xDB, 0x41, 0x00, 0xC0, 0xC0, 0x02, 0xDB, 0xC0]);
        c.push(&PUBLISH_SLIP);
        assert_eq!(
            drain(&mut c),
            vec![
                Err(FrameError::BadEscape),
                Err(FrameError::BadEscape),
                msg(&PUBLISH)
            ]
        );
    }

    #[test]
    fn oversize_dropped_then_resync() {
        let mut c = SlipCodec::new(false, 8);
        // A 9-byte frame: oversize once its END arrives.
        c.push(&PUBLISH_SLIP);
        assert_eq!(drain(&mut c), vec![Err(FrameError::Oversize)]);
        // A runaway frame with no END: dropped once past 2 × max_frame, the rest
        // up to the next END discarded with it.
        c.push(&[0x41; 17]);
        assert_eq!(drain(&mut c), vec![Err(FrameError::Oversize)]);
        c.push(&[0x41; 100]);
        assert_eq!(drain(&mut c), vec![]);
        c.push(&[0x41, 0xC0, 0x02, 0x16, 0xC0]);
        assert_eq!(drain(&mut c), vec![msg(&[0x02, 0x16])]);
        let mut out = BytesMut::new();
        assert_eq!(
            c.encode(None, &PUBLISH, &mut out),
            Err(FrameError::Oversize)
        );
        assert_eq!(c.encode(None, &[], &mut out), Err(FrameError::Truncated));
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_streams_never_panic_and_stay_bounded(
            crc: bool,
            max_frame in 0usize..200,
            chunks in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![4 => any::<u8>(), 1 => Just(END), 1 => Just(ESC)],
                    0..300,
                ),
                0..8,
            ),
        ) {
            let mut d = SlipCodec::new(crc, max_frame);
            for chunk in &chunks {
                d.push(chunk);
                while let Some(r) = d.next() {
                    if let Ok(Inbound::Message { bytes, from }) = r {
                        prop_assert!(from.is_none());
                        prop_assert!(!bytes.is_empty() && bytes.len() <= max_frame);
                    }
                }
                prop_assert!(d.buffered() <= 2 * max_frame + 64, "held {}", d.buffered());
            }
        }

        #[test]
        fn encode_then_read_round_trips(
            crc: bool,
            to in proptest::option::of(any::<u64>()),
            messages in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![2 => any::<u8>(), 1 => Just(END), 1 => Just(ESC)],
                    1..=80,
                ),
                1..4,
            ),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut c = SlipCodec::new(crc, 80);
            let mut out = BytesMut::new();
            for m in &messages {
                c.encode(to, m, &mut out).expect("fits");
            }
            let cut = cut.index(out.len() + 1);
            let mut got = Vec::new();
            c.push(&out[..cut]);
            got.extend(drain(&mut c));
            c.push(&out[cut..]);
            got.extend(drain(&mut c));
            let want: Vec<_> = messages.iter().map(|m| msg(m)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
