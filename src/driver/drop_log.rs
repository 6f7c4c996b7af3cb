//! Drops and refusals at warn: after every step the driver hands the
//! engine's counters to [`DropLog`], which writes one line per reason (a
//! drop reason, or a configured limit something was refused at) whose
//! count grew — at once for the first, then at most one per
//! [`LOG_PERIOD`] per reason, with how many more happened meanwhile — so an
//! operator at the default level sees that messages are being refused and
//! why, and a flood cannot flood the log. The engine's own debug lines say
//! which client and which topic. Pure: the time is passed in.

use std::time::Instant;

use tracing::warn;

use crate::core::log_gate::{LOG_PERIOD, LogGate};
use crate::core::{DropReason, LimitHit, Stats};

/// What an operator reads for each reason.
pub fn describe(reason: DropReason) -> &'static str {
    match reason {
        DropReason::Malformed => "a datagram that did not decode",
        DropReason::OutOfState => {
            "a packet that makes no sense in its sender's state (e.g. a PUBLISH from a sleeping client)"
        }
        DropReason::UnknownPeer => "a packet from an address with no session",
        DropReason::UnmatchedAck => "an acknowledgement that matches nothing in flight",
        DropReason::QosMinusOneRefused => {
            "a QoS -1 PUBLISH refused (disabled, or to an unknown predefined topic id)"
        }
        DropReason::QueueFull => "a message for a device whose queue is full",
        DropReason::RetriesExhausted => "a message a device never acknowledged",
        DropReason::RefusedByDevice => "a message the device refused",
        DropReason::TooLarge => "a message larger than the link or max_packet_bytes allows",
        DropReason::SessionGone => "a message for a device that left with a clean session",
        DropReason::UpstreamFull => "a QoS 0 message the upstream bridge had no room for",
        DropReason::ShuttingDown => "new work while shutting down",
        DropReason::NotAdmitted => "a device the admission rules do not allow",
        DropReason::AclDenied => "a publish, subscription or delivery the ACL refused",
        DropReason::RateLimited => "datagrams over their rate limit",
        DropReason::UpstreamRefused => "a message the upstream broker refuses",
        DropReason::NoSubscription => {
            "a message on a device's session that matches no subscription"
        }
        DropReason::SysReserved => "a publish to $SYS/ (the broker's own topics)",
        DropReason::IdentityMismatch => {
            "a CONNECT, takeover or wake-up whose client id the peer's DTLS identity may not use"
        }
    }
}

/// The drop and limit counters last logged, and a gate for each.
#[derive(Debug, Default)]
pub struct DropLog {
    logged: [u64; DropReason::ALL.len()],
    gates: [LogGate; DropReason::ALL.len()],
    limits_logged: [u64; LimitHit::ALL.len()],
    limit_gates: [LogGate; LimitHit::ALL.len()],
}

/// One gated counter: a line when it grew and its gate lets one through;
/// returns how much it grew since the last line.
fn due_one(now: Instant, total: u64, logged: &mut u64, gate: &mut LogGate) -> Option<u64> {
    if total <= *logged || gate.allow(now).is_none() {
        return None;
    }
    let count = total - *logged;
    *logged = total;
    Some(count)
}

/// One line to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropLine {
    /// Why.
    pub reason: DropReason,
    /// How many since the last line for this reason.
    pub count: u64,
}

impl DropLog {
    /// The lines due at `now` for the counters in `stats` (the caller
    /// writes them; [`DropLog::log`] does both).
    pub fn due(&mut self, now: Instant, stats: &Stats) -> Vec<DropLine> {
        DropReason::ALL
            .into_iter()
            .zip(self.logged.iter_mut().zip(self.gates.iter_mut()))
            .filter_map(|(reason, (logged, gate))| {
                due_one(now, stats.drops(reason), logged, gate)
                    .map(|count| DropLine { reason, count })
            })
            .collect()
    }

    /// The refusals at a configured limit due at `now`: (limit, count since
    /// the last line).
    pub fn limits_due(&mut self, now: Instant, stats: &Stats) -> Vec<(LimitHit, u64)> {
        LimitHit::ALL
            .into_iter()
            .zip(
                self.limits_logged
                    .iter_mut()
                    .zip(self.limit_gates.iter_mut()),
            )
            .filter_map(|(limit, (logged, gate))| {
                due_one(now, stats.limit_hits(limit), logged, gate).map(|count| (limit, count))
            })
            .collect()
    }

    /// Writes the lines due at `now`, at warn.
    pub fn log(&mut self, now: Instant, stats: &Stats) {
        for DropLine { reason, count } in self.due(now, stats) {
            warn!(
                reason = reason.label(),
                count,
                period = ?LOG_PERIOD,
                "dropped: {}",
                describe(reason)
            );
        }
        for (limit, count) in self.limits_due(now, stats) {
            warn!(
                limit = limit.key(),
                count,
                period = ?LOG_PERIOD,
                "refused at a configured limit"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn first_drop_at_once_then_one_line_per_period_with_the_count() {
        let mut log = DropLog::default();
        let mut stats = Stats::default();
        let t0 = Instant::now();
        assert!(log.due(t0, &stats).is_empty());
        stats.drop(DropReason::OutOfState);
        assert_eq!(
            log.due(t0, &stats),
            [DropLine {
                reason: DropReason::OutOfState,
                count: 1
            }]
        );
        for _ in 0..1000 {
            stats.drop(DropReason::OutOfState);
            assert!(log.due(t0 + Duration::from_secs(1), &stats).is_empty());
        }
        // Another reason has a gate of its own.
        stats.drop(DropReason::TooLarge);
        assert_eq!(log.due(t0 + Duration::from_secs(1), &stats).len(), 1);
        assert_eq!(
            log.due(t0 + LOG_PERIOD, &stats),
            [DropLine {
                reason: DropReason::OutOfState,
                count: 1000
            }]
        );
    }

    #[test]
    fn refusals_at_a_limit_are_gated_per_limit() {
        let mut log = DropLog::default();
        let mut stats = Stats::default();
        let t0 = Instant::now();
        stats.limit_hit(LimitHit::MaxClients);
        stats.limit_hit(LimitHit::MaxClients);
        assert_eq!(log.limits_due(t0, &stats), [(LimitHit::MaxClients, 2)]);
        stats.limit_hit(LimitHit::MaxClients);
        assert!(log.limits_due(t0, &stats).is_empty());
        assert_eq!(
            log.limits_due(t0 + LOG_PERIOD, &stats),
            [(LimitHit::MaxClients, 1)]
        );
    }
}
