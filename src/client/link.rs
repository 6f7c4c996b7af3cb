//! What the [`Client`](super::Client) and its receive task share: the socket,
//! and a small state behind a mutex that is never held across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::ClientError;
use crate::proto::{self, MsgType, Packet};

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
}

/// The socket and the shared state; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub socket: Arc<UdpSocket>,
    shared: Arc<Mutex<Shared>>,
}

impl Link {
    pub fn new(socket: UdpSocket, predefined: HashMap<u16, String>) -> Self {
        let now = Instant::now();
        Link {
            socket: Arc::new(socket),
            shared: Arc::new(Mutex::new(Shared {
                topics: HashMap::new(),
                predefined,
                pending_name: None,
                qos2_received: HashSet::new(),
                last_sent: now,
                last_received: now,
                ping_every: None,
                dropped_messages: 0,
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

    /// Encodes and sends one packet to the gateway.
    pub async fn send(&self, packet: &Packet) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(64);
        proto::encode(packet, &mut buf)?;
        self.socket.send(&buf).await?;
        self.state().last_sent = Instant::now();
        Ok(())
    }
}
