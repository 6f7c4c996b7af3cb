//! Telling an operator that another client uses this session's client id:
//! the broker then hands the session to whichever connected last, and two
//! such clients take turns kicking each other off. MQTT 5 brokers say so
//! (DISCONNECT 0x8E, session taken over); an MQTT 3.1.1 broker just closes
//! the connection, so a streak of connections closed soon after their
//! CONNACK is taken as the sign. Pure: the machine passes `now` in and logs
//! what this returns.

use std::time::{Duration, Instant};

/// A connection that ends sooner than this after its CONNACK counts
/// towards a suspected takeover (MQTT 3.1.1).
pub(super) const QUICK_LOSS: Duration = Duration::from_secs(10);

/// Consecutive quick losses that make a takeover the likely cause.
pub(super) const QUICK_LOSSES: u32 = 3;

/// A device's session: losses in a row (the first after any time, the next
/// within [`QUICK_LOSS`] of their CONNACK) that make it taken over, when
/// the broker does not say so (MQTT 3.1.1; mosquitto 2.0 on MQTT 5 too).
/// Two: the gateway a device left takes the session back once, is kicked
/// again at once by the gateway the device went to, and lets go — three
/// takeovers in all, within the reconnect backoff, instead of a ping-pong.
pub(super) const DEVICE_LOSSES: u32 = 2;

/// Within a streak, the log repeats the cause every this many losses.
const REPEAT_EVERY: u32 = 10;

/// Why the log names a takeover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Takeover {
    /// The broker said so (MQTT 5 DISCONNECT 0x8E); `times` in this streak.
    Reported {
        /// Takeovers in a row, this one included.
        times: u32,
    },
    /// Inferred: this many connections in a row ended within
    /// [`QUICK_LOSS`] of their CONNACK.
    Inferred {
        /// Quick losses in a row, this one included.
        times: u32,
    },
}

/// The streak of takeovers (reported or suspected) of one session.
#[derive(Debug, Default)]
pub(super) struct TakeoverWatch {
    connected_at: Option<Instant>,
    streak: u32,
}

impl TakeoverWatch {
    /// The session was accepted (CONNACK) at `now`.
    pub(super) fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection ended at `now`; `reported`: the broker said the
    /// session was taken over. Returns what to log, if anything: the first
    /// takeover of a streak (the third quick loss when only inferred), then
    /// every tenth.
    pub(super) fn lost(&mut self, now: Instant, reported: bool) -> Option<Takeover> {
        let since = self.connected_at.take()?;
        let quick = now.saturating_duration_since(since) < QUICK_LOSS;
        if !(reported || quick) {
            // A connection that lasted may still have ended in a takeover:
            // the first of a streak. So when a device roams, the gateway it
            // left (kicked first) reaches the end of its streak first, and
            // lets go — not the one it roamed to.
            self.streak = 1;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let times = self.streak;
        if reported {
            return (times == 1 || times.is_multiple_of(REPEAT_EVERY))
                .then_some(Takeover::Reported { times });
        }
        (times == QUICK_LOSSES || (times > QUICK_LOSSES && times.is_multiple_of(REPEAT_EVERY)))
            .then_some(Takeover::Inferred { times })
    }

    /// The loss just counted had another likely cause (the broker closed
    /// the connection on something it was asked): the streak starts over.
    pub(super) fn not_a_takeover(&mut self) {
        self.streak = 0;
    }

    /// After [`lost`](Self::lost), for a device's session: whether it is
    /// taken over — reported by the broker, or [`DEVICE_LOSSES`] losses in
    /// a row, each but the first within [`QUICK_LOSS`] of its CONNACK. It
    /// stops there for good (issue 23: the device went to another gateway;
    /// reconnecting would take the session back and start a ping-pong).
    pub(super) fn taken_over(&self, reported: bool) -> bool {
        reported || self.streak >= DEVICE_LOSSES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_takeover_is_named_at_once_then_every_tenth_time() {
        let mut w = TakeoverWatch::default();
        let t0 = Instant::now();
        let mut named = Vec::new();
        for i in 0..20u64 {
            let at = t0 + Duration::from_secs(i * 2);
            w.connected(at);
            if let Some(t) = w.lost(at + Duration::from_secs(1), true) {
                named.push(t);
            }
        }
        assert_eq!(
            named,
            [
                Takeover::Reported { times: 1 },
                Takeover::Reported { times: 10 },
                Takeover::Reported { times: 20 }
            ]
        );
    }

    #[test]
    fn quick_losses_are_a_suspected_takeover_from_the_third() {
        let mut w = TakeoverWatch::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        w.connected(at(0));
        assert_eq!(w.lost(at(1), false), None);
        w.connected(at(2));
        assert_eq!(w.lost(at(3), false), None);
        w.connected(at(4));
        assert_eq!(w.lost(at(5), false), Some(Takeover::Inferred { times: 3 }));
        // A connection that lasted ends the streak.
        w.connected(at(6));
        assert_eq!(w.lost(at(6) + QUICK_LOSS, false), None);
        w.connected(at(100));
        assert_eq!(w.lost(at(101), false), None);
    }

    #[test]
    fn taken_over_once_reported_or_from_the_third_quick_loss() {
        let mut w = TakeoverWatch::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // A long connection ends: a blip, or the first takeover.
        w.connected(at(0));
        w.lost(at(3600), false);
        assert!(!w.taken_over(false));
        assert!(w.taken_over(true));
        // Taken back, lost again at once: final.
        w.connected(at(3601));
        w.lost(at(3602), false);
        assert!(w.taken_over(false));
        // A lone quick loss after a long connection is not.
        let mut w = TakeoverWatch::default();
        w.connected(at(0));
        w.lost(at(1), false);
        w.connected(at(2));
        w.lost(at(20), false);
        w.connected(at(21));
        assert!(
            !w.taken_over(false),
            "a connection that lasted restarts the streak"
        );
    }

    #[test]
    fn a_failed_attempt_without_connack_is_no_takeover() {
        let mut w = TakeoverWatch::default();
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(w.lost(now, false), None);
        }
    }
}
