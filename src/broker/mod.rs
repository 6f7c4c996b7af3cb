//! The embedded MQTT broker: TCP listeners for local programs (Node-RED, Home
//! Assistant, `mosquitto_sub`), speaking MQTT 3.1.1.
//!
//! This module owns the sockets and the MQTT wire protocol with each client —
//! framing (rumqttc's `mqttbytes` codec, not a hand-written one), packet ids,
//! the QoS 1/2 handshakes, keep-alive, credentials — and nothing else: what a
//! message means (routing, retained, wills, persistent sessions, the upstream
//! bridge) is decided by the engine (`core::local`), so local clients and
//! MQTT-SN devices share one broker.
//!
//! Shape: one accept task per listener and one task per connection. Tasks
//! send [`BrokerEvent`]s to the driver over one bounded channel (a slow
//! engine slows the sockets down, it does not grow memory): at most 1,024
//! events, and the PUBLISHes among them at most [`INBOUND_BYTES`] of topic
//! and payload together, so a client flooding 1 MiB messages at a busy
//! engine holds 16 MiB, not 1 GiB; the driver
//! answers through each connection's [`ConnLink`]. A TLS listener
//! (`tls_listen`) runs the same connection code over the TLS stream.
//! Who may connect is [`auth`]'s.

pub mod auth;
mod connection;
mod sys;

pub use auth::Authenticator;
pub use sys::SysTopics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::BrokerConfig;
use crate::core::{LocalAction, LocalConnId, LocalDelivery, LocalInput};
use crate::security::HashError;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listen address could not be bound.
    #[error("cannot listen for MQTT on TCP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A user's password hash does not parse.
    #[error("broker user {user:?}: {source}")]
    User {
        /// The user name.
        user: String,
        /// What is wrong with the hash.
        source: HashError,
    },
    /// The TLS certificate or key cannot be read or used.
    #[error("broker TLS: {path}: {reason}")]
    Tls {
        /// The file (the certificate's when rustls refused the pair).
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// What a connection tells the driver.
#[derive(Debug)]
pub enum BrokerEvent {
    /// A connection sent a valid CONNECT: from now on `link` reaches it. The
    /// `Connect` input itself follows as an [`BrokerEvent::Input`].
    Opened {
        /// The connection.
        conn: LocalConnId,
        /// How to reach it.
        link: ConnLink,
    },
    /// An input for the engine.
    Input {
        /// The connection.
        conn: LocalConnId,
        /// What happened.
        input: LocalInput,
    },
}

/// The driver's handle on one connection.
#[derive(Debug, Clone)]
pub struct ConnLink {
    actions: mpsc::UnboundedSender<LocalAction>,
    /// Messages handed to the connection and not yet written (or, at QoS
    /// 1/2, not yet acknowledged), bounding what a slow reader can hold.
    queued: Arc<AtomicUsize>,
    /// The same messages' bytes ([`queued_size`]), counted in the broker's
    /// total too.
    queued_bytes: Arc<AtomicUsize>,
}

/// Bytes of PUBLISHes (topic and payload) sent by every connection to the
/// driver and not yet taken by it: a connection waits (and stops reading
/// its socket) for room. A larger message takes the whole budget.
pub const INBOUND_BYTES: usize = 16 << 20;

/// What an input counts against [`INBOUND_BYTES`] (0 but for a PUBLISH).
pub(crate) fn inbound_size(input: &LocalInput) -> usize {
    match input {
        LocalInput::Publish { topic, payload, .. } => {
            (topic.len() + payload.len()).min(INBOUND_BYTES)
        }
        _ => 0,
    }
}

/// What a message waiting for a client counts against
/// `max_queued_bytes`: its payload and topic name.
pub(crate) fn queued_size(d: &LocalDelivery) -> usize {
    d.payload.len() + d.topic.len()
}

/// Bytes waiting for every connection together (`max_queued_bytes_total`):
/// added by the driver when it hands a message over, given back by the
/// connection as the message leaves, and what a closed connection still
/// held given back when its `Closed` event passes the driver.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueuedBytes(Arc<AtomicUsize>);

impl QueuedBytes {
    /// Bytes queued now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: usize) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
}

/// The broker's counters, shared by its tasks (metrics read them).
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Connections accepted by the listeners.
    pub connections_accepted: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicUsize,
    /// CONNECTs refused (bad protocol, credentials, client id, limits).
    pub connects_refused: AtomicU64,
    /// Connections closed for a protocol error or an oversized packet.
    pub protocol_errors: AtomicU64,
    /// Connections closed because keep-alive or the CONNECT timeout ran out.
    pub timeouts: AtomicU64,
    /// Messages for a client dropped because it was not reading them.
    pub dropped_slow_client: AtomicU64,
    /// PUBLISH packets received from clients.
    pub publishes_received: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub publishes_sent: AtomicU64,
    /// Connections refused because `max_connections` were open (counted in
    /// `connects_refused` too).
    pub refused_max_connections: AtomicU64,
    /// Connections closed for a packet over `max_packet_bytes` (counted in
    /// `protocol_errors` too).
    pub packets_too_large: AtomicU64,
    /// Bytes waiting for every connection together (`max_queued_bytes_total`).
    pub(crate) queued_bytes: QueuedBytes,
}

