//! What `/metrics` shows of the DTLS listeners: each endpoint's counters
//! (handshakes, and every refusal: cookies sent, failures, timeouts, the
//! bounds reached, replays, datagrams dropped) and its sessions now.

use std::net::SocketAddr;

use super::endpoint::EndpointStats;
use crate::ops::exposition::{Collect, Exposition};

/// One DTLS listener's figures, as of its last wake-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtlsCounts {
    /// The counters.
    pub stats: EndpointStats,
    /// Sessions kept (established and mid-handshake).
    pub sessions: usize,
    /// Sessions mid-handshake.
    pub half_open: usize,
}

/// Every DTLS listener's figures (the section is left out without any).
#[derive(Debug, Clone)]
pub struct DtlsFigures {
    /// (bound address, figures) per listener.
    pub listeners: Vec<(SocketAddr, DtlsCounts)>,
}

impl Collect for DtlsFigures {
    fn collect(&self, out: &mut Exposition) {
        if self.listeners.is_empty() {
            return;
        }
        let labels: Vec<String> = self.listeners.iter().map(|(a, _)| a.to_string()).collect();
        let mut f = out.counter(
            "sngate_dtls_handshakes_total",
            "DTLS handshakes completed, by listener.",
        );
        for ((_, c), l) in self.listeners.iter().zip(&labels) {
            f.sample(&[("listener", l)], c.stats.handshakes);
        }
        let mut f = out.counter(
            "sngate_dtls_refused_total",
            "DTLS datagrams and handshakes refused, by listener and reason: cookie (a HelloVerifyRequest sent instead), failed (wrong key, unknown identity, bad message), timeout, half_open_full, sessions_full, replayed, unexpected (not a ClientHello from an address with no session), idle (session dropped), no_session (a reply with no session to carry it).",
        );
        for ((_, c), l) in self.listeners.iter().zip(&labels) {
            let s = c.stats;
            for (reason, n) in [
                ("cookie", s.cookies_sent),
                ("failed", s.handshake_failures),
                ("timeout", s.handshake_timeouts),
                ("half_open_full", s.half_open_full),
                ("sessions_full", s.sessions_full),
                ("replayed", s.replayed_hellos),
                ("unexpected", s.unexpected),
                ("idle", s.idle_closed),
                ("no_session", s.no_session),
            ] {
                f.sample(&[("listener", l), ("reason", reason)], n);
            }
        }
        let mut f = out.gauge(
            "sngate_dtls_sessions",
            "DTLS sessions kept now, by listener and state (established, handshake).",
        );
        for ((_, c), l) in self.listeners.iter().zip(&labels) {
            let established = c.sessions.saturating_sub(c.half_open);
            f.sample(
                &[("listener", l), ("state", "established")],
                established as u64,
            );
            f.sample(
                &[("listener", l), ("state", "handshake")],
                c.half_open as u64,
            );
        }
    }
}
