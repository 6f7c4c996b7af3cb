//! Who the engine talks to: a [`Peer`] is a link address the driver can send to,
//! plus the wireless node id when the device sits behind a forwarder (fact sheet
//! §7.10). The engine only compares and hashes peers; it never interprets them.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

/// A link-level address: where a datagram came from or goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkAddr {
    /// A UDP socket address, as seen by listener number `listener` (replies
    /// leave from the same socket, so the device sees the same source port).
    Udp {
        /// Index of the UDP listener in the configuration.
        listener: u16,
        /// The remote address.
        addr: SocketAddr,
    },
    /// A radio address on a serial-attached dongle: the port's index in the
    /// configuration and the remote radio's address (an XBee 64-bit address,
    /// or a 16-bit one tagged with [`SHORT_RADIO_ADDRESS`]).
    Radio {
        /// Index of the serial port.
        port: u16,
        /// The remote radio's address.
        addr: u64,
    },
    /// A serial port with no per-device addressing (raw or SLIP framing).
    Serial {
        /// Index of the serial port.
        port: u16,
    },
}

/// How a radio known only by its 16-bit address (XBee 802.15.4 0x81 frames)
/// is told apart from a 64-bit one in [`LinkAddr::Radio`]: its address is
/// this tag ORed with the 16 bits, a range no real 64-bit address uses, so
/// the two kinds never collide. Shared by the XBee codec, which makes such
/// addresses, and the admission rules, which name them.
pub const SHORT_RADIO_ADDRESS: u64 = sngate_wire::framing::xbee::SHORT_ADDRESS;

/// An MQTT-SN peer: a link address, and for devices behind a forwarder the
/// wireless node id the forwarder reported. Replies to a forwarded peer are
/// wrapped in an encapsulation carrying the same node id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The link address.
    pub link: LinkAddr,
    /// The wireless node id, when the message came through a forwarder.
    pub node: Option<Bytes>,
}

impl Peer {
    /// A peer reached directly over UDP through the first listener.
    pub fn udp(addr: SocketAddr) -> Self {
        Self::udp_on(0, addr)
    }

    /// A peer reached directly over UDP through listener number `listener`.
    pub fn udp_on(listener: u16, addr: SocketAddr) -> Self {
        Peer {
            link: LinkAddr::Udp { listener, addr },
            node: None,
        }
    }

    /// Serial port number `port` itself: on XBee links its broadcast address,
    /// on SLIP and raw links the port's one peer.
    pub fn serial(port: u16) -> Self {
        Peer {
            link: LinkAddr::Serial { port },
            node: None,
        }
    }

    /// The same link address, behind a forwarder, for wireless node `node`.
    pub fn forwarded(&self, node: Bytes) -> Self {
        Peer {
            link: self.link.clone(),
            node: Some(node),
        }
    }
}

impl fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkAddr::Udp { addr, .. } => write!(f, "udp:{addr}"),
            LinkAddr::Radio { port, addr } => write!(f, "serial{port}:{addr:016x}"),
            LinkAddr::Serial { port } => write!(f, "serial{port}"),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.link)?;
        if let Some(node) = &self.node {
            f.write_str("/node:")?;
            for b in node.iter() {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}
