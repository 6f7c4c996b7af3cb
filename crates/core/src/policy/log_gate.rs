//! At most one log line per period for each kind of refusal that input can
//! repeat at will (a flood of datagrams over their rate, of silent CONNECTs,
//! of `$SYS` publishes): every refusal is counted in `Stats`, and the log
//! says it is happening without becoming the flood's amplifier. Pure: the
//! period runs on the `now` the engine is given.

use std::time::{Duration, Instant};

/// How often one kind of refusal may be logged.
pub const LOG_PERIOD: Duration = Duration::from_secs(10);

/// One kind of refusal's log gate.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogGate {
    next: Option<Instant>,
    suppressed: u64,
}

impl LogGate {
    /// `Some(n)` when a line may be written at `now`, `n` being how many
    /// were held back since the last one; `None` (and one more held back)
    /// otherwise.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.next {
            Some(next) if now < next => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.next = Some(now + LOG_PERIOD);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A gate for refusals decided where no time is at hand: a line at the
/// 1st, 2nd, 4th, 8th… refusal, so a flood of n writes log₂ n lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountGate {
    seen: u64,
}

impl CountGate {
    /// `Some(total so far)` when this refusal is to be logged.
    pub fn allow(&mut self) -> Option<u64> {
        self.seen = self.seen.saturating_add(1);
        self.seen.is_power_of_two().then_some(self.seen)
    }
}

/// The engine's gates, one per kind of repeated refusal.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogGates {
    /// Datagrams over their bucket's rate.
    pub rate_limited: LogGate,
    /// Sessions that never proved they hear the gateway, evicted at
    /// `max_clients`.
    pub unproven_evicted: LogGate,
    /// Publishes to `$SYS/…` refused.
    pub sys_refused: CountGate,
    /// CONNECTs and wake-ups refused by the identity binding.
    pub identity_mismatch: LogGate,
    /// CONNECTs refused (protocol id, client id, `max_clients`).
    pub connect_refused: LogGate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_held_back() {
        let mut gate = LogGate::default();
        let t0 = Instant::now();
        assert_eq!(gate.allow(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(gate.allow(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(gate.allow(t0 + LOG_PERIOD), Some(5));
        assert_eq!(gate.allow(t0 + LOG_PERIOD), None);
    }

    #[test]
    fn powers_of_two() {
        let mut gate = CountGate::default();
        let logged: Vec<u64> = (0..100).filter_map(|_| gate.allow()).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64]);
    }
}
