//! Duplicate detection for one (subscriber, sending device) stream, in
//! bounded memory however long the run: a [`SeqTracker`] remembers which
//! sequence numbers arrived, exactly within a sliding window of
//! [`WINDOW`] numbers, and only as counts below it. Pure.
//!
//! In order (the usual case) it is two integers; a window of bits is
//! allocated on the first gap (a lost or reordered message). A gap that the
//! window slides past is *given up*: a message that fills it later is still
//! counted as new, once per given-up number, so a reordering deeper than the
//! window is never mistaken for a duplicate (only a duplicate arriving while
//! such gaps are open may be mistaken for a late arrival).

/// How many sequence numbers past the oldest gap are tracked exactly.
pub const WINDOW: u64 = 1024;

const WORDS: usize = (WINDOW / 64) as usize;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first arrival of this sequence number.
    New,
    /// This sequence number had arrived before.
    Duplicate,
}

/// Arrivals of one device's sequence numbers at one subscriber.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Every number below this arrived, or was given up.
    next: u64,
    /// Numbers below `next` that never arrived and were given up.
    given_up: u64,
    /// Arrivals in `next..next + WINDOW`, bit `n % WINDOW`; `None` while
    /// everything arrived in order.
    window: Option<Box<[u64; WORDS]>>,
}

impl SeqTracker {
    /// Records the arrival of `seq`.
    pub fn observe(&mut self, seq: u64) -> Seen {
        if seq < self.next {
            if self.given_up > 0 {
                self.given_up -= 1;
                return Seen::New;
            }
            return Seen::Duplicate;
        }
        if self.window.is_none() && seq == self.next {
            self.next = self.next.saturating_add(1);
            return Seen::New;
        }
        if seq - self.next >= WINDOW {
            self.slide_to(seq - WINDOW + 1);
        }
        let window = self.window.get_or_insert_with(|| Box::new([0; WORDS]));
        if get(window, seq) {
            return Seen::Duplicate;
        }
        set(window, seq, true);
        while get(window, self.next) {
            set(window, self.next, false);
            self.next = self.next.saturating_add(1);
        }
        if window.iter().all(|&w| w == 0) {
            self.window = None;
        }
        Seen::New
    }

    /// Moves the window's start to `to`, giving up the numbers passed over
    /// that did not arrive.
    fn slide_to(&mut self, to: u64) {
        let Some(window) = self.window.as_mut() else {
            self.given_up += to - self.next;
            self.next = to;
            return;
        };
        if to - self.next >= WINDOW {
            let arrived: u64 = window.iter().map(|w| u64::from(w.count_ones())).sum();
            self.given_up += (to - self.next) - arrived;
            **window = [0; WORDS];
            self.next = to;
            return;
        }
        while self.next < to {
            if !get(window, self.next) {
                self.given_up += 1;
            }
            set(window, self.next, false);
            self.next += 1;
        }
    }
}

fn get(window: &[u64; WORDS], seq: u64) -> bool {
    let bit = seq % WINDOW;
    window
        .get((bit / 64) as usize)
        .is_some_and(|w| w & (1 << (bit % 64)) != 0)
}

fn set(window: &mut [u64; WORDS], seq: u64, on: bool) {
    let bit = seq % WINDOW;
    if let Some(w) = window.get_mut((bit / 64) as usize) {
        if on {
            *w |= 1 << (bit % 64);
        } else {
            *w &= !(1 << (bit % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_needs_no_window() {
        let mut t = SeqTracker::default();
        for seq in 0..10_000 {
            assert_eq!(t.observe(seq), Seen::New);
        }
        assert!(t.window.is_none());
        assert_eq!(t.observe(5), Seen::Duplicate);
        assert_eq!(t.observe(9_999), Seen::Duplicate);
    }

    #[test]
    fn reordering_and_duplicates_within_the_window() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(2), Seen::New);
        assert_eq!(t.observe(0), Seen::New);
        assert_eq!(t.observe(2), Seen::Duplicate);
        assert_eq!(t.observe(1), Seen::New);
        assert!(t.window.is_none(), "the gap closed");
        assert_eq!(t.observe(1), Seen::Duplicate);
        assert_eq!(t.observe(3), Seen::New);
    }

    #[test]
    fn a_gap_the_window_slides_past_is_given_up_and_may_still_fill() {
        let mut t = SeqTracker::default();
        // 0 is lost; 1..=WINDOW arrive; the window slides past 0.
        for seq in 1..=WINDOW {
            assert_eq!(t.observe(seq), Seen::New);
        }
        assert_eq!(t.given_up, 1);
        assert_eq!(
            t.observe(0),
            Seen::New,
            "a very late arrival is not a duplicate"
        );
        assert_eq!(t.observe(0), Seen::Duplicate);
    }

    #[test]
    fn a_huge_jump_is_bounded_work() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(1), Seen::New);
        assert_eq!(t.observe(u64::MAX - 1), Seen::New);
        assert_eq!(t.observe(u64::MAX - 1), Seen::Duplicate);
        assert_eq!(t.given_up, u64::MAX - WINDOW - 1);
    }

    proptest! {
        /// Within the window, the tracker agrees with a set.
        #[test]
        fn agrees_with_a_set_within_the_window(seqs in proptest::collection::vec(0u64..WINDOW, 0..3000)) {
            let mut t = SeqTracker::default();
            let mut seen = HashSet::new();
            for seq in seqs {
                let want = if seen.insert(seq) { Seen::New } else { Seen::Duplicate };
                prop_assert_eq!(t.observe(seq), want);
            }
        }
    }
}
