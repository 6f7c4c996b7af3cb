//! One embedded-broker connection: the MQTT 3.1.1 conversation with one local
//! client, from CONNECT to close.
//!
//! It owns what is per connection and nothing else: framing, the client's
//! and our packet ids, the QoS 1/2 handshakes in both directions (inbound
//! QoS 2 duplicates are caught here by packet id), the in-flight window
//! towards the client, keep-alive, and the CONNECT checks (protocol level,
//! credentials through [`super::auth`], client id). Everything a message means is the engine's.
//!
//! Bounds: a packet larger than `max_packet_bytes` closes the connection
//! before it is buffered; at most [`MAX_UNACKED_INBOUND`] of the client's
//! QoS 1/2 publishes wait for the engine before the socket stops being read
//! (TCP pushes back on the client; its keep-alive is paused meanwhile);
//! messages towards the client are bounded by the driver in count and bytes
//! (`max_queued_messages`, `max_queued_bytes`, and every connection's bytes
//! together `max_queued_bytes_total`) — a message's bytes are given back
//! when it is written (QoS 0) or acknowledged (QoS 1/2), and encoded bytes
//! wait in the output buffer only up to [`OUT_HIGH_WATER`], so what a client
//! that does not read can hold is those bounds; and a write that makes no
//! progress for 1.5 × keep-alive closes the connection.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, PubRel, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

use super::{BrokerEvent, BrokerStats, ConnLink, ConnSettings};
use crate::core::session::Will;
use crate::core::{LocalAction, LocalConnId, LocalConnect, LocalDelivery, LocalInput};

/// The client's QoS 1/2 publishes that may wait for the engine's answer
/// before the connection stops reading.
const MAX_UNACKED_INBOUND: usize = 64;

/// Encoded bytes the output buffer may hold before no more pending messages
/// are encoded into it (one message more may pass it): the rest waits,
/// counted, until the client reads.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// A connection before and after CONNECT, over any byte stream: a TCP
/// socket's halves, or a TLS stream's.
pub(super) struct Connection<R, W> {
    conn: LocalConnId,
    peer: SocketAddr,
    reader: R,
    writer: W,
    events: mpsc::Sender<BrokerEvent>,
    settings: Arc<ConnSettings>,
    stats: Arc<BrokerStats>,
}

/// What a message sent to the client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// PUBACK (QoS 1).
    Ack,
    /// PUBREC (QoS 2, first half).
    Rec,
    /// PUBCOMP (QoS 2, after our PUBREL).
    Comp,
}

/// How the conversation ended.
enum End {
    /// DISCONNECT received: no will.
    Graceful,
    /// Anything else: the will is published.
    Abrupt(&'static str),
}

/// The conversation after a successful CONNECT.
struct Session<R, W> {
    conn: LocalConnId,
    reader: R,
    writer: W,
    actions: mpsc::UnboundedReceiver<LocalAction>,
    events: mpsc::Sender<BrokerEvent>,
    stats: Arc<BrokerStats>,
    queued: Arc<AtomicUsize>,
    /// This connection's queued bytes (the driver adds, this task gives
    /// back), and every connection's together.
    queued_bytes: Arc<AtomicUsize>,
    queued_total: super::QueuedBytes,
    inbound: Arc<tokio::sync::Semaphore>,
    max_packet_bytes: usize,
    max_inflight: usize,
    keep_alive: Option<Duration>,
    last_heard: Instant,
    /// The engine's CONNACK (or refusal) is written. Until then nothing
    /// more is read and nothing is sent: the first packet a client gets is
    /// its CONNACK (MQTT-3.2.0-1).
    connacked: bool,
    inbuf: BytesMut,
    out: BytesMut,
    next_pkid: u16,
    /// Sent to the client, not yet acknowledged, oldest first.
    inflight: VecDeque<(u16, LocalDelivery, Awaiting)>,
    /// Waiting for room in the in-flight window.
    pending: VecDeque<LocalDelivery>,
    /// The client's QoS 1/2 publishes handed to the engine, not yet acked.
    awaiting_engine: HashSet<u16>,
    /// The client's QoS 2 publishes answered with PUBREC, until PUBREL.
    received_qos2: HashSet<u16>,
    /// PUBRELs sent again for an earlier connection's QoS 2 messages
    /// (`LocalAction::Release`), until their PUBCOMP.
    releasing: Vec<u16>,
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    pub(super) fn new(
        conn: LocalConnId,
        peer: SocketAddr,
        reader: R,
        writer: W,
        events: mpsc::Sender<BrokerEvent>,
        settings: Arc<ConnSettings>,
        stats: Arc<BrokerStats>,
    ) -> Self {
        Connection {
            conn,
            peer,
            reader,
            writer,
            events,
            settings,
            stats,
        }
    }

