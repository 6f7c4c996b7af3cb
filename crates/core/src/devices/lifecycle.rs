//! A client's life: CONNECT (with CleanSession and the will handshake, trap
//! T-13), keep-alive PINGs, will updates, DISCONNECT, sleep and wake (fact sheet
//! §7.9, traps T-10/T-11/T-12), loss with the will published, and session
//! takeover by client id (trap T-19). Also the dispatch of every packet that
//! arrives from a peer with a session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info};

use crate::acl::Access;
use crate::gateway::{Gateway, Origin, Subscriber, UNPROVEN_GRACE};
use crate::session::{ClientState, Handshake, Session, SessionId, Will};
use crate::stats::DropReason;
use sngate_wire::v1::{PROTOCOL_ID_V1_2, Packet, ReturnCode, WillTopic};

impl Gateway {
    /// Every packet from a peer that has a session.
    pub(crate) fn handle_session_packet(&mut self, now: Instant, sid: SessionId, packet: Packet) {
        self.touch(sid);
        self.prove(sid);
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        // Only the sleep timer decides for a sleeping client: a stray packet
        // does not extend it (DISCONNECT with Duration restarts it itself).
        if session.state != ClientState::Asleep {
            session.last_seen = now;
        }
        let state = session.state.clone();
        match (state, packet) {
            (ClientState::Connecting(Handshake::AwaitWillTopic), Packet::WillTopic(topic)) => {
                self.on_will_topic(now, sid, topic)
            }
            (
                ClientState::Connecting(Handshake::AwaitWillMsg { topic, qos, retain }),
                Packet::WillMsg { payload },
            ) => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.will = Some(Will {
                        topic,
                        payload,
                        qos,
                        retain,
                    });
                }
                self.complete_connect(now, sid);
            }
            (ClientState::Connecting(Handshake::AwaitUpstream), other) => {
                // The device has no CONNACK yet; it will retry what it sent.
                debug!(msg = %other.msg_type(), "message while the upstream session opens; dropped");
                self.stats.drop(DropReason::OutOfState);
            }
            (ClientState::Connecting(_), other) => {
                debug!(msg = %other.msg_type(), "unexpected message during the will handshake");
                self.stats.drop(DropReason::OutOfState);
                self.send_to(sid, Packet::Disconnect { duration: None });
                self.abort_handshake(sid, "unexpected message during the will handshake");
            }
            (ClientState::Active, Packet::PingReq { client_id: None }) => {
                self.send_to(sid, Packet::PingResp)
            }
            (ClientState::Active | ClientState::Awake, Packet::Disconnect { duration }) => {
                self.on_disconnect(now, sid, duration)
            }
            (ClientState::Asleep, Packet::Disconnect { duration }) => {
                self.on_disconnect(now, sid, duration)
            }
            (ClientState::Active, Packet::WillTopicUpd(topic)) => {
                self.on_will_topic_update(sid, topic)
            }
            (ClientState::Active, Packet::WillMsgUpd { payload }) => {
                self.on_will_msg_update(sid, payload)
            }
            (
                ClientState::Active,
                Packet::Register {
                    msg_id, topic_name, ..
                },
            ) => self.on_register(sid, msg_id, topic_name),
            (
                ClientState::Active,
                Packet::Publish {
                    qos,
                    dup,
                    retain,
                    topic,
                    msg_id,
                    payload,
                },
            ) => self.on_publish(now, sid, qos, dup, retain, topic, msg_id, payload),
            (ClientState::Active, Packet::PubRel { msg_id }) => self.on_pubrel(sid, msg_id),
            (
                ClientState::Active,
                Packet::Subscribe {
                    qos, msg_id, topic, ..
                },
            ) => self.on_subscribe(now, sid, qos, msg_id, topic),
            (ClientState::Active, Packet::Unsubscribe { msg_id, topic }) => {
                self.on_unsubscribe(sid, msg_id, topic)
            }
            // Acknowledgements of what the gateway sent: valid while the client
            // can receive (Active, or Awake during a hand-over), and while
            // asleep for what was in flight when it fell asleep.
            (
                ClientState::Active | ClientState::Awake | ClientState::Asleep,
                Packet::RegAck {
                    topic_id,
                    msg_id,
                    return_code,
                },
            ) => self.on_regack(now, sid, topic_id, msg_id, return_code),
            (
                ClientState::Active | ClientState::Awake | ClientState::Asleep,
                Packet::PubAck {
                    topic_id,
                    msg_id,
                    return_code,
                },
            ) => self.on_puback(now, sid, topic_id, msg_id, return_code),
            (
                ClientState::Active | ClientState::Awake | ClientState::Asleep,
                Packet::PubRec { msg_id },
            ) => self.on_pubrec(now, sid, msg_id),
            (
                ClientState::Active | ClientState::Awake | ClientState::Asleep,
                Packet::PubComp { msg_id },
            ) => self.on_pubcomp(now, sid, msg_id),
            (ClientState::Active | ClientState::Awake, Packet::PingResp) => {}
            // A PUBLISH from a sleeping client (Paho's GatewayTester does
            // it; the Paho gateway takes it): accepted and acknowledged as
            // from an active client, and the client stays asleep — its
            // buffered messages wait for its PINGREQ, the one way v1.2 lets
            // it ask for them (docs/protocol.md).
            (
                ClientState::Asleep | ClientState::Awake,
                Packet::Publish {
                    qos,
                    dup,
                    retain,
                    topic,
                    msg_id,
                    payload,
                },
            ) => {
                debug!(client = %self.client_label(sid), "PUBLISH from a sleeping client: accepted, it stays asleep");
                self.on_publish(now, sid, qos, dup, retain, topic, msg_id, payload)
            }
            (state, other) => {
                debug!(
                    client = %self.client_label(sid),
                    state = state.label(),
                    msg = %other.msg_type(),
                    "message not valid in this state"
                );
                self.stats.drop(DropReason::OutOfState);
                // A client the gateway considers gone is told to connect again.
                if matches!(state, ClientState::Disconnected | ClientState::Lost)
                    && !matches!(other, Packet::Disconnect { .. })
                {
                    self.send_to(sid, Packet::Disconnect { duration: None });
                }
            }
        }
        self.arm(sid);
    }

    pub(crate) fn client_label(&self, sid: SessionId) -> Arc<str> {
        self.sessions
            .get(&sid)
            .map_or_else(|| Arc::from("?"), |s| s.client_id.clone())
    }

    /// A CONNECT from a source or with a client id that is not admitted:
    /// counted, and answered (CONNACK 0x03) or not as `refused_connect` says.
    fn refuse_not_admitted(&mut self, peer: crate::peer::Peer, client_id: &str) {
        // Not checked for length yet when the source was refused.
        let shown: String = client_id.chars().take(self.cfg.max_client_id_len).collect();
        info!(%peer, client = %shown, "device not admitted");
        self.stats.drop(DropReason::NotAdmitted);
        if self.cfg.admission.refusal == crate::admission::Refusal::ConnAck {
            self.transmit(
                peer,
                Packet::ConnAck {
                    return_code: ReturnCode::NotSupported,
                },
            );
        }
    }

    /// A CONNECT or wake-up the identity binding refuses (`core::identity`):
    /// counted as `identity_mismatch`, logged (rate-limited), and for a
    /// CONNECT whose client id the identity may not use answered with
    /// CONNACK 0x03; a takeover or wake-up of another identity's session is
    /// ignored, so the peer learns nothing about the session.
    fn refuse_identity(
        &mut self,
        now: Instant,
        peer: crate::peer::Peer,
        client_id: &str,
        identity: Option<&Arc<str>>,
        answer: bool,
    ) {
        self.stats.drop(DropReason::IdentityMismatch);
        if let Some(suppressed) = self.log_gates.identity_mismatch.allow(now) {
            let shown: String = client_id.chars().take(self.cfg.max_client_id_len).collect();
            let identity = identity.map_or("(none)", |i| i.as_ref());
            info!(%peer, client = %shown, identity, suppressed, "client id not bound to this peer's identity (counted as identity_mismatch)");
        }
        if answer {
            self.transmit(
                peer,
                Packet::ConnAck {
                    return_code: ReturnCode::NotSupported,
                },
            );
        }
    }

    /// Is the session `sid` bound to an identity other than `identity`?
    fn bound_elsewhere(&self, sid: SessionId, identity: Option<&Arc<str>>) -> bool {
        self.sessions
            .get(&sid)
            .and_then(|s| s.identity.as_ref())
            .is_some_and(|bound| Some(bound) != identity)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_connect(
        &mut self,
        now: Instant,
        peer: crate::peer::Peer,
        will: bool,
        clean_session: bool,
        protocol_id: u8,
        duration: u16,
        client_id: String,
    ) {
        let shown = client_id.clone();
        let refuse = |gw: &mut Gateway, peer, why: &str, code| {
            match gw.log_gates.connect_refused.allow(now) {
                Some(suppressed) => {
                    info!(client = %shown, %peer, why, ?code, suppressed, "CONNECT refused")
                }
                None => debug!(client = %shown, %peer, why, "CONNECT refused"),
            }
            gw.transmit(peer, Packet::ConnAck { return_code: code });
        };
        // The source first: with `refused_connect = "drop"` a source not
        // admitted gets no answer at all, not even to a malformed CONNECT.
        if !self.cfg.admission.admits_source(&peer) {
            return self.refuse_not_admitted(peer, &client_id);
        }
        if protocol_id != PROTOCOL_ID_V1_2 {
            return refuse(
                self,
                peer,
                "unsupported protocol id",
                ReturnCode::NotSupported,
            );
        }
        if client_id.is_empty() || client_id.len() > self.cfg.max_client_id_len {
            if !client_id.is_empty() {
                self.stats.limit_hit(crate::stats::LimitHit::MaxClientIdLen);
            }
            return refuse(
                self,
                peer,
                "client id empty or too long",
                ReturnCode::NotSupported,
            );
        }
        if !self.cfg.admission.admits_client_id(&client_id) {
            return self.refuse_not_admitted(peer, &client_id);
        }
        let identity = self.identity_of(&peer);
        if let Some(id) = &identity
            && !self.cfg.identity_binding.permits(id, &client_id)
        {
            return self.refuse_identity(now, peer, &client_id, identity.as_ref(), true);
        }
        let existing = self.by_client.get(client_id.as_str()).copied();
        if let Some(sid) = existing
            && self.bound_elsewhere(sid, identity.as_ref())
        {
            return self.refuse_identity(now, peer, &client_id, identity.as_ref(), false);
        }
        if existing.is_none()
            && self.sessions.len() >= self.cfg.max_clients
            && !self.evict_unproven(now)
            && !self.evict_one()
        {
            self.stats.limit_hit(crate::stats::LimitHit::MaxClients);
            return refuse(self, peer, "max_clients reached", ReturnCode::Congestion);
        }

        // The address now belongs to this client: another session that was
        // using it (a device that rebooted with a new id, or a reused port)
        // loses its mapping; it will be supervised out by its timers.
        if let Some(other) = self.by_peer.get(&peer).copied()
            && Some(other) != existing
        {
            self.by_peer.remove(&peer);
            if let Some(s) = self.sessions.get_mut(&other) {
                s.peer = None;
            }
        }

        let sid = match existing {
            Some(sid) => sid,
            None => {
                let sid = self.new_session_id();
                let client_id: Arc<str> = Arc::from(client_id.as_str());
                let session = Session::new(
                    client_id.clone(),
                    peer.clone(),
                    now,
                    self.cfg.max_topics_per_client,
                );
                self.sessions.insert(sid, session);
                self.by_client.insert(client_id, sid);
                self.mark_unproven(sid);
                sid
            }
        };

        // Takeover: the session follows the client to its new address.
        let old_peer = self.sessions.get(&sid).and_then(|s| s.peer.clone());
        if let Some(old) = old_peer
            && old != peer
        {
            if self.by_peer.get(&old) == Some(&sid) {
                self.by_peer.remove(&old);
            }
            let state = self.sessions.get(&sid).map(|s| s.state.label());
            info!(client = %client_id, from = %old, to = %peer, ?state, "session taken over by a CONNECT from a new address");
        }
        self.by_peer.insert(peer.clone(), sid);

        if clean_session {
            self.clear_session_state(sid);
        }
        let keep_alive = self.cfg.effective_keep_alive(duration);
        let handshake_deadline = now + self.cfg.will_handshake_timeout;
        let requeued = {
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            s.peer = Some(peer);
            s.identity = identity;
            // 1.2 unless the 2.0 path marks it again after this CONNECT.
            s.v2 = None;
            s.clean_session = clean_session;
            s.expiry = if clean_session {
                Some(Duration::ZERO)
            } else {
                self.cfg.session_expiry
            };
            s.keep_alive = keep_alive;
            s.last_seen = now;
            s.connection = s.connection.wrapping_add(1);
            s.awaiting_upstream_ack = None;
            // The client's id table is gone after a reconnect (trap T-4): every
            // id is registered again before the gateway publishes with it.
            s.topics.unconfirm_all();
            let requeued = s.requeue_inflight();
            if clean_session {
                s.will = None;
            }
            if will {
                s.state = ClientState::Connecting(Handshake::AwaitWillTopic);
                s.handshake_deadline = Some(handshake_deadline);
            }
            requeued
        };
        self.queued_bytes_total += requeued;
        if will {
            self.send_to(sid, Packet::WillTopicReq);
            self.arm(sid);
        } else {
            self.complete_connect(now, sid);
        }
    }

    /// A new session holds its place at `max_clients` only once its client
    /// has shown it hears the gateway: until then it is first to go.
    fn mark_unproven(&mut self, sid: SessionId) {
        self.connect_seq += 1;
        let seq = self.connect_seq;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.unproven = Some(seq);
            self.unproven.insert((seq, sid));
        }
    }

    /// The session's client sent something after its CONNECT: it is no
    /// longer first to be evicted.
    pub(crate) fn prove(&mut self, sid: SessionId) {
        if let Some(seq) = self.sessions.get_mut(&sid).and_then(|s| s.unproven.take()) {
            self.unproven.remove(&(seq, sid));
        }
    }

    /// Makes room for a new client at `max_clients` by removing the oldest
    /// session created by a CONNECT whose client has sent nothing since, at
    /// least [`UNPROVEN_GRACE`] ago (a silent or spoofed CONNECT holds no
    /// lasting place). False if there is none. Nothing is sent to its
    /// address: it may be a spoofed one.
    fn evict_unproven(&mut self, now: Instant) -> bool {
        // The oldest first; none younger than the grace period (an honest
        // device may take a moment to say its first word, and more honest
        // devices than `max_clients` must not keep evicting each other).
        let Some(&(seq, victim)) = self.unproven.first() else {
            return false;
        };
        let connected_at = self.sessions.get(&victim).map(|s| s.last_seen);
        if connected_at.is_some_and(|at| now.saturating_duration_since(at) < UNPROVEN_GRACE) {
            return false;
        }
        self.unproven.remove(&(seq, victim));
        if let Some(suppressed) = self.log_gates.unproven_evicted.allow(now) {
            info!(
                client = %self.client_label(victim),
                suppressed,
                "max_clients reached: evicting the oldest session that never answered its CONNACK"
            );
        }
        self.stats.sessions_evicted += 1;
        self.stats.unproven_evicted += 1;
        if let Some(s) = self.sessions.get_mut(&victim) {
            s.unproven = None;
        }
        self.remove_session(victim);
        true
    }

    /// Makes room for a new client at `max_clients` by removing the least
    /// recently seen session whose client is disconnected or lost (never one
    /// that is connected or asleep). False if there is none.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.state, ClientState::Disconnected | ClientState::Lost))
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(sid, _)| *sid);
        let Some(victim) = victim else {
            return false;
        };
        info!(client = %self.client_label(victim), "max_clients reached: evicting the oldest gone session");
        self.stats.sessions_evicted += 1;
        self.remove_session(victim);
        true
    }

    /// Drops subscriptions, topic ids, queued messages and in-flight state.
    pub(crate) fn clear_session_state(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let filters: Vec<String> = s.subscriptions.drain().map(|(f, _)| f).collect();
        s.predefined_subscriptions.clear();
        s.topics.clear();
        let freed = s.queued_bytes;
        s.queue.clear();
        s.queued_bytes = 0;
        s.inflight = None;
        s.inbound_qos2.clear();
        let was_parked = s.parked.take().is_some();
        self.queued_bytes_total = self.queued_bytes_total.saturating_sub(freed);
        if was_parked {
            // Its place in the release order goes with it.
            self.parked.retain(|&p| p != sid);
        }
        for filter in filters {
            self.remove_subscription(sid, &filter);
        }
    }

    fn on_will_topic(&mut self, now: Instant, sid: SessionId, topic: Option<WillTopic>) {
        match topic {
            // Empty WILLTOPIC: delete the will and finish at once (trap T-13).
            None => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.will = None;
                }
                self.complete_connect(now, sid);
            }
            Some(w) => {
                if crate::topic::validate_name(&w.topic).is_err() {
                    debug!(topic = %w.topic, "invalid will topic");
                    self.send_to(
                        sid,
                        Packet::ConnAck {
                            return_code: ReturnCode::NotSupported,
                        },
                    );
                    self.abort_handshake(sid, "invalid will topic");
                    return;
                }
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.state = ClientState::Connecting(Handshake::AwaitWillMsg {
                        topic: w.topic,
                        qos: w.qos.as_mqtt(),
                        retain: w.retain,
                    });
                }
                self.send_to(sid, Packet::WillMsgReq);
            }
        }
    }

    /// The handshake is done: CONNACK now, or (per-device mode) once the
    /// device's upstream session has answered.
    fn complete_connect(&mut self, now: Instant, sid: SessionId) {
        if self.per_device() {
            self.await_upstream_session(now, sid);
        } else {
            self.accept_connect(now, sid);
        }
    }

    /// CONNACK, Active, and start delivering what waited for the client.
    pub(crate) fn accept_connect(&mut self, now: Instant, sid: SessionId) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.state = ClientState::Active;
            s.handshake_deadline = None;
            s.last_seen = now;
            let transport = crate::snapshot::Transport::of(s.peer.as_ref());
            info!(
                client = %s.client_id,
                version = "1.2",
                transport = transport.label(),
                address = %s.peer.as_ref().map_or_else(String::new, ToString::to_string),
                keep_alive_secs = s.keep_alive.as_secs(),
                clean_session = s.clean_session,
                will = s.will.is_some(),
                "client connected"
            );
        }
        self.send_to(
            sid,
            Packet::ConnAck {
                return_code: ReturnCode::Accepted,
            },
        );
        self.resume_inflight(now, sid);
        self.pump(now, sid);
        self.arm(sid);
    }

    /// The client is reachable again: resend what was in flight when it went
    /// away or fell asleep (a PUBLISH with DUP set, a REGISTER, or a PUBREL,
    /// trap T-7) with a fresh retry timer.
    fn resume_inflight(&mut self, now: Instant, sid: SessionId) {
        let retry_at = now + self.cfg.retry_interval;
        let packet = self
            .sessions
            .get_mut(&sid)
            .and_then(|s| s.inflight.as_mut())
            .map(|i| {
                i.deadline = retry_at;
                i.retries = 0;
                // Sent before: the client may have it (trap T-7).
                if let Packet::Publish { dup, .. } = &mut i.packet {
                    *dup = true;
                }
                i.packet.clone()
            });
        if let Some(packet) = packet {
            self.send_to(sid, packet);
        }
    }

    /// The will handshake failed: the connection attempt is dropped.
    pub(crate) fn abort_handshake(&mut self, sid: SessionId, why: &str) {
        debug!(client = %self.client_label(sid), why, "connection attempt dropped");
        // Its upstream session (per-device mode) goes too, without the will,
        // as the engine keeps the will unpublished.
        self.close_upstream_session(sid, false);
        let remove = self.sessions.get_mut(&sid).is_some_and(|s| {
            s.state = ClientState::Disconnected;
            s.handshake_deadline = None;
            s.clean_session
        });
        self.detach_peer(sid);
        if remove {
            self.remove_session(sid);
        }
    }

    fn on_will_topic_update(&mut self, sid: SessionId, topic: Option<WillTopic>) {
        let code = match (topic, self.sessions.get_mut(&sid)) {
            (_, None) => return,
            (None, Some(s)) => {
                s.will = None;
                ReturnCode::Accepted
            }
            (Some(w), Some(_)) if crate::topic::validate_name(&w.topic).is_err() => {
                ReturnCode::NotSupported
            }
            (Some(w), Some(s)) => {
                let payload = s.will.take().map(|old| old.payload).unwrap_or_default();
                s.will = Some(Will {
                    topic: w.topic,
                    payload,
                    qos: w.qos.as_mqtt(),
                    retain: w.retain,
                });
                ReturnCode::Accepted
            }
        };
        if code == ReturnCode::Accepted {
            self.reopen_upstream_session(sid);
        }
        self.send_to(sid, Packet::WillTopicResp { return_code: code });
    }

    fn on_will_msg_update(&mut self, sid: SessionId, payload: Bytes) {
        let code = match self.sessions.get_mut(&sid).map(|s| &mut s.will) {
            None => return,
            Some(Some(will)) => {
                will.payload = payload;
                ReturnCode::Accepted
            }
            // No will topic to attach the message to (trap T-13).
            Some(None) => ReturnCode::NotSupported,
        };
        if code == ReturnCode::Accepted {
            self.reopen_upstream_session(sid);
        }
        self.send_to(sid, Packet::WillMsgResp { return_code: code });
    }

    fn on_disconnect(&mut self, now: Instant, sid: SessionId, duration: Option<u16>) {
        // Both forms are answered with a DISCONNECT without Duration.
        self.send_to(sid, Packet::Disconnect { duration: None });
        match duration {
            Some(secs) => {
                // What is in flight stays in flight (not retried while asleep):
                // an acknowledgement the client sent as it fell asleep still
                // completes it, and anything unacknowledged is resent, same
                // MsgId, when it wakes.
                if let Some(s) = self.sessions.get_mut(&sid) {
                    if s.state != ClientState::Asleep {
                        info!(client = %s.client_id, sleep_secs = secs, "client asleep");
                    }
                    s.state = ClientState::Asleep;
                    s.sleep_duration = Duration::from_secs(u64::from(secs));
                    s.last_seen = now;
                }
            }
            None => {
                info!(client = %self.client_label(sid), "client disconnected");
                // A clean DISCONNECT discards the will (upstream too).
                self.close_upstream_session(sid, false);
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.will = None;
                }
                self.end_connection(sid);
            }
        }
    }

    /// The client's connection is over without loss: Disconnected, its
    /// address forgotten; a clean session goes, a kept one gets what was in
    /// flight queued again for its return.
    pub(crate) fn end_connection(&mut self, sid: SessionId) {
        let clean = self.sessions.get_mut(&sid).is_some_and(|s| {
            s.state = ClientState::Disconnected;
            s.clean_session
        });
        self.detach_peer(sid);
        if clean {
            self.remove_session(sid);
        } else {
            let requeued = self
                .sessions
                .get_mut(&sid)
                .map_or(0, |s| s.requeue_inflight());
            self.queued_bytes_total += requeued;
        }
    }

    /// PINGREQ carrying a client id: a sleeping client wakes to collect its
    /// buffered messages (fact sheet §7.9).
    pub(crate) fn on_wake(&mut self, now: Instant, peer: crate::peer::Peer, client_id: String) {
        let Some(&sid) = self.by_client.get(client_id.as_str()) else {
            debug!(%peer, client = %client_id, "PINGREQ from an unknown client");
            self.stats.drop(DropReason::UnknownPeer);
            return;
        };
        let Some(state) = self.sessions.get(&sid).map(|s| s.state.clone()) else {
            return;
        };
        let identity = self.identity_of(&peer);
        if self.bound_elsewhere(sid, identity.as_ref()) {
            return self.refuse_identity(now, peer, &client_id, identity.as_ref(), false);
        }
        match state {
            ClientState::Asleep | ClientState::Awake => {
                // A sleeping client may wake from a new address, if that
                // address may connect: otherwise anyone who knows the id
                // could collect its buffered messages.
                let old = self.sessions.get(&sid).and_then(|s| s.peer.clone());
                if old.as_ref() != Some(&peer) && !self.cfg.admission.admits(&client_id, &peer) {
                    info!(%peer, client = %client_id, "wake-up from an address not admitted");
                    self.stats.drop(DropReason::NotAdmitted);
                    return;
                }
                if old.as_ref() != Some(&peer) {
                    if let Some(old) = old
                        && self.by_peer.get(&old) == Some(&sid)
                    {
                        self.by_peer.remove(&old);
                    }
                    if let Some(other) = self.by_peer.insert(peer.clone(), sid)
                        && other != sid
                        && let Some(s) = self.sessions.get_mut(&other)
                    {
                        s.peer = None;
                    }
                }
                let resumed = self.sessions.get_mut(&sid).is_some_and(|s| {
                    s.peer = Some(peer);
                    s.last_seen = now;
                    let resumed = s.state == ClientState::Asleep;
                    if resumed {
                        info!(client = %s.client_id, "client woke");
                    }
                    s.state = ClientState::Awake;
                    if resumed {
                        s.delivered_this_wake = 0;
                    }
                    resumed
                });
                if resumed {
                    self.resume_inflight(now, sid);
                }
                self.pump(now, sid);
            }
            ClientState::Active
                if self.sessions.get(&sid).and_then(|s| s.peer.as_ref()) == Some(&peer) =>
            {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.last_seen = now;
                }
                self.transmit(peer, Packet::PingResp);
            }
            _ => {
                // Active elsewhere, connecting, or gone: not this peer's to wake.
                debug!(%peer, client = %client_id, state = state.label(), "ignoring PINGREQ with client id");
                self.stats.drop(DropReason::OutOfState);
            }
        }
        self.arm(sid);
    }

    /// Ends an awake period: PINGRESP after the last buffered message and its
    /// acknowledgement (trap T-11), then back to sleep with the timer restarted.
    pub(crate) fn finish_awake(&mut self, now: Instant, sid: SessionId) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.state = ClientState::Asleep;
            s.last_seen = now;
        }
        self.send_to(sid, Packet::PingResp);
    }

    /// The client is gone: publish its will; forget it if it asked for a clean
    /// session, otherwise keep its subscriptions and queue for its return.
    pub(crate) fn lose(&mut self, now: Instant, sid: SessionId, why: &str) {
        self.touch(sid);
        info!(client = %self.client_label(sid), why, "client lost");
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.state = ClientState::Lost;
        let will = s.will.take();
        let clean = s.clean_session;
        let requeued = s.requeue_inflight();
        self.queued_bytes_total += requeued;
        self.detach_peer(sid);
        // Per-device mode: the device's own upstream session carries the
        // will; dropping it makes the broker publish it, so the engine
        // routes it to local subscribers only.
        let origin = if self.close_upstream_session(sid, true) {
            Origin::SessionWill
        } else {
            Origin::Will
        };
        if let Some(will) = will {
            self.route_will(now, Subscriber::Device(sid), will, origin);
        }
        if clean {
            self.remove_session(sid);
        }
    }

    /// Publishes a lost client's will (device or local), if the ACL lets
    /// it write there.
    pub(crate) fn publish_will(&mut self, now: Instant, owner: Subscriber, will: Will) {
        self.route_will(now, owner, will, Origin::Will);
    }

    /// Routes a will as `origin` (`Origin::Will`, or `Origin::SessionWill`
    /// when the device's upstream session carries it), if the ACL lets its
    /// owner write there.
    pub(crate) fn route_will(
        &mut self,
        now: Instant,
        owner: Subscriber,
        will: Will,
        origin: Origin,
    ) {
        if !self.acl_check(owner, &will.topic, Access::Write, "will") {
            return;
        }
        self.stats.wills_published += 1;
        let topic: Arc<str> = Arc::from(will.topic.as_str());
        self.route(
            now,
            &topic,
            will.payload,
            will.qos,
            will.retain,
            origin,
            None,
        );
    }

    /// Forgets the session's address.
    pub(crate) fn detach_peer(&mut self, sid: SessionId) {
        if let Some(peer) = self.sessions.get_mut(&sid).and_then(|s| s.peer.take())
            && self.by_peer.get(&peer) == Some(&sid)
        {
            self.by_peer.remove(&peer);
        }
    }

    /// Removes a session and everything that refers to it.
    pub(crate) fn remove_session(&mut self, sid: SessionId) {
        self.prove(sid); // out of the eviction order
        self.close_upstream_session(sid, false);
        if let Some(s) = self.sessions.get(&sid) {
            let key = crate::persist::ClientKey {
                kind: crate::persist::ClientKind::Device,
                client_id: s.client_id.to_string(),
            };
            self.forget_session(sid, key);
        }
        self.clear_session_state(sid);
        self.detach_peer(sid);
        self.disarm(sid);
        if let Some(s) = self.sessions.remove(&sid)
            && self.by_client.get(&s.client_id) == Some(&sid)
        {
            self.by_client.remove(&s.client_id);
        }
    }
}
