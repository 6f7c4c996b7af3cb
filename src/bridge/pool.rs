//! The per-device sessions behind [`BridgeHandle`](super::BridgeHandle)
//! (`bridge_mode = "per-device"`): which device has a session task, routing
//! each command that names a device to it, starting one on
//! [`UpstreamCommand::OpenSession`], and forgetting one that has ended.
//!
//! Lives on the driver's side of the channels (inside the handle), so
//! routing costs no extra task or hop. A session task that has no
//! connection and nothing to do reports `Finished` with how many commands it
//! has received; the pool forgets it only if that is every command it sent
//! (otherwise a command is on its way and the task carries on with it), so
//! no command is ever lost to a task that just ended. A later OpenSession
//! then starts a new task.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::identities::DeviceIdentities;
use super::session::Session;
use super::{BridgeEvent, Common, Control, TaskEvent, bump};
use crate::core::{DeviceOrigin, SessionStatus, UpstreamCommand};

/// One device's session task.
struct Slot {
    /// Unique per task (a device's later session is another task).
    task: u64,
    control: mpsc::UnboundedSender<Control>,
    /// Commands sent to it.
    sent: u64,
    handle: JoinHandle<()>,
}

/// The device sessions. See the module documentation.
pub(super) struct Pool {
    rt: tokio::runtime::Handle,
    common: Arc<Common>,
    /// Towards the driver, for the sessions.
    events: mpsc::Sender<TaskEvent>,
    identities: Arc<DeviceIdentities>,
    slots: HashMap<Arc<str>, Slot>,
    next_task: u64,
}

impl Pool {
    pub(super) fn new(
        rt: tokio::runtime::Handle,
        common: Arc<Common>,
        events: mpsc::Sender<TaskEvent>,
        identities: DeviceIdentities,
    ) -> Self {
        Self {
            rt,
            common,
            events,
            identities: Arc::new(identities),
            slots: HashMap::new(),
            next_task: 0,
        }
    }

    /// Routes `cmd`: to a device's session (`None` returned), or back to the
    /// caller for the shared session. Answers the engine itself (into
    /// `local`) when no session can: a device whose upstream id would be the
    /// shared session's is refused, and a device's message without a
    /// session is refused (`accepted = false`) and dropped.
    pub(super) fn dispatch(
        &mut self,
        cmd: UpstreamCommand,
        local: &mut VecDeque<BridgeEvent>,
    ) -> Option<UpstreamCommand> {
        let device = match &cmd {
            UpstreamCommand::Publish {
                from: Some(DeviceOrigin { client_id, .. }),
                ..
            } => Arc::clone(client_id),
            UpstreamCommand::OpenSession(p) => Arc::clone(&p.client_id),
            UpstreamCommand::CloseSession { client_id, .. }
            | UpstreamCommand::SessionSubscribe { client_id, .. }
            | UpstreamCommand::SessionUnsubscribe { client_id, .. }
            | UpstreamCommand::AckDownlink { client_id, .. } => Arc::clone(client_id),
            UpstreamCommand::Publish { from: None, .. }
            | UpstreamCommand::Subscribe { .. }
            | UpstreamCommand::Unsubscribe { .. } => return Some(cmd),
        };
        if let UpstreamCommand::OpenSession(_) = &cmd
            && self.identities.upstream_id(&device) == self.common.cfg.effective_client_id()
        {
            warn!(client_id = %device, "a device's upstream client id would be the gateway's own; refused");
            bump(&self.common.counters.device_session_refusals, 1);
            local.push_back(BridgeEvent::SessionStatus {
                client_id: device,
                status: SessionStatus::Refused {
                    reason: "the upstream client id is the gateway's own".to_owned(),
                },
            });
            return None;
        }
        let cmd = match self.slots.get_mut(&device) {
            Some(slot) => match Self::deliver(slot, cmd, &self.common) {
                Ok(()) => return None,
                // The task is gone (it cannot end before we forget it, so
                // it failed): start again if this command can.
                Err(cmd) => {
                    self.slots.remove(&device);
                    *cmd
                }
            },
            None => cmd,
        };
        match cmd {
            UpstreamCommand::OpenSession(_) => {
                let mut slot = self.start(Arc::clone(&device));
                if let Err(cmd) = Self::deliver(&mut slot, cmd, &self.common) {
                    debug!(?cmd, "a new device session task is gone already");
                }
                self.slots.insert(device, slot);
            }
            UpstreamCommand::Publish {
                from: Some(origin),
                store_id,
                ..
            } => {
                // The engine publishes only for devices with a session; this
                // one's was refused or has ended.
                debug!(client_id = %origin.client_id, "a device message without an upstream session; refused");
                bump(&self.common.counters.rejected, 1);
                if let Some(id) = store_id {
                    local.push_back(BridgeEvent::Settled(vec![id]));
                }
                if let Some(ack) = origin.ack {
                    local.push_back(BridgeEvent::SessionAck {
                        client_id: origin.client_id,
                        ack,
                        accepted: false,
                    });
                }
            }
            other => debug!(?other, "no upstream session for this device; ignored"),
        }
        None
    }

