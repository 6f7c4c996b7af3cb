//! Datagram links, bytes only: each transport turns its medium into
//! [`Datagram`]s for the driver and sends encoded messages back. No protocol
//! logic lives here — the engine decides what every byte means.

pub mod dtls;
pub mod serial;
pub mod udp;

use bytes::Bytes;
/// The serial framing codecs (XBee API, SLIP, raw), pure: `sngate_wire::framing`.
pub use sngate_wire::framing;

use crate::core::Peer;

/// One received message and who sent it.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// The sender.
    pub peer: Peer,
    /// The message bytes (one MQTT-SN message, possibly encapsulated).
    pub bytes: Bytes,
    /// From a DTLS listener: the start of the peer's session (with the
    /// identity it proved) or its end, in place of a message (`bytes` is
    /// then empty). `None` for a message.
    pub auth: Option<PeerAuth>,
}

/// A DTLS session's start or end, for the engine's identity binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAuth {
    /// The peer proved this identity (its PSK identity).
    Authenticated(std::sync::Arc<str>),
    /// The peer's session ended.
    Closed,
}

/// How the transports hand datagrams to the driver: in batches, so a burst costs
/// one channel operation and one driver wake-up rather than one per datagram.
pub type Batch = Vec<Datagram>;

/// Why a transport could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A UDP listener could not be created or bound.
    #[error("cannot bind UDP listener {addr}")]
    UdpBind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Joining the discovery multicast group failed.
    #[error("cannot join multicast group {group}")]
    Multicast {
        /// The group.
        group: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}
