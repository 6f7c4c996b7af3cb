//! The upstream bridge: MQTT sessions to a broker, each kept alive by a
//! tokio task, carrying [`UpstreamCommand`]s up and [`UpstreamMessage`]s
//! down.
//!
//! This module owns the bridge's public face ([`spawn`], [`BridgeHandle`],
//! [`BridgeEvent`], [`BridgeStats`]); the counters every session task
//! shares are `counters`. A session's decisions — what to send next,
//! tickets, room, subscriptions, echoes, backoff, a device's connection
//! changes — are `machine`, sans IO (`now` passed in, outputs polled);
//! the thin tokio task that drives rumqttc for it is `session` (one code
//! path for the shared session and each device's own); the per-device
//! sessions are kept by `pool` behind the same handle; rumqttc stays
//! behind [`link`], device identities are `identities`, TLS is `tls`,
//! topic mapping lives in [`rules`], ordered delivery in [`outbox`],
//! reconnect timing in [`backoff`] and 3.1.1 echo suppression in [`echo`].
//! `docs/bridge.md` states the guarantees; in short:
//!
//! - **Never blocks the driver.** [`BridgeHandle::send`] pushes into an
//!   unbounded channel that the task drains at once into its own bounded
//!   outbox (`max_pending_messages`, `max_pending_bytes`, a bound on all
//!   sessions together); what does not fit is dropped and counted.
//! - **Always polls** the rumqttc event loop; on an error it waits a
//!   jittered exponential backoff (`reconnect_min_secs`..`reconnect_max_secs`)
//!   and reconnects, and it **re-subscribes everything on every CONNACK**
//!   rather than trusting the broker's session.
//! - **QoS 1/2 in order, at least once across a broker restart.** Messages
//!   stay in the outbox until PUBACK/PUBCOMP, survive disconnections in
//!   memory, and are resent in their original order on reconnection (with
//!   their packet ids and DUP when the broker kept the session, afresh when
//!   it did not). QoS 0 messages while disconnected are dropped and counted.
//! - **No echo.** On MQTT 5 upstream subscriptions carry No Local, so what a
//!   session publishes never comes back down on it; in per-device mode every
//!   publish also carries a `sngate-origin` user property, so the copies the
//!   broker sends to the gateway's *other* sessions are dropped too. On MQTT
//!   3.1.1 (`protocol_version = 4`) there is neither: an [`echo::EchoLog`]
//!   shared by all sessions swallows one matching copy per session within a
//!   short window (best effort).
//! - **Rules** as mosquitto's bridge (see [`rules`]); with none, everything
//!   goes out unchanged and upstream subscriptions follow
//!   [`UpstreamCommand::Subscribe`]/[`UpstreamCommand::Unsubscribe`]
//!   exactly. With rules, those commands are ignored and the `in`/`both`
//!   rules' subscriptions are static.
//! - **Per-device sessions** (`bridge_mode = "per-device"`): every command
//!   naming a device goes to that device's own session task, which answers
//!   [`UpstreamCommand::OpenSession`] with one [`SessionStatus`], QoS 1/2
//!   publishes with an acknowledgement, and brings down what the device's
//!   own subscriptions match.

pub mod backoff;
mod counters;
mod dead_letters;
pub mod echo;
mod identities;
pub mod link;
mod machine;
pub mod outbox;
mod pool;
pub mod rules;
mod session;
mod tls;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{BridgeMode, UpstreamConfig};
use crate::core::{SessionStatus, UpstreamAck, UpstreamCommand, UpstreamMessage};
pub use counters::BridgeStats;
use counters::{Counters, Room, bump, shift};
pub use dead_letters::{DeadLetter, status_json as dead_letters_json};
use echo::EchoLog;
use outbox::OutMessage;
use pool::Pool;
use rules::Rules;
use session::Session;

/// Capacity of the event channel towards the driver (shared by every
/// session); when it is full the sessions stop reading from the broker (TCP
/// back-pressure) until the driver catches up.
const EVENT_CHANNEL: usize = 1024;
/// Outbox slots that must free before the driver is woken to release parked
/// device messages (or an outbox empties).
const ROOM_NOTIFY_BATCH: u64 = 64;
/// How long a 3.1.1 echo is expected after publishing.
const ECHO_WINDOW: Duration = Duration::from_secs(30);
/// Most publications the 3.1.1 echo log remembers.
const ECHO_CAPACITY: usize = 10_000;
/// Longest wait for the DISCONNECT to be written at shutdown.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

