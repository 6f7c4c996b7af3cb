//! Serial links end to end, with no hardware: each test starts a gateway
//! in-process with `[[serial]]` ports that are pseudo-terminals
//! (`common::pty`), and plays the far end of the link itself — a raw MQTT-SN
//! device, an XBee module in API mode 1 or 2 for several remote radios, a SLIP
//! forwarder for several nodes — writing and parsing every frame byte by byte
//! from the framing specifications, independently of the gateway's codecs.
//!
//! Every wait is on an event with a deadline: a frame from the gateway, a
//! message at a UDP or MQTT client, the gateway holding the port open (its
//! serial library `flock`s the device; `Pty::wait_opened` watches
//! `/proc/locks`).
//!
//! Tests marked `#[ignore = "serial bug: …"]` show a gateway bug found here;
//! they pass once it is fixed (`cargo test --test serial -- --ignored`).

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::mosquitto::Mosquitto;
use common::pty::{Pty, SerialPath};
use common::xbee::{
    XBEE_START, ieee_rx, take_xbee, xbee_checksum, xbee_frame, xbee_frame_with_checksum,
    xbee_transmit_request, zigbee_rx,
};
use common::{TestGateway, WAIT, connect, expect_message, start_gateway_with, upstream_to};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet as MqttPacket, QoS as MqttQoS};
use sngate::config::{SerialConfig, SerialFraming, XbeeTx};
use sngate::proto::{self, PROTOCOL_ID_V1_2, Packet, QoS, ReturnCode, SubscribeTopic, TopicRef};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// How long the gateway may take to open (or reopen) a port.
const OPEN_WAIT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------ framings, written from the specs

/// How the far end frames messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// MQTT-SN messages back to back, delimited by their Length field.
    Raw,
    /// Digi XBee API frames; `escaped` is API mode 2.
    Xbee { escaped: bool },
    /// RFC 1055 SLIP, with a CRC-16/CCITT-FALSE (big-endian) when `crc`.
    Slip { crc: bool },
}

impl Wire {
    fn framing(self) -> SerialFraming {
        match self {
            Wire::Raw => SerialFraming::Raw,
            Wire::Xbee { .. } => SerialFraming::Xbee,
            Wire::Slip { .. } => SerialFraming::Slip,
        }
    }

    /// The `[[serial]]` entry for a port at `device` framed this way; a lost
    /// port is reopened every second.
    fn config(self, device: String) -> SerialConfig {
        SerialConfig {
            device,
            framing: self.framing(),
            xbee_escaped: matches!(self, Wire::Xbee { escaped: true }),
            slip_crc: matches!(self, Wire::Slip { crc: true }),
            reopen_min_secs: 1,
            reopen_max_secs: 1,
            ..SerialConfig::default()
        }
    }
}

const SLIP_END: u8 = 0xC0;
const SLIP_ESC: u8 = 0xDB;
const SLIP_ESC_END: u8 = 0xDC;
const SLIP_ESC_ESC: u8 = 0xDD;

/// CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, MSB first.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A SLIP frame: END, the escaped bytes, END.
fn slip_frame_bytes(body: &[u8]) -> Vec<u8> {
    let mut out = vec![SLIP_END];
    for &b in body {
        match b {
            SLIP_END => out.extend([SLIP_ESC, SLIP_ESC_END]),
            SLIP_ESC => out.extend([SLIP_ESC, SLIP_ESC_ESC]),
            b => out.push(b),
        }
    }
    out.push(SLIP_END);
    out
}

/// A SLIP frame for `message`, with its CRC when `crc`.
fn slip_frame(crc: bool, message: &[u8]) -> Vec<u8> {
    let mut body = message.to_vec();
    if crc {
        body.extend(crc16(message).to_be_bytes());
    }
    slip_frame_bytes(&body)
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    proto::encode(packet, &mut buf).expect("encode");
    buf.to_vec()
}

/// A forwarder encapsulation of `inner` for the one-byte wireless node id `node`.
fn encapsulated(node: u8, inner: Packet) -> Packet {
    Packet::Encapsulated {
        radius: 0,
        node_id: Bytes::copy_from_slice(&[node]),
        inner: Box::new(inner),
    }
}

/// The length of the MQTT-SN message at the front of `buf` (1- or 3-byte
/// Length form), when enough is there to tell.
fn raw_message_len(buf: &[u8]) -> Option<usize> {
    match *buf {
        [0x01, hi, lo, ..] => Some(usize::from(u16::from_be_bytes([hi, lo]))),
        [0x01, ..] | [] => None,
        [len, ..] => Some(usize::from(len)),
    }
}

/// One raw-framed message (an encapsulation together with the message it
/// carries) off the front of `buf`.
fn take_raw(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let len = raw_message_len(buf)?;
    assert!(len >= 2, "gateway wrote a Length of {len}: {buf:02X?}");
    let type_at = if buf[0] == 0x01 { 3 } else { 1 };
    let total = if buf.get(type_at) == Some(&0xFE) {
        len + raw_message_len(buf.get(len..)?)?
    } else {
        len
    };
    if buf.len() < total {
        return None;
    }
    Some(buf.drain(..total).collect())
}

