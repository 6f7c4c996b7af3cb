//! The `[broker]` section: the embedded MQTT broker's listeners (plain and
//! TLS), bounds, users and anonymous policy, with their defaults and rules.
//! `crate::broker` runs what this describes; a user's password hash is
//! checked here with `crate::security::PasswordHash`, which both depend on.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::Deserialize;

use super::{ConfigError, MIB};
use crate::security::PasswordHash;

/// `[broker]`: the embedded MQTT 3.1.1 broker. Local programs (Node-RED, Home
/// Assistant, mosquitto_sub) connect over TCP and share topics, retained
/// messages and the upstream bridge with the MQTT-SN devices.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// TCP addresses to listen on; empty turns the broker off. Default:
    /// `["127.0.0.1:1883"]` (this machine only).
    pub listen: Vec<SocketAddr>,
    /// Most simultaneous connections; more are refused at once. Default: 1000.
    pub max_connections: usize,
    /// Largest MQTT packet accepted from a client, in bytes (≥ 128); a larger
    /// one closes the connection. Default: 1 MiB.
    pub max_packet_bytes: usize,
    /// QoS 1/2 messages sent to one client and not yet acknowledged (1..=65535).
    /// Default: 20 (as mosquitto).
    pub max_inflight_messages: u16,
    /// Messages waiting to be written to one connected client; beyond it new
    /// ones are dropped and counted (a client that does not read cannot grow
    /// memory). Default: 1000.
    pub max_queued_messages: usize,
    /// Seconds a new connection has to send CONNECT (≥ 1). Default: 10.
    pub connect_timeout_secs: u32,
    /// Seconds between `$SYS/broker/…` status messages (retained); 0 turns
    /// them off. Default: 10.
    pub sys_interval_secs: u32,
    /// `[[broker.users]]`: who may connect with a user name and password.
    /// Default: none.
    pub users: Vec<BrokerUser>,
    /// Let clients in without a user name. Unset (the default): allowed
    /// only in "local-only mode" — no `users` configured and every listener
    /// (`listen` and `tls_listen`) on a loopback address, as the default
    /// listener is — and refused once `users` are configured. Modelled on
    /// mosquitto 2.0's local-only mode, which applies only when no listener
    /// is configured; here listeners set on loopback count too. A non-loopback listener with no `users` and this unset is
    /// a configuration error: add `[[broker.users]]` or set it to `true`
    /// (which then logs a warning at start).
    pub allow_anonymous: Option<bool>,
    /// TCP addresses for MQTT over TLS (e.g. `["0.0.0.0:8883"]`), served
    /// with `tls_cert_file` and `tls_key_file`. Default: none.
    pub tls_listen: Vec<SocketAddr>,
    /// PEM file with the broker's certificate chain (the server certificate
    /// first). Required with `tls_listen`.
    pub tls_cert_file: Option<String>,
    /// PEM file with the private key of `tls_cert_file` (PKCS#8, PKCS#1 or
    /// SEC1). Required with `tls_listen`.
    pub tls_key_file: Option<String>,
    /// Payload and topic bytes waiting to be written to one connected
    /// client (or, at QoS 1/2, to be acknowledged by it), as mosquitto's
    /// `max_queued_bytes`; beyond it new messages for that client are
    /// dropped and counted (`slow_client`), so a client that does not read
    /// holds at most this much and never slows the others. A message is
    /// always taken when nothing is queued. Default: 8 MiB.
    pub max_queued_bytes: usize,
    /// The same bytes summed over every connection: beyond it a message for
    /// any client that already has something queued is dropped and counted
    /// (`slow_client`). Default: 32 MiB.
    pub max_queued_bytes_total: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1883))],
            max_connections: 1000,
            max_packet_bytes: MIB,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            connect_timeout_secs: 10,
            sys_interval_secs: 10,
            users: Vec::new(),
            allow_anonymous: None,
            tls_listen: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            max_queued_bytes: 8 * MIB,
            max_queued_bytes_total: 32 * MIB,
        }
    }
}

