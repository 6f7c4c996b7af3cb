//! TLS towards the upstream broker: the rustls client configuration (ring
//! provider) built from PEM files, once per distinct client certificate —
//! the `[upstream.tls]` one, and each `[[upstream.per_device.credentials]]`
//! entry's own — and shared (`Arc`) by every session that uses it.

use std::path::Path;
use std::sync::Arc;

use super::BridgeError;

/// The client configuration trusting the CA in `ca_file`, presenting
/// `cert` (certificate chain file, key file) when given.
pub(super) fn client_config(
    ca_file: &Path,
    cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, BridgeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    // Only the first call in the process installs it; later ones report
    // "already installed", which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let file_err = |path: &Path, reason: String| BridgeError::TlsFile {
        path: path.to_owned(),
        reason,
    };
    let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, BridgeError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| file_err(path, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(path, e.to_string()))?;
        if certs.is_empty() {
            return Err(file_err(path, "no PEM certificate in it".to_owned()));
        }
        Ok(certs)
    };

    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(read_certs(ca_file)?);
    if added == 0 {
        return Err(file_err(
            ca_file,
            "no usable CA certificate in it".to_owned(),
        ));
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match cert {
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| BridgeError::Tls(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
