//! The subscription trie: which subscribers want a published topic name.
//!
//! This is the hot path of the gateway (every PUBLISH from a device or a
//! local MQTT client goes through [`SubscriptionTrie::matches`]), so it is a
//! purpose-built structure rather than a scan over filters:
//!
//! - One node per filter level, stored in an arena (`Vec`) and linked by
//!   index. Exact levels are children in a `HashMap<Box<str>, index>`; `+`
//!   has its own child slot; `#` (always the last level) is not a node at
//!   all but a subscriber list on its parent, so `a/#` costs one node.
//! - Matching walks the name's levels with a `split`-style cursor, keeps the
//!   pending `+` branches on a small stack that lives in the call frame (it
//!   spills to the heap only past 32 pending branches), and writes straight
//!   into the caller's `out`: no allocation per match beyond `out`.
//! - Nothing recurses, so a filter of 30,000 levels cannot overflow the
//!   stack, and dropping the trie is flat.
//! - Unsubscribing prunes every node left empty and puts its slot on a free
//!   list for reuse, so memory follows the live subscriptions, not the churn.
//!
//! Semantics are those of [`crate::topic::matches`] (a property test checks
//! that they agree), for filters that pass [`crate::topic::validate_filter`].
//! The trie does not validate: for an invalid filter it still never panics,
//! and a `#` that is not the last level is then stored as a literal level.

use std::collections::HashMap;
use std::hash::Hash;

/// Index of a node in the arena.
type NodeId = usize;

/// The absent-node marker for `Node::plus`.
const NONE: NodeId = usize::MAX;

/// The root node (the empty prefix). It is never freed.
const ROOT: NodeId = 0;

/// Pending `+` branches kept in the call frame before spilling to the heap.
const INLINE_STACK: usize = 32;

/// Marks "no level left" in a name cursor.
const END: usize = usize::MAX;

/// One trie node: the filters sharing the prefix of levels leading here.
#[derive(Debug, Clone)]
struct Node<S> {
    /// Children for exact (non-wildcard) next levels.
    children: HashMap<Box<str>, NodeId>,
    /// Child for a `+` next level, or [`NONE`].
    plus: NodeId,
    /// Parent node ([`NONE`] for the root and for free slots).
    parent: NodeId,
    /// Subscribers whose filter ends exactly here, sorted by key, unique.
    exact: Vec<(S, u8)>,
    /// Subscribers to `<this prefix>/#`, sorted by key, unique.
    multi: Vec<(S, u8)>,
}

impl<S> Node<S> {
    fn new(parent: NodeId) -> Self {
        Node {
            children: HashMap::new(),
            plus: NONE,
            parent,
            exact: Vec::new(),
            multi: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus == NONE
            && self.exact.is_empty()
            && self.multi.is_empty()
    }
}

/// Where a filter's subscriber list lives once its levels are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The filter ends at the node (`a/b`).
    Exact,
    /// The filter's last level is `#` (`a/#` is stored on node `a`).
    Multi,
}

/// Splits a filter into the levels that are trie nodes and the slot its
/// subscribers live in: `a/b/#` is levels `a/b`, slot `Multi`; `#` alone is
/// no levels at all (the root's multi slot).
fn split_filter(filter: &str) -> (Option<&str>, Slot) {
    if filter == "#" {
        (None, Slot::Multi)
    } else if let Some(prefix) = filter.strip_suffix("/#") {
        (Some(prefix), Slot::Multi)
    } else {
        (Some(filter), Slot::Exact)
    }
}

