//! One client's topic-id table (fact sheet §9: tables are per client, so a stale
//! id from one device can never reach another device's topic). Normal ids only;
//! pre-defined ids are global and live in the gateway.
//!
//! Each entry remembers whether the client is known to hold it: ids the client
//! registered or received in a SUBACK or a REGACK are confirmed; after a
//! reconnect with CleanSession = false every entry becomes unconfirmed, and the
//! gateway REGISTERs an entry again before publishing with it (trap T-4).
//!
//! Two bounds: a table's own entries (`max_topics_per_client`), and the
//! bytes of topic names held by every client's table together
//! (`max_topic_bytes_total`), counted in a [`TopicBytes`] the gateway shares
//! with every table it assigned into. A table gives its bytes back when an
//! entry is removed, when it is cleared and when it is dropped, so no path
//! that forgets a session can leak the count.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::stats::LimitHit;

/// Why no id could be assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableFull {
    /// The client's table holds its maximum number of entries.
    #[error("the client's topic table is full ({0} entries)")]
    Entries(usize),
    /// Every client's topic names together hold the gateway-wide bound.
    #[error("topic names of all clients hold {0} bytes, the limit")]
    Bytes(usize),
}

impl TableFull {
    /// The limit refused at, for the metric.
    pub fn limit(self) -> LimitHit {
        match self {
            TableFull::Entries(_) => LimitHit::MaxTopicsPerClient,
            TableFull::Bytes(_) => LimitHit::MaxTopicBytesTotal,
        }
    }
}

/// Bytes of topic names held by every table charged to it (one per
/// gateway). Cloning shares the count.
#[derive(Debug, Clone, Default)]
pub struct TopicBytes(Arc<AtomicUsize>);

impl TopicBytes {
    /// Bytes held now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        // Never below zero: every subtraction gives back what was added.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
}

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    confirmed: bool,
}

/// A per-client map between normal topic ids (1..=0xFFFE) and topic names.
#[derive(Debug)]
pub struct TopicTable {
    by_id: HashMap<u16, Entry>,
    by_name: HashMap<Arc<str>, u16>,
    next_id: u16,
    max_entries: usize,
    /// Bytes of the names held.
    bytes: usize,
    /// The gateway-wide count these bytes are charged to, once attached.
    charged: Option<TopicBytes>,
}

impl Drop for TopicTable {
    fn drop(&mut self) {
        if let Some(shared) = &self.charged {
            shared.sub(self.bytes);
        }
    }
}

impl TopicTable {
    /// An empty table holding at most `max_entries` ids (at most 0xFFFE).
    pub fn new(max_entries: usize) -> Self {
        TopicTable {
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            next_id: 1,
            max_entries: max_entries.min(0xFFFE),
            bytes: 0,
            charged: None,
        }
    }

    /// Charges this table's names to `shared` from now on (a restored
    /// table's names are counted, never refused).
    pub fn attach(&mut self, shared: &TopicBytes) {
        if self.charged.is_none() {
            shared.add(self.bytes);
            self.charged = Some(shared.clone());
        }
    }

    /// Bytes of the names this table holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every (id, name), sorted by id (for the durable store).
    pub fn entries(&self) -> Vec<(u16, String)> {
        let mut entries: Vec<(u16, String)> = self
            .by_id
            .iter()
            .map(|(id, e)| (*id, e.name.to_string()))
            .collect();
        entries.sort();
        entries
    }

    /// A table holding `entries`, none confirmed (a restored client must be
    /// told its ids again, as after any reconnect).
    pub fn restore(max_entries: usize, entries: &[(u16, String)]) -> Self {
        let mut table = TopicTable::new(max_entries);
        for (id, name) in entries.iter().take(table.max_entries) {
            if *id == 0 || *id == 0xFFFF || table.by_id.contains_key(id) {
                continue;
            }
            let name: Arc<str> = Arc::from(name.as_str());
            if table.by_name.contains_key(&name) {
                continue;
            }
            table.bytes += name.len();
            table.by_name.insert(name.clone(), *id);
            table.by_id.insert(
                *id,
                Entry {
                    name,
                    confirmed: false,
                },
            );
            table.next_id = table.next_id.max(id.wrapping_add(1));
        }
        table
    }

    /// The name registered under `id`.
    pub fn name(&self, id: u16) -> Option<&Arc<str>> {
        self.by_id.get(&id).map(|e| &e.name)
    }

    /// The id of `name` and whether the client is known to hold it.
    pub fn lookup(&self, name: &str) -> Option<(u16, bool)> {
        let id = *self.by_name.get(name)?;
        Some((id, self.by_id.get(&id).is_some_and(|e| e.confirmed)))
    }

    /// The id for `name`, assigning a new one if needed (never 0x0000 or 0xFFFF,
    /// trap T-1). `confirmed` marks that the client learns the id from this
    /// exchange; an existing confirmed entry stays confirmed.
    pub fn assign(&mut self, name: &str, confirmed: bool) -> Result<u16, TableFull> {
        self.assign_within(name, confirmed, None, usize::MAX)
    }

