//! Drops and refusals at warn: after every step the driver hands the
//! engine's counters to [`DropLog`], which writes one line per reason whose
//! count grew — at once for the first, then at most one per
//! [`LOG_PERIOD`] per reason, with how many more happened meanwhile — so an
//! operator at the default level sees that messages are being refused and
//! why, and a flood cannot flood the log. The engine's own debug lines say
//! which client and which topic. Pure: the time is passed in.

use std::time::Instant;

use tracing::warn;

use crate::core::log_gate::{LOG_PERIOD, LogGate};
use crate::core::{DropReason, Stats};

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
    }
}

/// The drop counters last logged, and a gate per reason.
#[derive(Debug, Default)]
pub struct DropLog {
    logged: [u64; DropReason::ALL.len()],
    gates: [LogGate; DropReason::ALL.len()],
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
        let mut lines = Vec::new();
        for (i, reason) in DropReason::ALL.into_iter().enumerate() {
            let total = stats.drops(reason);
            let (Some(logged), Some(gate)) = (self.logged.get_mut(i), self.gates.get_mut(i)) else {
                continue;
            };
            if total <= *logged {
                continue;
            }
            if gate.allow(now).is_some() {
                lines.push(DropLine {
                    reason,
                    count: total - *logged,
                });
                *logged = total;
            }
        }
        lines
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
}
