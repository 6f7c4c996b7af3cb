//! Digi XBee API framing: owns the API frame layer (start delimiter 0x7E,
//! 16-bit big-endian length, frame data, checksum; mode 2 escaping) and the
//! frame types an MQTT-SN gateway needs.
//!
//! Read: 0x90 Zigbee Receive Packet, 0x80 / 0x81 802.15.4 RX with a 64- / 16-bit
//! source address (each becomes [`Inbound::Message`] with the source address),
//! and 0x8B / 0x89 transmit status ([`Inbound::TxStatus`]). Any other frame type
//! is reported as [`FrameError::UnsupportedFrameType`].
//!
//! Write: 0x10 Zigbee Transmit Request, or on 802.15.4 modules 0x00 / 0x01 TX
//! Request with a 64- / 16-bit destination. Frame ids cycle 1..=255 (0 would
//! suppress the transmit status).
//!
//! Checksum: 0xFF minus the low byte of the sum of the frame data bytes. Mode 2
//! escapes 0x7E, 0x7D, 0x11 and 0x13 everywhere after the start delimiter
//! (length and checksum included) as 0x7D followed by the byte XOR 0x20.

use alloc::vec::Vec;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Deframer, FrameError, Framer, Inbound};

/// The start delimiter.
pub const START: u8 = 0x7E;
/// The mode 2 escape byte.
pub const ESCAPE: u8 = 0x7D;
/// XON, escaped in mode 2.
const XON: u8 = 0x11;
/// XOFF, escaped in mode 2.
const XOFF: u8 = 0x13;

/// Frame types.
const ZIGBEE_TX_REQUEST: u8 = 0x10;
const TX_REQUEST_64: u8 = 0x00;
const TX_REQUEST_16: u8 = 0x01;
const ZIGBEE_RX_PACKET: u8 = 0x90;
const RX_PACKET_64: u8 = 0x80;
const RX_PACKET_16: u8 = 0x81;
const ZIGBEE_TX_STATUS: u8 = 0x8B;
const TX_STATUS: u8 = 0x89;

/// The 64-bit broadcast address.
pub const BROADCAST_64: u64 = 0x0000_0000_0000_FFFF;
/// The 16-bit broadcast address (802.15.4 TX 16-bit).
pub const BROADCAST_16: u16 = 0xFFFF;
/// The 16-bit destination of a Zigbee Transmit Request: "unknown, use the 64-bit one".
const UNKNOWN_16: u16 = 0xFFFE;

/// The largest frame-data header before the RF data of a frame we read
/// (0x90: type, 64-bit source, 16-bit source, options).
pub const MAX_RX_HEADER: usize = 12;
/// The largest frame-data header before the RF data of a frame we write
/// (0x10: type, frame id, 64-bit and 16-bit destination, radius, options).
pub const MAX_TX_HEADER: usize = 14;

/// Which transmit request the gateway sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XbeeTx {
    /// 0x10 Zigbee Transmit Request (Zigbee and DigiMesh modules): every
    /// destination by its 64-bit address, 16-bit destination 0xFFFE.
    #[default]
    Zigbee0x10,
    /// 802.15.4 modules, broadcasts as 0x00 TX (64-bit) to 0x000000000000FFFF.
    /// Unicasts use 0x00 for a 64-bit address and 0x01 for one that fits in
    /// 16 bits (a peer that reached us through 0x81), whichever variant is set.
    Ieee64_0x00,
    /// 802.15.4 modules, broadcasts as 0x01 TX (16-bit) to 0xFFFF. Unicasts as
    /// for [`XbeeTx::Ieee64_0x00`].
    Ieee16_0x01,
}

/// How an XBee link is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XbeeOptions {
    /// API mode 2, with escaping (`AP=2`, the default), rather than mode 1 (`AP=1`).
    pub escaped: bool,
    /// The transmit request sent.
    pub tx: XbeeTx,
    /// The largest MQTT-SN message carried (the RF data of a frame). Larger
    /// frames read are dropped as [`FrameError::Oversize`]; larger messages are
    /// refused by the encoder.
    pub max_frame: usize,
}

impl Default for XbeeOptions {
    fn default() -> Self {
        XbeeOptions {
            escaped: true,
            tx: XbeeTx::default(),
            max_frame: super::DEFAULT_MAX_FRAME,
        }
    }
}

fn needs_escape(b: u8) -> bool {
    matches!(b, START | ESCAPE | XON | XOFF)
}

