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
    /// On the wire, unanswered, when a connection died: a suspect, sent
    /// alone from then on (see [`Outbox::isolate_suspects`]).
    suspect: bool,
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
    /// The newest message the broker completed on this connection.
    done_seq: Option<u64>,
    /// Suspects handed to rumqttc and not finished (nothing else is sent
    /// meanwhile).
    suspects_out: usize,
    /// Messages the broker refused by reason code, with the code, until
    /// taken.
    refused: Vec<(OutMessage, u8)>,
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
            done_seq: None,
            suspects_out: 0,
            refused: Vec::new(),
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
                suspect: false,
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
                self.suspects_out += usize::from(e.suspect);
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

    /// PUBACK for `pkid` with its reason code.
    pub fn on_puback(&mut self, pkid: u16, code: u8) -> Ack {
        let ok = code < 0x80;
        match self.find(pkid, |s| s == State::Sent(pkid)) {
            Some(seq) if self.entries.get(&seq).is_some_and(|e| e.msg.qos == 1) => {
                if ok {
                    self.done_seq = self.done_seq.max(Some(seq));
                    self.remove(seq, true);
                    Ack::Completed
                } else {
                    self.refuse(seq, code);
                    Ack::Rejected
                }
            }
            _ => Ack::Unmatched,
        }
    }

    /// PUBREC for `pkid` with its reason code (rumqttc then sends PUBREL;
    /// on an error code, 0x80 and above, it sends nothing more).
    pub fn on_pubrec(&mut self, pkid: u16, code: u8) -> Ack {
        let ok = code < 0x80;
        let found = self.find(pkid, |s| s == State::Sent(pkid));
        match found {
            Some(seq) if self.entries.get(&seq).is_some_and(|e| e.msg.qos == 2) => {
                if ok {
                    if let Some(e) = self.entries.get_mut(&seq) {
                        e.state = State::Released(pkid);
                        // The broker has it: innocent.
                        if std::mem::take(&mut e.suspect) {
                            self.suspects_out = self.suspects_out.saturating_sub(1);
                        }
                    }
                    self.done_seq = self.done_seq.max(Some(seq));
                    Ack::Progressed
                } else {
                    self.refuse(seq, code);
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
                self.done_seq = self.done_seq.max(Some(seq));
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
        self.done_seq = None;
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
        self.suspects_out = self
            .entries
            .values()
            .filter(|e| e.suspect && e.state != State::Queued)
            .count();
    }

    /// The broker refused the message `seq` with an error reason `code`.
    fn refuse(&mut self, seq: u64, code: u8) {
        if let Some(e) = self.entries.get(&seq) {
            self.refused.push((e.msg.clone(), code));
        }
        self.remove(seq, false);
    }

    /// Messages the broker refused by reason code since the last call, with
    /// the code.
    pub fn take_refused(&mut self) -> Vec<(OutMessage, u8)> {
        std::mem::take(&mut self.refused)
    }

    /// Whether the next queued message is a suspect.
    pub fn head_is_suspect(&self) -> bool {
        self.queue
            .front()
            .and_then(|s| self.entries.get(s))
            .is_some_and(|e| e.suspect)
    }

    /// Whether a suspect is out (handed to rumqttc, unanswered): nothing
    /// else may be sent until it is answered.
    pub fn suspect_out(&self) -> bool {
        self.suspects_out > 0
    }

    /// The connection died (call before [`connection_lost`](Self::connection_lost),
    /// only when it had been accepted): a broker that refuses a message by
    /// closing the connection (MQTT 3.1.1, or mosquitto on an invalid topic)
    /// is told apart from a network fault here. Every QoS 1/2 message on
    /// the wire and unanswered, sent after the newest one the broker
    /// completed (a broker handles a connection's packets in order, so
    /// the one it choked on is among these), becomes a suspect: queued
    /// again (not replayed) to be sent alone. A suspect that was alone on
    /// the wire when the connection died again is the culprit: it is
    /// removed and returned, to be quarantined. So one refused message
    /// costs at most two connections.
    /// Returns the culprits and how many messages became suspects.
    pub fn isolate_suspects(&mut self) -> (Vec<OutMessage>, usize) {
        let done = self.done_seq.take();
        let mut culprits = Vec::new();
        let mut seqs = Vec::new();
        for (&seq, e) in self.entries.iter_mut() {
            if !matches!(e.state, State::Sent(_)) || done.is_some_and(|d| seq <= d) {
                continue;
            }
            if e.suspect {
                culprits.push(seq);
            } else {
                e.suspect = true;
                seqs.push(seq);
            }
        }
        let seqs_len = seqs.len();
        for seq in seqs {
            self.unassign(seq);
        }
        let mut out = Vec::with_capacity(culprits.len());
        for seq in culprits {
            if let Some(e) = self.entries.get(&seq) {
                out.push(e.msg.clone());
            }
            self.remove(seq, false);
        }
        self.rebuild_queue();
        (out, seqs_len)
    }

    /// Puts a message on the wire back in the queue, forgetting its packet
    /// id.
    fn unassign(&mut self, seq: u64) {
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        if let State::Collided(p) | State::Sent(p) | State::Released(p) = e.state
            && let Some(seqs) = self.by_pkid.get_mut(&p)
        {
            seqs.retain(|&s| s != seq);
            if seqs.is_empty() {
                self.by_pkid.remove(&p);
            }
        }
        e.state = State::Queued;
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
        if e.suspect && e.state != State::Queued {
            self.suspects_out = self.suspects_out.saturating_sub(1);
        }
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
mod tests;
