//! The outbox linger: a device's QoS 1/2 message bound upstream is
//! acknowledged on its first safe copy, and written to the store only if
//! the broker is slow to take it.
//!
//! With the store on and the bridge connected, such a message goes upstream
//! at once, but its outbox record is held here instead of being written,
//! together with the device's PUBACK/PUBREC, for
//! [`EngineConfig::outbox_linger`](super::EngineConfig::outbox_linger).
//! Then whichever comes first:
//! - the bridge reports it settled (the broker acknowledged it):
//!   [`Gateway::handle_settled`] releases the device's acknowledgement and
//!   forgets the record, which never reached the disk (nor does its delete);
//! - the linger is over, the bridge lost the broker, or the gateway is
//!   shutting down: the record is written (a `StoreOp::PutOutbox` in the
//!   next commit) and the acknowledgement released behind it — the driver
//!   commits before it carries out the outputs of the same batch, so the
//!   device hears of it only once it is on disk, as without the linger.
//!
//! Nothing acknowledged is ever only in memory: before the device's
//! acknowledgement leaves, either the broker has the message or the store
//! does. A crash inside the linger loses only what the device was not told
//! was safe, and the device sends it again.
//!
//! Per-device mode, on the same rule: the device's acknowledgement travels
//! with the message as an [`UpstreamAck`] token and comes back through
//! [`Gateway::handle_session_ack`] when the broker has it; the linger saves
//! the write when that happens in time. When the linger runs out first, the
//! record is written and the device acknowledged behind the commit, and the
//! broker's later acknowledgement is not passed on twice. An
//! acknowledgement that did not come from the broker (the session queued
//! the message while down) writes a record still held before it leaves.
//!
//! While the broker lags for many devices at once — [`LAGGING_BATCH`]
//! lingers or more ran out together — the store takes every new message at
//! once for [`LAGGING_HOLD`], as with no linger: a device then waits for
//! one group commit rather than for the linger *and* the commit, and the
//! many devices share each commit. After the hold, messages linger again
//! (a probe: if the broker still lags, the hold starts anew). A few devices
//! never enter it: one slow acknowledgement costs one write, not a second
//! of them.
//!
//! The core never reads a clock: deadlines are the `now` of the input that
//! created them plus the linger, fired by `handle_timeout`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sngate_wire::v1::Packet;

use super::gateway::Gateway;
use super::output::UpstreamAck;
use super::persist::{OutboxRecord, StoreOp};
use super::session::SessionId;

/// One message whose outbox record waits for the broker.
#[derive(Debug)]
struct Lingering {
    /// When the record is written if the broker has not settled it.
    deadline: Instant,
    /// The record to write then.
    record: OutboxRecord,
    /// The device's acknowledgement, held until the first safe copy
    /// (aggregate mode; per-device mode carries it in the message's token).
    ack: Option<HeldAck>,
    /// Per-device mode: the device and the token its acknowledgement
    /// travels with, for when the linger runs out before the broker answers.
    token: Option<(std::sync::Arc<str>, UpstreamAck)>,
}

/// An acknowledgement owed to a device once its message is safe.
#[derive(Debug)]
struct HeldAck {
    sid: SessionId,
    /// The device's connection it is owed to (`Session::connection`): a
    /// device that reconnected meanwhile may use the MsgId for another
    /// message, so the acknowledgement is dropped then.
    connection: u32,
    packet: Packet,
}

/// How long the store takes new messages at once after [`LAGGING_BATCH`]
/// lingers ran out together (the broker lags), before they linger again.
pub const LAGGING_HOLD: Duration = Duration::from_secs(1);

/// How many lingers running out together mean the broker lags for many
/// devices (so a commit is shared anyway and the linger only adds delay).
pub const LAGGING_BATCH: usize = 16;

/// The records held, by durable id (ids grow with time and the linger is
/// one duration, so the first entry has the earliest deadline).
#[derive(Debug, Default)]
pub(super) struct Linger {
    entries: BTreeMap<u64, Lingering>,
    /// The id `route` just held for a device's message, for
    /// `commit_publish` to attach the acknowledgement to.
    pub(super) just_held: Option<u64>,
    /// A linger ran out: until then new messages do not linger.
    lagging_until: Option<Instant>,
    /// Per-device mode: outbox ids whose device was acknowledged when the
    /// linger ran out; the broker's acknowledgement, when it comes, is not
    /// passed on again. At most [`ACKED_EARLY`], oldest forgotten first.
    acked_early: std::collections::BTreeSet<u64>,
}

/// Most per-device acknowledgements remembered as given early (a session
/// that never answers must not grow the set without a bound).
const ACKED_EARLY: usize = 65_536;

impl Linger {
    /// Whether the broker's acknowledgement for `id` was given to the device
    /// already (and forgets it).
    pub(super) fn take_acked_early(&mut self, id: u64) -> bool {
        id != 0 && self.acked_early.remove(&id)
    }
}

