//! The bridge's counters and gauges, shared by every session task of one
//! bridge: what [`BridgeHandle::stats`](super::BridgeHandle::stats) reports
//! ([`BridgeStats`]), and the room accounting ([`Room`]) the driver reads
//! to acknowledge a device's message only when the bridge can take it.
//! Sessions move the gauges by deltas ([`shift`]), so that one bound holds
//! all of them together.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A snapshot of the bridge's counters (see [`BridgeHandle::stats`](super::BridgeHandle::stats)). The
/// connection figures are the shared session's; the message figures count
/// every session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Connected to the broker right now.
    pub connected: bool,
    /// Successful connections (CONNACKs), the first included.
    pub connects: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed, and connections that broke.
    pub connection_errors: u64,
    /// Messages the broker has taken: QoS 0 written, QoS 1 PUBACKed, QoS 2
    /// PUBCOMPed.
    pub published: u64,
    /// Messages received from the broker and handed to the driver.
    pub received: u64,
    /// QoS 0 messages dropped because the broker was unreachable.
    pub dropped_offline: u64,
    /// Messages dropped because the outbox was at `max_pending_messages` or
    /// `max_pending_bytes`.
    pub dropped_full: u64,
    /// Messages the broker refused (error reason code in PUBACK/PUBREC) or
    /// rumqttc would not send (e.g. an invalid topic), and messages of a
    /// device session the broker refused.
    pub rejected: u64,
    /// Local messages no `out`/`both` rule lets out.
    pub not_bridged_out: u64,
    /// Messages from upstream no `in`/`both` rule maps (or not UTF-8).
    pub not_bridged_in: u64,
    /// Echoes of the gateway's own messages swallowed: MQTT 3.1.1 echoes,
    /// and in per-device mode the copies tagged with our origin.
    pub echoes_suppressed: u64,
    /// Extra copies of one message sent for overlapping subscriptions,
    /// dropped (MQTT 5 subscription identifiers).
    pub duplicates_suppressed: u64,
    /// Messages sent again after a reconnection (at-least-once duplicates
    /// are possible for these).
    pub resent: u64,
    /// Messages in the outboxes (queued or awaiting acknowledgement).
    pub pending_messages: u64,
    /// Topic and payload bytes in the outboxes.
    pub pending_bytes: u64,
    /// Per-device mode: device sessions that exist (connected or trying).
    pub device_sessions_open: u64,
    /// Per-device mode: device sessions connected to the broker right now.
    pub device_sessions_connected: u64,
    /// Per-device mode: CONNACKs accepting a device session.
    pub device_session_connects: u64,
    /// Per-device mode: device sessions refused, by the broker (bad
    /// credentials, not authorised) or by the gateway itself (a device whose
    /// upstream client id would be the shared session's).
    pub device_session_refusals: u64,
    /// Per-device mode: device sessions the broker gave to another client
    /// with the same client id (DISCONNECT 0x8E, or inferred from quick
    /// losses in a row): the device roamed to another gateway. Each stops
    /// for good, without its will.
    pub device_session_takeovers: u64,
    /// Per-device mode: messages a refused device session had already
    /// acknowledged to its device, handed to the shared session as the last
    /// resort (they go up under the gateway's own identity).
    pub device_messages_to_shared: u64,
    /// Messages quarantined: refused by the broker (error reason code, a
    /// CONNACK limit, or the connection closed on them twice) and put in
    /// the dead-letter record instead of being retried.
    pub quarantined: u64,
    /// The last dead letters, oldest first.
    pub dead_letters: Vec<super::DeadLetter>,
    /// Subscription filters the broker refused (SUBACK, or the connection
    /// closed on them twice), removed from the upstream set.
    pub filters_refused: u64,
}

