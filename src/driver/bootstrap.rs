//! Bootstrap: from a validated [`Config`] to a running gateway. [`start`]
//! binds every listener (UDP, the discovery multicast group, the HTTP
//! endpoint, the embedded broker), opens the store and restores the engine
//! and the bridge's outbox from it, starts the readers, serial links and the
//! bridge, and spawns the engine task (`task.rs`). What it returns,
//! [`RunningGateway`], is the caller's handle on that task: its bound
//! addresses, reloads, queries and the way to stop it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::task::Driver;
use super::{DriverError, ShutdownReport, StoreCounters, ops};
use crate::bridge::{self, BridgeHandle};
use crate::broker::{Broker, SysTopics};
use crate::config::{Config, UpstreamConfig};
use crate::core::{EngineConfig, Gateway, UpstreamCommand};
use crate::ops::QueryHandle;
use crate::ops::http::{HttpServer, Limits as HttpLimits};
use crate::store::{Store, StoreError};
use crate::transport::Batch;
use crate::transport::dtls::certs::CertAuth;
use crate::transport::dtls::psk::{self, PskFileError, PskKeys};
use crate::transport::dtls::{self, DtlsLink};
use crate::transport::serial;
use crate::transport::udp;

/// A started gateway: its listeners are bound and its task is running.
pub struct RunningGateway {
    /// A fatal error of the running gateway (the store failed).
    pub(super) fatal: Option<oneshot::Receiver<StoreError>>,
    udp_addrs: Vec<SocketAddr>,
    dtls_addrs: Vec<SocketAddr>,
    /// The DTLS listeners' keys (a reload replaces them), when any listens.
    psk: Option<PskKeys>,
    broker_addrs: Vec<SocketAddr>,
    broker_tls_addrs: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<Duration>>,
    reconfigure: mpsc::UnboundedSender<EngineConfig>,
    task: JoinHandle<ShutdownReport>,
    http: Option<HttpServer>,
    queries: QueryHandle,
    shutdown_grace: Duration,
}

impl RunningGateway {
    /// The UDP addresses actually bound (ports resolved when 0 was configured).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The DTLS addresses actually bound (ports resolved when 0 was
    /// configured).
    pub fn dtls_addrs(&self) -> &[SocketAddr] {
        &self.dtls_addrs
    }

    /// Puts the keys of the psk file at `path` in force for every new DTLS
    /// handshake (sessions already established keep going). Without DTLS
    /// listeners it does nothing.
    pub fn reload_psk(&self, path: &std::path::Path) -> Result<(), PskFileError> {
        if let Some(keys) = &self.psk {
            keys.replace(psk::load(path)?);
        }
        Ok(())
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
            info!(addr = %server.local_addr(), "HTTP endpoint listening (/ dashboard, /metrics, /status, /healthz)");
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
            // A default client id waits for the bound UDP port when the
            // configured one is 0 (ephemeral).
            let bound = listeners.first().map(|l| l.local_addr.port());
            let upstream = UpstreamConfig {
                client_id: config.upstream_client_id(bound),
                ..upstream.clone()
            };
            info!(
                host = %upstream.host,
                port = upstream.port,
                client_id = upstream.client_id.as_deref().unwrap_or_default(),
                "bridging to the upstream broker"
            );
            Some(bridge::spawn(&upstream)?)
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
    let mut readers: Vec<JoinHandle<()>> = listeners
        .iter()
        .map(|l| l.spawn_reader(tx.clone()))
        .collect();
    let (dtls_links, psk) = start_dtls(&config, listeners.len(), &tx, &mut readers)?;
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
    let dtls_addrs = dtls_links.iter().map(|l| l.local_addr).collect();
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
            if let Some(b) = &bridge {
                b.restore_dead_letters(loaded.dead_letters);
            }
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
        drop_log: super::drop_log::DropLog::default(),
        gateway,
        listeners,
        dtls_links,
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
        dead_letters: Vec::new(),
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
        dtls_addrs,
        psk,
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

/// Binds the `[dtls]` listeners (numbered after the `plain` UDP ones) with
/// the keys of the psk file, and starts their tasks (added to `readers`).
fn start_dtls(
    config: &Config,
    plain: usize,
    tx: &mpsc::Sender<Batch>,
    readers: &mut Vec<JoinHandle<()>>,
) -> Result<(Vec<DtlsLink>, Option<PskKeys>), DriverError> {
    if config.dtls.listen.is_empty() {
        return Ok((Vec::new(), None));
    }
    let keys = match &config.dtls.psk_file {
        Some(path) => {
            let keys = PskKeys::new(psk::load(path)?);
            info!(identities = keys.len(), file = %path.display(), "DTLS pre-shared keys loaded");
            keys
        }
        None => PskKeys::default(),
    };
    let certs = match config.dtls.cert_files() {
        Some((cert, key, ca)) => Some(Arc::new(CertAuth::load(cert, key, ca)?)),
        None => None,
    };
    let mut links = Vec::new();
    for (i, addr) in config.dtls.listen.iter().enumerate() {
        let index = u16::try_from(plain + i).unwrap_or(u16::MAX);
        let (link, task) = dtls::spawn(
            index,
            *addr,
            (config.udp.recv_buffer_bytes, config.udp.send_buffer_bytes),
            config.dtls.endpoint(),
            keys.clone(),
            certs.clone(),
            tx.clone(),
        )?;
        links.push(link);
        readers.push(task);
    }
    Ok((links, Some(keys)))
}