/// A copy of [`BrokerStats`] at one moment, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerCounts {
    /// Connections accepted by the listeners.
    pub connections_accepted: u64,
    /// TCP connections open now, those still before CONNECT included.
    pub connections_open: usize,
    /// CONNECTs refused.
    pub connects_refused: u64,
    /// Connections closed for a protocol error or an oversized packet.
    pub protocol_errors: u64,
    /// Connections closed because keep-alive or the CONNECT timeout ran out.
    pub timeouts: u64,
    /// Messages for a client dropped because it was not reading them.
    pub dropped_slow_client: u64,
    /// PUBLISH packets received from clients.
    pub publishes_received: u64,
    /// PUBLISH packets sent to clients.
    pub publishes_sent: u64,
    /// Connections refused at `max_connections`.
    pub refused_max_connections: u64,
    /// Connections closed for a packet over `max_packet_bytes`.
    pub packets_too_large: u64,
    /// Bytes waiting for every connection together, now.
    pub queued_bytes: usize,
}

impl BrokerStats {
    /// The counters right now.
    pub fn snapshot(&self) -> BrokerCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerCounts {
            connections_accepted: get(&self.connections_accepted),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connects_refused: get(&self.connects_refused),
            protocol_errors: get(&self.protocol_errors),
            timeouts: get(&self.timeouts),
            dropped_slow_client: get(&self.dropped_slow_client),
            queued_bytes: self.queued_bytes.get(),
            publishes_received: get(&self.publishes_received),
            publishes_sent: get(&self.publishes_sent),
            refused_max_connections: get(&self.refused_max_connections),
            packets_too_large: get(&self.packets_too_large),
        }
    }
}

/// The running broker: its listeners, and the driver's side of its channels.
pub struct Broker {
    events: mpsc::Receiver<BrokerEvent>,
    links: HashMap<LocalConnId, ConnLink>,
    /// Messages dispatched to a connection that had already stopped reading
    /// its channel; they join its `Closed` event's unacknowledged list.
    orphans: HashMap<LocalConnId, Vec<LocalDelivery>>,
    accept_tasks: Vec<JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    max_queued: usize,
    max_queued_bytes: usize,
    max_queued_bytes_total: usize,
    /// Given back as the driver takes each PUBLISH ([`INBOUND_BYTES`]).
    inbound: Arc<tokio::sync::Semaphore>,
    stats: Arc<BrokerStats>,
}

/// Settings a connection task needs.
#[derive(Debug, Clone)]
struct ConnSettings {
    max_packet_bytes: usize,
    max_inflight: u16,
    connect_timeout: Duration,
    auth: Arc<Authenticator>,
    /// Every connection's queued bytes together.
    queued_total: QueuedBytes,
    /// Room for PUBLISH bytes on their way to the driver ([`INBOUND_BYTES`]).
    inbound: Arc<tokio::sync::Semaphore>,
}

