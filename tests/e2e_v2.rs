//! MQTT-SN 2.0 end to end (issue 21, first slice): a 2.0 device and a 1.2
//! device on the same gateway port at once, over real UDP, bridged to a
//! real mosquitto watched by an MQTT client. Messages go every way: the 2.0
//! device's reach the broker and the 1.2 device; the 1.2 device's and the
//! MQTT client's reach the 2.0 device; the 1.2 device's reach the broker;
//! a malformed 2.0 packet ends its sender's virtual connection (DISCONNECT
//! 0x81), truncated CONNECTs from a stranger are dropped, and 2.0 devices
//! connect and publish after them.

mod common;

use bytes::{Bytes, BytesMut};
use common::checker::Checker;
use common::mosquitto::Mosquitto;
use common::{RawDevice, WAIT, connect, start_gateway_with, upstream_to};
use sngate::proto::{QoS, SubscribeTopic};
use sngate_wire::v2::{self, Delivery, Publish, ReasonCode, Topic};

/// A 2.0 device on a raw UDP socket.
struct V2Device(RawDevice);

impl V2Device {
    async fn new(gateway: std::net::SocketAddr) -> Self {
        V2Device(RawDevice::new(gateway).await)
    }

    async fn send(&self, packet: &v2::Packet) {
        let mut buf = BytesMut::new();
        v2::encode(packet, &mut buf).expect("encode");
        self.0.send_bytes(&buf).await;
    }

    async fn recv(&self) -> v2::Packet {
        let bytes = self.0.recv_bytes().await;
        v2::decode(&bytes)
            .unwrap_or_else(|e| panic!("gateway sent a bad 2.0 datagram {bytes:02x?}: {e}"))
    }

    /// CONNECT with an empty client id: the CONNACK assigns one.
    async fn connect(&self, packet_id: u16) -> String {
        self.send(&v2::Packet::Connect(Box::new(v2::Connect {
            clean_start: true,
            allow_address_change: false,
            allow_server_suggested: false,
            packet_id,
            keep_alive: 30,
            max_packet_size: 0,
            default_awake_messages: None,
            session_expiry: None,
            will: None,
            auth: None,
            client_id: String::new(),
        })))
        .await;
        match self.recv().await {
            v2::Packet::ConnAck(c)
                if c.reason == ReasonCode::SUCCESS && c.packet_id == packet_id =>
            {
                assert!(!c.assigned_client_id.is_empty());
                c.assigned_client_id
            }
            other => panic!("an accepting 2.0 CONNACK expected, got {other:?}"),
        }
    }

    /// SUBSCRIBE to `filter` at QoS 1, expecting a granting SUBACK.
    async fn subscribe(&self, packet_id: u16, filter: &str) {
        self.send(&v2::Packet::Subscribe(v2::Subscribe {
            options: v2::SubscribeOptions {
                no_local: false,
                max_qos: v2::QoS::AtLeastOnce,
                retain_as_published: false,
                retain_handling: v2::RetainHandling::SendAtSubscribe,
            },
            packet_id,
            topic: Topic::Name(filter.into()),
        }))
        .await;
        match self.recv().await {
            v2::Packet::SubAck(a)
                if a.packet_id == packet_id && a.reason == Some(ReasonCode::GRANTED_QOS_1) => {}
            other => panic!("SUBACK granting QoS 1 expected, got {other:?}"),
        }
    }

    /// The next message delivered: the gateway REGISTERs the topic (a
    /// wildcard subscription) and PUBLISHes by its alias; both are answered.
    async fn delivery(&self) -> (String, Bytes) {
        let (alias, name) = match self.recv().await {
            v2::Packet::Register(r) => {
                self.send(&v2::Packet::RegAck(v2::RegAck {
                    alias_kind: v2::AliasKind::Session,
                    packet_id: r.packet_id,
                    alias: None,
                    reason: None,
                }))
                .await;
                (
                    r.alias.expect("a server REGISTER carries its alias"),
                    r.topic_name,
                )
            }
            other => panic!("REGISTER expected, got {other:?}"),
        };
        match self.recv().await {
            v2::Packet::Publish(p) if p.topic == Topic::SessionAlias(alias) => {
                if let Some(packet_id) = p.delivery.packet_id() {
                    self.send(&v2::Packet::PubAck(v2::Ack {
                        packet_id,
                        reason: None,
                    }))
                    .await;
                }
                (name, p.payload)
            }
            other => panic!("PUBLISH by alias {alias} expected, got {other:?}"),
        }
    }