impl BrokerConfig {
    /// Whether clients without a user name are let in: `allow_anonymous`,
    /// or when unset, whether the broker is in local-only mode (no users,
    /// every listener on loopback).
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or(self.users.is_empty() && self.first_non_loopback().is_none())
    }

    /// The first listener (plain, then TLS) that is not on a loopback
    /// address, as its dotted key and address, if any.
    fn first_non_loopback(&self) -> Option<(String, SocketAddr)> {
        [
            ("broker.listen", &self.listen),
            ("broker.tls_listen", &self.tls_listen),
        ]
        .into_iter()
        .find_map(|(key, addrs)| {
            addrs
                .iter()
                .enumerate()
                .find(|(_, a)| !is_loopback(a.ip()))
                .map(|(i, a)| (format!("{key}[{i}]"), *a))
        })
    }

    /// Whether the broker runs at all (some listener configured).
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty() || !self.tls_listen.is_empty()
    }
}

/// `[[broker.users]]`: one user of the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    /// The user name clients present.
    pub name: String,
    /// The password's hash, as `sngate passwd` prints it
    /// (`$pbkdf2-sha256$i=…,l=32$…$…`); never the password itself.
    pub password_hash: String,
}

/// Checks `[broker]`: bounds, users and their hashes, the anonymous policy
/// and TLS files.
pub(super) fn validate_broker(b: &BrokerConfig) -> Result<(), ConfigError> {
    if b.max_packet_bytes < 128 {
        return Err(ConfigError::invalid(
            "broker.max_packet_bytes",
            format!("{} is below 128", b.max_packet_bytes),
        ));
    }
    if b.max_inflight_messages == 0 {
        return Err(ConfigError::invalid(
            "broker.max_inflight_messages",
            "must be at least 1",
        ));
    }
    if b.max_queued_messages == 0 {
        return Err(ConfigError::invalid(
            "broker.max_queued_messages",
            "must be at least 1",
        ));
    }
    if b.connect_timeout_secs == 0 {
        return Err(ConfigError::invalid(
            "broker.connect_timeout_secs",
            "must be at least 1",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, user) in b.users.iter().enumerate() {
        if user.name.is_empty() {
            return Err(ConfigError::invalid(
                format!("broker.users[{i}].name"),
                "must not be empty",
            ));
        }
        if !names.insert(user.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("broker.users[{i}].name"),
                format!("{:?} is listed twice", user.name),
            ));
        }
        if let Err(e) = user.password_hash.parse::<PasswordHash>() {
            return Err(ConfigError::invalid(
                format!("broker.users[{i}].password_hash"),
                e.to_string(),
            ));
        }
    }
    if b.users.is_empty()
        && b.allow_anonymous.is_none()
        && let Some((key, addr)) = b.first_non_loopback()
    {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{addr} is not a loopback address, and with no [[broker.users]] anonymous \
                 clients are let in only while every listener is on loopback (local-only \
                 mode): add [[broker.users]] (`sngate passwd --user NAME` \
                 prints an entry), or set [broker] allow_anonymous = true to let in anyone \
                 who can reach it"
            ),
        ));
    }
    if b.users.is_empty() && b.allow_anonymous == Some(false) && b.enabled() {
        return Err(ConfigError::invalid(
            "broker.allow_anonymous",
            "false with no [[broker.users]]: no client could connect",
        ));
    }
    if !b.tls_listen.is_empty() {
        for (key, value) in [
            ("broker.tls_cert_file", &b.tls_cert_file),
            ("broker.tls_key_file", &b.tls_key_file),
        ] {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::invalid(key, "required with broker.tls_listen"));
            }
        }
    }
    Ok(())
}

/// Is `ip` a loopback address (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`
/// as a dual-stack socket spells an IPv4 one)? The broker's local-only mode
/// is decided with this.
pub(crate) fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}