/// One SLIP frame's message off the front of `buf` (empty frames skipped; the
/// CRC checked and removed when `crc`).
fn take_slip(buf: &mut Vec<u8>, crc: bool) -> Option<Vec<u8>> {
    loop {
        let end = buf.iter().position(|&b| b == SLIP_END)?;
        let escaped: Vec<u8> = buf.drain(..=end).take(end).collect();
        if escaped.is_empty() {
            continue;
        }
        let mut body = Vec::with_capacity(escaped.len());
        let mut it = escaped.iter();
        while let Some(&b) = it.next() {
            body.push(match b {
                SLIP_ESC => match it.next() {
                    Some(&SLIP_ESC_END) => SLIP_END,
                    Some(&SLIP_ESC_ESC) => SLIP_ESC,
                    other => panic!("bad SLIP escape from the gateway: {other:02X?}"),
                },
                b => b,
            });
        }
        if crc {
            assert!(
                body.len() > 2,
                "SLIP frame too short for its CRC: {body:02X?}"
            );
            let at = body.len() - 2;
            let got = u16::from_be_bytes([body[at], body[at + 1]]);
            body.truncate(at);
            assert_eq!(got, crc16(&body), "bad CRC from the gateway: {body:02X?}");
        }
        return Some(body);
    }
}

// ------------------------------------------------------------ the far end of a link

/// A frame the gateway wrote: the radio it is for (XBee: the 64-bit
/// destination; `None` on raw and SLIP links) and the MQTT-SN message.
#[derive(Debug)]
struct Frame {
    to: Option<u64>,
    packet: Packet,
}

/// The far end of one serial link: a radio module (or forwarder, or device)
/// on the master side of a pty.
struct Far {
    pty: Pty,
    wire: Wire,
    /// Bytes read but not yet a whole frame.
    rx: Vec<u8>,
    /// Frames read while waiting for another radio's.
    stash: VecDeque<Frame>,
    /// CONNACKs still due for CONNECTs resent while waiting for the first:
    /// skipped when they come.
    extra_connacks: usize,
}

/// On raw and SLIP links there is no radio address; any value does.
const NO_RADIO: u64 = 0;

impl Far {
    fn new(pty: Pty, wire: Wire) -> Far {
        Far {
            pty,
            wire,
            rx: Vec::new(),
            stash: VecDeque::new(),
            extra_connacks: 0,
        }
    }

    /// `message` framed for this link, sent from radio `from` (XBee: a 0x90
    /// Zigbee Receive Packet).
    fn frame(&self, from: u64, message: &[u8]) -> Vec<u8> {
        match self.wire {
            Wire::Raw => message.to_vec(),
            Wire::Xbee { escaped } => xbee_frame(escaped, &zigbee_rx(from, message)),
            Wire::Slip { crc } => slip_frame(crc, message),
        }
    }

    async fn send(&self, from: u64, packet: &Packet) {
        self.pty.write_all(&self.frame(from, &encode(packet))).await;
    }

    async fn send_bytes(&self, bytes: &[u8]) {
        self.pty.write_all(bytes).await;
    }

    /// A whole frame from what has been read, if any.
    fn parse(&mut self) -> Option<Frame> {
        let (to, message) = match self.wire {
            Wire::Raw => (None, take_raw(&mut self.rx)?),
            Wire::Slip { crc } => (None, take_slip(&mut self.rx, crc)?),
            Wire::Xbee { escaped } => {
                let fd = take_xbee(&mut self.rx, escaped)?;
                let (to, rf) = xbee_transmit_request(&fd);
                (Some(to), rf.to_vec())
            }
        };
        let packet = proto::decode(&message)
            .unwrap_or_else(|e| panic!("gateway sent a bad message {message:02X?}: {e}"));
        Some(Frame { to, packet })
    }

