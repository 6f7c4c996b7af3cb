//! MQTT-SN 2.0 devices on the engine (issue 21), first slice: a 2.0 device
//! connects (CONNACK with an assigned client id for an empty one), registers
//! topic names, publishes at QoS 0, 1 and 2 by session alias, predefined
//! alias or full topic name, publishes without a session (PUBWOS), pings and
//! disconnects. Its session is an ordinary engine session — routing, ACL,
//! rate limits, upstream room, keep-alive, persistence are the 1.2 ones —
//! with a [`V2Link`] that records what the 2.0 wire needs and turns every
//! packet the engine sends it into its 2.0 form.
//!
//! How a datagram is taken as 2.0 is `sngate_wire::version`'s rule
//! (docs/protocol-v2.md): a peer with a 2.0 session is decoded with the 2.0
//! codec; a peer with no session only when its datagram is not valid 1.2;
//! a 2.0 CONNECT from any peer starts a 2.0 session. Everything a 1.2 device
//! sends takes the 1.2 path unchanged.
//!
//! Subscriptions work both ways too: SUBSCRIBE (by filter, predefined or
//! session alias) and UNSUBSCRIBE, and delivery — REGISTER before a message
//! on a topic the device has no alias for, PUBLISH by session alias,
//! predefined alias or (a two-character topic) full name, within the
//! device's Maximum Packet Size.
//!
//! The will inside CONNECT is the engine's will (played through its 1.2
//! handshake, never sent); DISCONNECT with any reason but 0x00 publishes it.
//!
//! The CONNECT's Session Expiry Interval decides how long the session
//! outlives its virtual connection, bounded by the operator's
//! `session_expiry`.
//!
//! One request at a time: a second request while the gateway still owes an
//! answer to the first gets DISCONNECT 0x93 (§4.9).
//!
//! Sleep is the engine's 1.2 sleep entered with SLEEPREQ (answered with
//! SLEEPRESP) and woken with PINGREQ; a wake hands over at most the
//! CONNECT's Default Awake Messages and its PINGRESP says how many remain.
//! Retain Handling decides whether a new subscription gets retained
//! messages ([`V2Link::no_retained`]); No Local keeps a device's own
//! publications from its No Local subscriptions ([`V2Link::no_local`]);
//! Retain As Published keeps a live message's RETAIN flag
//! (`Gateway::live_retain_flag`).
//!
//! Not in this slice: authentication (refused at CONNECT), WAKEUP (never
//! sent), the envelopes, devices behind a forwarder.

use std::time::{Duration, Instant};

use sngate_wire::v1::{self as proto, Packet, QoS, ReturnCode, TopicRef};
use sngate_wire::v2::{self, Delivery, ReasonCode, Topic};
use sngate_wire::version::{self, FirstDatagram, ProtocolVersion};
use tracing::debug;

use crate::gateway::Gateway;
use crate::output::Output;
use crate::peer::Peer;
use crate::stats::DropReason;

/// What a 2.0 session needs beyond an engine session: the ids its answers
/// echo and the limits its CONNECT set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct V2Link {
    /// The CONNECT's packet id, echoed by the CONNACK.
    pub connect_id: u16,
    /// Whether the CONNECT resumed a session (CONNACK Session Present).
    pub session_present: bool,
    /// The client id the gateway assigned (empty: the device chose its own).
    pub assigned_client_id: String,
    /// The largest packet the device takes (0: no limit); bigger ones are
    /// dropped as if delivered [MQTT-SN-3.1.7-3].
    pub max_packet_size: u16,
    /// The last PINGREQ's packet id, echoed by the PINGRESP.
    pub ping_id: u16,
    /// The Session Expiry Interval the CONNACK reports: the gateway's,
    /// when it differs from the device's and the device allowed
    /// server-suggested values [MQTT-SN-3.1.2.7-2].
    pub connack_session_expiry: Option<u32>,
    /// The SUBSCRIBE being answered: its packet id and whether it named one
    /// topic (its SUBACK carries a session alias, §3.8.4) — a filter with
    /// wildcards or a predefined alias gets none.
    pub subscribing: Option<(u16, bool)>,
    /// Whether the CONNECT allowed server-suggested values (bit 6): a
    /// SLEEPRESP may then carry the granted Sleep Duration [3.16.2.1-3].
    pub allow_server_suggested: bool,
    /// The CONNECT's Default Awake Messages: the most buffered messages one
    /// wake hands over (0 or absent: the gateway decides, §3.1.8).
    pub default_awake_messages: u8,
    /// The last SLEEPREQ's packet id, echoed by the SLEEPRESP.
    pub sleep_id: u16,
    /// Filters whose latest SUBSCRIBE asked for no retained messages: Retain
    /// Handling 2, or 1 on a subscription that already existed (§3.7.2.3).
    /// Usually empty.
    pub no_retained: Vec<std::sync::Arc<str>>,
    /// Filters subscribed with No Local (§3.7.2.1): the device's own
    /// publications matching only these are not sent back to it. Usually
    /// empty.
    pub no_local: Vec<std::sync::Arc<str>>,
    /// Filters subscribed with Retain As Published (§3.7.2.4). Usually
    /// empty.
    pub retain_as_published: Vec<std::sync::Arc<str>>,
}

