//! Fair admission: two kinds of token bucket, refilled from the `now` the
//! caller passes (the engine reads no clock, so the limiter is as
//! deterministic, and as testable with a virtual clock, as the rest of
//! `core/`).
//!
//! - **A bucket per established session** ([`TokenBucket`], held by the
//!   session itself): every datagram from a peer that has a session is
//!   charged to that session alone, so a device flooding from one port of an
//!   address cannot starve another device behind the same address (a NAT, a
//!   forwarder, a test host). Acknowledgements of what the gateway sent
//!   (PUBACK, PUBREC, PUBCOMP, REGACK, PINGRESP) are not charged: the
//!   gateway has at most one message in flight per session, so an honest
//!   device's acknowledgements are bounded by what the gateway sends, and
//!   one the gateway did not ask for is dropped as unmatched at about the
//!   cost of the check.
//! - **A bucket per source address** ([`SourceLimiter`]) for the datagrams
//!   that create state or come from no session: CONNECT and SEARCHGW from
//!   anyone, and everything (a wake-up PINGREQ from a new address, a QoS −1
//!   publish, garbage) from a peer with no session. These are what a flood
//!   of spoofed or silent clients is made of, so they are what an address
//!   is limited in; its established devices are not affected.
//!
//! [`budget_for`] says which bucket a decoded datagram is charged to.
//!
//! A source address is the link address without its port: the IP address
//! for UDP (a flooder cannot dodge the limit by changing its source port),
//! the radio address on a serial dongle, the port itself on a raw or SLIP
//! link. Devices behind a forwarder share their forwarder's address bucket
//! until they have a session, then each has its own.
//!
//! Memory is bounded whatever the number of (spoofed) sources: the address
//! table is two generations of at most `capacity / 2` entries each. A source
//! seen in the older generation moves to the newer one; when the newer one
//! is full, the older one is forgotten. A forgotten source starts again with
//! a full bucket, which is what an idle source would have anyway; a busy
//! source is touched on every datagram and so stays in the newer generation.
//! Session buckets live and die with their sessions (at most `max_clients`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::peer::LinkAddr;
use sngate_wire::v1::Packet;

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    /// A UDP source IP (any port, any listener).
    Ip(IpAddr),
    /// A remote radio on serial port `port`.
    Radio(u16, u64),
    /// A serial port with one peer.
    Serial(u16),
}

impl SourceKey {
    fn of(link: &LinkAddr) -> Self {
        match link {
            LinkAddr::Udp { addr, .. } => SourceKey::Ip(addr.ip()),
            LinkAddr::Radio { port, addr } => SourceKey::Radio(*port, *addr),
            LinkAddr::Serial { port } => SourceKey::Serial(*port),
        }
    }
}

/// One token bucket: tokens in millionths, and when it was last refilled
/// (`None`: never used, so full).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBucket {
    micros: u64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// Takes a token at `now` under `limit` if there is one. Always true
    /// when the limit is off.
    pub fn take(&mut self, now: Instant, limit: RateLimit) -> bool {
        if limit.packets_per_sec == 0 {
            return true;
        }
        let full = u64::from(limit.burst.max(1)) * TOKEN;
        let (micros, at) = match self.at {
            None => (full, now),
            Some(at) => (self.micros, at),
        };
        // Refill for the time passed (a clock that went back refills nothing).
        let elapsed = now.saturating_duration_since(at);
        self.at = Some(at.max(now));
        self.micros = micros
            .saturating_add(refill(elapsed, limit.packets_per_sec))
            .min(full);
        if self.micros >= TOKEN {
            self.micros -= TOKEN;
            true
        } else {
            false
        }
    }
}

/// The limiter's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained datagrams per second per source; 0 turns the limiter off.
    pub packets_per_sec: u32,
    /// Datagrams a source may send at once after being idle (≥ 1 when on).
    pub burst: u32,
}

/// The per-address token buckets. See the module documentation.
#[derive(Debug)]
pub struct SourceLimiter {
    current: HashMap<SourceKey, TokenBucket>,
    previous: HashMap<SourceKey, TokenBucket>,
    generation_cap: usize,
}

/// A token, in the buckets' unit.
const TOKEN: u64 = 1_000_000;

impl SourceLimiter {
    /// A limiter remembering at most `capacity` sources (at least 2).
    pub fn new(capacity: usize) -> Self {
        SourceLimiter {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation_cap: (capacity / 2).max(1),
        }
    }

