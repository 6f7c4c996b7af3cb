//! Per-device upstream sessions, the engine's side
//! (`upstream.bridge_mode = "per-device"`).
//!
//! In this mode every MQTT-SN device gets its own upstream MQTT session,
//! opened by the shell when the engine asks ([`UpstreamCommand::OpenSession`]).
//! This module owns what the engine does about it: the device's CONNACK
//! waits for the session's first answer ([`Gateway::handle_session_status`]);
//! a device's QoS 1/2 PUBLISH is acknowledged when the broker acknowledged it
//! (or it was queued while the session is down, [`Gateway::handle_session_ack`]);
//! the device's subscriptions are made on its own session and what comes back
//! on it goes to that device only ([`Gateway::handle_session_message`]); the
//! session is closed with or without its will as the device leaves.
//!
//! Local routing is unchanged: devices and local clients still reach each
//! other through the engine's own subscription trie, online or not. The shell
//! tags what the gateway publishes upstream so that the broker's copies of it
//! are not delivered a second time (see `docs/bridge.md`).

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::gateway::{Gateway, Subscriber, UpstreamMessage};
use crate::output::{DeviceOrigin, SessionParams, SessionStatus, UpstreamAck, UpstreamCommand};
use crate::policy::is_sys;
use crate::session::{ClientState, Delivery, Handshake, SessionId};
use crate::stats::DropReason;
use sngate_wire::v1::{Packet, ReturnCode};

impl Gateway {
    /// True in per-device mode (with an upstream bridge).
    pub(crate) fn per_device(&self) -> bool {
        self.cfg.upstream && self.cfg.per_device_sessions
    }

    /// What the device's upstream session is made of right now.
    fn session_params(&self, sid: SessionId) -> Option<SessionParams> {
        let s = self.sessions.get(&sid)?;
        Some(SessionParams {
            client_id: s.client_id.clone(),
            clean_session: s.clean_session,
            keep_alive_secs: u32::try_from(s.keep_alive.as_secs()).unwrap_or(u32::MAX),
            will: s.will.clone(),
        })
    }

    /// Per-device mode: the device's upstream session (with `ack` owed for a
    /// QoS 1/2 message); `None` otherwise.
    pub(crate) fn device_origin(
        &self,
        sid: SessionId,
        ack: Option<UpstreamAck>,
    ) -> Option<DeviceOrigin> {
        if !self.per_device() {
            return None;
        }
        let s = self.sessions.get(&sid)?;
        Some(DeviceOrigin {
            client_id: s.client_id.clone(),
            ack,
        })
    }

