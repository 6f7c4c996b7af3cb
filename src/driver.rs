//! The driver: the single tokio task that owns the [`Gateway`] engine (no
//! locks). It binds the transports, then loops: wait for a batch of datagrams,
//! an upstream event, the engine's next deadline or shutdown; feed the engine;
//! drain its outputs to sockets and the bridge. `now` comes from here — the
//! engine never reads a clock.
//!
//! Beside it: `ops.rs` answers operations queries (`/metrics`, `/status`,
//! `/healthz`) from the same loop, and `shutdown.rs` drains within the
//! configured bound at SIGTERM.

mod ops;
mod shutdown;

pub use shutdown::ShutdownReport;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::bridge::{self, BridgeError, BridgeEvent, BridgeHandle, RoomWatch};
use crate::broker::{Broker, BrokerError, BrokerEvent, SysTopics};
use crate::config::Config;
use crate::config::reload::{self, ReloadPlan};
use crate::core::{EngineConfig, Gateway, LinkAddr, Output, Peer, UpstreamCommand};
use crate::ops::http::{HttpServer, Limits as HttpLimits};
use crate::ops::{Query, QueryHandle};
use crate::proto::{self, Packet};
use crate::security::AclFileError;
use crate::store::{Store, StoreError};
use crate::transport::serial::{self, SerialLink};
use crate::transport::udp::{self, UdpListener};
use crate::transport::{Batch, TransportError};

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A transport could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The upstream bridge could not be set up.
    #[error("cannot start the upstream bridge")]
    Bridge(#[from] BridgeError),
    /// The embedded MQTT broker could not be set up.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The durable store could not be opened, or a commit failed (nothing
    /// that depended on it was acknowledged).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No state directory is configured and none can be derived.
    #[error(
        "no state directory: set [store] state_dir or --state-dir, or turn the store off with --state-dir off"
    )]
    NoStateDir,
    /// The driver task ended abnormally.
    #[error("the gateway task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The ACL file could not be read or parsed.
    #[error(transparent)]
    Acl(#[from] AclFileError),
    /// The HTTP operations endpoint could not be bound.
    #[error("cannot bind the HTTP endpoint {addr}")]
    Http {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started gateway: its listeners are bound and its task is running.
pub struct RunningGateway {
    /// A fatal error of the running gateway (the store failed).
    fatal: Option<oneshot::Receiver<StoreError>>,
    udp_addrs: Vec<SocketAddr>,
    broker_addrs: Vec<SocketAddr>,
    broker_tls_addrs: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<Duration>>,
    reconfigure: mpsc::UnboundedSender<EngineConfig>,
    task: JoinHandle<ShutdownReport>,
    http: Option<HttpServer>,
    queries: QueryHandle,
    shutdown_grace: Duration,
}

/// What a running gateway needs to reload its configuration on SIGHUP.
pub struct Reloader {
    /// Reads and validates the configuration again (the same file and
    /// command-line overrides as at start-up).
    pub load: Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>,
    /// Changes the log level of the running process.
    pub log: Option<crate::logging::LogReload>,
}

impl RunningGateway {
    /// The UDP addresses actually bound (ports resolved when 0 was configured).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The embedded broker's TCP addresses actually bound (empty when off).
    pub fn broker_addrs(&self) -> &[SocketAddr] {
        &self.broker_addrs
    }

    /// The embedded broker's TLS addresses actually bound (empty when none).
    pub fn broker_tls_addrs(&self) -> &[SocketAddr] {
        &self.broker_tls_addrs
    }

    /// Applies new engine settings (see `Gateway::reconfigure`).
    pub fn reconfigure(&self, config: EngineConfig) {
        let _ = self.reconfigure.send(config);
    }

    /// The HTTP operations endpoint's address, when `[http] listen` is set
    /// (port resolved when 0 was configured).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Asks the engine task questions (figures, status, health) in-process,
    /// as the HTTP endpoint does.
    pub fn queries(&self) -> QueryHandle {
        self.queries.clone()
    }

    /// Asks the gateway to stop and waits for it, draining for up to the
    /// configured `shutdown_grace_secs`.
    pub async fn shutdown(self) -> Result<(), DriverError> {
        let grace = self.shutdown_grace;
        self.shutdown_within(grace).await.map(drop)
    }

    /// Asks the gateway to stop, draining for up to `grace` (see
    /// `driver/shutdown.rs`), waits for it, and says what was left.
    pub async fn shutdown_within(mut self, grace: Duration) -> Result<ShutdownReport, DriverError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        let report = (&mut self.task).await?;
        if let Some(http) = self.http.take() {
            http.stop();
        }
        Ok(report)
    }
}

/// Binds every configured listener and starts the gateway task. Must be called
/// inside a tokio runtime.
pub async fn start(config: Config) -> Result<RunningGateway, DriverError> {
    let (tx, inbound) = mpsc::channel::<Batch>(64);
    let mut listeners = Vec::with_capacity(config.udp.listen.len());
    for (index, addr) in config.udp.listen.iter().enumerate() {
        let index = u16::try_from(index).unwrap_or(u16::MAX);
        let listener = udp::bind(
            index,
            *addr,
            config.udp.recv_buffer_bytes,
            config.udp.send_buffer_bytes,
        )?;
        info!(addr = %listener.local_addr, "MQTT-SN listening on UDP");
        listeners.push(listener);
    }
    let (queries, query_rx) = crate::ops::query::channel();
    let http = match config.http.listen {
        Some(addr) => {
            let server = crate::ops::http::bind(addr, queries.clone(), HttpLimits::default())
                .await
                .map_err(|source| DriverError::Http { addr, source })?;
            info!(addr = %server.local_addr(), "HTTP endpoint listening (/metrics, /status, /healthz)");
            Some(server)
        }
        None => None,
    };
    let advertise_group = config
        .discovery
        .advertise
        .then_some(config.discovery.advertise_group);
    if let Some(group) = advertise_group
        && group.ip().is_multicast()
        && let Some(listener) = listeners.iter().find(|l| {
            l.local_addr.is_ipv4() == group.is_ipv4() && l.local_addr.port() == group.port()
        })
    {
        listener.join_multicast(group, config.discovery.multicast_ttl)?;
        info!(%group, "joined the discovery multicast group");
    }
    let mut bridge = match &config.upstream {
        Some(upstream) => {
            info!(host = %upstream.host, port = upstream.port, "bridging to the upstream broker");
            Some(bridge::spawn(upstream)?)
        }
        None => None,
    };
    let opened = match config.store.enabled {
        true => {
            let dir = config.store.resolved_dir().ok_or(DriverError::NoStateDir)?;
            let opened = tokio::task::spawn_blocking(move || Store::open(&dir)).await??;
            Some(opened)
        }
        false => None,
    };
    let broker = if !config.broker.enabled() {
        None
    } else {
        Some(Broker::start(&config.broker).await?)
    };
    let broker_addrs = broker
        .as_ref()
        .map(|b| b.local_addrs().to_vec())
        .unwrap_or_default();
    let broker_tls_addrs = broker
        .as_ref()
        .map(|b| b.tls_addrs().to_vec())
        .unwrap_or_default();
    let readers = listeners
        .iter()
        .map(|l| l.spawn_reader(tx.clone()))
        .collect();
    let serial_links = config
        .serial
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            serial::spawn(
                index,
                port.clone(),
                tx.clone(),
                config.gateway.max_packet_bytes,
            )
        })
        .collect();
    drop(tx);

    let udp_addrs = listeners.iter().map(|l| l.local_addr).collect();
    let now = tokio::time::Instant::now().into_std();
    let mut engine = config.engine_config();
    engine.persist = opened.is_some();
    engine.acl = config.security.load_acl()?;
    let mut gateway = Gateway::new(engine, now);
    let store = match opened {
        Some((store, loaded)) => {
            info!(dir = %store.dir().display(), "durable state in");
            gateway.restore(now, loaded.restored);
            restore_outbox(bridge.as_mut(), loaded.outbox);
            Some(Arc::new(store))
        }
        None => None,
    };
    let (fatal_tx, fatal) = oneshot::channel();
    let (reconfigure, reconfigured) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel();
    let shutdown_grace = Duration::from_secs(u64::from(config.gateway.shutdown_grace_secs));
    let driver = Driver {
        ops: ops::OpsState::new(
            listeners.len(),
            config.upstream.is_some(),
            broker.as_ref().map(|b| Arc::clone(b.stats())),
            config.fixed_limits(),
        ),
        queries: query_rx,
        shutdown_grace,
        gateway,
        listeners,
        readers,
        inbound,
        room_watch: bridge.as_ref().map(BridgeHandle::room_watch),
        bridge,
        serial_links,
        reconfigured,
        watchdog: crate::systemd::watchdog_interval(),
        max_packet_bytes: config.gateway.max_packet_bytes,
        advertise_group,
        scratch: BytesMut::with_capacity(4096),
        broker,
        store,
        settled: Vec::new(),
        fatal: Some(fatal_tx),
        stopping: false,
        settle_now: false,
        drop_when_full: config
            .upstream
            .as_ref()
            .is_some_and(|u| u.outbox_full == crate::config::OutboxFull::DropNewest),
        store_stats: StoreCounters::default(),
        sys: SysTopics::new(
            config.broker.sys_interval_secs,
            tokio::time::Instant::now().into_std(),
        ),
    };
    let task = tokio::spawn(driver.run(stopped));
    Ok(RunningGateway {
        fatal: Some(fatal),
        udp_addrs,
        broker_addrs,
        broker_tls_addrs,
        stop: Some(stop),
        reconfigure,
        task,
        http,
        queries,
        shutdown_grace,
    })
}

