//! UDP listeners (IPv4 and IPv6) built with socket2 so the gateway can set what
//! tokio does not: large kernel buffers (bursts from many devices must not
//! overflow the receive queue), `IPV6_V6ONLY` (so `0.0.0.0:P` and `[::]:P` can
//! both be bound), and multicast for discovery. One socket serves every client
//! on its address; a reader task per socket drains each readiness event
//! completely and hands the driver whole batches.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Batch, Datagram, TransportError};
use crate::core::Peer;

/// Most datagrams handed over in one batch.
const MAX_BATCH: usize = 512;

/// Size of the receive scratch buffer: the largest UDP payload.
const RECV_BUFFER: usize = 65_536;

/// A bound UDP listener.
#[derive(Debug, Clone)]
pub struct UdpListener {
    /// Its index in the configuration (carried in every peer it receives from).
    pub index: u16,
    /// The socket.
    pub socket: Arc<UdpSocket>,
    /// The address actually bound (port resolved when 0 was asked).
    pub local_addr: SocketAddr,
}

/// Binds `addr` with the given kernel buffer sizes. Must be called inside a
/// tokio runtime.
pub fn bind(
    index: u16,
    addr: SocketAddr,
    recv_buffer_bytes: usize,
    send_buffer_bytes: usize,
) -> Result<UdpListener, TransportError> {
    let err = |source| TransportError::UdpBind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    // Buffer sizes are requests; the kernel may cap them (net.core.rmem_max).
    if let Err(e) = socket.set_recv_buffer_size(recv_buffer_bytes) {
        warn!(%addr, error = %e, "could not set the UDP receive buffer size");
    }
    if let Err(e) = socket.set_send_buffer_size(send_buffer_bytes) {
        warn!(%addr, error = %e, "could not set the UDP send buffer size");
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    let std_socket: std::net::UdpSocket = socket.into();
    let socket = UdpSocket::from_std(std_socket).map_err(err)?;
    let local_addr = socket.local_addr().map_err(err)?;
    Ok(UdpListener {
        index,
        socket: Arc::new(socket),
        local_addr,
    })
}

impl UdpListener {
    /// Joins a multicast group (for SEARCHGW sent to the discovery group) and
    /// sets the TTL of the multicast messages sent from this socket.
    pub fn join_multicast(&self, group: SocketAddr, ttl: u32) -> Result<(), TransportError> {
        let err = |source| TransportError::Multicast { group, source };
        match group.ip() {
            IpAddr::V4(g) => {
                self.socket
                    .join_multicast_v4(g, std::net::Ipv4Addr::UNSPECIFIED)
                    .map_err(err)?;
                self.socket.set_multicast_ttl_v4(ttl).map_err(err)?;
            }
            IpAddr::V6(g) => self.socket.join_multicast_v6(&g, 0).map_err(err)?,
        }
        Ok(())
    }

    /// Sends one datagram. Waits only when the kernel's send buffer is full.
    pub async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
        match self.socket.try_send_to(bytes, to) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.socket.send_to(bytes, to).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Starts the reader task: every readiness event is drained completely (not
    /// one datagram per wake-up) into batches sent to `tx`. Ends when `tx` closes.
    pub fn spawn_reader(&self, tx: mpsc::Sender<Batch>) -> tokio::task::JoinHandle<()> {
        let socket = self.socket.clone();
        let index = self.index;
        tokio::spawn(async move {
            let mut scratch = vec![0u8; RECV_BUFFER];
            let mut arena = BytesMut::with_capacity(RECV_BUFFER);
            loop {
                if socket.readable().await.is_err() {
                    return;
                }
                let mut batch = Vec::new();
                while batch.len() < MAX_BATCH {
                    match socket.try_recv_from(&mut scratch) {
                        Ok((n, from)) => {
                            let Some(data) = scratch.get(..n) else {
                                continue;
                            };
                            if arena.capacity() < n {
                                arena.reserve(RECV_BUFFER.max(n));
                            }
                            arena.extend_from_slice(data);
                            batch.push(Datagram {
                                peer: Peer::udp_on(index, from),
                                bytes: arena.split().freeze(),
                                auth: None,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP errors surface here (e.g. port unreachable
                            // after a reply); they concern one peer only.
                            debug!(error = %e, "UDP receive error");
                            break;
                        }
                    }
                }
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    return;
                }
            }
        })
    }
}
