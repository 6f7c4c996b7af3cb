//! The bridge's own outbox: every message on its way to the broker, in order,
//! from the moment the driver hands it over until the broker acknowledges it
//! (PUBACK for QoS 1, PUBCOMP for QoS 2) or it is sent (QoS 0).
//!
//! This module is pure bookkeeping, so the delicate cases are unit tested
//! without a broker. rumqttc's own queues are kept small and are never
//! trusted with a message's fate:
//!
//! - messages enter rumqttc's request channel only while connected, and at
//!   most a window's worth at a time ([`Outbox::in_flight`]);
//! - rumqttc reports, in request order, the packet id it gave each publish
//!   (`Outgoing::Publish(pkid)`, or `Outgoing::AwaitAck(pkid)` when the id
//!   collided), which is how acknowledgements are matched to entries here;
//! - when the connection drops, [`Outbox::connection_lost`] puts everything
//!   that never reached the wire back in the queue (in order) and returns the
//!   replay list for what did: a PUBLISH with the same packet id and DUP set,
//!   or a PUBREL for a QoS 2 message the broker already PUBREC'd. The caller
//!   replaces rumqttc's `pending` list with exactly that list, in message
//!   order (rumqttc's own list is in packet-id order, which reorders after a
//!   packet-id wrap, and it includes requests we rebuild anyway);
//! - on the next CONNACK, [`Outbox::connected`]: if the broker kept the
//!   session, rumqttc sends the replays (same ids, so the broker's duplicate
//!   detection for QoS 2 works); if it did not (rumqttc then drops its
//!   pending list), every unacknowledged message is queued again and sent
//!   afresh, before anything newer.
//!
//! QoS 0 messages are sent in order with the rest while connected; those not
//! yet sent when the connection drops are dropped (and counted by the
//! caller). The outbox is bounded by a message count and a byte count
//! (topic + payload); a message beyond either bound is refused.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;

/// One message for the broker, already mapped to its remote topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Remote topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0..=2 as sent upstream.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Its id in the durable store, reported settled when it leaves.
    pub store_id: Option<u64>,
    /// An acknowledgement owed to its sender (a device's QoS 1/2 message in
    /// per-device mode), by the session's ticket number: answered when the
    /// message leaves ([`Outbox::take_answered`]) or earlier
    /// ([`Outbox::release_tickets`]).
    pub ticket: Option<u64>,
}

impl OutMessage {
    fn cost(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// What to put in rumqttc's pending list after a connection loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Resend this PUBLISH with its packet id and the DUP flag.
    Publish {
        /// The packet id it was first sent with.
        pkid: u16,
        /// The message.
        msg: OutMessage,
    },
    /// Resend PUBREL for this packet id (QoS 2, PUBREC already received).
    PubRel(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting in our queue.
    Queued,
    /// Handed to rumqttc's request channel; packet id not known yet.
    Submitted,
    /// Got packet id `pkid` but waits for it to be free (rumqttc collision).
    Collided(u16),
    /// On the wire with `pkid`; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(u16),
    /// QoS 2: PUBREC received, PUBREL sent; waiting for PUBCOMP.
    Released(u16),
}

#[derive(Debug)]
struct Entry {
    msg: OutMessage,
    state: State,
}

/// Why [`Outbox::push`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The count or byte bound is reached.
    Full,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// It completed a message (the broker has it).
    Completed,
    /// The broker refused the message (error reason code); it is removed.
    Rejected,
    /// It matched nothing here (stale, or a protocol oddity).
    Unmatched,
    /// A QoS 2 message progressed (PUBREC); PUBCOMP still to come.
    Progressed,
}

/// The ordered, bounded outbox. See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    max_messages: usize,
    max_bytes: usize,
    bytes: usize,
    next_seq: u64,
    entries: BTreeMap<u64, Entry>,
    /// Sequence numbers in state `Queued`, in order.
    queue: VecDeque<u64>,
    /// Sequence numbers in state `Submitted`, in submission order.
    submitted: VecDeque<u64>,
    /// Packet id → sequence numbers holding it (`Collided`, `Sent`,
    /// `Released`); usually one, two when rumqttc reused an id.
    by_pkid: HashMap<u16, Vec<u64>>,
    /// Packet ids whose PUBLISH sits in rumqttc's pending list.
    replay_publish: HashSet<u16>,
    /// Packet ids whose PUBREL sits in rumqttc's pending list (an id can be
    /// in both: a QoS 1 message may reuse the id of a released QoS 2 one).
    replay_pubrel: HashSet<u16>,
    /// Durable ids of messages that left, until taken.
    settled: Vec<u64>,
    /// Tickets of messages that left, with whether the broker took them,
    /// until taken.
    answered: Vec<(u64, bool)>,
}

