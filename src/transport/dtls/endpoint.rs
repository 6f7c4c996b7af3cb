//! The DTLS server endpoint, sans-IO: every peer's DTLS session on one
//! listener, keyed by source address, driven by datagrams and a `now`
//! passed in. It owns the defences a UDP server needs before it keeps any
//! state for a peer:
//!
//! - **Stateless cookies.** A ClientHello from an address with no session
//!   is answered with a HelloVerifyRequest and forgotten. Its cookie is
//!   keyed by a secret, the source address, the client's random and a time
//!   bucket: only a peer that receives at that address can answer it, and
//!   only then is a session kept (see [`Endpoint::handle_datagram`] for how
//!   dimpl is made to agree with a cookie it did not keep).
//! - **Bounds.** At most `max_half_open` sessions mid-handshake and
//!   `max_sessions` in all; a handshake not finished in `handshake_timeout`
//!   and a session silent for `idle_timeout` are dropped.
//! - **No amplification.** What an address that did not answer a cookie
//!   gets is one HelloVerifyRequest, smaller than its ClientHello.
//! - **Replays.** A ClientHello with a valid cookie whose client random was
//!   already taken in the cookie's lifetime is dropped (see `seed_for`).
//!
//! The library is `dimpl` (docs/security.md says why); its sessions are
//! PSK-only DTLS 1.2 (TLS_PSK_WITH_AES_128_CCM_8). What the endpoint hands
//! back are [`Event`]s: records to send, plaintext received, and each
//! session's start (with the identity it proved) and end.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dimpl::{Config, Dtls, Output, PskResolver};
use ring::hmac;
use tracing::debug;

use super::certs::{CertAuth, cert_provider};
use super::hello;
use super::psk::PskKeys;

/// How long a cookie stays valid: its time bucket and the one before.
const COOKIE_BUCKET: Duration = Duration::from_secs(30);

/// Most client randoms remembered for refusing replayed handshakes.
const MAX_RECENT_RANDOMS: usize = 8192;

/// The endpoint's limits (the `[dtls]` section's).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Largest datagram the endpoint sends (DTLS fragments its handshake
    /// to fit).
    pub mtu: usize,
    /// Most sessions mid-handshake at once; a new one beyond is dropped.
    pub max_half_open: usize,
    /// Most sessions in all; a new handshake beyond is dropped.
    pub max_sessions: usize,
    /// A handshake not complete after this is dropped.
    pub handshake_timeout: Duration,
    /// A session that received nothing for this long is dropped.
    pub idle_timeout: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            mtu: 1200,
            max_half_open: 64,
            max_sessions: 2000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// What the endpoint asks the caller to do, or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send these bytes to `to`.
    Send {
        /// The destination.
        to: SocketAddr,
        /// One datagram.
        bytes: Vec<u8>,
    },
    /// A session was established with `peer`, which proved `identity`.
    /// Comes before any [`Event::Plaintext`] from it.
    Authenticated {
        /// The peer's address.
        peer: SocketAddr,
        /// Its PSK identity.
        identity: Arc<str>,
    },
    /// Application data (one MQTT-SN message) from an established session.
    Plaintext {
        /// The sender.
        from: SocketAddr,
        /// The decrypted bytes.
        bytes: Vec<u8>,
    },
    /// The established session with `peer` ended (closed, failed, idle,
    /// or replaced by a new handshake).
    Closed {
        /// The peer's address.
        peer: SocketAddr,
    },
}

/// What the endpoint counted since it started (each refusal is one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// HelloVerifyRequests sent (ClientHellos without a valid cookie).
    pub cookies_sent: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes that failed (wrong key, unknown identity, bad message).
    pub handshake_failures: u64,
    /// Handshakes dropped for taking longer than `handshake_timeout`.
    pub handshake_timeouts: u64,
    /// ClientHellos with a valid cookie dropped at `max_half_open`.
    pub half_open_full: u64,
    /// ClientHellos with a valid cookie dropped at `max_sessions`.
    pub sessions_full: u64,
    /// ClientHellos with a valid cookie whose client random was already used.
    pub replayed_hellos: u64,
    /// Datagrams from an address with no session that were not a
    /// ClientHello (dropped without an answer).
    pub unexpected: u64,
    /// Established sessions dropped for silence.
    pub idle_closed: u64,
    /// Plaintext for a peer with no established session (not sent).
    pub no_session: u64,
}