    /// Runs the connection to its end.
    pub(super) async fn run(self) {
        let Connection {
            conn,
            peer,
            mut reader,
            mut writer,
            events,
            settings,
            stats,
        } = self;
        let mut inbuf = BytesMut::with_capacity(4096);
        let first = tokio::time::timeout(
            settings.connect_timeout,
            read_connect(&mut reader, &mut inbuf, settings.max_packet_bytes),
        )
        .await;
        let connect = match first {
            Err(_) => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                debug!(%conn, %peer, "no CONNECT in time; closing");
                return;
            }
            Ok(Ok(Some(Packet::Connect(connect)))) => connect,
            Ok(Err(mqttbytes::Error::InvalidProtocolLevel(level))) => {
                stats.connects_refused.fetch_add(1, Ordering::Relaxed);
                info!(%conn, %peer, level, "MQTT connection refused: unsupported protocol level");
                refuse(&mut writer, ConnectReturnCode::RefusedProtocolVersion).await;
                return;
            }
            Ok(Ok(None)) => return,
            Ok(other) => {
                stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                if matches!(other, Err(mqttbytes::Error::PayloadSizeLimitExceeded(_))) {
                    stats.packets_too_large.fetch_add(1, Ordering::Relaxed);
                }
                debug!(%conn, %peer, first = ?other.map(|p| p.map(|p| packet_name(&p))), "first packet is not a valid CONNECT; closing");
                return;
            }
        };
        // The protocol level first (its refusal code wins), then who it is
        // (off the runtime's threads), then the rest.
        let login = connect
            .login
            .as_ref()
            .map(|l| (l.username.as_str(), l.password.as_str()));
        let accepted = if connect.protocol != Protocol::V4 {
            Some(Err(ConnectReturnCode::RefusedProtocolVersion))
        } else if !settings.auth.check(login).await {
            Some(Err(ConnectReturnCode::BadUserNamePassword))
        } else {
            check_connect(conn, &connect)
        };
        let Some(accepted) = accepted else {
            return;
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(code) => {
                stats.connects_refused.fetch_add(1, Ordering::Relaxed);
                let user = login.map(|(user, _)| user);
                info!(%conn, %peer, client = %connect.client_id, ?user, ?code, "MQTT connection refused");
                refuse(&mut writer, code).await;
                return;
            }
        };
        let (tx, actions) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let link = ConnLink {
            actions: tx,
            queued: queued.clone(),
            queued_bytes: queued_bytes.clone(),
        };
        let client_id = accepted.client_id.clone();
        if events
            .send(BrokerEvent::Opened { conn, link })
            .await
            .is_err()
            || events
                .send(BrokerEvent::Input {
                    conn,
                    input: LocalInput::Connect(accepted),
                })
                .await
                .is_err()
        {
            return;
        }
        debug!(%conn, %peer, client = %client_id, "MQTT client connecting");
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let mut session = Session {
            conn,
            reader,
            writer,
            actions,
            events: events.clone(),
            stats: stats.clone(),
            queued,
            queued_bytes,
            queued_total: settings.queued_total.clone(),
            inbound: settings.inbound.clone(),
            max_packet_bytes: settings.max_packet_bytes,
            max_inflight: usize::from(settings.max_inflight),
            keep_alive,
            last_heard: Instant::now(),
            connacked: false,
            inbuf,
            out: BytesMut::with_capacity(4096),
            next_pkid: 0,
            inflight: VecDeque::new(),
            releasing: Vec::new(),
            pending: VecDeque::new(),
            awaiting_engine: HashSet::new(),
            received_qos2: HashSet::new(),
        };
        let end = session.serve().await;
        let graceful = matches!(end, End::Graceful);
        if let End::Abrupt(why) = end {
            debug!(%conn, client = %client_id, why, "MQTT connection closed");
        }
        let releasing = session.take_releasing();
        let unacked = session.take_unacked();
        let _ = session.writer.shutdown().await;
        let _ = events
            .send(BrokerEvent::Input {
                conn,
                input: LocalInput::Closed {
                    graceful,
                    unacked,
                    releasing,
                },
            })
            .await;
    }
}

