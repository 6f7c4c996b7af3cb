//! Certificates for DTLS devices: the gateway's own (ECDSA, for
//! ECDHE-ECDSA suites) and the CA its devices' client certificates must
//! chain to. dimpl hands the caller the peer's leaf certificate and leaves
//! every check to it; here the chain to the CA, the validity period and the
//! extended key usage (client authentication, when listed) are checked by
//! rustls's WebPKI verifier, already in the build for the broker's TLS,
//! and the identity is the subject's common name (CN).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

/// Why the certificate files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The CA could not make a verifier.
    #[error("the CA file cannot verify client certificates: {0}")]
    Verifier(String),
}

/// Why a device's certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertRefused {
    /// Not issued by the CA, expired or not yet valid, the wrong usage, or
    /// malformed.
    #[error("certificate not accepted: {0}")]
    Verify(String),
    /// It names no common name to be the device's identity.
    #[error("certificate has no usable common name (CN)")]
    NoCommonName,
}

/// The gateway's certificate and the CA its devices' certificates chain to.
pub struct CertAuth {
    /// The gateway's certificate and key (DER), as dimpl takes them.
    pub server: dimpl::DtlsCertificate,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for CertAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuth").finish_non_exhaustive()
    }
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> CertFileError {
    CertFileError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

impl CertAuth {
    /// Reads the gateway's certificate (`cert_file`, its first PEM
    /// certificate) and key (`key_file`, PKCS#8 or SEC1 ECDSA), and the CA
    /// certificates devices must chain to (`ca_file`, every PEM certificate).
    pub fn load(cert_file: &Path, key_file: &Path, ca_file: &Path) -> Result<Self, CertFileError> {
        let certificate = CertificateDer::pem_file_iter(cert_file)
            .map_err(|e| file_err(cert_file, e))?
            .next()
            .ok_or_else(|| file_err(cert_file, "no certificate"))?
            .map_err(|e| file_err(cert_file, e))?;
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_err(key_file, e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(ca_file).map_err(|e| file_err(ca_file, e))? {
            roots
                .add(ca.map_err(|e| file_err(ca_file, e))?)
                .map_err(|e| file_err(ca_file, e))?;
        }
        if roots.is_empty() {
            return Err(file_err(ca_file, "no certificate"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| CertFileError::Verifier(e.to_string()))?;
        Ok(Self {
            server: dimpl::DtlsCertificate {
                certificate: certificate.to_vec(),
                private_key: key.secret_der().to_vec(),
            },
            verifier,
        })
    }

    /// The identity of a device whose leaf certificate is `der`, at wall
    /// time `now`: its CN, once the certificate is verified against the CA.
    pub fn identity_of(&self, der: &[u8], now: UnixTime) -> Result<String, CertRefused> {
        let leaf = CertificateDer::from(der);
        self.verifier
            .verify_client_cert(&leaf, &[], now)
            .map_err(|e| CertRefused::Verify(e.to_string()))?;
        common_name(der).ok_or(CertRefused::NoCommonName)
    }
}

/// The subject's common name of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let cn = cert.tbs_certificate().subject().common_name().ok()??;
    let cn = String::from(cn);
    (!cn.is_empty() && cn.len() <= super::psk::MAX_IDENTITY_BYTES).then_some(cn)
}

/// dimpl's RustCrypto provider cut to what a certificate server needs: the
/// ECDHE-ECDSA suites and the P-256 and X25519 groups (fewer self-tests
/// when a handshake's `Config` is built).
pub(crate) fn cert_provider() -> &'static dimpl::crypto::CryptoProvider {
    static PROVIDER: std::sync::OnceLock<dimpl::crypto::CryptoProvider> =
        std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| {
        let mut provider = dimpl::crypto::rust_crypto::default_provider();
        let suites: Vec<_> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|cs| !cs.suite().is_psk())
            .collect();
        provider.cipher_suites = Box::leak(suites.into_boxed_slice());
        let groups: Vec<_> = provider
            .kx_groups
            .iter()
            .copied()
            .filter(|g| {
                matches!(
                    g.name(),
                    dimpl::NamedGroup::X25519 | dimpl::NamedGroup::Secp256r1
                )
            })
            .collect();
        provider.kx_groups = Box::leak(groups.into_boxed_slice());
        provider
    })
}