    /// The next frame the gateway writes, within [`WAIT`].
    async fn next(&mut self) -> Frame {
        if let Some(f) = self.stash.pop_front() {
            return f;
        }
        self.read_frame(Instant::now() + WAIT)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no frame from the gateway on {:?} within {WAIT:?}",
                    self.wire
                )
            })
    }

    /// The next frame read from the pty (not the stash), or `None` at `deadline`.
    async fn read_frame(&mut self, deadline: Instant) -> Option<Frame> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.parse() {
                return Some(f);
            }
            let n = self.pty.read_until(&mut buf, deadline).await?;
            self.rx.extend_from_slice(&buf[..n]);
        }
    }

    /// The next message for radio `to` (XBee), within [`WAIT`]; frames for
    /// other radios are kept for later.
    async fn next_for(&mut self, to: u64) -> Packet {
        if let Some(i) = self.stash.iter().position(|f| f.to == Some(to)) {
            return self.stash.remove(i).expect("present").packet;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let f = self
                .read_frame(deadline)
                .await
                .unwrap_or_else(|| panic!("no frame for radio {to:016X} within {WAIT:?}"));
            if f.to == Some(to) {
                return f.packet;
            }
            self.stash.push_back(f);
        }
    }

    /// The next message for `radio`: on XBee by address, elsewhere the next
    /// frame (skipping the CONNACKs of resent CONNECTs).
    async fn recv(&mut self, radio: u64) -> Packet {
        loop {
            let packet = match self.wire {
                Wire::Xbee { .. } => self.next_for(radio).await,
                _ => {
                    let f = self.next().await;
                    assert_eq!(f.to, None);
                    f.packet
                }
            };
            if self.extra_connacks > 0 && matches!(packet, Packet::ConnAck { .. }) {
                self.extra_connacks -= 1;
                continue;
            }
            return packet;
        }
    }

    /// Sends CONNECT (no will) from `radio`; expects an accepting CONNACK for it.
    async fn connect(&mut self, radio: u64, client_id: &str, clean_session: bool) {
        self.send(radio, &connect_packet(client_id, clean_session))
            .await;
        match self.recv(radio).await {
            Packet::ConnAck { return_code } if return_code.is_accepted() => {}
            other => panic!("{client_id}: expected an accepting CONNACK, got {other:?}"),
        }
    }

    /// REGISTER from `radio`; returns the topic id of the accepting REGACK.
    async fn register(&mut self, radio: u64, msg_id: u16, topic: &str) -> u16 {
        self.send(
            radio,
            &Packet::Register {
                topic_id: 0,
                msg_id,
                topic_name: topic.to_owned(),
            },
        )
        .await;
        match self.recv(radio).await {
            Packet::RegAck {
                topic_id,
                msg_id: m,
                return_code: ReturnCode::Accepted,
            } if m == msg_id && topic_id != 0 => topic_id,
            other => panic!("expected an accepting REGACK for {topic}, got {other:?}"),
        }
    }

    /// SUBSCRIBE at QoS 1 from `radio`; returns the SUBACK's topic id.
    async fn subscribe(&mut self, radio: u64, msg_id: u16, filter: &str) -> u16 {
        self.send(
            radio,
            &Packet::Subscribe {
                dup: false,
                qos: QoS::AtLeastOnce,
                msg_id,
                topic: SubscribeTopic::Name(filter.to_owned()),
            },
        )
        .await;
        match self.recv(radio).await {
            Packet::SubAck {
                msg_id: m,
                return_code: ReturnCode::Accepted,
                topic_id,
                ..
            } if m == msg_id => topic_id,
            other => panic!("expected an accepting SUBACK for {filter}, got {other:?}"),
        }
    }

    /// PUBLISH at QoS 1 from `radio` to a registered id; expects its PUBACK.
    async fn publish_qos1(&mut self, radio: u64, topic_id: u16, msg_id: u16, payload: &[u8]) {
        self.send(
            radio,
            &Packet::Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: TopicRef::Id(topic_id),
                msg_id,
                payload: Bytes::copy_from_slice(payload),
            },
        )
        .await;
        match self.recv(radio).await {
            Packet::PubAck {
                topic_id: t,
                msg_id: m,
                return_code: ReturnCode::Accepted,
            } if t == topic_id && m == msg_id => {}
            other => panic!("expected an accepting PUBACK, got {other:?}"),
        }
    }

    /// Receives messages for `radio` as a device would: answers REGISTER with
    /// REGACK and a QoS 1 PUBLISH with PUBACK, resolving topic ids through
    /// `topics`, until a PUBLISH arrives; returns its topic name and payload.
    async fn receive_publish(&mut self, radio: u64, topics: &mut Topics) -> (String, Bytes) {
        loop {
            match self.recv(radio).await {
                Packet::Register {
                    topic_id,
                    msg_id,
                    topic_name,
                } => {
                    topics.push((topic_id, topic_name));
                    self.send(
                        radio,
                        &Packet::RegAck {
                            topic_id,
                            msg_id,
                            return_code: ReturnCode::Accepted,
                        },
                    )
                    .await;
                }
                Packet::Publish {
                    qos,
                    topic,
                    msg_id,
                    payload,
                    ..
                } => {
                    if qos == QoS::AtLeastOnce {
                        self.send(
                            radio,
                            &Packet::PubAck {
                                topic_id: topic.raw(),
                                msg_id,
                                return_code: ReturnCode::Accepted,
                            },
                        )
                        .await;
                    }
                    let TopicRef::Id(id) = topic else {
                        panic!("expected a normal topic id, got {topic:?}");
                    };
                    let name = topics
                        .iter()
                        .find(|(t, _)| *t == id)
                        .map(|(_, n)| n.clone())
                        .unwrap_or_else(|| panic!("PUBLISH with unknown topic id {id}"));
                    return (name, payload);
                }
                other => panic!("expected REGISTER or PUBLISH, got {other:?}"),
            }
        }
    }

    /// PINGREQ (no client id) from `radio`, expecting PINGRESP next for it: a
    /// barrier proving the gateway has handled everything sent before.
    async fn ping(&mut self, radio: u64) {
        self.send(radio, &Packet::PingReq { client_id: None }).await;
        match self.recv(radio).await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }
}

/// Topic ids a device has learnt: (id, name).
type Topics = Vec<(u16, String)>;

fn connect_packet(client_id: &str, clean_session: bool) -> Packet {
    Packet::Connect {
        will: false,
        clean_session,
        protocol_id: PROTOCOL_ID_V1_2,
        duration: 60,
        client_id: client_id.to_owned(),
    }
}

/// A gateway with one serial port framed as `wire`, on a fresh pty; returns
/// once the gateway holds the port open.
async fn gateway_with_port(
    wire: Wire,
    tweak: impl FnOnce(&mut sngate::config::Config),
) -> (TestGateway, Far, SerialPath) {
    let pty = Pty::open();
    let path = SerialPath::new(&pty);
    let device = path.device();
    let gw = start_gateway_with(|c| {
        c.serial = vec![wire.config(device)];
        tweak(c);
    })
    .await;
    pty.wait_opened(OPEN_WAIT).await;
    (gw, Far::new(pty, wire), path)
}

// ------------------------------------------------------------ 1. raw framing