fn put_maybe_escaped(escaped: bool, b: u8, out: &mut BytesMut) {
    if escaped && needs_escape(b) {
        out.put_u8(ESCAPE);
        out.put_u8(b ^ 0x20);
    } else {
        out.put_u8(b);
    }
}

/// Appends one API frame carrying `frame_data` (frame type first), escaped when
/// `escaped` (API mode 2). Fails with [`FrameError::Oversize`] when the frame
/// data does not fit the 16-bit length, and [`FrameError::Truncated`] when it
/// is empty.
///
/// The gateway only needs it through [`XbeeCodec`]; it is public so tests can
/// play the radio module on the far end.
pub fn write_api_frame(
    escaped: bool,
    frame_data: &[u8],
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    write_api_frame_parts(escaped, &[frame_data], out)
}

/// [`write_api_frame`] with the frame data given in pieces (header, RF data).
fn write_api_frame_parts(
    escaped: bool,
    parts: &[&[u8]],
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len == 0 {
        return Err(FrameError::Truncated);
    }
    let len = u16::try_from(len).map_err(|_| FrameError::Oversize)?;
    out.reserve(if escaped {
        2 * usize::from(len) + 7
    } else {
        usize::from(len) + 4
    });
    out.put_u8(START);
    for b in len.to_be_bytes() {
        put_maybe_escaped(escaped, b, out);
    }
    let mut sum: u8 = 0;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        sum = sum.wrapping_add(b);
        put_maybe_escaped(escaped, b, out);
    }
    put_maybe_escaped(escaped, 0xFF - sum, out);
    Ok(())
}

/// What the front of the buffer holds, once a start delimiter is there.
enum Parsed {
    /// A valid frame: its frame data and how many raw bytes it took.
    Frame { data: Vec<u8>, consumed: usize },
    /// The frame is not complete yet.
    NeedMore,
    /// The frame at the front is bad: drop the start delimiter and resync.
    Bad(FrameError),
}

/// The API frame layer alone: cuts a byte stream into the frame data of valid
/// frames (frame type first), dropping bad frames and garbage.
///
/// [`XbeeCodec`] reads through it; it is public so tests can play the radio
/// module on the far end (reading the transmit requests the gateway sends).
#[derive(Debug)]
pub struct ApiFrameReader {
    escaped: bool,
    /// The largest frame-data length accepted.
    max_data: usize,
    /// Raw (still escaped) bytes not yet consumed.
    buf: BytesMut,
    /// Garbage bytes dropped but not yet reported (one report per run).
    garbage: usize,
    /// After a bad frame: the bytes up to the next start delimiter belong to
    /// it, and are dropped without a separate report.
    skipping: bool,
}

impl ApiFrameReader {
    /// A reader for mode 2 (`escaped`) or mode 1, accepting frame data of up to
    /// `max_data` bytes (at most 65,535 can be declared).
    pub fn new(escaped: bool, max_data: usize) -> Self {
        ApiFrameReader {
            escaped,
            max_data,
            buf: BytesMut::new(),
            garbage: 0,
            skipping: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many received bytes are held, waiting for the rest of their frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The frame data of the next valid frame, an error for dropped bytes, or
    /// `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Bytes, FrameError>> {
        // Bytes before a start delimiter: garbage, or the tail of a bad frame.
        let lead = self
            .buf
            .iter()
            .position(|&b| b == START)
            .unwrap_or(self.buf.len());
        if lead > 0 {
            self.buf.advance(lead);
            if !self.skipping {
                self.garbage += lead;
            }
        }
        if self.buf.is_empty() {
            // Hold a garbage run until the next frame starts: one report per run.
            return None;
        }
        self.skipping = false;
        if self.garbage > 0 {
            let bytes = core::mem::take(&mut self.garbage);
            return Some(Err(FrameError::Garbage { bytes }));
        }
        match self.parse_front() {
            Parsed::NeedMore => None,
            Parsed::Bad(e) => {
                self.buf.advance(1);
                self.skipping = true;
                Some(Err(e))
            }
            Parsed::Frame { data, consumed } => {
                self.buf.advance(consumed);
                Some(Ok(Bytes::from(data)))
            }
        }
    }

    /// Reads the frame whose start delimiter is `buf[0]`.
    fn parse_front(&self) -> Parsed {
        let mut cursor = Unescaper {
            buf: &self.buf,
            pos: 1,
            escaped: self.escaped,
        };
        let mut len_bytes = [0u8; 2];
        for slot in &mut len_bytes {
            match cursor.next_byte() {
                Ok(Some(b)) => *slot = b,
                Ok(None) => return Parsed::NeedMore,
                Err(e) => return Parsed::Bad(e),
            }
        }
        let len = usize::from(u16::from_be_bytes(len_bytes));
        if len == 0 {
            return Parsed::Bad(FrameError::Truncated);
        }
        if len > self.max_data {
            return Parsed::Bad(FrameError::Oversize);
        }
        // Mode 1 is exact; mode 2 needs at least as many raw bytes.
        if self.buf.len() < 3 + len + 1 {
            return Parsed::NeedMore;
        }
        let mut data = Vec::with_capacity(len);
        let mut sum: u8 = 0;
        for _ in 0..=len {
            match cursor.next_byte() {
                Ok(Some(b)) => {
                    sum = sum.wrapping_add(b);
                    data.push(b);
                }
                Ok(None) => return Parsed::NeedMore,
                Err(e) => return Parsed::Bad(e),
            }
        }
        // The last byte pushed is the checksum: frame data + checksum sum to 0xFF.
        data.truncate(len);
        if sum != 0xFF {
            return Parsed::Bad(FrameError::BadChecksum);
        }
        Parsed::Frame {
            data,
            consumed: cursor.pos,
        }
    }
}

/// Reads bytes after the start delimiter, undoing mode 2 escapes.
struct Unescaper<'a> {
    buf: &'a [u8],
    pos: usize,
    escaped: bool,
}

