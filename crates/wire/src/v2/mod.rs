//! The MQTT-SN 2.0 wire format (OASIS Committee Specification Draft 01):
//! [`decode`] one datagram into a typed [`Packet`], [`encode`] a [`Packet`]
//! into bytes — every packet of the draft's catalogue (§3), the three
//! envelopes included.
//!
//! Pure code beside [`crate::v1`]: no I/O, no clock. The decoder is total —
//! any input gives a packet or a [`DecodeError`] naming what is wrong — which
//! the property tests (`crates/wire/tests/v2_props.rs`) and the `decode_v2`
//! fuzz target check. The same byte means different packets in 1.2 and 2.0
//! (2.0 CONNECT is 1.2's SEARCHGW type): which codec a datagram goes to is
//! decided per session by [`crate::version`]. Choices where the draft is
//! silent or ambiguous: `docs/protocol-v2.md`.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use sngate_wire::v2::{self, Delivery, Packet, Publish, Topic};
//!
//! // QoS 1 PUBLISH to the full name "a/b", packet id 7, payload "hi".
//! let datagram = [0x0c, 0x03, 0x23, 0x00, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
//! let publish = Packet::Publish(Publish {
//!     delivery: Delivery::AtLeastOnce { packet_id: 7 },
//!     retain: false,
//!     topic: Topic::Name("a/b".into()),
//!     payload: Bytes::from_static(b"hi"),
//! });
//! assert_eq!(v2::decode(&datagram), Ok(publish.clone()));
//! let mut buf = BytesMut::new();
//! v2::encode(&publish, &mut buf)?;
//! assert_eq!(&buf[..], &datagram);
//! # Ok::<(), v2::EncodeError>(())
//! ```

pub mod basic_auth;
mod decode;
mod encode;
mod packet;
mod types;

pub use decode::{DecodeError, PROTOCOL_VERSION, decode};
pub use encode::{EncodeError, encode, encoded_len};
pub use packet::{
    Ack, Auth, AuthData, ConnAck, Connect, Delivery, Disconnect, Forwarder, ForwarderForm,
    MonotonicCounter, Packet, Protection, PubWos, Publish, RegAck, Register, SubAck, Subscribe,
    Unsubscribe, Will,
};
pub use types::{AliasKind, PacketType, QoS, ReasonCode, RetainHandling, SubscribeOptions, Topic};
