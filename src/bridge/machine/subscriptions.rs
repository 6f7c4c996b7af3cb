//! A session's upstream subscriptions: which remote filters it holds (the
//! rules' static ones, or the subscribers' when there are no rules), their
//! MQTT 5 subscription identifiers, the SUBSCRIBE/UNSUBSCRIBE requests not
//! yet handed to rumqttc, which filters the broker has confirmed on this
//! connection, and from those which copy of a message matched by
//! overlapping subscriptions to pass on ([`Subscriptions::copy_scope`]).
//!
//! Everything is subscribed again on every CONNACK
//! ([`Subscriptions::resubscribe_all`]), one SUBSCRIBE per filter so that
//! each carries its own identifier.
//!
//! What the broker refuses is learned per filter: a filter refused in a
//! SUBACK leaves the set for good (never sent again). A broker that refuses
//! by closing the connection (mosquitto on some invalid filters) is met as
//! the outbox meets it: the filters sent and unanswered when a connection
//! dies are suspects, each sent alone after the next CONNACK (the others
//! go first, unhindered); a suspect the connection dies on again is
//! refused ([`Subscriptions::isolate`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tracing::debug;

use super::Request;

/// MQTT 5 subscription identifiers for the upstream filters: stable while a
/// filter is subscribed, never reused while the process runs (1..=268,435,455).
#[derive(Debug, Default)]
struct SubscriptionIds {
    by_filter: HashMap<String, usize>,
    by_id: HashMap<usize, String>,
    last: usize,
}

impl SubscriptionIds {
    /// The filter's identifier, assigning one on first use.
    fn id(&mut self, filter: &str) -> usize {
        if let Some(&id) = self.by_filter.get(filter) {
            return id;
        }
        // The identifier is a variable byte integer: at most 268,435,455.
        self.last = if self.last >= 268_435_455 {
            1
        } else {
            self.last + 1
        };
        self.by_filter.insert(filter.to_owned(), self.last);
        self.by_id.insert(self.last, filter.to_owned());
        self.last
    }

    fn get(&self, filter: &str) -> Option<usize> {
        self.by_filter.get(filter).copied()
    }

    fn filter(&self, id: usize) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    fn forget(&mut self, filter: &str) {
        if let Some(id) = self.by_filter.remove(filter) {
            self.by_id.remove(&id);
        }
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// Upstream subscriptions (remote filter → QoS).
    filters: BTreeMap<String, u8>,
    ids: SubscriptionIds,
    /// Filters sent in a SUBSCRIBE whose SUBACK has not come yet, in order
    /// (one filter per SUBSCRIBE; brokers answer in order).
    awaiting_suback: VecDeque<String>,
    /// Filters the broker has accepted on this connection: only these can be
    /// the representative in `copy_scope` (a filter still pending or refused
    /// would make the bridge drop the copies it does get).
    confirmed: HashSet<String>,
    /// Subscription requests not yet in rumqttc's channel.
    requests: VecDeque<Request>,
    /// Filters the connection died on while their SUBACK was awaited.
    suspects: HashSet<String>,
    /// The suspect sent alone, until its SUBACK.
    alone: Option<String>,
    /// The local filter each remote one stands for, where they differ.
    locals: HashMap<String, String>,
}

/// What became of a filter the broker was asked to subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Outcome {
    /// The local filter (as the engine named it).
    pub(super) filter: String,
    /// The broker accepted it.
    pub(super) accepted: bool,
    /// Why not, for the log.
    pub(super) reason: &'static str,
}

