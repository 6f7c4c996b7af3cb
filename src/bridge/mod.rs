//! The upstream bridge: one MQTT session to a broker, kept alive by a tokio
//! task, carrying [`UpstreamCommand`]s up and [`UpstreamMessage`]s down.
//!
//! This module owns the task and its public face ([`spawn`],
//! [`BridgeHandle`], [`BridgeEvent`], [`BridgeStats`]); rumqttc stays behind
//! [`link`], topic mapping lives in [`rules`], ordered delivery in
//! [`outbox`], reconnect timing in [`backoff`] and 3.1.1 echo suppression in
//! [`echo`]. `docs/bridge.md` states the guarantees; in short:
//!
//! - **Never blocks the driver.** [`BridgeHandle::send`] pushes into an
//!   unbounded channel that the task drains at once into its own bounded
//!   outbox (`max_pending_messages`, `max_pending_bytes`); what does not fit
//!   is dropped and counted.
//! - **Always polls** the rumqttc event loop; on an error it waits a
//!   jittered exponential backoff (`reconnect_min_secs`..`reconnect_max_secs`)
//!   and reconnects, and it **re-subscribes everything on every CONNACK**
//!   rather than trusting the broker's session.
//! - **QoS 1/2 in order, at least once across a broker restart.** Messages
//!   stay in the outbox until PUBACK/PUBCOMP, survive disconnections in
//!   memory, and are resent in their original order on reconnection (with
//!   their packet ids and DUP when the broker kept the session, afresh when
//!   it did not). QoS 0 messages while disconnected are dropped and counted.
//! - **No echo (MQTT 5).** Upstream subscriptions carry No Local, so what
//!   the bridge publishes never comes back down even when its topic is
//!   bridged both ways. On MQTT 3.1.1 (`protocol_version = 4`) there is no
//!   such option: the broker does echo, and an [`echo::EchoFilter`] swallows
//!   the first matching copy within a short window (best effort).
//! - **Rules** as mosquitto's bridge (see [`rules`]); with none, everything
//!   goes out unchanged and upstream subscriptions follow
//!   [`UpstreamCommand::Subscribe`]/[`UpstreamCommand::Unsubscribe`]
//!   exactly. With rules, those commands are ignored and the `in`/`both`
//!   rules' subscriptions are static.

pub mod backoff;
pub mod echo;
pub mod link;
pub mod outbox;
pub mod rules;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{TlsConfig, UpstreamConfig};
use crate::core::{UpstreamCommand, UpstreamMessage};
use backoff::Backoff;
use echo::EchoFilter;
use link::{LinkClient, LinkEvent, LinkLoop};
use outbox::{Ack, OutMessage, Outbox};
use rules::Rules;

/// Filters per SUBSCRIBE packet when (re-)subscribing many at once.
/// Capacity of the event channel towards the driver; when it is full the
/// bridge stops reading from the broker (TCP back-pressure) until the
/// driver catches up.
/// Outbox slots that must free before the driver is woken to release parked
/// device messages (or the outbox empties).
const ROOM_NOTIFY_BATCH: u64 = 64;

const EVENT_CHANNEL: usize = 1024;
/// How long a 3.1.1 echo is expected after publishing.
const ECHO_WINDOW: Duration = Duration::from_secs(30);
/// Most publications the 3.1.1 echo filter remembers.
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
    /// The broker accepted the connection (after every reconnection too);
    /// subscriptions are being re-sent.
    Connected,
    /// The connection to the broker was lost; the bridge keeps retrying.
    Disconnected {
        /// Why, as rumqttc put it.
        reason: String,
    },
    /// A message from upstream, already mapped to its local topic.
    Message(UpstreamMessage),
    /// Durable outbox ids that left the bridge (the broker has them, refused
    /// them, or the rules keep them local): the store may forget them.
    Settled(Vec<u64>),
}

