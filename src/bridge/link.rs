//! rumqttc behind one small surface, for MQTT 5 (`rumqttc::v5`) and MQTT
//! 3.1.1 (`rumqttc`) alike, so the bridge task has a single code path.
//!
//! This module owns: building the client options (identity, credentials,
//! keep-alive, session, TLS, limits), translating rumqttc's events into
//! [`LinkEvent`], the submitting side ([`LinkClient`]) and the replay hook
//! ([`LinkLoop::replace_pending`]) the outbox uses after a connection loss.
//! Nothing else in sngate names a rumqttc type.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::{TlsConfiguration, Transport};

use super::outbox::{OutMessage, Replay};
use crate::config::UpstreamConfig;

/// Session expiry asked of an MQTT 5 broker when `clean_session` is false:
/// how long the broker keeps our subscriptions and queued messages while
/// the gateway is away.
pub const SESSION_EXPIRY_SECS: u32 = 24 * 3600;

/// Largest MQTT packet accepted from or sent to the broker, in bytes.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Most QoS 1/2 publishes rumqttc keeps unacknowledged (its packet-id table
/// is this big; a broker's Receive Maximum can lower it).
pub const MAX_INFLIGHT: u16 = 100;

/// Capacity of rumqttc's request channel. The bridge counts what it put in
/// and never exceeds it.
pub const REQUEST_CHANNEL: usize = 512;

/// What happened on the link, reduced to what the bridge needs.
#[derive(Debug)]
pub enum LinkEvent {
    /// The broker accepted the connection.
    ConnAck {
        /// The broker still had our session.
        session_present: bool,
    },
    /// A message from the broker.
    Publish {
        /// Remote topic (invalid UTF-8 is reported as `None`).
        topic: Option<String>,
        /// Payload.
        payload: Bytes,
        /// QoS 0..=2.
        qos: u8,
        /// Retain flag.
        retain: bool,
        /// Subscription identifiers the broker attached (MQTT 5; empty otherwise).
        subscription_ids: Vec<usize>,
    },
    /// PUBACK; `ok` unless the reason code is an error.
    PubAck { pkid: u16, ok: bool },
    /// PUBREC; `ok` unless the reason code is an error.
    PubRec { pkid: u16, ok: bool },
    /// PUBCOMP.
    PubComp { pkid: u16 },
    /// SUBACK with how many filters were refused.
    SubAck { refused: usize },
    /// rumqttc wrote a PUBLISH with this packet id (0 for QoS 0).
    SentPublish(u16),
    /// rumqttc took a PUBLISH from the channel but holds it back: its packet
    /// id is still unacknowledged.
    HeldPublish(u16),
    /// rumqttc wrote a PUBREL.
    SentPubRel(u16),
    /// rumqttc took a SUBSCRIBE or UNSUBSCRIBE from the channel.
    SentControl,
    /// rumqttc wrote a DISCONNECT.
    SentDisconnect,
    /// Anything else (pings, acks we send).
    Other,
}

