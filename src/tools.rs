//! `sngate pub` and `sngate sub`: MQTT-SN command-line clients in the spirit
//! of mosquitto_pub / mosquitto_sub, built on [`crate::client`], for testing a
//! gateway and for scripts on a device. Over UDP, or over a serial link
//! ([`Endpoint::Serial`]: raw, SLIP, or XBee API frames to the local module).

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;

use crate::client::{self, Client, ClientError, ConnectOptions, Endpoint, Protocol, Will};
use crate::proto::{QoS, SubscribeTopic, TopicRef};
use sngate_wire::v2::Topic as V2Topic;

/// Why a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The MQTT-SN exchange failed (no gateway, refused, timed out…).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Writing the received messages failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// The arguments do not make a valid request.
    #[error("{0}")]
    Usage(String),
}

/// How a topic is named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicArg {
    /// A topic name (or, for `sub`, a filter with `+`/`#`).
    Name(String),
    /// A pre-defined topic id.
    Predefined(u16),
    /// A two-character short topic name.
    Short([u8; 2]),
}

/// What `sngate pub` sends.
#[derive(Debug, Clone)]
pub struct PubRequest {
    /// How to reach the gateway: its UDP address or a serial port.
    pub gateway: Endpoint,
    /// Client id (unused at QoS −1).
    pub client_id: String,
    /// The topic.
    pub topic: TopicArg,
    /// The payload.
    pub payload: Bytes,
    /// −1, 0, 1 or 2.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Keep-alive in seconds.
    pub keep_alive_secs: u16,
    /// A will, if any.
    pub will: Option<Will>,
    /// The MQTT-SN version to speak (QoS −1 is PUBWOS in 2.0).
    pub protocol: Protocol,
}

/// Publishes one message. QoS −1 needs no connection; otherwise the tool
/// connects, publishes (waiting for the acknowledgement at QoS 1/2) and
/// disconnects.
pub async fn publish(req: PubRequest) -> Result<(), ToolError> {
    if req.qos == QoS::MinusOne && req.protocol == Protocol::V2 {
        let topic = match &req.topic {
            TopicArg::Name(name) => V2Topic::Name(name.clone()),
            TopicArg::Predefined(id) => V2Topic::PredefinedAlias(*id),
            TopicArg::Short(s) => V2Topic::Name(String::from_utf8_lossy(s).into_owned()),
        };
        client::publish_without_session_via(&req.gateway, topic, req.payload, req.retain).await?;
        return Ok(());
    }
    if req.qos == QoS::MinusOne {
        match &req.topic {
            TopicArg::Name(name) => {
                client::publish_minus_one_named_via(&req.gateway, name, req.payload, req.retain)
                    .await?
            }
            TopicArg::Predefined(id) => {
                let topic = TopicRef::Predefined(*id);
                client::publish_minus_one_via(&req.gateway, topic, req.payload, req.retain).await?
            }
            TopicArg::Short(s) => {
                let topic = TopicRef::Short(*s);
                client::publish_minus_one_via(&req.gateway, topic, req.payload, req.retain).await?
            }
        }
        return Ok(());
    }
    let mut options = ConnectOptions::new(req.client_id)
        .keep_alive(req.keep_alive_secs)
        .protocol(req.protocol);
    if let Some(will) = req.will {
        options = options.will(will);
    }
    let mut c = Client::connect_via(req.gateway, options).await?;
    match &req.topic {
        TopicArg::Name(name) => {
            c.publish_named(name, req.payload, req.qos, req.retain)
                .await?
        }
        TopicArg::Predefined(id) => {
            c.publish(TopicRef::Predefined(*id), req.payload, req.qos, req.retain)
                .await?
        }
        TopicArg::Short(s) => {
            c.publish(TopicRef::Short(*s), req.payload, req.qos, req.retain)
                .await?
        }
    }
    c.disconnect().await?;
    Ok(())
}

/// What `sngate sub` listens for.
#[derive(Debug, Clone)]
pub struct SubRequest {
    /// How to reach the gateway: its UDP address or a serial port.
    pub gateway: Endpoint,
    /// Client id.
    pub client_id: String,
    /// Topics or filters to subscribe to.
    pub topics: Vec<TopicArg>,
    /// Requested QoS (0..=2).
    pub qos: QoS,
    /// CleanSession flag.
    pub clean_session: bool,
    /// Keep-alive in seconds.
    pub keep_alive_secs: u16,
    /// Stop after this many messages.
    pub count: Option<usize>,
    /// Print the topic before each payload.
    pub verbose: bool,
    /// Sleep cycle: sleep for this many seconds (DISCONNECT with Duration)
    /// and wake with PINGREQ to collect what was buffered, again and again.
    pub sleep_secs: Option<u16>,
    /// The MQTT-SN version to speak.
    pub protocol: Protocol,
}

/// Subscribes and writes each message to `out` (`payload`, or `topic payload`
/// when verbose), one per line, until `count` messages were written.
pub async fn subscribe(req: SubRequest, out: &mut impl Write) -> Result<(), ToolError> {
    if req.topics.is_empty() {
        return Err(ToolError::Usage("give at least one --topic".into()));
    }
    let options = ConnectOptions::new(req.client_id)
        .keep_alive(req.keep_alive_secs)
        .clean_session(req.clean_session)
        .protocol(req.protocol);
    let mut c = Client::connect_via(req.gateway, options).await?;
    for topic in &req.topics {
        let topic = match topic {
            TopicArg::Name(name) => SubscribeTopic::Name(name.clone()),
            TopicArg::Predefined(id) => SubscribeTopic::Predefined(*id),
            TopicArg::Short(s) => SubscribeTopic::Short(*s),
        };
        c.subscribe(topic, req.qos).await?;
    }
    let mut written = 0usize;
    let mut emit = |m: client::Message, out: &mut dyn Write| -> Result<bool, ToolError> {
        let payload = String::from_utf8_lossy(&m.payload);
        if req.verbose {
            writeln!(out, "{} {payload}", m.topic)?;
        } else {
            writeln!(out, "{payload}")?;
        }
        out.flush()?;
        written += 1;
        Ok(req.count.is_some_and(|n| written >= n))
    };
    // Messages sent right after the SUBACK (retained) come first, awake.
    while let Some(m) = c.try_message() {
        if emit(m, out)? {
            return Ok(());
        }
    }
    match req.sleep_secs {
        None => {
            while let Some(m) = c.next_message().await {
                if emit(m, out)? {
                    break;
                }
            }
        }
        Some(secs) => loop {
            c.sleep(secs).await?;
            // Wake when the sleep is over; the gateway's sleep timer allows
            // the duration plus a tolerance before it declares the client lost.
            tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
            let mut woke = c.wake_and_collect().await?;
            // Anything that arrived live just before the sleep began.
            woke.extend(std::iter::from_fn(|| c.try_message()));
            for m in woke {
                if emit(m, out)? {
                    return Ok(());
                }
            }
        },
    }
    Ok(())
}
