//! Per-source packet rate limiting: a token bucket per link source, checked
//! before a datagram is decoded, so one flooding address cannot starve the
//! others of the engine's time. Owned here because the engine reads no clock:
//! buckets refill from the `now` the caller passes, so the limiter is as
//! deterministic (and as testable with a virtual clock) as the rest of `core/`.
//!
//! A source is the link address without its port: the IP address for UDP
//! (a flooder cannot dodge the limit by changing its source port), the radio
//! address on a serial dongle, the port itself on a raw or SLIP link. Devices
//! behind a forwarder share their forwarder's bucket (the node id is inside
//! the datagram, and the check comes before decoding).
//!
//! Memory is bounded whatever the number of (spoofed) sources: the table is
//! two generations of at most `capacity / 2` entries each. A source seen in
//! the older generation moves to the newer one; when the newer one is full,
//! the older one is forgotten. A forgotten source starts again with a full
//! bucket, which is what an idle source would have anyway; a busy source is
//! touched on every datagram and so stays in the newer generation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::peer::LinkAddr;

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

/// One source's bucket: tokens in millionths, and when it was last refilled.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    micros: u64,
    at: Instant,
}

/// The limiter's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained datagrams per second per source; 0 turns the limiter off.
    pub packets_per_sec: u32,
    /// Datagrams a source may send at once after being idle (≥ 1 when on).
    pub burst: u32,
}

/// The per-source token buckets. See the module documentation.
#[derive(Debug)]
pub struct SourceLimiter {
    current: HashMap<SourceKey, Bucket>,
    previous: HashMap<SourceKey, Bucket>,
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
        let full = u64::from(limit.burst.max(1)) * TOKEN;
        let bucket = match self.current.get_mut(&key) {
            Some(b) => b,
            None => {
                let moved = self.previous.remove(&key).unwrap_or(Bucket {
                    micros: full,
                    at: now,
                });
                if self.current.len() >= self.generation_cap {
                    self.previous = std::mem::take(&mut self.current);
                }
                self.current.entry(key).or_insert(moved)
            }
        };
        // Refill for the time passed (a clock that went back refills nothing).
        let elapsed = now.saturating_duration_since(bucket.at);
        bucket.at = bucket.at.max(now);
        bucket.micros = bucket
            .micros
            .saturating_add(refill(elapsed, limit.packets_per_sec))
            .min(full);
        if bucket.micros >= TOKEN {
            bucket.micros -= TOKEN;
            true
        } else {
            false
        }
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
