//! DTLS listeners: MQTT-SN over DTLS 1.2 with pre-shared keys, beside the
//! plain UDP ones. [`endpoint`] is the sans-IO part (every peer's session,
//! stateless cookies, bounds, timers on a `now` passed in); this module is
//! the thin tokio task around one UDP socket that feeds it datagrams and
//! ticks, sends what it asks, hands the driver the plaintext as
//! [`Datagram`]s (with each session's start and end, so the engine knows
//! which identity an address proved) and encrypts the engine's replies.
//!
//! A DTLS listener's index continues after the plain listeners' (the first
//! DTLS listener of a gateway with two plain ones is listener 2), so its
//! peers are `LinkAddr::Udp` peers the egress tells apart by index.

pub mod certs;
pub mod client;
pub mod endpoint;
pub mod figures;
pub mod hello;
pub mod psk;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::udp::{self, UdpListener};
use super::{Batch, Datagram, PeerAuth, TransportError};
use crate::core::Peer;
use endpoint::{Endpoint, EndpointConfig, EndpointStats, Event};
use figures::DtlsCounts;
use psk::PskKeys;

/// How often the endpoint's timers are run (retransmissions, handshake and
/// idle timeouts).
const TICK: Duration = Duration::from_millis(100);

/// Most plaintext messages waiting to be encrypted for one listener; the
/// engine's replies beyond are dropped (and counted) rather than queued.
const EGRESS_QUEUE: usize = 1024;

/// The shortest time between two log lines about refusals.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// The refusal counters (not the cookies: every first ClientHello gets one).
fn refusals(s: &EndpointStats) -> [u64; 6] {
    [
        s.handshake_failures,
        s.handshake_timeouts,
        s.half_open_full,
        s.sessions_full,
        s.replayed_hellos,
        s.unexpected,
    ]
}

/// Most datagrams read per wake-up before the driver gets them.
const MAX_BATCH: usize = 256;

/// A running DTLS listener, as the driver sees it.
#[derive(Debug, Clone)]
pub struct DtlsLink {
    /// Its listener index (after the plain listeners').
    pub index: u16,
    /// The address actually bound.
    pub local_addr: SocketAddr,
    egress: mpsc::Sender<(SocketAddr, Bytes)>,
    stats: Arc<std::sync::Mutex<DtlsCounts>>,
}

impl DtlsLink {
    /// Hands one encoded MQTT-SN message to the listener to encrypt and send
    /// to `to`. False if its queue is full or it stopped (the message is
    /// dropped).
    pub fn send(&self, to: SocketAddr, bytes: Bytes) -> bool {
        self.egress.try_send((to, bytes)).is_ok()
    }