/// Starts the gateway and runs it until `shutdown` completes; on each SIGHUP
/// (with a `reloader`) reloads what can change at runtime. Under systemd
/// (`Type=notify`) it reports READY=1 once every listener is bound and
/// STOPPING=1 when it begins to shut down.
pub async fn run_until(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloader: Option<Reloader>,
) -> Result<(), DriverError> {
    let mut current = config.clone();
    // What the running links and buffers were started with, apart from
    // `current` (the last file applied), which may name other links.
    let mut started = reload::Started::new(&config);
    // Before anything is bound or logged: until a handler is installed,
    // SIGHUP's default action would end the process.
    let mut hangups = hangup_signals();
    let running = start(config).await?;
    if let Err(e) = crate::systemd::notify("READY=1") {
        warn!(error = %e, "cannot notify systemd of readiness");
    }
    let mut running = running;
    tokio::pin!(shutdown);
    let mut fatal = running.fatal.take();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Ok(err) = async { match &mut fatal { Some(f) => f.await, None => std::future::pending().await } } => {
                let _ = crate::systemd::notify("STOPPING=1");
                let _ = running.shutdown().await;
                return Err(err.into());
            }
            Some(()) = next_hangup(&mut hangups), if reloader.is_some() => {
                if let Some(reloader) = &reloader {
                    let _ = crate::systemd::notify("RELOADING=1");
                    reload(reloader, &mut current, &mut started, &running);
                    let _ = crate::systemd::notify("READY=1");
                }
            }
        }
    }
    let grace = Duration::from_secs(u64::from(current.gateway.shutdown_grace_secs));
    info!(grace_secs = grace.as_secs(), "shutting down");
    let _ = crate::systemd::notify("STOPPING=1");
    running.shutdown_within(grace).await.map(drop)
}