/// The subscription trie: topic filters (with `+` and `#`) to subscribers.
///
/// `S` is an opaque, cheap subscriber key (the engine uses small ids for
/// MQTT-SN sessions and local MQTT connections). Each `(filter, subscriber)`
/// pair holds one QoS; subscribing again replaces it.
///
/// ```
/// use sngate_core::router::SubscriptionTrie;
/// let mut trie = SubscriptionTrie::new();
/// trie.subscribe("sensors/+/temp", 1u32, 0);
/// trie.subscribe("sensors/#", 1u32, 1);
/// trie.subscribe("sensors/kitchen/temp", 2u32, 2);
/// let mut out = Vec::new();
/// trie.matches("sensors/kitchen/temp", &mut out);
/// assert_eq!(out, vec![(1, 1), (2, 2)]);
/// ```
#[derive(Debug, Clone)]
pub struct SubscriptionTrie<S> {
    /// Node arena; index [`ROOT`] is the root. Free slots are empty nodes.
    nodes: Vec<Node<S>>,
    /// Free arena slots, reused before the arena grows.
    free: Vec<NodeId>,
    /// Number of `(filter, subscriber)` pairs.
    len: usize,
    /// Bytes of the filters of every `(filter, subscriber)` pair.
    filter_bytes: usize,
}

impl<S: Copy + Eq + Hash + Ord> Default for SubscriptionTrie<S> {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(
    clippy::indexing_slicing,
    reason = "node ids index the arena they were allocated in: made here, unlinked before their slot is freed, never taken from input"
)]
impl<S: Copy + Eq + Hash + Ord> SubscriptionTrie<S> {
    /// An empty trie (just the root node).
    pub fn new() -> Self {
        SubscriptionTrie {
            nodes: vec![Node::new(NONE)],
            free: Vec::new(),
            len: 0,
            filter_bytes: 0,
        }
    }

    /// Bytes of the filters of every `(filter, subscriber)` pair, the bound
    /// `max_subscription_bytes_total` is checked against.
    pub fn filter_bytes(&self) -> usize {
        self.filter_bytes
    }

    /// Number of `(filter, subscriber)` pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of live trie nodes, the root included (1 when empty). For
    /// metrics and for checking that unsubscribing frees memory.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Subscribes `sub` to `filter` with `qos`. Returns the previous QoS if
    /// `sub` was already subscribed to exactly this filter (it is replaced),
    /// `None` if the pair is new.
    ///
    /// `filter` is assumed valid ([`crate::topic::validate_filter`]); an
    /// invalid one is stored without panicking but matches unspecified names.
    pub fn subscribe(&mut self, filter: &str, sub: S, qos: u8) -> Option<u8> {
        let (levels, slot) = split_filter(filter);
        let mut node = ROOT;
        if let Some(levels) = levels {
            for level in levels.split('/') {
                node = self.child_or_insert(node, level);
            }
        }
        let list = match slot {
            Slot::Exact => &mut self.nodes[node].exact,
            Slot::Multi => &mut self.nodes[node].multi,
        };
        match list.binary_search_by(|(s, _)| s.cmp(&sub)) {
            Ok(i) => Some(std::mem::replace(&mut list[i].1, qos)),
            Err(i) => {
                list.insert(i, (sub, qos));
                self.len += 1;
                self.filter_bytes += filter.len();
                None
            }
        }
    }

    /// Unsubscribes `sub` from exactly `filter` (not from other filters that
    /// overlap it). Returns true if the subscription existed. Nodes left
    /// empty are pruned and their slots reused.
    pub fn unsubscribe(&mut self, filter: &str, sub: S) -> bool {
        let (levels, slot) = split_filter(filter);
        let mut node = ROOT;
        if let Some(levels) = levels {
            for level in levels.split('/') {
                match self.child(node, level) {
                    Some(child) => node = child,
                    None => return false,
                }
            }
        }
        let list = match slot {
            Slot::Exact => &mut self.nodes[node].exact,
            Slot::Multi => &mut self.nodes[node].multi,
        };
        match list.binary_search_by(|(s, _)| s.cmp(&sub)) {
            Ok(i) => {
                list.remove(i);
                if list.is_empty() {
                    // Give the memory back: a node's list may have held many.
                    *list = Vec::new();
                }
                self.len -= 1;
                self.filter_bytes = self.filter_bytes.saturating_sub(filter.len());
            }
            Err(_) => return false,
        }
        // Walk back up, freeing each node that is now empty. The level that
        // links a node to its parent is the matching level of the filter,
        // read from the end.
        if let Some(levels) = levels {
            for level in levels.rsplit('/') {
                if node == ROOT || !self.nodes[node].is_empty() {
                    break;
                }
                let parent = self.nodes[node].parent;
                if level == "+" {
                    self.nodes[parent].plus = NONE;
                } else {
                    self.nodes[parent].children.remove(level);
                }
                self.free_node(node);
                node = parent;
            }
        }
        if self.len == 0 {
            // Everything is gone: drop the arena's spare capacity too.
            self.nodes.truncate(1);
            self.nodes.shrink_to_fit();
            self.free = Vec::new();
        }
        true
    }

