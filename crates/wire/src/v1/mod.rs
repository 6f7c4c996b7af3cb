//! The MQTT-SN v1.2 wire format: [`decode`] one datagram into a typed [`Packet`],
//! [`encode`] a [`Packet`] into bytes.
//!
//! Pure code: no I/O, no clock, no tokio. The decoder is total — any input gives
//! a packet or a [`DecodeError`] that names what is wrong — which the property
//! tests and the `fuzz/` target check. Layout of every message: fact sheet §6.
//!
//! ```
//! use bytes::BytesMut;
//! use sngate_wire::v1::{self as proto, Packet, QoS, TopicRef};
//!
//! let publish = Packet::Publish {
//!     dup: false,
//!     qos: QoS::AtLeastOnce,
//!     retain: false,
//!     topic: TopicRef::Id(1),
//!     msg_id: 7,
//!     payload: bytes::Bytes::from_static(b"21.5"),
//! };
//! let mut buf = BytesMut::new();
//! proto::encode(&publish, &mut buf).unwrap();
//! assert_eq!(&buf[..], &[11, 0x0C, 0x20, 0, 1, 0, 7, b'2', b'1', b'.', b'5']);
//! assert_eq!(proto::decode(&buf), Ok(publish));
//! ```

mod decode;
mod encode;
pub mod header;
mod packet;
mod types;

pub use decode::{DecodeError, decode};
pub use encode::{EncodeError, encode, encoded_len};
pub use packet::Packet;
pub use types::{MsgType, QoS, ReturnCode, SubscribeTopic, TopicIdType, TopicRef, WillTopic};

/// The most a forwarder's encapsulation adds around a message, with a
/// wireless node id of up to 255 bytes: Length (up to 3), type, Ctrl, node id.
/// Size limits apply to the message inside; transports allow this much more.
pub const MAX_ENCAPSULATION_OVERHEAD: usize = 3 + 1 + 1 + 255;

/// The protocol id a v1.2 CONNECT carries.
pub const PROTOCOL_ID_V1_2: u8 = 0x01;