    /// Sources remembered now (never more than the capacity).
    pub fn tracked(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether a datagram from `link` may be taken at `now` under `limit`;
    /// takes a token if so. Always true when the limit is off.
    pub fn admit(&mut self, now: Instant, link: &LinkAddr, limit: RateLimit) -> bool {
        if limit.packets_per_sec == 0 {
            return true;
        }
        let key = SourceKey::of(link);
        let bucket = match self.current.get_mut(&key) {
            Some(b) => b,
            None => {
                let moved = self.previous.remove(&key).unwrap_or_default();
                if self.current.len() >= self.generation_cap {
                    self.previous = std::mem::take(&mut self.current);
                }
                self.current.entry(key).or_insert(moved)
            }
        };
        bucket.take(now, limit)
    }
}

/// Which bucket a datagram is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The sender's session's own bucket.
    Session,
    /// The sender's source address's bucket (state-creating datagrams, and
    /// everything from a peer with no session).
    Address,
    /// None: an acknowledgement from a session (bounded by what the gateway
    /// sent it).
    Free,
}

/// The bucket for a datagram that decoded to `packet` (`None`: it did not
/// decode) from a peer that has a session (`established`) or not.
pub fn budget_for(packet: Option<&Packet>, established: bool) -> Budget {
    match packet {
        Some(Packet::Connect { .. } | Packet::SearchGw { .. }) => Budget::Address,
        _ if !established => Budget::Address,
        Some(
            Packet::PubAck { .. }
            | Packet::PubRec { .. }
            | Packet::PubComp { .. }
            | Packet::RegAck { .. }
            | Packet::PingResp,
        ) => Budget::Free,
        _ => Budget::Session,
    }
}

/// Tokens (in millionths) earned in `elapsed` at `rate` per second.
fn refill(elapsed: Duration, rate: u32) -> u64 {
    let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
    micros.saturating_mul(u64::from(rate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn udp(s: &str) -> LinkAddr {
        LinkAddr::Udp {
            listener: 0,
            addr: s.parse::<SocketAddr>().unwrap(),
        }
    }

    const LIMIT: RateLimit = RateLimit {
        packets_per_sec: 10,
        burst: 5,
    };

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut l = SourceLimiter::new(100);
        let t0 = Instant::now();
        let a = udp("10.0.0.1:1000");
        let taken = (0..20).filter(|_| l.admit(t0, &a, LIMIT)).count();
        assert_eq!(taken, 5);
        // 10/s: one token every 100 ms.
        assert!(!l.admit(t0 + Duration::from_millis(99), &a, LIMIT));
        assert!(l.admit(t0 + Duration::from_millis(100), &a, LIMIT));
        assert!(!l.admit(t0 + Duration::from_millis(100), &a, LIMIT));
        // Idle for long: back to the burst, no more.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| l.admit(later, &a, LIMIT)).count(), 5);
    }

    #[test]
    fn sources_are_independent_and_ports_do_not_matter() {
        let mut l = SourceLimiter::new(100);
        let t0 = Instant::now();
        for port in 0..5 {
            assert!(l.admit(t0, &udp(&format!("10.0.0.1:{port}")), LIMIT));
        }
        assert!(!l.admit(t0, &udp("10.0.0.1:9"), LIMIT));
        assert!(l.admit(t0, &udp("10.0.0.2:9"), LIMIT));
        let radio = LinkAddr::Radio { port: 0, addr: 7 };
        assert!(l.admit(t0, &radio, LIMIT));
    }

    #[test]
    fn off_admits_everything() {
        let mut l = SourceLimiter::new(100);
        let off = RateLimit {
            packets_per_sec: 0,
            burst: 0,
        };
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| l.admit(t0, &udp("10.0.0.1:1"), off)));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn the_table_stays_bounded_and_a_busy_source_stays_limited() {
        let mut l = SourceLimiter::new(64);
        let t0 = Instant::now();
        let flooder = udp("10.9.9.9:1");
        for _ in 0..5 {
            l.admit(t0, &flooder, LIMIT);
        }
        for i in 0..100_000u32 {
            let spoofed = LinkAddr::Udp {
                listener: 0,
                addr: SocketAddr::from((i.to_be_bytes(), 1)),
            };
            l.admit(t0, &spoofed, LIMIT);
            // The flooder keeps sending between spoofed datagrams: never refilled.
            assert!(!l.admit(t0, &flooder, LIMIT), "flooder admitted at {i}");
            assert!(l.tracked() <= 64);
        }
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut l = SourceLimiter::new(8);
        let t0 = Instant::now() + Duration::from_secs(10);
        let a = udp("10.0.0.1:1");
        for _ in 0..5 {
            assert!(l.admit(t0, &a, LIMIT));
        }
        assert!(!l.admit(t0 - Duration::from_secs(5), &a, LIMIT));
        assert!(!l.admit(t0, &a, LIMIT));
    }
}