/// Why the bridge could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A TLS file could not be read or holds nothing usable.
    #[error("upstream TLS file {}: {reason}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the TLS setup (e.g. a key that does not fit the
    /// certificate).
    #[error("upstream TLS: {0}")]
    Tls(String),
    /// An option rumqttc cannot work with.
    #[error("invalid upstream option `{key}`: {reason}")]
    Option {
        /// The config key (under `upstream.`).
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// [`spawn`] was called outside a tokio runtime.
    #[error("the bridge must be started inside a tokio runtime")]
    NoRuntime,
}

/// What the bridge tells the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// The broker accepted the shared session's connection (after every
    /// reconnection too); subscriptions are being re-sent.
    Connected,
    /// The shared session's connection to the broker was lost; the bridge
    /// keeps retrying.
    Disconnected {
        /// Why, as rumqttc put it.
        reason: String,
    },
    /// A message from upstream on the shared session, already mapped to its
    /// local topic.
    Message(UpstreamMessage),
    /// Durable outbox ids that left the bridge (the broker has them, refused
    /// them, or the rules keep them local): the store may forget them.
    Settled(Vec<u64>),
    /// Per-device mode: the answer of a device's session to
    /// [`UpstreamCommand::OpenSession`] (exactly one per command), or a later
    /// refusal.
    SessionStatus {
        /// The device's client id.
        client_id: Arc<str>,
        /// What became of the session.
        status: SessionStatus,
    },
    /// Per-device mode: a device's QoS 1/2 message was acknowledged by the
    /// broker or queued while its session is down (`accepted`), or refused
    /// by the broker or dropped (not `accepted`).
    SessionAck {
        /// The device's client id.
        client_id: Arc<str>,
        /// The acknowledgement the engine asked for, unchanged.
        ack: UpstreamAck,
        /// Whether the message is safe.
        accepted: bool,
    },
    /// The shared session's broker announced its limits in CONNACK (after
    /// every connection), for the engine to refuse what it would refuse
    /// before a device is acknowledged; `None` with bridge rules (the
    /// bridge alone decides then).
    Limits(Option<crate::core::UpstreamLimits>),
    /// A message was quarantined (a dead letter), for the durable record.
    Quarantined(DeadLetter),
    /// What the broker answered to a SUBSCRIBE for a local filter: accepted,
    /// or refused (then removed from the upstream set for good). `client_id`:
    /// the device whose own session it was (per-device mode).
    Subscribed {
        /// The device's client id (per-device mode), `None` for the shared
        /// session.
        client_id: Option<Arc<str>>,
        /// The local filter.
        filter: String,
        /// The broker accepted it.
        accepted: bool,
    },
    /// Per-device mode: a message that came down a device's own session,
    /// already mapped to its local topic.
    SessionMessage {
        /// The device's client id.
        client_id: Arc<str>,
        /// The message.
        message: UpstreamMessage,
        /// A QoS 1/2 message not yet acknowledged to the broker: the token
        /// the engine hands back in [`UpstreamCommand::AckDownlink`] once
        /// the device has it. `None` at QoS 0.
        token: Option<u64>,
    },
}

/// What a session task is told.
enum Control {
    Command(UpstreamCommand),
    /// The durable outbox at start-up, in order.
    Restore(Vec<UpstreamCommand>),
    /// Messages a refused device session had already acknowledged to its
    /// device (the last resort), already mapped to their remote topics and
    /// counted as handed over.
    Adopt(Vec<OutMessage>),
    Shutdown(Duration),
}

/// What a session task tells the handle: a public event, or the pool's
/// own business (handled inside [`BridgeHandle::recv`]).
#[derive(Debug)]
enum TaskEvent {
    Public(BridgeEvent),
    /// A device session has no connection and nothing to do after
    /// `received` commands: the pool may forget it.
    Finished {
        client_id: Arc<str>,
        task: u64,
        received: u64,
    },
    /// For the shared session (see [`Control::Adopt`]).
    Adopt(Vec<OutMessage>),
}

/// What every session task of a bridge shares.
struct Common {
    cfg: UpstreamConfig,
    endpoint: String,
    rules: Rules,
    counters: Arc<Counters>,
    /// MQTT 3.1.1: recent publications of all sessions.
    echo: Option<Mutex<EchoLog>>,
    /// Per-device mode: the outboxes are bounded together, and what the
    /// sessions publish is tagged with `origin`.
    per_device: bool,
    /// The shared session's client id, as the `sngate-origin` value
    /// (per-device mode on MQTT 5).
    origin: Option<Arc<str>>,
}

/// Signals that a bridge outbox shrank (see [`BridgeHandle::room_watch`]).
#[derive(Clone)]
pub struct RoomWatch(Arc<Counters>);