impl V2Link {
    /// Whether retained messages for a new subscription to `filter` are
    /// withheld by its Retain Handling.
    pub fn withholds_retained(&self, filter: &str) -> bool {
        self.no_retained.iter().any(|f| &**f == filter)
    }
}

/// Prefix of the client ids the gateway assigns (at most 36 characters in
/// all, §3.2.11).
const ASSIGNED_PREFIX: &str = "sngate-";

impl Gateway {
    /// Takes the datagram if it is 2.0 (the module doc's rule); false leaves
    /// it to the 1.2 path.
    pub(crate) fn route_v2(&mut self, now: Instant, peer: &Peer, bytes: &[u8]) -> bool {
        if peer.node.is_some() {
            return false;
        }
        let session_v2 = self
            .by_peer
            .get(peer)
            .and_then(|sid| self.sessions.get(sid))
            .map(|s| s.v2.is_some());
        let packet = match session_v2 {
            // A 1.2 CONNECT starts a new session, of 1.2 (rule 1).
            Some(true) if version::connect_version(bytes) == Some(ProtocolVersion::V1_2) => {
                return false;
            }
            Some(true) => match v2::decode(bytes) {
                Ok(p) => p,
                Err(err) => {
                    if !self.admit(now, peer, None) {
                        self.stats.drop(DropReason::RateLimited);
                        return true;
                    }
                    debug!(%peer, %err, "a malformed 2.0 datagram ends the virtual connection");
                    self.stats.drop(DropReason::Malformed);
                    // §4.12.1: a Malformed Packet deletes the sender's
                    // virtual connection (DISCONNECT 0x81; its will fires).
                    if let Some(sid) = self.by_peer.get(peer).copied() {
                        self.disconnect_v2(peer.clone(), ReasonCode::MALFORMED_PACKET);
                        self.lose(now, sid, "malformed 2.0 packet");
                    }
                    return true;
                }
            },
            // A 1.2 session: only a 2.0 CONNECT changes that (a new session).
            Some(false) => {
                if version::connect_version(bytes) != Some(ProtocolVersion::V2_0) {
                    return false;
                }
                match v2::decode(bytes) {
                    Ok(p) => p,
                    Err(_) => return false,
                }
            }
            None => match version::classify_first_datagram(bytes) {
                FirstDatagram::V2_0(p) => p,
                FirstDatagram::V2ConnectUnsupportedVersion { packet_id, version } => {
                    debug!(%peer, version, "refusing a CONNECT of an unsupported version");
                    if self.admit(now, peer, Some(&v1_connect_shape())) {
                        self.refuse_v2_connect(
                            peer.clone(),
                            packet_id,
                            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                        );
                    } else {
                        self.stats.drop(DropReason::RateLimited);
                    }
                    return true;
                }
                FirstDatagram::V1_2 { .. } | FirstDatagram::Undecodable { .. } => return false,
            },
        };
        // Charged like the 1.2 packet it stands for.
        let shape = budget_shape(&packet);
        if !self.admit(now, peer, shape.as_ref()) {
            self.stats.drop(DropReason::RateLimited);
            return true;
        }
        self.handle_v2(now, peer.clone(), packet);
        true
    }

