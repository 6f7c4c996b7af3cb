//! The engine task: its state ([`Driver`]), what one of its loops waits for
//! ([`Listen`]), and the run loop.
//!
//! Both loops of the task — this run loop and the shutdown drain
//! (`shutdown.rs`) — wait with [`Driver::next_input`] for the next
//! [`Input`], then hand it to [`Driver::step`] (`feed.rs`). They differ
//! only in their [`Listen`]: which inputs they accept and what ends them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval};
use tracing::debug;

use super::feed::Input;
use super::{ShutdownReport, StoreCounters, ops};
use crate::bridge::{BridgeEvent, BridgeHandle, RoomWatch};
use crate::broker::{Broker, BrokerEvent, SysTopics};
use crate::core::{EngineConfig, Gateway, LocalInput};
use crate::ops::Query;
use crate::store::{Store, StoreError};
use crate::transport::Batch;
use crate::transport::serial::SerialLink;
use crate::transport::udp::UdpListener;

/// The engine task's state: the engine, and every source and sink around
/// it. One task owns it, so nothing here needs a lock.
pub(super) struct Driver {
    pub(super) gateway: Gateway,
    pub(super) listeners: Vec<UdpListener>,
    /// The DTLS listeners, numbered after `listeners`.
    pub(super) dtls_links: Vec<crate::transport::dtls::DtlsLink>,
    pub(super) readers: Vec<JoinHandle<()>>,
    pub(super) inbound: mpsc::Receiver<Batch>,
    pub(super) bridge: Option<BridgeHandle>,
    pub(super) room_watch: Option<RoomWatch>,
    pub(super) serial_links: Vec<SerialLink>,
    /// New engine settings from a reload.
    pub(super) reconfigured: mpsc::UnboundedReceiver<EngineConfig>,
    /// How often to tell systemd's watchdog the engine loop is alive.
    pub(super) watchdog: Option<Duration>,
    /// The largest message, for turning the bridge's byte bound into a count.
    pub(super) max_packet_bytes: usize,
    pub(super) advertise_group: Option<SocketAddr>,
    pub(super) scratch: BytesMut,
    /// The embedded MQTT broker, when enabled.
    pub(super) broker: Option<Broker>,
    /// The durable store, when enabled.
    pub(super) store: Option<Arc<Store>>,
    /// Outbox ids the bridge settled, deleted at the next commit.
    pub(super) settled: Vec<u64>,
    /// Dead letters the bridge recorded, written at the next commit.
    pub(super) dead_letters: Vec<crate::bridge::DeadLetter>,
    /// Where a fatal store error goes (taken when used).
    pub(super) fatal: Option<oneshot::Sender<StoreError>>,
    /// Set when the store failed: the loop ends.
    pub(super) stopping: bool,
    /// `[upstream] outbox_full = "drop-newest"`: never hold senders back.
    pub(super) drop_when_full: bool,
    /// Shutting down: commit settled outbox ids even alone.
    pub(super) settle_now: bool,
    /// What the store has committed since start.
    pub(super) store_stats: StoreCounters,
    /// `$SYS/broker/…` status messages for local clients.
    pub(super) sys: SysTopics,
    /// Figures only the driver sees, for operations queries.
    pub(super) ops: ops::OpsState,
    /// Operations queries (`/metrics`, `/status`, `/healthz`).
    pub(super) queries: mpsc::Receiver<Query>,
    /// How long to drain when the input ends by itself.
    pub(super) shutdown_grace: Duration,
    /// Drops and refusals at warn, rate-limited per reason.
    pub(super) drop_log: super::drop_log::DropLog,
}

/// What one loop of the task listens to. Queries, bridge events and the
/// engine's own deadline are always taken; the rest is the loop's choice.
pub(super) struct Listen {
    /// `RunningGateway`'s stop request, answered with [`Input::Stop`].
    pub(super) stop: Option<oneshot::Receiver<Duration>>,
    /// When the loop's time is up, answered with [`Input::GraceOver`].
    pub(super) deadline: Option<Instant>,
    /// Settings from a reload.
    pub(super) reloads: bool,
    /// Datagram batches from devices.
    pub(super) datagrams: bool,
    /// What it takes from the embedded broker's connections (local
    /// programs).
    pub(super) local_clients: LocalClients,
    /// Wake when the bridge frees room in its outbox.
    pub(super) room: bool,
    /// Publish the `$SYS` topics at each tick.
    pub(super) sys_tick: Option<Interval>,
    /// Ping systemd's watchdog at each tick.
    pub(super) watchdog: Option<Interval>,
    /// Wake this often though nothing came ([`Input::Recheck`]).
    pub(super) recheck: Option<Duration>,
}