    /// Clears `out`, then fills it with every subscriber that has at least
    /// one filter matching topic name `name`.
    ///
    /// Each subscriber appears **once**, with the **maximum** QoS over all
    /// its matching filters (MQTT 3.1.1 §3.3.5 allows delivering one copy
    /// at the maximum QoS of the overlapping subscriptions; the gateway does
    /// that so a device never receives duplicates). `out` is sorted by
    /// subscriber key, so delivery order is deterministic.
    ///
    /// `name` is assumed valid ([`crate::topic::validate_name`]); a
    /// wildcard character in it is treated as a literal. Allocates nothing
    /// beyond growing `out` (and a heap spill for more than 32 pending `+`
    /// branches, which only pathological filter sets reach).
    pub fn matches(&self, name: &str, out: &mut Vec<(S, u8)>) {
        out.clear();
        let mut runs = 0usize;
        let mut stack = BranchStack::new();
        // Cursor: (node, byte offset where the next level starts, or END).
        let mut cur = Some((ROOT, 0usize));
        while let Some((id, start)) = cur.take().or_else(|| stack.pop()) {
            let node = &self.nodes[id];
            if start == END {
                // Name exhausted here: filters ending here match, and so
                // does `<here>/#` (`#` matches the parent level too).
                push_run(out, &node.exact, &mut runs);
                push_run(out, &node.multi, &mut runs);
                continue;
            }
            let rest = name.get(start..).unwrap_or_default();
            let (level, next) = match rest.bytes().position(|b| b == b'/') {
                Some(i) => (rest.get(..i).unwrap_or_default(), start + i + 1),
                None => (rest, END),
            };
            // Wildcards at the first level do not match `$` names (§4.7.2).
            let wild_ok = !(start == 0 && level.starts_with('$'));
            if wild_ok {
                push_run(out, &node.multi, &mut runs);
                if node.plus != NONE {
                    stack.push((node.plus, next));
                }
            }
            if let Some(&child) = node.children.get(level) {
                cur = Some((child, next));
            }
        }
        if runs > 1 {
            // Several sorted runs: merge duplicates, keeping the max QoS.
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            out.dedup_by(|later, first| later.0 == first.0);
        }
    }

    /// The exact or `+` child of `node` for `level`, if any.
    fn child(&self, node: NodeId, level: &str) -> Option<NodeId> {
        let n = &self.nodes[node];
        if level == "+" {
            (n.plus != NONE).then_some(n.plus)
        } else {
            n.children.get(level).copied()
        }
    }

    /// The exact or `+` child of `node` for `level`, created if missing.
    fn child_or_insert(&mut self, node: NodeId, level: &str) -> NodeId {
        if let Some(child) = self.child(node, level) {
            return child;
        }
        let child = self.alloc_node(node);
        if level == "+" {
            self.nodes[node].plus = child;
        } else {
            self.nodes[node].children.insert(level.into(), child);
        }
        child
    }

    /// Takes a free slot (or grows the arena) for a new node under `parent`.
    fn alloc_node(&mut self, parent: NodeId) -> NodeId {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = Node::new(parent);
                id
            }
            None => {
                self.nodes.push(Node::new(parent));
                self.nodes.len() - 1
            }
        }
    }

    /// Returns an (already unlinked, empty) node's slot to the free list.
    fn free_node(&mut self, id: NodeId) {
        if id + 1 == self.nodes.len() {
            self.nodes.pop();
        } else {
            self.nodes[id] = Node::new(NONE);
            self.free.push(id);
        }
    }
}

