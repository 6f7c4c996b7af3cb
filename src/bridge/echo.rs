//! Echo suppression for MQTT 3.1.1 upstreams, which have no No Local option
//! and no user properties.
//!
//! On 3.1.1 the broker sends a session back every message the gateway
//! published on a topic that session is subscribed to — its own messages
//! (aggregate mode), and in per-device mode also those of every other
//! session of this gateway (device A's session publishes, device B's session
//! is subscribed). The gateway already routed that message locally when it
//! was published, so delivering the broker's copy would hand local
//! subscribers a second one.
//!
//! The gateway keeps one [`EchoLog`] of recent publications (remote topic and
//! a hash of the payload, each with a sequence number), shared by all its
//! sessions; each session keeps an [`EchoSeen`] of the log entries it has
//! already swallowed. A message received on a session is an echo when the
//! log holds a matching publication the session has not swallowed yet: so
//! each session swallows one copy per publication, however many sessions
//! receive it.
//!
//! It is a best-effort heuristic, not a protocol guarantee (see
//! `docs/bridge.md`): a different client publishing the very same payload on
//! the very same topic within the window loses one copy, and an echo that
//! arrives after the window (or a second echo of a message resent after a
//! reconnect) gets through. Memory is bounded by a fixed number of entries
//! in the log and in each session's record.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

type Key = (String, u64);

/// Recently published (topic, payload) pairs expected to come back, shared
/// by every session of the gateway.
#[derive(Debug)]
pub struct EchoLog {
    window: Duration,
    capacity: usize,
    next_seq: u64,
    /// Every remembered publication, oldest first.
    order: VecDeque<(Instant, Key, u64)>,
    /// Sequence numbers per key, oldest first.
    by_key: HashMap<Key, VecDeque<u64>>,
}

impl EchoLog {
    /// A log remembering at most `capacity` publications for `window`.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            next_seq: 0,
            order: VecDeque::new(),
            by_key: HashMap::new(),
        }
    }

    /// Records that the gateway published `payload` on remote `topic` at `now`.
    pub fn published(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        self.expire(now);
        if self.order.len() >= self.capacity {
            self.pop_oldest();
        }
        let key = (topic.to_owned(), hash(payload));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_key.entry(key.clone()).or_default().push_back(seq);
        self.order.push_back((now, key, seq));
    }

    /// True if the message a session received on remote `topic` is the echo
    /// of a publication that session (`seen`) has not swallowed yet; it then
    /// counts as swallowed by that session.
    pub fn is_echo(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        seen: &mut EchoSeen,
    ) -> bool {
        self.expire(now);
        seen.expire(now, self.window);
        let key = (topic.to_owned(), hash(payload));
        let Some(seqs) = self.by_key.get(&key) else {
            return false;
        };
        match seqs.iter().find(|s| !seen.set.contains(s)) {
            Some(&seq) => {
                seen.insert(now, seq);
                true
            }
            None => false,
        }
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
        while let Some((at, _, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, key, seq)) = self.order.pop_front()
            && let Some(seqs) = self.by_key.get_mut(&key)
        {
            seqs.retain(|s| *s != seq);
            if seqs.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }
}

/// The log entries one session has swallowed (bounded like the log).
#[derive(Debug)]
pub struct EchoSeen {
    capacity: usize,
    order: VecDeque<(Instant, u64)>,
    set: HashSet<u64>,
}

impl EchoSeen {
    /// A record of at most `capacity` swallowed echoes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    fn insert(&mut self, now: Instant, seq: u64) {
        if self.order.len() >= self.capacity
            && let Some((_, old)) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back((now, seq));
        self.set.insert(seq);
    }

    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((at, seq)) = self.order.front() {
            if now.saturating_duration_since(*at) < window {
                break;
            }
            self.set.remove(seq);
            self.order.pop_front();
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
    fn swallows_each_publication_once_per_session() {
        let t = Instant::now();
        let mut log = EchoLog::new(W, 100);
        let mut a = EchoSeen::new(100);
        let mut b = EchoSeen::new(100);
        log.published(t, "a", b"1");
        log.published(t, "a", b"1");
        assert!(!log.is_echo(t, "a", b"2", &mut a), "other payload");
        assert!(!log.is_echo(t, "b", b"1", &mut a), "other topic");
        assert!(log.is_echo(t, "a", b"1", &mut a));
        assert!(log.is_echo(t, "a", b"1", &mut a));
        assert!(
            !log.is_echo(t, "a", b"1", &mut a),
            "only as many as published"
        );
        // Another session gets its own copies of the same publications.
        assert!(log.is_echo(t, "a", b"1", &mut b));
        assert!(log.is_echo(t, "a", b"1", &mut b));
        assert!(!log.is_echo(t, "a", b"1", &mut b));
    }

    #[test]
    fn forgets_after_window() {
        let t = Instant::now();
        let mut log = EchoLog::new(W, 100);
        let mut a = EchoSeen::new(100);
        log.published(t, "a", b"1");
        assert!(!log.is_echo(t + W, "a", b"1", &mut a));
        assert!(log.is_empty());
    }

    #[test]
    fn bounded_by_capacity() {
        let t = Instant::now();
        let mut log = EchoLog::new(W, 3);
        let mut a = EchoSeen::new(2);
        for i in 0..10u8 {
            log.published(t, "a", &[i]);
        }
        assert_eq!(log.len(), 3);
        assert!(!log.is_echo(t, "a", &[0], &mut a), "oldest forgotten");
        assert!(log.is_echo(t, "a", &[9], &mut a));
        assert!(log.is_echo(t, "a", &[8], &mut a));
        assert!(log.is_echo(t, "a", &[7], &mut a));
        assert_eq!(a.order.len(), 2, "a session's record is bounded too");
    }
}