    /// PUBLISH at QoS 1 to a full topic name, expecting its PUBACK.
    async fn publish(&self, packet_id: u16, topic: &str, payload: &'static str) {
        self.send(&v2::Packet::Publish(Publish {
            delivery: Delivery::AtLeastOnce { packet_id },
            retain: false,
            topic: Topic::Name(topic.into()),
            payload: Bytes::from_static(payload.as_bytes()),
        }))
        .await;
        match self.recv().await {
            v2::Packet::PubAck(a)
                if a.packet_id == packet_id && a.reason_or_success().is_success() => {}
            other => panic!("PUBACK {packet_id} expected, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_both_versions_share_a_port_and_reach_the_broker() {
    let broker = Mosquitto::start().await;
    let port = broker.port;
    let gw = start_gateway_with(|c| c.upstream = Some(upstream_to(port, "sngate-v2-e2e"))).await;
    let mut watcher = Checker::connect(port, "v2-watcher").await;
    watcher.subscribe("both/#").await;

    // A 1.2 device, subscribed to what the 2.0 device publishes.
    let mut old = connect(gw.addr, "old12").await;
    old.subscribe(SubscribeTopic::Name("both/from20".into()), QoS::AtLeastOnce)
        .await
        .expect("1.2 subscribe");

    let new = V2Device::new(gw.addr).await;
    let assigned = new.connect(1).await;
    assert!(assigned.starts_with("sngate-"), "{assigned}");

    new.publish(2, "both/from20", "hello from 2.0").await;
    old.publish_named("both/from12", "hello from 1.2", QoS::AtLeastOnce, false)
        .await
        .expect("1.2 publish");

    // The broker's client gets both; the 1.2 device gets the 2.0 device's.
    let got = watcher.collect(WAIT * 3, |got| got.len() >= 2).await;
    assert!(
        got.contains(&("both/from20".into(), "hello from 2.0".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("both/from12".into(), "hello from 1.2".into())),
        "{got:?}"
    );
    let m = common::expect_message(&mut old).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("both/from20", &b"hello from 2.0"[..])
    );

    // The other way: an MQTT client and the 1.2 device publish to the 2.0
    // device's subscription.
    new.subscribe(5, "down/#").await;
    watcher
        .publish("down/from-mqtt", "hello 2.0 from MQTT", false)
        .await;
    assert_eq!(
        new.delivery().await,
        (
            "down/from-mqtt".into(),
            Bytes::from_static(b"hello 2.0 from MQTT")
        )
    );
    old.publish_named("down/from12", "hello 2.0 from 1.2", QoS::AtLeastOnce, false)
        .await
        .expect("1.2 publish");
    assert_eq!(
        new.delivery().await,
        (
            "down/from12".into(),
            Bytes::from_static(b"hello 2.0 from 1.2")
        )
    );

    // PINGREQ is answered with its own packet id.
    new.send(&v2::Packet::PingReq { packet_id: 0x77 }).await;
    assert_eq!(
        new.recv().await,
        v2::Packet::PingResp {
            packet_id: 0x77,
            messages_remaining: None
        }
    );

    // A malformed packet ends the device's virtual connection (§4.12.1):
    // DISCONNECT 0x81. Truncated and malformed CONNECTs from a stranger are
    // dropped without an answer.
    new.0
        .send_bytes(&[0x07, 0x03, 0x04, 0x00, 0x05, b'h', b'i'])
        .await; // reserved bit
    match new.recv().await {
        v2::Packet::Disconnect(d) => assert_eq!(d.reason, Some(ReasonCode::MALFORMED_PACKET)),
        other => panic!("DISCONNECT 0x81 expected, got {other:?}"),
    }
    let stranger = RawDevice::new(gw.addr).await;
    stranger.send_bytes(&[0x0c, 0x01, 0x01, 0x00]).await; // truncated CONNECT
    stranger
        .send_bytes(&[0x0c, 0x01, 0x81, 0, 1, 2, 0, 60, 0, 0, b'x', b'y'])
        .await;

    // The device connects again and publishes; a new one connects and publishes.
    new.connect(4).await;
    new.publish(3, "both/after", "still here").await;
    let fresh = V2Device::new(gw.addr).await;
    fresh.connect(1).await;
    fresh.publish(1, "both/fresh", "new device").await;
    let got = watcher.collect(WAIT * 3, |got| got.len() >= 2).await;
    assert!(
        got.contains(&("both/after".into(), "still here".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("both/fresh".into(), "new device".into())),
        "{got:?}"
    );

    gw.stop().await;
}
