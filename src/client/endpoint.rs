//! [`Endpoint`]: where the gateway is, and over which link a client reaches
//! it — a UDP address, or a serial port with a framing (the same
//! `DEVICE:FRAMING[:BAUD]` settings as the gateway's `[[serial]]` ports).

use std::fmt;
use std::net::SocketAddr;

use crate::config::{SerialConfig, SerialFraming};
use crate::transport::dtls::client::{CertCredentials, PskCredentials};

/// How a client reaches its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The gateway's UDP address; the client binds an ephemeral socket of the
    /// same address family.
    Udp(SocketAddr),
    /// A serial port, framed as configured. Over `raw` and `slip` the port
    /// is a point-to-point link to the gateway (or to a forwarder in front
    /// of it); over `xbee` the client is a node talking to its own local
    /// XBee module in API mode: it sends Zigbee Transmit Requests (0x10, or
    /// 0x00/0x01 per `xbee_tx`) to the coordinator — 64-bit address 0, where
    /// the gateway's radio sits — and reads the module's receive frames.
    /// Only the port settings are used; the reopen backoff is the gateway's.
    Serial(SerialConfig),
    /// The gateway's DTLS address, reached with a pre-shared key: the
    /// handshake is made when the client connects, and the client's
    /// messages go through the DTLS session (`client::dtls`).
    Dtls {
        /// The gateway's DTLS address.
        gateway: SocketAddr,
        /// The device's identity and key.
        psk: PskCredentials,
    },
    /// The gateway's DTLS address, reached with a client certificate
    /// (the gateway's own is checked against the CA and this address).
    DtlsCert {
        /// The gateway's DTLS address.
        gateway: SocketAddr,
        /// The device's certificate and key, and the CA.
        cert: CertCredentials,
    },
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Udp(addr)
    }
}

impl From<SerialConfig> for Endpoint {
    fn from(port: SerialConfig) -> Self {
        Endpoint::Serial(port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Udp(addr) => write!(f, "{addr} (UDP)"),
            Endpoint::Dtls { gateway, psk } => {
                write!(f, "{gateway} (DTLS, identity {})", psk.identity)
            }
            Endpoint::DtlsCert { gateway, cert } => {
                let cn = cert.identity().unwrap_or_default();
                write!(f, "{gateway} (DTLS, certificate of {cn})")
            }
            Endpoint::Serial(port) => {
                let framing = match port.framing {
                    SerialFraming::Xbee => "xbee",
                    SerialFraming::Slip => "slip",
                    SerialFraming::Raw => "raw",
                };
                write!(f, "{} ({framing}, {} baud)", port.device, port.baud)
            }
        }
    }
}
