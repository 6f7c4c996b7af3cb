//! [`Client`]: one connection to one gateway, its requests and its messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::link::{self, Link};
use super::v2::V2State;
use super::{ClientError, ConnectOptions, Endpoint, Message, Subscribed, task};
use crate::proto::{
    MsgType, PROTOCOL_ID_V1_2, Packet, QoS, ReturnCode, SubscribeTopic, TopicRef, WillTopic,
};

/// Answers to requests waiting to be read; more is a flood of stale acks.
const RESPONSE_QUEUE: usize = 64;

/// What a request does with one packet from the gateway.
enum Step<T> {
    /// Not the answer: keep waiting.
    Ignore,
    /// Part of a handshake: send this and keep waiting (the retry timer restarts).
    Reply(Packet),
    /// The request is over.
    Done(Result<T, ClientError>),
}

/// A connected MQTT-SN client. See the [module documentation](super).
///
/// Dropping a client stops its receive task without sending DISCONNECT: for
/// the gateway the device has gone silent, and its will is published once the
/// keep-alive expires. Call [`disconnect`](Self::disconnect) to leave cleanly.
#[derive(Debug)]
pub struct Client {
    link: Link,
    endpoint: Endpoint,
    opts: ConnectOptions,
    responses: mpsc::Receiver<Packet>,
    messages: mpsc::Receiver<Message>,
    task: JoinHandle<()>,
    next_msg_id: u16,
    /// Topic names this client registered, for [`publish_named`](Self::publish_named).
    registered: HashMap<String, u16>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Connects to the gateway at the UDP address `gateway`: binds an
    /// ephemeral UDP socket, sends CONNECT, runs the will handshake when
    /// `opts.will` is set, and waits for CONNACK, resending CONNECT after
    /// `opts.retry_interval` up to `opts.max_retries` times.
    ///
    /// A CONNACK with a rejection is [`ClientError::Rejected`].
    pub async fn connect(gateway: SocketAddr, opts: ConnectOptions) -> Result<Self, ClientError> {
        Self::connect_via(Endpoint::Udp(gateway), opts).await
    }

    /// [`connect`](Self::connect) over any link: a UDP address or a serial
    /// port ([`Endpoint::Serial`], opened here and closed with the client).
    pub async fn connect_via(
        endpoint: Endpoint,
        opts: ConnectOptions,
    ) -> Result<Self, ClientError> {
        let (wire, wire_rx) = link::open(&endpoint).await?;
        let v2 = (opts.protocol == super::Protocol::V2).then(|| V2State::new(opts.will.clone()));
        let link = Link::new(wire, opts.predefined_topics.clone(), v2);
        let (responses_tx, responses) = mpsc::channel(RESPONSE_QUEUE);
        let (messages_tx, messages) = mpsc::channel(opts.message_buffer.max(1));
        let task = tokio::spawn(task::run(link.clone(), wire_rx, responses_tx, messages_tx));
        let mut client = Client {
            link,
            endpoint,
            opts,
            responses,
            messages,
            task,
            next_msg_id: 0,
            registered: HashMap::new(),
        };
        client.reconnect().await?;
        Ok(client)
    }

