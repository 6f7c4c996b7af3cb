//! Echo suppression for MQTT 3.1.1 upstreams, which have no No Local option.
//!
//! On 3.1.1 the broker sends the bridge back every message the bridge itself
//! published on a topic the bridge is subscribed to. The gateway already
//! routed that message locally when the device published it, so delivering
//! the echo would hand local subscribers a second copy. This filter remembers
//! each such publication (remote topic and a hash of the payload) for a short
//! while, and swallows the first matching message that comes back.
//!
//! It is a best-effort heuristic, not a protocol guarantee (see
//! `docs/bridge.md`): a different client publishing the very same payload on
//! the very same topic within the window loses one copy, and an echo that
//! arrives after the window (or a second echo of a message resent after a
//! reconnect) gets through. Memory is bounded by a fixed number of entries.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

type Key = (String, u64);

/// Recently published (topic, payload) pairs expected to come back.
#[derive(Debug)]
pub struct EchoFilter {
    window: Duration,
    capacity: usize,
    order: VecDeque<(Instant, Key)>,
    counts: HashMap<Key, usize>,
}

impl EchoFilter {
    /// A filter remembering at most `capacity` publications for `window`.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            order: VecDeque::new(),
            counts: HashMap::new(),
        }
    }

    /// Records that the bridge published `payload` on remote `topic` at `now`.
    pub fn published(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        self.expire(now);
        if self.order.len() >= self.capacity {
            self.pop_oldest();
        }
        let key = (topic.to_owned(), hash(payload));
        *self.counts.entry(key.clone()).or_insert(0) += 1;
        self.order.push_back((now, key));
    }

    /// True if the message received on remote `topic` is the echo of one the
    /// bridge published (and forgets that publication).
    pub fn is_echo(&mut self, now: Instant, topic: &str, payload: &[u8]) -> bool {
        self.expire(now);
        let key = (topic.to_owned(), hash(payload));
        let Some(n) = self.counts.get_mut(&key) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.counts.remove(&key);
        }
        // Drop the oldest record of this key from the order queue.
        if let Some(i) = self.order.iter().position(|(_, k)| *k == key) {
            self.order.remove(i);
        }
        true
    }

    /// Publications currently remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front()
            && let Some(n) = self.counts.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&key);
            }
        }
    }
}

fn hash(payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn swallows_each_publication_once() {
        let t = Instant::now();
        let mut f = EchoFilter::new(W, 100);
        f.published(t, "a", b"1");
        f.published(t, "a", b"1");
        assert!(!f.is_echo(t, "a", b"2"), "other payload");
        assert!(!f.is_echo(t, "b", b"1"), "other topic");
        assert!(f.is_echo(t, "a", b"1"));
        assert!(f.is_echo(t, "a", b"1"));
        assert!(!f.is_echo(t, "a", b"1"), "only as many as published");
        assert!(f.is_empty());
    }

    #[test]
    fn forgets_after_window() {
        let t = Instant::now();
        let mut f = EchoFilter::new(W, 100);
        f.published(t, "a", b"1");
        assert!(!f.is_echo(t + W, "a", b"1"));
        assert!(f.is_empty());
    }

    #[test]
    fn bounded_by_capacity() {
        let t = Instant::now();
        let mut f = EchoFilter::new(W, 3);
        for i in 0..10u8 {
            f.published(t, "a", &[i]);
        }
        assert_eq!(f.len(), 3);
        assert!(!f.is_echo(t, "a", &[0]), "oldest forgotten");
        assert!(f.is_echo(t, "a", &[9]));
    }
}