    /// Asks for the device's upstream session and holds its CONNACK until
    /// the session answers or `upstream_session_wait` passes.
    pub(crate) fn await_upstream_session(&mut self, now: Instant, sid: SessionId) {
        let deadline = now + self.cfg.upstream_session_wait;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.state = ClientState::Connecting(Handshake::AwaitUpstream);
            s.handshake_deadline = Some(deadline);
        }
        self.open_upstream_session(sid);
        self.arm(sid);
    }

    /// Asks the shell for the device's upstream session with its current
    /// identity and will, and (again) for every subscription it holds: a
    /// session kept by the broker already has them, a new one needs them.
    fn open_upstream_session(&mut self, sid: SessionId) {
        let Some(params) = self.session_params(sid) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.upstream_open = true;
        let subscriptions = s.sorted_subscriptions();
        let client_id = params.client_id.clone();
        self.upstream(UpstreamCommand::OpenSession(params));
        // `$SYS` is the gateway's own broker's, never the upstream one's.
        for (filter, qos) in subscriptions.into_iter().filter(|(f, _)| !is_sys(f)) {
            self.upstream(UpstreamCommand::SessionSubscribe {
                client_id: client_id.clone(),
                filter,
                qos,
            });
        }
    }

    /// A will changed while connected: the session is opened again with it
    /// (MQTT cannot change a will otherwise).
    pub(crate) fn reopen_upstream_session(&mut self, sid: SessionId) {
        if !self.per_device() || !self.sessions.get(&sid).is_some_and(|s| s.upstream_open) {
            return;
        }
        self.open_upstream_session(sid);
    }

    /// Ends the device's upstream session if it is open; true if it was (and
    /// so, with `publish_will`, the broker publishes the will).
    pub(crate) fn close_upstream_session(&mut self, sid: SessionId, publish_will: bool) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        if !std::mem::take(&mut s.upstream_open) {
            return false;
        }
        s.awaiting_upstream_ack = None;
        let client_id = s.client_id.clone();
        self.upstream(UpstreamCommand::CloseSession {
            client_id,
            publish_will,
        });
        true
    }

    /// A device subscription in per-device mode: in the trie for local
    /// routing, and on the device's own upstream session.
    pub(crate) fn subscribe_on_device_session(&mut self, sid: SessionId, filter: &str, qos: u8) {
        self.subscriptions
            .subscribe(filter, Subscriber::Device(sid), qos);
        if is_sys(filter) {
            return;
        }
        if let Some(client_id) = self.sessions.get(&sid).map(|s| s.client_id.clone()) {
            self.upstream(UpstreamCommand::SessionSubscribe {
                client_id,
                filter: filter.to_owned(),
                qos,
            });
            self.suback_wait.asked = self.sessions.get(&sid).is_some_and(|s| s.upstream_open);
        }
    }

    /// The reverse of [`subscribe_on_device_session`](Self::subscribe_on_device_session);
    /// nothing goes upstream once the session is closed.
    pub(crate) fn unsubscribe_on_device_session(&mut self, sid: SessionId, filter: &str) {
        if !self
            .subscriptions
            .unsubscribe(filter, Subscriber::Device(sid))
        {
            return;
        }
        if let Some(s) = self.sessions.get(&sid)
            && s.upstream_open
            && !is_sys(filter)
        {
            let client_id = s.client_id.clone();
            self.upstream(UpstreamCommand::SessionUnsubscribe {
                client_id,
                filter: filter.to_owned(),
            });
        }
    }

    /// A device session restored from the store: its subscriptions go back
    /// in the trie; a sleeping device (which wakes with a PINGREQ, not a
    /// CONNECT) gets its upstream session back at once.
    pub(crate) fn restore_device_session(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let subscriptions = s.sorted_subscriptions();
        let asleep = s.state == ClientState::Asleep;
        for (filter, qos) in subscriptions {
            self.subscriptions
                .subscribe(&filter, Subscriber::Device(sid), qos);
        }
        if asleep {
            self.open_upstream_session(sid);
        }
    }

    /// The session of `client_id` if its upstream session is open.
    fn open_session(&self, client_id: &str) -> Option<SessionId> {
        let sid = *self.by_client.get(client_id)?;
        self.sessions
            .get(&sid)
            .is_some_and(|s| s.upstream_open)
            .then_some(sid)
    }

    /// The answer of a device's upstream session to
    /// [`UpstreamCommand::OpenSession`], or a later refusal. Unknown client
    /// ids (and sessions closed meanwhile) are ignored.
    pub fn handle_session_status(&mut self, now: Instant, client_id: &str, status: SessionStatus) {
        let Some(sid) = self.open_session(client_id) else {
            debug!(
                client = client_id,
                ?status,
                "status of an upstream session no longer wanted"
            );
            return;
        };
        self.touch(sid);
        let awaiting = self
            .sessions
            .get(&sid)
            .is_some_and(|s| s.state == ClientState::Connecting(Handshake::AwaitUpstream));
        match status {
            SessionStatus::Up | SessionStatus::Unreachable => {
                if awaiting {
                    if status == SessionStatus::Unreachable {
                        info!(
                            client = client_id,
                            "upstream unreachable: device accepted, working offline"
                        );
                    }
                    self.accept_connect(now, sid);
                }
            }
            SessionStatus::Refused { reason } => {
                warn!(client = client_id, %reason, "upstream broker refused the device's session");
                // The shell has ended that session already.
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.upstream_open = false;
                    s.awaiting_upstream_ack = None;
                }
                if awaiting {
                    self.send_to(
                        sid,
                        Packet::ConnAck {
                            return_code: ReturnCode::NotSupported,
                        },
                    );
                    self.abort_handshake(sid, "upstream session refused");
                } else {
                    self.refuse_connected_device(sid);
                }
            }
            SessionStatus::TakenOver => self.device_went_elsewhere(sid, awaiting),
        }
    }

    /// The broker gave the device's session to another client (the device
    /// roamed to another gateway): the device is let go without its will
    /// (it is alive, elsewhere), told DISCONNECT at its old address in
    /// case it is still there, its state kept or dropped as its
    /// clean-session flag says. A later CONNECT here works as ever.
    fn device_went_elsewhere(&mut self, sid: SessionId, awaiting: bool) {
        info!(
            client = %self.client_label(sid),
            "the broker handed the device's session to another client (roamed elsewhere): let go without its will"
        );
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.upstream_open = false;
            s.awaiting_upstream_ack = None;
            s.will = None;
        }
        if awaiting {
            self.send_to(
                sid,
                Packet::ConnAck {
                    return_code: ReturnCode::Congestion,
                },
            );
            self.abort_handshake(sid, "upstream session taken over");
        } else {
            self.refuse_connected_device(sid);
        }
    }

    /// A device whose upstream session the broker refused later on: it is
    /// told DISCONNECT and its connection ends (no will: the broker did
    /// not lose it, it refused it).
    fn refuse_connected_device(&mut self, sid: SessionId) {
        let connected = self.sessions.get(&sid).is_some_and(|s| {
            matches!(
                s.state,
                ClientState::Active | ClientState::Asleep | ClientState::Awake
            )
        });
        if !connected {
            return;
        }
        self.send_to(sid, Packet::Disconnect { duration: None });
        self.end_connection(sid);
    }

    /// The broker acknowledged (`accepted`) or refused a device's QoS 1/2
    /// message, or the session queued it while down (`accepted`): the device
    /// gets its PUBACK/PUBREC, or a PUBACK "rejected: not supported".
    pub fn handle_session_ack(
        &mut self,
        now: Instant,
        client_id: &str,
        ack: UpstreamAck,
        accepted: bool,
    ) {
        let _ = now;
        // Acknowledged already, on the store's word, when the linger ran
        // out (linger.rs).
        if self.linger.take_acked_early(ack.store_id) {
            return;
        }
        let Some(&sid) = self.by_client.get(client_id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.connection != ack.connection {
            // Owed to an earlier connection: this one never sent it (and
            // may be using the same MsgId for something else).
            debug!(
                client = client_id,
                msg_id = ack.msg_id,
                "acknowledgement for an earlier connection; dropped"
            );
            return;
        }
        if s.awaiting_upstream_ack == Some(ack.msg_id) {
            s.awaiting_upstream_ack = None;
        }
        let packet = if !accepted {
            s.inbound_qos2.retain(|&m| m != ack.msg_id);
            self.persist.mark(sid);
            self.stats.drop(DropReason::UpstreamRefused);
            Packet::PubAck {
                topic_id: ack.topic_field,
                msg_id: ack.msg_id,
                return_code: ReturnCode::NotSupported,
            }
        } else {
            ack.packet()
        };
        self.send_to(sid, packet);
        // Not (or not only) the broker's acknowledgement — the session
        // queued the message while down: the store keeps it before the
        // device hears it is safe (linger.rs). A record the broker settled
        // is no longer held.
        if accepted && ack.store_id != 0 {
            self.write_held(ack.store_id);
        }
    }

    /// A message that came down a device's own upstream session: delivered
    /// to that device only, at the QoS of its best matching subscription
    /// (or of exactly `msg.filter` for a retained answer to a new
    /// subscription).
    pub fn handle_session_message(&mut self, now: Instant, client_id: &str, msg: UpstreamMessage) {
        self.session_message(now, client_id, msg, None);
    }

    /// [`handle_session_message`](Self::handle_session_message) for a QoS
    /// 1/2 message the session has not acknowledged to the broker yet
    /// (manual acknowledgements): the engine answers
    /// [`UpstreamCommand::AckDownlink`] with `token` once the device
    /// acknowledged it (PUBACK at QoS 1, PUBREC at QoS 2), or at once when
    /// it can never be for this device (no matching subscription, not
    /// allowed, a retained copy it has, or a QoS 0 delivery). A message the
    /// engine cannot deliver nor keep (no such session, queue full, dropped
    /// after all retries) is never acknowledged: the broker redelivers it to
    /// the session's next holder — this gateway's session after a
    /// reconnect, or another gateway's when the device roamed (issue 23).
    pub fn handle_session_message_with_token(
        &mut self,
        now: Instant,
        client_id: &str,
        msg: UpstreamMessage,
        token: u64,
    ) {
        let token = (msg.qos > 0).then_some(token);
        self.session_message(now, client_id, msg, token);
    }

    /// The broker may forget a downlink: see
    /// [`handle_session_message_with_token`](Self::handle_session_message_with_token).
    pub(crate) fn ack_downlink(&mut self, client_id: &Arc<str>, token: Option<u64>) {
        if let Some(token) = token {
            self.upstream(UpstreamCommand::AckDownlink {
                client_id: Arc::clone(client_id),
                token,
            });
        }
    }

    fn session_message(
        &mut self,
        now: Instant,
        client_id: &str,
        msg: UpstreamMessage,
        token: Option<u64>,
    ) {
        let Some(&sid) = self.by_client.get(client_id) else {
            self.stats.drop(DropReason::SessionGone);
            return;
        };
        let Some(s) = self.sessions.get(&sid) else {
            self.stats.drop(DropReason::SessionGone);
            return;
        };
        let granted = match &msg.filter {
            Some(filter) => s.subscriptions.get(filter).copied(),
            None => s
                .subscriptions
                .iter()
                .filter(|(f, _)| crate::topic::matches(f, &msg.topic))
                .map(|(_, q)| *q)
                .max(),
        };
        let granted = match granted {
            Some(q) => q,
            // CleanSession off: the broker's session for the device holds
            // subscriptions made through another gateway (the device roamed
            // here, issue 23), and it sent this on the device's own session.
            None if !s.clean_session => msg.qos,
            None => {
                debug!(client = client_id, topic = %msg.topic, "message on a device session matches none of its subscriptions");
                self.stats.drop(DropReason::NoSubscription);
                let client = Arc::clone(&s.client_id);
                self.ack_downlink(&client, token);
                return;
            }
        };
        let client = Arc::clone(&s.client_id);
        // The broker's retained copy of what the local store holds (and
        // so gave the device when it subscribed): not a second time.
        if msg.retain
            && self
                .retained
                .get(&msg.topic)
                .is_some_and(|m| m.payload == msg.payload)
        {
            self.ack_downlink(&client, token);
            return;
        }
        if !self.acl_may_read(Subscriber::Device(sid), &msg.topic) {
            self.ack_downlink(&client, token);
            return;
        }
        self.stats.session_messages_in += 1;
        let qos = msg.qos.min(granted);
        // At QoS 0 the device never acknowledges: its subscription asked
        // for at most once.
        let downlink = if qos == 0 {
            self.ack_downlink(&client, token);
            None
        } else {
            token
        };
        let delivery = Delivery {
            topic: Arc::from(msg.topic.as_str()),
            payload: msg.payload,
            qos,
            retain: msg.retain,
            reregistered: false,
            sent_as: None,
            store_id: None,
            downlink,
        };
        self.enqueue(now, sid, delivery);
    }
}