impl RoomWatch {
    /// Completes when an outbox shrank since the last call (room may have grown).
    pub async fn freed(&self) {
        self.0.room.freed.notified().await;
    }
}

/// The driver's end of the bridge. Dropping it stops every session at once
/// (without flushing); prefer [`shutdown`](Self::shutdown).
pub struct BridgeHandle {
    control: mpsc::UnboundedSender<Control>,
    events: mpsc::Receiver<TaskEvent>,
    counters: Arc<Counters>,
    /// The shared session's task; `None` once it has ended (the device
    /// sessions hold the event channel open, so its end is watched here).
    task: Option<JoinHandle<()>>,
    /// Per-device mode: the device sessions.
    pool: Option<Pool>,
    /// Events the handle itself produced, handed out before the channel's.
    local: VecDeque<BridgeEvent>,
}

impl BridgeHandle {
    /// Hands a command to the bridge. Never blocks, never fails: each
    /// session task owns a bounded outbox and counts what it has to drop.
    /// In per-device mode, commands naming a device go to its own session.
    pub fn send(&mut self, cmd: UpstreamCommand) {
        let cmd = match &mut self.pool {
            Some(pool) => match pool.dispatch(cmd, &mut self.local) {
                Some(cmd) => cmd,
                None => return,
            },
            None => cmd,
        };
        if let UpstreamCommand::Publish { topic, payload, .. } = &cmd {
            self.counters
                .handed_over(1, (topic.len() + payload.len()) as u64);
        }
        // Fails only once the task has ended; nothing is left to count it.
        let _ = self.control.send(Control::Command(cmd));
    }

    /// Hands the bridge the durable outbox found at start-up, in order,
    /// ahead of anything sent later. These messages were acknowledged to
    /// their senders before the restart, so the outboxes take them whatever
    /// their bounds (room stays 0 until they have drained below them). In
    /// per-device mode a device's messages go to its own session, which
    /// delivers them under the device's identity whether or not the device
    /// comes back (docs/bridge.md).
    pub fn restore(&mut self, cmds: Vec<UpstreamCommand>) {
        for cmd in &cmds {
            if let UpstreamCommand::Publish { topic, payload, .. } = cmd {
                self.counters
                    .handed_over(1, (topic.len() + payload.len()) as u64);
            }
        }
        let cmds = match &mut self.pool {
            Some(pool) => pool.restore(cmds),
            None => cmds,
        };
        if !cmds.is_empty() {
            let _ = self.control.send(Control::Restore(cmds));
        }
    }

    /// How many more messages the bridge can take without dropping any: its
    /// `max_pending_messages` less what is unsettled, and no more than fit
    /// into its `max_pending_bytes` at `message_bytes` each (the largest
    /// message the caller may send).
    pub fn room(&self, message_bytes: usize) -> usize {
        let c = &self.counters;
        let r = &c.room;
        // `taken` before the outbox gauges before `sent` (see
        // Session::publish_gauges): a message is counted in the channel or
        // in an outbox, possibly both for a moment (conservative), never in
        // neither.
        let taken = r.taken_messages.load(Ordering::Acquire);
        let taken_bytes = r.taken_bytes.load(Ordering::Acquire);
        let pending = c.pending_messages.load(Ordering::Acquire);
        let pending_bytes = c.pending_bytes.load(Ordering::Acquire);
        let in_channel = r
            .sent_messages
            .load(Ordering::Acquire)
            .saturating_sub(taken);
        let in_channel_bytes = r
            .sent_bytes
            .load(Ordering::Acquire)
            .saturating_sub(taken_bytes);
        // A hundredth of the bound (at least one) is kept for wills, which go
        // up whatever the room (their clients are gone and cannot wait).
        let reserve = (r.max_messages / 100).max(1);
        let messages = r
            .max_messages
            .saturating_sub(reserve)
            .saturating_sub(in_channel + pending);
        let bytes = r.max_bytes.saturating_sub(in_channel_bytes + pending_bytes);
        let by_bytes = bytes / (message_bytes.max(1) as u64);
        usize::try_from(messages.min(by_bytes)).unwrap_or(usize::MAX)
    }

    /// Messages handed to [`send`](Self::send) that the broker has not
    /// taken yet: still on their way to a task, or in an outbox (queued,
    /// or sent and awaiting PUBACK/PUBCOMP). 0 means everything handed over
    /// was acknowledged (or dropped and counted).
    pub fn unsettled(&self) -> u64 {
        let c = &self.counters;
        let taken = c.room.taken_messages.load(Ordering::Acquire);
        let pending = c.pending_messages.load(Ordering::Acquire);
        let sent = c.room.sent_messages.load(Ordering::Acquire);
        sent.saturating_sub(taken) + pending
    }