/// A device on a raw link connects, registers and publishes at QoS 1 to a UDP
/// subscriber, and receives (REGISTER, then PUBLISH) what a UDP device
/// publishes — short messages with the 1-byte Length, long ones with the
/// 3-byte form, both ways.
#[tokio::test]
async fn raw_device_publishes_to_udp_and_receives_from_udp() {
    let (gw, mut dev, _path) = gateway_with_port(Wire::Raw, |_| {}).await;
    dev.connect(NO_RADIO, "raw-dev", true).await;

    let mut udp = connect(gw.addr, "udp-peer").await;
    udp.subscribe(SubscribeTopic::Name("raw/out/#".into()), QoS::AtLeastOnce)
        .await
        .expect("UDP subscribe");

    let temp = dev.register(NO_RADIO, 1, "raw/out/temp").await;
    dev.publish_qos1(NO_RADIO, temp, 2, b"21.5").await;
    let m = expect_message(&mut udp).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("raw/out/temp", &b"21.5"[..])
    );
    assert_eq!(m.qos, QoS::AtLeastOnce);

    // A message over 255 bytes: the 3-byte Length form on the serial side.
    let long: Vec<u8> = (0..300u16).map(|i| (i % 251) as u8).collect();
    dev.publish_qos1(NO_RADIO, temp, 3, &long).await;
    let m = expect_message(&mut udp).await;
    assert_eq!(&m.payload[..], &long[..]);

    // The other way: a wildcard subscription, so the gateway REGISTERs first.
    let mut topics = Topics::new();
    assert_eq!(dev.subscribe(NO_RADIO, 4, "raw/in/#").await, 0);
    udp.publish_named("raw/in/cmd", "on", QoS::AtLeastOnce, false)
        .await
        .expect("UDP publish");
    let (topic, payload) = dev.receive_publish(NO_RADIO, &mut topics).await;
    assert_eq!((topic.as_str(), &payload[..]), ("raw/in/cmd", &b"on"[..]));
    udp.publish_named("raw/in/cmd", long.clone(), QoS::AtLeastOnce, false)
        .await
        .expect("UDP publish, long");
    let (topic, payload) = dev.receive_publish(NO_RADIO, &mut topics).await;
    assert_eq!((topic.as_str(), &payload[..]), ("raw/in/cmd", &long[..]));

    dev.ping(NO_RADIO).await;
    gw.stop().await;
}

// ------------------------------------------------------------ 2. XBee API, two radios

/// Two radio addresses chosen so that API mode 2 must escape bytes of them
/// (0x13, 0x7E, 0x7D, 0x11).
const RADIO_A: u64 = 0x0013_A200_407E_7D11;
const RADIO_B: u64 = 0x0013_A200_4052_7B22;

/// Two simulated radios on one XBee link, each its own session: both
/// connect, A subscribes, B publishes (a payload needing escapes), A gets it
/// and B does not; then A sleeps, a UDP device publishes meanwhile, and A's
/// wake-up PINGREQ brings REGISTER, PUBLISH and PINGRESP — all to A's address.
async fn xbee_two_radios(escaped: bool) {
    let wire = Wire::Xbee { escaped };
    let (gw, mut xb, _path) = gateway_with_port(wire, |_| {}).await;
    xb.connect(RADIO_A, "xbee-a", true).await;
    xb.connect(RADIO_B, "xbee-b", true).await;

    let mut topics_a = Topics::new();
    assert_eq!(xb.subscribe(RADIO_A, 1, "radio/#").await, 0);
    let t = xb.register(RADIO_B, 1, "radio/b/temp").await;
    let payload = [0x7E, 0x7D, 0x11, 0x13, b'x', 0x00, 0xFF];
    xb.publish_qos1(RADIO_B, t, 2, &payload).await;
    let (topic, got) = xb.receive_publish(RADIO_A, &mut topics_a).await;
    assert_eq!((topic.as_str(), &got[..]), ("radio/b/temp", &payload[..]));

    // B gets nothing but its own answers: its next frame is this PINGRESP.
    xb.ping(RADIO_B).await;

    // A sleeps; a UDP device publishes meanwhile (its PUBACK means the
    // gateway has buffered the message for A).
    xb.send(RADIO_A, &Packet::Disconnect { duration: Some(30) })
        .await;
    match xb.next_for(RADIO_A).await {
        Packet::Disconnect { .. } => {}
        other => panic!("expected DISCONNECT answering the sleep, got {other:?}"),
    }
    let mut udp = connect(gw.addr, "udp-pub").await;
    udp.publish_named("radio/a/cmd", "wake", QoS::AtLeastOnce, false)
        .await
        .expect("UDP publish");

    // Wake-up: REGISTER, PUBLISH, then PINGRESP, to A.
    xb.send(
        RADIO_A,
        &Packet::PingReq {
            client_id: Some("xbee-a".into()),
        },
    )
    .await;
    let (topic, got) = xb.receive_publish(RADIO_A, &mut topics_a).await;
    assert_eq!((topic.as_str(), &got[..]), ("radio/a/cmd", &b"wake"[..]));
    assert!(
        topics_a.iter().any(|(_, n)| n == "radio/a/cmd"),
        "the gateway REGISTERed the new topic before publishing"
    );
    match xb.next_for(RADIO_A).await {
        Packet::PingResp => {}
        other => panic!("expected PINGRESP ending the wake-up burst, got {other:?}"),
    }
    xb.ping(RADIO_B).await;
    assert!(xb.stash.is_empty(), "stray frames: {:?}", xb.stash);
    gw.stop().await;
}

#[tokio::test]
async fn xbee_api_mode2_escaped_two_radios_full_flow() {
    xbee_two_radios(true).await;
}

#[tokio::test]
async fn xbee_api_mode1_two_radios_full_flow() {
    xbee_two_radios(false).await;
}

