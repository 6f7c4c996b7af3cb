//! Framing codecs for serial links, pure: no tokio, no I/O, no clock.
//!
//! A serial port is a byte stream with no datagram boundaries (fact sheet §1,
//! trap T-20), so each serial framing kind owns a stream decoder ([`Deframer`])
//! that cuts the stream into MQTT-SN messages and resynchronises by itself after
//! garbage, and an encoder ([`Framer`]) that wraps one outgoing message for the
//! link:
//! - [`xbee`] — Digi XBee API frames (mode 1, or mode 2 with escaping), carrying
//!   the remote radio address of every message;
//! - [`slip`] — RFC 1055 SLIP, optionally with a CRC-16/CCITT-FALSE per frame;
//! - [`raw`] — MQTT-SN messages back to back, delimited by their own Length field.
//!
//! This module owns the shared types ([`Inbound`], [`FrameError`], the two
//! traits) and the factories [`deframer`] / [`framer`] that build a codec from a
//! [`FramingKind`]. The serial port task feeds every read to
//! [`Deframer::push`], then drains [`Deframer::next`] until it returns `None`.
//!
//! Every deframer keeps bounded memory: once drained, it holds at most one
//! partial frame, under about `2 × max_frame` plus a few header bytes.

use alloc::boxed::Box;
pub mod raw;
pub mod slip;
pub mod xbee;

use bytes::{Bytes, BytesMut};

pub use raw::RawCodec;
pub use slip::SlipCodec;
pub use xbee::{XbeeCodec, XbeeOptions, XbeeTx};

/// A sensible `max_frame` (largest MQTT-SN message carried) when the
/// configuration gives none: well above any radio MTU, small enough to keep the
/// per-port buffers tiny.
pub const DEFAULT_MAX_FRAME: usize = 1024;

/// A frame read from a serial stream, or something the stream taught us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// An MQTT-SN message (possibly a forwarder encapsulation) from `from`.
    /// `from` is the remote radio address (XBee: the 64-bit source address,
    /// or for 0x81 the 16-bit one widened to u64); `None` on links without
    /// addressing (raw, slip).
    Message {
        /// The remote radio address, when the link has addressing.
        from: Option<u64>,
        /// The message bytes, exactly as the remote sent them.
        bytes: Bytes,
    },
    /// XBee transmit status (0x8B or 0x89): frame id and delivery status (0 = success).
    TxStatus {
        /// The frame id of the transmit request this status answers.
        frame_id: u8,
        /// The delivery status; 0 means success.
        status: u8,
    },
}

/// Why bytes were dropped while reading (each is counted by the caller), or why
/// a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// An XBee frame whose checksum does not match its frame data.
    #[error("bad XBee frame checksum")]
    BadChecksum,
    /// A SLIP frame whose CRC-16 does not match its contents.
    #[error("bad SLIP frame CRC")]
    BadCrc,
    /// A frame (or a message to encode) larger than the link's `max_frame`.
    #[error("frame larger than the configured maximum")]
    Oversize,
    /// Bytes found outside any frame (between frames, or a run the raw
    /// deframer could not read as a message), reported once per run.
    #[error("{bytes} garbage bytes between frames")]
    Garbage {
        /// How many bytes were dropped.
        bytes: usize,
    },
    /// A frame too short for its header or carrying no message, or cut short
    /// by the next start delimiter; when encoding, an empty message.
    #[error("truncated frame")]
    Truncated,
    /// An XBee frame of a type this gateway does not handle (e.g. 0x8A modem
    /// status, 0x88 AT command response): well formed, simply not for us.
    #[error("unsupported XBee frame type {0:#04x}")]
    UnsupportedFrameType(u8),
    /// An escape byte followed by something that cannot follow it (SLIP: not
    /// ESC_END/ESC_ESC; XBee mode 2: a start delimiter).
    #[error("bad escape sequence")]
    BadEscape,
    /// Encoding on a raw link: the message's own Length field (or its type, or
    /// its encapsulation) does not describe exactly its bytes, so the receiver
    /// could not delimit it.
    #[error("message length field does not match the message")]
    Malformed,
}