/// Checks a CONNECT: `None` closes without an answer (a malformed will),
/// `Some(Err(code))` refuses with that CONNACK code.
fn check_connect(
    conn: LocalConnId,
    connect: &Connect,
) -> Option<Result<LocalConnect, ConnectReturnCode>> {
    let client_id = if connect.client_id.is_empty() {
        if !connect.clean_session {
            // A persistent session needs a name to come back to (§3.1.3.1).
            return Some(Err(ConnectReturnCode::BadClientId));
        }
        format!("sngate-auto-{}", conn.0)
    } else {
        connect.client_id.clone()
    };
    let will = match &connect.last_will {
        Some(w) => {
            if crate::core::topic::validate_name(&w.topic).is_err() {
                return None;
            }
            Some(Will {
                topic: w.topic.clone(),
                payload: w.message.clone(),
                qos: w.qos as u8,
                retain: w.retain,
            })
        }
        None => None,
    };
    Some(Ok(LocalConnect {
        client_id,
        clean_session: connect.clean_session,
        will,
        // As the client sent it (checked above when credentials are set):
        // the ACL's `user` lines and `%u` match it.
        username: connect.login.as_ref().map(|l| l.username.clone()),
    }))
}

async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, code: ConnectReturnCode) {
    let mut out = BytesMut::with_capacity(4);
    if ConnAck::new(code, false).write(&mut out).is_ok() {
        let _ = writer.write_all(&out).await;
    }
    let _ = writer.shutdown().await;
}

/// The protocol level a CONNECT at the start of `buf` declares, once the
/// first 7 bytes of its variable header (`00 04 MQTT` and the level) are in.
/// Read before parsing: a later protocol's CONNECT (MQTT 5 adds properties)
/// does not parse as 3.1.1, yet must be answered with CONNACK
/// "unacceptable protocol version" (MQTT-3.1.2-2), not a closed socket.
fn declared_level(buf: &[u8]) -> Option<u8> {
    // The fixed header: the type byte, then 1..=4 bytes of remaining length.
    let len_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let var = buf.get(1 + len_bytes..1 + len_bytes + 7)?;
    (var[..6] == *b"\0\x04MQTT").then_some(var[6])
}