/// Looks up the key of the identity a client offers, and remembers which
/// identity that was: the session's proof of who it is, once the handshake
/// completes (a wrong key never completes it).
struct SessionPsk {
    keys: PskKeys,
    offered: Mutex<Option<Vec<u8>>>,
}

impl PskResolver for SessionPsk {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.get(identity);
        if key.is_some() {
            let mut offered = self.offered.lock().unwrap_or_else(|e| e.into_inner());
            *offered = Some(identity.to_vec());
        }
        key
    }
}

/// One peer's DTLS session.
struct Session {
    dtls: Dtls,
    psk: Arc<SessionPsk>,
    /// Set once the handshake completed: the identity it proved.
    identity: Option<Arc<str>>,
    /// A certificate handshake: the CN of the device's verified certificate.
    cert_identity: Option<String>,
    /// When the handshake started.
    started: Instant,
    /// When a datagram from the peer last arrived.
    last_heard: Instant,
    /// dimpl's next timer.
    timer: Option<Instant>,
}

/// A dimpl server shown a client's first ClientHello: the server, its PSK
/// lookup, the HelloVerifyRequest it answered with and the cookie in it.
type Primed = (Dtls, Arc<SessionPsk>, Vec<u8>, Vec<u8>);

/// Every DTLS session of one listener (see the module doc).
pub struct Endpoint {
    cfg: EndpointConfig,
    keys: PskKeys,
    certs: Option<Arc<CertAuth>>,
    secret: hmac::Key,
    epoch: Instant,
    sessions: HashMap<SocketAddr, Session>,
    half_open: usize,
    recent: VecDeque<[u8; 32]>,
    recent_set: HashSet<[u8; 32]>,
    stats: EndpointStats,
    out_buf: Vec<u8>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("sessions", &self.sessions.len())
            .field("half_open", &self.half_open)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Why the endpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The system's random number generator failed.
    #[error("no randomness for the cookie secret")]
    Random,
}