    /// As [`assign`](Self::assign), and a new name is refused when the names
    /// of every table charged to `shared` would exceed `max_total` bytes.
    /// The table is charged to `shared` from then on.
    pub fn assign_within(
        &mut self,
        name: &str,
        confirmed: bool,
        shared: Option<&TopicBytes>,
        max_total: usize,
    ) -> Result<u16, TableFull> {
        if let Some(&id) = self.by_name.get(name) {
            if let Some(e) = self.by_id.get_mut(&id) {
                e.confirmed |= confirmed;
            }
            return Ok(id);
        }
        if self.by_id.len() >= self.max_entries {
            return Err(TableFull::Entries(self.max_entries));
        }
        if let Some(shared) = shared {
            if shared.get().saturating_add(name.len()) > max_total {
                return Err(TableFull::Bytes(max_total));
            }
            self.attach(shared);
        }
        // A free id exists because len < max_entries <= 0xFFFE.
        let mut id = self.next_id;
        while id == 0 || id == 0xFFFF || self.by_id.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        let name: Arc<str> = Arc::from(name);
        self.bytes += name.len();
        if let Some(shared) = &self.charged {
            shared.add(name.len());
        }
        self.by_name.insert(name.clone(), id);
        self.by_id.insert(id, Entry { name, confirmed });
        Ok(id)
    }

    /// Marks `id` as known to the client (after its REGACK).
    pub fn confirm(&mut self, id: u16) {
        if let Some(e) = self.by_id.get_mut(&id) {
            e.confirmed = true;
        }
    }

    /// Marks `id` as unknown to the client (it answered "invalid topic id").
    pub fn unconfirm(&mut self, id: u16) {
        if let Some(e) = self.by_id.get_mut(&id) {
            e.confirmed = false;
        }
    }

    /// Marks every id unknown to the client (it reconnected).
    pub fn unconfirm_all(&mut self) {
        for e in self.by_id.values_mut() {
            e.confirmed = false;
        }
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: u16) {
        if let Some(e) = self.by_id.remove(&id) {
            self.by_name.remove(&e.name);
            self.bytes = self.bytes.saturating_sub(e.name.len());
            if let Some(shared) = &self.charged {
                shared.sub(e.name.len());
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        if let Some(shared) = &self.charged {
            shared.sub(self.bytes);
        }
        self.bytes = 0;
        self.by_id.clear();
        self.by_name.clear();
        self.next_id = 1;
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_skip_reserved_values_and_wrap() {
        let mut t = TopicTable::new(10);
        t.next_id = 0xFFFE;
        assert_eq!(t.assign("a", true), Ok(0xFFFE));
        // 0xFFFF and 0x0000 are skipped.
        assert_eq!(t.assign("b", true), Ok(1));
        assert_eq!(t.assign("a", false), Ok(0xFFFE));
        assert_eq!(t.lookup("a"), Some((0xFFFE, true)));
    }

    #[test]
    fn full_table_refuses_new_names_but_returns_known_ones() {
        let mut t = TopicTable::new(2);
        assert_eq!(t.assign("a", false), Ok(1));
        assert_eq!(t.assign("b", false), Ok(2));
        assert_eq!(t.assign("c", false), Err(TableFull::Entries(2)));
        assert_eq!(t.assign("a", true), Ok(1));
        assert_eq!(t.lookup("a"), Some((1, true)));
    }

    #[test]
    fn unconfirm_all_forces_reregistration_but_keeps_ids() {
        let mut t = TopicTable::new(5);
        let id = t.assign("x/y", true).unwrap_or_default();
        t.unconfirm_all();
        assert_eq!(t.lookup("x/y"), Some((id, false)));
        assert_eq!(t.name(id).map(|n| &**n), Some("x/y"));
        t.remove(id);
        assert_eq!(t.lookup("x/y"), None);
    }

    #[test]
    fn names_of_every_table_share_one_byte_bound_given_back_on_remove_clear_and_drop() {
        let shared = TopicBytes::default();
        let mut a = TopicTable::new(10);
        let mut b = TopicTable::new(10);
        assert_eq!(a.assign_within("aaaa", true, Some(&shared), 10), Ok(1));
        assert_eq!(b.assign_within("bbbb", true, Some(&shared), 10), Ok(1));
        assert_eq!(shared.get(), 8);
        // A known name costs nothing; a new one over the bound is refused.
        assert_eq!(a.assign_within("aaaa", true, Some(&shared), 10), Ok(1));
        assert_eq!(
            a.assign_within("ccc", true, Some(&shared), 10),
            Err(TableFull::Bytes(10))
        );
        assert_eq!(TableFull::Bytes(10).limit(), LimitHit::MaxTopicBytesTotal);
        a.remove(1);
        assert_eq!(shared.get(), 4);
        assert_eq!(a.assign_within("ccc", true, Some(&shared), 10), Ok(2));
        b.clear();
        assert_eq!(shared.get(), 3);
        drop(a);
        assert_eq!(shared.get(), 0);
        // A restored table is counted once attached.
        let mut r = TopicTable::restore(10, &[(5, "xy".to_string())]);
        r.attach(&shared);
        r.attach(&shared);
        assert_eq!((r.bytes(), shared.get()), (2, 2));
    }
}