/// A snapshot of the bridge's counters (see [`BridgeHandle::stats`]).
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
    /// rumqttc would not send (e.g. an invalid topic).
    pub rejected: u64,
    /// Local messages no `out`/`both` rule lets out.
    pub not_bridged_out: u64,
    /// Messages from upstream no `in`/`both` rule maps (or not UTF-8).
    pub not_bridged_in: u64,
    /// MQTT 3.1.1 echoes of our own messages swallowed.
    pub echoes_suppressed: u64,
    /// Extra copies of one message sent for overlapping subscriptions,
    /// dropped (MQTT 5 subscription identifiers).
    pub duplicates_suppressed: u64,
    /// Messages sent again after a reconnection (at-least-once duplicates
    /// are possible for these).
    pub resent: u64,
    /// Messages in the outbox (queued or awaiting acknowledgement).
    pub pending_messages: u64,
    /// Topic and payload bytes in the outbox.
    pub pending_bytes: u64,
}

/// How much the bridge can still take, readable by the driver at any time, so
/// the engine acknowledges a device's message only when the bridge has room
/// for it (backpressure instead of dropping what a device was told is safe).
///
/// Unsettled = handed to [`BridgeHandle::send`] but not yet taken by the task,
/// plus what sits in the outbox (gauge updated by the task).
#[derive(Debug, Default)]
struct Room {
    sent_messages: AtomicU64,
    sent_bytes: AtomicU64,
    taken_messages: AtomicU64,
    taken_bytes: AtomicU64,
    max_messages: u64,
    max_bytes: u64,
    /// Signalled whenever the outbox shrank.
    freed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicBool,
    connects: AtomicU64,
    connection_errors: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    dropped_offline: AtomicU64,
    dropped_full: AtomicU64,
    rejected: AtomicU64,
    not_bridged_out: AtomicU64,
    not_bridged_in: AtomicU64,
    echoes_suppressed: AtomicU64,
    duplicates_suppressed: AtomicU64,
    resent: AtomicU64,
    pending_messages: AtomicU64,
    pending_bytes: AtomicU64,
    room: Room,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> BridgeStats {
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
        }
    }
}

enum Control {
    Command(UpstreamCommand),
    /// The durable outbox at start-up, in order.
    Restore(Vec<UpstreamCommand>),
    Shutdown(Duration),
}

/// Signals that the bridge's outbox shrank (see [`BridgeHandle::room_watch`]).
#[derive(Clone)]
pub struct RoomWatch(Arc<Counters>);

impl RoomWatch {
    /// Completes when the outbox shrank since the last call (room may have grown).
    pub async fn freed(&self) {
        self.0.room.freed.notified().await;
    }
}

