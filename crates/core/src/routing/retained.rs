//! The retained-message store: the last retained message per topic name,
//! bounded in count and in bytes, delivered to new subscribers whose filter
//! matches.
//!
//! It is a `BTreeMap` from topic name to an opaque value `T` (the engine
//! stores payload and QoS). The sorted map gives a deterministic delivery
//! order (by topic) and lets [`RetainedStore::matching`] scan only the range
//! of topics that share the filter's literal prefix (the levels before its
//! first wildcard); inside that range each topic is checked with
//! [`crate::topic::matches`]. A filter with a leading wildcard (`#`, `+/x`)
//! is therefore a linear scan of the whole store: SUBSCRIBE is rare compared
//! with PUBLISH, and the store is bounded.
//!
//! Two bounds, so untrusted publishers cannot grow it without limit: a
//! message count fixed at construction, and a byte total given with each
//! message ([`RetainedStore::set_weighed`]: the topic's length plus the
//! weight the caller gives, the payload's length for the engine). Storing a
//! new topic when at the count is refused with [`RetainedFull::Messages`]
//! (replacing an existing topic's message is always allowed by count); a
//! message that would take the bytes over their bound is refused with
//! [`RetainedFull::Bytes`], and the topic's previous message is removed
//! rather than left in place as if it were still the latest.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::stats::LimitHit;
use crate::topic;

/// Refusal to store a retained message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetainedFull {
    /// The store already holds its maximum number of messages (a new topic).
    #[error("retained store is full ({0} messages)")]
    Messages(usize),
    /// The message would take the store over its byte bound.
    #[error("retained store would hold over {0} bytes")]
    Bytes(usize),
}

impl RetainedFull {
    /// The limit refused at, for the metric.
    pub fn limit(self) -> LimitHit {
        match self {
            RetainedFull::Messages(_) => LimitHit::MaxRetainedMessages,
            RetainedFull::Bytes(_) => LimitHit::MaxRetainedBytes,
        }
    }
}

/// A stored value and what it counts for in the byte total.
#[derive(Debug, Clone)]
struct Slot<T> {
    value: T,
    /// The topic's length plus the caller's weight.
    bytes: usize,
}

/// Retained messages by topic name, at most `max_messages` of them.
///
/// ```
/// use sngate_core::retained::RetainedStore;
/// let mut store = RetainedStore::new(2);
/// store.set("home/kitchen/temp", "21.5").unwrap();
/// store.set("home/hall/temp", "19.0").unwrap();
/// assert!(store.set("home/attic/temp", "12.0").is_err()); // full
/// let hits: Vec<_> = store.matching("home/+/temp").collect();
/// assert_eq!(hits, vec![("home/hall/temp", &"19.0"), ("home/kitchen/temp", &"21.5")]);
/// ```
#[derive(Debug, Clone)]
pub struct RetainedStore<T> {
    messages: BTreeMap<Box<str>, Slot<T>>,
    max_messages: usize,
    /// Sum of the slots' `bytes`.
    bytes: usize,
}

impl<T> RetainedStore<T> {
    /// An empty store that holds at most `max_messages` topics (0 refuses
    /// every retained message).
    pub fn new(max_messages: usize) -> Self {
        RetainedStore {
            messages: BTreeMap::new(),
            max_messages,
            bytes: 0,
        }
    }

    /// The bound given to [`RetainedStore::new`].
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// Number of retained messages (topics) stored.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True if no message is retained.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Bytes held: every topic's length plus the weight it was stored with.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stores `value` as the retained message of topic name `topic`,
    /// replacing and returning any previous one. A new topic is refused with
    /// [`RetainedFull`] when the store is at its bound (and `value` is
    /// dropped); replacing an existing topic always succeeds.
    ///
    /// `topic` is assumed to be a valid name ([`topic::validate_name`]). An
    /// empty retained payload means "delete": the caller uses
    /// [`RetainedStore::remove`] for that, not `set`.
    pub fn set(&mut self, topic: &str, value: T) -> Result<Option<T>, RetainedFull> {
        self.set_weighed(topic, value, 0, usize::MAX)
    }

    /// As [`set`](Self::set), counting `topic.len() + weight` bytes for the
    /// message; refused with [`RetainedFull::Bytes`] when the store would
    /// then hold more than `max_bytes` — and then the topic's previous
    /// message, if any, is removed (returned in neither case: it is gone).
    pub fn set_weighed(
        &mut self,
        topic: &str,
        value: T,
        weight: usize,
        max_bytes: usize,
    ) -> Result<Option<T>, RetainedFull> {
        let bytes = topic.len().saturating_add(weight);
        let previous = self.messages.get(topic).map(|slot| slot.bytes);
        if previous.is_none() && self.messages.len() >= self.max_messages {
            return Err(RetainedFull::Messages(self.max_messages));
        }
        let others = self.bytes.saturating_sub(previous.unwrap_or(0));
        if others.saturating_add(bytes) > max_bytes {
            self.remove(topic);
            return Err(RetainedFull::Bytes(max_bytes));
        }
        self.bytes = others + bytes;
        let slot = Slot { value, bytes };
        match self.messages.get_mut(topic) {
            Some(old) => Ok(Some(std::mem::replace(old, slot).value)),
            None => {
                self.messages.insert(topic.into(), slot);
                Ok(None)
            }
        }
    }