    /// Sends CONNECT again on the same socket, with the same options (will
    /// handshake included): how a sleeping client becomes active again, or a
    /// client told to DISCONNECT comes back.
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.link.state().ping_every = None;
        let connect = Packet::Connect {
            will: self.opts.will.is_some(),
            clean_session: self.opts.clean_session,
            protocol_id: PROTOCOL_ID_V1_2,
            duration: self.opts.keep_alive_secs,
            client_id: self.opts.client_id.clone(),
        };
        let will = self.opts.will.clone();
        self.request(connect, "CONNACK", |packet| match packet {
            Packet::ConnAck { return_code } if return_code.is_accepted() => Step::Done(Ok(())),
            Packet::ConnAck { return_code } => Step::Done(Err(ClientError::Rejected(*return_code))),
            Packet::WillTopicReq => {
                Step::Reply(Packet::WillTopic(will.as_ref().map(|w| WillTopic {
                    qos: w.qos,
                    retain: w.retain,
                    topic: w.topic.clone(),
                })))
            }
            Packet::WillMsgReq => Step::Reply(Packet::WillMsg {
                payload: will.as_ref().map(|w| w.payload.clone()).unwrap_or_default(),
            }),
            _ => Step::Ignore,
        })
        .await?;
        // The client's topic ids do not survive a new connection (trap T-4).
        {
            let mut s = self.link.state();
            s.topics.clear();
            s.ping_every = (self.opts.auto_ping && self.opts.keep_alive_secs > 0)
                .then(|| Duration::from_secs(u64::from(self.opts.keep_alive_secs)));
        }
        self.registered.clear();
        Ok(())
    }

    /// How the client reaches the gateway.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.opts.client_id
    }

    /// The local address of the client's UDP socket
    /// ([`ClientError::InvalidArgument`] over a serial port).
    pub fn local_addr(&self) -> Result<SocketAddr, ClientError> {
        match self.link.local_addr() {
            Some(addr) => Ok(addr?),
            None => Err(ClientError::InvalidArgument(
                "a serial link has no socket address",
            )),
        }
    }

    /// Messages not handed to the application because its buffer was full
    /// (QoS 0 lost; QoS 1/2 left unacknowledged for the gateway to resend).
    pub fn dropped_messages(&self) -> u64 {
        self.link.state().dropped_messages
    }

    /// The name the client knows for a normal topic id.
    pub fn topic_name(&self, topic_id: u16) -> Option<String> {
        self.link.state().topics.get(&topic_id).cloned()
    }

    fn msg_id(&mut self) -> u16 {
        self.next_msg_id = self.next_msg_id.checked_add(1).unwrap_or(1);
        self.next_msg_id
    }

    /// Sends `packet` and feeds every answer to `step` until it is done;
    /// resends `packet` (with DUP set where the message has one) when
    /// `retry_interval` passes without progress, up to `max_retries` times.
    /// An unexpected DISCONNECT ends the request with
    /// [`ClientError::Disconnected`].
    async fn request<T>(
        &mut self,
        mut packet: Packet,
        waiting_for: &'static str,
        mut step: impl FnMut(&Packet) -> Step<T>,
    ) -> Result<T, ClientError> {
        // Answers to earlier, abandoned requests are not answers to this one.
        while self.responses.try_recv().is_ok() {}
        let attempts = self.opts.max_retries.saturating_add(1);
        for attempt in 0..attempts {
            if attempt > 0 {
                match &mut packet {
                    Packet::Publish { dup, .. } | Packet::Subscribe { dup, .. } => *dup = true,
                    _ => {}
                }
            }
            self.link.send(&packet).await?;
            let mut deadline = Instant::now() + self.opts.retry_interval;
            loop {
                let answer = match tokio::time::timeout_at(deadline, self.responses.recv()).await {
                    Err(_elapsed) => break,
                    Ok(None) => return Err(ClientError::Closed),
                    Ok(Some(answer)) => answer,
                };
                match step(&answer) {
                    Step::Done(result) => return result,
                    Step::Reply(reply) => {
                        self.link.send(&reply).await?;
                        deadline = Instant::now() + self.opts.retry_interval;
                    }
                    Step::Ignore if matches!(answer, Packet::Disconnect { .. }) => {
                        return Err(ClientError::Disconnected);
                    }
                    Step::Ignore => {}
                }
            }
        }
        if self.link.state().refused {
            return Err(ClientError::Unreachable {
                waiting_for,
                attempts,
            });
        }
        Err(ClientError::Timeout {
            waiting_for,
            attempts,
        })
    }

    /// Registers `topic_name` (REGISTER → REGACK) and returns its topic id.
    pub async fn register(&mut self, topic_name: &str) -> Result<u16, ClientError> {
        let msg_id = self.msg_id();
        self.link.state().pending_name = Some((MsgType::Register, msg_id, topic_name.to_owned()));
        let packet = Packet::Register {
            topic_id: 0,
            msg_id,
            topic_name: topic_name.to_owned(),
        };
        let id = self
            .request(packet, "REGACK", |p| match *p {
                Packet::RegAck {
                    topic_id,
                    msg_id: m,
                    return_code,
                } if m == msg_id => Step::Done(if return_code.is_accepted() {
                    Ok(topic_id)
                } else {
                    Err(ClientError::Rejected(return_code))
                }),
                _ => Step::Ignore,
            })
            .await?;
        self.registered.insert(topic_name.to_owned(), id);
        Ok(id)
    }

    /// Publishes `payload` to `topic` at `qos`: QoS 0 (and −1) is sent and
    /// done; QoS 1 waits for PUBACK; QoS 2 runs PUBLISH → PUBREC → PUBREL →
    /// PUBCOMP. A PUBACK with a rejection is [`ClientError::Rejected`] (at
    /// QoS 0 a rejection arrives after the call has returned and is ignored).
    pub async fn publish(
        &mut self,
        topic: TopicRef,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ClientError> {
        let payload = payload.into();
        let msg_id = match qos {
            QoS::AtMostOnce | QoS::MinusOne => 0,
            QoS::AtLeastOnce | QoS::ExactlyOnce => self.msg_id(),
        };
        let packet = Packet::Publish {
            dup: false,
            qos,
            retain,
            topic,
            msg_id,
            payload,
        };
        if msg_id == 0 {
            return self.link.send(&packet).await;
        }
        let rejected = |p: &Packet| match *p {
            Packet::PubAck {
                msg_id: m,
                return_code,
                ..
            } if m == msg_id && !return_code.is_accepted() => {
                Some(Step::Done(Err(ClientError::Rejected(return_code))))
            }
            _ => None,
        };
        if qos == QoS::AtLeastOnce {
            return self
                .request(packet, "PUBACK", |p| {
                    if let Some(done) = rejected(p) {
                        return done;
                    }
                    match *p {
                        Packet::PubAck { msg_id: m, .. } if m == msg_id => Step::Done(Ok(())),
                        _ => Step::Ignore,
                    }
                })
                .await;
        }
        self.request(packet, "PUBREC", |p| {
            if let Some(done) = rejected(p) {
                return done;
            }
            match *p {
                Packet::PubRec { msg_id: m } if m == msg_id => Step::Done(Ok(())),
                _ => Step::Ignore,
            }
        })
        .await?;
        self.request(Packet::PubRel { msg_id }, "PUBCOMP", |p| match *p {
            Packet::PubComp { msg_id: m } if m == msg_id => Step::Done(Ok(())),
            _ => Step::Ignore,
        })
        .await
    }

    /// Publishes to a topic given by name: a two-character name goes as a short
    /// name, a name in [`ConnectOptions::predefined_topics`] by its pre-defined
    /// id, anything else by a normal id, registered first if this client has
    /// not registered it yet (and once more if the gateway says the id is
    /// invalid).
    pub async fn publish_named(
        &mut self,
        topic_name: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ClientError> {
        let payload = payload.into();
        if let Some(short) = TopicRef::short(topic_name) {
            return self.publish(short, payload, qos, retain).await;
        }
        let predefined = self
            .opts
            .predefined_topics
            .iter()
            .find(|(_, name)| name.as_str() == topic_name)
            .map(|(&id, _)| id);
        if let Some(id) = predefined {
            return self
                .publish(TopicRef::Predefined(id), payload, qos, retain)
                .await;
        }
        let cached = self.registered.get(topic_name).copied();
        let id = match cached {
            Some(id) => id,
            None => self.register(topic_name).await?,
        };
        match self
            .publish(TopicRef::Id(id), payload.clone(), qos, retain)
            .await
        {
            Err(ClientError::Rejected(ReturnCode::InvalidTopicId)) if cached.is_some() => {
                self.registered.remove(topic_name);
                let id = self.register(topic_name).await?;
                self.publish(TopicRef::Id(id), payload, qos, retain).await
            }
            other => other,
        }
    }

    /// Subscribes to a topic name or filter, a pre-defined id or a short name
    /// (SUBSCRIBE → SUBACK). A SUBACK with a rejection is
    /// [`ClientError::Rejected`].
    pub async fn subscribe(
        &mut self,
        topic: SubscribeTopic,
        qos: QoS,
    ) -> Result<Subscribed, ClientError> {
        if qos == QoS::MinusOne {
            return Err(ClientError::InvalidArgument(
                "a subscription's QoS is 0, 1 or 2",
            ));
        }
        let msg_id = self.msg_id();
        if let SubscribeTopic::Name(name) = &topic
            && !name.contains(['+', '#'])
        {
            self.link.state().pending_name = Some((MsgType::Subscribe, msg_id, name.clone()));
        }
        let packet = Packet::Subscribe {
            dup: false,
            qos,
            msg_id,
            topic,
        };
        self.request(packet, "SUBACK", |p| match *p {
            Packet::SubAck {
                qos,
                topic_id,
                msg_id: m,
                return_code,
            } if m == msg_id => Step::Done(if return_code.is_accepted() {
                Ok(Subscribed { qos, topic_id })
            } else {
                Err(ClientError::Rejected(return_code))
            }),
            _ => Step::Ignore,
        })
        .await
    }

    /// Unsubscribes (UNSUBSCRIBE → UNSUBACK; v1.2 has no return code).
    pub async fn unsubscribe(&mut self, topic: SubscribeTopic) -> Result<(), ClientError> {
        let msg_id = self.msg_id();
        let packet = Packet::Unsubscribe { msg_id, topic };
        self.request(packet, "UNSUBACK", |p| match *p {
            Packet::UnsubAck { msg_id: m } if m == msg_id => Step::Done(Ok(())),
            _ => Step::Ignore,
        })
        .await
    }

    /// Sends PINGREQ and waits for PINGRESP.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.request(
            Packet::PingReq { client_id: None },
            "PINGRESP",
            |p| match p {
                Packet::PingResp => Step::Done(Ok(())),
                _ => Step::Ignore,
            },
        )
        .await
    }

    /// Replaces the will topic (WILLTOPICUPD → WILLTOPICRESP); `None` deletes
    /// the will topic and message.
    pub async fn update_will_topic(&mut self, will: Option<WillTopic>) -> Result<(), ClientError> {
        self.request(Packet::WillTopicUpd(will), "WILLTOPICRESP", |p| match *p {
            Packet::WillTopicResp { return_code } => Step::Done(accepted(return_code)),
            _ => Step::Ignore,
        })
        .await
    }

    /// Replaces the will message (WILLMSGUPD → WILLMSGRESP).
    pub async fn update_will_message(
        &mut self,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let packet = Packet::WillMsgUpd {
            payload: payload.into(),
        };
        self.request(packet, "WILLMSGRESP", |p| match *p {
            Packet::WillMsgResp { return_code } => Step::Done(accepted(return_code)),
            _ => Step::Ignore,
        })
        .await
    }

    /// Goes to sleep for `duration_secs` (DISCONNECT with Duration, answered
    /// by DISCONNECT). Automatic pings stop; the gateway buffers messages until
    /// [`wake_and_collect`](Self::wake_and_collect) or
    /// [`reconnect`](Self::reconnect). Calling it again while asleep changes
    /// the sleep time.
    pub async fn sleep(&mut self, duration_secs: u16) -> Result<(), ClientError> {
        self.link.state().ping_every = None;
        let packet = Packet::Disconnect {
            duration: Some(duration_secs),
        };
        self.request(packet, "DISCONNECT", |p| match p {
            Packet::Disconnect { .. } => Step::Done(Ok(())),
            _ => Step::Ignore,
        })
        .await
    }

    /// Wakes from sleep to collect what the gateway buffered (fact sheet §7.9):
    /// sends PINGREQ with the client id; the receive task answers the REGISTERs
    /// and acknowledges the PUBLISHes of the burst; the burst ends with
    /// PINGRESP, and the client is asleep again. Returns every message received
    /// up to that PINGRESP (including any not yet read before the call), in
    /// order.
    ///
    /// PINGREQ is resent when `retry_interval` passes with nothing at all from
    /// the gateway, up to `max_retries` times.
    pub async fn wake_and_collect(&mut self) -> Result<Vec<Message>, ClientError> {
        while self.responses.try_recv().is_ok() {}
        let ping = Packet::PingReq {
            client_id: Some(self.opts.client_id.clone()),
        };
        let retry = self.opts.retry_interval;
        let mut resends = 0;
        self.link.send(&ping).await?;
        let mut collected = Vec::new();
        loop {
            // The burst is alive while anything arrives (client side of §7.9
            // step 5: T_RETRY restarts on every message).
            let deadline = {
                let s = self.link.state();
                s.last_received.max(s.last_sent) + retry
            };
            match tokio::time::timeout_at(deadline, self.responses.recv()).await {
                Ok(Some(Packet::PingResp)) => break,
                Ok(Some(Packet::Disconnect { .. })) => return Err(ClientError::Disconnected),
                Ok(Some(_)) => {}
                Ok(None) => return Err(ClientError::Closed),
                Err(_elapsed) => {
                    let quiet = self.link.state().last_received + retry <= Instant::now();
                    if !quiet {
                        continue;
                    }
                    if resends >= self.opts.max_retries {
                        return Err(ClientError::Timeout {
                            waiting_for: "PINGRESP",
                            attempts: resends + 1,
                        });
                    }
                    resends += 1;
                    self.link.send(&ping).await?;
                }
            }
            while let Ok(message) = self.messages.try_recv() {
                collected.push(message);
            }
        }
        // Everything the task read before the PINGRESP is already queued.
        while let Ok(message) = self.messages.try_recv() {
            collected.push(message);
        }
        Ok(collected)
    }

    /// Leaves cleanly: DISCONNECT, answered by DISCONNECT. The gateway drops
    /// the will, and the session too when it was connected with CleanSession.
    /// In MQTT-SN 2.0 a DISCONNECT is never answered (§3.13): it is sent once.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.link.state().ping_every = None;
        if self.link.is_v2() {
            return self.link.send(&Packet::Disconnect { duration: None }).await;
        }
        self.request(
            Packet::Disconnect { duration: None },
            "DISCONNECT",
            |p| match p {
                Packet::Disconnect { .. } => Step::Done(Ok(())),
                _ => Step::Ignore,
            },
        )
        .await
    }

    /// The next message from the gateway; `None` once the receive task has
    /// stopped. Waits as long as it takes — see
    /// [`recv_message`](Self::recv_message) for a bounded wait.
    pub async fn next_message(&mut self) -> Option<Message> {
        self.messages.recv().await
    }

    /// The next message from the gateway, waiting at most `timeout`.
    pub async fn recv_message(&mut self, timeout: Duration) -> Result<Message, ClientError> {
        match tokio::time::timeout(timeout, self.messages.recv()).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(ClientError::Closed),
            Err(_elapsed) => Err(ClientError::Timeout {
                waiting_for: "message",
                attempts: 1,
            }),
        }
    }

    /// A message already received, if any; never waits.
    pub fn try_message(&mut self) -> Option<Message> {
        self.messages.try_recv().ok()
    }
}

fn accepted(code: ReturnCode) -> Result<(), ClientError> {
    if code.is_accepted() {
        Ok(())
    } else {
        Err(ClientError::Rejected(code))
    }
}
