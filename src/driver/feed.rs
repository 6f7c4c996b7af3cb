//! Feeding the engine: every input the driver task gets ([`Input`]), the one
//! way it is handed to the engine ([`Driver::step`]), and what must happen
//! before the engine's outputs are carried out — the store's commit.
//!
//! The engine's call contract, kept here once for every loop: inputs, then
//! drain `poll_output` until `None`, then `poll_timeout` (read by the next
//! wait). With the store on, the inputs already waiting join the same
//! commit (group commit), and the records the engine asked to keep are
//! committed before any output of the batch goes out: an acknowledgement
//! never promises what is not on disk.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::task::{Driver, Listen, LocalClients};
use crate::bridge::{BridgeEvent, BridgeHandle};
use crate::broker::{Broker, BrokerEvent};
use crate::core::EngineConfig;
use crate::ops::Query;
use crate::store::StoreError;
use crate::transport::{Batch, PeerAuth};

/// Everything the driver task can wake up for. Most go to the engine; the
/// last three are the loops' own business ([`Driver::feed`] ignores them).
pub(super) enum Input {
    /// New engine settings from a reload (boxed: the largest input by far).
    Reconfigure(Box<EngineConfig>),
    /// An operations query (`/metrics`, `/status`, `/healthz`).
    Query(Query),
    /// Datagrams from the UDP listeners and serial links.
    Datagrams(Batch),
    /// An event from the upstream bridge.
    Bridge(BridgeEvent),
    /// The upstream bridge stopped.
    BridgeStopped,
    /// An event from an embedded-broker connection.
    Broker(BrokerEvent),
    /// The embedded broker stopped.
    BrokerStopped,
    /// The bridge freed room in its outbox (parked messages may go).
    RoomFreed,
    /// The engine's deadline passed.
    Timeout,
    /// Time to publish the `$SYS` topics.
    SysTick,
    /// Time to tell systemd's watchdog the loop is alive.
    WatchdogTick,
    /// Nothing came for a while; a loop looks again at what is left.
    Recheck,
    /// `RunningGateway` asked to stop, draining within this bound.
    Stop(Duration),
    /// The loop's deadline passed (the shutdown drain's bound).
    GraceOver,
    /// Every datagram reader stopped.
    ReadersEnded,
}

impl Driver {
    /// Hands `input` to the engine and carries out what the engine asks for:
    /// with a store, every input `listen` accepts that is already waiting
    /// joins the same commit (group commit); then the commit, then the
    /// outputs, in order, until the engine has nothing more to say.
    pub(super) async fn step(&mut self, input: Input, listen: &Listen) {
        self.feed(input, listen);
        if self.store.is_some() {
            self.take_ready_inputs(listen);
        }
        self.flush().await;
        let now = tokio::time::Instant::now().into_std();
        self.drop_log.log(now, self.gateway.stats());
        let (messages_in, messages_out) = super::ops::message_totals(self.gateway.stats());
        self.ops.rates.sample(now, messages_in, messages_out);
    }

    /// Hands one input to the engine (or answers it, for a query), without
    /// carrying out anything yet. A broker event the loop does not take
    /// (`listen`) is dropped here, after the broker has noted it.
    fn feed(&mut self, input: Input, listen: &Listen) {
        let now = tokio::time::Instant::now().into_std();
        match input {
            Input::Reconfigure(cfg) => self.gateway.reconfigure(*cfg),
            Input::Query(query) => self.answer(query),
            Input::Datagrams(batch) => {
                for datagram in batch {
                    match datagram.auth {
                        Some(PeerAuth::Authenticated(identity)) => {
                            self.gateway
                                .handle_peer_authenticated(datagram.peer.link, identity);
                            continue;
                        }
                        Some(PeerAuth::Closed) => {
                            self.gateway.handle_peer_closed(&datagram.peer.link);
                            continue;
                        }
                        None => {}
                    }
                    self.ops.received(&datagram.peer);
                    self.gateway
                        .handle_datagram(now, datagram.peer, &datagram.bytes);
                }
            }
            Input::Bridge(event) => self.on_bridge_event(now, event),
            Input::BridgeStopped => {
                // Nothing can go up any more: device QoS 1/2 messages bound
                // upstream are no longer acknowledged (they stay with the
                // devices) rather than acknowledged and dropped.
                warn!("the upstream bridge stopped; device messages bound upstream are held");
                self.bridge = None;
                self.room_watch = None;
                self.gateway.set_upstream_room(now, 0);
            }
            Input::Broker(event) if !listen.local_clients.takes(&event) => {
                // The drain: a local client's new work waits unanswered.
                if let BrokerEvent::Input { conn, .. } = event {
                    debug!(%conn, "shutting down: a local client's input left unanswered");
                }
            }
            Input::Broker(BrokerEvent::Input { conn, input }) => {
                self.gateway.handle_local(now, conn, input);
            }
            Input::Broker(BrokerEvent::Opened { .. }) => {}
            Input::BrokerStopped => {
                warn!("the embedded broker stopped");
                self.broker = None;
            }
            Input::Timeout => self.gateway.handle_timeout(now),
            Input::SysTick => {
                let connections = self.broker.as_ref().map_or(0, Broker::connections);
                self.sys.publish(&mut self.gateway, now, connections);
            }
            Input::WatchdogTick => {
                if let Err(e) = crate::systemd::notify("WATCHDOG=1") {
                    debug!(error = %e, "cannot ping the systemd watchdog");
                }
            }
            // Only what `flush` does next: tell the engine the bridge's room.
            Input::RoomFreed | Input::Recheck => {}
            Input::Stop(_) | Input::GraceOver | Input::ReadersEnded => {}
        }
    }

