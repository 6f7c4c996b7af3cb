//! One client's topic-id table (fact sheet §9: tables are per client, so a stale
//! id from one device can never reach another device's topic). Normal ids only;
//! pre-defined ids are global and live in the gateway.
//!
//! Each entry remembers whether the client is known to hold it: ids the client
//! registered or received in a SUBACK or a REGACK are confirmed; after a
//! reconnect with CleanSession = false every entry becomes unconfirmed, and the
//! gateway REGISTERs an entry again before publishing with it (trap T-4).

use std::collections::HashMap;
use std::sync::Arc;

/// Why no id could be assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client's topic table is full ({0} entries)")]
pub struct TableFull(pub usize);

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    confirmed: bool,
}

/// A per-client map between normal topic ids (1..=0xFFFE) and topic names.
#[derive(Debug, Clone)]
pub struct TopicTable {
    by_id: HashMap<u16, Entry>,
    by_name: HashMap<Arc<str>, u16>,
    next_id: u16,
    max_entries: usize,
}

impl TopicTable {
    /// An empty table holding at most `max_entries` ids (at most 0xFFFE).
    pub fn new(max_entries: usize) -> Self {
        TopicTable {
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            next_id: 1,
            max_entries: max_entries.min(0xFFFE),
        }
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
        if let Some(&id) = self.by_name.get(name) {
            if let Some(e) = self.by_id.get_mut(&id) {
                e.confirmed |= confirmed;
            }
            return Ok(id);
        }
        if self.by_id.len() >= self.max_entries {
            return Err(TableFull(self.max_entries));
        }
        // A free id exists because len < max_entries <= 0xFFFE.
        let mut id = self.next_id;
        while id == 0 || id == 0xFFFF || self.by_id.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        let name: Arc<str> = Arc::from(name);
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
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
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
        assert_eq!(t.assign("c", false), Err(TableFull(2)));
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
}
