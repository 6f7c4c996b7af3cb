//! One upstream session as a tokio task — the shared session (every
//! device in aggregate mode; local clients and QoS −1 in per-device mode) or
//! one device's own session: the thin shell around its [`Machine`].
//!
//! The task owns rumqttc's two halves and the command channel, and reads
//! the clock; the machine decides everything else. The task always polls
//! the event loop (except while the machine waits out its backoff), never
//! lets a command wait behind it (see [`Session::wait`]: rumqttc's poll is
//! not cancel-safe, so it is never dropped for a command), turns what it
//! observes into the machine's inputs, carries out its outputs and
//! transitions, and sleeps until its timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::identities::DeviceIdentities;
use super::link::{self, Identity, LinkClient, LinkError, LinkEvent, LinkLoop};
use super::machine::{Failure, Machine, Output, Request, Transition};
use super::{Common, Control, DISCONNECT_WAIT, TaskEvent};
use crate::core::UpstreamCommand;

/// The task's state. See the module documentation.
pub(super) struct Session {
    common: Arc<Common>,
    machine: Machine,
    /// rumqttc's submitting half; `None` while a device session has no
    /// connection (refused, or closed and idle).
    client: Option<LinkClient>,
    /// Towards the driver (shared by every session).
    events: mpsc::Sender<TaskEvent>,
}

/// How a wait ended.
enum Woke<T> {
    Done(T),
    /// Shutdown: stop now.
    Deadline,
    /// A device session's connection must change (see the machine's
    /// `poll_transition`).
    Interrupted,
    /// The machine's timeout passed (the backoff is over).
    Timer,
}