/// 802.15.4 modules (API mode 1): a radio heard through 0x80 (64-bit source)
/// is answered with 0x00 TX requests to that address, and one heard through
/// 0x81 (16-bit source) with 0x01 TX requests to its 16-bit address; each is
/// its own session.
#[tokio::test]
async fn xbee_802154_rx64_and_rx16_answered_with_matching_tx_requests() {
    let wire = Wire::Xbee { escaped: false };
    let (gw, mut xb, _path) = gateway_with_port(wire, |c| {
        c.serial[0].xbee_tx = XbeeTx::Ieee64;
    })
    .await;
    const SHORT: u64 = 0x1234;
    for (radio, id) in [(RADIO_B, "ieee-64"), (SHORT, "ieee-16")] {
        let connect = encode(&connect_packet(id, true));
        xb.send_bytes(&xbee_frame(false, &ieee_rx(radio, &connect)))
            .await;
    }
    let mut buf = [0u8; 512];
    let mut answers = Vec::new();
    let deadline = Instant::now() + WAIT;
    while answers.len() < 2 {
        if let Some(fd) = take_xbee(&mut xb.rx, false) {
            let (to, rf) = xbee_transmit_request(&fd);
            let packet = proto::decode(rf).expect("a CONNACK");
            answers.push((fd[0], to, packet));
            continue;
        }
        let n = xb
            .pty
            .read_until(&mut buf, deadline)
            .await
            .expect("two CONNACKs in time");
        xb.rx.extend_from_slice(&buf[..n]);
    }
    let accepted = Packet::ConnAck {
        return_code: ReturnCode::Accepted,
    };
    assert_eq!(
        answers,
        [(0x00, RADIO_B, accepted.clone()), (0x01, SHORT, accepted)]
    );
    gw.stop().await;
}

// ------------------------------------------------------------ 3. SLIP with forwarder encapsulation

/// Three radio nodes behind one SLIP forwarder: each CONNECT arrives wrapped
/// in an encapsulation, each CONNACK comes back wrapped with its node id;
/// the nodes are distinct sessions (node 1 receives what node 3 publishes).
#[tokio::test]
async fn slip_forwarder_three_nodes_each_answered_with_its_node_id() {
    let (gw, mut fwd, _path) = gateway_with_port(Wire::Slip { crc: false }, |_| {}).await;

    /// The next frame, which must be an encapsulation for `node`; its message.
    async fn next_for_node(fwd: &mut Far, node: u8) -> Packet {
        match fwd.next().await.packet {
            Packet::Encapsulated { node_id, inner, .. } => {
                assert_eq!(&node_id[..], &[node], "answer wrapped for the wrong node");
                *inner
            }
            other => panic!("expected an encapsulation for node {node}, got {other:?}"),
        }
    }

    for node in 1..=3u8 {
        let id = format!("slip-node-{node}");
        fwd.send(NO_RADIO, &encapsulated(node, connect_packet(&id, true)))
            .await;
    }
    for node in 1..=3u8 {
        match next_for_node(&mut fwd, node).await {
            Packet::ConnAck { return_code } if return_code.is_accepted() => {}
            other => panic!("node {node}: expected an accepting CONNACK, got {other:?}"),
        }
    }

    // Node 1 subscribes; node 3 registers and publishes; node 1 receives.
    let sub = Packet::Subscribe {
        dup: false,
        qos: QoS::AtLeastOnce,
        msg_id: 1,
        topic: SubscribeTopic::Name("slip/3/t".into()),
    };
    fwd.send(NO_RADIO, &encapsulated(1, sub)).await;
    let topic_1 = match next_for_node(&mut fwd, 1).await {
        Packet::SubAck {
            topic_id,
            return_code: ReturnCode::Accepted,
            ..
        } => topic_id,
        other => panic!("expected SUBACK, got {other:?}"),
    };
    let reg = Packet::Register {
        topic_id: 0,
        msg_id: 1,
        topic_name: "slip/3/t".into(),
    };
    fwd.send(NO_RADIO, &encapsulated(3, reg)).await;
    let topic_3 = match next_for_node(&mut fwd, 3).await {
        Packet::RegAck {
            topic_id,
            return_code: ReturnCode::Accepted,
            ..
        } => topic_id,
        other => panic!("expected REGACK, got {other:?}"),
    };
    let publish = Packet::Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicRef::Id(topic_3),
        msg_id: 0,
        payload: Bytes::from_static(b"\xC0\xDBslip"), // END and ESC in the payload
    };
    fwd.send(NO_RADIO, &encapsulated(3, publish)).await;
    match next_for_node(&mut fwd, 1).await {
        Packet::Publish { topic, payload, .. } => {
            assert_eq!(topic, TopicRef::Id(topic_1));
            assert_eq!(&payload[..], b"\xC0\xDBslip");
        }
        other => panic!("expected PUBLISH for node 1, got {other:?}"),
    }
    // Node 2 got nothing: its next answer is its PINGRESP.
    fwd.send(
        NO_RADIO,
        &encapsulated(2, Packet::PingReq { client_id: None }),
    )
    .await;
    assert_eq!(next_for_node(&mut fwd, 2).await, Packet::PingResp);
    gw.stop().await;
}

// ------------------------------------------------------------ 4. bad input and resynchronisation