impl Endpoint {
    /// An endpoint with no sessions, checking PSKs against `keys`.
    pub fn new(cfg: EndpointConfig, keys: PskKeys, now: Instant) -> Result<Self, EndpointError> {
        let rng = ring::rand::SystemRandom::new();
        let secret =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| EndpointError::Random)?;
        Ok(Self {
            out_buf: vec![0; cfg.mtu.max(2048)],
            cfg,
            keys,
            certs: None,
            secret,
            epoch: now,
            sessions: HashMap::new(),
            half_open: 0,
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            stats: EndpointStats::default(),
        })
    }

    /// Takes devices with client certificates too: a ClientHello that
    /// offers no PSK suite gets an ECDHE-ECDSA handshake with `certs`'
    /// server certificate, and the device's certificate must chain to its
    /// CA; the identity is the certificate's CN.
    pub fn with_certs(mut self, certs: Arc<CertAuth>) -> Self {
        self.certs = Some(certs);
        self
    }

    /// The counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Sessions kept now (established and mid-handshake).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions mid-handshake now.
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// The cookie time bucket `now` falls in.
    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / COOKIE_BUCKET.as_secs()
    }

    /// The seed of dimpl's non-cryptographic randomness (its cookie secret,
    /// server random and record nonces) for a handshake from `from` with
    /// `random` in `bucket`: a keyed hash, so the cookie dimpl makes is the
    /// same whenever it is asked again — which lets the endpoint forget a
    /// peer after the HelloVerifyRequest and still accept its answer —
    /// and unpredictable without the secret. The same inputs give the same
    /// server random, so a ClientHello replayed within the cookie's lifetime
    /// is refused (`recent`); after it the bucket, and so everything, differs.
    fn seed_for(&self, from: SocketAddr, random: &[u8; 32], bucket: u64) -> u64 {
        let mut ctx = hmac::Context::with_key(&self.secret);
        match from.ip() {
            std::net::IpAddr::V4(ip) => ctx.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&from.port().to_be_bytes());
        ctx.update(random);
        ctx.update(&bucket.to_be_bytes());
        let tag = ctx.sign();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(tag.as_ref().get(..8).unwrap_or(&[0; 8]));
        u64::from_be_bytes(seed)
    }

    /// A new dimpl server for a handshake seeded with `seed`, with its
    /// first timer call made (dimpl panics on a packet handled before it).
    fn new_dtls(&self, seed: u64, now: Instant, psk_mode: bool) -> Option<(Dtls, Arc<SessionPsk>)> {
        let psk = Arc::new(SessionPsk {
            keys: self.keys.clone(),
            offered: Mutex::new(None),
        });
        if let (false, Some(certs)) = (psk_mode, &self.certs) {
            let config = Config::builder()
                .with_crypto_provider(cert_provider().clone())
                .mtu(self.cfg.mtu)
                .handshake_timeout(self.cfg.handshake_timeout)
                .use_server_cookie(true)
                .require_client_certificate(true)
                .dangerously_set_rng_seed(seed)
                .build()
                .map_err(|e| debug!(error = %e, "DTLS configuration refused"))
                .ok()?;
            let mut dtls = Dtls::new_12(Arc::new(config), certs.server.clone(), now);
            dtls.handle_timeout(now).ok()?;
            return Some((dtls, psk));
        }
        let config = Config::builder()
            .with_crypto_provider(psk_provider().clone())
            .mtu(self.cfg.mtu)
            .handshake_timeout(self.cfg.handshake_timeout)
            .use_server_cookie(true)
            .dangerously_set_rng_seed(seed)
            .with_psk_server(None, psk.clone())
            .build()
            .map_err(|e| debug!(error = %e, "DTLS configuration refused"))
            .ok()?;
        let mut dtls = Dtls::new_12_psk(Arc::new(config), now);
        dtls.handle_timeout(now).ok()?;
        Some((dtls, psk))
    }

    /// A dimpl server for `hello` (parsed from `datagram`) in `bucket`,
    /// shown the client's first ClientHello, and the HelloVerifyRequest it
    /// answered with (the datagram to send) and the cookie in it.
    fn primed(
        &mut self,
        now: Instant,
        from: SocketAddr,
        hello: &hello::ClientHello<'_>,
        datagram: &[u8],
        bucket: u64,
    ) -> Option<Primed> {
        let first = hello.without_cookie(datagram)?;
        let psk_mode = hello.offers_psk || self.certs.is_none();
        let seed = self.seed_for(from, &hello.random, bucket);
        let (mut dtls, psk) = self.new_dtls(seed, now, psk_mode)?;
        dtls.handle_packet(&first).ok()?;
        let mut hvr = None;
        loop {
            match dtls.poll_output(&mut self.out_buf) {
                Output::Packet(p) if hvr.is_none() => hvr = Some(p.to_vec()),
                Output::Timeout(_) => break,
                Output::BufferTooSmall { needed } if needed <= 65_536 => {
                    self.out_buf.resize(needed, 0);
                }
                Output::BufferTooSmall { .. } => return None,
                _ => {}
            }
        }
        let hvr = hvr?;
        let cookie = hello_verify_cookie(&hvr)?.to_vec();
        Some((dtls, psk, hvr, cookie))
    }

    /// One datagram from `from`.
    ///
    /// From an address with a session it goes to that session — unless it
    /// is a ClientHello and the session is established: a device that
    /// restarted at the same address starts over, through the cookie.
    /// From any other address only a ClientHello is taken: without a valid
    /// cookie it gets a HelloVerifyRequest and nothing is kept; with one, a
    /// session is made (within the bounds) and the handshake goes on.
    ///
    /// dimpl keeps its cookie secret per session, so the endpoint makes it
    /// the same each time: the session is seeded from the secret, address,
    /// random and bucket (`seed_for`), shown the client's first ClientHello
    /// (rebuilt from the second without its cookie) to reach the state it
    /// had when it sent the HelloVerifyRequest, and handed the second.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Event>,
    ) {
        let hello = hello::parse(datagram);
        match (self.sessions.get(&from), &hello) {
            (Some(s), Some(_)) if s.identity.is_some() => {}
            (Some(_), _) => return self.feed(now, from, datagram, out),
            (None, None) => {
                self.stats.unexpected += 1;
                debug!(%from, len = datagram.len(), "DTLS: not a ClientHello from an address with no session; dropped");
                return;
            }
            (None, Some(_)) => {}
        }
        let Some(hello) = hello else { return };
        let bucket = self.bucket(now);
        let Some((dtls, psk, hvr, cookie)) = self.primed(now, from, &hello, datagram, bucket)
        else {
            self.stats.unexpected += 1;
            return;
        };
        let accepted = if hello.cookie == cookie.as_slice() {
            Some((dtls, psk))
        } else if !hello.cookie.is_empty() && bucket > 0 {
            // Made in the bucket before, if this one just began.
            self.primed(now, from, &hello, datagram, bucket - 1)
                .filter(|(_, _, _, c)| hello.cookie == c.as_slice())
                .map(|(d, p, _, _)| (d, p))
        } else {
            None
        };
        let Some((dtls, psk)) = accepted else {
            self.stats.cookies_sent += 1;
            out.push(Event::Send {
                to: from,
                bytes: hvr,
            });
            return;
        };
        if !self.admit(&hello.random) {
            return;
        }
        // A device starting over at the address of its established session.
        if self.sessions.contains_key(&from) {
            self.remove(from, out);
        }
        self.half_open += 1;
        self.sessions.insert(
            from,
            Session {
                dtls,
                psk,
                identity: None,
                cert_identity: None,
                started: now,
                last_heard: now,
                timer: None,
            },
        );
        self.feed(now, from, datagram, out);
    }

    /// Whether a ClientHello with a valid cookie may start a session: room
    /// within the bounds, and a client random not seen in the cookie's
    /// lifetime (then remembered).
    fn admit(&mut self, random: &[u8; 32]) -> bool {
        if self.recent_set.contains(random) {
            self.stats.replayed_hellos += 1;
            debug!("DTLS: a replayed ClientHello; dropped");
            return false;
        }
        if self.half_open >= self.cfg.max_half_open {
            self.stats.half_open_full += 1;
            debug!(
                max = self.cfg.max_half_open,
                "DTLS: too many handshakes at once; ClientHello dropped"
            );
            return false;
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            self.stats.sessions_full += 1;
            debug!(
                max = self.cfg.max_sessions,
                "DTLS: max_sessions reached; ClientHello dropped"
            );
            return false;
        }
        if self.recent.len() >= MAX_RECENT_RANDOMS
            && let Some(old) = self.recent.pop_front()
        {
            self.recent_set.remove(&old);
        }
        self.recent.push_back(*random);
        self.recent_set.insert(*random);
        true
    }

    /// Hands `datagram` to the session of `from` and collects its output.
    fn feed(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut Vec<Event>) {
        let Some(s) = self.sessions.get_mut(&from) else {
            return;
        };
        s.last_heard = now;
        let result = s.dtls.handle_packet(datagram);
        self.drain(from, out);
        if let Err(e) = result {
            debug!(%from, error = %e, "DTLS session failed");
            self.fail(from, out);
        }
    }

    /// Drops the session of `from` after an error: a handshake failure (a
    /// wrong key shows here) or a broken established session.
    fn fail(&mut self, from: SocketAddr, out: &mut Vec<Event>) {
        if self
            .sessions
            .get(&from)
            .is_some_and(|s| s.identity.is_none())
        {
            self.stats.handshake_failures += 1;
        }
        self.remove(from, out);
    }

    /// Forgets the session of `peer`, telling the caller if it was
    /// established.
    fn remove(&mut self, peer: SocketAddr, out: &mut Vec<Event>) {
        if let Some(s) = self.sessions.remove(&peer) {
            if s.identity.is_some() {
                out.push(Event::Closed { peer });
            } else {
                self.half_open = self.half_open.saturating_sub(1);
            }
        }
    }

    /// Everything the session of `peer` has to say.
    fn drain(&mut self, peer: SocketAddr, out: &mut Vec<Event>) {
        let mut closed = false;
        let mut connected = false;
        // Plaintext waits for the identity: dimpl may say Connected, and the
        // peer's certificate, after application data of the same flight.
        let mut plaintext = Vec::new();
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        loop {
            match s.dtls.poll_output(&mut self.out_buf) {
                Output::Packet(p) => out.push(Event::Send {
                    to: peer,
                    bytes: p.to_vec(),
                }),
                Output::BufferTooSmall { needed } if needed <= 65_536 => {
                    self.out_buf.resize(needed, 0);
                }
                Output::BufferTooSmall { .. } => {
                    closed = true;
                    break;
                }
                Output::Timeout(t) => {
                    s.timer = Some(t);
                    break;
                }
                Output::Connected => connected = true,
                Output::PeerCert(der) => {
                    let verdict = self
                        .certs
                        .as_ref()
                        .map(|c| c.identity_of(der, rustls::pki_types::UnixTime::now()));
                    match verdict {
                        Some(Ok(cn)) => s.cert_identity = Some(cn),
                        Some(Err(e)) => {
                            debug!(%peer, error = %e, "DTLS: client certificate refused");
                            closed = true;
                            break;
                        }
                        None => {}
                    }
                }
                Output::ApplicationData(data) => plaintext.push(data.to_vec()),
                Output::CloseNotify => closed = true,
                _ => {}
            }
        }
        if connected && s.identity.is_none() && !closed {
            // A certificate handshake proves its CN, a PSK one the identity
            // whose key it used.
            let offered = match s.cert_identity.take() {
                Some(cn) => Some(cn.into_bytes()),
                None => s
                    .psk
                    .offered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            };
            match offered.map(String::from_utf8) {
                Some(Ok(identity)) => {
                    let identity: Arc<str> = Arc::from(identity);
                    s.identity = Some(identity.clone());
                    self.half_open = self.half_open.saturating_sub(1);
                    self.stats.handshakes += 1;
                    out.push(Event::Authenticated { peer, identity });
                }
                _ => {
                    debug!(%peer, "DTLS: no identity proven (or not UTF-8); session dropped");
                    closed = true;
                }
            }
        }
        if s.identity.is_some() && !closed {
            out.extend(
                plaintext
                    .into_iter()
                    .map(|bytes| Event::Plaintext { from: peer, bytes }),
            );
        }
        if closed {
            self.fail(peer, out);
        }
    }

    /// Encrypts `plaintext` (one MQTT-SN message) for the established
    /// session with `to`. Without one it is dropped and counted.
    pub fn send(&mut self, to: SocketAddr, plaintext: &[u8], out: &mut Vec<Event>) {
        let Some(s) = self.sessions.get_mut(&to).filter(|s| s.identity.is_some()) else {
            self.stats.no_session += 1;
            return;
        };
        let result = s.dtls.send_application_data(plaintext);
        self.drain(to, out);
        if let Err(e) = result {
            debug!(%to, error = %e, "DTLS send failed; session dropped");
            self.remove(to, out);
        }
    }

    /// Runs the timers due at `now`: dimpl's retransmissions, handshakes
    /// over `handshake_timeout`, sessions silent for `idle_timeout`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Event>) {
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (addr, s) in &self.sessions {
            if s.identity.is_none() && now >= s.started + self.cfg.handshake_timeout {
                expired.push((*addr, true));
            } else if s.identity.is_some() && now >= s.last_heard + self.cfg.idle_timeout {
                expired.push((*addr, false));
            } else if s.timer.is_some_and(|t| t <= now) {
                due.push(*addr);
            }
        }
        for (addr, handshake) in expired {
            if handshake {
                self.stats.handshake_timeouts += 1;
                debug!(peer = %addr, "DTLS handshake timed out");
            } else {
                self.stats.idle_closed += 1;
                debug!(peer = %addr, "DTLS session idle; dropped");
            }
            self.remove(addr, out);
        }
        for addr in due {
            let Some(s) = self.sessions.get_mut(&addr) else {
                continue;
            };
            s.timer = None;
            let result = s.dtls.handle_timeout(now);
            self.drain(addr, out);
            if result.is_err() {
                self.fail(addr, out);
            }
        }
    }
}

