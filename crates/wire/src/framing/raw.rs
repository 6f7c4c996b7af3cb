//! Raw framing: MQTT-SN messages back to back on the stream, as existing serial
//! bridges send them, each delimited by its own Length field (1 byte, or 0x01
//! and 2 bytes; [`crate::v1::header::parse_length`]). Owns the resynchronising
//! reader for that stream.
//!
//! A forwarder encapsulation (0xFE) is one unit with the message it carries: its
//! Length covers only the wrapper, and the relayed message follows with its own
//! Length (fact sheet trap T-9).
//!
//! There is no start delimiter, so garbage is recognised only by what cannot be
//! a message start: a Length of 0, a long-form Length below 4, a length larger
//! than `max_frame`, a reserved MsgType code (or an encapsulated message that is
//! itself an encapsulation). Such a byte is dropped and the next one tried; a
//! run of dropped bytes is reported as one [`FrameError::Garbage`] just before
//! the next message it finds. Garbage that happens to look like a valid header
//! is read as a message, and the engine's decoder rejects it.

use bytes::{Buf, BytesMut};

use super::{Deframer, FrameError, Framer, Inbound};
use crate::v1::MsgType;
use crate::v1::header::parse_length;

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Cannot be a message start: drop a byte.
    Invalid,
    /// Plausible so far; more bytes are needed to decide or complete it.
    NeedMore,
    /// A complete message (with any encapsulated message) of this many bytes.
    Complete(usize),
}

/// A message header at the front of `buf`: `Ok((total, field_len, msg_type))`,
/// or the [`Unit`] it makes of the buffer.
fn header(buf: &[u8], max_frame: usize) -> Result<(usize, usize, u8), Unit> {
    let len = match parse_length(buf) {
        Err(_) => return Err(Unit::Invalid),
        Ok(None) => return Err(Unit::NeedMore),
        Ok(Some(len)) => len,
    };
    if len.total > max_frame || len.total <= len.field_len {
        return Err(Unit::Invalid);
    }
    let &code = buf.get(len.field_len).ok_or(Unit::NeedMore)?;
    if MsgType::from_code(code).is_none() {
        return Err(Unit::Invalid);
    }
    Ok((len.total, len.field_len, code))
}

/// Reads the unit (a message, or an encapsulation and its message) at the
/// front of `buf`.
fn unit(buf: &[u8], max_frame: usize) -> Unit {
    let encapsulated = MsgType::Encapsulated.code();
    let (total, field_len, code) = match header(buf, max_frame) {
        Ok(h) => h,
        Err(u) => return u,
    };
    let total = if code == encapsulated {
        // Length, MsgType and Ctrl at least; the wireless node id may be empty.
        if total < field_len + 2 {
            return Unit::Invalid;
        }
        let Some(inner) = buf.get(total..) else {
            return Unit::NeedMore;
        };
        match header(inner, max_frame - total) {
            Ok((_, _, inner_code)) if inner_code == encapsulated => return Unit::Invalid,
            Ok((inner_total, _, _)) => total + inner_total,
            Err(u) => return u,
        }
    } else {
        total
    };
    if buf.len() >= total {
        Unit::Complete(total)
    } else {
        Unit::NeedMore
    }
}

/// The raw codec. Implements both [`Deframer`] and [`Framer`].
#[derive(Debug)]
pub struct RawCodec {
    max_frame: usize,
    /// Bytes not yet consumed.
    buf: BytesMut,
    /// Garbage bytes dropped but not yet reported (one report per run).
    garbage: usize,
}

impl RawCodec {
    /// A codec carrying messages (encapsulation included) of up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        RawCodec {
            max_frame,
            buf: BytesMut::new(),
            garbage: 0,
        }
    }

    /// How many received bytes are held, waiting for the rest of their message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl Deframer for RawCodec {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next(&mut self) -> Option<Result<Inbound, FrameError>> {
        loop {
            if self.buf.is_empty() {
                return None;
            }
            match unit(&self.buf, self.max_frame) {
                Unit::Invalid => {
                    self.buf.advance(1);
                    self.garbage += 1;
                }
                // A garbage run is held until a message ends it: one report per run.
                Unit::NeedMore => return None,
                Unit::Complete(n) => {
                    if self.garbage > 0 {
                        let bytes = core::mem::take(&mut self.garbage);
                        return Some(Err(FrameError::Garbage { bytes }));
                    }
                    let bytes = self.buf.split_to(n).freeze();
                    return Some(Ok(Inbound::Message { from: None, bytes }));
                }
            }
        }
    }
}

