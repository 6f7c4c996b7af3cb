//! The client against a scripted fake gateway (a plain UDP socket), for what
//! the real gateway never does on purpose: lose a CONNECT, send a PUBLISH on an
//! unknown id, resend a QoS 2 PUBLISH.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;

use super::{Client, ClientError, ConnectOptions, Will};
use crate::proto::{self, Packet, QoS, ReturnCode, TopicRef, WillTopic};

const WAIT: Duration = Duration::from_secs(3);

struct FakeGateway {
    socket: UdpSocket,
    client: Option<SocketAddr>,
}

impl FakeGateway {
    async fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        FakeGateway {
            socket,
            client: None,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    async fn recv(&mut self) -> Packet {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("a datagram from the client in time")
            .expect("recv");
        self.client = Some(from);
        proto::decode(&buf[..n]).expect("the client sends valid packets")
    }

    async fn send(&self, packet: &Packet) {
        let mut buf = BytesMut::new();
        proto::encode(packet, &mut buf).expect("encode");
        let to = self.client.expect("the client spoke first");
        self.socket.send_to(&buf, to).await.expect("send");
    }
}

fn fast(client_id: &str) -> ConnectOptions {
    ConnectOptions::new(client_id).retry(Duration::from_millis(200), 3)
}

#[tokio::test]
async fn connect_is_retried_and_runs_the_will_handshake() {
    let mut gw = FakeGateway::new().await;
    let will = Will {
        topic: "dev/status".to_owned(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
    };
    let opts = fast("dev").will(will).keep_alive(30);
    let connecting = tokio::spawn(Client::connect(gw.addr(), opts));

    let connect = |p: &Packet| matches!(p, Packet::Connect { will: true, clean_session: true, duration: 30, client_id, .. } if client_id == "dev");
    assert!(connect(&gw.recv().await), "CONNECT first");
    // First CONNECT "lost": the client sends it again after retry_interval.
    assert!(connect(&gw.recv().await), "CONNECT resent");
    gw.send(&Packet::WillTopicReq).await;
    assert_eq!(
        gw.recv().await,
        Packet::WillTopic(Some(WillTopic {
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "dev/status".to_owned(),
        }))
    );
    gw.send(&Packet::WillMsgReq).await;
    assert_eq!(
        gw.recv().await,
        Packet::WillMsg {
            payload: Bytes::from_static(b"gone")
        }
    );
    gw.send(&Packet::ConnAck {
        return_code: ReturnCode::Accepted,
    })
    .await;
    let client = connecting.await.expect("join").expect("connected");
    assert_eq!(client.client_id(), "dev");
}

#[tokio::test]
async fn a_silent_gateway_gives_a_timeout_after_the_retries() {
    let mut gw = FakeGateway::new().await;
    let opts = fast("dev").retry(Duration::from_millis(50), 2);
    let connecting = tokio::spawn(Client::connect(gw.addr(), opts));
    for _ in 0..3 {
        assert!(matches!(gw.recv().await, Packet::Connect { .. }));
    }
    let result = connecting.await.expect("join");
    assert!(
        matches!(
            result,
            Err(ClientError::Timeout {
                waiting_for: "CONNACK",
                attempts: 3
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_unreachable_not_a_plain_timeout() {
    // A port that was just free: the kernel answers with ICMP port unreachable.
    let addr = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("local addr")
    };
    let result = Client::connect(addr, fast("dev").retry(Duration::from_millis(50), 2)).await;
    assert!(
        matches!(
            result,
            Err(ClientError::Unreachable {
                waiting_for: "CONNACK",
                attempts: 3
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_refused_connect_is_an_error() {
    let mut gw = FakeGateway::new().await;
    let connecting = tokio::spawn(Client::connect(gw.addr(), fast("dev")));
    gw.recv().await;
    gw.send(&Packet::ConnAck {
        return_code: ReturnCode::Congestion,
    })
    .await;
    let result = connecting.await.expect("join");
    assert!(
        matches!(result, Err(ClientError::Rejected(ReturnCode::Congestion))),
        "{result:?}"
    );
}

async fn connected(gw: &mut FakeGateway, opts: ConnectOptions) -> Client {
    let connecting = tokio::spawn(Client::connect(gw.addr(), opts));
    assert!(matches!(gw.recv().await, Packet::Connect { .. }));
    gw.send(&Packet::ConnAck {
        return_code: ReturnCode::Accepted,
    })
    .await;
    connecting.await.expect("join").expect("connected")
}

#[tokio::test]
async fn incoming_publishes_are_answered_as_a_device_must() {
    let mut gw = FakeGateway::new().await;
    let mut client = connected(&mut gw, fast("dev")).await;

    // An id the client does not hold: PUBACK "invalid topic id", no message.
    let publish = |msg_id, qos, dup| Packet::Publish {
        dup,
        qos,
        retain: false,
        topic: TopicRef::Id(7),
        msg_id,
        payload: Bytes::from_static(b"x"),
    };
    gw.send(&publish(1, QoS::AtLeastOnce, false)).await;
    assert_eq!(
        gw.recv().await,
        Packet::PubAck {
            topic_id: 7,
            msg_id: 1,
            return_code: ReturnCode::InvalidTopicId
        }
    );

    // REGISTER is answered and gives the id its name.
    gw.send(&Packet::Register {
        topic_id: 7,
        msg_id: 2,
        topic_name: "a/b".to_owned(),
    })
    .await;
    assert_eq!(
        gw.recv().await,
        Packet::RegAck {
            topic_id: 7,
            msg_id: 2,
            return_code: ReturnCode::Accepted
        }
    );
    assert_eq!(client.topic_name(7).as_deref(), Some("a/b"));

    // QoS 2, resent before PUBREL: two PUBRECs, one message, then PUBCOMP.
    gw.send(&publish(3, QoS::ExactlyOnce, false)).await;
    assert_eq!(gw.recv().await, Packet::PubRec { msg_id: 3 });
    gw.send(&publish(3, QoS::ExactlyOnce, true)).await;
    assert_eq!(gw.recv().await, Packet::PubRec { msg_id: 3 });
    gw.send(&Packet::PubRel { msg_id: 3 }).await;
    assert_eq!(gw.recv().await, Packet::PubComp { msg_id: 3 });
    let m = client.recv_message(WAIT).await.expect("the QoS 2 message");
    assert_eq!((m.topic.as_str(), m.qos), ("a/b", QoS::ExactlyOnce));
    assert!(client.try_message().is_none(), "delivered once");

    // QoS 1 is acknowledged with the topic id echoed.
    gw.send(&publish(4, QoS::AtLeastOnce, false)).await;
    assert_eq!(
        gw.recv().await,
        Packet::PubAck {
            topic_id: 7,
            msg_id: 4,
            return_code: ReturnCode::Accepted
        }
    );
    assert_eq!(client.recv_message(WAIT).await.expect("QoS 1").topic, "a/b");

    // The gateway's PINGREQ is answered.
    gw.send(&Packet::PingReq { client_id: None }).await;
    assert_eq!(gw.recv().await, Packet::PingResp);
}

#[tokio::test]
async fn an_idle_client_pings_within_its_keep_alive() {
    let mut gw = FakeGateway::new().await;
    let _client = connected(&mut gw, fast("dev").keep_alive(1)).await;
    assert_eq!(gw.recv().await, Packet::PingReq { client_id: None });
    gw.send(&Packet::PingResp).await;
    assert_eq!(gw.recv().await, Packet::PingReq { client_id: None });
}

#[tokio::test]
async fn a_rejected_publish_returns_the_return_code() {
    let mut gw = FakeGateway::new().await;
    let mut client = connected(&mut gw, fast("dev")).await;
    let publishing = tokio::spawn(async move {
        let result = client
            .publish(TopicRef::Id(9), "x", QoS::ExactlyOnce, false)
            .await;
        (client, result)
    });
    let Packet::Publish { msg_id, .. } = gw.recv().await else {
        panic!("expected PUBLISH");
    };
    gw.send(&Packet::PubAck {
        topic_id: 9,
        msg_id,
        return_code: ReturnCode::InvalidTopicId,
    })
    .await;
    let (_client, result) = publishing.await.expect("join");
    assert!(
        matches!(
            result,
            Err(ClientError::Rejected(ReturnCode::InvalidTopicId))
        ),
        "{result:?}"
    );
}