/// A stream decoder: feed bytes as they come, take frames out.
pub trait Deframer: Send {
    /// Appends received bytes (any split: a frame may arrive in pieces, several in one read).
    fn push(&mut self, bytes: &[u8]);
    /// The next complete frame, an error for bytes dropped (the stream resynchronises by itself), or None when more bytes are needed.
    fn next(&mut self) -> Option<Result<Inbound, FrameError>>;
}

/// Encodes an outgoing MQTT-SN message for the link. `to` is the radio address (XBee; None = broadcast), ignored by raw/slip. Appends to `out`.
pub trait Framer: Send {
    /// Appends the framed `message` to `out`; on error nothing is appended.
    fn encode(
        &mut self,
        to: Option<u64>,
        message: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), FrameError>;
}

/// Which framing a serial port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingKind {
    /// Digi XBee API frames. The factories replace `max_frame` in the options
    /// with their own `max_frame` argument.
    Xbee(XbeeOptions),
    /// RFC 1055 SLIP, with a CRC-16/CCITT-FALSE on every frame when `crc`.
    Slip {
        /// Whether each frame carries (and must carry) a trailing CRC-16.
        crc: bool,
    },
    /// Back-to-back MQTT-SN messages delimited by their Length field.
    Raw,
}

/// A stream decoder for `kind`, accepting messages up to `max_frame` bytes.
pub fn deframer(kind: FramingKind, max_frame: usize) -> Box<dyn Deframer> {
    match kind {
        FramingKind::Xbee(opts) => Box::new(XbeeCodec::new(XbeeOptions { max_frame, ..opts })),
        FramingKind::Slip { crc } => Box::new(SlipCodec::new(crc, max_frame)),
        FramingKind::Raw => Box::new(RawCodec::new(max_frame)),
    }
}

/// An encoder for `kind`, refusing messages over `max_frame` bytes.
pub fn framer(kind: FramingKind, max_frame: usize) -> Box<dyn Framer> {
    match kind {
        FramingKind::Xbee(opts) => Box::new(XbeeCodec::new(XbeeOptions { max_frame, ..opts })),
        FramingKind::Slip { crc } => Box::new(SlipCodec::new(crc, max_frame)),
        FramingKind::Raw => Box::new(RawCodec::new(max_frame)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind: a framer's output read back by the matching deframer (XBee
    /// is checked in its own module, whose deframer reads receive frames).
    #[test]
    fn factories_build_matching_codecs() {
        let connect = [0x0A, 0x04, 0x04, 0x01, 0x00, 0x3C, b'd', b'e', b'v', b'1'];
        for kind in [
            FramingKind::Slip { crc: false },
            FramingKind::Slip { crc: true },
            FramingKind::Raw,
        ] {
            let mut out = BytesMut::new();
            framer(kind, 64)
                .encode(Some(7), &connect, &mut out)
                .expect("encodes");
            let mut d = deframer(kind, 64);
            d.push(&out);
            assert_eq!(
                d.next(),
                Some(Ok(Inbound::Message {
                    from: None,
                    bytes: Bytes::copy_from_slice(&connect)
                })),
                "{kind:?}"
            );
            assert_eq!(d.next(), None);
        }
    }

    #[test]
    fn factories_apply_max_frame() {
        let kind = FramingKind::Xbee(XbeeOptions::default());
        let mut out = BytesMut::new();
        assert_eq!(
            framer(kind, 4).encode(None, &[0u8; 5], &mut out),
            Err(FrameError::Oversize)
        );
        assert!(out.is_empty());
        assert_eq!(
            framer(FramingKind::Raw, 4).encode(None, &[5, 0x16, 0, 0, 0], &mut out),
            Err(FrameError::Oversize)
        );
        assert_eq!(
            framer(FramingKind::Slip { crc: false }, 4).encode(None, &[0u8; 5], &mut out),
            Err(FrameError::Oversize)
        );
    }
}
