//! sngate-wire — the MQTT-SN wire format and the serial radio framings,
//! as pure code: no I/O, no clock, no tokio, `no_std` with `alloc`.
//!
//! Useful on its own to device firmware or another gateway:
//! - [`v1`] — MQTT-SN v1.2: [`v1::decode`] one datagram into a typed
//!   [`v1::Packet`], [`v1::encode`] one back. The decoder is total: any input
//!   gives a packet or a [`v1::DecodeError`] naming what is wrong, never a
//!   panic (property tests and a fuzz target check it).
//! - [`v2`] — MQTT-SN 2.0 (OASIS Committee Specification Draft 01), the
//!   same shape: [`v2::decode`], [`v2::encode`], a typed [`v2::Packet`] for
//!   every packet of the draft, envelopes included.
//! - [`version`] — one port, two versions: which codec a datagram goes to.
//!   A datagram from a peer without a session is 1.2 whenever it is valid
//!   1.2 ([`version::classify_first_datagram`]), so no 1.2 device is ever
//!   misread; a session keeps its CONNECT's version.
//! - [`framing`] — serial links carry a byte stream, not datagrams: one
//!   stream decoder and encoder per radio kind (Digi XBee API frames, SLIP
//!   with an optional CRC, raw length-delimited), each resynchronising by
//!   itself after garbage and keeping bounded memory.
//!
//! Decode a datagram a device sent, and encode the gateway's reply:
//!
//! ```
//! use bytes::BytesMut;
//! use sngate_wire::v1::{self, Packet, ReturnCode};
//!
//! // CONNECT: clean session, keep-alive 60 s, client id "sensor-1".
//! let datagram = [14, 0x04, 0x04, 0x01, 0, 60, b's', b'e', b'n', b's', b'o', b'r', b'-', b'1'];
//! let Ok(Packet::Connect { client_id, duration, clean_session, .. }) = v1::decode(&datagram) else {
//!     panic!("not a CONNECT");
//! };
//! assert_eq!((client_id.as_str(), duration, clean_session), ("sensor-1", 60, true));
//!
//! let mut reply = BytesMut::new();
//! v1::encode(&Packet::ConnAck { return_code: ReturnCode::Accepted }, &mut reply)?;
//! assert_eq!(&reply[..], &[3, 0x05, 0x00]);
//!
//! // Garbage is an error that says what is wrong, never a panic.
//! assert!(v1::decode(&[2, 0xEE]).is_err());
//! # Ok::<(), v1::EncodeError>(())
//! ```

#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod framing;
pub mod v1;
pub mod v2;
pub mod version;