/// Starts the gateway and runs it until SIGINT or SIGTERM, reloading on
/// SIGHUP when given a `reloader`.
pub async fn run(config: Config, reloader: Option<Reloader>) -> Result<(), DriverError> {
    run_until(config, shutdown_signal(), reloader).await
}

/// Reads the configuration again and applies what can change at runtime;
/// logs what was applied and what needs a restart. A bad file changes nothing.
/// `started` holds what the running links were started with: a radio
/// allow-list applies only to the running link it was written for.
fn reload(
    reloader: &Reloader,
    current: &mut Config,
    started: &mut reload::Started,
    running: &RunningGateway,
) {
    let new = match (reloader.load)() {
        Ok(new) => new,
        Err(e) => {
            warn!(error = %e, "configuration not reloaded; the running one is kept");
            return;
        }
    };
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    if new.log.level != current.log.level {
        match reloader.log.as_ref().map(|l| l.set_level(&new.log.level)) {
            Some(Ok(())) => applied.push("log.level"),
            Some(Err(e)) => warn!(error = %e, "log level not changed"),
            None => restart.push("log.level"),
        }
    }
    let plan = ReloadPlan::new(current, &new, started);
    applied.extend(&plan.applied);
    restart.extend(&plan.restart);
    let mut engine = plan.engine_config(&new, started);
    match new.security.load_acl() {
        Ok(acl) => engine.acl = acl,
        Err(e) => {
            warn!(error = %e, "configuration not reloaded; the running one is kept");
            return;
        }
    }
    for &port in &plan.serial.kept {
        let device = started.serial.get(port).map_or("?", |l| l.device.as_str());
        warn!(
            port,
            device,
            "[[serial]] entries added, removed, reordered or changed (a restart applies them): \
             the allow_radio_addresses in force on this link are kept"
        );
    }
    running.reconfigure(engine);
    info!(?applied, needs_restart = ?restart, "configuration reloaded");
    started.serial = plan.serial.links;
    *current = new;
}