/// Appends one node's sorted subscriber list to `out`, counting non-empty
/// runs so `matches` can skip the merge when there was only one.
#[inline]
fn push_run<S: Copy>(out: &mut Vec<(S, u8)>, list: &[(S, u8)], runs: &mut usize) {
    if !list.is_empty() {
        out.extend_from_slice(list);
        *runs += 1;
    }
}

/// A LIFO of pending `+` branches: inline for the first [`INLINE_STACK`],
/// then on the heap. Keeps `matches` allocation-free in practice and
/// recursion-free always.
struct BranchStack {
    inline: [(NodeId, usize); INLINE_STACK],
    inline_len: usize,
    spill: Vec<(NodeId, usize)>,
}

impl BranchStack {
    fn new() -> Self {
        BranchStack {
            inline: [(NONE, END); INLINE_STACK],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, item: (NodeId, usize)) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = item;
                self.inline_len += 1;
            }
            None => self.spill.push(item),
        }
    }

    fn pop(&mut self) -> Option<(NodeId, usize)> {
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        self.inline_len = self.inline_len.checked_sub(1)?;
        self.inline.get(self.inline_len).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn matched(trie: &SubscriptionTrie<u32>, name: &str) -> Vec<(u32, u8)> {
        let mut out = vec![(999, 9)]; // must be cleared
        trie.matches(name, &mut out);
        out
    }

    #[test]
    fn empty_trie_matches_nothing() {
        let trie = SubscriptionTrie::<u32>::new();
        assert!(trie.is_empty());
        assert_eq!(trie.len(), 0);
        assert_eq!(trie.node_count(), 1);
        assert_eq!(matched(&trie, "a/b"), vec![]);
    }

    #[test]
    fn exact_filters() {
        let mut t = SubscriptionTrie::new();
        assert_eq!(t.subscribe("a/b", 1, 0), None);
        assert_eq!(t.subscribe("a/b/c", 2, 1), None);
        assert_eq!(matched(&t, "a/b"), vec![(1, 0)]);
        assert_eq!(matched(&t, "a/b/c"), vec![(2, 1)]);
        assert_eq!(matched(&t, "a"), vec![]);
        assert_eq!(matched(&t, "a/b/c/d"), vec![]);
        assert_eq!(matched(&t, "a/bc"), vec![]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn spec_multi_level_examples() {
        let mut t = SubscriptionTrie::new();
        t.subscribe("sport/tennis/player1/#", 1, 1);
        t.subscribe("sport/#", 2, 0);
        t.subscribe("#", 3, 2);
        assert_eq!(
            matched(&t, "sport/tennis/player1"),
            vec![(1, 1), (2, 0), (3, 2)]
        );
        assert_eq!(
            matched(&t, "sport/tennis/player1/ranking"),
            vec![(1, 1), (2, 0), (3, 2)]
        );
        assert_eq!(
            matched(&t, "sport/tennis/player1/score/wimbledon"),
            vec![(1, 1), (2, 0), (3, 2)]
        );
        assert_eq!(matched(&t, "sport/tennis/player2"), vec![(2, 0), (3, 2)]);
        assert_eq!(matched(&t, "sport"), vec![(2, 0), (3, 2)]);
        assert_eq!(matched(&t, "sport/"), vec![(2, 0), (3, 2)]);
        assert_eq!(matched(&t, "other"), vec![(3, 2)]);
    }

    #[test]
    fn spec_single_level_examples() {
        let mut t = SubscriptionTrie::new();
        t.subscribe("sport/tennis/+", 1, 0);
        t.subscribe("sport/+", 2, 0);
        t.subscribe("+/+", 3, 0);
        t.subscribe("/+", 4, 0);
        t.subscribe("+", 5, 0);
        t.subscribe("+/tennis/#", 6, 0);
        assert_eq!(matched(&t, "sport/tennis/player1"), vec![(1, 0), (6, 0)]);
        assert_eq!(matched(&t, "sport/tennis/player1/ranking"), vec![(6, 0)]);
        assert_eq!(matched(&t, "sport/"), vec![(2, 0), (3, 0)]);
        assert_eq!(matched(&t, "sport"), vec![(5, 0)]);
        assert_eq!(matched(&t, "/finance"), vec![(3, 0), (4, 0)]);
        assert_eq!(matched(&t, "sport/tennis"), vec![(2, 0), (3, 0), (6, 0)]);
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        let mut t = SubscriptionTrie::new();
        t.subscribe("#", 1, 0);
        t.subscribe("+/monitor/Clients", 2, 0);
        t.subscribe("$SYS/#", 3, 0);
        t.subscribe("$SYS/monitor/+", 4, 0);
        t.subscribe("+", 5, 0);
        assert_eq!(matched(&t, "$SYS/monitor/Clients"), vec![(3, 0), (4, 0)]);
        assert_eq!(matched(&t, "$SYS"), vec![(3, 0)]);
        assert_eq!(matched(&t, "x/monitor/Clients"), vec![(1, 0), (2, 0)]);
        // Only the first level is special.
        t.subscribe("a/+", 6, 0);
        t.subscribe("a/#", 7, 0);
        assert_eq!(matched(&t, "a/$x"), vec![(1, 0), (6, 0), (7, 0)]);
    }

    #[test]
    fn empty_levels_are_levels() {
        let mut t = SubscriptionTrie::new();
        t.subscribe("a//b", 1, 0);
        t.subscribe("a/+/b", 2, 0);
        t.subscribe("/", 3, 0);
        t.subscribe("+/+", 4, 0);
        assert_eq!(matched(&t, "a//b"), vec![(1, 0), (2, 0)]);
        assert_eq!(matched(&t, "a/b"), vec![(4, 0)]);
        assert_eq!(matched(&t, "/"), vec![(3, 0), (4, 0)]);
    }

    #[test]
    fn overlapping_filters_dedupe_with_max_qos() {
        let mut t = SubscriptionTrie::new();
        t.subscribe("a/b", 7, 0);
        t.subscribe("a/+", 7, 2);
        t.subscribe("a/#", 7, 1);
        t.subscribe("#", 7, 0);
        t.subscribe("a/#", 3, 0);
        t.subscribe("+/b", 3, 1);
        assert_eq!(matched(&t, "a/b"), vec![(3, 1), (7, 2)]);
        assert_eq!(matched(&t, "a"), vec![(3, 0), (7, 1)]);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn resubscribe_replaces_qos() {
        let mut t = SubscriptionTrie::new();
        assert_eq!(t.subscribe("a/+", 1, 0), None);
        assert_eq!(t.subscribe("a/+", 1, 2), Some(0));
        assert_eq!(t.subscribe("a/+", 1, 1), Some(2));
        assert_eq!(t.len(), 1);
        assert_eq!(matched(&t, "a/x"), vec![(1, 1)]);
        assert_eq!(t.subscribe("#", 1, 0), None);
        assert_eq!(t.subscribe("#", 1, 2), Some(0));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn output_sorted_by_subscriber() {
        let mut t = SubscriptionTrie::new();
        for s in [9u32, 2, 5, 1, 8] {
            t.subscribe("x", s, 0);
        }
        t.subscribe("+", 4, 1);
        t.subscribe("#", 3, 2);
        assert_eq!(
            matched(&t, "x"),
            vec![(1, 0), (2, 0), (3, 2), (4, 1), (5, 0), (8, 0), (9, 0)]
        );
    }

    #[test]
    fn unsubscribe_exact_pair_only() {
        let mut t = SubscriptionTrie::new();
        t.subscribe("a/+", 1, 1);
        t.subscribe("a/#", 1, 2);
        t.subscribe("a/+", 2, 0);
        assert!(
            !t.unsubscribe("a/b", 1),
            "overlapping filter is not the filter"
        );
        assert!(!t.unsubscribe("a/+", 3), "other subscriber");
        assert!(!t.unsubscribe("zzz/+/#", 1));
        assert!(t.unsubscribe("a/#", 1));
        assert!(!t.unsubscribe("a/#", 1), "already gone");
        assert_eq!(matched(&t, "a/b"), vec![(1, 1), (2, 0)]);
        assert!(t.unsubscribe("a/+", 1));
        assert_eq!(matched(&t, "a/b"), vec![(2, 0)]);
        assert_eq!(t.len(), 1);
        assert!(t.unsubscribe("a/+", 2));
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn unsubscribe_prunes_only_empty_nodes() {
        let mut t = SubscriptionTrie::new();
        t.subscribe("a/b/c", 1, 0);
        t.subscribe("a", 1, 0);
        assert_eq!(t.node_count(), 4);
        assert!(t.unsubscribe("a/b/c", 1));
        assert_eq!(
            t.node_count(),
            2,
            "root and `a`, which still has a subscriber"
        );
        assert_eq!(matched(&t, "a"), vec![(1, 0)]);
        t.subscribe("a/+/#", 2, 0);
        assert_eq!(t.node_count(), 3);
        assert!(t.unsubscribe("a", 1));
        assert_eq!(t.node_count(), 3, "`a` still has a child");
        assert_eq!(matched(&t, "a/x/y"), vec![(2, 0)]);
        assert!(t.unsubscribe("a/+/#", 2));
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn churn_of_10k_filters_returns_to_root() {
        let mut t = SubscriptionTrie::new();
        let filters: Vec<String> = (0..10_000)
            .map(|i| match i % 4 {
                0 => format!("site/{}/dev{i}/temp", i % 50),
                1 => format!("site/+/dev{i}/#"),
                2 => format!("+/{i}"),
                _ => format!("dev{i}/#"),
            })
            .collect();
        for (i, f) in filters.iter().enumerate() {
            assert_eq!(t.subscribe(f, i as u32, 1), None);
        }
        assert_eq!(t.len(), 10_000);
        assert!(t.node_count() > 10_000);
        // Unsubscribe in a different order than subscribed.
        for (i, f) in filters.iter().enumerate().rev() {
            assert!(t.unsubscribe(f, i as u32), "{f}");
        }
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1);
        assert_eq!(t.nodes.len(), 1);
        assert!(t.free.is_empty());
        assert_eq!(matched(&t, "site/1/dev1/temp"), vec![]);
    }

    #[test]
    fn churn_reuses_freed_slots() {
        let mut t = SubscriptionTrie::new();
        t.subscribe("keep/this", 0u32, 0);
        for round in 0..100u32 {
            for i in 0..100 {
                t.subscribe(&format!("r{round}/x{i}/y"), i, 0);
            }
            for i in 0..100 {
                assert!(t.unsubscribe(&format!("r{round}/x{i}/y"), i));
            }
            assert_eq!(t.node_count(), 3);
        }
        // The arena never held more than one round's worth of nodes.
        assert!(
            t.nodes.len() <= 3 + 1 + 200,
            "arena grew to {}",
            t.nodes.len()
        );
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        let mut t = SubscriptionTrie::new();
        let deep_plus = vec!["+"; 30_000].join("/");
        let deep_exact = vec!["a"; 30_000].join("/");
        let deep_multi = format!("{deep_exact}/#");
        t.subscribe(&deep_plus, 1, 0);
        t.subscribe(&deep_exact, 2, 1);
        t.subscribe(&deep_multi, 3, 2);
        assert_eq!(matched(&t, &deep_exact), vec![(1, 0), (2, 1), (3, 2)]);
        // Every level offers both an exact and a `+` branch: the pending
        // stack spills to the heap but stays correct.
        let mut many = SubscriptionTrie::new();
        for depth in 1..=40 {
            let exact = vec!["a"; depth].join("/");
            let last_plus = format!("{}+", "a/".repeat(depth - 1));
            many.subscribe(&exact, depth as u32, 0);
            many.subscribe(&last_plus, 100 + depth as u32, 1);
        }
        let name = vec!["a"; 40].join("/");
        assert_eq!(matched(&many, &name), vec![(40, 0), (140, 1)]);
        assert!(t.unsubscribe(&deep_plus, 1));
        assert!(t.unsubscribe(&deep_exact, 2));
        assert!(t.unsubscribe(&deep_multi, 3));
        assert_eq!(t.node_count(), 1);
        drop(many);
    }

    #[test]
    fn invalid_input_does_not_panic() {
        let mut t = SubscriptionTrie::new();
        for f in ["", "#/a", "a/#/b", "##", "a+", "/#", "#/#", "+#", "\0"] {
            t.subscribe(f, 1u32, 0);
        }
        let mut out = Vec::new();
        for n in ["", "#", "+", "a/#/b", "/", "$", "\0", "é/ü"] {
            t.matches(n, &mut out);
        }
        for f in ["", "#/a", "a/#/b", "##", "a+", "/#", "#/#", "+#", "\0"] {
            assert!(t.unsubscribe(f, 1u32), "{f:?}");
        }
        assert_eq!(t.node_count(), 1);
    }

    /// A level alphabet small enough that filters and names collide often.
    fn filter_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "+", "#", "", "$x"]),
            1..5,
        )
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid filter", |f| topic::validate_filter(f).is_ok())
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$x"]), 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid name", |n| topic::validate_name(n).is_ok())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Sub(String, u8, u8),
        Unsub(String, u8),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (filter_strategy(), 0u8..6, 0u8..3).prop_map(|(f, s, q)| Op::Sub(f, s, q)),
            1 => (filter_strategy(), 0u8..6).prop_map(|(f, s)| Op::Unsub(f, s)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn trie_agrees_with_brute_force(
            ops in prop::collection::vec(op_strategy(), 0..60),
            names in prop::collection::vec(name_strategy(), 1..20),
        ) {
            let mut trie = SubscriptionTrie::new();
            let mut model: BTreeMap<(String, u8), u8> = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Sub(f, s, q) => {
                        let prev = model.insert((f.clone(), *s), *q);
                        prop_assert_eq!(trie.subscribe(f, *s, *q), prev);
                    }
                    Op::Unsub(f, s) => {
                        let existed = model.remove(&(f.clone(), *s)).is_some();
                        prop_assert_eq!(trie.unsubscribe(f, *s), existed);
                    }
                }
                prop_assert_eq!(trie.len(), model.len());
            }
            let mut out = Vec::new();
            for name in &names {
                let mut expected: BTreeMap<u8, u8> = BTreeMap::new();
                for ((f, s), q) in &model {
                    if topic::matches(f, name) {
                        let e = expected.entry(*s).or_insert(*q);
                        *e = (*e).max(*q);
                    }
                }
                let expected: Vec<(u8, u8)> = expected.into_iter().collect();
                trie.matches(name, &mut out);
                prop_assert_eq!(&out, &expected, "name {:?}", name);
            }
            // Removing everything prunes back to the root.
            for (f, s) in model.keys() {
                prop_assert!(trie.unsubscribe(f, *s));
            }
            prop_assert!(trie.is_empty());
            prop_assert_eq!(trie.node_count(), 1);
        }

        #[test]
        fn arbitrary_strings_never_panic(
            filters in prop::collection::vec(".{0,12}", 0..8),
            names in prop::collection::vec(".{0,12}", 0..8),
        ) {
            let mut trie = SubscriptionTrie::new();
            for (i, f) in filters.iter().enumerate() {
                trie.subscribe(f, i, 1);
            }
            let mut out = Vec::new();
            for n in &names {
                trie.matches(n, &mut out);
            }
            for (i, f) in filters.iter().enumerate() {
                trie.unsubscribe(f, i);
            }
            prop_assert_eq!(trie.node_count(), 1);
        }
    }
}
