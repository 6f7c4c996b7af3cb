//! rumqttc behind one small surface, for MQTT 5 (`rumqttc::v5`) and MQTT
//! 3.1.1 (`rumqttc`) alike, so the bridge task has a single code path.
//!
//! This module owns: building the client options from an [`Identity`]
//! (client id, credentials, keep-alive, session, will, TLS, window) — the
//! one place for the shared session and every device session alike —,
//! telling a refusing CONNACK from a transient failure ([`LinkError`]),
//! tagging publishes with their origin (MQTT 5), translating rumqttc's events into
//! [`LinkEvent`], the submitting side ([`LinkClient`]) and the replay hook
//! ([`LinkLoop::replace_pending`]) the outbox uses after a connection loss.
//! Nothing else in sngate names a rumqttc type.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::{TlsConfiguration, Transport};

mod events;

pub use super::machine::LinkEvent;
use super::outbox::{OutMessage, Replay};
use crate::config::UpstreamConfig;
use events::{from_v4, from_v5};

/// Session expiry asked of an MQTT 5 broker when `clean_session` is false:
/// how long the broker keeps our subscriptions and queued messages while
/// the gateway (or, per device, the device) is away.
pub const SESSION_EXPIRY_SECS: u32 = 24 * 3600;

/// The default MQTT 5 Will Delay Interval (`[upstream] will_delay_secs`) of
/// every will the gateway gives the broker (issue 23, "a blip is not a
/// death"): when the connection breaks, the
/// broker waits this long before publishing the will, and publishes none
/// if the session is resumed meanwhile — a gateway↔broker blip, or the
/// device's session taken over by another gateway. A session with a will
/// also asks for at least this session expiry (so the session outlasts the
/// delay) and, once accepted, reconnects with clean start off (a clean
/// start would end the session and release the will at once). A device
/// really lost gets its will this much later than its connection dropped.
pub const WILL_DELAY_SECS: u32 = 30;

/// Largest MQTT packet accepted from or sent to the broker, in bytes.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// The MQTT 5 user property every PUBLISH (and will) of a per-device bridge
/// carries, with the shared session's client id as its value, so that the
/// gateway's sessions recognise the broker's copies of their own messages.
pub const ORIGIN_PROPERTY: &str = "sngate-origin";

/// How many requests a session may have in rumqttc's channel, and how many
/// QoS 1/2 publishes unacknowledged at once. The shared session carries
/// everything and gets a wide window; a device's session carries one
/// device's messages and is kept small, so a thousand of them fit a
/// Raspberry Pi (rumqttc allocates per-session tables of this size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Capacity of rumqttc's request channel; the session counts what it put
    /// in and never exceeds it.
    pub request_channel: usize,
    /// Most QoS 1/2 publishes unacknowledged (rumqttc's packet-id table is
    /// this big; a broker's Receive Maximum can lower it).
    pub inflight: u16,
}

impl Window {
    /// The shared session's window.
    pub const SHARED: Window = Window {
        request_channel: 512,
        inflight: 100,
    };
    /// A device session's window.
    pub const DEVICE: Window = Window {
        request_channel: 16,
        inflight: 8,
    };
}

/// A will for the broker to publish when the connection ends without
/// DISCONNECT, already mapped to its remote topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Remote topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0..=2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
}

