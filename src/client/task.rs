//! The receive task: reads the client's link (socket or serial port), answers what a device answers
//! by itself (REGISTER, PUBLISH acknowledgements, PUBREL, the gateway's
//! PINGREQ), sends keep-alive pings, and routes everything else — the answers to
//! the client's requests — to the [`Client`](super::Client).

use std::io::ErrorKind;
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tracing::debug;

use super::Message;
use super::link::{Link, WireRx};
use super::v2;
use crate::proto::{self, MsgType, Packet, QoS, ReturnCode, TopicRef};

/// How often the task looks at the keep-alive when pings are off.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Runs until the link fails or the client drops the task.
pub(super) async fn run(
    link: Link,
    mut wire: WireRx,
    responses: mpsc::Sender<Packet>,
    messages: mpsc::Sender<Message>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let ping_at = {
            let s = link.state();
            s.ping_every.map(|every| s.last_sent + every * 3 / 4)
        };
        let wake = ping_at.unwrap_or_else(|| Instant::now() + IDLE_CHECK);
        tokio::select! {
            received = wire.recv(&mut buf) => match received {
                Ok(n) => {
                    let now = Instant::now();
                    {
                        let mut s = link.state();
                        s.last_received = now;
                        s.refused = false;
                    }
                    let Some(bytes) = buf.get(..n) else { continue };
                    if link.is_v2() {
                        match sngate_wire::v2::decode(bytes) {
                            Ok(packet) => match v2::from_v2(packet) {
                                Some((packet, name)) => {
                                    handle(&link, &responses, &messages, packet, name, now).await;
                                }
                                None => debug!("client: ignoring a 2.0 packet it has no use for"),
                            },
                            Err(e) => debug!(error = %e, "client: dropping a malformed 2.0 datagram"),
                        }
                    } else {
                        match proto::decode(bytes) {
                            Ok(packet) => handle(&link, &responses, &messages, packet, None, now).await,
                            Err(e) => debug!(error = %e, "client: dropping a malformed datagram"),
                        }
                    }
                }
                // ICMP "port unreachable" from an earlier send: the gateway is
                // not there (yet); requests time out on their own, and say why.
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset) => {
                    debug!(error = %e, "client: gateway unreachable");
                    link.state().refused = true;
                }
                Err(e) => {
                    debug!(error = %e, "client: link failed, receive task stops");
                    return;
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                if ping_at.is_some_and(|at| at <= Instant::now())
                    && let Err(e) = link.send(&Packet::PingReq { client_id: None }).await
                {
                    debug!(error = %e, "client: keep-alive PINGREQ not sent");
                }
            }
        }
    }
}

async fn handle(
    link: &Link,
    responses: &mpsc::Sender<Packet>,
    messages: &mpsc::Sender<Message>,
    packet: Packet,
    full_name: Option<String>,
    received_at: Instant,
) {
    let reply = match packet {
        Packet::Register {
            topic_id,
            msg_id,
            topic_name,
        } => {
            let return_code = if topic_id == 0 || topic_id == 0xFFFF {
                ReturnCode::NotSupported
            } else {
                link.state().topics.insert(topic_id, topic_name);
                ReturnCode::Accepted
            };
            Some(Packet::RegAck {
                topic_id,
                msg_id,
                return_code,
            })
        }
        Packet::Publish {
            dup,
            qos,
            retain,
            topic,
            msg_id,
            payload,
        } => {
            let name = full_name.or_else(|| {
                let s = link.state();
                match topic {
                    TopicRef::Id(id) => s.topics.get(&id).cloned(),
                    TopicRef::Predefined(id) => {
                        Some(s.predefined.get(&id).cloned().unwrap_or_default())
                    }
                    TopicRef::Short(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                }
            });
            let Some(name) = name else {
                // An id this client never registered: the gateway is to
                // register it again (fact sheet §7.4, trap T-3).
                debug!(?topic, "client: PUBLISH on an unknown topic id");
                let reply = Packet::PubAck {
                    topic_id: topic.raw(),
                    msg_id,
                    return_code: ReturnCode::InvalidTopicId,
                };
                send(link, &reply).await;
                return;
            };
            let duplicate = qos == QoS::ExactlyOnce && link.state().qos2_received.contains(&msg_id);
            if !duplicate {
                let message = Message {
                    topic: name,
                    topic_ref: topic,
                    payload,
                    qos,
                    retain,
                    dup,
                    received_at,
                };
                if let Err(TrySendError::Full(_) | TrySendError::Closed(_)) =
                    messages.try_send(message)
                {
                    // Not acknowledged: the gateway resends QoS 1/2 later.
                    debug!("client: message buffer full, message not acknowledged");
                    link.state().dropped_messages += 1;
                    return;
                }
                if qos == QoS::ExactlyOnce {
                    link.state().qos2_received.insert(msg_id);
                }
            }
            match qos {
                QoS::AtLeastOnce => Some(Packet::PubAck {
                    topic_id: topic.raw(),
                    msg_id,
                    return_code: ReturnCode::Accepted,
                }),
                QoS::ExactlyOnce => Some(Packet::PubRec { msg_id }),
                QoS::AtMostOnce | QoS::MinusOne => None,
            }
        }
        Packet::PubRel { msg_id } => {
            link.state().qos2_received.remove(&msg_id);
            Some(Packet::PubComp { msg_id })
        }
        Packet::PingReq { .. } => Some(Packet::PingResp),
        other => {
            record_ack(link, &other);
            if matches!(other, Packet::Disconnect { .. }) {
                link.state().ping_every = None;
            }
            // Nobody waiting and the queue full: a stale answer, dropped.
            let _ = responses.try_send(other);
            None
        }
    };
    if let Some(reply) = reply {
        send(link, &reply).await;
    }
}

/// Records the id a REGACK or SUBACK gives to the name the client asked for.
fn record_ack(link: &Link, packet: &Packet) {
    let (kind, msg_id, topic_id, accepted) = match *packet {
        Packet::RegAck {
            topic_id,
            msg_id,
            return_code,
        } => (
            MsgType::Register,
            msg_id,
            topic_id,
            return_code.is_accepted(),
        ),
        Packet::SubAck {
            topic_id,
            msg_id,
            return_code,
            ..
        } => (
            MsgType::Subscribe,
            msg_id,
            topic_id,
            return_code.is_accepted(),
        ),
        _ => return,
    };
    let mut s = link.state();
    let matches = s
        .pending_name
        .as_ref()
        .is_some_and(|(k, m, _)| *k == kind && *m == msg_id);
    if !matches {
        return;
    }
    if let Some((_, _, name)) = s.pending_name.take()
        && accepted
        && topic_id != 0
        && topic_id != 0xFFFF
    {
        s.topics.insert(topic_id, name);
    }
}

async fn send(link: &Link, packet: &Packet) {
    if let Err(e) = link.send(packet).await {
        debug!(error = %e, msg = %packet.msg_type(), "client: reply not sent");
    }
}