    fn handle_v2(&mut self, now: Instant, peer: Peer, packet: v2::Packet) {
        use v2::Packet as P;
        let needs_session = !matches!(
            packet,
            P::Connect(_)
                | P::PubWos(_)
                | P::SearchGw { .. }
                | P::Advertise { .. }
                | P::GwInfo { .. }
        );
        if let Some(id) = request_id(&packet)
            && let Some(sid) = self.by_peer.get(&peer).copied()
            && let Some(pending) = self.outstanding_request(sid)
            && pending != id
        {
            // §4.9: one request at a time per direction; a new one while the
            // gateway still owes an answer is a flow-control violation
            // [MQTT-SN-4.9-1]: DISCONNECT 0x93 and the connection ends.
            debug!(%peer, pending, id, "a second 2.0 request while one is outstanding");
            self.stats.drop(DropReason::OutOfState);
            self.disconnect_v2(peer.clone(), ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
            return self.lose(now, sid, "2.0 flow-control violation");
        }
        if needs_session && self.v2_link_for(&peer).is_none() {
            // Only 2.0 reaches here, so the answer cannot confuse a 1.2
            // device (§3.13: MAY send DISCONNECT 0xF4).
            debug!(%peer, packet = %packet.packet_type(), "a 2.0 packet with no virtual connection");
            self.stats.drop(DropReason::UnknownPeer);
            return self.disconnect_v2(peer, ReasonCode::NO_VIRTUAL_CONNECTION);
        }
        match packet {
            P::Connect(c) => self.v2_connect(now, peer, *c),
            P::Publish(p) => self.v2_publish(now, peer, p),
            P::PubWos(p) => {
                let retain = p.retain;
                let v1 = match p.topic {
                    Topic::Name(topic_name) => Packet::PublishNamedMinusOne {
                        dup: false,
                        retain,
                        msg_id: 0,
                        topic_name,
                        payload: p.payload,
                    },
                    Topic::PredefinedAlias(id) | Topic::SessionAlias(id) => Packet::Publish {
                        dup: false,
                        qos: QoS::MinusOne,
                        retain,
                        topic: TopicRef::Predefined(id),
                        msg_id: 0,
                        payload: p.payload,
                    },
                };
                self.handle_packet(now, peer, v1);
            }
            P::Register(r) => self.handle_packet(
                now,
                peer,
                Packet::Register {
                    topic_id: 0,
                    msg_id: r.packet_id,
                    topic_name: r.topic_name,
                },
            ),
            P::PubAck(a) => self.handle_packet(
                now,
                peer,
                Packet::PubAck {
                    topic_id: 0,
                    msg_id: a.packet_id,
                    return_code: v1_code(a.reason_or_success()),
                },
            ),
            // The device's answer to the gateway's REGISTER (no alias in it,
            // [3.5.4-1]: the engine matches it by packet id).
            P::RegAck(r) => self.handle_packet(
                now,
                peer,
                Packet::RegAck {
                    topic_id: r.alias.unwrap_or(0),
                    msg_id: r.packet_id,
                    return_code: v1_code(r.reason.unwrap_or(ReasonCode::SUCCESS)),
                },
            ),
            P::PubRec(a) => self.handle_packet(
                now,
                peer,
                Packet::PubRec {
                    msg_id: a.packet_id,
                },
            ),
            P::PubRel(a) => self.handle_packet(
                now,
                peer,
                Packet::PubRel {
                    msg_id: a.packet_id,
                },
            ),
            P::PubComp(a) => self.handle_packet(
                now,
                peer,
                Packet::PubComp {
                    msg_id: a.packet_id,
                },
            ),
            P::PingReq { packet_id } => {
                if let Some(link) = self.v2_link_mut(&peer) {
                    link.ping_id = packet_id;
                }
                // Asleep (or awake and retrying): the PINGREQ wakes the
                // device to collect what was buffered, as a 1.2 PINGREQ with
                // its client id does (§4.14.2; the 2.0 device is known by
                // its address, trap T-11).
                match self.sleeping_client_id(&peer) {
                    Some(client_id) => self.on_wake(now, peer, client_id),
                    None => self.handle_packet(now, peer, Packet::PingReq { client_id: None }),
                }
            }
            // Normal disconnection: the will is discarded. Any other reason
            // (0x04 "with will message", an error) ends the virtual
            // connection with the will published (§3.1.2.2, [3.13.7-3]).
            // Never answered (§3.13): the engine's 1.2 echo is not sent.
            P::Disconnect(d) if d.reason.is_none_or(|r| r == ReasonCode::SUCCESS) => {
                self.capture_engine(now, &peer, Packet::Disconnect { duration: None });
            }
            P::Disconnect(d) => {
                if let Some(sid) = self.by_peer.get(&peer).copied() {
                    let why = if d.reason == Some(ReasonCode::DISCONNECT_WITH_WILL) {
                        "2.0 DISCONNECT with will message"
                    } else {
                        "2.0 DISCONNECT with an error"
                    };
                    self.lose(now, sid, why);
                }
            }
            P::Subscribe(s) => {
                let Some(topic) = self.v1_filter(&peer, s.topic) else {
                    return self.transmit_v2(
                        peer,
                        v2::Packet::SubAck(v2::SubAck {
                            alias_kind: v2::AliasKind::Predefined,
                            packet_id: s.packet_id,
                            alias: None,
                            reason: Some(ReasonCode::UNKNOWN_TOPIC_ALIAS),
                        }),
                    );
                };
                let one_topic = matches!(&topic, proto::SubscribeTopic::Name(f)
                    if !f.contains(['+', '#']));
                // Retain Handling (§3.7.2.3): 0 sends retained messages at
                // every SUBSCRIBE, 1 only when the subscription is new, 2 never.
                let filter = self.subscription_filter(&topic).ok();
                let existed = filter.as_ref().is_some_and(|f| {
                    self.by_peer
                        .get(&peer)
                        .and_then(|sid| self.sessions.get(sid))
                        .is_some_and(|s| s.subscriptions.contains_key(&**f))
                });
                let withhold = match s.options.retain_handling {
                    v2::RetainHandling::SendAtSubscribe => false,
                    v2::RetainHandling::SendIfNew => existed,
                    v2::RetainHandling::DoNotSend => true,
                };
                if let Some(link) = self.v2_link_mut(&peer) {
                    link.subscribing = Some((s.packet_id, one_topic));
                    if let Some(filter) = filter {
                        link.no_retained.retain(|f| *f != filter);
                        link.no_local.retain(|f| *f != filter);
                        link.retain_as_published.retain(|f| *f != filter);
                        if s.options.no_local {
                            link.no_local.push(filter.clone());
                        }
                        if s.options.retain_as_published {
                            link.retain_as_published.push(filter.clone());
                        }
                        if withhold {
                            link.no_retained.push(filter);
                        }
                    }
                }
                self.handle_packet(
                    now,
                    peer,
                    Packet::Subscribe {
                        dup: false,
                        qos: v1_qos(s.options.max_qos),
                        msg_id: s.packet_id,
                        topic,
                    },
                );
            }
            P::Unsubscribe(u) => match self.v1_filter(&peer, u.topic) {
                Some(topic) => self.handle_packet(
                    now,
                    peer,
                    Packet::Unsubscribe {
                        msg_id: u.packet_id,
                        topic,
                    },
                ),
                None => self.transmit_v2(
                    peer,
                    v2::Packet::UnsubAck(v2::Ack {
                        packet_id: u.packet_id,
                        reason: Some(ReasonCode::UNKNOWN_TOPIC_ALIAS),
                    }),
                ),
            },
            P::SleepReq {
                packet_id,
                duration,
                ..
            } => self.v2_sleep(now, peer, packet_id, duration),
            // Without an authentication method in CONNECT an AUTH is a
            // protocol error [MQTT-SN-4.11.1-7].
            P::Auth(_) => self.disconnect_v2(peer, ReasonCode::PROTOCOL_ERROR),
            P::Protection(_) => self.disconnect_v2(peer, ReasonCode::PROTECTION_NOT_SUPPORTED),
            P::Forwarder(_) => self.disconnect_v2(peer, ReasonCode::FORWARDER_NOT_SUPPORTED),
            other => {
                debug!(%peer, packet = %other.packet_type(), "ignoring a 2.0 packet this gateway does not take");
                self.stats.drop(DropReason::OutOfState);
            }
        }
    }

    /// CONNECT (§3.1.19): validated here for what 1.2 does not have, then
    /// handed to the engine as the 1.2 CONNECT it amounts to.
    fn v2_connect(&mut self, now: Instant, peer: Peer, c: v2::Connect) {
        let refuse = |gw: &mut Gateway, why: &str, reason| {
            debug!(%peer, why, "refusing a 2.0 CONNECT");
            gw.refuse_v2_connect(peer.clone(), c.packet_id, reason);
        };
        if c.keep_alive == 0 {
            return refuse(self, "keep-alive 0", ReasonCode::PROTOCOL_ERROR);
        }
        if c.auth.is_some() {
            return refuse(
                self,
                "authentication",
                ReasonCode::BAD_AUTHENTICATION_METHOD,
            );
        }
        // The will's topic by name: a predefined alias is looked up; a
        // session alias means nothing before the session exists.
        let will = match c.will {
            None => None,
            Some(w) => {
                let topic = match w.topic {
                    Topic::Name(name) => name,
                    Topic::PredefinedAlias(id) => match self.predefined_by_id.get(&id) {
                        Some(name) => name.to_string(),
                        None => {
                            return refuse(
                                self,
                                "unknown predefined will topic",
                                ReasonCode::TOPIC_NAME_INVALID,
                            );
                        }
                    },
                    Topic::SessionAlias(_) => {
                        return refuse(
                            self,
                            "a session alias as will topic",
                            ReasonCode::PROTOCOL_ERROR,
                        );
                    }
                };
                Some((
                    proto::WillTopic {
                        qos: v1_qos(w.qos),
                        retain: w.retain,
                        topic,
                    },
                    w.payload,
                ))
            }
        };
        if c.client_id.len() > self.cfg.max_client_id_len {
            return refuse(self, "client id too long", ReasonCode::CLIENT_ID_NOT_VALID);
        }
        let (client_id, assigned_client_id) = if c.client_id.is_empty() {
            let id = self.assign_client_id();
            (id.clone(), id)
        } else {
            (c.client_id, String::new())
        };
        let session_present = !c.clean_start && self.by_client.contains_key(client_id.as_str());
        // §3.1.9: absent = 0 = the session ends with the virtual connection;
        // 0xFFFFFFFF = never. The operator's `session_expiry` bounds it.
        let asked = c.session_expiry.unwrap_or(0);
        let expiry = match (asked, self.cfg.session_expiry) {
            (u32::MAX, cap) => cap,
            (secs, Some(cap)) => Some(Duration::from_secs(secs.into()).min(cap)),
            (secs, None) => Some(Duration::from_secs(secs.into())),
        };
        let granted = expiry.map_or(u32::MAX, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        self.v2_connecting = Some((
            peer.clone(),
            V2Link {
                connect_id: c.packet_id,
                session_present,
                assigned_client_id,
                max_packet_size: c.max_packet_size,
                ping_id: 0,
                subscribing: None,
                allow_server_suggested: c.allow_server_suggested,
                default_awake_messages: c.default_awake_messages.unwrap_or(0),
                sleep_id: 0,
                no_retained: Vec::new(),
                no_local: Vec::new(),
                retain_as_published: Vec::new(),
                connack_session_expiry: (c.allow_server_suggested && granted != asked)
                    .then_some(granted),
            },
        ));
        let connect = Packet::Connect {
            will: will.is_some(),
            clean_session: c.clean_start,
            protocol_id: proto::PROTOCOL_ID_V1_2,
            duration: c.keep_alive,
            client_id: client_id.clone(),
        };
        match will {
            None => self.handle_packet(now, peer.clone(), connect),
            // The will rides inside the 2.0 CONNECT: the engine's 1.2 will
            // handshake is played out here, its requests never sent.
            Some((topic, payload)) => {
                if self.handshake_step(now, &peer, connect, Packet::WillTopicReq)
                    && self.handshake_step(
                        now,
                        &peer,
                        Packet::WillTopic(Some(topic)),
                        Packet::WillMsgReq,
                    )
                {
                    self.handle_packet(now, peer.clone(), Packet::WillMsg { payload });
                }
            }
        }
        // The session the CONNECT made (if it was accepted) is 2.0 from now
        // on, kept after its virtual connection as the expiry says. A refused
        // CONNECT leaves any other session at this address as it was.
        if let Some((_, link)) = self.v2_connecting.take()
            && let Some(sid) = self.by_peer.get(&peer).copied()
            && let Some(s) = self.sessions.get_mut(&sid)
            && *s.client_id == *client_id
        {
            s.v2 = Some(Box::new(link));
            s.clean_session = asked == 0;
            s.expiry = expiry;
        }
    }

    /// SLEEPREQ (§3.15): the engine's 1.2 sleep (DISCONNECT with a
    /// duration), answered with SLEEPRESP instead of its DISCONNECT. Also
    /// while asleep: the sleep timer restarts [3.15.5-7]. Sleep Duration 0
    /// is a protocol error (§3.15). The engine counts a sleep in 16-bit
    /// seconds: a longer one is granted as 65535 s, which the SLEEPRESP says
    /// when the device allowed server-suggested values [3.16.2.1-3].
    fn v2_sleep(&mut self, now: Instant, peer: Peer, packet_id: u16, duration: u32) {
        let answer = |duration, reason| v2::Packet::SleepResp {
            packet_id,
            duration,
            reason: Some(reason),
        };
        if duration == 0 {
            debug!(%peer, "SLEEPREQ with a Sleep Duration of 0");
            self.stats.drop(DropReason::OutOfState);
            return self.transmit_v2(peer, answer(None, ReasonCode::PROTOCOL_ERROR));
        }
        let granted = u16::try_from(duration).unwrap_or(u16::MAX);
        let Some(link) = self.v2_link_mut(&peer) else {
            return;
        };
        link.sleep_id = packet_id;
        let suggest = link.allow_server_suggested && u32::from(granted) != duration;
        let answers = self.capture_engine(
            now,
            &peer,
            Packet::Disconnect {
                duration: Some(granted),
            },
        );
        let asleep = answers
            .iter()
            .any(|p| matches!(p, Packet::Disconnect { duration: None }))
            && self.sleeping_client_id(&peer).is_some();
        let packet = if asleep {
            answer(suggest.then_some(u32::from(granted)), ReasonCode::SUCCESS)
        } else {
            answer(None, ReasonCode::PROTOCOL_ERROR)
        };
        self.transmit_v2(peer, packet);
    }

    /// The client id of the 2.0 device at `peer` when it is asleep or awake
    /// collecting its buffered messages.
    fn sleeping_client_id(&self, peer: &Peer) -> Option<String> {
        let s = self.sessions.get(self.by_peer.get(peer)?)?;
        matches!(
            s.state,
            crate::session::ClientState::Asleep | crate::session::ClientState::Awake
        )
        .then(|| s.client_id.to_string())
    }

    /// PUBLISH: an alias is the engine's topic id; a full name is first
    /// registered for the device, as its 1.2 REGISTER would be.
    fn v2_publish(&mut self, now: Instant, peer: Peer, p: v2::Publish) {
        let (qos, msg_id, dup) = match p.delivery {
            Delivery::AtMostOnce => (QoS::AtMostOnce, 0, false),
            Delivery::AtLeastOnce { packet_id } => (QoS::AtLeastOnce, packet_id, false),
            Delivery::ExactlyOnce { packet_id, dup } => (QoS::ExactlyOnce, packet_id, dup),
        };
        let topic = match p.topic {
            Topic::SessionAlias(id) => TopicRef::Id(id),
            Topic::PredefinedAlias(id) => TopicRef::Predefined(id),
            Topic::Name(topic_name) => {
                let answers = self.capture_engine(
                    now,
                    &peer,
                    Packet::Register {
                        topic_id: 0,
                        msg_id,
                        topic_name,
                    },
                );
                match answers.as_slice() {
                    [
                        Packet::RegAck {
                            topic_id,
                            return_code: ReturnCode::Accepted,
                            ..
                        },
                    ] => TopicRef::Id(*topic_id),
                    other => {
                        // Refused (topic name invalid, ACL, table full) or
                        // no session: the PUBLISH gets the REGACK's verdict.
                        let code = match other {
                            [Packet::RegAck { return_code, .. }] => *return_code,
                            _ => ReturnCode::NotSupported,
                        };
                        debug!(%peer, ?code, "a 2.0 PUBLISH to a topic name was refused");
                        if qos != QoS::AtMostOnce && !other.is_empty() {
                            self.transmit_v2(
                                peer,
                                v2::Packet::PubAck(v2::Ack {
                                    packet_id: msg_id,
                                    reason: Some(reason_for(code)),
                                }),
                            );
                        }
                        return;
                    }
                }
            }
        };
        // Routed now (unless parked for upstream room): the router skips
        // this device's own No Local subscriptions.
        self.v2_publisher = self.by_peer.get(&peer).copied();
        self.handle_packet(
            now,
            peer,
            Packet::Publish {
                dup,
                qos,
                retain: p.retain,
                topic,
                msg_id,
                payload: p.payload,
            },
        );
        self.v2_publisher = None;
    }

    /// The RETAIN flag of a live message (not the retained answer to a new
    /// subscription) for device `sid`: for a 2.0 device, the flag it was
    /// published with when one of its subscriptions matching `topic` has
    /// Retain As Published, else 0 (§3.7.2.4, MQTT 5's rule); for a 1.2
    /// device, `default` (the engine's 1.2 rule).
    pub(crate) fn live_retain_flag(
        &self,
        sid: crate::session::SessionId,
        topic: &str,
        published_retained: bool,
        default: bool,
    ) -> bool {
        let Some(s) = self.sessions.get(&sid) else {
            return default;
        };
        let Some(link) = s.v2.as_ref() else {
            return default;
        };
        published_retained
            && s.subscriptions.keys().any(|f| {
                crate::topic::matches(f, topic)
                    && link.retain_as_published.iter().any(|r| **r == **f)
            })
    }

    /// Whether every subscription of `sid` that `topic` matches has No
    /// Local: then its own publication on `topic` is not delivered to it.
    pub(crate) fn no_local_for(&self, sid: crate::session::SessionId, topic: &str) -> bool {
        let Some(s) = self.sessions.get(&sid) else {
            return false;
        };
        let Some(link) = s.v2.as_ref().filter(|l| !l.no_local.is_empty()) else {
            return false;
        };
        s.subscriptions
            .keys()
            .filter(|f| crate::topic::matches(f, topic))
            .all(|f| link.no_local.iter().any(|n| **n == **f))
    }

    /// One step of the engine's will handshake for a 2.0 CONNECT: hands it
    /// `packet` and expects `request` back. Anything else it answers (a
    /// refusing CONNACK) goes to the device in 2.0 form; false ends the
    /// handshake.
    fn handshake_step(
        &mut self,
        now: Instant,
        peer: &Peer,
        packet: Packet,
        request: Packet,
    ) -> bool {
        let answers = self.capture_engine(now, peer, packet);
        let mut asked = false;
        for answer in answers {
            if answer == request {
                asked = true;
            } else if let Some(link) = self.v2_link_for(peer) {
                self.send_as_v2(&link, peer.clone(), answer);
            }
        }
        asked
    }

    /// The packet id of the device's request the gateway has not answered
    /// yet: a PUBLISH parked for upstream room or waiting for the broker's
    /// acknowledgement (per-device mode), a SUBSCRIBE waiting for the
    /// broker's SUBACK. Every other request is answered at once.
    fn outstanding_request(&self, sid: crate::session::SessionId) -> Option<u16> {
        let s = self.sessions.get(&sid)?;
        s.v2.as_ref()?;
        s.parked
            .as_ref()
            .map(|p| p.msg_id)
            .or(s.awaiting_upstream_ack)
            .or_else(|| self.held_suback_for(sid))
    }

    /// A SUBSCRIBE/UNSUBSCRIBE topic as the engine takes it: a session
    /// alias is its topic name (`None`: an alias the device was never given).
    fn v1_filter(&self, peer: &Peer, topic: Topic) -> Option<proto::SubscribeTopic> {
        Some(match topic {
            Topic::Name(filter) => proto::SubscribeTopic::Name(filter),
            Topic::PredefinedAlias(id) => proto::SubscribeTopic::Predefined(id),
            Topic::SessionAlias(id) => {
                let sid = self.by_peer.get(peer)?;
                let name = self.sessions.get(sid)?.topics.name(id)?;
                proto::SubscribeTopic::Name(name.to_string())
            }
        })
    }

    /// Runs one 1.2 packet through the engine and returns, instead of
    /// sending them, the packets it answers `peer` with.
    fn capture_engine(&mut self, now: Instant, peer: &Peer, packet: Packet) -> Vec<Packet> {
        self.v2_capture = Some((peer.clone(), Vec::new()));
        self.handle_packet(now, peer.clone(), packet);
        self.v2_capture
            .take()
            .map(|(_, got)| got)
            .unwrap_or_default()
    }

    /// A client id no session uses (§3.2.11: new, at most 36 characters).
    fn assign_client_id(&mut self) -> String {
        loop {
            self.v2_next_assigned = self.v2_next_assigned.wrapping_add(1);
            let id = format!("{ASSIGNED_PREFIX}{:016x}", self.v2_next_assigned);
            if !self.by_client.contains_key(id.as_str()) {
                return id;
            }
        }
    }

    fn refuse_v2_connect(&mut self, peer: Peer, packet_id: u16, reason: ReasonCode) {
        self.transmit_v2(
            peer,
            v2::Packet::ConnAck(Box::new(v2::ConnAck {
                session_present: false,
                packet_id,
                reason,
                session_expiry: None,
                server_keep_alive: None,
                auth: None,
                assigned_client_id: String::new(),
            })),
        );
    }

    fn disconnect_v2(&mut self, peer: Peer, reason: ReasonCode) {
        self.transmit_v2(
            peer,
            v2::Packet::Disconnect(v2::Disconnect {
                packet_id: None,
                reason: Some(reason),
                session_expiry: None,
                reason_string: String::new(),
            }),
        );
    }

    /// The 2.0 link of the device at `peer`: connecting now, or its session's.
    pub(crate) fn v2_link_for(&self, peer: &Peer) -> Option<V2Link> {
        if let Some((p, link)) = &self.v2_connecting
            && p == peer
        {
            return Some(link.clone());
        }
        let sid = self.by_peer.get(peer)?;
        self.sessions.get(sid)?.v2.as_deref().cloned()
    }

    fn v2_link_mut(&mut self, peer: &Peer) -> Option<&mut V2Link> {
        let sid = self.by_peer.get(peer)?;
        self.sessions.get_mut(sid)?.v2.as_deref_mut()
    }

    /// Sends a 2.0 packet, unless it is over the device's Maximum Packet
    /// Size: then it is dropped as if delivered [MQTT-SN-3.1.7-3].
    pub(crate) fn transmit_v2(&mut self, to: Peer, packet: v2::Packet) {
        let limit = self.v2_link_for(&to).map_or(0, |l| l.max_packet_size);
        if limit != 0 && v2::encoded_len(&packet).is_ok_and(|n| n > usize::from(limit)) {
            debug!(peer = %to, limit, "dropping a packet over the device's maximum packet size");
            self.stats.drop(DropReason::TooLarge);
            return;
        }
        self.stats.packets_out += 1;
        self.push_output(Output::TransmitV2 { to, packet });
    }

    /// What the engine sends a 2.0 device, in its 2.0 form (`None`: a
    /// packet the slice has no 2.0 form for, dropped and counted).
    pub(crate) fn send_as_v2(&mut self, link: &V2Link, to: Peer, packet: Packet) {
        let ack = |packet_id, code: ReturnCode| v2::Ack {
            packet_id,
            reason: (code != ReturnCode::Accepted).then(|| reason_for(code)),
        };
        let v2 = match packet {
            Packet::ConnAck { return_code } => {
                let ok = return_code == ReturnCode::Accepted;
                v2::Packet::ConnAck(Box::new(v2::ConnAck {
                    session_present: ok && link.session_present,
                    packet_id: link.connect_id,
                    reason: connack_reason(return_code),
                    session_expiry: if ok {
                        link.connack_session_expiry
                    } else {
                        None
                    },
                    server_keep_alive: None,
                    auth: None,
                    assigned_client_id: if ok {
                        link.assigned_client_id.clone()
                    } else {
                        String::new()
                    },
                }))
            }
            Packet::RegAck {
                topic_id,
                msg_id,
                return_code,
            } => {
                let ok = return_code == ReturnCode::Accepted;
                v2::Packet::RegAck(v2::RegAck {
                    alias_kind: v2::AliasKind::Session,
                    packet_id: msg_id,
                    alias: ok.then_some(topic_id),
                    reason: Some(if ok {
                        ReasonCode::SUCCESS
                    } else {
                        reason_for(return_code)
                    }),
                })
            }
            Packet::PubAck {
                msg_id,
                return_code,
                ..
            } => v2::Packet::PubAck(ack(msg_id, return_code)),
            Packet::PubRec { msg_id } => v2::Packet::PubRec(ack(msg_id, ReturnCode::Accepted)),
            Packet::PubRel { msg_id } => v2::Packet::PubRel(ack(msg_id, ReturnCode::Accepted)),
            Packet::PubComp { msg_id } => v2::Packet::PubComp(ack(msg_id, ReturnCode::Accepted)),
            Packet::Register {
                topic_id,
                msg_id,
                topic_name,
            } => v2::Packet::Register(v2::Register {
                packet_id: msg_id,
                alias: Some(topic_id),
                topic_name,
            }),
            publish @ Packet::Publish { .. } => match publish_to_v2(&publish) {
                Some(p) => p,
                None => {
                    debug!(peer = %to, "a delivery with no 2.0 topic form; dropped");
                    self.stats.drop(DropReason::RefusedByDevice);
                    return;
                }
            },
            Packet::SubAck {
                qos,
                topic_id,
                msg_id,
                return_code,
            } => {
                let one_topic = link.subscribing == Some((msg_id, true));
                let ok = return_code == ReturnCode::Accepted;
                let alias = (ok && one_topic && topic_id != 0).then_some(topic_id);
                v2::Packet::SubAck(v2::SubAck {
                    alias_kind: if alias.is_some() {
                        v2::AliasKind::Session
                    } else {
                        v2::AliasKind::Predefined
                    },
                    packet_id: msg_id,
                    alias,
                    reason: Some(if ok {
                        ReasonCode(qos.bits().min(2))
                    } else {
                        reason_for(return_code)
                    }),
                })
            }
            Packet::UnsubAck { msg_id } => v2::Packet::UnsubAck(v2::Ack {
                packet_id: msg_id,
                reason: None,
            }),
            // The end of a wake (the device is asleep again): how many
            // buffered messages are left for the next one (§3.12.3: 1–254, or
            // 0xFF for more).
            Packet::PingResp => v2::Packet::PingResp {
                packet_id: link.ping_id,
                messages_remaining: self.by_peer.get(&to).and_then(|sid| {
                    let s = self.sessions.get(sid)?;
                    (s.state == crate::session::ClientState::Asleep)
                        .then(|| u8::try_from(s.queue.len().min(255)).unwrap_or(u8::MAX))
                }),
            },
            Packet::Disconnect { .. } => v2::Packet::Disconnect(v2::Disconnect {
                packet_id: None,
                reason: Some(ReasonCode::UNSPECIFIED_ERROR),
                session_expiry: None,
                reason_string: String::new(),
            }),
            other => {
                debug!(peer = %to, msg = %other.msg_type(), "no 2.0 form for this packet yet; dropped");
                self.stats.drop(DropReason::OutOfState);
                return;
            }
        };
        self.transmit_v2(to, v2);
    }
}

/// Whether a delivery `packet` is over a 2.0 device's Maximum Packet Size:
/// delivery then drops it as if delivered [MQTT-SN-3.1.7-3], before
/// anything waits for its acknowledgement.
pub(crate) fn over_max_packet_size(link: &V2Link, packet: &Packet) -> bool {
    link.max_packet_size != 0
        && publish_to_v2(packet)
            .and_then(|p| v2::encoded_len(&p).ok())
            .is_some_and(|n| n > usize::from(link.max_packet_size))
}

/// The packet id of a request from the device (§4.9's list; QoS 0 and
/// PUBWOS are not requests).
fn request_id(packet: &v2::Packet) -> Option<u16> {
    use v2::Packet as P;
    match packet {
        P::Publish(p) => p.delivery.packet_id(),
        P::PubRel(a) => Some(a.packet_id),
        P::Register(r) => Some(r.packet_id),
        P::Subscribe(s) => Some(s.packet_id),
        P::Unsubscribe(u) => Some(u.packet_id),
        P::PingReq { packet_id } | P::SleepReq { packet_id, .. } => Some(*packet_id),
        P::Auth(a) => Some(a.packet_id),
        _ => None,
    }
}

/// A delivery's 1.2 PUBLISH in its 2.0 form: a topic id is a session
/// alias, a short (two-character) name is sent in full.
fn publish_to_v2(packet: &Packet) -> Option<v2::Packet> {
    let Packet::Publish {
        dup,
        qos,
        retain,
        topic,
        msg_id,
        payload,
    } = packet
    else {
        return None;
    };
    let delivery = match qos {
        QoS::AtMostOnce => Delivery::AtMostOnce,
        QoS::AtLeastOnce => Delivery::AtLeastOnce { packet_id: *msg_id },
        QoS::ExactlyOnce => Delivery::ExactlyOnce {
            packet_id: *msg_id,
            dup: *dup,
        },
        QoS::MinusOne => return None,
    };
    let topic = match topic {
        TopicRef::Id(id) => Topic::SessionAlias(*id),
        TopicRef::Predefined(id) => Topic::PredefinedAlias(*id),
        TopicRef::Short(name) => Topic::Name(std::str::from_utf8(name).ok()?.to_owned()),
    };
    Some(v2::Packet::Publish(v2::Publish {
        delivery,
        retain: *retain,
        topic,
        payload: payload.clone(),
    }))
}

fn v1_qos(qos: v2::QoS) -> QoS {
    match qos {
        v2::QoS::AtMostOnce => QoS::AtMostOnce,
        v2::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v2::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// A 1.2 CONNECT, for charging a 2.0 CONNECT to its source's bucket.
fn v1_connect_shape() -> Packet {
    Packet::Connect {
        will: false,
        clean_session: true,
        protocol_id: proto::PROTOCOL_ID_V1_2,
        duration: 0,
        client_id: String::new(),
    }
}

/// The 1.2 packet whose rate-limit budget a 2.0 packet takes: what creates
/// state or needs no session is charged to the source address.
fn budget_shape(packet: &v2::Packet) -> Option<Packet> {
    match packet {
        v2::Packet::Connect(_) => Some(v1_connect_shape()),
        v2::Packet::PubWos(_) => Some(Packet::Publish {
            dup: false,
            qos: QoS::MinusOne,
            retain: false,
            topic: TopicRef::Predefined(0),
            msg_id: 0,
            payload: bytes::Bytes::new(),
        }),
        _ => Some(Packet::PingReq { client_id: None }),
    }
}

/// A 1.2 refusal as the 2.0 reason code that says the same.
fn reason_for(code: ReturnCode) -> ReasonCode {
    match code {
        ReturnCode::Accepted => ReasonCode::SUCCESS,
        ReturnCode::Congestion => ReasonCode::CONGESTION,
        ReturnCode::InvalidTopicId => ReasonCode::UNKNOWN_TOPIC_ALIAS,
        ReturnCode::NotSupported | ReturnCode::Other(_) => ReasonCode::NOT_AUTHORIZED,
    }
}

/// CONNACK: the engine refuses with Congestion at `max_clients` and with
/// Not Supported for the admission rules.
fn connack_reason(code: ReturnCode) -> ReasonCode {
    match code {
        ReturnCode::Accepted => ReasonCode::SUCCESS,
        ReturnCode::Congestion => ReasonCode::SERVER_BUSY,
        other => reason_for(other),
    }
}

/// A 2.0 acknowledgement's verdict for the engine's 1.2 bookkeeping
/// (0xF0 makes it register the topic again, as 1.2's "invalid topic id").
fn v1_code(reason: ReasonCode) -> ReturnCode {
    match reason {
        r if r.is_success() => ReturnCode::Accepted,
        ReasonCode::UNKNOWN_TOPIC_ALIAS => ReturnCode::InvalidTopicId,
        ReasonCode::CONGESTION => ReturnCode::Congestion,
        _ => ReturnCode::NotSupported,
    }
}