/// Three ports at once (XBee mode 2, SLIP with CRC, raw), each fed corrupted
/// frames and garbage before a good CONNECT: the bad input is dropped (the
/// device gets exactly one CONNACK, then its PINGRESP), the good frame is
/// processed normally.
#[tokio::test]
async fn corrupted_frames_are_dropped_and_each_link_resynchronises() {
    let xbee_pty = Pty::open();
    let slip_pty = Pty::open();
    let raw_pty = Pty::open();
    let (xbee_path, slip_path, raw_path) = (
        SerialPath::new(&xbee_pty),
        SerialPath::new(&slip_pty),
        SerialPath::new(&raw_pty),
    );
    let xbee_wire = Wire::Xbee { escaped: true };
    let slip_wire = Wire::Slip { crc: true };
    let gw = start_gateway_with(|c| {
        c.serial = vec![
            xbee_wire.config(xbee_path.device()),
            slip_wire.config(slip_path.device()),
            Wire::Raw.config(raw_path.device()),
        ];
    })
    .await;
    for pty in [&xbee_pty, &slip_pty, &raw_pty] {
        pty.wait_opened(OPEN_WAIT).await;
    }
    let mut xb = Far::new(xbee_pty, xbee_wire);
    let mut slip = Far::new(slip_pty, slip_wire);
    let mut raw = Far::new(raw_pty, Wire::Raw);

    // XBee: a CONNECT with a bad checksum; garbage; a frame cut short by the
    // next delimiter; a header announcing an oversize frame; a modem-status
    // frame (not for us) and a failed transmit status; then the good CONNECT.
    let connect_x = encode(&connect_packet("bad-xbee", true));
    let rx = zigbee_rx(RADIO_A, &connect_x);
    let mut bytes = xbee_frame_with_checksum(true, &rx, xbee_checksum(&rx) ^ 0x55);
    bytes.extend([0x00, 0x42, 0xFF, 0x99, 0x13]);
    let whole = xbee_frame(true, &rx);
    bytes.extend(&whole[..whole.len() / 2]);
    bytes.extend([XBEE_START, 0x70, 0x00, 0x90, 0x01, 0x02]);
    bytes.extend(xbee_frame(true, &[0x8A, 0x00]));
    bytes.extend(xbee_frame(
        true,
        &[0x8B, 0x01, 0xFF, 0xFE, 0x00, 0x24, 0x00],
    ));
    xb.send_bytes(&bytes).await;
    // The good CONNECT one byte per write: the frame is reassembled from pieces.
    for b in xb.frame(RADIO_A, &connect_x) {
        xb.send_bytes(&[b]).await;
        tokio::task::yield_now().await;
    }

    // SLIP with CRC: the CONNECT with its CRC wrong; line noise; a bad escape;
    // a frame too short to hold a CRC; then the good CONNECT.
    let connect_s = encode(&connect_packet("bad-slip", true));
    let mut body = connect_s.clone();
    body.extend((crc16(&connect_s) ^ 0x0101).to_be_bytes());
    let mut bytes = slip_frame_bytes(&body);
    bytes.extend([0x12, 0x34, 0x56, SLIP_END]);
    bytes.extend([SLIP_END, 0x05, SLIP_ESC, 0x41, 0x00, SLIP_END]);
    bytes.extend(slip_frame_bytes(&[0x02]));
    slip.send_bytes(&bytes).await;
    slip.send(NO_RADIO, &connect_packet("bad-slip", true)).await;

    // Raw: bytes that cannot start a message — a Length of 0, a 3-byte
    // Length over the maximum, reserved message types. (With no delimiter,
    // a raw link can only skip what cannot be a header; this garbage is
    // chosen so that no suffix of it reads as one, and the CONNECT's client
    // id is 24 bytes so its Length, 30 = 0x1E, is no message type either.)
    raw.send_bytes(&[0x00, 0x01, 0xFF, 0xFF, 0xFF, 0x99, 0xEE, 0x42])
        .await;
    let raw_id = "raw-garbage-test-device1";
    assert_eq!(raw_id.len(), 24);
    raw.send(NO_RADIO, &connect_packet(raw_id, true)).await;

    for (far, radio, name) in [
        (&mut xb, RADIO_A, "xbee"),
        (&mut slip, NO_RADIO, "slip"),
        (&mut raw, NO_RADIO, "raw"),
    ] {
        match far.recv(radio).await {
            Packet::ConnAck { return_code } if return_code.is_accepted() => {}
            other => panic!("{name}: expected an accepting CONNACK, got {other:?}"),
        }
        // Exactly one CONNACK: the next answer is the PINGRESP.
        far.ping(radio).await;
    }

    // The links keep working after the bad input: what the XBee device
    // publishes reaches the raw device and the SLIP device.
    let t_raw = raw.subscribe(NO_RADIO, 1, "resync/t").await;
    let t_slip = slip.subscribe(NO_RADIO, 1, "resync/t").await;
    let t_xb = xb.register(RADIO_A, 1, "resync/t").await;
    xb.publish_qos1(RADIO_A, t_xb, 2, b"still here").await;
    for (far, topic_id, name) in [(&mut raw, t_raw, "raw"), (&mut slip, t_slip, "slip")] {
        match far.recv(NO_RADIO).await {
            Packet::Publish {
                topic,
                payload,
                qos,
                msg_id,
                ..
            } => {
                assert_eq!(topic, TopicRef::Id(topic_id), "{name}");
                assert_eq!(&payload[..], b"still here", "{name}");
                far.send(
                    NO_RADIO,
                    &Packet::PubAck {
                        topic_id,
                        msg_id,
                        return_code: ReturnCode::Accepted,
                    },
                )
                .await;
                assert_eq!(qos, QoS::AtLeastOnce, "{name}");
            }
            other => panic!("{name}: expected PUBLISH, got {other:?}"),
        }
        far.ping(NO_RADIO).await;
    }
    gw.stop().await;
}

// ------------------------------------------------------------ 5. unplug and replug