impl Broker {
    /// Binds every listen address of `cfg` and starts accepting. Must be
    /// called inside a tokio runtime.
    pub async fn start(cfg: &BrokerConfig) -> Result<Broker, BrokerError> {
        let (tx, events) = mpsc::channel(1024);
        let stats = Arc::new(BrokerStats::default());
        let auth =
            Authenticator::new(cfg).map_err(|(user, source)| BrokerError::User { user, source })?;
        let settings = Arc::new(ConnSettings {
            max_packet_bytes: cfg.max_packet_bytes,
            max_inflight: cfg.max_inflight_messages,
            connect_timeout: Duration::from_secs(u64::from(cfg.connect_timeout_secs)),
            auth: Arc::new(auth),
            queued_total: stats.queued_bytes.clone(),
            inbound: Arc::new(tokio::sync::Semaphore::new(INBOUND_BYTES)),
        });
        let tls = if cfg.tls_listen.is_empty() {
            None
        } else {
            Some(tls_acceptor(cfg)?)
        };
        let next_conn = Arc::new(AtomicU64::new(0));
        let mut accept_tasks = Vec::new();
        let mut local_addrs = Vec::new();
        let mut tls_addrs = Vec::new();
        let listeners = cfg
            .listen
            .iter()
            .map(|a| (*a, None))
            .chain(cfg.tls_listen.iter().map(|a| (*a, tls.clone())));
        for (addr, tls) in listeners {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| BrokerError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| BrokerError::Bind { addr, source })?;
            if tls.is_some() {
                info!(addr = %local, "MQTT broker listening on TCP with TLS");
                tls_addrs.push(local);
            } else {
                info!(addr = %local, "MQTT broker listening on TCP");
                local_addrs.push(local);
            }
            // Only with `allow_anonymous = true` said outright: unset, a
            // listener beyond loopback with no users is a config error.
            if settings.auth.allow_anonymous() && !crate::config::is_loopback(local.ip()) {
                warn!(addr = %local, "MQTT broker reachable beyond this machine with anonymous clients allowed (allow_anonymous = true); configure [[broker.users]] (sngate passwd) and drop allow_anonymous to require credentials");
            }
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                tls,
                tx.clone(),
                settings.clone(),
                stats.clone(),
                next_conn.clone(),
                cfg.max_connections,
            )));
        }
        Ok(Broker {
            events,
            links: HashMap::new(),
            orphans: HashMap::new(),
            accept_tasks,
            local_addrs,
            tls_addrs,
            max_queued: cfg.max_queued_messages,
            max_queued_bytes: cfg.max_queued_bytes,
            max_queued_bytes_total: cfg.max_queued_bytes_total,
            inbound: settings.inbound.clone(),
            stats,
        })
    }

    /// The bound plain TCP addresses (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The bound TLS addresses (port 0 resolved).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The broker's counters.
    pub fn stats(&self) -> &Arc<BrokerStats> {
        &self.stats
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.links.len()
    }

    /// The next event from a connection.
    pub async fn recv(&mut self) -> Option<BrokerEvent> {
        let event = self.events.recv().await?;
        Some(self.note(event))
    }

    /// An event that is ready now, without waiting.
    pub fn try_recv(&mut self) -> Option<BrokerEvent> {
        let event = self.events.try_recv().ok()?;
        Some(self.note(event))
    }

    /// Keeps the connection table in step with an event on its way out.
    fn note(&mut self, mut event: BrokerEvent) -> BrokerEvent {
        match &mut event {
            BrokerEvent::Opened { conn, link } => {
                self.links.insert(*conn, link.clone());
            }
            BrokerEvent::Input {
                conn,
                input: LocalInput::Closed { unacked, .. },
            } => {
                if let Some(link) = self.links.remove(conn) {
                    // The connection is gone: what it still held counts no
                    // more (it goes back to the engine in `unacked`).
                    let held = link.queued_bytes.swap(0, Ordering::Relaxed);
                    self.stats.queued_bytes.sub(held);
                }
                if let Some(orphans) = self.orphans.remove(conn) {
                    unacked.extend(orphans);
                }
            }
            BrokerEvent::Input { input, .. } => {
                // Taken by the driver: its bytes are room again.
                self.inbound.add_permits(inbound_size(input));
            }
        }
        event
    }

    /// Hands the engine's `action` to connection `conn`. Never blocks: a
    /// message for a client that has `max_queued_messages` waiting, or whose
    /// queued bytes would pass `max_queued_bytes` (or every connection's
    /// together `max_queued_bytes_total`), is dropped and counted; a message
    /// for a client with nothing queued is always taken.
    pub fn dispatch(&mut self, conn: LocalConnId, action: LocalAction) {
        let Some(link) = self.links.get(&conn) else {
            debug!(%conn, "no such broker connection; action dropped");
            return;
        };
        if let LocalAction::Deliver(d) = &action {
            let size = queued_size(d);
            let held = link.queued_bytes.load(Ordering::Relaxed);
            let over_bytes = held > 0
                && (held + size > self.max_queued_bytes
                    || self.stats.queued_bytes.get() + size > self.max_queued_bytes_total);
            if link.queued.load(Ordering::Relaxed) >= self.max_queued || over_bytes {
                self.stats
                    .dropped_slow_client
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%conn, topic = %d.topic, "client not reading; message dropped");
                return;
            }
            link.queued.fetch_add(1, Ordering::Relaxed);
            link.queued_bytes.fetch_add(size, Ordering::Relaxed);
            self.stats.queued_bytes.add(size);
        }
        // A connection that stopped reading: its Closed event is on its way
        // and takes the message back to the engine.
        if let Err(mpsc::error::SendError(LocalAction::Deliver(d))) = link.actions.send(action) {
            self.orphans.entry(conn).or_default().push(d);
        }
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&mut self) {
        for task in &self.accept_tasks {
            task.abort();
        }
        self.links.clear();
    }

    /// Waits until the listeners are closed (after [`shutdown`](Self::shutdown)),
    /// so a stopped gateway no longer accepts connections.
    pub async fn closed(&mut self) {
        for task in self.accept_tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The TLS server setup from `tls_cert_file` and `tls_key_file`, with
/// ring as the crypto provider (as the bridge's client side).
fn tls_acceptor(cfg: &BrokerConfig) -> Result<tokio_rustls::TlsAcceptor, BrokerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let err = |path: &str, reason: String| BrokerError::Tls {
        path: path.to_owned(),
        reason,
    };
    let cert_file = cfg.tls_cert_file.as_deref().unwrap_or_default();
    let key_file = cfg.tls_key_file.as_deref().unwrap_or_default();
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| err(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(cert_file, "no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| err(key_file, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert_file, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(cert_file, format!("does not fit {key_file}: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    events: mpsc::Sender<BrokerEvent>,
    settings: Arc<ConnSettings>,
    stats: Arc<BrokerStats>,
    next_conn: Arc<AtomicU64>,
    max_connections: usize,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "cannot accept an MQTT connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        if stats.connections_open.load(Ordering::Relaxed) >= max_connections {
            stats.connects_refused.fetch_add(1, Ordering::Relaxed);
            stats
                .refused_max_connections
                .fetch_add(1, Ordering::Relaxed);
            warn!(%peer, max_connections, "MQTT connection refused: too many connections");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = LocalConnId(next_conn.fetch_add(1, Ordering::Relaxed) + 1);
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        let (events, settings, stats) = (events.clone(), settings.clone(), stats.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            serve(conn, peer, stream, tls, events, settings, &stats).await;
            stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Runs one accepted connection, after its TLS handshake on a TLS listener
/// (bounded by the CONNECT timeout: a client that stalls it is a client
/// that sends no CONNECT).
async fn serve(
    conn: LocalConnId,
    peer: SocketAddr,
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    events: mpsc::Sender<BrokerEvent>,
    settings: Arc<ConnSettings>,
    stats: &Arc<BrokerStats>,
) {
    let Some(tls) = tls else {
        let (reader, writer) = stream.into_split();
        let task = connection::Connection::new(
            conn,
            peer,
            reader,
            writer,
            events,
            settings,
            stats.clone(),
        );
        task.run().await;
        return;
    };
    let stream = match tokio::time::timeout(settings.connect_timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            debug!(%conn, %peer, error = %e, "TLS handshake failed; closing");
            return;
        }
        Err(_) => {
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            debug!(%conn, %peer, "no TLS handshake in time; closing");
            return;
        }
    };
    let (reader, writer) = tokio::io::split(stream);
    let task =
        connection::Connection::new(conn, peer, reader, writer, events, settings, stats.clone());
    task.run().await;
}