    /// The endpoint's figures, as of its last wake-up.
    pub fn counts(&self) -> DtlsCounts {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Binds a DTLS listener on `addr` (PSKs from `keys`, and client
/// certificates when `certs` is given) and starts its task, which hands the
/// driver what devices send on `tx`. Returns the link and the task.
pub fn spawn(
    index: u16,
    addr: SocketAddr,
    buffers: (usize, usize),
    cfg: EndpointConfig,
    keys: PskKeys,
    certs: Option<Arc<certs::CertAuth>>,
    tx: mpsc::Sender<Batch>,
) -> Result<(DtlsLink, tokio::task::JoinHandle<()>), TransportError> {
    let listener = udp::bind(index, addr, buffers.0, buffers.1)?;
    let now = tokio::time::Instant::now().into_std();
    let mut endpoint = Endpoint::new(cfg, keys, now).map_err(|e| TransportError::UdpBind {
        addr,
        source: std::io::Error::other(e),
    })?;
    if let Some(certs) = certs {
        endpoint = endpoint.with_certs(certs);
    }
    let (egress, egress_rx) = mpsc::channel(EGRESS_QUEUE);
    let stats = Arc::new(std::sync::Mutex::new(DtlsCounts::default()));
    let link = DtlsLink {
        index,
        local_addr: listener.local_addr,
        egress,
        stats: stats.clone(),
    };
    info!(addr = %listener.local_addr, "MQTT-SN listening on DTLS");
    let task = tokio::spawn(run(listener, endpoint, egress_rx, tx, stats));
    Ok((link, task))
}

/// The listener's loop: datagrams in, the engine's replies out, ticks.
async fn run(
    listener: UdpListener,
    mut endpoint: Endpoint,
    mut egress: mpsc::Receiver<(SocketAddr, Bytes)>,
    tx: mpsc::Sender<Batch>,
    stats: Arc<std::sync::Mutex<DtlsCounts>>,
) {
    let socket = listener.socket.clone();
    let mut scratch = vec![0u8; 65_536];
    let mut events = Vec::new();
    let mut logged = EndpointStats::default();
    let mut next_log = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_err() {
                    return;
                }
                let now = tokio::time::Instant::now().into_std();
                for _ in 0..MAX_BATCH {
                    match socket.try_recv_from(&mut scratch) {
                        Ok((n, from)) => {
                            let data = scratch.get(..n).unwrap_or_default();
                            endpoint.handle_datagram(now, from, data, &mut events);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            debug!(error = %e, "DTLS receive error");
                            break;
                        }
                    }
                }
            }
            msg = egress.recv() => {
                let Some((to, bytes)) = msg else { return };
                endpoint.send(to, &bytes, &mut events);
                while let Ok((to, bytes)) = egress.try_recv() {
                    endpoint.send(to, &bytes, &mut events);
                }
            }
            _ = tick.tick() => {
                let now = tokio::time::Instant::now().into_std();
                endpoint.handle_timeout(now, &mut events);
            }
        }
        if !deliver(&listener, &mut events, &tx).await {
            return;
        }
        let now = tokio::time::Instant::now();
        if now >= next_log && refusals(&endpoint.stats()) != refusals(&logged) {
            let s = endpoint.stats();
            info!(
                addr = %listener.local_addr,
                cookies = s.cookies_sent,
                failed = s.handshake_failures,
                timeouts = s.handshake_timeouts,
                half_open_full = s.half_open_full,
                sessions_full = s.sessions_full,
                replayed = s.replayed_hellos,
                unexpected = s.unexpected,
                "DTLS refusals so far (sngate_dtls_refused_total; logged at most every 10 s)"
            );
            logged = s;
            next_log = now + LOG_PERIOD;
        }
        *stats.lock().unwrap_or_else(|e| e.into_inner()) = DtlsCounts {
            stats: endpoint.stats(),
            sessions: endpoint.sessions(),
            half_open: endpoint.half_open(),
        };
    }
}

/// Sends the records the endpoint asked for and hands the driver the rest,
/// in order. False once the driver is gone.
async fn deliver(
    listener: &UdpListener,
    events: &mut Vec<Event>,
    tx: &mpsc::Sender<Batch>,
) -> bool {
    let mut batch = Vec::new();
    let peer = |addr| Peer::udp_on(listener.index, addr);
    for event in events.drain(..) {
        match event {
            Event::Send { to, bytes } => {
                if let Err(e) = listener.send_to(&bytes, to).await {
                    debug!(%to, error = %e, "DTLS send failed");
                }
            }
            Event::Authenticated {
                peer: addr,
                identity,
            } => batch.push(Datagram {
                peer: peer(addr),
                bytes: Bytes::new(),
                auth: Some(PeerAuth::Authenticated(identity)),
            }),
            Event::Plaintext { from, bytes } => batch.push(Datagram {
                peer: peer(from),
                bytes: Bytes::from(bytes),
                auth: None,
            }),
            Event::Closed { peer: addr } => batch.push(Datagram {
                peer: peer(addr),
                bytes: Bytes::new(),
                auth: Some(PeerAuth::Closed),
            }),
        }
    }
    batch.is_empty() || tx.send(batch).await.is_ok()
}