impl Linger {
    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().next().map(|l| l.deadline)
    }

    /// How many records are held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Gateway {
    /// Whether a device's message bound upstream may linger at `now`: the
    /// store is on, a linger is configured, the bridge is connected (while
    /// the broker is away the store takes the message at once, as before)
    /// and the broker is not lagging.
    pub(super) fn may_linger(&self, now: Instant) -> bool {
        self.persist.enabled
            && !self.cfg.outbox_linger.is_zero()
            && self.upstream_connected()
            && !self.draining
            && self.linger.lagging_until.is_none_or(|until| now >= until)
    }

    /// Holds `record` under `id` until `now` + the linger.
    pub(super) fn hold_outbox(&mut self, now: Instant, id: u64, record: OutboxRecord) {
        let deadline = now + self.cfg.outbox_linger;
        self.linger.entries.insert(
            id,
            Lingering {
                deadline,
                record,
                ack: None,
                token: None,
            },
        );
        self.linger.just_held = Some(id);
    }

    /// Attaches the device's acknowledgement to the record held under `id`:
    /// it goes with the first safe copy.
    pub(super) fn hold_ack(&mut self, id: u64, sid: SessionId, packet: Packet) {
        let connection = self.sessions.get(&sid).map_or(0, |s| s.connection);
        match self.linger.entries.get_mut(&id) {
            Some(l) => {
                l.ack = Some(HeldAck {
                    sid,
                    connection,
                    packet,
                })
            }
            None => self.send_to(sid, packet),
        }
    }

    /// Per-device mode: the token of the message held under `id`, so the
    /// device can be acknowledged if the linger runs out first.
    pub(super) fn hold_token(&mut self, id: u64, client_id: std::sync::Arc<str>, ack: UpstreamAck) {
        if let Some(l) = self.linger.entries.get_mut(&id) {
            l.token = Some((client_id, ack));
        }
    }

    /// The bridge settled these outbox ids (the broker acknowledged them,
    /// refused them, or the rules kept them local). Those still held are
    /// forgotten — never written, so nothing to delete — and their devices
    /// acknowledged; the rest were written and are returned for the store
    /// to delete.
    pub fn handle_settled(&mut self, now: Instant, ids: Vec<u64>) -> Vec<u64> {
        let _ = now;
        let mut written = ids;
        written.retain(|id| match self.linger.entries.remove(id) {
            Some(l) => {
                self.stats.outbox_writes_saved += 1;
                self.release_ack(l.ack);
                false
            }
            None => true,
        });
        written
    }

    /// Writes every held record whose linger is over (all of them with
    /// `all`) and releases their acknowledgements behind the commit.
    pub(super) fn write_lingering(&mut self, now: Instant, all: bool) {
        let mut ran_out = 0;
        while let Some(entry) = self.linger.entries.first_entry() {
            if !all && entry.get().deadline > now {
                break;
            }
            let (id, l) = entry.remove_entry();
            self.persist.push_op(StoreOp::PutOutbox(id, l.record));
            self.stats.outbox_writes_lingered += 1;
            self.release_ack(l.ack);
            if let Some((client_id, ack)) = l.token {
                self.ack_early(id, &client_id, ack);
            }
            ran_out += 1;
        }
        if !all && ran_out >= LAGGING_BATCH {
            // The broker lags for many: the store takes what comes next at
            // once.
            self.linger.lagging_until = Some(now + LAGGING_HOLD);
        }
    }

    /// Writes the record held under `id`, if any, now (its acknowledgement
    /// is about to leave on another account than the broker's).
    pub(super) fn write_held(&mut self, id: u64) {
        if let Some(l) = self.linger.entries.remove(&id) {
            self.persist.push_op(StoreOp::PutOutbox(id, l.record));
            self.stats.outbox_writes_lingered += 1;
            self.release_ack(l.ack);
        }
    }

    /// Shutting down, or the store must take over: every held record is
    /// written at the next commit and its acknowledgement released.
    pub fn write_all_lingering(&mut self, now: Instant) {
        self.write_lingering(now, true);
    }

    /// How many outbox records wait for the broker (not yet on disk).
    pub fn lingering(&self) -> usize {
        self.linger.len()
    }

    /// Per-device mode: the store has the message (this batch's commit)
    /// before the broker answered: the device is acknowledged now, and the
    /// broker's acknowledgement will not be passed on again.
    fn ack_early(&mut self, id: u64, client_id: &str, ack: UpstreamAck) {
        let Some(&sid) = self.by_client.get(client_id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.connection != ack.connection {
            return;
        }
        if s.awaiting_upstream_ack == Some(ack.msg_id) {
            s.awaiting_upstream_ack = None;
        }
        if self.linger.acked_early.len() >= ACKED_EARLY {
            self.linger.acked_early.pop_first();
        }
        self.linger.acked_early.insert(id);
        self.send_to(sid, ack.packet());
    }

    fn release_ack(&mut self, ack: Option<HeldAck>) {
        let Some(ack) = ack else {
            return;
        };
        if self
            .sessions
            .get(&ack.sid)
            .is_some_and(|s| s.connection == ack.connection)
        {
            self.send_to(ack.sid, ack.packet);
        }
    }
}