/// The driver's end of the bridge. Dropping it stops the bridge at once
/// (without flushing); prefer [`shutdown`](Self::shutdown).
pub struct BridgeHandle {
    control: mpsc::UnboundedSender<Control>,
    events: mpsc::Receiver<BridgeEvent>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl BridgeHandle {
    /// Hands a command to the bridge. Never blocks, never fails: the bridge
    /// task owns a bounded outbox and counts what it has to drop.
    pub fn send(&self, cmd: UpstreamCommand) {
        if let UpstreamCommand::Publish { topic, payload, .. } = &cmd {
            let room = &self.counters.room;
            bump(&room.sent_messages, 1);
            bump(&room.sent_bytes, (topic.len() + payload.len()) as u64);
        }
        // Fails only once the task has ended; nothing is left to count it.
        let _ = self.control.send(Control::Command(cmd));
    }

    /// Hands the bridge the durable outbox found at start-up, in order,
    /// ahead of anything sent later. These messages were acknowledged to
    /// their senders before the restart, so the outbox takes them whatever
    /// its bounds (room stays 0 until it has drained below them).
    pub fn restore(&self, cmds: Vec<UpstreamCommand>) {
        let room = &self.counters.room;
        for cmd in &cmds {
            if let UpstreamCommand::Publish { topic, payload, .. } = cmd {
                bump(&room.sent_messages, 1);
                bump(&room.sent_bytes, (topic.len() + payload.len()) as u64);
            }
        }
        let _ = self.control.send(Control::Restore(cmds));
    }

    /// How many more messages the bridge can take without dropping any: its
    /// `max_pending_messages` less what is unsettled, and no more than fit
    /// into its `max_pending_bytes` at `message_bytes` each (the largest
    /// message the caller may send).
    pub fn room(&self, message_bytes: usize) -> usize {
        let c = &self.counters;
        let r = &c.room;
        // `taken` before the outbox gauges (see Bridge::publish_gauges): a
        // message is counted in the channel or in the outbox, possibly both
        // for a moment (conservative), never in neither.
        let taken = r.taken_messages.load(Ordering::Acquire);
        let taken_bytes = r.taken_bytes.load(Ordering::Acquire);
        let pending = c.pending_messages.load(Ordering::Acquire);
        let pending_bytes = c.pending_bytes.load(Ordering::Acquire);
        // Only this handle's owner sends, so `sent` is exact here.
        let in_channel = r
            .sent_messages
            .load(Ordering::Relaxed)
            .saturating_sub(taken);
        let in_channel_bytes = r
            .sent_bytes
            .load(Ordering::Relaxed)
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
    /// taken yet: still on their way to the task, or in its outbox (queued,
    /// or sent and awaiting PUBACK/PUBCOMP). 0 means everything handed over
    /// was acknowledged (or dropped and counted).
    pub fn unsettled(&self) -> u64 {
        let c = &self.counters;
        let taken = c.room.taken_messages.load(Ordering::Acquire);
        let pending = c.pending_messages.load(Ordering::Acquire);
        let sent = c.room.sent_messages.load(Ordering::Relaxed);
        sent.saturating_sub(taken) + pending
    }

    /// A watcher that completes when the bridge's outbox shrank, usable
    /// while the handle itself is borrowed elsewhere.
    pub fn room_watch(&self) -> RoomWatch {
        RoomWatch(Arc::clone(&self.counters))
    }

    /// Next event from the bridge; `None` when the task has ended.
    pub async fn recv(&mut self) -> Option<BridgeEvent> {
        self.events.recv().await
    }

    /// An event that is ready now, without waiting.
    pub fn try_recv(&mut self) -> Option<BridgeEvent> {
        self.events.try_recv().ok()
    }

    /// The bridge's counters right now.
    pub fn stats(&self) -> BridgeStats {
        self.counters.snapshot()
    }

    /// Stops the task: for up to `grace` it keeps delivering what is queued
    /// (and reconnecting if needed), then sends DISCONNECT and ends.
    /// Messages still unacknowledged then are lost (in-memory outbox); the
    /// counters returned say how many (`pending_messages`).
    pub async fn shutdown(self, grace: Duration) -> BridgeStats {
        let BridgeHandle {
            control,
            events,
            task,
            counters,
        } = self;
        // Nobody reads events any more: never let the task block on them.
        drop(events);
        let _ = control.send(Control::Shutdown(grace));
        let mut task = task;
        let limit = grace + DISCONNECT_WAIT + Duration::from_secs(1);
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            warn!("upstream bridge did not stop in time; aborting it");
            task.abort();
        }
        counters.snapshot()
    }
}

/// Starts the bridge task for `cfg` on the current tokio runtime. It
/// connects in the background; watch [`BridgeHandle::recv`] for
/// [`BridgeEvent::Connected`].
pub fn spawn(cfg: &UpstreamConfig) -> Result<BridgeHandle, BridgeError> {
    check_options(cfg)?;
    let rt = tokio::runtime::Handle::try_current().map_err(|_| BridgeError::NoRuntime)?;
    let tls = cfg.tls.as_ref().map(tls_config).transpose()?;
    let (client, event_loop) = link::build(cfg, tls);
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
    let rules = Rules::new(&cfg.rules);
    let subscriptions = rules.subscriptions().into_iter().collect();
    let bridge = Bridge {
        endpoint: format!("{}:{}", cfg.host, cfg.port),
        rules,
        client,
        outbox: Outbox::new(cfg.max_pending_messages, cfg.max_pending_bytes),
        subscriptions,
        sub_ids: SubscriptionIds::default(),
        awaiting_suback: VecDeque::new(),
        confirmed: HashSet::new(),
        control: VecDeque::new(),
        connected: false,
        in_channel: 0,
        events: events_tx,
        counters: Arc::clone(&counters),
        echo: (cfg.protocol_version == 4).then(|| EchoFilter::new(ECHO_WINDOW, ECHO_CAPACITY)),
        backoff: Backoff::new(
            Duration::from_secs(u64::from(cfg.reconnect_min_secs)),
            Duration::from_secs(u64::from(cfg.reconnect_max_secs)),
            Backoff::clock_seed(),
        ),
        deadline: None,
        full_streak: 0,
        keep_qos0_offline: cfg.queue_qos0_offline,
        settled: Vec::new(),
        restoring: false,
        taken: (0, 0),
        freed_since_notify: 0,
    };
    let task = rt.spawn(bridge.run(event_loop, control_rx));
    Ok(BridgeHandle {
        control: control_tx,
        events: events_rx,
        counters,
        task,
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
    if cfg.client_id.is_empty() && !cfg.clean_session {
        return bad(
            "client_id",
            "must not be empty when clean_session is false (the broker keys the session by it)",
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

/// Builds the rustls client configuration (ring provider) from PEM files.
fn tls_config(t: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, BridgeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    // Only the first call in the process installs it; later ones report
    // "already installed", which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let file_err = |path: &Path, reason: String| BridgeError::TlsFile {
        path: path.to_owned(),
        reason,
    };
    let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, BridgeError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| file_err(path, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(path, e.to_string()))?;
        if certs.is_empty() {
            return Err(file_err(path, "no PEM certificate in it".to_owned()));
        }
        Ok(certs)
    };

    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(read_certs(&t.ca_file)?);
    if added == 0 {
        return Err(file_err(
            &t.ca_file,
            "no usable CA certificate in it".to_owned(),
        ));
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| BridgeError::Tls(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(BridgeError::Option {
                key: "tls.cert_file",
                reason: "cert_file and key_file must be given together".to_owned(),
            });
        }
    };
    Ok(Arc::new(config))
}

/// A SUBSCRIBE or UNSUBSCRIBE waiting for room in rumqttc's channel.
enum Request {
    /// One SUBSCRIBE: remote filter, QoS, subscription identifier.
    Subscribe(String, u8, usize),
    Unsubscribe(String),
}

/// The task's state. See the module documentation.
struct Bridge {
    endpoint: String,
    rules: Rules,
    client: LinkClient,
    outbox: Outbox,
    /// Subscription identifiers of the upstream filters.
    sub_ids: SubscriptionIds,
    /// Filters sent in a SUBSCRIBE whose SUBACK has not come yet, in order
    /// (one filter per SUBSCRIBE; brokers answer in order).
    awaiting_suback: VecDeque<String>,
    /// Filters the broker has accepted on this connection: only these can be
    /// the representative in `copy_scope` (a filter still pending or refused
    /// would make the bridge drop the copies it does get).
    confirmed: HashSet<String>,
    /// Upstream subscriptions (remote filter → QoS): the rules' (static) or
    /// the local subscribers' (dynamic, when there are no rules).
    subscriptions: BTreeMap<String, u8>,
    /// Subscription requests not yet in rumqttc's channel.
    control: VecDeque<Request>,
    connected: bool,
    /// Requests in rumqttc's channel, not yet taken by its event loop.
    in_channel: usize,
    events: mpsc::Sender<BridgeEvent>,
    counters: Arc<Counters>,
    echo: Option<EchoFilter>,
    backoff: Backoff,
    /// Set once shutdown is asked: stop at this instant at the latest.
    deadline: Option<Instant>,
    /// Consecutive messages refused by a full outbox (for logging).
    full_streak: u64,
    /// Queue QoS 0 messages while the broker is unreachable (else dropped).
    keep_qos0_offline: bool,
    /// Durable ids settled outside the outbox (not bridged, dropped), until
    /// reported.
    settled: Vec<u64>,
    /// Replaying the durable outbox at start-up: its messages bypass the
    /// bounds (they were acknowledged before the restart).
    restoring: bool,
    /// Publish commands taken from the channel: (messages, bytes).
    taken: (u64, u64),
    /// Outbox slots freed since the driver was last told.
    freed_since_notify: u64,
}

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

/// How a wait ended.
enum Woke<T> {
    Done(T),
    Deadline,
}

impl Bridge {
    async fn run(
        mut self,
        mut event_loop: LinkLoop,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        info!(broker = %self.endpoint, "upstream bridge started");
        loop {
            let polled = {
                let poll = event_loop.poll();
                self.wait(poll, &mut control).await
            };
            match polled {
                Woke::Deadline => break,
                Woke::Done(Ok(ev)) => self.on_event(ev).await,
                Woke::Done(Err(reason)) => {
                    self.on_connection_error(&mut event_loop, reason).await;
                    if self.deadline.is_some() && self.outbox.is_empty() {
                        break;
                    }
                    let delay = self.backoff.next_delay();
                    debug!(?delay, "upstream: waiting before reconnecting");
                    if let Woke::Deadline = self.wait(tokio::time::sleep(delay), &mut control).await
                    {
                        break;
                    }
                }
            }
            self.pump();
            self.publish_gauges();
            self.report_settled().await;
            if self.deadline.is_some() && self.outbox.is_empty() {
                break;
            }
        }
        self.disconnect(&mut event_loop).await;
        self.counters.connected.store(false, Ordering::Relaxed);
        self.publish_gauges();
        self.report_settled().await;
        let left = self.outbox.len();
        if left > 0 {
            warn!(
                messages = left,
                "upstream bridge stopped with undelivered messages"
            );
        }
        info!("upstream bridge stopped");
    }

    /// Awaits `fut` while handling control messages; never cancels `fut`
    /// (rumqttc's poll is not cancel-safe) except at the shutdown deadline.
    async fn wait<F: Future>(
        &mut self,
        fut: F,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Woke<F::Output> {
        tokio::pin!(fut);
        loop {
            let deadline = self.deadline;
            tokio::select! {
                out = &mut fut => return Woke::Done(out),
                msg = control.recv(), if deadline.is_none() => {
                    match msg {
                        Some(Control::Command(cmd)) => self.on_command(cmd),
                        Some(Control::Restore(cmds)) => {
                            self.restoring = true;
                            for cmd in cmds {
                                self.on_command(cmd);
                            }
                            self.restoring = false;
                        }
                        Some(Control::Shutdown(grace)) => {
                            debug!(?grace, "upstream bridge: shutdown asked");
                            self.deadline = Some(Instant::now() + grace);
                            if self.outbox.is_empty() {
                                return Woke::Deadline;
                            }
                        }
                        // The handle was dropped: stop now.
                        None => {
                            self.deadline = Some(Instant::now());
                            return Woke::Deadline;
                        }
                    }
                    self.pump();
                    self.publish_gauges();
                }
                () = sleep_until_opt(deadline) => return Woke::Deadline,
            }
        }
    }

    fn on_command(&mut self, cmd: UpstreamCommand) {
        if let UpstreamCommand::Publish { topic, payload, .. } = &cmd {
            // Published with the outbox gauges (publish_gauges), never before:
            // the driver must always see a message in the channel or in the
            // outbox, never in neither, or it would grant room twice.
            self.taken.0 += 1;
            self.taken.1 += (topic.len() + payload.len()) as u64;
        }
        match cmd {
            UpstreamCommand::Publish {
                topic,
                payload,
                qos,
                retain,
                store_id,
                from: _,
            } => {
                let Some((remote, qos)) = self.rules.outbound(&topic, qos.min(2)) else {
                    bump(&self.counters.not_bridged_out, 1);
                    self.settled.extend(store_id);
                    return;
                };
                if qos == 0 && !self.connected && !self.keep_qos0_offline {
                    bump(&self.counters.dropped_offline, 1);
                    self.settled.extend(store_id);
                    return;
                }
                let msg = OutMessage {
                    topic: remote,
                    payload,
                    qos,
                    retain,
                    store_id,
                };
                if store_id.is_some() && self.restoring {
                    // Acknowledged before a restart: never refused now.
                    self.outbox.push_unbounded(msg);
                    return;
                }
                match self.outbox.push(msg) {
                    Ok(()) => {
                        if self.full_streak > 0 {
                            info!(dropped = self.full_streak, "upstream outbox has room again");
                            self.full_streak = 0;
                        }
                    }
                    Err(outbox::Refused::Full) => {
                        bump(&self.counters.dropped_full, 1);
                        self.settled.extend(store_id);
                        if self.full_streak == 0 {
                            warn!(
                                messages = self.outbox.len(),
                                bytes = self.outbox.bytes(),
                                "upstream outbox full: dropping new messages until it drains"
                            );
                        }
                        self.full_streak += 1;
                    }
                }
            }
            UpstreamCommand::Subscribe { filter, qos } => {
                if !self.rules.is_transparent() {
                    debug!(%filter, "upstream: subscriptions come from the rules; ignored");
                    return;
                }
                let qos = qos.min(2);
                if self.subscriptions.insert(filter.clone(), qos) != Some(qos) && self.connected {
                    let id = self.sub_ids.id(&filter);
                    self.control.push_back(Request::Subscribe(filter, qos, id));
                }
            }
            // Per-device sessions are the pool's (not implemented yet).
            UpstreamCommand::OpenSession(_)
            | UpstreamCommand::CloseSession { .. }
            | UpstreamCommand::SessionSubscribe { .. }
            | UpstreamCommand::SessionUnsubscribe { .. } => {}
            UpstreamCommand::Unsubscribe { filter } => {
                if !self.rules.is_transparent() {
                    return;
                }
                if self.subscriptions.remove(&filter).is_some() {
                    self.sub_ids.forget(&filter);
                    self.confirmed.remove(&filter);
                    if self.connected {
                        self.control.push_back(Request::Unsubscribe(filter));
                    }
                }
            }
        }
    }

    /// Which copy of a message to pass on when overlapping upstream
    /// subscriptions make the broker send one copy per subscription (MQTT 5,
    /// e.g. mosquitto). `Some(None)`: pass it to every local subscriber;
    /// `Some(Some(filter))`: pass it only to local subscribers of `filter`;
    /// `None`: a duplicate, drop it.
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
    fn copy_scope(&self, topic: &str, ids: &[usize], retain: bool) -> Option<Option<String>> {
        if ids.is_empty() {
            return Some(None);
        }
        // Only transparent mode has local filters equal to remote ones.
        if retain
            && let [id] = ids
            && self.rules.is_transparent()
            && let Some(filter) = self.sub_ids.filter(*id)
        {
            return Some(Some(filter.to_owned()));
        }
        let representative = self
            .subscriptions
            .keys()
            .filter(|f| self.confirmed.contains(*f))
            .find(|f| crate::core::topic::matches(f, topic))
            .and_then(|f| self.sub_ids.get(f));
        match representative {
            None => Some(None),
            Some(rep) if ids.contains(&rep) => Some(None),
            Some(_) if retain => Some(None),
            Some(_) => None,
        }
    }

    /// Moves subscription requests, then queued messages, into rumqttc's
    /// channel, as far as its capacity and the in-flight window allow.
    fn pump(&mut self) {
        if !self.connected {
            return;
        }
        while self.in_channel < link::REQUEST_CHANNEL {
            if let Some(req) = self.control.pop_front() {
                let ok = match &req {
                    Request::Subscribe(filter, qos, id) => {
                        let ok = self.client.try_subscribe(filter, *qos, *id);
                        if ok {
                            self.awaiting_suback.push_back(filter.clone());
                        }
                        ok
                    }
                    Request::Unsubscribe(filter) => self.client.try_unsubscribe(filter),
                };
                if ok {
                    self.in_channel += 1;
                } else {
                    // The channel has room (we count), so rumqttc refused
                    // the request itself, e.g. an invalid filter.
                    warn!("upstream: rumqttc refused a (un)subscribe request; skipped");
                }
                continue;
            }
            if self.outbox.in_flight() >= usize::from(link::MAX_INFLIGHT) {
                break;
            }
            let Some(msg) = self.outbox.peek_queued() else {
                break;
            };
            if self.client.try_publish(msg) {
                if let Some(echo) = &mut self.echo
                    && self
                        .subscriptions
                        .keys()
                        .any(|f| crate::core::topic::matches(f, &msg.topic))
                {
                    echo.published(std::time::Instant::now(), &msg.topic, &msg.payload);
                }
                self.outbox.mark_submitted();
                self.in_channel += 1;
            } else if let Some(bad) = self.outbox.discard_queued() {
                warn!(topic = %bad.topic, "upstream: rumqttc refused to publish; dropped");
                bump(&self.counters.rejected, 1);
            }
        }
    }

    async fn on_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::ConnAck { session_present } => {
                self.connected = true;
                self.in_channel = 0;
                self.backoff.reset();
                self.counters.connected.store(true, Ordering::Relaxed);
                bump(&self.counters.connects, 1);
                let resent = if session_present {
                    self.outbox.replaying()
                } else {
                    self.outbox.connected(false)
                };
                bump(&self.counters.resent, resent as u64);
                info!(
                    broker = %self.endpoint,
                    session_present,
                    resending = resent,
                    queued = self.outbox.queued(),
                    "upstream connected"
                );
                // Re-subscribe everything, every time.
                self.control.clear();
                self.awaiting_suback.clear();
                self.confirmed.clear();
                // One SUBSCRIBE per filter: each carries its own identifier.
                let all: Vec<(String, u8)> = self
                    .subscriptions
                    .iter()
                    .map(|(f, q)| (f.clone(), *q))
                    .collect();
                for (filter, qos) in all {
                    let id = self.sub_ids.id(&filter);
                    self.control.push_back(Request::Subscribe(filter, qos, id));
                }
                self.emit(BridgeEvent::Connected).await;
            }
            LinkEvent::Publish {
                topic,
                payload,
                qos,
                retain,
                subscription_ids,
            } => {
                let Some(topic) = topic else {
                    bump(&self.counters.not_bridged_in, 1);
                    return;
                };
                let scope = match self.copy_scope(&topic, &subscription_ids, retain) {
                    Some(scope) => scope,
                    None => {
                        bump(&self.counters.duplicates_suppressed, 1);
                        return;
                    }
                };
                if let Some(echo) = &mut self.echo
                    && echo.is_echo(std::time::Instant::now(), &topic, &payload)
                {
                    bump(&self.counters.echoes_suppressed, 1);
                    return;
                }
                let Some((local, qos)) = self.rules.inbound(&topic, qos) else {
                    bump(&self.counters.not_bridged_in, 1);
                    return;
                };
                bump(&self.counters.received, 1);
                self.emit(BridgeEvent::Message(UpstreamMessage {
                    topic: local,
                    payload,
                    qos,
                    retain,
                    filter: scope,
                }))
                .await;
            }
            LinkEvent::PubAck { pkid, ok } => {
                let ack = self.outbox.on_puback(pkid, ok);
                self.count_ack(ack);
            }
            LinkEvent::PubRec { pkid, ok } => {
                let ack = self.outbox.on_pubrec(pkid, ok);
                self.count_ack(ack);
            }
            LinkEvent::PubComp { pkid } => {
                let ack = self.outbox.on_pubcomp(pkid);
                self.count_ack(ack);
            }
            LinkEvent::SubAck { refused } => {
                let filter = self.awaiting_suback.pop_front();
                match filter {
                    Some(filter) if refused == 0 => {
                        if self.subscriptions.contains_key(&filter) {
                            self.confirmed.insert(filter);
                        }
                    }
                    Some(filter) => {
                        warn!(%filter, "upstream broker refused a subscription filter");
                        self.confirmed.remove(&filter);
                    }
                    None => debug!("upstream: SUBACK for nothing awaited"),
                }
            }
            LinkEvent::SentPublish(pkid) => {
                if let Some(qos) = self.outbox.on_outgoing_publish(pkid) {
                    self.in_channel = self.in_channel.saturating_sub(1);
                    if qos == 0 {
                        bump(&self.counters.published, 1);
                    }
                }
            }
            LinkEvent::HeldPublish(pkid) => {
                self.outbox.on_await_ack(pkid);
                self.in_channel = self.in_channel.saturating_sub(1);
            }
            LinkEvent::SentPubRel(pkid) => self.outbox.on_outgoing_pubrel(pkid),
            LinkEvent::SentControl | LinkEvent::SentDisconnect => {
                self.in_channel = self.in_channel.saturating_sub(1);
            }
            LinkEvent::Other => {}
        }
    }

    fn count_ack(&self, ack: Ack) {
        match ack {
            Ack::Completed => bump(&self.counters.published, 1),
            Ack::Rejected => {
                bump(&self.counters.rejected, 1);
                warn!("upstream broker refused a message (error reason code)");
            }
            Ack::Unmatched => debug!("upstream: acknowledgement matches nothing pending"),
            Ack::Progressed => {}
        }
    }

    async fn on_connection_error(&mut self, event_loop: &mut LinkLoop, reason: String) {
        // What rumqttc had buffered did happen (acks read, publishes
        // written): account for it before declaring the loss.
        for ev in event_loop.take_buffered() {
            if !matches!(ev, LinkEvent::ConnAck { .. }) {
                self.on_event(ev).await;
            }
        }
        let was_connected = self.connected;
        self.connected = false;
        self.in_channel = 0;
        self.control.clear();
        self.counters.connected.store(false, Ordering::Relaxed);
        bump(&self.counters.connection_errors, 1);
        let (replays, dropped) = self.outbox.connection_lost(self.keep_qos0_offline);
        event_loop.replace_pending(&replays);
        bump(&self.counters.dropped_offline, dropped as u64);
        if was_connected {
            warn!(
                broker = %self.endpoint,
                %reason,
                unacknowledged = replays.len(),
                queued = self.outbox.queued(),
                dropped_qos0 = dropped,
                "upstream connection lost"
            );
            self.emit(BridgeEvent::Disconnected { reason }).await;
        } else {
            debug!(broker = %self.endpoint, %reason, "upstream connection attempt failed");
        }
    }

    /// Sends DISCONNECT if connected, waiting briefly for it to be written.
    async fn disconnect(&mut self, event_loop: &mut LinkLoop) {
        if !self.connected || !self.client.try_disconnect() {
            return;
        }
        let until = Instant::now() + DISCONNECT_WAIT;
        while let Ok(Ok(ev)) = tokio::time::timeout_at(until, event_loop.poll()).await {
            if matches!(ev, LinkEvent::SentDisconnect) {
                break;
            }
        }
        self.connected = false;
    }

    /// Tells the driver which durable messages left the bridge.
    async fn report_settled(&mut self) {
        let mut ids = std::mem::take(&mut self.settled);
        ids.extend(self.outbox.take_settled());
        if !ids.is_empty() {
            self.emit(BridgeEvent::Settled(ids)).await;
        }
    }

    async fn emit(&self, ev: BridgeEvent) {
        // An error means the handle is gone; the task ends on its own.
        let _ = self.events.send(ev).await;
    }

    fn publish_gauges(&mut self) {
        // Outbox first, then what was taken from the channel, with Release:
        // a reader that sees the new `taken` (Acquire) sees this outbox too.
        let before = self
            .counters
            .pending_messages
            .swap(self.outbox.len() as u64, Ordering::Release);
        self.counters
            .pending_bytes
            .store(self.outbox.bytes() as u64, Ordering::Release);
        let room = &self.counters.room;
        room.taken_messages.store(self.taken.0, Ordering::Release);
        room.taken_bytes.store(self.taken.1, Ordering::Release);
        // Wake the driver (which releases parked device messages) once enough
        // room has freed, not on every acknowledgement: under sustained load
        // that would bounce between the two threads once per message.
        let len = self.outbox.len() as u64;
        if len < before {
            self.freed_since_notify += before - len;
            if self.freed_since_notify >= ROOM_NOTIFY_BATCH || len == 0 {
                self.freed_since_notify = 0;
                room.freed.notify_one();
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