    /// Hands `cmd` to the slot's task, counting it (and, for a publish, its
    /// room); gives it back (boxed: the rare path) when the task has ended.
    fn deliver(
        slot: &mut Slot,
        cmd: UpstreamCommand,
        common: &Common,
    ) -> Result<(), Box<UpstreamCommand>> {
        let cost = match &cmd {
            UpstreamCommand::Publish { topic, payload, .. } => {
                Some((topic.len() + payload.len()) as u64)
            }
            _ => None,
        };
        if let Some(bytes) = cost {
            common.counters.handed_over(1, bytes);
        }
        match slot.control.send(Control::Command(cmd)) {
            Ok(()) => {
                slot.sent += 1;
                Ok(())
            }
            Err(mpsc::error::SendError(Control::Command(cmd))) => {
                if let Some(bytes) = cost {
                    // Never reached a task: not unsettled after all.
                    common
                        .counters
                        .room
                        .taken_messages
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                    common
                        .counters
                        .room
                        .taken_bytes
                        .fetch_add(bytes, std::sync::atomic::Ordering::Release);
                }
                Err(Box::new(cmd))
            }
            Err(_) => Ok(()),
        }
    }

    fn start(&mut self, device: Arc<str>) -> Slot {
        let task = self.next_task;
        self.next_task += 1;
        let (control, rx) = mpsc::unbounded_channel();
        let session = Session::device(
            Arc::clone(&self.common),
            self.events.clone(),
            Arc::clone(&self.identities),
            device,
            task,
        );
        let handle = self.rt.spawn(session.run(None, rx));
        Slot {
            task,
            control,
            sent: 0,
            handle,
        }
    }

    /// Routes the restored outbox: each device's messages (in order) to its
    /// session, started for them if needed; the rest is returned for the
    /// shared session.
    pub(super) fn restore(&mut self, cmds: Vec<UpstreamCommand>) -> Vec<UpstreamCommand> {
        let mut shared = Vec::new();
        let mut by_device: Vec<(Arc<str>, Vec<UpstreamCommand>)> = Vec::new();
        for cmd in cmds {
            match &cmd {
                UpstreamCommand::Publish {
                    from: Some(origin), ..
                } => {
                    let id = Arc::clone(&origin.client_id);
                    match by_device.iter_mut().find(|(d, _)| *d == id) {
                        Some((_, list)) => list.push(cmd),
                        None => by_device.push((id, vec![cmd])),
                    }
                }
                _ => shared.push(cmd),
            }
        }
        for (device, list) in by_device {
            if !self.slots.contains_key(&device) {
                let slot = self.start(Arc::clone(&device));
                self.slots.insert(Arc::clone(&device), slot);
            }
            let n = list.len() as u64;
            let sent = self
                .slots
                .get_mut(&device)
                .map(|slot| (slot.control.send(Control::Restore(list)), slot));
            match sent {
                Some((Ok(()), slot)) => slot.sent += n,
                Some((Err(mpsc::error::SendError(Control::Restore(list))), _)) => {
                    self.slots.remove(&device);
                    shared.extend(list);
                }
                _ => {}
            }
        }
        shared
    }

    /// A device session reported it has nothing to do after `received`
    /// commands: forget it if it has had every command sent to it (dropping
    /// its channel ends the task).
    pub(super) fn finished(&mut self, device: &str, task: u64, received: u64) {
        if self
            .slots
            .get(device)
            .is_some_and(|s| s.task == task && s.sent == received)
        {
            self.slots.remove(device);
        }
    }

    /// Asks every device session to stop within `grace`; their tasks, to
    /// wait for.
    pub(super) fn shutdown(self, grace: Duration) -> Vec<JoinHandle<()>> {
        self.slots
            .into_values()
            .map(|slot| {
                let _ = slot.control.send(Control::Shutdown(grace));
                slot.handle
            })
            .collect()
    }
}