/// The dongle is pulled out (the pty closed) while its device is connected
/// and subscribed, and a message for it is published meanwhile; a new pty
/// appears under the same name; the gateway reopens it (every second here),
/// and the device reconnects with its session: the subscription holds, and
/// the message published while the port was gone is redelivered by the
/// engine, then new ones flow.
#[tokio::test]
async fn unplugged_port_is_reopened_and_the_device_resumes_its_session() {
    let wire = Wire::Xbee { escaped: true };
    let (gw, mut xb, path) = gateway_with_port(wire, |_| {}).await;
    xb.connect(RADIO_A, "plug-dev", false).await;
    let topic_id = xb.subscribe(RADIO_A, 1, "plug/t").await;
    assert_ne!(topic_id, 0);
    let mut udp = connect(gw.addr, "udp-plug").await;

    // Unplug: master and slave closed; the gateway's reads fail.
    drop(xb);
    udp.publish_named("plug/t", "while away", QoS::AtLeastOnce, false)
        .await
        .expect("UDP publish while the port is gone");

    // Replug: a new pty behind the same name.
    let pty = Pty::open();
    path.repoint(&pty);
    pty.wait_opened(OPEN_WAIT).await;
    let mut xb = Far::new(pty, wire);

    // Reconnect, keeping the session. (The CONNECT is resent when 200 ms
    // pass with no frame at all, in case the first was read before the port
    // was set up; the CONNACKs of resent ones are skipped.)
    let deadline = Instant::now() + OPEN_WAIT;
    'connect: loop {
        xb.send(RADIO_A, &connect_packet("plug-dev", false)).await;
        loop {
            let wait = (Instant::now() + Duration::from_millis(200)).min(deadline);
            match xb.read_frame(wait).await {
                Some(Frame {
                    to: Some(RADIO_A),
                    packet: Packet::ConnAck { return_code },
                }) if return_code.is_accepted() => break 'connect,
                // The engine may resend its unacknowledged PUBLISH first.
                Some(other) => xb.stash.push_back(other),
                None => {
                    assert!(Instant::now() < deadline, "no CONNACK on the new pty");
                    xb.extra_connacks += 1;
                    break;
                }
            }
        }
    }
    let mut topics: Topics = vec![(topic_id, "plug/t".to_owned())];
    let mut got = Vec::new();
    udp.publish_named("plug/t", "back", QoS::AtLeastOnce, false)
        .await
        .expect("UDP publish after the replug");
    while got.len() < 2 {
        let (topic, payload) = xb.receive_publish(RADIO_A, &mut topics).await;
        assert_eq!(topic, "plug/t");
        if !got.contains(&payload) {
            got.push(payload);
        }
    }
    assert_eq!(got, [&b"while away"[..], &b"back"[..]]);
    gw.stop().await;
}

/// A port that is not there at start-up does not stop the gateway: it is
/// opened when it appears.
#[tokio::test]
async fn port_missing_at_startup_is_opened_when_it_appears() {
    let path = SerialPath::dangling();
    let device = path.device();
    let gw = start_gateway_with(|c| c.serial = vec![Wire::Raw.config(device)]).await;
    // The gateway runs meanwhile: a UDP device connects.
    let udp = connect(gw.addr, "udp-meanwhile").await;
    let pty = Pty::open();
    path.repoint(&pty);
    pty.wait_opened(OPEN_WAIT).await;
    let mut dev = Far::new(pty, Wire::Raw);
    dev.connect(NO_RADIO, "late-dev", true).await;
    dev.ping(NO_RADIO).await;
    udp.disconnect().await.expect("UDP disconnect");
    gw.stop().await;
}

// ------------------------------------------------------------ 6. through to a real mosquitto

