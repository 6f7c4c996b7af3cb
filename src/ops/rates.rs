//! Message rates over the last minutes, for the dashboard's chart: the
//! engine's message counters sampled after every input the driver feeds it
//! (they change only then, so nothing is missed and no timer is needed),
//! kept as totals at the end of each [`BUCKET`] in a ring of [`BUCKETS`].
//! A bucket in which no input came has the totals of the one before (a
//! rate of zero). Bounded: a fixed number of buckets, whatever the load.
//! Pure: the time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One point of the chart.
pub const BUCKET: Duration = Duration::from_secs(5);

/// How many points: five minutes.
pub const BUCKETS: usize = 60;

/// Totals at the end of each recent bucket.
#[derive(Debug, Clone)]
pub struct Rates {
    start: Instant,
    /// (bucket index since `start`, messages in, messages out), oldest
    /// first; at most `BUCKETS + 1` (the first is the baseline).
    points: VecDeque<(u64, u64, u64)>,
}

impl Rates {
    /// An empty ring: these totals at `now`.
    pub fn new(now: Instant, messages_in: u64, messages_out: u64) -> Self {
        // The baseline is a bucket of its own, before the first.
        Rates {
            start: now.checked_sub(BUCKET).unwrap_or(now),
            points: VecDeque::from([(0, messages_in, messages_out)]),
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        let secs = now.saturating_duration_since(self.start).as_millis();
        u64::try_from(secs / BUCKET.as_millis()).unwrap_or(u64::MAX)
    }

    /// Records the totals at `now`.
    pub fn sample(&mut self, now: Instant, messages_in: u64, messages_out: u64) {
        let bucket = self.bucket(now);
        if let Some(last) = self.points.back_mut()
            && last.0 == bucket
        {
            *last = (bucket, messages_in, messages_out);
            return;
        }
        // Buckets with no input since the last point: no change.
        let (last_bucket, last_in, last_out) = self.points.back().copied().unwrap_or((0, 0, 0));
        let gap = bucket.saturating_sub(last_bucket).saturating_sub(1);
        for b in (bucket - gap.min(BUCKETS as u64))..bucket {
            self.points.push_back((b, last_in, last_out));
        }
        self.points.push_back((bucket, messages_in, messages_out));
        while self.points.len() > BUCKETS + 1 {
            self.points.pop_front();
        }
    }

    /// Messages per second in and out, per bucket, oldest first, as of
    /// `now` (buckets since the last sample count as idle); the last is
    /// the current bucket, over the part of it elapsed (at least a second),
    /// so the chart moves as soon as messages do.
    pub fn per_sec(&self, now: Instant) -> (Vec<f64>, Vec<f64>) {
        let mut copy = self.clone();
        if let Some(&(_, i, o)) = self.points.back() {
            copy.sample(now, i, o);
        }
        let current = copy.bucket(now);
        let bucket_start = self.start + BUCKET * u32::try_from(current).unwrap_or(u32::MAX);
        let elapsed = now
            .saturating_duration_since(bucket_start)
            .max(Duration::from_secs(1))
            .min(BUCKET);
        let pts: Vec<_> = copy.points.iter().collect();
        pts.windows(2)
            .map(|w| match w {
                [a, b] => {
                    let secs = if b.0 == current { elapsed } else { BUCKET }.as_secs_f64();
                    (
                        b.1.saturating_sub(a.1) as f64 / secs,
                        b.2.saturating_sub(a.2) as f64 / secs,
                    )
                }
                _ => (0.0, 0.0),
            })
            .unzip()
    }

    /// The `/status` part: `{"bucket_secs", "in_per_sec", "out_per_sec"}`.
    pub fn to_json(&self, now: Instant) -> serde_json::Value {
        let (i, o) = self.per_sec(now);
        serde_json::json!({
            "bucket_secs": BUCKET.as_secs(),
            "in_per_sec": i,
            "out_per_sec": o,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_per_bucket_with_idle_buckets_at_zero() {
        let t0 = Instant::now();
        let mut r = Rates::new(t0, 0, 0);
        // 50 in, 10 out during the first bucket.
        r.sample(t0 + Duration::from_secs(1), 20, 5);
        r.sample(t0 + Duration::from_secs(4), 50, 10);
        // Nothing for two buckets, then 5 in during the fourth.
        r.sample(t0 + Duration::from_secs(16), 55, 10);
        let (i, o) = r.per_sec(t0 + Duration::from_secs(21));
        assert_eq!(i, [10.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(o, [2.0, 0.0, 0.0, 0.0, 0.0]);
        // The current bucket over its elapsed part: 6 in 2 s.
        r.sample(t0 + Duration::from_secs(22), 61, 10);
        let (i, _) = r.per_sec(t0 + Duration::from_secs(22));
        assert_eq!(i.last(), Some(&3.0));
    }

    #[test]
    fn the_ring_is_bounded_and_a_long_silence_is_cheap() {
        let t0 = Instant::now();
        let mut r = Rates::new(t0, 0, 0);
        for s in 0..10_000u64 {
            r.sample(t0 + Duration::from_secs(s), s, s);
        }
        r.sample(t0 + Duration::from_secs(10_000_000), 1, 1);
        assert!(r.points.len() <= BUCKETS + 1);
        let (i, _) = r.per_sec(t0 + Duration::from_secs(10_000_000));
        assert!(i.len() <= BUCKETS);
    }
}
