//! Messages from devices towards the gateway: REGISTER (fact sheet §7.3, traps
//! T-1/T-17), PUBLISH at QoS −1..2 (§7.4, traps T-7/T-14/T-15/T-16) and the
//! QoS 2 release. Accepted messages are handed to the router.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use crate::acl::Access;
use crate::gateway::{Gateway, Origin, PublishTarget, Subscriber};
use crate::peer::Peer;
use crate::session::{MAX_INBOUND_QOS2, ParkedPublish, SessionId};
use crate::stats::DropReason;
use sngate_wire::v1::{Packet, QoS, ReturnCode, TopicRef};

impl Gateway {
    pub(crate) fn on_register(&mut self, sid: SessionId, msg_id: u16, topic_name: String) {
        let answer = |topic_id, return_code| Packet::RegAck {
            topic_id,
            msg_id,
            return_code,
        };
        // Wildcards cannot be registered (trap T-17), nor can invalid names.
        if crate::topic::validate_name(&topic_name).is_err() {
            debug!(topic = %topic_name, "refusing REGISTER of an invalid topic name");
            return self.send_to(sid, answer(0, ReturnCode::NotSupported));
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let packet = match s.topics.assign_within(
            &topic_name,
            true,
            Some(&self.topic_bytes),
            self.cfg.max_topic_bytes_total,
        ) {
            Ok(id) => answer(id, ReturnCode::Accepted),
            Err(full) => {
                debug!(client = %s.client_id, error = %full, "refusing REGISTER");
                self.stats.limit_hit(full.limit());
                answer(0, ReturnCode::Congestion)
            }
        };
        self.send_to(sid, packet);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_publish(
        &mut self,
        now: Instant,
        sid: SessionId,
        qos: QoS,
        dup: bool,
        retain: bool,
        topic: TopicRef,
        msg_id: u16,
        payload: Bytes,
    ) {
        let _ = dup; // a hint only; QoS 2 duplicates are caught by MsgId (trap T-7)
        let resolved = self.resolve_topic(self.sessions.get(&sid), &topic);
        let name = match resolved {
            Ok(name) => name,
            Err(code) => {
                debug!(client = %self.client_label(sid), ?topic, "PUBLISH to an unusable topic");
                // The error answer is a PUBACK whatever the QoS (fact sheet §6).
                return self.send_to(
                    sid,
                    Packet::PubAck {
                        topic_id: topic.raw(),
                        msg_id,
                        return_code: code,
                    },
                );
            }
        };
        if !self.acl_check(Subscriber::Device(sid), &name, Access::Write, "publish") {
            // QoS 1/2 are told (PUBACK "rejected: not supported"); QoS 0 and
            // −1 have no answer to carry it.
            if matches!(qos, QoS::AtLeastOnce | QoS::ExactlyOnce) {
                self.send_to(
                    sid,
                    Packet::PubAck {
                        topic_id: topic.raw(),
                        msg_id,
                        return_code: ReturnCode::NotSupported,
                    },
                );
            }
            return;
        }
        // A QoS 1/2 message the upstream broker is known to refuse is
        // refused here, before it is acknowledged (upstream_limits.rs).
        if matches!(qos, QoS::AtLeastOnce | QoS::ExactlyOnce)
            && let Some(why) = self.upstream_refusal(&name, payload.len(), qos.as_mqtt(), retain)
        {
            debug!(client = %self.client_label(sid), topic = %name, why, "PUBLISH the upstream broker would refuse");
            self.stats.drop(DropReason::UpstreamRefused);
            return self.send_to(
                sid,
                Packet::PubAck {
                    topic_id: topic.raw(),
                    msg_id,
                    return_code: ReturnCode::NotSupported,
                },
            );
        }
        match qos {
            QoS::AtMostOnce | QoS::MinusOne => {
                self.stats.publish_in(qos);
                self.publishing_as = self.device_origin(sid, None);
                self.accept_publish(now, &name, payload, 0, retain);
                self.publishing_as = None;
            }
            QoS::AtLeastOnce | QoS::ExactlyOnce => {
                let upstream_full = self.cfg.upstream && self.upstream_room == 0;
                let Some(s) = self.sessions.get_mut(&sid) else {
                    return;
                };
                // Per-device mode: its acknowledgement waits for the broker's;
                // the device's retransmission is not forwarded again.
                if s.awaiting_upstream_ack == Some(msg_id) {
                    debug!(client = %s.client_id, msg_id, "retransmission while the broker's acknowledgement is awaited");
                    return;
                }
                // A retransmission of a QoS 2 PUBLISH not yet released is
                // acknowledged again but not forwarded twice (trap T-7).
                if qos == QoS::ExactlyOnce && s.inbound_qos2.contains(&msg_id) {
                    return self.send_to(sid, Packet::PubRec { msg_id });
                }
                let parked = ParkedPublish {
                    msg_id,
                    topic_field: topic.raw(),
                    topic: name,
                    payload,
                    qos: qos.as_mqtt(),
                    retain,
                };
                match &s.parked {
                    // The device resent the message that waits: it is
                    // acknowledged once, when it goes through.
                    Some(p) if p.msg_id == msg_id => {}
                    // A second message while one waits (v1.2 allows one in
                    // flight): not acknowledged, so the device sends it again.
                    Some(_) => {
                        debug!(client = %s.client_id, msg_id, "PUBLISH while another waits for upstream room");
                        self.stats.drop(DropReason::OutOfState);
                    }
                    None if upstream_full => {
                        s.parked = Some(parked);
                        self.parked.push_back(sid);
                        self.stats.publishes_parked += 1;
                    }
                    None => self.commit_publish(now, sid, parked),
                }
            }
        }
    }

    /// Routes a device's QoS 1/2 message and acknowledges it (PUBACK, or
    /// PUBREC with the id remembered until PUBREL).
    pub(crate) fn commit_publish(&mut self, now: Instant, sid: SessionId, p: ParkedPublish) {
        let ack = if p.qos == 2 {
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            if s.inbound_qos2.len() >= MAX_INBOUND_QOS2 {
                // Forget the oldest unreleased id rather than grow.
                s.inbound_qos2.pop_front();
            }
            s.inbound_qos2.push_back(p.msg_id);
            // Kept with a durable session (persist.rs): exactly once across
            // a restart.
            self.touch(sid);
            Packet::PubRec { msg_id: p.msg_id }
        } else {
            Packet::PubAck {
                topic_id: p.topic_field,
                msg_id: p.msg_id,
                return_code: ReturnCode::Accepted,
            }
        };
        self.stats.publish_in(if p.qos == 2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        });
        // Per-device mode: the acknowledgement goes with the message to the
        // device's upstream session and comes back in handle_session_ack.
        let token = crate::output::UpstreamAck {
            msg_id: p.msg_id,
            topic_field: p.topic_field,
            qos: p.qos,
            connection: self.sessions.get(&sid).map_or(0, |s| s.connection),
            store_id: 0,
        };
        self.publishing_as = self.device_origin(sid, Some(token));
        // The acknowledgement goes ahead of whatever routing emits.
        let before_routing = self.output_mark();
        self.accept_publish(now, &p.topic, p.payload, p.qos, p.retain);
        // Its outbox record waits for the broker (linger.rs).
        let held = self.linger.just_held.take();
        match self.publishing_as.take() {
            // Handed upstream: acknowledged when the broker has it.
            None if self.per_device() => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.awaiting_upstream_ack = Some(p.msg_id);
                }
            }
            // Aggregate mode, record held: on the first safe copy — unless
            // the message already comes back to this device (it subscribes
            // to its own topic): Paho's pub0sub1 waits for its PUBACK
            // first, so the record is written with this batch instead and
            // the acknowledgement goes ahead of the echo.
            None if let Some(id) = held => {
                if self.emitted_to_since(before_routing, sid) {
                    self.write_held(id);
                    self.send_to_before(before_routing, sid, ack);
                } else {
                    self.hold_ack(id, sid, ack);
                }
            }
            // Not sent upstream after all (or aggregate mode): now, ahead
            // of the message's delivery back to this device, if it is
            // subscribed.
            _ => self.send_to_before(before_routing, sid, ack),
        }
    }

    fn accept_publish(
        &mut self,
        now: Instant,
        topic: &Arc<str>,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) {
        self.stats.publishes_in += 1;
        self.route(now, topic, payload, qos, retain, Origin::Device, None);
    }

    pub(crate) fn on_pubrel(&mut self, sid: SessionId, msg_id: u16) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.inbound_qos2.retain(|&m| m != msg_id);
        }
        self.touch(sid);
        // PUBCOMP even for an unknown id: the client may be retrying after the
        // gateway already released it.
        self.send_to(sid, Packet::PubComp { msg_id });
    }

    /// QoS −1: no connection, no acknowledgement, to a pre-defined id, a short
    /// name, or (Paho's form, trap T-14) a full name.
    pub(crate) fn on_publish_minus_one(
        &mut self,
        peer: Peer,
        target: PublishTarget,
        payload: Bytes,
        retain: bool,
        now: Instant,
    ) {
        let name = match target {
            _ if !self.cfg.accept_qos_minus_one => None,
            PublishTarget::Ref(topic @ (TopicRef::Predefined(_) | TopicRef::Short(_))) => {
                self.resolve_topic(None, &topic).ok()
            }
            PublishTarget::Ref(TopicRef::Id(_)) => None,
            PublishTarget::Name(name) if self.cfg.accept_qos_minus_one_named => {
                crate::topic::validate_name(&name)
                    .ok()
                    .map(|()| Arc::from(name.as_str()))
            }
            PublishTarget::Name(_) => None,
        };
        if !self.cfg.admission.admits_source(&peer) {
            debug!(%peer, "QoS -1 PUBLISH from a source not admitted");
            self.stats.drop(DropReason::NotAdmitted);
            return;
        }
        if let Some(name) = &name
            && !self.acl_check_anonymous_write(name)
        {
            return;
        }
        match name {
            Some(name) => {
                self.stats.publish_in(QoS::MinusOne);
                self.accept_publish(now, &name, payload, 0, retain);
            }
            None => {
                debug!(%peer, "QoS -1 PUBLISH refused");
                self.stats.drop(DropReason::QosMinusOneRefused);
            }
        }
    }
}
