//! Graceful shutdown, within a bound (`[gateway] shutdown_grace_secs`):
//!
//! 1. the engine starts draining: it takes only acknowledgements and
//!    refuses new work (`core/drain.rs`); of the embedded broker's events
//!    only local clients' acknowledgements are handed to it, the rest is
//!    left unanswered;
//! 2. the listeners keep reading only while a connected device still owes
//!    an acknowledgement; once none does, the UDP readers, serial ports and
//!    the embedded broker stop;
//! 3. the loop goes on (timers, retransmissions, bridge events, queries —
//!    `/healthz` now answers 503 — and, while the listeners read, devices'
//!    and local clients' acknowledgements) until deliveries to connected
//!    devices are acknowledged and the bridge's outbox is empty, or the
//!    bound passes. It is the run loop's `next_input` and `step` with
//!    another [`Listen`], so every input is fed to the engine as it is
//!    there;
//! 4. the bridge gets what is left of the bound to finish, then sends
//!    DISCONNECT;
//! 5. one log line says what was left undelivered, with counts.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::feed::Input;
use super::task::{Driver, Listen, LocalClients};
use crate::core::Undelivered;

/// How often the drain looks again at what is left, besides being woken by
/// the bridge (whose notifications are batched).
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// What a shutdown left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// How long the shutdown took.
    pub elapsed: Duration,
    /// What the engine still held for devices at the end.
    pub devices: Undelivered,
    /// Messages handed to the bridge that the broker had not acknowledged.
    pub upstream_unacknowledged: u64,
}

impl ShutdownReport {
    /// Everything that could be delivered was: nothing in flight or queued
    /// for a connected device, nothing unacknowledged upstream.
    pub fn is_complete(&self) -> bool {
        self.devices.deliverable() == 0 && self.upstream_unacknowledged == 0
    }
}

impl Driver {
    /// Drains within `grace`, stops every task, reports what was left.
    pub(super) async fn shut_down(&mut self, grace: Duration) -> ShutdownReport {
        let started = Instant::now();
        let deadline = started + grace;
        self.gateway.start_draining();
        // The loop of `task.rs` with other inputs: no reloads or ticks;
        // devices (the engine refuses their new work) and local clients'
        // acknowledgements heard only while input is read.
        let mut listen = Listen {
            deadline: Some(deadline),
            datagrams: true,
            local_clients: LocalClients::Acknowledgements,
            recheck: Some(DRAIN_POLL),
            ..Listen::quiet()
        };
        let mut reading = true;
        loop {
            let left = self.gateway.undelivered();
            if reading && left.deliverable() == 0 {
                self.stop_input();
                reading = false;
                listen.datagrams = false;
                listen.local_clients = LocalClients::Nothing;
            }
            let upstream = self.bridge.as_ref().map_or(0, |b| b.unsettled());
            if left.deliverable() == 0 && upstream == 0 {
                break;
            }
            listen.room = upstream > 0;
            match self.next_input(&mut listen).await {
                Input::GraceOver => break,
                Input::ReadersEnded => listen.datagrams = false,
                input => self.step(input, &listen).await,
            }
        }
        self.stop_input();
        if let Some(broker) = &mut self.broker {
            broker.closed().await;
        }
        // What still waits for the broker's acknowledgement is written now
        // (linger.rs), so the bridge's last attempt cannot lose it.
        self.gateway.write_all_lingering(Instant::now().into_std());
        // What the bridge settled during the drain is forgotten on disk too.
        self.settle_now = true;
        self.flush().await;
        let upstream_unacknowledged = match self.bridge.take() {
            Some(bridge) => {
                let rest = deadline.saturating_duration_since(Instant::now());
                bridge.shutdown(rest).await.pending_messages
            }
            None => 0,
        };
        let report = ShutdownReport {
            elapsed: started.elapsed(),
            devices: self.gateway.undelivered(),
            upstream_unacknowledged,
        };
        log(&report, grace);
        report
    }

    /// Stops reading from devices and local clients: UDP readers, serial
    /// ports and the embedded broker.
    fn stop_input(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
        for link in &self.serial_links {
            link.stop();
        }
        if let Some(broker) = &mut self.broker {
            broker.shutdown();
        }
    }
}

fn log(r: &ShutdownReport, grace: Duration) {
    let d = r.devices;
    let elapsed_ms = u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX);
    if r.is_complete() {
        info!(
            elapsed_ms,
            in_flight = d.in_flight,
            queued = d.queued,
            upstream_unacknowledged = r.upstream_unacknowledged,
            buffered_unreachable = d.buffered_unreachable,
            parked = d.parked,
            "shutdown complete: every delivery under way was acknowledged"
        );
    } else {
        warn!(
            elapsed_ms,
            grace_secs = grace.as_secs(),
            in_flight = d.in_flight,
            queued = d.queued,
            upstream_unacknowledged = r.upstream_unacknowledged,
            buffered_unreachable = d.buffered_unreachable,
            parked = d.parked,
            "shutdown grace period over: messages left undelivered"
        );
    }
}