/// What a loop takes from the embedded broker's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LocalClients {
    /// Nothing: the broker is not read.
    Nothing,
    /// Only acknowledgements, which finish deliveries under way (the
    /// drain); the rest — new connections, messages, subscriptions — is
    /// left unanswered, as new work from devices is refused.
    Acknowledgements,
    /// Every event.
    Everything,
}

impl LocalClients {
    /// Whether `event` is taken.
    pub(super) fn takes(self, event: &BrokerEvent) -> bool {
        match self {
            LocalClients::Nothing => false,
            LocalClients::Acknowledgements => matches!(
                event,
                BrokerEvent::Input {
                    input: LocalInput::Acked { .. },
                    ..
                }
            ),
            LocalClients::Everything => true,
        }
    }
}

impl Listen {
    /// Listens to nothing but queries, bridge events and the engine's
    /// deadline; set the rest.
    pub(super) fn quiet() -> Self {
        Listen {
            stop: None,
            deadline: None,
            reloads: false,
            datagrams: false,
            local_clients: LocalClients::Nothing,
            room: false,
            sys_tick: None,
            watchdog: None,
            recheck: None,
        }
    }
}

impl Driver {
    /// Runs until asked to stop (or until every device input has ended),
    /// then drains (`shutdown.rs`).
    pub(super) async fn run(mut self, stop: oneshot::Receiver<Duration>) -> ShutdownReport {
        // What restoring the store asked for (upstream subscriptions).
        self.flush().await;
        let mut listen = Listen {
            stop: Some(stop),
            reloads: true,
            datagrams: true,
            local_clients: LocalClients::Everything,
            // Pinged from this loop, so systemd restarts a wedged engine
            // too. The first ping one interval after start: READY=1 is sent
            // once `start` has returned, and must come first.
            watchdog: self
                .watchdog
                .map(|every| tokio::time::interval_at(Instant::now() + every, every)),
            sys_tick: match (&self.broker, self.sys.interval) {
                (Some(_), Some(every)) => Some(tokio::time::interval(every)),
                _ => None,
            },
            ..Listen::quiet()
        };
        let grace = loop {
            listen.room = self.gateway.has_parked_publishes();
            match self.next_input(&mut listen).await {
                Input::Stop(grace) => break grace,
                Input::ReadersEnded => break self.shutdown_grace,
                input => self.step(input, &listen).await,
            }
            if self.stopping {
                break Duration::ZERO;
            }
        };
        let report = self.shut_down(grace).await;
        debug!("gateway task stopped");
        report
    }

    /// Waits for the next input `listen` accepts, in order of precedence:
    /// stop or deadline, a reload (so whatever arrives after its log line
    /// meets its settings, and `/metrics` shows them), a query, then device
    /// input, bridge and broker events, room, the engine's deadline, ticks.
    pub(super) async fn next_input(&mut self, listen: &mut Listen) -> Input {
        let timeout = self.gateway.poll_timeout().map(Instant::from_std);
        tokio::select! {
            biased;
            // A dropped RunningGateway (no one waits) stops at once.
            grace = stopped(&mut listen.stop), if listen.stop.is_some() => Input::Stop(grace),
            () = sleep_until(listen.deadline), if listen.deadline.is_some() => Input::GraceOver,
            Some(cfg) = self.reconfigured.recv(), if listen.reloads => Input::Reconfigure(Box::new(cfg)),
            Some(query) = self.queries.recv() => Input::Query(query),
            batch = self.inbound.recv(), if listen.datagrams => match batch {
                Some(batch) => Input::Datagrams(batch),
                None => Input::ReadersEnded,
            },
            event = next_bridge_event(&mut self.bridge), if self.bridge.is_some() => match event {
                Some(event) => Input::Bridge(event),
                None => Input::BridgeStopped,
            },
            event = next_broker_event(&mut self.broker), if listen.local_clients != LocalClients::Nothing && self.broker.is_some() => {
                match event {
                    Some(event) => Input::Broker(event),
                    None => Input::BrokerStopped,
                }
            }
            () = room_freed(&self.room_watch), if listen.room => Input::RoomFreed,
            () = sleep_until(timeout), if timeout.is_some() => Input::Timeout,
            () = tick(&mut listen.sys_tick), if listen.sys_tick.is_some() => Input::SysTick,
            () = tick(&mut listen.watchdog), if listen.watchdog.is_some() => Input::WatchdogTick,
            () = recheck(listen.recheck), if listen.recheck.is_some() => Input::Recheck,
        }
    }
}

async fn stopped(stop: &mut Option<oneshot::Receiver<Duration>>) -> Duration {
    match stop {
        Some(rx) => rx.await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}

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

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recheck(every: Option<Duration>) {
    match every {
        Some(every) => tokio::time::sleep(every).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