    fn on_bridge_event(&mut self, now: std::time::Instant, event: BridgeEvent) {
        match event {
            BridgeEvent::Message(msg) => self.gateway.handle_upstream(now, msg),
            BridgeEvent::SessionStatus { client_id, status } => {
                self.gateway.handle_session_status(now, &client_id, status);
            }
            BridgeEvent::SessionAck {
                client_id,
                ack,
                accepted,
            } => {
                self.gateway
                    .handle_session_ack(now, &client_id, ack, accepted);
            }
            BridgeEvent::SessionMessage {
                client_id,
                message,
                token,
            } => match token {
                Some(token) => self
                    .gateway
                    .handle_session_message_with_token(now, &client_id, message, token),
                None => self
                    .gateway
                    .handle_session_message(now, &client_id, message),
            },
            BridgeEvent::Connected => {
                info!("upstream broker connected");
                self.gateway.handle_upstream_connected(now, true);
            }
            BridgeEvent::Quarantined(mut letter) => {
                if self.store.is_some() && self.dead_letters.len() < DEAD_LETTERS_PENDING {
                    letter.at_unix_secs = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    self.dead_letters.push(letter);
                }
            }
            BridgeEvent::Limits(limits) => self.gateway.handle_upstream_limits(now, limits),
            BridgeEvent::Subscribed {
                client_id,
                filter,
                accepted,
            } => self.gateway.handle_upstream_subscribed(
                now,
                client_id.as_deref(),
                &filter,
                accepted,
            ),
            // Records still lingering were never written: only the rest
            // are deleted from the store.
            BridgeEvent::Settled(ids) => {
                let written = self.gateway.handle_settled(now, ids);
                self.settled.extend(written);
            }
            BridgeEvent::Disconnected { reason } => {
                self.gateway.handle_upstream_connected(now, false);
                warn!(%reason, "upstream broker disconnected; reconnecting");
            }
        }
    }

    /// Group commit: before a commit (an fdatasync), takes every input that
    /// is already waiting — datagram batches, bridge and broker events, as
    /// far as `listen` accepts them — so one commit covers them all instead
    /// of one commit each. Bounded, so stop, queries and timers are never
    /// held up for long.
    fn take_ready_inputs(&mut self, listen: &Listen) {
        for _ in 0..READY_ROUNDS {
            // As in the loop: a reload sent before these inputs arrived
            // applies to them.
            while listen.reloads
                && let Ok(cfg) = self.reconfigured.try_recv()
            {
                self.feed(Input::Reconfigure(Box::new(cfg)), listen);
            }
            let mut took = false;
            if listen.datagrams
                && let Ok(batch) = self.inbound.try_recv()
            {
                self.feed(Input::Datagrams(batch), listen);
                took = true;
            }
            if let Some(event) = self.bridge.as_mut().and_then(BridgeHandle::try_recv) {
                self.feed(Input::Bridge(event), listen);
                took = true;
            }
            if listen.local_clients != LocalClients::Nothing
                && let Some(event) = self.broker.as_mut().and_then(Broker::try_recv)
            {
                self.feed(Input::Broker(event), listen);
                took = true;
            }
            if !took {
                break;
            }
        }
    }

    /// Carries out everything the engine asked for, in order, then tells the
    /// engine how much the bridge can take now (which may release parked
    /// device messages, so it loops until nothing more comes out).
    pub(super) async fn flush(&mut self) {
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

    /// Commits the batch, then drains the engine's outputs until `None`,
    /// carrying each out (`egress.rs`).
    async fn flush_outputs(&mut self) {
        if self.stopping || !self.commit().await {
            // Nothing of this batch goes out: acknowledgements would promise
            // what is not on disk. The gateway stops (see `run_until`).
            while self.gateway.poll_output().is_some() {}
            self.stopping = true;
            return;
        }
        while let Some(output) = self.gateway.poll_output() {
            self.carry_out(output).await;
        }
    }

    /// Commits what the engine asked to make durable (and the outbox ids the
    /// bridge settled) in one synced batch. Returns false if the store
    /// failed: then nothing of this batch may be carried out.
    async fn commit(&mut self) -> bool {
        self.commit_dead_letters().await;
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
}

impl Driver {
    /// Writes the dead letters the bridge recorded. A failure is logged,
    /// not fatal: the record is a trace (the counter and the log have it
    /// too), and no device was promised anything by it.
    async fn commit_dead_letters(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let letters = std::mem::take(&mut self.dead_letters);
        if letters.is_empty() {
            return;
        }
        let store = Arc::clone(store);
        match tokio::task::spawn_blocking(move || store.put_dead_letters(&letters)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "the dead-letter record was not written"),
            Err(e) => warn!(error = %e, "the dead-letter record was not written"),
        }
    }
}

/// Most dead letters waiting for a commit (the record keeps 32 anyway).
const DEAD_LETTERS_PENDING: usize = 32;

/// Rounds of already-waiting inputs taken before one group commit.
const READY_ROUNDS: usize = 256;

/// Settled outbox ids committed on their own once this many wait.
const SETTLED_ALONE: usize = 1024;