/// Who a session is towards the broker: everything that goes into its
/// CONNECT, and how it tags what it publishes.
#[derive(Clone)]
pub struct Identity {
    /// MQTT client id.
    pub client_id: String,
    /// Clean session (MQTT 5: clean start; with false, a 24 h session expiry).
    pub clean_session: bool,
    /// Keep-alive in seconds, 0 for none (see [`build`] for the limits).
    pub keep_alive_secs: u32,
    /// The will, if any.
    pub will: Option<Will>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS, with the client certificate if any; `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// MQTT 5: the [`ORIGIN_PROPERTY`] value put on every PUBLISH and on the
    /// will (per-device mode); `None`: untagged.
    pub origin: Option<Arc<str>>,
    /// rumqttc's channel and in-flight window.
    pub window: Window,
    /// Acknowledge incoming QoS 1/2 messages only when told
    /// ([`LinkClient::try_ack`]), not on receipt: a device's own session,
    /// so the broker keeps what the device has not got (issue 23).
    pub manual_acks: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Identity")
            .field("client_id", &self.client_id)
            .field("clean_session", &self.clean_session)
            .field("keep_alive_secs", &self.keep_alive_secs)
            .field("will", &self.will.as_ref().map(|w| &w.topic))
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The shared session's identity, from `[upstream]`.
    pub fn shared(
        cfg: &UpstreamConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        origin: Option<Arc<str>>,
    ) -> Identity {
        Identity {
            client_id: cfg.effective_client_id(),
            clean_session: cfg.clean_session,
            keep_alive_secs: u32::from(cfg.keep_alive_secs),
            will: None,
            credentials: cfg
                .username
                .as_ref()
                .map(|u| (u.clone(), cfg.password.clone().unwrap_or_default())),
            tls,
            origin,
            window: Window::SHARED,
            manual_acks: false,
        }
    }
}

/// Why the broker refused a connection, when it did (a refusing CONNACK
/// that retrying will not cure: bad credentials, not authorised, a client id
/// it will not take); `None` for anything worth retrying (network errors,
/// "server unavailable", "busy", rate limits).
fn refusal(reason_code: RefusalCode) -> Option<String> {
    match reason_code {
        RefusalCode::V4(c) => {
            use rumqttc::ConnectReturnCode as C;
            match c {
                C::Success | C::ServiceUnavailable => None,
                other => Some(format!("{other:?}")),
            }
        }
        RefusalCode::V5(c) => {
            use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
            match c {
                C::Success
                | C::ServiceUnavailable
                | C::ServerUnavailable
                | C::ServerBusy
                | C::QuotaExceeded
                | C::ConnectionRateExceeded => None,
                other => Some(format!("{other:?}")),
            }
        }
    }
}

/// A CONNACK return code of either protocol version.
#[derive(Debug, Clone, Copy)]
enum RefusalCode {
    /// MQTT 3.1.1.
    V4(rumqttc::ConnectReturnCode),
    /// MQTT 5.
    V5(rumqttc::v5::mqttbytes::v5::ConnectReturnCode),
}

/// Why [`LinkLoop::poll`] failed.
#[derive(Debug, Clone)]
pub enum LinkError {
    /// The broker answered CONNECT with a refusal that retrying will not cure.
    Refused(String),
    /// MQTT 5: the broker closed the connection with DISCONNECT 0x8E
    /// (session taken over): another client connected with the same client
    /// id. Retried like [`LinkError::Lost`], and named in the log.
    TakenOver,
    /// Anything else: the connection is gone, try again later.
    Lost(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Refused(r) => write!(f, "refused by the broker: {r}"),
            LinkError::TakenOver => f.write_str(
                "session taken over by another client with the same client id (DISCONNECT 0x8E)",
            ),
            LinkError::Lost(r) => f.write_str(r),
        }
    }
}

/// What the link knows besides rumqttc's own halves.
#[derive(Debug, Clone)]
struct Tag(Option<Arc<str>>);

impl Tag {
    fn publish_properties(&self) -> Option<m5::PublishProperties> {
        self.0.as_ref().map(|o| m5::PublishProperties {
            user_properties: vec![(ORIGIN_PROPERTY.to_owned(), o.to_string())],
            ..m5::PublishProperties::default()
        })
    }
}

/// The submitting half: hands requests to rumqttc's channel, never blocks.
pub struct LinkClient {
    kind: ClientKind,
    tag: Tag,
}

enum ClientKind {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop half: must be polled for anything to happen.
pub struct LinkLoop {
    kind: LoopKind,
    tag: Tag,
    /// MQTT 5 with a will: after the first CONNACK, reconnect with clean
    /// start off (see [`WILL_DELAY_SECS`]).
    resume: bool,
}

enum LoopKind {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// rumqttc's keep-alive for `secs`: MQTT 3.1.1 takes 0 (none) and any
/// whole number of seconds up to 65,535; rumqttc's MQTT 5 client insists on
/// at least 5 s and has no "none", so 0 becomes the protocol's maximum.
fn keep_alive(protocol_version: u8, secs: u32) -> Duration {
    let secs = u64::from(secs.min(u32::from(u16::MAX)));
    match (protocol_version, secs) {
        (4, s) => Duration::from_secs(s),
        (_, 0) => Duration::from_secs(u64::from(u16::MAX)),
        (_, s) => Duration::from_secs(s.max(5)),
    }
}

/// Builds the client and event loop for the broker in `cfg` (host, port,
/// protocol version) with the identity `id`. The one place rumqttc options
/// are made, for the shared session and every device session alike.
pub fn build(cfg: &UpstreamConfig, id: &Identity) -> (LinkClient, LinkLoop) {
    let transport = id
        .tls
        .clone()
        .map(|c| Transport::tls_with_config(TlsConfiguration::Rustls(c)));
    let keep_alive = keep_alive(cfg.protocol_version, id.keep_alive_secs);
    let tag = Tag(id.origin.clone());
    let cap = id.window.request_channel;
    if cfg.protocol_version == 4 {
        let mut o = rumqttc::MqttOptions::new(&id.client_id, &cfg.host, cfg.port);
        o.set_keep_alive(keep_alive)
            .set_clean_session(id.clean_session)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_inflight(id.window.inflight)
            .set_request_channel_capacity(cap)
            .set_manual_acks(id.manual_acks)
            .set_pending_throttle(Duration::ZERO);
        if let Some((u, p)) = &id.credentials {
            o.set_credentials(u, p);
        }
        if let Some(w) = &id.will {
            o.set_last_will(rumqttc::LastWill::new(
                &w.topic,
                w.payload.to_vec(),
                qos4(w.qos),
                w.retain,
            ));
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        let (c, mut l) = rumqttc::AsyncClient::new(o, cap);
        l.set_network_options(network_options());
        shrink_v4(&mut l);
        (
            LinkClient {
                kind: ClientKind::V4(c),
                tag: tag.clone(),
            },
            LinkLoop {
                kind: LoopKind::V4(Box::new(l)),
                tag,
                resume: false,
            },
        )
    } else {
        let mut o = rumqttc::v5::MqttOptions::new(&id.client_id, &cfg.host, cfg.port);
        o.set_keep_alive(keep_alive)
            .set_clean_start(id.clean_session)
            .set_max_packet_size(Some(MAX_PACKET_BYTES as u32))
            .set_outgoing_inflight_upper_limit(id.window.inflight)
            .set_request_channel_capacity(cap)
            .set_manual_acks(id.manual_acks)
            .set_pending_throttle(Duration::ZERO);
        if !id.clean_session {
            o.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
        } else if id.will.is_some() && cfg.will_delay_secs > 0 {
            // The session must outlast the will's delay (see WILL_DELAY_SECS).
            o.set_session_expiry_interval(Some(cfg.will_delay_secs));
        }
        o.set_network_options(network_options());
        if let Some((u, p)) = &id.credentials {
            o.set_credentials(u, p);
        }
        if let Some(w) = &id.will {
            let properties = Some(m5::LastWillProperties {
                delay_interval: (cfg.will_delay_secs > 0).then_some(cfg.will_delay_secs),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: id
                    .origin
                    .as_ref()
                    .map(|origin| vec![(ORIGIN_PROPERTY.to_owned(), origin.to_string())])
                    .unwrap_or_default(),
            });
            o.set_last_will(m5::LastWill::new(
                &w.topic,
                w.payload.clone(),
                qos5(w.qos),
                w.retain,
                properties,
            ));
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        let (c, mut l) = rumqttc::v5::AsyncClient::new(o, cap);
        shrink_v5(&mut l);
        (
            LinkClient {
                kind: ClientKind::V5(c),
                tag: tag.clone(),
            },
            LinkLoop {
                kind: LoopKind::V5(Box::new(l)),
                tag,
                resume: id.will.is_some() && cfg.will_delay_secs > 0,
            },
        )
    }
}

/// rumqttc reserves room for 100 buffered events and 100 pending requests
/// per connection; they grow on demand, so start them empty (a per-device
/// bridge holds a thousand connections).
fn shrink_v4(l: &mut rumqttc::EventLoop) {
    l.state.events = std::collections::VecDeque::new();
    l.pending = std::collections::VecDeque::new();
}

fn shrink_v5(l: &mut rumqttc::v5::EventLoop) {
    l.state.events = std::collections::VecDeque::new();
    l.pending = std::collections::VecDeque::new();
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
    /// Queues a PUBLISH (tagged with the origin on MQTT 5 when the identity
    /// has one); false if rumqttc's channel refused it.
    pub fn try_publish(&self, m: &OutMessage) -> bool {
        match &self.kind {
            ClientKind::V4(c) => c
                .try_publish(m.topic.as_str(), qos4(m.qos), m.retain, m.payload.to_vec())
                .is_ok(),
            ClientKind::V5(c) => match self.tag.publish_properties() {
                Some(props) => c
                    .try_publish_with_properties(
                        m.topic.as_str(),
                        qos5(m.qos),
                        m.retain,
                        m.payload.clone(),
                        props,
                    )
                    .is_ok(),
                None => c
                    .try_publish(m.topic.as_str(), qos5(m.qos), m.retain, m.payload.clone())
                    .is_ok(),
            },
        }
    }

    /// Queues one SUBSCRIBE for one remote filter. On MQTT 5 it carries No
    /// Local, Retain As Published and the subscription identifier `id`, which
    /// the broker echoes in every PUBLISH sent for this subscription (the
    /// bridge uses it to pass one copy of a message matched by overlapping
    /// subscriptions). MQTT 3.1.1 has no identifiers: `id` is unused.
    pub fn try_subscribe(&self, filter: &str, qos: u8, id: usize) -> bool {
        match &self.kind {
            ClientKind::V4(c) => c.try_subscribe(filter, qos4(qos)).is_ok(),
            ClientKind::V5(c) => {
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
        match &self.kind {
            ClientKind::V4(c) => c.try_unsubscribe(filter).is_ok(),
            ClientKind::V5(c) => c.try_unsubscribe(filter).is_ok(),
        }
    }

    /// Queues the acknowledgement of the incoming QoS 1/2 PUBLISH `pkid`
    /// (PUBACK at QoS 1, PUBREC at QoS 2; manual acknowledgements); false
    /// if the channel refused it.
    pub fn try_ack(&self, qos: u8, pkid: u16) -> bool {
        match &self.kind {
            ClientKind::V4(c) => {
                let mut p = rumqttc::Publish::new("", qos4(qos), Vec::new());
                p.pkid = pkid;
                c.try_ack(&p).is_ok()
            }
            ClientKind::V5(c) => {
                let mut p = m5::Publish::new("", qos5(qos), Vec::new(), None);
                p.pkid = pkid;
                c.try_ack(&p).is_ok()
            }
        }
    }

    /// Queues a DISCONNECT; false if the channel refused it.
    pub fn try_disconnect(&self) -> bool {
        match &self.kind {
            ClientKind::V4(c) => c.try_disconnect().is_ok(),
            ClientKind::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

impl LinkLoop {
    /// Drives the connection: connects when needed, then yields the next
    /// event. An error means the connection is gone (the next call
    /// reconnects at once, so the caller waits first); a refusing CONNACK
    /// that retrying will not cure is [`LinkError::Refused`].
    pub async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match &mut self.kind {
            LoopKind::V4(l) => l.poll().await.map(from_v4).map_err(|e| match e {
                rumqttc::ConnectionError::ConnectionRefused(code) => {
                    match refusal(RefusalCode::V4(code)) {
                        Some(r) => LinkError::Refused(r),
                        None => LinkError::Lost(e.to_string()),
                    }
                }
                e => LinkError::Lost(e.to_string()),
            }),
            LoopKind::V5(l) => {
                let ev = l.poll().await;
                if self.resume
                    && let Ok(rumqttc::v5::Event::Incoming(m5::Packet::ConnAck(_))) = &ev
                {
                    // From now on a reconnect resumes this session, so a
                    // blip does not release the will (WILL_DELAY_SECS).
                    l.options.set_clean_start(false);
                }
                ev.map(from_v5).map_err(|e| match e {
                    rumqttc::v5::ConnectionError::ConnectionRefused(code) => {
                        match refusal(RefusalCode::V5(code)) {
                            Some(r) => LinkError::Refused(r),
                            None => LinkError::Lost(e.to_string()),
                        }
                    }
                    rumqttc::v5::ConnectionError::MqttState(
                        rumqttc::v5::StateError::ServerDisconnect {
                            reason_code: m5::DisconnectReasonCode::SessionTakenOver,
                            ..
                        },
                    ) => LinkError::TakenOver,
                    e => LinkError::Lost(e.to_string()),
                })
            }
        }
    }

    /// Events rumqttc had buffered when the connection failed (acks read in
    /// the same batch, a publish written just before the write failed).
    /// They happened; the caller handles them before the loss itself.
    pub fn take_buffered(&mut self) -> Vec<LinkEvent> {
        match &mut self.kind {
            LoopKind::V4(l) => l.state.events.drain(..).map(from_v4).collect(),
            LoopKind::V5(l) => l.state.events.drain(..).map(from_v5).collect(),
        }
    }

    /// After a connection loss: replaces rumqttc's pending list (unacked
    /// publishes in packet-id order plus whatever sat in its channel) with
    /// exactly `replays`, in the outbox's order, and clears a held-back
    /// (collided) publish, which the outbox has queued again.
    pub fn replace_pending(&mut self, replays: &[Replay]) {
        let props = self.tag.publish_properties();
        match &mut self.kind {
            LoopKind::V4(l) => {
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
            LoopKind::V5(l) => {
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
                        properties: props.clone(),
                    }),
                    Replay::PubRel(pkid) => {
                        rumqttc::v5::Request::PubRel(m5::PubRel::new(*pkid, None))
                    }
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_fits_each_protocol() {
        let s = Duration::from_secs;
        assert_eq!(keep_alive(4, 0), s(0), "3.1.1: 0 is none");
        assert_eq!(keep_alive(4, 3), s(3));
        assert_eq!(keep_alive(5, 0), s(65_535), "MQTT 5 in rumqttc has no none");
        assert_eq!(keep_alive(5, 3), s(5), "rumqttc's MQTT 5 minimum");
        assert_eq!(keep_alive(5, 100_000), s(65_535));
        assert_eq!(keep_alive(4, 100_000), s(65_535));
    }

    #[test]
    fn refusals_that_retrying_cannot_cure() {
        use rumqttc::ConnectReturnCode as C4;
        use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C5;
        assert!(refusal(RefusalCode::V4(C4::BadUserNamePassword)).is_some());
        assert!(refusal(RefusalCode::V4(C4::NotAuthorized)).is_some());
        assert!(refusal(RefusalCode::V4(C4::BadClientId)).is_some());
        assert!(refusal(RefusalCode::V4(C4::ServiceUnavailable)).is_none());
        assert!(refusal(RefusalCode::V5(C5::NotAuthorized)).is_some());
        assert!(refusal(RefusalCode::V5(C5::BadUserNamePassword)).is_some());
        assert!(refusal(RefusalCode::V5(C5::Banned)).is_some());
        assert!(refusal(RefusalCode::V5(C5::ServerBusy)).is_none());
        assert!(refusal(RefusalCode::V5(C5::ConnectionRateExceeded)).is_none());
    }
}