/// The submitting half: hands requests to rumqttc's channel, never blocks.
pub enum LinkClient {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop half: must be polled for anything to happen.
pub enum LinkLoop {
    /// MQTT 3.1.1.
    V4(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Builds the client and event loop for `cfg`, with `tls` (already built)
/// when TLS is configured.
pub fn build(
    cfg: &UpstreamConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (LinkClient, LinkLoop) {
    let transport = tls.map(|c| Transport::tls_with_config(TlsConfiguration::Rustls(c)));
    let keep_alive = Duration::from_secs(u64::from(cfg.keep_alive_secs));
    let creds = cfg
        .username
        .as_ref()
        .map(|u| (u.clone(), cfg.password.clone().unwrap_or_default()));
    if cfg.protocol_version == 4 {
        let mut o = rumqttc::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
        o.set_keep_alive(keep_alive)
            .set_clean_session(cfg.clean_session)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_inflight(MAX_INFLIGHT)
            .set_request_channel_capacity(REQUEST_CHANNEL)
            .set_pending_throttle(Duration::ZERO);
        if let Some((u, p)) = creds {
            o.set_credentials(u, p);
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        let (c, mut l) = rumqttc::AsyncClient::new(o, REQUEST_CHANNEL);
        l.set_network_options(network_options());
        (LinkClient::V4(c), LinkLoop::V4(Box::new(l)))
    } else {
        let mut o = rumqttc::v5::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
        o.set_keep_alive(keep_alive)
            .set_clean_start(cfg.clean_session)
            .set_max_packet_size(Some(MAX_PACKET_BYTES as u32))
            .set_outgoing_inflight_upper_limit(MAX_INFLIGHT)
            .set_request_channel_capacity(REQUEST_CHANNEL)
            .set_pending_throttle(Duration::ZERO);
        if !cfg.clean_session {
            o.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
        }
        o.set_network_options(network_options());
        if let Some((u, p)) = creds {
            o.set_credentials(u, p);
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        let (c, l) = rumqttc::v5::AsyncClient::new(o, REQUEST_CHANNEL);
        (LinkClient::V5(c), LinkLoop::V5(Box::new(l)))
    }
}

/// TCP_NODELAY on: the bridge forwards many small messages and rumqttc
/// already batches its writes, so Nagle's algorithm would only add delay
/// (measured: p99 25 ms at 2,000 msg/s with it, see docs/performance.md).
fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl LinkClient {
    /// Queues a PUBLISH; false if rumqttc's channel refused it.
    pub fn try_publish(&self, m: &OutMessage) -> bool {
        match self {
            LinkClient::V4(c) => c
                .try_publish(m.topic.as_str(), qos4(m.qos), m.retain, m.payload.to_vec())
                .is_ok(),
            LinkClient::V5(c) => c
                .try_publish(m.topic.as_str(), qos5(m.qos), m.retain, m.payload.clone())
                .is_ok(),
        }
    }

    /// Queues one SUBSCRIBE for one remote filter. On MQTT 5 it carries No
    /// Local, Retain As Published and the subscription identifier `id`, which
    /// the broker echoes in every PUBLISH sent for this subscription (the
    /// bridge uses it to pass one copy of a message matched by overlapping
    /// subscriptions). MQTT 3.1.1 has no identifiers: `id` is unused.
    pub fn try_subscribe(&self, filter: &str, qos: u8, id: usize) -> bool {
        match self {
            LinkClient::V4(c) => c.try_subscribe(filter, qos4(qos)).is_ok(),
            LinkClient::V5(c) => {
                let mut f = m5::Filter::new(filter.to_owned(), qos5(qos));
                f.nolocal = true;
                f.preserve_retain = true;
                let properties = m5::SubscribeProperties {
                    id: Some(id),
                    user_properties: Vec::new(),
                };
                c.try_subscribe_many_with_properties([f], properties)
                    .is_ok()
            }
        }
    }

    /// Queues an UNSUBSCRIBE; false if the channel refused it.
    pub fn try_unsubscribe(&self, filter: &str) -> bool {
        match self {
            LinkClient::V4(c) => c.try_unsubscribe(filter).is_ok(),
            LinkClient::V5(c) => c.try_unsubscribe(filter).is_ok(),
        }
    }

    /// Queues a DISCONNECT; false if the channel refused it.
    pub fn try_disconnect(&self) -> bool {
        match self {
            LinkClient::V4(c) => c.try_disconnect().is_ok(),
            LinkClient::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

impl LinkLoop {
    /// Drives the connection: connects when needed, then yields the next
    /// event. An error means the connection is gone (the next call
    /// reconnects at once, so the caller waits first).
    pub async fn poll(&mut self) -> Result<LinkEvent, String> {
        match self {
            LinkLoop::V4(l) => l.poll().await.map(from_v4).map_err(|e| e.to_string()),
            LinkLoop::V5(l) => l.poll().await.map(from_v5).map_err(|e| e.to_string()),
        }
    }

    /// Events rumqttc had buffered when the connection failed (acks read in
    /// the same batch, a publish written just before the write failed).
    /// They happened; the caller handles them before the loss itself.
    pub fn take_buffered(&mut self) -> Vec<LinkEvent> {
        match self {
            LinkLoop::V4(l) => l.state.events.drain(..).map(from_v4).collect(),
            LinkLoop::V5(l) => l.state.events.drain(..).map(from_v5).collect(),
        }
    }

    /// After a connection loss: replaces rumqttc's pending list (unacked
    /// publishes in packet-id order plus whatever sat in its channel) with
    /// exactly `replays`, in the outbox's order, and clears a held-back
    /// (collided) publish, which the outbox has queued again.
    pub fn replace_pending(&mut self, replays: &[Replay]) {
        match self {
            LinkLoop::V4(l) => {
                l.pending.clear();
                l.state.collision = None;
                l.pending.extend(replays.iter().map(|r| match r {
                    Replay::Publish { pkid, msg } => rumqttc::Request::Publish(rumqttc::Publish {
                        dup: true,
                        qos: qos4(msg.qos),
                        retain: msg.retain,
                        topic: msg.topic.clone(),
                        pkid: *pkid,
                        payload: msg.payload.clone(),
                    }),
                    Replay::PubRel(pkid) => rumqttc::Request::PubRel(rumqttc::PubRel::new(*pkid)),
                }));
            }
            LinkLoop::V5(l) => {
                l.pending.clear();
                l.state.collision = None;
                l.pending.extend(replays.iter().map(|r| match r {
                    Replay::Publish { pkid, msg } => rumqttc::v5::Request::Publish(m5::Publish {
                        dup: true,
                        qos: qos5(msg.qos),
                        retain: msg.retain,
                        topic: Bytes::from(msg.topic.clone()),
                        pkid: *pkid,
                        payload: msg.payload.clone(),
                        properties: None,
                    }),
                    Replay::PubRel(pkid) => {
                        rumqttc::v5::Request::PubRel(m5::PubRel::new(*pkid, None))
                    }
                }));
            }
        }
    }
}

fn from_v4(ev: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Outgoing, Packet};
    match ev {
        Event::Incoming(Packet::ConnAck(c)) => LinkEvent::ConnAck {
            session_present: c.session_present,
        },
        Event::Incoming(Packet::Publish(p)) => LinkEvent::Publish {
            topic: Some(p.topic),
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            subscription_ids: Vec::new(),
        },
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            ok: true,
        },
        Event::Incoming(Packet::PubRec(a)) => LinkEvent::PubRec {
            pkid: a.pkid,
            ok: true,
        },
        Event::Incoming(Packet::PubComp(a)) => LinkEvent::PubComp { pkid: a.pkid },
        Event::Incoming(Packet::SubAck(s)) => LinkEvent::SubAck {
            refused: s
                .return_codes
                .iter()
                .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                .count(),
        },
        Event::Outgoing(Outgoing::Publish(p)) => LinkEvent::SentPublish(p),
        Event::Outgoing(Outgoing::AwaitAck(p)) => LinkEvent::HeldPublish(p),
        Event::Outgoing(Outgoing::PubRel(p)) => LinkEvent::SentPubRel(p),
        Event::Outgoing(Outgoing::Subscribe(_) | Outgoing::Unsubscribe(_)) => {
            LinkEvent::SentControl
        }
        Event::Outgoing(Outgoing::Disconnect) => LinkEvent::SentDisconnect,
        _ => LinkEvent::Other,
    }
}

fn from_v5(ev: rumqttc::v5::Event) -> LinkEvent {
    use rumqttc::Outgoing;
    use rumqttc::v5::{Event, Incoming};
    match ev {
        Event::Incoming(Incoming::ConnAck(c)) => LinkEvent::ConnAck {
            session_present: c.session_present,
        },
        Event::Incoming(Incoming::Publish(p)) => LinkEvent::Publish {
            topic: String::from_utf8(p.topic.to_vec()).ok(),
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            subscription_ids: p
                .properties
                .map(|props| props.subscription_identifiers)
                .unwrap_or_default(),
        },
        Event::Incoming(Incoming::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            ok: matches!(
                a.reason,
                m5::PubAckReason::Success | m5::PubAckReason::NoMatchingSubscribers
            ),
        },
        Event::Incoming(Incoming::PubRec(a)) => LinkEvent::PubRec {
            pkid: a.pkid,
            ok: matches!(
                a.reason,
                m5::PubRecReason::Success | m5::PubRecReason::NoMatchingSubscribers
            ),
        },
        Event::Incoming(Incoming::PubComp(a)) => LinkEvent::PubComp { pkid: a.pkid },
        Event::Incoming(Incoming::SubAck(s)) => LinkEvent::SubAck {
            refused: s
                .return_codes
                .iter()
                .filter(|c| !matches!(c, m5::SubscribeReasonCode::Success(_)))
                .count(),
        },
        Event::Outgoing(Outgoing::Publish(p)) => LinkEvent::SentPublish(p),
        Event::Outgoing(Outgoing::AwaitAck(p)) => LinkEvent::HeldPublish(p),
        Event::Outgoing(Outgoing::PubRel(p)) => LinkEvent::SentPubRel(p),
        Event::Outgoing(Outgoing::Subscribe(_) | Outgoing::Unsubscribe(_)) => {
            LinkEvent::SentControl
        }
        Event::Outgoing(Outgoing::Disconnect) => LinkEvent::SentDisconnect,
        _ => LinkEvent::Other,
    }
}
