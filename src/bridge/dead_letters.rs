//! The bridge's dead-letter record: the messages the broker refused — by
//! an error reason code, by a limit it announced in CONNACK, or by closing
//! the connection on them twice — each kept as topic, size, reason and
//! time, the last [`DEAD_LETTERS_KEPT`] of them, for `/status`; counted
//! on `/metrics` (`sngate_upstream_quarantined_total`)
//! and logged at warn, at most one line per [`WARN_EVERY`] (the count of
//! the lines held back rides on the next one).
//!
//! The sessions record with their input's `now` (they read no clock); the
//! reader turns that into wall time when it takes a snapshot.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;

/// How many dead letters are kept (the oldest leave first).
pub const DEAD_LETTERS_KEPT: usize = 32;
/// Longest topic kept in a record, in bytes (the rest is cut).
const TOPIC_KEPT: usize = 256;
/// At most one warn line per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One message the bridge gave up on (also its durable record).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Remote topic (cut to 256 bytes).
    pub topic: String,
    /// Topic and payload bytes.
    pub size: usize,
    /// QoS it was to go with.
    pub qos: u8,
    /// Why: the broker's reason code, the limit it exceeds, or "closed the
    /// connection".
    pub reason: String,
    /// The device whose own session it was on (per-device mode).
    pub device: Option<String>,
    /// When, in seconds since the Unix epoch (0 until the reader stamps
    /// it).
    pub at_unix_secs: u64,
}

/// The last dead letters and the warn line's pacing.
#[derive(Debug, Default)]
pub(super) struct DeadLetters {
    kept: VecDeque<(Instant, DeadLetter)>,
    last_warn: Option<Instant>,
    held_back: u64,
}

impl DeadLetters {
    /// Records one, with the session's `now`, and logs it (rate-limited).
    pub(super) fn record(&mut self, now: Instant, mut letter: DeadLetter) {
        if letter.topic.len() > TOPIC_KEPT {
            let mut end = TOPIC_KEPT;
            while !letter.topic.is_char_boundary(end) {
                end -= 1;
            }
            letter.topic.truncate(end);
        }
        if let Some(held_back) = self.may_warn(now) {
            warn!(
                topic = %letter.topic,
                size = letter.size,
                qos = letter.qos,
                reason = %letter.reason,
                device = letter.device.as_deref().unwrap_or("-"),
                more_since_last_line = held_back,
                "upstream: message quarantined (dead letter); the outbox goes on"
            );
        }
        if self.kept.len() >= DEAD_LETTERS_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back((now, letter));
    }

    /// A filter the broker refused: logged (rate-limited with the dead
    /// letters' line).
    pub(super) fn filter_refused(
        &mut self,
        now: Instant,
        filter: &str,
        reason: &str,
        device: Option<&str>,
    ) {
        if let Some(held_back) = self.may_warn(now) {
            warn!(
                filter,
                reason,
                device = device.unwrap_or("-"),
                more_since_last_line = held_back,
                "upstream: subscription filter refused; removed from the upstream set"
            );
        }
    }

    /// Whether a warn line may be written now: `Some(lines held back since
    /// the last one)`, or `None` (this one is held back and counted).
    fn may_warn(&mut self, now: Instant) -> Option<u64> {
        if self
            .last_warn
            .is_some_and(|at| now.saturating_duration_since(at) < WARN_EVERY)
        {
            self.held_back += 1;
            return None;
        }
        self.last_warn = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }

    /// Dead letters read back from the store at start-up (already stamped).
    pub(super) fn restore(&mut self, now: Instant, letters: Vec<DeadLetter>) {
        for l in letters {
            if self.kept.len() >= DEAD_LETTERS_KEPT {
                self.kept.pop_front();
            }
            self.kept.push_back((now, l));
        }
    }

    /// The ones kept, oldest first, stamped with wall time.
    pub(super) fn snapshot(&self) -> Vec<DeadLetter> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.kept
            .iter()
            .map(|(at, l)| {
                if l.at_unix_secs != 0 {
                    return l.clone();
                }
                let when = wall
                    .checked_sub(now.saturating_duration_since(*at))
                    .unwrap_or(wall);
                DeadLetter {
                    at_unix_secs: when.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                    ..l.clone()
                }
            })
            .collect()
    }
}

/// The `/status` part: `{"quarantined": n, "last": [{topic, size, qos,
/// reason, device, at}]}`, newest first.
pub fn status_json(quarantined: u64, letters: &[DeadLetter]) -> serde_json::Value {
    let last: Vec<serde_json::Value> = letters
        .iter()
        .rev()
        .map(|l| {
            let at = UNIX_EPOCH + Duration::from_secs(l.at_unix_secs);
            serde_json::json!({
                "topic": l.topic,
                "size": l.size,
                "qos": l.qos,
                "reason": l.reason,
                "device": l.device,
                "at": crate::ops::status::rfc3339(at),
            })
        })
        .collect();
    serde_json::json!({ "quarantined": quarantined, "last": last })
}