    /// Removes and returns the retained message of `topic`, if any (the
    /// engine calls this for a retained PUBLISH with an empty payload).
    pub fn remove(&mut self, topic: &str) -> Option<T> {
        let slot = self.messages.remove(topic)?;
        self.bytes = self.bytes.saturating_sub(slot.bytes);
        Some(slot.value)
    }

    /// The retained message of topic name `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<&T> {
        self.messages.get(topic).map(|slot| &slot.value)
    }

    /// Every retained message whose topic matches topic filter `filter`
    /// (per [`topic::matches`], so `$` topics are not matched by a leading
    /// wildcard), in ascending topic order.
    ///
    /// Scans the range of topics starting with the filter's literal prefix
    /// (its levels before the first wildcard); a filter starting with a
    /// wildcard scans the whole store.
    pub fn matching<'a>(&'a self, filter: &str) -> impl Iterator<Item = (&'a str, &'a T)> {
        let prefix = literal_prefix(filter);
        self.messages
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .filter(move |(name, _)| topic::matches(filter, name))
            .map(|(name, slot)| (&**name, &slot.value))
    }
}

/// The part of `filter` every matching name starts with: the levels before
/// the first wildcard level, without the trailing `/` (because `a/#` matches
/// `a`). `a/b/+/c` gives `a/b`, `a/#` gives `a`, `+/x` and `#` give `""`, and
/// a filter without wildcards is its own prefix.
fn literal_prefix(filter: &str) -> &str {
    let mut end = 0usize;
    for level in filter.split('/') {
        if level == "+" || level == "#" {
            return filter.get(..end.saturating_sub(1)).unwrap_or_default();
        }
        end += level.len() + 1;
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topics<T>(store: &RetainedStore<T>, filter: &str) -> Vec<String> {
        store.matching(filter).map(|(t, _)| t.to_string()).collect()
    }

    #[test]
    fn set_get_replace_remove() {
        let mut s = RetainedStore::new(10);
        assert!(s.is_empty());
        assert_eq!(s.set("a/b", 1), Ok(None));
        assert_eq!(s.get("a/b"), Some(&1));
        assert_eq!(s.set("a/b", 2), Ok(Some(1)));
        assert_eq!(s.get("a/b"), Some(&2));
        assert_eq!(s.len(), 1);
        assert_eq!(s.remove("a/b"), Some(2));
        assert_eq!(s.remove("a/b"), None);
        assert_eq!(s.get("a/b"), None);
        assert!(s.is_empty());
    }

    #[test]
    fn bound_refuses_new_topics_but_allows_replacing() {
        let mut s = RetainedStore::new(2);
        assert_eq!(s.max_messages(), 2);
        assert_eq!(s.set("a", 1), Ok(None));
        assert_eq!(s.set("b", 2), Ok(None));
        assert_eq!(s.set("c", 3), Err(RetainedFull::Messages(2)));
        assert_eq!(s.get("c"), None);
        assert_eq!(s.set("a", 10), Ok(Some(1)));
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove("b"), Some(2));
        assert_eq!(s.set("c", 3), Ok(None));
        assert_eq!(
            RetainedFull::Messages(2).to_string(),
            "retained store is full (2 messages)"
        );
    }

    #[test]
    fn byte_bound_refuses_what_would_exceed_it_and_clears_the_stale_message() {
        let mut s = RetainedStore::new(10);
        // "a" + 4 = 5 bytes, "b" + 4 = 5 bytes: exactly the bound.
        assert_eq!(s.set_weighed("a", 1, 4, 10), Ok(None));
        assert_eq!(s.set_weighed("b", 2, 4, 10), Ok(None));
        assert_eq!(s.bytes(), 10);
        assert_eq!(s.set_weighed("c", 3, 0, 10), Err(RetainedFull::Bytes(10)));
        assert_eq!(RetainedFull::Bytes(10).limit(), LimitHit::MaxRetainedBytes);
        // Replacing with a message of the same size fits; a larger one does
        // not, and the older one is not left as if it were the latest.
        assert_eq!(s.set_weighed("a", 10, 4, 10), Ok(Some(1)));
        assert_eq!(s.set_weighed("a", 11, 5, 10), Err(RetainedFull::Bytes(10)));
        assert_eq!(s.get("a"), None);
        assert_eq!(s.bytes(), 5);
        assert_eq!(s.remove("b"), Some(2));
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn zero_bound_refuses_everything() {
        let mut s = RetainedStore::new(0);
        assert_eq!(s.set("a", ()), Err(RetainedFull::Messages(0)));
        assert!(s.is_empty());
    }

    #[test]
    fn matching_filters_in_topic_order() {
        let mut s = RetainedStore::new(100);
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player2",
            "sport",
            "sport/",
            "sports",
            "/finance",
            "$SYS/uptime",
            "a//b",
        ] {
            s.set(t, t.len()).unwrap();
        }
        assert_eq!(
            topics(&s, "sport/tennis/player1/#"),
            ["sport/tennis/player1", "sport/tennis/player1/ranking"]
        );
        assert_eq!(
            topics(&s, "sport/#"),
            [
                "sport",
                "sport/",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player2"
            ]
        );
        assert_eq!(
            topics(&s, "sport/tennis/+"),
            ["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(topics(&s, "sport/+"), ["sport/"]);
        assert_eq!(topics(&s, "+"), ["sport", "sports"]);
        assert_eq!(topics(&s, "+/+"), ["/finance", "sport/"]);
        assert_eq!(topics(&s, "/+"), ["/finance"]);
        assert_eq!(topics(&s, "sport"), ["sport"]);
        assert_eq!(topics(&s, "a/+/b"), ["a//b"]);
        assert_eq!(topics(&s, "nothing/#"), Vec::<String>::new());
        // `$` topics: not by leading wildcards, yes by explicit prefix.
        assert!(!topics(&s, "#").contains(&"$SYS/uptime".to_string()));
        assert_eq!(topics(&s, "#").len(), 8);
        assert_eq!(topics(&s, "$SYS/#"), ["$SYS/uptime"]);
        assert_eq!(topics(&s, "+/uptime"), Vec::<String>::new());
        let values: Vec<_> = s.matching("sport/tennis/+").map(|(_, v)| *v).collect();
        assert_eq!(values, [20, 20]);
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("a/b/+/c"), "a/b");
        assert_eq!(literal_prefix("a/#"), "a");
        assert_eq!(literal_prefix("a//#"), "a/");
        assert_eq!(literal_prefix("/+"), "");
        assert_eq!(literal_prefix("+/x"), "");
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("a/b"), "a/b");
        assert_eq!(literal_prefix(""), "");
    }

    proptest! {
        #[test]
        fn matching_agrees_with_brute_force(
            names in prop::collection::btree_set(
                prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$x", "ab"]), 1..5)
                    .prop_map(|l| l.join("/")),
                0..30,
            ),
            filters in prop::collection::vec(
                prop::collection::vec(prop::sample::select(vec!["a", "b", "+", "#", "", "$x"]), 1..5)
                    .prop_map(|l| l.join("/"))
                    .prop_filter("valid", |f| topic::validate_filter(f).is_ok()),
                1..10,
            ),
        ) {
            let mut s = RetainedStore::new(usize::MAX);
            for (i, n) in names.iter().enumerate() {
                prop_assert_eq!(s.set(n, i), Ok(None));
            }
            for f in &filters {
                let got: Vec<&str> = s.matching(f).map(|(t, _)| t).collect();
                let want: Vec<&str> = names
                    .iter()
                    .filter(|n| topic::matches(f, n))
                    .map(String::as_str)
                    .collect();
                prop_assert_eq!(got, want, "filter {:?}", f);
            }
        }

        #[test]
        fn bound_is_never_exceeded(ops in prop::collection::vec(("[a-e]", any::<bool>()), 0..50)) {
            let mut s = RetainedStore::new(3);
            for (t, insert) in ops {
                if insert {
                    let was_full = s.len() == 3 && s.get(&t).is_none();
                    prop_assert_eq!(s.set(&t, ()).is_err(), was_full);
                } else {
                    s.remove(&t);
                }
                prop_assert!(s.len() <= 3);
            }
        }

        #[test]
        fn byte_bound_is_never_exceeded_and_always_counted(
            ops in prop::collection::vec(("[a-e]", 0usize..8, any::<bool>()), 0..60)
        ) {
            let mut s = RetainedStore::new(4);
            for (t, weight, insert) in ops {
                if insert {
                    let _ = s.set_weighed(&t, weight, weight, 12);
                } else {
                    s.remove(&t);
                }
                let counted: usize = s.matching("#").map(|(name, w)| name.len() + w).sum();
                prop_assert_eq!(counted, s.bytes());
                prop_assert!(s.bytes() <= 12);
            }
        }
    }
}