    /// A watcher that completes when an outbox shrank, usable while the
    /// handle itself is borrowed elsewhere.
    pub fn room_watch(&self) -> RoomWatch {
        RoomWatch(Arc::clone(&self.counters))
    }

    /// Next event from the bridge; `None` once the shared session's task
    /// has ended (it ends only at shutdown, so: it failed) and the events
    /// already sent are handed out.
    pub async fn recv(&mut self) -> Option<BridgeEvent> {
        loop {
            if let Some(ev) = self.local.pop_front() {
                return Some(ev);
            }
            let got = match self.task.as_mut() {
                Some(task) => tokio::select! {
                    biased;
                    ev = self.events.recv() => Ok(ev),
                    end = task => Err(end),
                },
                None => Ok(self.events.try_recv().ok()),
            };
            let ev = match got {
                Ok(ev) => ev?,
                Err(end) => {
                    warn!(?end, "the shared upstream session task ended");
                    self.task = None;
                    continue;
                }
            };
            if let Some(ev) = self.on_task_event(ev) {
                return Some(ev);
            }
        }
    }

    /// An event that is ready now, without waiting.
    pub fn try_recv(&mut self) -> Option<BridgeEvent> {
        loop {
            if let Some(ev) = self.local.pop_front() {
                return Some(ev);
            }
            let ev = self.events.try_recv().ok()?;
            if let Some(ev) = self.on_task_event(ev) {
                return Some(ev);
            }
        }
    }

    fn on_task_event(&mut self, ev: TaskEvent) -> Option<BridgeEvent> {
        match ev {
            TaskEvent::Public(ev) => Some(ev),
            TaskEvent::Finished {
                client_id,
                task,
                received,
            } => {
                if let Some(pool) = &mut self.pool {
                    pool.finished(&client_id, task, received);
                }
                None
            }
            TaskEvent::Adopt(msgs) => {
                let _ = self.control.send(Control::Adopt(msgs));
                None
            }
        }
    }

    /// The bridge's counters right now.
    pub fn stats(&self) -> BridgeStats {
        self.counters.snapshot()
    }

    /// The dead letters the store kept from before the restart, listed on
    /// `/status` with the new ones.
    pub fn restore_dead_letters(&self, letters: Vec<DeadLetter>) {
        if let Ok(mut d) = self.counters.dead_letters.lock() {
            d.restore(std::time::Instant::now(), letters);
        }
    }

    /// Stops every session: for up to `grace` each keeps delivering what is
    /// queued (and reconnecting if needed), then sends DISCONNECT and ends
    /// (device sessions too: a gateway that stops is not a device that was
    /// lost, so no will is published). Messages still unacknowledged then
    /// are lost (in-memory outbox); the counters returned say how many
    /// (`pending_messages`).
    pub async fn shutdown(self, grace: Duration) -> BridgeStats {
        let BridgeHandle {
            control,
            events,
            task,
            counters,
            pool,
            local: _,
        } = self;
        // Nobody reads events any more: never let a task block on them.
        drop(events);
        let _ = control.send(Control::Shutdown(grace));
        let mut tasks: Vec<JoinHandle<()>> = task.into_iter().collect();
        if let Some(pool) = pool {
            tasks.extend(pool.shutdown(grace));
        }
        let limit = grace + DISCONNECT_WAIT + Duration::from_secs(1);
        let all = futures_join_all(&mut tasks);
        if tokio::time::timeout(limit, all).await.is_err() {
            warn!("upstream bridge did not stop in time; aborting it");
            for t in &tasks {
                t.abort();
            }
        }
        counters.snapshot()
    }
}

/// Awaits every task (they run concurrently anyway; this only waits).
async fn futures_join_all(tasks: &mut [JoinHandle<()>]) {
    for t in tasks.iter_mut() {
        let _ = t.await;
    }
}