/// dimpl's RustCrypto provider cut to what a PSK server uses: the DTLS 1.2
/// PSK suites, one key exchange group and one DTLS 1.3 suite. Building a
/// `Config` runs self-tests of everything its provider lists, and one is
/// built per handshake (each is seeded apart): with ECDSA and ECDHE listed,
/// that costs more than the handshake.
pub(crate) fn psk_provider() -> &'static dimpl::crypto::CryptoProvider {
    static PROVIDER: std::sync::OnceLock<dimpl::crypto::CryptoProvider> =
        std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| {
        let mut provider = dimpl::crypto::rust_crypto::default_provider();
        let psk: Vec<_> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|cs| cs.suite().is_psk())
            .collect();
        provider.cipher_suites = Box::leak(psk.into_boxed_slice());
        // dimpl's validation wants one group with the DTLS 1.3 suite it
        // wants: X25519, whose self-test is the cheapest.
        let x25519: Vec<_> = provider
            .kx_groups
            .iter()
            .copied()
            .filter(|g| g.name() == dimpl::NamedGroup::X25519)
            .collect();
        provider.kx_groups = Box::leak(x25519.into_boxed_slice());
        // dimpl's validation wants one; new_12_psk never offers it.
        let dtls13 = provider.dtls13_cipher_suites;
        provider.dtls13_cipher_suites = dtls13.get(..1).unwrap_or(dtls13);
        provider
    })
}

