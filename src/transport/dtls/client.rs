//! The device side of DTLS, sans-IO: one dimpl client session with a PSK
//! or a client certificate (the gateway's certificate checked against a CA
//! by rustls's WebPKI verifier, as the gateway checks the device's),
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

/// A device's certificate and key (DER), and the CA certificates (DER) the
/// gateway's certificate must chain to.
#[derive(Clone, PartialEq, Eq)]
pub struct CertCredentials {
    /// The device's certificate; its CN is the identity the gateway sees.
    pub certificate: Vec<u8>,
    /// Its private key (PKCS#8 or SEC1 ECDSA).
    pub private_key: Vec<u8>,
    /// The CA certificates that may issue the gateway's.
    pub ca: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CertCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertCredentials")
            .field("identity", &super::certs::common_name(&self.certificate))
            .finish_non_exhaustive()
    }
}

impl CertCredentials {
    /// Reads PEM files: the device's certificate (the first in the file),
    /// its key, and the CA certificates.
    pub fn load(
        cert_file: &std::path::Path,
        key_file: &std::path::Path,
        ca_file: &std::path::Path,
    ) -> Result<Self, DtlsClientError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |p: &std::path::Path, e: &dyn std::fmt::Display| {
            DtlsClientError::Config(format!("{}: {e}", p.display()))
        };
        let certificate = CertificateDer::pem_file_iter(cert_file)
            .map_err(|e| bad(cert_file, &e))?
            .next()
            .ok_or_else(|| bad(cert_file, &"no certificate"))?
            .map_err(|e| bad(cert_file, &e))?
            .to_vec();
        let private_key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| bad(key_file, &e))?
            .secret_der()
            .to_vec();
        let ca = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| bad(ca_file, &e))?
            .map(|c| c.map(|c| c.to_vec()).map_err(|e| bad(ca_file, &e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            certificate,
            private_key,
            ca,
        })
    }

    /// The identity the gateway will see: the certificate's CN.
    pub fn identity(&self) -> Option<String> {
        super::certs::common_name(&self.certificate)
    }
}

/// Checks the gateway's certificate against the CA and its address.
struct ServerCheck {
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    name: rustls::pki_types::ServerName<'static>,
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
    server_check: Option<ServerCheck>,
    refused: Option<String>,
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
            server_check: None,
            refused: None,
        })
    }

    /// A session with a client certificate (ECDHE-ECDSA) to the gateway at
    /// `gateway`, whose certificate must chain to `cert`'s CA and name that
    /// address.
    pub fn with_certificate(
        cert: &CertCredentials,
        gateway: std::net::IpAddr,
        mtu: usize,
        now: Instant,
    ) -> Result<Self, DtlsClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &cert.ca {
            roots
                .add(rustls::pki_types::CertificateDer::from(ca.clone()))
                .map_err(|e| DtlsClientError::Config(format!("CA: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| DtlsClientError::Config(format!("CA: {e}")))?;
        let config = Config::builder()
            .with_crypto_provider(super::certs::cert_provider().clone())
            .mtu(mtu)
            .build()
            .map_err(|e| DtlsClientError::Config(e.to_string()))?;
        let own = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let mut dtls = Dtls::new_12(Arc::new(config), own, now);
        dtls.set_active(true);
        dtls.handle_timeout(now)
            .map_err(|e| DtlsClientError::Session(e.to_string()))?;
        Ok(Self {
            dtls,
            connected: false,
            closed: false,
            buf: vec![0; mtu.max(2048)],
            server_check: Some(ServerCheck {
                verifier,
                name: rustls::pki_types::ServerName::IpAddress(gateway.into()),
            }),
            refused: None,
        })
    }

    /// Why the gateway's certificate was refused, if it was (the session
    /// is then not to be used).
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
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
                Output::Connected => self.connected = self.refused.is_none(),
                Output::PeerCert(der) => {
                    if let Some(check) = &self.server_check {
                        let leaf = rustls::pki_types::CertificateDer::from(der);
                        let now = rustls::pki_types::UnixTime::now();
                        if let Err(e) =
                            check
                                .verifier
                                .verify_server_cert(&leaf, &[], &check.name, &[], now)
                        {
                            self.refused = Some(e.to_string());
                        }
                    }
                }
                Output::ApplicationData(d) => out.plaintext.push(d.to_vec()),
                Output::CloseNotify => self.closed = true,
                Output::BufferTooSmall { .. } => break,
                _ => {}
            }
        }
        out
    }
}