/// Starts the bridge for `cfg` on the current tokio runtime: the shared
/// session now, device sessions as the engine asks for them (per-device
/// mode). It connects in the background; watch [`BridgeHandle::recv`] for
/// [`BridgeEvent::Connected`].
pub fn spawn(cfg: &UpstreamConfig) -> Result<BridgeHandle, BridgeError> {
    // The client id, resolved once: every later reader sees `Some`.
    let cfg = &UpstreamConfig {
        client_id: Some(cfg.effective_client_id()),
        ..cfg.clone()
    };
    check_options(cfg)?;
    let rt = tokio::runtime::Handle::try_current().map_err(|_| BridgeError::NoRuntime)?;
    let tls = cfg
        .tls
        .as_ref()
        .map(|t| match (&t.cert_file, &t.key_file) {
            (Some(cert), Some(key)) => tls::client_config(&t.ca_file, Some((cert, key))),
            (None, None) => tls::client_config(&t.ca_file, None),
            _ => Err(BridgeError::Option {
                key: "tls.cert_file",
                reason: "cert_file and key_file must be given together".to_owned(),
            }),
        })
        .transpose()?;
    let per_device = cfg.bridge_mode == BridgeMode::PerDevice;
    // The shared session's client id is unique on the broker by MQTT's
    // rules, so it names this gateway's messages.
    let origin: Option<Arc<str>> =
        (per_device && cfg.protocol_version == 5).then(|| Arc::from(cfg.effective_client_id()));
    let identities = per_device
        .then(|| identities::DeviceIdentities::new(cfg, tls.clone(), origin.clone()))
        .transpose()?;
    let shared_identity = link::Identity::shared(cfg, tls, origin.clone());
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL);
    let counters = Arc::new(Counters {
        room: Room {
            max_messages: cfg.max_pending_messages as u64,
            max_bytes: cfg.max_pending_bytes as u64,
            ..Room::default()
        },
        ..Counters::default()
    });
    let common = Arc::new(Common {
        cfg: cfg.clone(),
        endpoint: format!("{}:{}", cfg.host, cfg.port),
        rules: Rules::for_gateway(&cfg.rules, &cfg.effective_client_id()),
        counters: Arc::clone(&counters),
        echo: (cfg.protocol_version == 4)
            .then(|| Mutex::new(EchoLog::new(ECHO_WINDOW, ECHO_CAPACITY))),
        per_device,
        origin,
    });
    let (session, event_loop) =
        Session::shared(Arc::clone(&common), events_tx.clone(), &shared_identity);
    let task = rt.spawn(session.run(Some(event_loop), control_rx));
    if per_device {
        info!(
            prefix = %cfg.per_device.client_id_prefix,
            "per-device upstream sessions: each device gets its own"
        );
    }
    Ok(BridgeHandle {
        control: control_tx,
        events: events_rx,
        counters,
        task: Some(task),
        pool: identities.map(|ids| Pool::new(rt, common, events_tx, ids)),
        local: VecDeque::new(),
    })
}

fn check_options(cfg: &UpstreamConfig) -> Result<(), BridgeError> {
    let bad = |key, reason: &str| {
        Err(BridgeError::Option {
            key,
            reason: reason.to_owned(),
        })
    };
    if cfg.host.trim().is_empty() {
        return bad("host", "must name the broker");
    }
    if !matches!(cfg.protocol_version, 4 | 5) {
        return bad("protocol_version", "must be 4 (MQTT 3.1.1) or 5 (MQTT 5)");
    }
    let client_id = cfg.effective_client_id();
    if client_id.is_empty() && !cfg.clean_session {
        return bad(
            "client_id",
            "must not be empty when clean_session is false (the broker keys the session by it)",
        );
    }
    if client_id.is_empty() && cfg.bridge_mode == BridgeMode::PerDevice {
        return bad(
            "client_id",
            "must not be empty in per-device mode (it tags the gateway's own messages)",
        );
    }
    if cfg.reconnect_min_secs == 0 || cfg.reconnect_min_secs > cfg.reconnect_max_secs {
        return bad(
            "reconnect_min_secs",
            "must be at least 1 and at most reconnect_max_secs",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recv_ends_when_the_shared_session_task_ends_although_others_hold_the_channel() {
        let (control, _control_rx) = mpsc::unbounded_channel();
        // A device session (here: this test) still holds the event sender.
        let (events_tx, events) = mpsc::channel(4);
        let task = tokio::spawn(async { panic!("the shared session fails") });
        let mut h = BridgeHandle {
            control,
            events,
            counters: Arc::new(Counters::default()),
            task: Some(task),
            pool: None,
            local: VecDeque::new(),
        };
        assert!(
            events_tx
                .send(TaskEvent::Public(BridgeEvent::Connected))
                .await
                .is_ok()
        );
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            let mut got = Vec::new();
            while let Some(ev) = h.recv().await {
                got.push(ev);
            }
            got
        })
        .await
        .expect("recv ends");
        assert_eq!(got, [BridgeEvent::Connected], "what was sent still comes");
        drop(events_tx);
        h.shutdown(Duration::from_millis(10)).await;
    }
}