/// The cookie in a HelloVerifyRequest record (as dimpl writes it: one
/// record, one whole message).
fn hello_verify_cookie(record: &[u8]) -> Option<&[u8]> {
    // Record header (13), handshake header (12), server_version (2).
    if record.first() != Some(&22) || record.get(13) != Some(&3) {
        return None;
    }
    let len = usize::from(*record.get(27)?);
    record.get(28..28 + len)
}

#[cfg(test)]
mod tests {
    use super::super::client::{DtlsClient, PskCredentials};
    use super::*;

    const KEY: [u8; 16] = [7; 16];

    fn endpoint(cfg: EndpointConfig, now: Instant) -> Endpoint {
        let mut keys = super::super::psk::KeyMap::new();
        keys.insert(b"dev1".to_vec(), KEY.to_vec());
        Endpoint::new(cfg, PskKeys::new(keys), now).expect("endpoint")
    }

    fn client(identity: &str, key: &[u8], now: Instant) -> DtlsClient {
        let creds = PskCredentials {
            identity: identity.to_owned(),
            key: key.to_vec(),
        };
        DtlsClient::new(&creds, 1200, now).expect("client")
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// Runs the datagrams between `c` at `from` and `ep` until neither has
    /// anything to say; returns every event that was not a datagram to `from`.
    fn pump(ep: &mut Endpoint, c: &mut DtlsClient, from: SocketAddr, now: Instant) -> Vec<Event> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let out = c.drain();
            if out.datagrams.is_empty() {
                break;
            }
            let mut events = Vec::new();
            for d in out.datagrams {
                ep.handle_datagram(now, from, &d, &mut events);
            }
            for e in events {
                match e {
                    Event::Send { to, bytes } if to == from => {
                        let _ = c.handle_datagram(&bytes);
                    }
                    other => seen.push(other),
                }
            }
        }
        seen
    }

    /// The client's ClientHellos: the first (no cookie), as sent at `now`.
    fn first_hello(now: Instant) -> Vec<u8> {
        let mut c = client("dev1", &KEY, now);
        c.drain().datagrams.remove(0)
    }

    #[test]
    fn a_psk_handshake_proves_the_identity_and_carries_plaintext_both_ways() {
        let now = Instant::now();
        let mut ep = endpoint(EndpointConfig::default(), now);
        let mut c = client("dev1", &KEY, now);
        let a = addr(1000);
        let events = pump(&mut ep, &mut c, a, now);
        assert!(c.is_connected());
        assert_eq!(
            events,
            vec![Event::Authenticated {
                peer: a,
                identity: Arc::from("dev1")
            }]
        );
        assert_eq!((ep.sessions(), ep.half_open()), (1, 0));
        c.send(b"up").expect("send");
        let events = pump(&mut ep, &mut c, a, now);
        assert_eq!(
            events,
            vec![Event::Plaintext {
                from: a,
                bytes: b"up".to_vec()
            }]
        );
        let mut events = Vec::new();
        ep.send(a, b"down", &mut events);
        let [Event::Send { to, bytes }] = events.as_slice() else {
            panic!("one record expected, got {events:?}");
        };
        assert_eq!(*to, a);
        c.handle_datagram(bytes).expect("record");
        assert_eq!(c.drain().plaintext, vec![b"down".to_vec()]);
        assert_eq!(ep.stats().handshakes, 1);
    }

    #[test]
    fn a_client_hello_flood_from_spoofed_addresses_keeps_no_state_and_is_not_amplified() {
        let now = Instant::now();
        let mut ep = endpoint(EndpointConfig::default(), now);
        let hello = first_hello(now);
        for port in 0..1000u16 {
            let mut events = Vec::new();
            ep.handle_datagram(now, addr(port), &hello, &mut events);
            let [Event::Send { to, bytes }] = events.as_slice() else {
                panic!("one HelloVerifyRequest expected, got {events:?}");
            };
            assert_eq!(*to, addr(port));
            assert!(
                bytes.len() < hello.len(),
                "{} ≥ {}",
                bytes.len(),
                hello.len()
            );
        }
        assert_eq!((ep.sessions(), ep.half_open()), (0, 0));
        assert_eq!(ep.stats().cookies_sent, 1000);
        // A cookie is bound to its address: echoed from another one, it is
        // answered with a new HelloVerifyRequest, and nothing is kept.
        let mut c = client("dev1", &KEY, now);
        let mut events = Vec::new();
        for d in c.drain().datagrams {
            ep.handle_datagram(now, addr(1), &d, &mut events);
        }
        for e in events.drain(..) {
            if let Event::Send { bytes, .. } = e {
                c.handle_datagram(&bytes).expect("HelloVerifyRequest");
            }
        }
        for d in c.drain().datagrams {
            ep.handle_datagram(now, addr(2), &d, &mut events);
        }
        assert_eq!(ep.sessions(), 0);
        assert_eq!(ep.stats().cookies_sent, 1002);
    }

    /// Takes `c` at `from` through the cookie exchange to a kept half-open
    /// session, and stops there (its ServerHello flight is not answered).
    fn half_open(ep: &mut Endpoint, c: &mut DtlsClient, from: SocketAddr, now: Instant) {
        for _ in 0..2 {
            let mut events = Vec::new();
            for d in c.drain().datagrams {
                ep.handle_datagram(now, from, &d, &mut events);
            }
            if let Some(Event::Send { bytes, .. }) = events.first() {
                let _ = c.handle_datagram(bytes);
            }
        }
    }

    #[test]
    fn half_open_handshakes_are_bounded_and_time_out() {
        let now = Instant::now();
        let cfg = EndpointConfig {
            max_half_open: 2,
            ..EndpointConfig::default()
        };
        let timeout = cfg.handshake_timeout;
        let mut ep = endpoint(cfg, now);
        for port in 1..=3 {
            let mut c = client("dev1", &KEY, now);
            half_open(&mut ep, &mut c, addr(port), now);
        }
        assert_eq!((ep.sessions(), ep.half_open()), (2, 2));
        assert_eq!(ep.stats().half_open_full, 1);
        let mut events = Vec::new();
        ep.handle_timeout(now + timeout, &mut events);
        assert_eq!((ep.sessions(), ep.half_open()), (0, 0));
        assert_eq!(ep.stats().handshake_timeouts, 2);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Closed { .. })),
            "a handshake never authenticated: nothing to tell the engine"
        );
    }

    #[test]
    fn a_wrong_key_or_an_unknown_identity_never_authenticates() {
        let now = Instant::now();
        let mut ep = endpoint(EndpointConfig::default(), now);
        for (port, identity, key) in [(1, "dev1", [8u8; 16]), (2, "nobody", KEY)] {
            let mut c = client(identity, &key, now);
            let events = pump(&mut ep, &mut c, addr(port), now);
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, Event::Authenticated { .. } | Event::Plaintext { .. })),
                "{identity}: {events:?}"
            );
        }
        assert_eq!(ep.stats().handshakes, 0);
        assert_eq!(ep.stats().handshake_failures, 2);
        assert_eq!(ep.sessions(), 0);
    }

    #[test]
    fn garbage_is_dropped_and_an_established_session_survives_it() {
        let now = Instant::now();
        let mut ep = endpoint(EndpointConfig::default(), now);
        let mut events = Vec::new();
        for junk in [
            &b""[..],
            &[0x16; 13],
            &[0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 3, 1, 2, 3],
        ] {
            ep.handle_datagram(now, addr(9), junk, &mut events);
        }
        assert!(events.is_empty());
        assert_eq!((ep.sessions(), ep.stats().unexpected), (0, 3));
        let mut c = client("dev1", &KEY, now);
        let a = addr(10);
        pump(&mut ep, &mut c, a, now);
        for junk in [
            &[0x17u8, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 3, 1, 2, 3][..],
            &[0xff; 40],
        ] {
            ep.handle_datagram(now, a, junk, &mut events);
        }
        c.send(b"still here").expect("send");
        let events = pump(&mut ep, &mut c, a, now);
        assert_eq!(
            events,
            vec![Event::Plaintext {
                from: a,
                bytes: b"still here".to_vec()
            }]
        );
    }

    #[test]
    fn a_replayed_client_hello_is_refused_and_a_stale_cookie_is_not_taken() {
        let now = Instant::now();
        let mut ep = endpoint(EndpointConfig::default(), now);
        let mut c = client("dev1", &KEY, now);
        let a = addr(20);
        // The ClientHello with the cookie, as an attacker would record it.
        let mut recorded = Vec::new();
        let mut events = Vec::new();
        for d in c.drain().datagrams {
            ep.handle_datagram(now, a, &d, &mut events);
        }
        for e in events.drain(..) {
            if let Event::Send { bytes, .. } = e {
                c.handle_datagram(&bytes).expect("HelloVerifyRequest");
            }
        }
        let second = c.drain().datagrams;
        recorded.extend(second.iter().cloned());
        for d in &second {
            ep.handle_datagram(now, a, d, &mut events);
        }
        for e in events.drain(..) {
            if let Event::Send { bytes, .. } = e {
                let _ = c.handle_datagram(&bytes);
            }
        }
        pump(&mut ep, &mut c, a, now);
        assert!(c.is_connected());
        // Replayed from the same (spoofed) address while the cookie holds.
        for d in &recorded {
            ep.handle_datagram(now, a, d, &mut events);
        }
        assert_eq!(ep.stats().replayed_hellos, 1);
        assert!(events.is_empty(), "{events:?}");
        // Once the cookie's lifetime is over, it is only answered.
        let later = now + 3 * COOKIE_BUCKET;
        let mut other = endpoint(EndpointConfig::default(), now);
        for d in &recorded {
            other.handle_datagram(later, a, d, &mut events);
        }
        assert_eq!(other.sessions(), 0);
        assert_eq!(other.stats().cookies_sent, 1);
    }
}