impl Outbox {
    /// An empty outbox bounded by `max_messages` and `max_bytes`.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
            bytes: 0,
            next_seq: 0,
            entries: BTreeMap::new(),
            queue: VecDeque::new(),
            submitted: VecDeque::new(),
            by_pkid: HashMap::new(),
            replay_publish: HashSet::new(),
            replay_pubrel: HashSet::new(),
            settled: Vec::new(),
            answered: Vec::new(),
        }
    }

    /// Messages held (queued or not yet acknowledged).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Topic and payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages handed to rumqttc and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.entries.len() - self.queue.len()
    }

    /// Messages waiting in the queue (not handed to rumqttc).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Packet ids whose replay (PUBLISH or PUBREL) rumqttc has yet to send.
    pub fn replaying(&self) -> usize {
        self.replay_publish.len() + self.replay_pubrel.len()
    }

    /// Removes the next queued message (rumqttc refused it outright, e.g.
    /// an invalid topic) and returns it.
    pub fn discard_queued(&mut self) -> Option<OutMessage> {
        let seq = self.queue.pop_front()?;
        let msg = self.entries.get(&seq).map(|e| e.msg.clone());
        self.remove(seq, false);
        msg
    }

    /// Durable ids of the messages that left since the last call (delivered,
    /// refused by the broker, or discarded), for the store to forget.
    pub fn take_settled(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.settled)
    }

    /// Tickets of the messages that left since the last call: `true` when
    /// the broker has them (PUBACK, PUBCOMP), `false` when it refused them
    /// or they were discarded.
    pub fn take_answered(&mut self) -> Vec<(u64, bool)> {
        std::mem::take(&mut self.answered)
    }

    /// Takes the tickets of every message still held (they will be answered
    /// now, not when the messages leave).
    pub fn release_tickets(&mut self) -> Vec<u64> {
        self.entries
            .values_mut()
            .filter_map(|e| e.msg.ticket.take())
            .collect()
    }

    /// Removes every message and returns them in order (a session handing
    /// what it could not deliver to another); their durable ids and tickets
    /// travel with them. Except QoS 2 messages the broker has PUBREC'd
    /// already (`Released`): those belong to the broker, so they are settled
    /// here (ticket answered as taken) instead of being handed over and
    /// delivered twice.
    pub fn drain_all(&mut self) -> Vec<OutMessage> {
        let mut out = Vec::with_capacity(self.entries.len());
        for e in std::mem::take(&mut self.entries).into_values() {
            if let State::Released(_) = e.state {
                self.settled.extend(e.msg.store_id);
                if let Some(ticket) = e.msg.ticket {
                    self.answered.push((ticket, true));
                }
            } else {
                out.push(e.msg);
            }
        }
        self.bytes = 0;
        self.queue.clear();
        self.submitted.clear();
        self.by_pkid.clear();
        self.replay_publish.clear();
        self.replay_pubrel.clear();
        out
    }

    /// Appends a message, or refuses it when a bound is reached.
    pub fn push(&mut self, msg: OutMessage) -> Result<(), Refused> {
        if self.entries.len() >= self.max_messages || self.bytes + msg.cost() > self.max_bytes {
            return Err(Refused::Full);
        }
        self.push_unbounded(msg);
        Ok(())
    }

    /// Appends a message whatever the bounds: one restored from the durable
    /// store, which was acknowledged to its sender before the restart and
    /// must not be dropped now.
    pub fn push_unbounded(&mut self, msg: OutMessage) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += msg.cost();
        self.entries.insert(
            seq,
            Entry {
                msg,
                state: State::Queued,
            },
        );
        self.queue.push_back(seq);
    }

    /// The next queued message, without taking it.
    pub fn peek_queued(&self) -> Option<&OutMessage> {
        let seq = self.queue.front()?;
        self.entries.get(seq).map(|e| &e.msg)
    }

    /// Marks the message [`peek_queued`](Self::peek_queued) returned as handed
    /// to rumqttc's request channel.
    pub fn mark_submitted(&mut self) {
        if let Some(seq) = self.queue.pop_front() {
            if let Some(e) = self.entries.get_mut(&seq) {
                e.state = State::Submitted;
            }
            self.submitted.push_back(seq);
        }
    }

    /// rumqttc wrote a PUBLISH with `pkid` (0 for QoS 0). Returns the QoS of
    /// the message it belonged to when it was a new one, `None` for a replay
    /// or a collision resolved.
    pub fn on_outgoing_publish(&mut self, pkid: u16) -> Option<u8> {
        if pkid != 0 {
            if self.replay_publish.remove(&pkid) {
                return None;
            }
            if let Some(seq) = self.find(pkid, |s| s == State::Collided(pkid)) {
                if let Some(e) = self.entries.get_mut(&seq) {
                    e.state = State::Sent(pkid);
                }
                return None;
            }
        }
        let seq = self.submitted.pop_front()?;
        let qos = self.entries.get(&seq).map(|e| e.msg.qos)?;
        if qos == 0 {
            self.remove(seq, true);
        } else {
            self.assign(seq, State::Sent(pkid));
        }
        Some(qos)
    }

    /// rumqttc gave the next submitted message `pkid` but holds it back
    /// until that id is acknowledged (a collision).
    pub fn on_await_ack(&mut self, pkid: u16) {
        if let Some(seq) = self.submitted.pop_front() {
            self.assign(seq, State::Collided(pkid));
        }
    }

    /// rumqttc wrote a PUBREL for `pkid` (possibly a replay).
    pub fn on_outgoing_pubrel(&mut self, pkid: u16) {
        self.replay_pubrel.remove(&pkid);
    }

    /// PUBACK for `pkid`, `ok` when its reason code is a success.
    pub fn on_puback(&mut self, pkid: u16, ok: bool) -> Ack {
        match self.find(pkid, |s| s == State::Sent(pkid)) {
            Some(seq) if self.entries.get(&seq).is_some_and(|e| e.msg.qos == 1) => {
                self.remove(seq, ok);
                if ok { Ack::Completed } else { Ack::Rejected }
            }
            _ => Ack::Unmatched,
        }
    }

    /// PUBREC for `pkid`, `ok` when its reason code is a success (rumqttc
    /// then sends PUBREL; on an error code it sends nothing more).
    pub fn on_pubrec(&mut self, pkid: u16, ok: bool) -> Ack {
        let found = self.find(pkid, |s| s == State::Sent(pkid));
        match found {
            Some(seq) if self.entries.get(&seq).is_some_and(|e| e.msg.qos == 2) => {
                if ok {
                    if let Some(e) = self.entries.get_mut(&seq) {
                        e.state = State::Released(pkid);
                    }
                    Ack::Progressed
                } else {
                    self.remove(seq, false);
                    Ack::Rejected
                }
            }
            _ => Ack::Unmatched,
        }
    }

    /// PUBCOMP for `pkid`.
    pub fn on_pubcomp(&mut self, pkid: u16) -> Ack {
        match self.find(pkid, |s| s == State::Released(pkid)) {
            Some(seq) => {
                self.remove(seq, true);
                Ack::Completed
            }
            None => Ack::Unmatched,
        }
    }

    /// The connection dropped (rumqttc's request channel and state are gone).
    /// Returns the replay list, in message order, and how many QoS 0
    /// messages were dropped. Safe to call again after a failed reconnect.
    pub fn connection_lost(&mut self, keep_qos0: bool) -> (Vec<Replay>, usize) {
        let mut dropped = 0;
        let mut replays = Vec::new();
        let mut doomed = Vec::new();
        self.submitted.clear();
        self.replay_publish.clear();
        self.replay_pubrel.clear();
        for (&seq, e) in self.entries.iter_mut() {
            match e.state {
                State::Queued | State::Submitted | State::Collided(_)
                    if e.msg.qos == 0 && !keep_qos0 =>
                {
                    doomed.push(seq);
                }
                State::Queued | State::Submitted | State::Collided(_) => e.state = State::Queued,
                State::Sent(pkid) => {
                    replays.push(Replay::Publish {
                        pkid,
                        msg: e.msg.clone(),
                    });
                    self.replay_publish.insert(pkid);
                }
                State::Released(pkid) => {
                    replays.push(Replay::PubRel(pkid));
                    self.replay_pubrel.insert(pkid);
                }
            }
        }
        for seq in doomed {
            self.remove(seq, false);
            dropped += 1;
        }
        for seqs in self.by_pkid.values_mut() {
            seqs.retain(|s| {
                self.entries
                    .get(s)
                    .is_some_and(|e| matches!(e.state, State::Sent(_) | State::Released(_)))
            });
        }
        self.by_pkid.retain(|_, seqs| !seqs.is_empty());
        self.rebuild_queue();
        (replays, dropped)
    }

    /// A CONNACK arrived. When the broker has no session for us
    /// (`session_present` false), every unacknowledged message is queued to
    /// be sent afresh; returns how many.
    pub fn connected(&mut self, session_present: bool) -> usize {
        if session_present {
            return 0;
        }
        self.replay_publish.clear();
        self.replay_pubrel.clear();
        self.by_pkid.clear();
        let mut requeued = 0;
        for e in self.entries.values_mut() {
            if matches!(e.state, State::Sent(_) | State::Released(_)) {
                e.state = State::Queued;
                requeued += 1;
            }
        }
        self.rebuild_queue();
        requeued
    }

    fn rebuild_queue(&mut self) {
        self.queue = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Queued)
            .map(|(&s, _)| s)
            .collect();
    }

    fn assign(&mut self, seq: u64, state: State) {
        let pkid = match state {
            State::Collided(p) | State::Sent(p) | State::Released(p) => p,
            State::Queued | State::Submitted => return,
        };
        if let Some(e) = self.entries.get_mut(&seq) {
            e.state = state;
            self.by_pkid.entry(pkid).or_default().push(seq);
        }
    }

    /// The oldest entry holding `pkid` whose state satisfies `want`.
    fn find(&self, pkid: u16, want: impl Fn(State) -> bool) -> Option<u64> {
        self.by_pkid
            .get(&pkid)?
            .iter()
            .copied()
            .find(|s| self.entries.get(s).is_some_and(|e| want(e.state)))
    }

    /// Forgets an entry that is not in `queue` (callers in `Queued` state
    /// rebuild the queue afterwards).
    fn remove(&mut self, seq: u64, taken: bool) {
        let Some(e) = self.entries.remove(&seq) else {
            return;
        };
        if let Some(id) = e.msg.store_id {
            self.settled.push(id);
        }
        if let Some(ticket) = e.msg.ticket {
            self.answered.push((ticket, taken));
        }
        self.bytes -= e.msg.cost();
        if let State::Collided(p) | State::Sent(p) | State::Released(p) = e.state
            && let Some(seqs) = self.by_pkid.get_mut(&p)
        {
            seqs.retain(|&s| s != seq);
            if seqs.is_empty() {
                self.by_pkid.remove(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32, qos: u8) -> OutMessage {
        OutMessage {
            store_id: None,
            ticket: None,
            topic: "t".into(),
            payload: Bytes::from(n.to_string()),
            qos,
            retain: false,
        }
    }

    fn payload(m: &OutMessage) -> String {
        String::from_utf8(m.payload.to_vec()).unwrap()
    }

    /// Submits everything queued (like the bridge task does while connected).
    fn submit_all(o: &mut Outbox) -> usize {
        let mut n = 0;
        while o.peek_queued().is_some() {
            o.mark_submitted();
            n += 1;
        }
        n
    }

    #[test]
    fn qos1_completes_on_puback() {
        let mut o = Outbox::new(10, 1000);
        o.push(msg(1, 1)).unwrap();
        o.push(msg(2, 0)).unwrap();
        assert_eq!(submit_all(&mut o), 2);
        assert_eq!(o.on_outgoing_publish(1), Some(1));
        assert_eq!(o.on_outgoing_publish(0), Some(0));
        assert_eq!(o.len(), 1, "QoS 0 done once written");
        assert_eq!(o.on_puback(7, true), Ack::Unmatched);
        assert_eq!(o.on_puback(1, true), Ack::Completed);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn qos2_needs_pubrec_then_pubcomp() {
        let mut o = Outbox::new(10, 1000);
        o.push(msg(1, 2)).unwrap();
        submit_all(&mut o);
        o.on_outgoing_publish(3);
        assert_eq!(o.on_puback(3, true), Ack::Unmatched, "wrong ack kind");
        assert_eq!(o.on_pubcomp(3), Ack::Unmatched, "too early");
        assert_eq!(o.on_pubrec(3, true), Ack::Progressed);
        assert_eq!(o.on_pubcomp(3), Ack::Completed);
        assert!(o.is_empty());
    }

    #[test]
    fn rejections_remove_the_message() {
        let mut o = Outbox::new(10, 1000);
        o.push(msg(1, 1)).unwrap();
        o.push(msg(2, 2)).unwrap();
        submit_all(&mut o);
        o.on_outgoing_publish(1);
        o.on_outgoing_publish(2);
        assert_eq!(o.on_puback(1, false), Ack::Rejected);
        assert_eq!(o.on_pubrec(2, false), Ack::Rejected);
        assert!(o.is_empty());
    }

    fn ticketed(n: u32, qos: u8, ticket: u64) -> OutMessage {
        OutMessage {
            ticket: Some(ticket),
            store_id: Some(u64::from(n)),
            ..msg(n, qos)
        }
    }

    #[test]
    fn tickets_are_answered_when_their_messages_leave() {
        let mut o = Outbox::new(10, 1000);
        o.push(ticketed(1, 1, 10)).unwrap();
        o.push(ticketed(2, 2, 20)).unwrap();
        o.push(ticketed(3, 1, 30)).unwrap();
        submit_all(&mut o);
        o.on_outgoing_publish(1);
        o.on_outgoing_publish(2);
        o.on_outgoing_publish(3);
        assert_eq!(o.on_puback(1, true), Ack::Completed);
        assert_eq!(o.on_pubrec(2, true), Ack::Progressed);
        assert_eq!(
            o.take_answered(),
            vec![(10, true)],
            "QoS 2 waits for PUBCOMP"
        );
        assert_eq!(o.on_pubcomp(2), Ack::Completed);
        assert_eq!(o.on_puback(3, false), Ack::Rejected);
        assert_eq!(o.take_answered(), vec![(20, true), (30, false)]);
        assert_eq!(o.take_settled(), vec![1, 2, 3]);
        assert!(o.take_answered().is_empty());
    }

    #[test]
    fn released_tickets_are_not_answered_again() {
        let mut o = Outbox::new(10, 1000);
        o.push(ticketed(1, 1, 10)).unwrap();
        o.push(ticketed(2, 1, 20)).unwrap();
        submit_all(&mut o);
        o.on_outgoing_publish(1);
        let _ = o.connection_lost(false);
        assert_eq!(o.release_tickets(), vec![10, 20]);
        assert!(o.release_tickets().is_empty());
        o.connected(true);
        assert_eq!(o.on_puback(1, true), Ack::Completed);
        assert!(o.take_answered().is_empty(), "answered when released");
        assert_eq!(o.take_settled(), vec![1], "still settled in the store");
    }

    #[test]
    fn drain_all_hands_everything_over_in_order() {
        let mut o = Outbox::new(10, 1000);
        for n in 1..=3 {
            o.push(ticketed(n, 1, u64::from(n))).unwrap();
        }
        submit_all(&mut o);
        o.on_outgoing_publish(1);
        let all = o.drain_all();
        assert_eq!(all.iter().map(payload).collect::<Vec<_>>(), ["1", "2", "3"]);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
        assert_eq!(o.in_flight(), 0);
        assert!(
            o.take_settled().is_empty(),
            "their store ids travel with them"
        );
        assert_eq!(o.on_puback(1, true), Ack::Unmatched);
    }

    #[test]
    fn drain_all_settles_what_the_broker_has_pubreced() {
        let mut o = Outbox::new(10, 1000);
        o.push(ticketed(1, 2, 10)).unwrap();
        o.push(ticketed(2, 2, 20)).unwrap();
        o.push(ticketed(3, 1, 30)).unwrap();
        submit_all(&mut o);
        o.on_outgoing_publish(1);
        o.on_outgoing_publish(2);
        assert_eq!(o.on_pubrec(1, true), Ack::Progressed);
        let rest = o.drain_all();
        assert_eq!(
            rest.iter().map(payload).collect::<Vec<_>>(),
            ["2", "3"],
            "the PUBREC'd one is the broker's: not handed over"
        );
        assert_eq!(o.take_settled(), vec![1]);
        assert_eq!(o.take_answered(), vec![(10, true)]);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn bounds_refuse_new_messages() {
        let mut o = Outbox::new(2, 1000);
        o.push(msg(1, 1)).unwrap();
        o.push(msg(2, 1)).unwrap();
        assert_eq!(o.push(msg(3, 1)), Err(Refused::Full));
        let mut o = Outbox::new(100, 5);
        o.push(msg(1, 1)).unwrap(); // "t" + "1" = 2 bytes
        o.push(msg(2, 1)).unwrap();
        assert_eq!(o.push(msg(3, 1)), Err(Refused::Full));
        assert_eq!(o.bytes(), 4);
    }

    #[test]
    fn loss_without_session_resends_everything_in_order() {
        let mut o = Outbox::new(100, 10_000);
        for n in 0..6 {
            o.push(msg(n, if n == 3 { 0 } else { 1 })).unwrap();
        }
        o.push(msg(6, 2)).unwrap();
        // 0..=3 written (3 is QoS 0), 4 and 5 still in the channel, 6 queued.
        for _ in 0..6 {
            o.mark_submitted();
        }
        assert_eq!(o.on_outgoing_publish(18), Some(1));
        assert_eq!(o.on_outgoing_publish(19), Some(1));
        assert_eq!(o.on_outgoing_publish(1), Some(1)); // packet ids wrapped
        assert_eq!(o.on_outgoing_publish(0), Some(0));
        assert_eq!(o.on_puback(19, true), Ack::Completed);
        let (replays, dropped) = o.connection_lost(false);
        assert_eq!(dropped, 0);
        let ids: Vec<_> = replays
            .iter()
            .map(|r| match r {
                Replay::Publish { pkid, .. } => *pkid,
                Replay::PubRel(p) => *p,
            })
            .collect();
        assert_eq!(ids, vec![18, 1], "message order, not packet-id order");
        assert_eq!(o.queued(), 3, "4, 5 back in the queue, 6 still there");
        // Broker restarted: no session.
        assert_eq!(o.connected(false), 2);
        let mut order = Vec::new();
        while let Some(m) = o.peek_queued() {
            order.push(payload(m));
            o.mark_submitted();
        }
        assert_eq!(order, ["0", "2", "4", "5", "6"]);
    }

    #[test]
    fn loss_with_session_replays_same_ids_then_new_ones() {
        let mut o = Outbox::new(100, 10_000);
        o.push(msg(0, 1)).unwrap();
        o.push(msg(1, 2)).unwrap();
        o.push(msg(2, 2)).unwrap();
        submit_all(&mut o);
        o.on_outgoing_publish(5);
        o.on_outgoing_publish(6);
        o.on_outgoing_publish(7);
        assert_eq!(o.on_pubrec(6, true), Ack::Progressed);
        o.push(msg(3, 1)).unwrap();
        let (replays, _) = o.connection_lost(false);
        assert_eq!(replays.len(), 3);
        assert!(matches!(&replays[0], Replay::Publish { pkid: 5, msg } if payload(msg) == "0"));
        assert_eq!(replays[1], Replay::PubRel(6));
        assert!(matches!(&replays[2], Replay::Publish { pkid: 7, .. }));
        // A failed reconnect in between gives the same list again.
        assert_eq!(o.connection_lost(false).0, replays);
        assert_eq!(o.connected(true), 0);
        // rumqttc sends the replays first: they do not consume submissions.
        o.on_outgoing_publish(5);
        o.on_outgoing_pubrel(6);
        o.on_outgoing_publish(7);
        assert_eq!(submit_all(&mut o), 1);
        assert_eq!(o.on_outgoing_publish(8), Some(1));
        for (ack, want) in [
            (o.on_puback(5, true), Ack::Completed),
            (o.on_pubcomp(6), Ack::Completed),
            (o.on_pubrec(7, true), Ack::Progressed),
            (o.on_pubcomp(7), Ack::Completed),
            (o.on_puback(8, true), Ack::Completed),
        ] {
            assert_eq!(ack, want);
        }
        assert!(o.is_empty());
    }

    #[test]
    fn qos0_not_yet_written_is_dropped_on_loss() {
        let mut o = Outbox::new(100, 10_000);
        o.push(msg(0, 0)).unwrap();
        o.push(msg(1, 1)).unwrap();
        o.push(msg(2, 0)).unwrap();
        o.mark_submitted();
        let (replays, dropped) = o.connection_lost(false);
        assert!(replays.is_empty());
        assert_eq!(dropped, 2);
        assert_eq!(o.len(), 1);
        assert_eq!(payload(o.peek_queued().unwrap()), "1");
    }

    #[test]
    fn collision_then_resolution() {
        let mut o = Outbox::new(100, 10_000);
        o.push(msg(0, 1)).unwrap();
        o.push(msg(1, 1)).unwrap();
        submit_all(&mut o);
        assert_eq!(o.on_outgoing_publish(1), Some(1));
        o.on_await_ack(1); // second message got id 1 too, held back
        assert_eq!(o.on_puback(1, true), Ack::Completed); // completes the first
        assert_eq!(o.on_outgoing_publish(1), None); // the held one goes out
        assert_eq!(o.on_puback(1, true), Ack::Completed);
        assert!(o.is_empty());
    }

    #[test]
    fn replays_sharing_an_id_do_not_steal_new_submissions() {
        let mut o = Outbox::new(100, 10_000);
        o.push(msg(0, 2)).unwrap();
        o.push(msg(1, 1)).unwrap();
        o.mark_submitted();
        o.on_outgoing_publish(4);
        o.on_pubrec(4, true); // QoS 2 released, id 4 free in rumqttc's table
        o.mark_submitted();
        o.on_outgoing_publish(4); // QoS 1 reuses id 4
        let (replays, _) = o.connection_lost(false);
        assert_eq!(replays.len(), 2);
        o.connected(true);
        o.push(msg(2, 1)).unwrap();
        o.mark_submitted();
        o.on_outgoing_pubrel(4); // replay of the PUBREL
        assert_eq!(
            o.on_outgoing_publish(4),
            None,
            "replay of the QoS 1 PUBLISH"
        );
        assert_eq!(o.on_outgoing_publish(5), Some(1), "the new message");
        assert_eq!(o.on_pubcomp(4), Ack::Completed);
        assert_eq!(o.on_puback(4, true), Ack::Completed);
        assert_eq!(o.on_puback(5, true), Ack::Completed);
        assert!(o.is_empty());
    }

    #[test]
    fn qos1_and_qos2_sharing_an_id() {
        // rumqttc frees a QoS 2 id from its publish table at PUBREC, so a
        // QoS 1 message can get the same id while PUBCOMP is outstanding.
        let mut o = Outbox::new(100, 10_000);
        o.push(msg(0, 2)).unwrap();
        o.push(msg(1, 1)).unwrap();
        o.mark_submitted();
        o.on_outgoing_publish(4);
        o.on_pubrec(4, true);
        o.mark_submitted();
        o.on_outgoing_publish(4);
        assert_eq!(o.on_puback(4, true), Ack::Completed);
        assert_eq!(o.on_pubcomp(4), Ack::Completed);
        assert!(o.is_empty());
    }
}
