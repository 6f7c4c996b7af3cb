//! The device side of DTLS, sans-IO: one dimpl client session with a PSK,
//! for the tools' `--dtls` mode (`client::dtls` runs it on a socket) and
//! for testing the gateway's endpoint without a network.

use std::sync::Arc;
use std::time::Instant;

use dimpl::{Config, Dtls, Output, PskResolver};

/// A device's pre-shared key and the identity it is filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskCredentials {
    /// The PSK identity (the gateway binds the client id to it).
    pub identity: String,
    /// The key.
    pub key: Vec<u8>,
}

struct OwnKey(Vec<u8>);

impl PskResolver for OwnKey {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.clone())
    }
}

/// What the session produced since it was last drained.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientOutput {
    /// Datagrams to send to the gateway.
    pub datagrams: Vec<Vec<u8>>,
    /// Plaintext (MQTT-SN messages) from the gateway.
    pub plaintext: Vec<Vec<u8>>,
    /// When to call [`DtlsClient::handle_timeout`] next.
    pub timer: Option<Instant>,
}

/// Why the client session failed (fatal: start a new one).
#[derive(Debug, thiserror::Error)]
pub enum DtlsClientError {
    /// dimpl refused the configuration.
    #[error("DTLS configuration: {0}")]
    Config(String),
    /// The handshake or the session failed.
    #[error("DTLS session failed: {0}")]
    Session(String),
}

/// One DTLS 1.2 PSK client session.
pub struct DtlsClient {
    dtls: Dtls,
    connected: bool,
    closed: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for DtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClient")
            .field("connected", &self.connected)
            .finish()
    }
}

impl DtlsClient {
    /// A session that starts its handshake at `now` (its ClientHello is in
    /// the first [`DtlsClient::drain`]).
    pub fn new(psk: &PskCredentials, mtu: usize, now: Instant) -> Result<Self, DtlsClientError> {
        let config = Config::builder()
            .with_crypto_provider(super::endpoint::psk_provider().clone())
            .mtu(mtu)
            .with_psk_client(
                psk.identity.as_bytes().to_vec(),
                Arc::new(OwnKey(psk.key.clone())),
            )
            .build()
            .map_err(|e| DtlsClientError::Config(e.to_string()))?;
        let mut dtls = Dtls::new_12_psk(Arc::new(config), now);
        dtls.set_active(true);
        // dimpl panics on a packet handled before its first timeout call.
        dtls.handle_timeout(now)
            .map_err(|e| DtlsClientError::Session(e.to_string()))?;
        Ok(Self {
            dtls,
            connected: false,
            closed: false,
            buf: vec![0; mtu.max(2048)],
        })
    }

    /// Whether the handshake completed.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the gateway closed the session.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// One datagram from the gateway.
    pub fn handle_datagram(&mut self, datagram: &[u8]) -> Result<(), DtlsClientError> {
        self.dtls
            .handle_packet(datagram)
            .map_err(|e| DtlsClientError::Session(e.to_string()))
    }

    /// Runs the timers due at `now` (retransmissions).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsClientError> {
        self.dtls
            .handle_timeout(now)
            .map_err(|e| DtlsClientError::Session(e.to_string()))
    }

    /// Encrypts one MQTT-SN message (only once connected).
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), DtlsClientError> {
        self.dtls
            .send_application_data(plaintext)
            .map(drop)
            .map_err(|e| DtlsClientError::Session(e.to_string()))
    }

    /// Everything the session has to send or hand over now.
    pub fn drain(&mut self) -> ClientOutput {
        let mut out = ClientOutput::default();
        loop {
            match self.dtls.poll_output(&mut self.buf) {
                Output::Packet(p) => out.datagrams.push(p.to_vec()),
                Output::BufferTooSmall { needed } if needed <= 65_536 => {
                    self.buf.resize(needed, 0);
                }
                Output::Timeout(t) => {
                    out.timer = Some(t);
                    break;
                }
                Output::Connected => self.connected = true,
                Output::ApplicationData(d) => out.plaintext.push(d.to_vec()),
                Output::CloseNotify => self.closed = true,
                Output::BufferTooSmall { .. } => break,
                _ => {}
            }
        }
        out
    }
}
