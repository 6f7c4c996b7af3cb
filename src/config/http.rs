//! The `[http]` section: the operations endpoint's address (`/metrics`,
//! `/status`, `/healthz`). `ops::http` serves it; a reload reports a change
//! as needing a restart.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[http]`: the operations endpoint: `/metrics` (Prometheus text format),
/// `/status` (JSON) and `/healthz`, GET only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on, e.g. `"127.0.0.1:9180"`. Default: none (no HTTP
    /// listener). It serves anyone who can reach it and has no
    /// authentication: keep it on loopback or a management network.
    pub listen: Option<SocketAddr>,
}