/// An MQTT client on the broker, subscribed to `filter` at QoS 1; its
/// messages arrive on the receiver.
async fn mqtt_watch(
    port: u16,
    id: &str,
    filter: &str,
) -> (AsyncClient, mpsc::UnboundedReceiver<rumqttc::Publish>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut event_loop) = AsyncClient::new(opts, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(MqttPacket::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(MqttPacket::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    client
        .subscribe(filter, MqttQoS::AtLeastOnce)
        .await
        .expect("MQTT subscribe");
    timeout(WAIT, ready.recv())
        .await
        .expect("SUBACK from mosquitto in time")
        .expect("MQTT event loop alive");
    (client, rx)
}

/// An XBee device publishes at QoS 1 and a subscriber on a real mosquitto
/// receives it; then a message published on the broker reaches the radio.
#[tokio::test]
async fn xbee_device_through_to_a_real_mosquitto() {
    let broker = Mosquitto::start().await;
    let port = broker.port;
    let (gw, mut xb, _path) = gateway_with_port(Wire::Xbee { escaped: true }, |c| {
        c.upstream = Some(upstream_to(port, "sngate-serial"));
    })
    .await;
    let (mqtt, mut watch) = mqtt_watch(port, "mqtt-watch", "xbee/up/#").await;

    xb.connect(RADIO_B, "xbee-up", true).await;
    let cmd = xb.subscribe(RADIO_B, 1, "xbee/down/cmd").await;
    let temp = xb.register(RADIO_B, 2, "xbee/up/temp").await;
    xb.publish_qos1(RADIO_B, temp, 3, b"22.5\x7E").await;
    let p = timeout(WAIT * 3, watch.recv())
        .await
        .expect("the MQTT subscriber gets the radio's message in time")
        .expect("MQTT event loop alive");
    assert_eq!(p.topic, "xbee/up/temp");
    assert_eq!(&p.payload[..], b"22.5\x7E");
    assert_eq!(p.qos, MqttQoS::AtLeastOnce);

    // The bridge sends subscriptions ahead of messages on its one
    // connection: the radio's subscription is in place at the broker now.
    mqtt.publish("xbee/down/cmd", MqttQoS::AtLeastOnce, false, "on")
        .await
        .expect("MQTT publish");
    let mut topics: Topics = vec![(cmd, "xbee/down/cmd".to_owned())];
    let (topic, payload) = xb.receive_publish(RADIO_B, &mut topics).await;
    assert_eq!(
        (topic.as_str(), &payload[..]),
        ("xbee/down/cmd", &b"on"[..])
    );
    gw.stop().await;
    drop(broker);
}

// ------------------------------------------------------------ review findings

/// A radio module that stops taking bytes (hardware flow control holding CTS
/// low, a hung module; here: the pty master is not read) must not stop the
/// gateway hearing the port — the two directions are independent. The port
/// task awaits `write_all` inside its `select!` branch, so once the tty's
/// output buffer is full it never reads again (and, no error ever coming,
/// never reopens the port either).
#[tokio::test]
async fn a_stalled_write_does_not_stop_reading_the_port() {
    let (gw, mut xb, _path) = gateway_with_port(Wire::Xbee { escaped: true }, |_| {}).await;
    xb.connect(RADIO_A, "stall-a", true).await;
    xb.connect(RADIO_B, "stall-b", true).await;
    xb.subscribe(RADIO_A, 1, "stall/flood").await;
    let up = xb.register(RADIO_B, 2, "stall/up").await;
    let mut udp = connect(gw.addr, "udp-stall").await;
    udp.subscribe(SubscribeTopic::Name("stall/up".into()), QoS::AtMostOnce)
        .await
        .expect("UDP subscribe");

    // About 190 KB for radio A, which the far end never reads: far more than
    // a pty holds, so the gateway's write to the port blocks.
    let payload = Bytes::from(vec![0x55u8; 1900]);
    for _ in 0..100 {
        udp.publish_named("stall/flood", payload.clone(), QoS::AtMostOnce, false)
            .await
            .expect("UDP publish");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Radio B publishes: the UDP subscriber must still get it.
    xb.send(
        RADIO_B,
        &Packet::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicRef::Id(up),
            msg_id: 0,
            payload: Bytes::from_static(b"still heard"),
        },
    )
    .await;
    let m = expect_message(&mut udp).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("stall/up", &b"still heard"[..])
    );
    gw.stop().await;
}

/// The engine checks a message for a device against `max_packet_bytes`, then
/// the driver wraps it in an encapsulation for a forwarded node, and the SLIP
/// (and raw) framer refuses anything over `max_frame` = `max_packet_bytes`
/// — encapsulation included. A PUBLISH that fits for the engine is silently
/// dropped on the port (`dropped_out`), every retry too; the same message
/// reaches a node behind a UDP forwarder.
#[tokio::test]
async fn a_forwarded_node_receives_a_message_of_max_packet_bytes() {
    let (gw, mut fwd, _path) = gateway_with_port(Wire::Slip { crc: false }, |c| {
        c.gateway.max_packet_bytes = 64;
    })
    .await;

    async fn next_for_node(fwd: &mut Far, node: u8) -> Packet {
        match fwd.next().await.packet {
            Packet::Encapsulated { node_id, inner, .. } => {
                assert_eq!(&node_id[..], &[node]);
                *inner
            }
            other => panic!("expected an encapsulation for node {node}, got {other:?}"),
        }
    }

    fwd.send(NO_RADIO, &encapsulated(1, connect_packet("big-node", true)))
        .await;
    assert!(matches!(
        next_for_node(&mut fwd, 1).await,
        Packet::ConnAck { return_code } if return_code.is_accepted()
    ));
    let sub = Packet::Subscribe {
        dup: false,
        qos: QoS::AtMostOnce,
        msg_id: 1,
        topic: SubscribeTopic::Name("big/t".into()),
    };
    fwd.send(NO_RADIO, &encapsulated(1, sub)).await;
    let topic_id = match next_for_node(&mut fwd, 1).await {
        Packet::SubAck {
            topic_id,
            return_code: ReturnCode::Accepted,
            ..
        } => topic_id,
        other => panic!("expected SUBACK, got {other:?}"),
    };

    // PUBLISH to the node: 7 bytes of header + 57 of payload = 64, exactly
    // max_packet_bytes.
    let mut udp = connect(gw.addr, "udp-big").await;
    let payload = Bytes::from(vec![0x42u8; 57]);
    udp.publish_named("big/t", payload.clone(), QoS::AtMostOnce, false)
        .await
        .expect("UDP publish");
    match next_for_node(&mut fwd, 1).await {
        Packet::Publish {
            topic, payload: p, ..
        } => {
            assert_eq!(topic, TopicRef::Id(topic_id));
            assert_eq!(p, payload);
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    gw.stop().await;
}

/// docs/serial.md: "messages for the missing port are dropped and counted
/// rather than held in the port task". The port task drains its queue once
/// when the port is lost, then sleeps its backoff with the queue open: what
/// the engine sends meanwhile (up to 256 messages, up to `reopen_max_secs`
/// old) is held and written into whatever is plugged in next, uncounted.
#[tokio::test]
async fn messages_for_a_missing_port_are_not_written_after_the_reopen() {
    let wire = Wire::Xbee { escaped: true };
    let (gw, mut xb, path) = gateway_with_port(wire, |_| {}).await;
    xb.connect(RADIO_A, "stale-dev", true).await;
    xb.subscribe(RADIO_A, 1, "stale/t").await;
    let mut udp = connect(gw.addr, "udp-stale").await;

    // Unplug; once the gateway has seen it (it reads end of stream at once),
    // a message for the device is published while the port is away.
    drop(xb);
    tokio::time::sleep(Duration::from_millis(200)).await;
    udp.publish_named("stale/t", "while away", QoS::AtMostOnce, false)
        .await
        .expect("UDP publish while the port is gone");
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Replug before the backoff (1 s) ends.
    let pty = Pty::open();
    path.repoint(&pty);
    pty.wait_opened(OPEN_WAIT).await;
    let mut xb = Far::new(pty, wire);
    // The device has not said anything on the new port: nothing is due.
    if let Some(f) = xb
        .read_frame(Instant::now() + Duration::from_millis(700))
        .await
    {
        panic!("the gateway wrote a message held from before the reopen: {f:?}");
    }
    gw.stop().await;
}