/// How much the bridge can still take, readable by the driver at any time, so
/// the engine acknowledges a device's message only when the bridge has room
/// for it (backpressure instead of dropping what a device was told is safe).
///
/// Unsettled = handed over but not yet taken by a task, plus what sits in
/// the outboxes (gauges updated by the tasks, as deltas).
#[derive(Debug, Default)]
pub(super) struct Room {
    pub(super) sent_messages: AtomicU64,
    pub(super) sent_bytes: AtomicU64,
    pub(super) taken_messages: AtomicU64,
    pub(super) taken_bytes: AtomicU64,
    pub(super) max_messages: u64,
    pub(super) max_bytes: u64,
    /// Signalled whenever an outbox shrank.
    pub(super) freed: tokio::sync::Notify,
}

/// Counters shared by every session task of one bridge.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicBool,
    pub(super) connects: AtomicU64,
    pub(super) connection_errors: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) dropped_offline: AtomicU64,
    pub(super) dropped_full: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) not_bridged_out: AtomicU64,
    pub(super) not_bridged_in: AtomicU64,
    pub(super) echoes_suppressed: AtomicU64,
    pub(super) duplicates_suppressed: AtomicU64,
    pub(super) resent: AtomicU64,
    pub(super) pending_messages: AtomicU64,
    pub(super) pending_bytes: AtomicU64,
    pub(super) device_sessions_open: AtomicU64,
    pub(super) device_sessions_connected: AtomicU64,
    pub(super) device_session_connects: AtomicU64,
    pub(super) device_session_refusals: AtomicU64,
    pub(super) device_session_takeovers: AtomicU64,
    pub(super) device_messages_to_shared: AtomicU64,
    pub(super) room: Room,
    pub(super) quarantined: AtomicU64,
    pub(super) filters_refused: AtomicU64,
    pub(super) dead_letters: std::sync::Mutex<super::dead_letters::DeadLetters>,
}

pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Moves a gauge by the difference between `old` and `new` (each session
/// adds its own share; Release, see `Session::publish_gauges`).
pub(super) fn shift(c: &AtomicU64, old: u64, new: u64) {
    if new >= old {
        c.fetch_add(new - old, Ordering::Release);
    } else {
        c.fetch_sub(old - new, Ordering::Release);
    }
}

impl Counters {
    pub(super) fn snapshot(&self) -> BridgeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let connects = get(&self.connects);
        BridgeStats {
            connected: self.connected.load(Ordering::Relaxed),
            connects,
            reconnects: connects.saturating_sub(1),
            connection_errors: get(&self.connection_errors),
            published: get(&self.published),
            received: get(&self.received),
            dropped_offline: get(&self.dropped_offline),
            dropped_full: get(&self.dropped_full),
            rejected: get(&self.rejected),
            not_bridged_out: get(&self.not_bridged_out),
            not_bridged_in: get(&self.not_bridged_in),
            echoes_suppressed: get(&self.echoes_suppressed),
            duplicates_suppressed: get(&self.duplicates_suppressed),
            resent: get(&self.resent),
            pending_messages: get(&self.pending_messages),
            pending_bytes: get(&self.pending_bytes),
            device_sessions_open: get(&self.device_sessions_open),
            device_sessions_connected: get(&self.device_sessions_connected),
            device_session_connects: get(&self.device_session_connects),
            device_session_refusals: get(&self.device_session_refusals),
            device_session_takeovers: get(&self.device_session_takeovers),
            device_messages_to_shared: get(&self.device_messages_to_shared),
            quarantined: get(&self.quarantined),
            filters_refused: get(&self.filters_refused),
            dead_letters: self
                .dead_letters
                .lock()
                .map(|d| d.snapshot())
                .unwrap_or_default(),
        }
    }

    /// Counts a message handed to a task (`unsettled` until it is taken).
    pub(super) fn handed_over(&self, messages: u64, bytes: u64) {
        self.room
            .sent_messages
            .fetch_add(messages, Ordering::Release);
        self.room.sent_bytes.fetch_add(bytes, Ordering::Release);
    }
}