/// The time, for the machine.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Session {
    /// The shared session and its event loop.
    pub(super) fn shared(
        common: Arc<Common>,
        events: mpsc::Sender<TaskEvent>,
        identity: &Identity,
    ) -> (Session, LinkLoop) {
        let (client, event_loop) = link::build(&common.cfg, identity);
        let machine = Machine::shared(
            now(),
            Arc::clone(&common),
            identity.window,
            Backoff::clock_seed(),
        );
        let s = Session {
            common,
            machine,
            client: Some(client),
            events,
        };
        (s, event_loop)
    }

    /// A device's session, not connected yet: its first command is the
    /// OpenSession that made the pool start it.
    pub(super) fn device(
        common: Arc<Common>,
        events: mpsc::Sender<TaskEvent>,
        identities: Arc<DeviceIdentities>,
        client_id: Arc<str>,
        task: u64,
    ) -> Session {
        let machine = Machine::device(
            now(),
            Arc::clone(&common),
            identities,
            client_id,
            task,
            Backoff::clock_seed(),
        );
        Session {
            common,
            machine,
            client: None,
            events,
        }
    }

    /// The task: poll the link (when there is one) while taking commands,
    /// until shutdown (or, for a device session, until the pool forgets it).
    pub(super) async fn run(
        mut self,
        mut link: Option<LinkLoop>,
        control: mpsc::UnboundedReceiver<Control>,
    ) {
        let mut commands = Commands {
            rx: control,
            common: Arc::clone(&self.common),
        };
        let control = &mut commands.rx;
        if self.machine.is_shared() {
            info!(broker = %self.common.endpoint, "upstream bridge started");
        }
        loop {
            self.transition(&mut link).await;
            self.drain().await;
            if self.machine.should_stop() {
                break;
            }
            let woke = match link.as_mut() {
                Some(l) if !self.machine.backing_off() => self.wait(l.poll(), control).await,
                // No connection, or waiting out the backoff: commands and
                // the timer only.
                _ => {
                    let idle = std::future::pending::<Result<LinkEvent, LinkError>>();
                    self.wait(idle, control).await
                }
            };
            match woke {
                Woke::Deadline => break,
                Woke::Interrupted | Woke::Timer => {}
                Woke::Done(Ok(ev)) => self.machine.handle_event(now(), ev),
                Woke::Done(Err(e)) => {
                    if let Some(l) = link.as_mut() {
                        self.take_buffered(l);
                    }
                    match self.machine.handle_connection_failed(now(), e) {
                        Failure::Drop => {
                            link = None;
                            self.client = None;
                        }
                        Failure::Retry(replays) => {
                            if let Some(l) = link.as_mut() {
                                l.replace_pending(&replays);
                            }
                        }
                    }
                }
            }
            self.drain().await;
            if self.machine.should_stop() {
                break;
            }
        }
        if let Some(l) = link.as_mut() {
            self.disconnect(l).await;
        }
        self.machine.handle_stopped(now());
        self.drain().await;
        let left = self.machine.pending();
        if left > 0 {
            warn!(
                session = %self.machine.name(),
                messages = left,
                "upstream session stopped with undelivered messages"
            );
        }
        if self.machine.is_shared() {
            info!("upstream bridge stopped");
        }
        // `Drop` gives back the session's share of the gauges.
    }

    /// Awaits `fut` while handling control messages and the machine's
    /// timer; never cancels `fut` (rumqttc's poll is not cancel-safe)
    /// except at the shutdown deadline, or when a device session's
    /// connection must be replaced or closed (it is dropped or
    /// disconnected next).
    async fn wait<F: Future>(
        &mut self,
        fut: F,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Woke<F::Output> {
        tokio::pin!(fut);
        loop {
            if self.machine.should_stop() {
                return Woke::Deadline;
            }
            if self.machine.needs_transition() {
                return Woke::Interrupted;
            }
            let takes = self.machine.takes_commands();
            let timeout = self.machine.poll_timeout().map(Instant::from_std);
            tokio::select! {
                out = &mut fut => return Woke::Done(out),
                msg = control.recv(), if takes => {
                    let now = now();
                    match msg {
                        Some(Control::Command(cmd)) => self.machine.handle_command(now, cmd),
                        Some(Control::Restore(cmds)) => self.machine.handle_restore(now, cmds),
                        Some(Control::Adopt(msgs)) => self.machine.handle_adopt(now, msgs),
                        Some(Control::Shutdown(grace)) => self.machine.handle_shutdown(now, grace),
                        // The handle was dropped, or the pool forgot this
                        // session: stop now.
                        None => self.machine.handle_closed(now),
                    }
                    self.drain().await;
                }
                () = sleep_until_opt(timeout) => {
                    self.machine.handle_timeout(now());
                    self.drain().await;
                    if !self.machine.should_stop() {
                        return Woke::Timer;
                    }
                }
            }
        }
    }

    /// Carries out the machine's outputs: requests into rumqttc's channel,
    /// a room wake-up, events to the driver (in order).
    async fn drain(&mut self) {
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Submit(req) => {
                    let Some(client) = &self.client else {
                        debug!("upstream: a request without a connection; left to the machine");
                        continue;
                    };
                    let taken = match &req {
                        Request::Publish(msg) => client.try_publish(msg),
                        Request::Ack(qos, pkid) => client.try_ack(*qos, *pkid),
                        Request::Subscribe(filter, qos, id) => {
                            client.try_subscribe(filter, *qos, *id)
                        }
                        Request::Unsubscribe(filter) => client.try_unsubscribe(filter),
                    };
                    self.machine.handle_submitted(taken);
                }
                Output::RoomFreed => self.common.counters.room.freed.notify_one(),
                Output::Event(ev) => {
                    // An error means the handle is gone; the task ends on its own.
                    let _ = self.events.send(ev).await;
                }
            }
        }
    }

    /// Ends, replaces or opens a device session's connection as its machine
    /// asks.
    async fn transition(&mut self, link: &mut Option<LinkLoop>) {
        // At most: end, open (or reconnect: end, open).
        for _ in 0..4 {
            match self.machine.poll_transition() {
                None => return,
                Some(Transition::End { publish_will }) => {
                    let mut ended = link.take();
                    if let Some(l) = ended.as_mut() {
                        if publish_will {
                            self.take_buffered(l);
                        } else {
                            self.disconnect(l).await;
                        }
                    }
                    self.machine.handle_link_ended(now());
                    // Closes the socket; without DISCONNECT the broker
                    // publishes the will.
                    drop(ended);
                    self.client = None;
                }
                Some(Transition::Open { identity, replays }) => {
                    let (client, mut event_loop) = link::build(&self.common.cfg, &identity);
                    event_loop.replace_pending(&replays);
                    self.client = Some(client);
                    *link = Some(event_loop);
                }
            }
        }
    }

    /// Hands the machine what rumqttc had buffered when the connection
    /// failed or is being dropped.
    fn take_buffered(&mut self, event_loop: &mut LinkLoop) {
        for ev in event_loop.take_buffered() {
            self.machine.handle_buffered(now(), ev);
        }
    }

    /// Sends DISCONNECT if connected, waiting briefly for it to be written
    /// (and handing the machine what arrives meanwhile).
    async fn disconnect(&mut self, event_loop: &mut LinkLoop) {
        let sent = self.client.as_ref().is_some_and(LinkClient::try_disconnect);
        if !self.machine.is_connected() || !sent {
            return;
        }
        let until = Instant::now() + DISCONNECT_WAIT;
        while let Ok(Ok(ev)) = tokio::time::timeout_at(until, event_loop.poll()).await {
            if matches!(ev, LinkEvent::SentDisconnect) {
                break;
            }
            self.machine.handle_buffered(now(), ev);
        }
    }
}

