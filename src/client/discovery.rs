//! What a device does without a connection: look for a gateway (SEARCHGW →
//! GWINFO, fact sheet §7.1; over UDP) and publish at QoS −1 (§7.4, trap T-14;
//! over UDP or a serial link).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::link::ephemeral_socket;
use super::{ClientError, Endpoint, serial};
use crate::proto::{self, Packet, QoS, TopicRef};

/// A gateway that answered SEARCHGW.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayInfo {
    /// Its gateway id.
    pub gw_id: u8,
    /// The address the GWINFO came from.
    pub addr: SocketAddr,
    /// The gateway address carried in the GWINFO (empty when a gateway itself
    /// answered; set when a client answered on a gateway's behalf).
    pub gw_addr: Bytes,
}

/// Sends SEARCHGW with `radius` to `target` (a gateway's unicast address, or
/// a broadcast/multicast address) and returns the first GWINFO received
/// within `timeout`.
pub async fn search_gateway(
    target: SocketAddr,
    radius: u8,
    timeout: Duration,
) -> Result<GatewayInfo, ClientError> {
    let socket = ephemeral_socket(target).await?;
    if target.is_ipv4() {
        socket.set_broadcast(true)?;
    }
    let mut buf = BytesMut::new();
    proto::encode(&Packet::SearchGw { radius }, &mut buf)?;
    socket.send_to(&buf, target).await?;
    let deadline = Instant::now() + timeout;
    let mut incoming = vec![0u8; 65_536];
    loop {
        let (n, from) =
            match tokio::time::timeout_at(deadline, socket.recv_from(&mut incoming)).await {
                Ok(received) => received?,
                Err(_elapsed) => {
                    return Err(ClientError::Timeout {
                        waiting_for: "GWINFO",
                        attempts: 1,
                    });
                }
            };
        if let Some(Ok(Packet::GwInfo { gw_id, gw_addr })) = incoming.get(..n).map(proto::decode) {
            return Ok(GatewayInfo {
                gw_id,
                addr: from,
                gw_addr,
            });
        }
    }
}

/// Publishes at QoS −1 from a fresh UDP socket, with no connection: to a
/// pre-defined id ([`TopicRef::Predefined`]) or a short name
/// ([`TopicRef::Short`]). Fire and forget: nothing says whether the gateway
/// accepted it.
pub async fn publish_minus_one(
    gateway: SocketAddr,
    topic: TopicRef,
    payload: impl Into<Bytes>,
    retain: bool,
) -> Result<(), ClientError> {
    publish_minus_one_via(&Endpoint::Udp(gateway), topic, payload, retain).await
}

/// [`publish_minus_one`] over any link: a UDP address, or a serial port
/// opened for the message.
pub async fn publish_minus_one_via(
    gateway: &Endpoint,
    topic: TopicRef,
    payload: impl Into<Bytes>,
    retain: bool,
) -> Result<(), ClientError> {
    if matches!(topic, TopicRef::Id(_)) {
        return Err(ClientError::InvalidArgument(
            "QoS -1 needs a pre-defined id or a short name, not a registered id",
        ));
    }
    send_once(
        gateway,
        &Packet::Publish {
            dup: false,
            qos: QoS::MinusOne,
            retain,
            topic,
            msg_id: 0,
            payload: payload.into(),
        },
    )
    .await
}

/// Publishes at QoS −1 with the full topic name in the message (the
/// length-prefixed form of Paho's MQTTSNPacket library, trap T-14; not v1.2,
/// accepted by sngate unless `gateway.accept_qos_minus_one_named` is off).
pub async fn publish_minus_one_named(
    gateway: SocketAddr,
    topic_name: &str,
    payload: impl Into<Bytes>,
    retain: bool,
) -> Result<(), ClientError> {
    publish_minus_one_named_via(&Endpoint::Udp(gateway), topic_name, payload, retain).await
}

/// [`publish_minus_one_named`] over any link.
pub async fn publish_minus_one_named_via(
    gateway: &Endpoint,
    topic_name: &str,
    payload: impl Into<Bytes>,
    retain: bool,
) -> Result<(), ClientError> {
    send_once(
        gateway,
        &Packet::PublishNamedMinusOne {
            dup: false,
            retain,
            msg_id: 0,
            topic_name: topic_name.to_owned(),
            payload: payload.into(),
        },
    )
    .await
}

/// MQTT-SN 2.0's PUBWOS (publish without session, §3.6, the successor of
/// 1.2's QoS −1): one datagram to `topic` — a full name or a predefined
/// alias — with no connection and no answer.
pub async fn publish_without_session_via(
    gateway: &Endpoint,
    topic: sngate_wire::v2::Topic,
    payload: impl Into<Bytes>,
    retain: bool,
) -> Result<(), ClientError> {
    let packet = sngate_wire::v2::Packet::PubWos(sngate_wire::v2::PubWos {
        retain,
        topic,
        payload: payload.into(),
    });
    let mut buf = BytesMut::new();
    sngate_wire::v2::encode(&packet, &mut buf)
        .map_err(|_| ClientError::InvalidArgument("the PUBWOS cannot be encoded"))?;
    send_bytes(gateway, &buf).await
}

async fn send_once(gateway: &Endpoint, packet: &Packet) -> Result<(), ClientError> {
    let mut buf = BytesMut::new();
    proto::encode(packet, &mut buf)?;
    send_bytes(gateway, &buf).await
}

async fn send_bytes(gateway: &Endpoint, buf: &[u8]) -> Result<(), ClientError> {
    match gateway {
        Endpoint::Udp(addr) => {
            let socket = ephemeral_socket(*addr).await?;
            socket.send_to(buf, addr).await?;
            Ok(())
        }
        Endpoint::Serial(port) => serial::send_once(port, buf).await,
        Endpoint::Dtls { gateway, psk } => {
            super::dtls::send_once(*gateway, super::dtls::Creds::Psk(psk), buf).await
        }
        Endpoint::DtlsCert { gateway, cert } => {
            super::dtls::send_once(*gateway, super::dtls::Creds::Cert(cert), buf).await
        }
    }
}