impl Unescaper<'_> {
    /// The next byte, `None` when more input is needed, or an error when the
    /// frame is cut by a start delimiter (mode 2 only: there it cannot occur
    /// inside a frame).
    fn next_byte(&mut self) -> Result<Option<u8>, FrameError> {
        let Some(&b) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        if !self.escaped {
            self.pos += 1;
            return Ok(Some(b));
        }
        match b {
            START => Err(FrameError::Truncated),
            ESCAPE => match self.buf.get(self.pos + 1) {
                None => Ok(None),
                Some(&START) => Err(FrameError::BadEscape),
                Some(&n) => {
                    self.pos += 2;
                    Ok(Some(n ^ 0x20))
                }
            },
            _ => {
                self.pos += 1;
                Ok(Some(b))
            }
        }
    }
}

/// The XBee API codec: reads receive and transmit-status frames, writes
/// transmit requests. Implements both [`Deframer`] and [`Framer`]; use one
/// instance per direction or one for both.
#[derive(Debug)]
pub struct XbeeCodec {
    opts: XbeeOptions,
    reader: ApiFrameReader,
    /// The id the last transmit request carried (0 before the first).
    frame_id: u8,
}

impl XbeeCodec {
    /// A codec with these options.
    pub fn new(opts: XbeeOptions) -> Self {
        XbeeCodec {
            opts,
            reader: ApiFrameReader::new(opts.escaped, opts.max_frame.saturating_add(MAX_RX_HEADER)),
            frame_id: 0,
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> XbeeOptions {
        self.opts
    }

    /// The frame id of the last transmit request encoded (0 before the first),
    /// to match a later [`Inbound::TxStatus`] with its message.
    pub fn last_frame_id(&self) -> u8 {
        self.frame_id
    }

    /// How many received bytes are held, waiting for the rest of their frame.
    pub fn buffered(&self) -> usize {
        self.reader.buffered()
    }

    /// Interprets the frame data of one valid frame.
    fn interpret(&self, frame: Bytes) -> Result<Inbound, FrameError> {
        let Some(&frame_type) = frame.first() else {
            return Err(FrameError::Truncated);
        };
        let (from, header) = match frame_type {
            ZIGBEE_RX_PACKET => (frame.get(1..9).map(be_u64), MAX_RX_HEADER),
            RX_PACKET_64 => (frame.get(1..9).map(be_u64), 11),
            RX_PACKET_16 => (frame.get(1..3).map(|a| SHORT_ADDRESS | be_u64(a)), 5),
            ZIGBEE_TX_STATUS => {
                return match (frame.get(1), frame.get(5)) {
                    (Some(&frame_id), Some(&status)) if frame.len() >= 7 => {
                        Ok(Inbound::TxStatus { frame_id, status })
                    }
                    _ => Err(FrameError::Truncated),
                };
            }
            TX_STATUS => {
                return match (frame.get(1), frame.get(2)) {
                    (Some(&frame_id), Some(&status)) => Ok(Inbound::TxStatus { frame_id, status }),
                    _ => Err(FrameError::Truncated),
                };
            }
            other => return Err(FrameError::UnsupportedFrameType(other)),
        };
        let from = from.ok_or(FrameError::Truncated)?;
        if frame.len() <= header {
            return Err(FrameError::Truncated);
        }
        let bytes = frame.slice(header..);
        if bytes.len() > self.opts.max_frame {
            return Err(FrameError::Oversize);
        }
        Ok(Inbound::Message {
            from: Some(from),
            bytes,
        })
    }

    fn next_frame_id(&mut self) -> u8 {
        self.frame_id = if self.frame_id == u8::MAX {
            1
        } else {
            self.frame_id + 1
        };
        self.frame_id
    }
}

/// How a radio known only by its 16-bit address (0x81 frames) is told apart
/// from a 64-bit one: its peer address is this tag ORed with the 16 bits, a
/// range no real 64-bit address uses, so the two kinds never collide and a
/// reply goes out in the form the radio was heard in. (The engine's
/// `SHORT_RADIO_ADDRESS` is this constant, so admission rules can name such radios.)
pub const SHORT_ADDRESS: u64 = 0xFFFE_0000_0000_0000;

/// The 16-bit address inside a [`SHORT_ADDRESS`]-tagged peer address.
fn short_address(addr: u64) -> Option<u16> {
    (addr & !0xFFFF == SHORT_ADDRESS).then_some((addr & 0xFFFF) as u16)
}

/// A big-endian unsigned integer of up to 8 bytes.
fn be_u64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

impl Deframer for XbeeCodec {
    fn push(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
    }

    fn next(&mut self) -> Option<Result<Inbound, FrameError>> {
        Some(match self.reader.next_frame()? {
            Ok(frame) => self.interpret(frame),
            Err(e) => Err(e),
        })
    }
}

impl Framer for XbeeCodec {
    fn encode(
        &mut self,
        to: Option<u64>,
        message: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        if message.is_empty() {
            return Err(FrameError::Truncated);
        }
        if message.len() > self.opts.max_frame || message.len() + MAX_TX_HEADER > 0xFFFF {
            return Err(FrameError::Oversize);
        }
        let frame_id = self.next_frame_id();
        let mut header = [0u8; MAX_TX_HEADER];
        let header_len = match (self.opts.tx, to) {
            (XbeeTx::Zigbee0x10, to) => {
                header[0] = ZIGBEE_TX_REQUEST;
                header[1] = frame_id;
                // A radio known by its 16-bit address only: 64-bit address
                // "unknown" (all ones), the 16-bit one given.
                let (dest64, dest16) = match to.map(|a| (a, short_address(a))) {
                    Some((_, Some(short))) => (u64::MAX, short),
                    Some((addr, None)) => (addr, UNKNOWN_16),
                    None => (BROADCAST_64, UNKNOWN_16),
                };
                header[2..10].copy_from_slice(&dest64.to_be_bytes());
                header[10..12].copy_from_slice(&dest16.to_be_bytes());
                // Broadcast radius 0 (maximum hops), options 0.
                14
            }
            (XbeeTx::Ieee16_0x01, None) => tx16(&mut header, frame_id, BROADCAST_16),
            (XbeeTx::Ieee64_0x00, None) => tx64(&mut header, frame_id, BROADCAST_64),
            // Answer a radio in the form it was heard in: 16-bit if it sent
            // 0x81, 64-bit if it sent 0x80.
            (_, Some(addr)) => match short_address(addr) {
                Some(short) => tx16(&mut header, frame_id, short),
                None => tx64(&mut header, frame_id, addr),
            },
        };
        let header = header.get(..header_len).unwrap_or_default();
        write_api_frame_parts(self.opts.escaped, &[header, message], out)
    }
}

/// Fills a 0x01 TX 16-bit header (options 0); returns its length.
fn tx16(header: &mut [u8; MAX_TX_HEADER], frame_id: u8, to: u16) -> usize {
    header[0] = TX_REQUEST_16;
    header[1] = frame_id;
    header[2..4].copy_from_slice(&to.to_be_bytes());
    5
}

/// Fills a 0x00 TX 64-bit header (options 0); returns its length.
fn tx64(header: &mut [u8; MAX_TX_HEADER], frame_id: u8, to: u64) -> usize {
    header[0] = TX_REQUEST_64;
    header[1] = frame_id;
    header[2..10].copy_from_slice(&to.to_be_bytes());
    11
}

#[cfg(test)]
mod tests;