impl Framer for RawCodec {
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
        // Only what the reader on the far end would delimit back exactly.
        if unit(message, self.max_frame) != Unit::Complete(message.len()) {
            return Err(FrameError::Malformed);
        }
        out.extend_from_slice(message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::{vec, vec::Vec};

    fn drain(d: &mut RawCodec) -> Vec<Result<Inbound, FrameError>> {
        std::iter::from_fn(|| d.next()).collect()
    }

    fn msg(bytes: &[u8]) -> Result<Inbound, FrameError> {
        Ok(Inbound::Message {
            from: None,
            bytes: Bytes::copy_from_slice(bytes),
        })
    }

    /// CONNECT "dev1", 1-byte length.
    const CONNECT: [u8; 10] = [0x0A, 0x04, 0x04, 0x01, 0x00, 0x3C, b'd', b'e', b'v', b'1'];
    /// PINGREQ in the 3-byte form (allowed for short messages too).
    const PINGREQ_LONG: [u8; 4] = [0x01, 0x00, 0x04, 0x16];
    /// Encapsulation (Ctrl 0, node id 0xAB 0xCD) carrying PINGREQ.
    const ENCAP: [u8; 7] = [0x05, 0xFE, 0x00, 0xAB, 0xCD, 0x02, 0x16];

    fn long_publish(payload: usize) -> Vec<u8> {
        let total = 4 + 5 + payload;
        let mut m = vec![0x01];
        m.extend_from_slice(&(total as u16).to_be_bytes());
        m.extend_from_slice(&[0x0C, 0x00, 0x00, 0x01, 0x00, 0x00]);
        m.extend(std::iter::repeat_n(0x7A, payload));
        assert_eq!(m.len(), total);
        m
    }

    #[test]
    fn reads_one_and_three_byte_lengths_and_encapsulations() {
        let big = long_publish(300);
        let stream = [&CONNECT[..], &PINGREQ_LONG, &big, &ENCAP].concat();
        let want = vec![msg(&CONNECT), msg(&PINGREQ_LONG), msg(&big), msg(&ENCAP)];
        let mut d = RawCodec::new(400);
        d.push(&stream);
        assert_eq!(drain(&mut d), want);
        assert_eq!(d.buffered(), 0);
        for cut in 0..=stream.len() {
            let mut d = RawCodec::new(400);
            let mut got = Vec::new();
            d.push(&stream[..cut]);
            got.extend(drain(&mut d));
            d.push(&stream[cut..]);
            got.extend(drain(&mut d));
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn garbage_is_one_error_per_run_then_resync() {
        // Each byte judged at the front, in turn: 00 zero length; 01 00 02
        // long form below 4; 00; 02 03 and 03 03 reserved type 0x03; 03 FF
        // reserved type 0xFF; FF and 1E longer than max_frame (20).
        let garbage = [0x00, 0x01, 0x00, 0x02, 0x03, 0x03, 0xFF, 0x1E];
        assert_eq!(unit(&[0x00], 20), Unit::Invalid);
        assert_eq!(unit(&[0x01, 0x00, 0x02], 20), Unit::Invalid);
        assert_eq!(unit(&[0x02, 0x03], 20), Unit::Invalid);
        assert_eq!(unit(&[0x03, 0xFF], 20), Unit::Invalid);
        assert_eq!(unit(&[0xFF, 0x1E], 20), Unit::Invalid);
        assert_eq!(unit(&[0x1E, 0x0A], 20), Unit::Invalid);
        assert_eq!(unit(&[0x1E, 0x0A], 64), Unit::NeedMore);
        let stream = [&CONNECT[..], &garbage, &CONNECT, &[0x00], &ENCAP].concat();
        let want = vec![
            msg(&CONNECT),
            Err(FrameError::Garbage { bytes: 8 }),
            msg(&CONNECT),
            Err(FrameError::Garbage { bytes: 1 }),
            msg(&ENCAP),
        ];
        for cut in 0..=stream.len() {
            let mut d = RawCodec::new(20);
            let mut got = Vec::new();
            d.push(&stream[..cut]);
            got.extend(drain(&mut d));
            d.push(&stream[cut..]);
            got.extend(drain(&mut d));
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn oversize_lengths_are_garbage() {
        let mut d = RawCodec::new(16);
        // Long form, 29 bytes, PUBLISH: no byte of it can start a message
        // of at most 16 bytes (0x0C would, were 0x7A not a reserved type).
        let big = [&[0x01, 0x00, 0x1D, 0x0C][..], &[0x7A; 25]].concat();
        d.push(&big);
        d.push(&CONNECT);
        let got = drain(&mut d);
        assert_eq!(got.last(), Some(&msg(&CONNECT)));
        let dropped: usize = got
            .iter()
            .map(|r| match r {
                Err(FrameError::Garbage { bytes }) => *bytes,
                _ => 0,
            })
            .sum();
        assert_eq!(dropped, big.len());
    }

    #[test]
    fn nested_encapsulation_is_garbage() {
        assert_eq!(
            unit(&[0x03, 0xFE, 0x00, 0x03, 0xFE, 0x00, 0x02, 0x16], 64),
            Unit::Invalid
        );
        // A wrapper too short for Ctrl.
        assert_eq!(unit(&[0x02, 0xFE, 0x02, 0x16], 64), Unit::Invalid);
    }

    #[test]
    fn encode_passes_messages_through_and_refuses_malformed() {
        let mut c = RawCodec::new(400);
        let mut out = BytesMut::new();
        for m in [&CONNECT[..], &PINGREQ_LONG, &ENCAP] {
            c.encode(Some(1), m, &mut out).expect("encodes");
        }
        assert_eq!(
            &out[..],
            &[&CONNECT[..], &PINGREQ_LONG, &ENCAP].concat()[..]
        );
        let n = out.len();
        for bad in [
            &[0x03, 0x16][..],               // Length says 3, 2 bytes
            &[0x02, 0x16, 0x00],             // Length says 2, 3 bytes
            &[0x02, 0x03],                   // reserved type
            &[0x05, 0xFE, 0x00, 0xAB, 0xCD], // encapsulation without its message
        ] {
            assert_eq!(c.encode(None, bad, &mut out), Err(FrameError::Malformed));
        }
        assert_eq!(c.encode(None, &[], &mut out), Err(FrameError::Truncated));
        assert_eq!(
            RawCodec::new(9).encode(None, &CONNECT, &mut out),
            Err(FrameError::Oversize)
        );
        assert_eq!(out.len(), n);
    }

    /// Any valid message: a body of a known type, its Length in either form, and
    /// sometimes wrapped in an encapsulation.
    fn any_message() -> impl Strategy<Value = Vec<u8>> {
        let codes: Vec<u8> = (0..=0xFDu8)
            .filter(|&c| MsgType::from_code(c).is_some())
            .collect();
        (
            proptest::sample::select(codes),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
        )
            .prop_map(|(code, body, long, encap)| {
                let total_short = body.len() + 2;
                let mut m = Vec::new();
                if long || total_short > 255 {
                    m.push(0x01);
                    m.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
                } else {
                    m.push(total_short as u8);
                }
                m.push(code);
                m.extend_from_slice(&body);
                match encap {
                    None => m,
                    Some(node) => {
                        let mut w = vec![(3 + node.len()) as u8, 0xFE, 0x01];
                        w.extend_from_slice(&node);
                        w.extend_from_slice(&m);
                        w
                    }
                }
            })
    }

    proptest! {
        #[test]
        fn arbitrary_streams_never_panic_and_stay_bounded(
            max_frame in 0usize..200,
            chunks in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![4 => any::<u8>(), 1 => Just(0x01), 1 => Just(0xFE)],
                    0..300,
                ),
                0..8,
            ),
        ) {
            let mut d = RawCodec::new(max_frame);
            for chunk in &chunks {
                d.push(chunk);
                while let Some(r) = d.next() {
                    if let Ok(Inbound::Message { bytes, from }) = r {
                        prop_assert!(from.is_none());
                        prop_assert!(!bytes.is_empty() && bytes.len() <= max_frame);
                    }
                }
                prop_assert!(d.buffered() <= max_frame + 3, "held {}", d.buffered());
            }
        }

        #[test]
        fn encode_then_read_round_trips(
            messages in proptest::collection::vec(any_message(), 1..5),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut c = RawCodec::new(400);
            let mut out = BytesMut::new();
            for m in &messages {
                c.encode(None, m, &mut out).expect("valid message");
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
