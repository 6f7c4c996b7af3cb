//! What the [`Client`](super::Client) and its receive task share: the link
//! to the gateway (a UDP socket or a framed serial port, [`Wire`]), and a
//! small state behind a mutex that is never held across an `.await`. The
//! receive side of the link ([`WireRx`]) belongs to the receive task alone.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::serial::{self, SerialRx, SerialTx};
use super::v2::V2State;
use super::{ClientError, Endpoint};
use crate::proto::{self, MsgType, Packet};

/// The sending side of the link to the gateway.
#[derive(Debug)]
pub(super) enum Wire {
    /// A UDP socket connected to the gateway.
    Udp(Arc<UdpSocket>),
    /// A serial port: a framer and a writer task.
    Serial(SerialTx),
}

/// The receiving side of the link, owned by the receive task.
#[derive(Debug)]
pub(super) enum WireRx {
    /// The same UDP socket.
    Udp(Arc<UdpSocket>),
    /// The serial port's read half and deframer.
    Serial(SerialRx),
}

impl WireRx {
    /// The next datagram (UDP) or deframed message (serial), copied into
    /// `buf`. Cancel safe.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            WireRx::Udp(socket) => socket.recv(buf).await,
            WireRx::Serial(port) => port.recv(buf).await,
        }
    }
}

/// Binds an ephemeral UDP socket of the gateway's address family.
pub(super) async fn ephemeral_socket(gateway: SocketAddr) -> Result<UdpSocket, ClientError> {
    let local: SocketAddr = if gateway.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    Ok(UdpSocket::bind(local).await?)
}

/// Opens the link to `endpoint`: a UDP socket connected to the gateway, or
/// the serial port with its writer task.
pub(super) async fn open(endpoint: &Endpoint) -> Result<(Wire, WireRx), ClientError> {
    match endpoint {
        Endpoint::Udp(gateway) => {
            let socket = ephemeral_socket(*gateway).await?;
            socket.connect(gateway).await?;
            let socket = Arc::new(socket);
            Ok((Wire::Udp(Arc::clone(&socket)), WireRx::Udp(socket)))
        }
        Endpoint::Dtls { .. } | Endpoint::DtlsCert { .. } => {
            let (gateway, creds) = match endpoint {
                Endpoint::DtlsCert { gateway, cert } => (gateway, super::dtls::Creds::Cert(cert)),
                Endpoint::Dtls { gateway, psk } => (gateway, super::dtls::Creds::Psk(psk)),
                _ => return Err(ClientError::InvalidArgument("not a DTLS endpoint")),
            };
            let tunnel = super::dtls::open(*gateway, creds).await?;
            let socket = ephemeral_socket(tunnel).await?;
            socket.connect(tunnel).await?;
            let socket = Arc::new(socket);
            Ok((Wire::Udp(Arc::clone(&socket)), WireRx::Udp(socket)))
        }
        Endpoint::Serial(port) => {
            let (tx, rx) = serial::open(port)?;
            Ok((Wire::Serial(tx), WireRx::Serial(rx)))
        }
    }
}

/// State shared by the client and its receive task.
#[derive(Debug)]
pub(super) struct Shared {
    /// Normal topic ids this client holds: from the gateway's REGISTER, its own
    /// REGISTER's REGACK, or a SUBACK for a plain name.
    pub topics: HashMap<u16, String>,
    /// Pre-defined topic ids known from the options.
    pub predefined: HashMap<u16, String>,
    /// A REGISTER or SUBSCRIBE awaiting its ack, with the name it carries, so
    /// the task records the id before it reads the next datagram (a retained
    /// PUBLISH can follow a SUBACK immediately).
    pub pending_name: Option<(MsgType, u16, String)>,
    /// QoS 2 message ids received and not yet released by PUBREL.
    pub qos2_received: HashSet<u16>,
    /// When the client last sent anything.
    pub last_sent: Instant,
    /// When the client last received anything.
    pub last_received: Instant,
    /// Automatic pings: the keep-alive period while connected and active.
    pub ping_every: Option<Duration>,
    /// QoS 0 messages dropped because the application did not read fast enough.
    pub dropped_messages: u64,
    /// The last thing the link reported was an ICMP "port unreachable"
    /// (nothing listens at the gateway's address); cleared by any datagram.
    pub refused: bool,
}

/// The sending side of the link and the shared state; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Link {
    wire: Arc<Wire>,
    shared: Arc<Mutex<Shared>>,
    /// The MQTT-SN 2.0 mapping when the client speaks 2.0; `None` for 1.2.
    v2: Option<Arc<V2State>>,
}

impl Link {
    pub fn new(wire: Wire, predefined: HashMap<u16, String>, v2: Option<V2State>) -> Self {
        let now = Instant::now();
        Link {
            v2: v2.map(Arc::new),
            wire: Arc::new(wire),
            shared: Arc::new(Mutex::new(Shared {
                topics: HashMap::new(),
                predefined,
                pending_name: None,
                qos2_received: HashSet::new(),
                last_sent: now,
                last_received: now,
                ping_every: None,
                dropped_messages: 0,
                refused: false,
            })),
        }
    }

    /// The shared state. A poisoned lock (a panic elsewhere while holding it)
    /// still yields the data: every update leaves it consistent.
    pub fn state(&self) -> MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The local address of a UDP link; `None` over a serial port.
    pub fn local_addr(&self) -> Option<io::Result<SocketAddr>> {
        match &*self.wire {
            Wire::Udp(socket) => Some(socket.local_addr()),
            Wire::Serial(_) => None,
        }
    }

    /// Whether the client speaks MQTT-SN 2.0 on this link.
    pub fn is_v2(&self) -> bool {
        self.v2.is_some()
    }

    /// Encodes (in 2.0 form on a 2.0 link) and sends one packet to the gateway.
    pub async fn send(&self, packet: &Packet) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(64);
        match &self.v2 {
            None => proto::encode(packet, &mut buf)?,
            Some(v2) => sngate_wire::v2::encode(&v2.to_v2(packet)?, &mut buf)
                .map_err(|_| ClientError::InvalidArgument("the packet cannot be encoded in 2.0"))?,
        }
        match &*self.wire {
            Wire::Udp(socket) => {
                socket.send(&buf).await?;
            }
            Wire::Serial(port) => port.send(&buf).await?,
        }
        self.state().last_sent = Instant::now();
        Ok(())
    }
}
