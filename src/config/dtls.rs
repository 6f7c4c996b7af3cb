//! `[dtls]`: the DTLS listeners for devices (MQTT-SN over DTLS 1.2 with
//! pre-shared keys or client certificates), the psk file, the certificate
//! files, the rule binding a device's identity to
//! its client id, and the listener's bounds. `transport::dtls` opens what
//! this describes; a reload re-reads only the psk file (`reload.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::transport::dtls::endpoint::EndpointConfig;

/// `[dtls]`: DTLS listeners for devices. Off (no `listen`) by default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DtlsConfig {
    /// Addresses to listen on for DTLS, IPv4 (`"0.0.0.0:8883"`) or IPv6
    /// (`"[::]:8883"`). Default: none.
    pub listen: Vec<SocketAddr>,
    /// The pre-shared keys, in mosquitto's `psk_file` format
    /// (`identity:hexkey` per line); required with `listen` unless the
    /// certificate files are given. Re-read on SIGHUP.
    pub psk_file: Option<PathBuf>,
    /// The gateway's certificate (PEM), for devices with client
    /// certificates (ECDHE-ECDSA); with `key_file` and `ca_file`.
    pub cert_file: Option<PathBuf>,
    /// The gateway's private key (PEM, ECDSA P-256 or P-384).
    pub key_file: Option<PathBuf>,
    /// The CA (PEM) devices' client certificates must be issued by; a
    /// device's identity is its certificate's common name (CN).
    pub ca_file: Option<PathBuf>,
    /// Which client ids a device may connect as besides its PSK identity
    /// itself: a pattern where `%i` stands for the identity, `*` for any run
    /// of characters and `?` for one (`"%i/*"` also allows `dev1/temp` for
    /// `dev1`); a CONNECT with another gets CONNACK 0x03. Must contain
    /// `%i`. Default: `"%i"` (the identity only).
    pub client_id_pattern: String,
    /// Largest datagram sent, in bytes (handshake messages are fragmented
    /// to fit), 256..=65507. Default: 1200.
    pub mtu: usize,
    /// Most DTLS sessions at once (each a few KiB); a handshake beyond is
    /// dropped. Default: 2000.
    pub max_sessions: usize,
    /// Most handshakes in progress at once (only peers that answered a
    /// cookie count); one beyond is dropped. Default: 64.
    pub max_half_open: usize,
    /// A handshake not complete after this many seconds is dropped (≥ 1).
    /// Default: 10.
    pub handshake_timeout_secs: u32,
    /// A session that received nothing for this many seconds is dropped;
    /// the device makes a new one when it next speaks (≥ 1). Default: 3600.
    pub idle_timeout_secs: u32,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        let e = EndpointConfig::default();
        Self {
            listen: Vec::new(),
            psk_file: None,
            cert_file: None,
            key_file: None,
            ca_file: None,
            client_id_pattern: "%i".to_owned(),
            mtu: e.mtu,
            max_sessions: e.max_sessions,
            max_half_open: e.max_half_open,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 3600,
        }
    }
}

impl DtlsConfig {
    /// Checks `[dtls]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let certs = [&self.cert_file, &self.key_file, &self.ca_file];
        if certs.iter().any(|f| f.is_some()) && !certs.iter().all(|f| f.is_some()) {
            return Err(ConfigError::invalid(
                "dtls.cert_file",
                "cert_file, key_file and ca_file go together",
            ));
        }
        if !self.listen.is_empty() && self.psk_file.is_none() && self.cert_file.is_none() {
            return Err(ConfigError::invalid(
                "dtls.psk_file",
                "a psk_file (or cert_file, key_file and ca_file) is required when dtls.listen is set",
            ));
        }
        if !self.client_id_pattern.contains("%i") {
            return Err(ConfigError::invalid(
                "dtls.client_id_pattern",
                "must contain %i (the device's identity)",
            ));
        }
        if !(256..=65_507).contains(&self.mtu) {
            return Err(ConfigError::invalid("dtls.mtu", "must be 256..=65507"));
        }
        for (key, v) in [
            ("dtls.max_sessions", self.max_sessions),
            ("dtls.max_half_open", self.max_half_open),
            (
                "dtls.handshake_timeout_secs",
                self.handshake_timeout_secs as usize,
            ),
            ("dtls.idle_timeout_secs", self.idle_timeout_secs as usize),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The certificate files, when all three are given.
    pub fn cert_files(&self) -> Option<(&std::path::Path, &std::path::Path, &std::path::Path)> {
        match (&self.cert_file, &self.key_file, &self.ca_file) {
            (Some(c), Some(k), Some(a)) => Some((c, k, a)),
            _ => None,
        }
    }

    /// The listener's bounds.
    pub fn endpoint(&self) -> EndpointConfig {
        EndpointConfig {
            mtu: self.mtu,
            max_half_open: self.max_half_open,
            max_sessions: self.max_sessions,
            handshake_timeout: Duration::from_secs(u64::from(self.handshake_timeout_secs)),
            idle_timeout: Duration::from_secs(u64::from(self.idle_timeout_secs)),
        }
    }
}