#[cfg(unix)]
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|e| warn!(error = %e, "cannot listen for SIGHUP; no reloads"))
        .ok()
}

#[cfg(not(unix))]
fn hangup_signals() -> Option<()> {
    None
}

#[cfg(unix)]
async fn next_hangup(signals: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signals {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<()>) -> Option<()> {
    std::future::pending().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the gateway");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What the store has committed since start (for metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCounters {
    /// Synced batches.
    pub commits: u64,
    /// Records written or deleted.
    pub records: u64,
    /// Encoded bytes written.
    pub bytes: u64,
}

/// Hands the outbox found in the store to the bridge, oldest first. Without
/// a bridge (the upstream was removed from the config) the messages stay in
/// the store for a later start with one.
fn restore_outbox(
    bridge: Option<&mut BridgeHandle>,
    outbox: Vec<(u64, crate::core::OutboxRecord)>,
) {
    if outbox.is_empty() {
        return;
    }
    let Some(bridge) = bridge else {
        warn!(
            messages = outbox.len(),
            "the store holds messages for an upstream broker, but none is configured; they are kept"
        );
        return;
    };
    info!(
        messages = outbox.len(),
        "resending the stored upstream outbox"
    );
    let cmds = outbox
        .into_iter()
        .map(|(id, r)| UpstreamCommand::Publish {
            topic: r.message.topic,
            payload: Bytes::from(r.message.payload),
            qos: r.message.qos,
            retain: r.message.retain,
            store_id: Some(id),
            // A device's message goes up on its own session again.
            from: r.device.map(|d| crate::core::DeviceOrigin {
                client_id: d.into(),
                ack: None,
            }),
        })
        .collect();
    bridge.restore(cmds);
}

struct Driver {
    gateway: Gateway,
    listeners: Vec<UdpListener>,
    readers: Vec<JoinHandle<()>>,
    inbound: mpsc::Receiver<Batch>,
    bridge: Option<BridgeHandle>,
    room_watch: Option<RoomWatch>,
    serial_links: Vec<SerialLink>,
    /// New engine settings from a reload.
    reconfigured: mpsc::UnboundedReceiver<EngineConfig>,
    /// How often to tell systemd's watchdog the engine loop is alive.
    watchdog: Option<Duration>,
    /// The largest message, for turning the bridge's byte bound into a count.
    max_packet_bytes: usize,
    advertise_group: Option<SocketAddr>,
    scratch: BytesMut,
    /// The embedded MQTT broker, when enabled.
    broker: Option<Broker>,
    /// The durable store, when enabled.
    store: Option<Arc<Store>>,
    /// Outbox ids the bridge settled, deleted at the next commit.
    settled: Vec<u64>,
    /// Where a fatal store error goes (taken when used).
    fatal: Option<oneshot::Sender<StoreError>>,
    /// Set when the store failed: the loop ends.
    stopping: bool,
    /// `[upstream] outbox_full = "drop-newest"`: never hold senders back.
    drop_when_full: bool,
    /// Shutting down: commit settled outbox ids even alone.
    settle_now: bool,
    /// What the store has committed since start.
    store_stats: StoreCounters,
    /// `$SYS/broker/…` status messages for local clients.
    sys: SysTopics,
    /// Figures only the driver sees, for operations queries.
    ops: ops::OpsState,
    /// Operations queries (`/metrics`, `/status`, `/healthz`).
    queries: mpsc::Receiver<Query>,
    /// How long to drain when the input ends by itself.
    shutdown_grace: Duration,
}

impl Driver {
    async fn run(mut self, mut stop: oneshot::Receiver<Duration>) -> ShutdownReport {
        // What restoring the store asked for (upstream subscriptions).
        self.flush().await;
        // Pinged from this loop, so systemd restarts a wedged engine too.
        // The first ping one interval after start: READY=1 is sent once
        // `start` has returned, and must come first.
        let mut watchdog = self
            .watchdog
            .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
        let mut sys_tick = match (&self.broker, self.sys.interval) {
            (Some(_), Some(every)) => Some(tokio::time::interval(every)),
            _ => None,
        };
        let grace = loop {
            let deadline = self
                .gateway
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                // A dropped RunningGateway (no one waits) stops at once.
                asked = &mut stop => break asked.unwrap_or_default(),
                // Before any input or query: a reload is logged once its
                // settings are sent, so whatever arrives after that line
                // meets them, and /metrics shows them.
                Some(cfg) = self.reconfigured.recv() => self.gateway.reconfigure(cfg),
                Some(query) = self.queries.recv() => self.answer(query),
                batch = self.inbound.recv() => {
                    let Some(batch) = batch else { break self.shutdown_grace };
                    let now = tokio::time::Instant::now().into_std();
                    for datagram in batch {
                        self.ops.received(&datagram.peer);
                        self.gateway.handle_datagram(now, datagram.peer, &datagram.bytes);
                    }
                }
                event = next_bridge_event(&mut self.bridge), if self.bridge.is_some() => {
                    self.on_bridge_event(event);
                }
                event = next_broker_event(&mut self.broker), if self.broker.is_some() => {
                    self.on_broker_event(event);
                }
                _ = room_freed(&self.room_watch), if self.gateway.has_parked_publishes() => {}
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.gateway.handle_timeout(tokio::time::Instant::now().into_std());
                }
                _ = tick(&mut sys_tick), if sys_tick.is_some() => {
                    let now = tokio::time::Instant::now().into_std();
                    let connections = self.broker.as_ref().map_or(0, Broker::connections);
                    self.sys.publish(&mut self.gateway, now, connections);
                }
                _ = tick(&mut watchdog), if watchdog.is_some() => {
                    if let Err(e) = crate::systemd::notify("WATCHDOG=1") {
                        debug!(error = %e, "cannot ping the systemd watchdog");
                    }
                }
            }
            if self.store.is_some() {
                self.take_ready_inputs();
            }
            self.flush().await;
            if self.stopping {
                break Duration::ZERO;
            }
        };
        let report = self.shut_down(grace).await;
        debug!("gateway task stopped");
        report
    }

    fn on_bridge_event(&mut self, event: Option<BridgeEvent>) {
        match event {
            Some(BridgeEvent::Message(msg)) => {
                let now = tokio::time::Instant::now().into_std();
                self.gateway.handle_upstream(now, msg);
            }
            Some(BridgeEvent::SessionStatus { client_id, status }) => {
                let now = tokio::time::Instant::now().into_std();
                self.gateway.handle_session_status(now, &client_id, status);
            }
            Some(BridgeEvent::SessionAck {
                client_id,
                ack,
                accepted,
            }) => {
                let now = tokio::time::Instant::now().into_std();
                self.gateway
                    .handle_session_ack(now, &client_id, ack, accepted);
            }
            Some(BridgeEvent::SessionMessage { client_id, message }) => {
                let now = tokio::time::Instant::now().into_std();
                self.gateway
                    .handle_session_message(now, &client_id, message);
            }
            Some(BridgeEvent::Connected) => info!("upstream broker connected"),
            Some(BridgeEvent::Settled(ids)) => self.settled.extend(ids),
            Some(BridgeEvent::Disconnected { reason }) => {
                warn!(%reason, "upstream broker disconnected; reconnecting");
            }
            None => {
                // Nothing can go up any more: device QoS 1/2 messages bound
                // upstream are no longer acknowledged (they stay with the
                // devices) rather than acknowledged and dropped.
                warn!("the upstream bridge stopped; device messages bound upstream are held");
                self.bridge = None;
                self.room_watch = None;
                let now = tokio::time::Instant::now().into_std();
                self.gateway.set_upstream_room(now, 0);
            }
        }
    }

    fn on_broker_event(&mut self, event: Option<BrokerEvent>) {
        let now = tokio::time::Instant::now().into_std();
        match event {
            Some(BrokerEvent::Input { conn, input }) => self.gateway.handle_local(now, conn, input),
            Some(BrokerEvent::Opened { .. }) => {}
            None => {
                warn!("the embedded broker stopped");
                self.broker = None;
            }
        }
    }

    /// Carries out everything the engine asked for, in order, then tells the
    /// engine how much the bridge can take now (which may release parked
    /// device messages, so it loops until nothing more comes out).
    async fn flush(&mut self) {
        loop {
            self.flush_outputs().await;
            let Some(bridge) = &self.bridge else {
                return;
            };
            // "drop-newest": never hold senders back; the bridge drops (and
            // counts) what does not fit.
            let room = if self.drop_when_full {
                usize::MAX
            } else {
                bridge.room(self.max_packet_bytes)
            };
            let parked = self.gateway.has_parked_publishes();
            let now = tokio::time::Instant::now().into_std();
            self.gateway.set_upstream_room(now, room);
            if !(parked && room > 0) {
                return;
            }
        }
    }

    /// Group commit: before a commit (an fdatasync), takes every input that
    /// is already waiting — datagram batches, bridge and broker events — so
    /// one commit covers them all instead of one commit each. Bounded, so
    /// stop, queries and timers are never held up for long.
    fn take_ready_inputs(&mut self) {
        for _ in 0..READY_ROUNDS {
            // As in the main loop: a reload sent before these inputs
            // arrived applies to them.
            while let Ok(cfg) = self.reconfigured.try_recv() {
                self.gateway.reconfigure(cfg);
            }
            let mut took = false;
            if let Ok(batch) = self.inbound.try_recv() {
                let now = tokio::time::Instant::now().into_std();
                for datagram in batch {
                    self.ops.received(&datagram.peer);
                    self.gateway
                        .handle_datagram(now, datagram.peer, &datagram.bytes);
                }
                took = true;
            }
            if let Some(event) = self.bridge.as_mut().and_then(BridgeHandle::try_recv) {
                self.on_bridge_event(Some(event));
                took = true;
            }
            if let Some(event) = self.broker.as_mut().and_then(Broker::try_recv) {
                self.on_broker_event(Some(event));
                took = true;
            }
            if !took {
                break;
            }
        }
    }

    /// Commits what the engine asked to make durable (and the outbox ids the
    /// bridge settled) in one synced batch. Returns false if the store
    /// failed: then nothing of this batch may be carried out.
    async fn commit(&mut self) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let ops = self.gateway.take_store_ops();
        // Settled outbox ids alone do not earn an fdatasync of their own:
        // they ride with the next commit (a delete lost in a crash only
        // means a QoS 1 duplicate upstream after the restart).
        if ops.is_empty() && self.settled.len() < SETTLED_ALONE && !self.settle_now {
            return true;
        }
        let settled = std::mem::take(&mut self.settled);
        let store = Arc::clone(store);
        let result = tokio::task::spawn_blocking(move || store.commit(&ops, &settled)).await;
        let err = match result {
            Ok(Ok(stats)) => {
                self.store_stats.commits += 1;
                self.store_stats.records += stats.records as u64;
                self.store_stats.bytes += stats.bytes as u64;
                return true;
            }
            Ok(Err(e)) => e,
            Err(join) => StoreError::Dir {
                dir: Default::default(),
                source: std::io::Error::other(join.to_string()),
            },
        };
        error!(error = %err, "the durable store failed; stopping without acknowledging what it did not keep");
        if let Some(fatal) = self.fatal.take() {
            let _ = fatal.send(err);
        }
        self.store = None;
        false
    }

    async fn flush_outputs(&mut self) {
        if self.stopping || !self.commit().await {
            // Nothing of this batch goes out: acknowledgements would promise
            // what is not on disk. The gateway stops (see `run_until`).
            while self.gateway.poll_output().is_some() {}
            self.stopping = true;
            return;
        }
        while let Some(output) = self.gateway.poll_output() {
            match output {
                Output::Transmit { to, packet } => self.send(&to, packet).await,
                Output::Broadcast {
                    packet, requester, ..
                } => {
                    if let Some(group) = self.advertise_group
                        && let Some(listener) = self
                            .listeners
                            .iter()
                            .find(|l| l.local_addr.is_ipv4() == group.is_ipv4())
                    {
                        let to = Peer::udp_on(listener.index, group);
                        self.send(&to, packet.clone()).await;
                    }
                    match requester {
                        // GWINFO to a radio goes to the link's broadcast
                        // address (v1.2 §6.1; other devices hear it too).
                        Some(Peer {
                            link: LinkAddr::Radio { port, .. },
                            node: None,
                        }) => self.send(&Peer::serial(port), packet).await,
                        Some(requester) => self.send(&requester, packet).await,
                        // ADVERTISE: every serial link too (XBee: the
                        // broadcast address).
                        None => {
                            for i in 0..self.serial_links.len() {
                                let port = u16::try_from(i).unwrap_or(u16::MAX);
                                self.send(&Peer::serial(port), packet.clone()).await;
                            }
                        }
                    }
                }
                Output::Upstream(cmd) => match &mut self.bridge {
                    Some(bridge) => bridge.send(cmd),
                    None => debug!(?cmd, "no upstream bridge; command dropped"),
                },
                Output::Local { conn, action } => match &mut self.broker {
                    Some(broker) => broker.dispatch(conn, action),
                    None => debug!(%conn, "no embedded broker; action dropped"),
                },
            }
        }
    }

    /// Hands the encoded message in `scratch` to serial port `port`.
    fn send_serial(&self, port: u16, addr: Option<u64>, to: &Peer) {
        match self.serial_links.get(usize::from(port)) {
            Some(link) => link.send(addr, Bytes::copy_from_slice(&self.scratch)),
            None => debug!(%to, "no such serial port"),
        }
    }

    async fn send(&mut self, to: &Peer, packet: Packet) {
        let packet = match &to.node {
            Some(node) => Packet::Encapsulated {
                radius: 0,
                node_id: node.clone(),
                inner: Box::new(packet),
            },
            None => packet,
        };
        self.scratch.clear();
        if let Err(e) = proto::encode(&packet, &mut self.scratch) {
            warn!(%to, error = %e, "cannot encode an outgoing message");
            return;
        }
        match &to.link {
            LinkAddr::Udp { listener, addr } => {
                let Some(l) = self.listeners.get(usize::from(*listener)) else {
                    return;
                };
                let sent = l.send_to(&self.scratch, *addr).await;
                self.ops.sent(*listener, sent.is_ok());
                if let Err(e) = sent {
                    debug!(%to, error = %e, "UDP send failed");
                }
            }
            // A radio by its address; the port itself (XBee: broadcast).
            LinkAddr::Radio { port, addr } => self.send_serial(*port, Some(*addr), to),
            LinkAddr::Serial { port } => self.send_serial(*port, None, to),
        }
    }
}

/// Rounds of already-waiting inputs taken before one group commit.
const READY_ROUNDS: usize = 256;

/// Settled outbox ids committed on their own once this many wait.
const SETTLED_ALONE: usize = 1024;

async fn room_freed(watch: &Option<RoomWatch>) {
    match watch {
        Some(w) => w.freed().await,
        None => std::future::pending().await,
    }
}

async fn next_broker_event(broker: &mut Option<Broker>) -> Option<BrokerEvent> {
    match broker {
        Some(b) => b.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_bridge_event(bridge: &mut Option<BridgeHandle>) -> Option<BridgeEvent> {
    match bridge {
        Some(b) => b.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
