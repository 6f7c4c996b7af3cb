//! Reconnect delays for the bridge: exponential backoff with jitter, pure and
//! deterministic given a seed.
//!
//! The delay before attempt `n` (counting from 0 after the last successful
//! connection) is drawn uniformly from `[d/2, d]`, where
//! `d = min(max, min · 2ⁿ)` ("equal jitter"): never below half the nominal
//! delay, so a flapping broker is not hammered, and spread out so a fleet of
//! gateways does not reconnect in lockstep. The randomness is a tiny xorshift
//! generator seeded from the clock and process id, to avoid a dependency.

use std::time::Duration;

/// Backoff state: the current attempt count and the random generator.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: XorShift,
}

impl Backoff {
    /// A backoff between `min` and `max` (`min` is raised to at least 1 ms
    /// and `max` to at least `min`), with the given random seed.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            attempt: 0,
            rng: XorShift::new(seed),
        }
    }

    /// A seed that differs between processes and runs.
    pub fn clock_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15
    }

    /// The delay to wait before the next attempt; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let nominal = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let span = (nominal - half).as_nanos() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.rng.next() % (span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Forget past failures (call after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Marsaglia's xorshift64: not cryptographic, only for spreading delays.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is the one fixed point of xorshift.
        Self(if seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_within_jitter_bounds_and_cap() {
        let mut b = Backoff::new(S, 60 * S, 42);
        for n in 0..12u32 {
            let nominal = (S * 2u32.pow(n)).min(60 * S);
            let d = b.next_delay();
            assert!(d >= nominal / 2 && d <= nominal, "attempt {n}: {d:?}");
        }
        // Far past the cap, still capped and no overflow.
        for _ in 0..100 {
            assert!(b.next_delay() <= 60 * S);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(S, 60 * S, 7);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= S);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(8 * S, 8 * S, Backoff::clock_seed());
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn zero_seed_still_random() {
        let mut r = XorShift::new(0);
        assert_ne!(r.next(), 0);
        assert_ne!(r.next(), r.next());
    }
}