impl Drop for Session {
    /// A panicked session's share of the gauges is given back (see the
    /// machine's `give_back`) and the driver woken, so room recovers.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.machine.give_back();
            self.common.counters.room.freed.notify_one();
        }
    }
}

/// A session task's command channel. When the task panicked, the messages
/// still in it never reach an outbox: they count as taken, so the room
/// they held comes back.
struct Commands {
    rx: mpsc::UnboundedReceiver<Control>,
    common: Arc<Common>,
}

impl Drop for Commands {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.rx.close();
        let room = &self.common.counters.room;
        let cost = |topic: &str, payload: &[u8]| (topic.len() + payload.len()) as u64;
        while let Ok(msg) = self.rx.try_recv() {
            let (messages, bytes) = match msg {
                Control::Command(UpstreamCommand::Publish { topic, payload, .. }) => {
                    (1, cost(&topic, &payload))
                }
                Control::Restore(cmds) => cmds.iter().fold((0, 0), |(n, b), cmd| match cmd {
                    UpstreamCommand::Publish { topic, payload, .. } => {
                        (n + 1, b + cost(topic, payload))
                    }
                    _ => (n, b),
                }),
                Control::Adopt(msgs) => (
                    msgs.len() as u64,
                    msgs.iter().map(|m| cost(&m.topic, &m.payload)).sum(),
                ),
                Control::Command(_) | Control::Shutdown(_) => (0, 0),
            };
            room.taken_messages.fetch_add(messages, Ordering::Release);
            room.taken_bytes.fetch_add(bytes, Ordering::Release);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;
    use crate::bridge::rules::Rules;
    use crate::bridge::{Counters, Room};
    use crate::config::UpstreamConfig;
    use crate::core::{DeviceOrigin, SessionParams};

    fn common() -> (
        Arc<Common>,
        mpsc::Sender<TaskEvent>,
        mpsc::Receiver<TaskEvent>,
    ) {
        let cfg = UpstreamConfig {
            host: "127.0.0.1".into(),
            client_id: Some("gw".into()),
            ..UpstreamConfig::default()
        };
        let (events, rx) = mpsc::channel(16);
        let common = Common {
            endpoint: "127.0.0.1:1".into(),
            rules: Rules::new(&cfg.rules),
            counters: Arc::new(Counters {
                room: Room {
                    max_messages: 100,
                    max_bytes: 10_000,
                    ..Room::default()
                },
                ..Counters::default()
            }),
            echo: None,
            per_device: true,
            origin: None,
            cfg,
        };
        (Arc::new(common), events, rx)
    }

    fn publish(id: &str) -> UpstreamCommand {
        UpstreamCommand::Publish {
            topic: "t".into(),
            payload: bytes::Bytes::from_static(b"12345"),
            qos: 1,
            retain: false,
            store_id: None,
            from: Some(DeviceOrigin {
                client_id: Arc::from(id),
                ack: None,
            }),
        }
    }

    #[test]
    fn a_panicked_session_gives_back_its_share_of_the_gauges() {
        let (common, events, _rx) = common();
        let identities = DeviceIdentities::new(&common.cfg, None, None).expect("device identities");
        let c = Arc::clone(&common.counters);
        let mut s = Session::device(
            Arc::clone(&common),
            events,
            Arc::new(identities),
            Arc::from("d"),
            0,
        );
        s.machine.handle_command(
            now(),
            UpstreamCommand::OpenSession(SessionParams {
                client_id: Arc::from("d"),
                clean_session: false,
                keep_alive_secs: 30,
                will: None,
            }),
        );
        s.machine.handle_command(now(), publish("d"));
        while s.machine.poll_output().is_some() {}
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!((get(&c.pending_messages), get(&c.pending_bytes)), (1, 6));
        assert_eq!(get(&c.device_sessions_open), 1);
        // Its channel still holds one message when it panics.
        let (tx, rx) = mpsc::unbounded_channel();
        assert!(tx.send(Control::Command(publish("d"))).is_ok());
        let commands = Commands {
            rx,
            common: Arc::clone(&common),
        };
        let panicked = catch_unwind(AssertUnwindSafe(move || {
            let _s = s;
            let _commands = commands;
            panic!("a session task fails");
        }));
        assert!(panicked.is_err());
        assert_eq!((get(&c.pending_messages), get(&c.pending_bytes)), (0, 0));
        assert_eq!(get(&c.device_sessions_open), 0);
        assert_eq!(
            (get(&c.room.taken_messages), get(&c.room.taken_bytes)),
            (2, 12),
            "the published one and the one left in the channel"
        );
    }
}