/// Reads until the first packet is buffered. `Ok(None)`: the peer closed.
/// Anything but a CONNECT fails on its first byte, so a stray client (an
/// HTTP request, a port scan) is turned away at once.
async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Packet>, mqttbytes::Error> {
    loop {
        if let Some(&first) = buf.first()
            && first != 0x10
        {
            return Err(mqttbytes::Error::InvalidPacketType(first >> 4));
        }
        if let Some(level) = declared_level(buf)
            && level != 4
        {
            return Err(mqttbytes::Error::InvalidProtocolLevel(level));
        }
        match Packet::read(buf, max) {
            Ok(packet) => return Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(e),
        }
        if reader.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async fn serve(&mut self) -> End {
        // Packets the client sent right behind its CONNECT (§3.1.4 allows
        // it) are already buffered: no read would bring them up again.
        if let Some(end) = self.on_readable().await {
            self.flush().await;
            return end;
        }
        loop {
            let can_read = self.connacked && self.awaiting_engine.len() < MAX_UNACKED_INBOUND;
            // No keep-alive while we do not read (see below).
            let deadline = self
                .keep_alive
                .filter(|_| can_read)
                .map(|k| self.last_heard + k);
            tokio::select! {
                biased;
                action = self.actions.recv() => match action {
                    // The driver dropped the link: shutting down.
                    None => return End::Abrupt("gateway shutting down"),
                    Some(action) => {
                        if let Some(end) = self.on_action(action) {
                            self.flush().await;
                            return end;
                        }
                    }
                },
                read = self.reader.read_buf(&mut self.inbuf), if can_read => match read {
                    Ok(0) => return End::Abrupt("closed by the client"),
                    Err(_) => return End::Abrupt("read error"),
                    Ok(_) => {
                        self.last_heard = Instant::now();
                        if let Some(end) = self.on_readable().await {
                            self.flush().await;
                            return end;
                        }
                    }
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    return End::Abrupt("keep-alive expired");
                }
            }
            if !can_read {
                // What the client sent while we did not read (PINGREQ) waits
                // in the socket: that time is not the client's silence, so
                // its keep-alive runs afresh from when reading resumes.
                self.last_heard = Instant::now();
            }
            self.fill_window();
            if !self.flush().await {
                return End::Abrupt("write error");
            }
        }
    }

    /// Writes what is buffered; false if the socket failed, or (with a
    /// keep-alive) took no bytes for 1.5 × keep-alive: a client that hung
    /// with its receive window full would otherwise hold this task in the
    /// write forever, its keep-alive never checked and its will never sent.
    async fn flush(&mut self) -> bool {
        while self.connacked && !self.out.is_empty() {
            let written = match self.keep_alive {
                Some(limit) => {
                    match tokio::time::timeout(limit, self.writer.write_buf(&mut self.out)).await {
                        Ok(written) => written,
                        Err(_) => {
                            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                            debug!(conn = %self.conn, "client not reading for a keep-alive; closing");
                            Ok(0)
                        }
                    }
                }
                None => self.writer.write_buf(&mut self.out).await,
            };
            if !matches!(written, Ok(n) if n > 0) {
                self.out.clear();
                return false;
            }
        }
        true
    }

    fn write(&mut self, packet: Packet) {
        // Our own packets are small or were bounded on the way in.
        if let Err(e) = packet.write(&mut self.out, usize::MAX) {
            debug!(conn = %self.conn, error = %e, "cannot encode an MQTT packet");
        }
    }

    /// Puts the CONNACK before the answers (PINGRESP…) to what the client
    /// sent behind its CONNECT, and lets them all go out.
    fn write_connack(&mut self, connack: ConnAck) {
        let held = self.out.split();
        self.write(Packet::ConnAck(connack));
        self.out.unsplit(held);
        self.connacked = true;
    }

    fn on_action(&mut self, action: LocalAction) -> Option<End> {
        match action {
            LocalAction::ConnAck { session_present } => {
                self.write_connack(ConnAck::new(ConnectReturnCode::Success, session_present))
            }
            LocalAction::Refuse => {
                self.stats.connects_refused.fetch_add(1, Ordering::Relaxed);
                self.write_connack(ConnAck::new(ConnectReturnCode::ServiceUnavailable, false));
                return Some(End::Graceful);
            }
            LocalAction::Deliver(d) => self.pending.push_back(d),
            LocalAction::Release { pkids } => {
                for pkid in pkids {
                    if !self.releasing.contains(&pkid) {
                        self.write(Packet::PubRel(PubRel::new(pkid)));
                        self.releasing.push(pkid);
                    }
                }
            }
            LocalAction::Ack { pkid, qos } => {
                self.awaiting_engine.remove(&pkid);
                if qos == 2 {
                    self.received_qos2.insert(pkid);
                    self.write(Packet::PubRec(PubRec::new(pkid)));
                } else {
                    self.write(Packet::PubAck(PubAck::new(pkid)));
                }
            }
            LocalAction::SubAck { pkid, granted } => {
                let codes = granted
                    .into_iter()
                    .map(|g| match g {
                        Some(q) => SubscribeReasonCode::Success(qos_of(q)),
                        None => SubscribeReasonCode::Failure,
                    })
                    .collect();
                self.write(Packet::SubAck(SubAck::new(pkid, codes)));
            }
            LocalAction::UnsubAck { pkid } => self.write(Packet::UnsubAck(UnsubAck::new(pkid))),
            LocalAction::Close => return Some(End::Abrupt("closed by the gateway")),
        }
        None
    }

    /// Handles every whole packet in the input buffer.
    async fn on_readable(&mut self) -> Option<End> {
        loop {
            let packet = match Packet::read(&mut self.inbuf, self.max_packet_bytes) {
                Ok(packet) => packet,
                Err(mqttbytes::Error::InsufficientBytes(_)) => return None,
                Err(e) => {
                    self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    if matches!(e, mqttbytes::Error::PayloadSizeLimitExceeded(_)) {
                        self.stats.packets_too_large.fetch_add(1, Ordering::Relaxed);
                    }
                    debug!(conn = %self.conn, error = %e, "malformed MQTT packet; closing");
                    return Some(End::Abrupt("malformed packet"));
                }
            };
            if let Some(end) = self.on_packet(packet).await {
                return Some(end);
            }
        }
    }

    async fn on_packet(&mut self, packet: Packet) -> Option<End> {
        let input = match packet {
            Packet::Publish(p) => {
                self.stats
                    .publishes_received
                    .fetch_add(1, Ordering::Relaxed);
                let qos = p.qos as u8;
                if qos > 0 {
                    if qos == 2 && self.received_qos2.contains(&p.pkid) {
                        // A resend of one already taken: answer again only.
                        self.write(Packet::PubRec(PubRec::new(p.pkid)));
                        return None;
                    }
                    if !self.awaiting_engine.insert(p.pkid) {
                        // A resend of one the engine has not answered yet.
                        return None;
                    }
                }
                LocalInput::Publish {
                    pkid: p.pkid,
                    topic: p.topic,
                    // Its own allocation: the codec's payload is a slice of
                    // the read buffer, which a message kept for long (a
                    // retained one, a queued one) would pin whole, along
                    // with whatever else it held.
                    payload: bytes::Bytes::copy_from_slice(&p.payload),
                    qos,
                    retain: p.retain,
                }
            }
            Packet::PubAck(ack) => match self.acknowledged(ack.pkid, Awaiting::Ack) {
                Some(store_id) => LocalInput::Acked { store_id },
                None => return None,
            },
            Packet::PubRec(rec) => {
                let mut durable = None;
                if let Some(entry) = self
                    .inflight
                    .iter_mut()
                    .find(|(id, _, stage)| *id == rec.pkid && *stage == Awaiting::Rec)
                {
                    entry.2 = Awaiting::Comp;
                    // The client has the message: it counts as delivered.
                    durable = entry.1.store_id;
                }
                self.write(Packet::PubRel(PubRel::new(rec.pkid)));
                match durable {
                    Some(store_id) => LocalInput::Acked { store_id },
                    None => return None,
                }
            }
            Packet::PubComp(comp) => {
                self.acknowledged(comp.pkid, Awaiting::Comp);
                self.releasing.retain(|&p| p != comp.pkid);
                return None;
            }
            Packet::PubRel(rel) => {
                self.received_qos2.remove(&rel.pkid);
                self.write(Packet::PubComp(PubComp::new(rel.pkid)));
                return None;
            }
            Packet::Subscribe(s) => LocalInput::Subscribe {
                pkid: s.pkid,
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| (f.path, f.qos as u8))
                    .collect(),
            },
            Packet::Unsubscribe(u) => LocalInput::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
            },
            Packet::PingReq => {
                self.write(Packet::PingResp);
                return None;
            }
            Packet::Disconnect => return Some(End::Graceful),
            other => {
                self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                debug!(conn = %self.conn, packet = packet_name(&other), "unexpected MQTT packet; closing");
                return Some(End::Abrupt("protocol violation"));
            }
        };
        // Room on the way to the driver, which gives it back as it takes
        // the event (`Broker::note`); meanwhile nothing more is read.
        let size = super::inbound_size(&input);
        if size > 0 {
            match self
                .inbound
                .clone()
                .acquire_many_owned(saturating_u32(size))
                .await
            {
                Ok(permit) => permit.forget(),
                Err(_) => return Some(End::Abrupt("gateway shutting down")),
            }
        }
        let event = BrokerEvent::Input {
            conn: self.conn,
            input,
        };
        if self.events.send(event).await.is_err() {
            return Some(End::Abrupt("gateway shutting down"));
        }
        None
    }

    /// The client acknowledged our message `pkid` at `stage`; returns its
    /// durable id, which the engine may now forget.
    fn acknowledged(&mut self, pkid: u16, stage: Awaiting) -> Option<u64> {
        let i = self
            .inflight
            .iter()
            .position(|(id, _, s)| *id == pkid && *s == stage)?;
        let (_, d, _) = self.inflight.remove(i)?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.release(&d);
        d.store_id
    }

    /// Gives back the bytes `d` counted while it waited.
    fn release(&self, d: &LocalDelivery) {
        let size = super::queued_size(d);
        // Never below zero: the driver added `size` before handing it over.
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(size))
            });
        self.queued_total.sub(size);
    }

    /// Sends pending messages while the in-flight window has room.
    fn fill_window(&mut self) {
        while let Some(d) = self.pending.front() {
            if d.qos > 0 && self.inflight.len() >= self.max_inflight {
                return;
            }
            if self.out.len() >= OUT_HIGH_WATER {
                // The client is behind: the rest stays pending, counted.
                return;
            }
            let Some(d) = self.pending.pop_front() else {
                return;
            };
            let mut publish =
                Publish::from_bytes(d.topic.as_ref(), qos_of(d.qos), d.payload.clone());
            publish.retain = d.retain;
            self.stats.publishes_sent.fetch_add(1, Ordering::Relaxed);
            if d.qos == 0 {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.release(&d);
                self.write(Packet::Publish(publish));
                continue;
            }
            let pkid = self.next_free_pkid();
            publish.pkid = pkid;
            self.write(Packet::Publish(publish));
            let stage = if d.qos == 1 {
                Awaiting::Ack
            } else {
                Awaiting::Rec
            };
            self.inflight.push_back((pkid, d, stage));
        }
    }

    fn next_free_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            let id = self.next_pkid;
            // The window is far below 65535, so a free id is always near.
            if id != 0
                && !self.inflight.iter().any(|(i, _, _)| *i == id)
                && !self.releasing.contains(&id)
            {
                return id;
            }
        }
    }

    /// The QoS 2 messages the client answered with PUBREC and did not
    /// complete (PUBCOMP): their PUBREL is owed again on the session's next
    /// connection. Before [`take_unacked`](Self::take_unacked), which
    /// empties the window.
    fn take_releasing(&mut self) -> Vec<u16> {
        let mut ids: Vec<u16> = std::mem::take(&mut self.releasing);
        ids.extend(
            self.inflight
                .iter()
                .filter(|(_, _, stage)| *stage == Awaiting::Comp)
                .map(|(pkid, _, _)| *pkid),
        );
        ids
    }

    /// What this connection was given and the client did not acknowledge,
    /// oldest first: the in-flight window (except QoS 2 messages the client
    /// already has, PUBREC received), the pending ones, and what is still
    /// in the channel.
    fn take_unacked(&mut self) -> Vec<LocalDelivery> {
        self.actions.close();
        let mut unacked: Vec<LocalDelivery> = self
            .inflight
            .drain(..)
            .filter(|(_, _, stage)| *stage != Awaiting::Comp)
            .map(|(_, d, _)| d)
            .collect();
        unacked.extend(self.pending.drain(..));
        while let Ok(action) = self.actions.try_recv() {
            if let LocalAction::Deliver(d) = action {
                unacked.push(d);
            }
        }
        unacked
    }
}

/// `n` as a semaphore's permit count (bounded by [`super::INBOUND_BYTES`]).
fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::declared_level;

    #[test]
    fn the_protocol_level_is_read_before_the_packet_is_complete() {
        // CONNECT, remaining length 200 (two bytes), "MQTT", level 5.
        let v5 = [0x10, 0xc8, 0x01, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02];
        assert_eq!(declared_level(&v5), Some(5));
        assert_eq!(
            declared_level(&[0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 4]),
            Some(4)
        );
        // Not yet in, or not "MQTT" (3.1's "MQIsdp" is left to the parser).
        assert_eq!(declared_level(&v5[..9]), None);
        assert_eq!(
            declared_level(&[0x10, 12, 0, 6, b'M', b'Q', b'I', b's', b'd']),
            None
        );
        assert_eq!(declared_level(&[0x10, 0xff, 0xff, 0xff, 0xff, 0, 4]), None);
        assert_eq!(declared_level(&[]), None);
    }
}