impl Subscriptions {
    /// Starts with `filters` (remote filter, QoS), sent at the first CONNACK.
    pub(super) fn new(filters: Vec<(String, u8)>) -> Self {
        Self {
            filters: filters.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Subscribes `filter` (or changes its QoS); the request goes out now
    /// when `connected`, at the next CONNACK otherwise. Returns whether a
    /// SUBSCRIBE was queued (its SUBACK will say what became of it).
    pub(super) fn subscribe(&mut self, filter: String, qos: u8, connected: bool) -> bool {
        let qos = qos.min(2);
        if self.filters.insert(filter.clone(), qos) != Some(qos) && connected {
            let id = self.ids.id(&filter);
            self.requests.push_back(Request::Subscribe(filter, qos, id));
            return true;
        }
        false
    }

    /// Unsubscribes `filter`, if subscribed.
    pub(super) fn unsubscribe(&mut self, filter: &str, connected: bool) {
        if self.filters.remove(filter).is_some() {
            self.ids.forget(filter);
            self.confirmed.remove(filter);
            self.suspects.remove(filter);
            self.locals.remove(filter);
            if connected {
                self.requests
                    .push_back(Request::Unsubscribe(filter.to_owned()));
            }
        }
    }

    /// Forgets every subscription (a device that starts a clean session).
    pub(super) fn forget_all(&mut self, connected: bool) {
        let filters: Vec<String> = self.filters.keys().cloned().collect();
        for f in &filters {
            self.unsubscribe(f, connected);
        }
    }

    /// A CONNACK: every filter is subscribed again, nothing is confirmed
    /// yet; suspects last, each alone.
    pub(super) fn resubscribe_all(&mut self) {
        self.requests.clear();
        self.awaiting_suback.clear();
        self.confirmed.clear();
        self.alone = None;
        let all: Vec<(String, u8)> = self.filters.iter().map(|(f, q)| (f.clone(), *q)).collect();
        let (suspects, clear): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|(f, _)| self.suspects.contains(f));
        for (filter, qos) in clear.into_iter().chain(suspects) {
            let id = self.ids.id(&filter);
            self.requests.push_back(Request::Subscribe(filter, qos, id));
        }
    }

    /// Records that remote `filter` stands for local `local`.
    pub(super) fn set_local(&mut self, filter: &str, local: &str) {
        if filter == local {
            self.locals.remove(filter);
        } else {
            self.locals.insert(filter.to_owned(), local.to_owned());
        }
    }

    fn local_of(&self, filter: &str) -> String {
        self.locals
            .get(filter)
            .cloned()
            .unwrap_or_else(|| filter.to_owned())
    }

    /// Drops `filter` from the set for good: the broker refused it.
    fn refuse(&mut self, filter: &str, reason: &'static str) -> Outcome {
        self.filters.remove(filter);
        self.ids.forget(filter);
        self.confirmed.remove(filter);
        self.suspects.remove(filter);
        let local = self.local_of(filter);
        self.locals.remove(filter);
        Outcome {
            filter: local,
            accepted: false,
            reason,
        }
    }

    /// The broker announced it does not support `filter` (wildcards or
    /// shared subscriptions): refused unsent.
    pub(super) fn refuse_unsent(&mut self, filter: &str, reason: &'static str) -> Outcome {
        self.refuse(filter, reason)
    }

    /// rumqttc would not take a SUBSCRIBE for `filter` (an invalid filter):
    /// refused.
    pub(super) fn rumqttc_refused(&mut self, filter: &str) -> Outcome {
        self.refuse(filter, "rumqttc would not send it")
    }

    /// The connection died after a CONNACK: the filters whose SUBACK was
    /// awaited become suspects; a suspect that was alone is refused.
    pub(super) fn isolate(&mut self) -> Vec<Outcome> {
        let mut out = Vec::new();
        if let Some(f) = self.alone.take()
            && self.awaiting_suback.contains(&f)
        {
            out.push(self.refuse(&f, "the broker closed the connection on it twice"));
        }
        for f in std::mem::take(&mut self.awaiting_suback) {
            if self.filters.contains_key(&f) {
                self.suspects.insert(f);
            }
        }
        out
    }

    /// Some filter's SUBACK is still awaited.
    pub(super) fn awaiting(&self) -> bool {
        !self.awaiting_suback.is_empty()
    }

    /// The connection is gone: requests not yet sent are dropped (the next
    /// CONNACK sends everything again).
    pub(super) fn clear_requests(&mut self) {
        self.requests.clear();
    }

    /// The next request for rumqttc's channel: none while a suspect is
    /// out alone, and a suspect only once nothing else awaits its SUBACK.
    pub(super) fn next_request(&mut self) -> Option<Request> {
        if self.alone.is_some() {
            return None;
        }
        if let Some(Request::Subscribe(f, ..)) = self.requests.front()
            && self.suspects.contains(f)
            && !self.awaiting_suback.is_empty()
        {
            return None;
        }
        self.requests.pop_front()
    }

    /// rumqttc took a SUBSCRIBE for `filter`: its SUBACK is awaited.
    pub(super) fn sent_subscribe(&mut self, filter: String) {
        if self.suspects.contains(&filter) {
            self.alone = Some(filter.clone());
        }
        self.awaiting_suback.push_back(filter);
    }

    /// A SUBACK (with how many of its filters were refused): what became
    /// of the filter it answers.
    pub(super) fn on_suback(&mut self, refused: usize) -> Option<Outcome> {
        let Some(filter) = self.awaiting_suback.pop_front() else {
            debug!("upstream: SUBACK for nothing awaited");
            return None;
        };
        if self.alone.as_ref() == Some(&filter) {
            self.alone = None;
        }
        self.suspects.remove(&filter);
        if !self.filters.contains_key(&filter) {
            // Unsubscribed meanwhile.
            return None;
        }
        if refused == 0 {
            self.confirmed.insert(filter.clone());
            Some(Outcome {
                filter: self.local_of(&filter),
                accepted: true,
                reason: "",
            })
        } else {
            Some(self.refuse(&filter, "refused in the broker's SUBACK"))
        }
    }

    /// Whether a subscribed filter matches `topic`.
    pub(super) fn any_matches(&self, topic: &str) -> bool {
        self.filters
            .keys()
            .any(|f| crate::core::topic::matches(f, topic))
    }

    /// Which copy of a message to pass on when overlapping upstream
    /// subscriptions make the broker send one copy per subscription (MQTT 5,
    /// e.g. mosquitto). `Some(None)`: pass it to every subscriber;
    /// `Some(Some(filter))`: pass it only to subscribers of `filter`;
    /// `None`: a duplicate, drop it. `transparent`: no rules, so local
    /// filters equal remote ones.
    ///
    /// - A retained copy carrying one identifier (the broker's answer to that
    ///   subscription, or its per-subscription copy of a retained update)
    ///   goes to that filter's subscribers only; the engine skips it for
    ///   them when its store already holds the same value.
    /// - Otherwise the copy passed on is the one carrying the identifier of
    ///   the smallest of our *confirmed* filters that match the topic:
    ///   exactly one copy carries it, whether the broker sends one copy per
    ///   subscription or one with every identifier. Filters still awaiting
    ///   their SUBACK, or refused, are never the representative, so the
    ///   copies the broker does send are not mistaken for duplicates.
    /// - Without identifiers (MQTT 3.1.1, or a broker that omits them) every
    ///   copy passes (see docs/bridge.md).
    pub(super) fn copy_scope(
        &self,
        topic: &str,
        ids: &[usize],
        retain: bool,
        transparent: bool,
    ) -> Option<Option<String>> {
        if ids.is_empty() {
            return Some(None);
        }
        if retain
            && let [id] = ids
            && transparent
            && let Some(filter) = self.ids.filter(*id)
        {
            return Some(Some(filter.to_owned()));
        }
        let representative = self
            .filters
            .keys()
            .filter(|f| self.confirmed.contains(*f))
            .find(|f| crate::core::topic::matches(f, topic))
            .and_then(|f| self.ids.get(f));
        match representative {
            None => Some(None),
            Some(rep) if ids.contains(&rep) => Some(None),
            Some(_) if retain => Some(None),
            Some(_) => None,
        }
    }
}
