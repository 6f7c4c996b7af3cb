//! An async MQTT-SN v1.2 client over UDP or a serial link, built on tokio and
//! the [`proto`] codec. It is what the integration tests, the benchmarks and
//! the `sngate pub` / `sngate sub` / `sngate sim` tools use to play a device.
//!
//! # Shape
//!
//! A [`Client`] owns one link to one gateway ([`Endpoint`]): a UDP socket
//! connected to it, or a serial port framed with the gateway's own codecs
//! (raw, SLIP, or XBee API frames to the local module, addressed to the
//! coordinator). A background task reads that link and does what a device
//! must do without being asked:
//! - answers the gateway's REGISTER with REGACK, keeping the client's own
//!   id → name table;
//! - acknowledges PUBLISH at QoS 1 (PUBACK) and QoS 2 (PUBREC, then PUBCOMP on
//!   PUBREL, delivering a QoS 2 message once even when the gateway resends it);
//! - answers PUBACK 0x02 ("invalid topic id") to a PUBLISH on an id it does not
//!   know, so the gateway registers the name again;
//! - answers the gateway's PINGREQ, and sends PINGREQ itself so the keep-alive
//!   never lapses while the client is idle ([`ConnectOptions::auto_ping`]);
//! - hands every message to the application as a [`Message`] with the topic
//!   name resolved, read with [`Client::next_message`] or
//!   [`Client::recv_message`].
//!
//! Requests ([`Client::publish`], [`Client::subscribe`], …) take `&mut self`,
//! so a client has at most one request outstanding, as MQTT-SN v1.2 demands
//! (fact sheet §7.4, §7.5, trap T-6). Each is retransmitted after
//! [`ConnectOptions::retry_interval`] up to [`ConnectOptions::max_retries`]
//! times (T_RETRY / N_RETRY, §7.8), so every wait is bounded.
//!
//! [`Client::connect`] takes a UDP address, [`Client::connect_via`] any
//! [`Endpoint`]. Connection-less helpers live beside it: [`publish_minus_one`]
//! and [`publish_minus_one_named`] (QoS −1, trap T-14; `_via` forms for any
//! endpoint) and [`search_gateway`] (SEARCHGW → GWINFO).
//!
//! ```no_run
//! use std::time::Duration;
//! use sngate::client::{Client, ConnectOptions};
//! use sngate::proto::{QoS, SubscribeTopic};
//!
//! # async fn demo() -> Result<(), sngate::client::ClientError> {
//! let gateway = "127.0.0.1:1883".parse().unwrap();
//! let mut client = Client::connect(gateway, ConnectOptions::new("sensor-1")).await?;
//! client
//!     .subscribe(SubscribeTopic::Name("home/+/temp".into()), QoS::AtLeastOnce)
//!     .await?;
//! client
//!     .publish_named("home/kitchen/temp", &b"21.5"[..], QoS::AtLeastOnce, false)
//!     .await?;
//! let message = client.recv_message(Duration::from_secs(5)).await?;
//! assert_eq!(message.topic, "home/kitchen/temp");
//! client.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`proto`]: crate::proto

mod connection;
mod discovery;
mod dtls;
mod endpoint;
mod link;
mod serial;
mod task;
#[cfg(test)]
mod tests;
mod v2;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

pub use connection::Client;
pub use discovery::{
    GatewayInfo, publish_minus_one, publish_minus_one_named, publish_minus_one_named_via,
    publish_minus_one_via, publish_without_session_via, search_gateway,
};
pub use endpoint::Endpoint;
pub use serial::SERIAL_MAX_FRAME;

use crate::proto::{EncodeError, QoS, ReturnCode, TopicRef};
use crate::transport::framing::FrameError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be created, bound or used.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// A packet could not be encoded (it is larger than 65535 bytes).
    #[error("cannot encode the message: {0}")]
    Encode(#[from] EncodeError),
    /// The serial port could not be opened.
    #[error("cannot open serial port {device}")]
    SerialOpen {
        /// The device path.
        device: String,
        /// Why.
        source: tokio_serial::Error,
    },
    /// A message could not be framed for the serial link (larger than
    /// [`SERIAL_MAX_FRAME`]).
    #[error("cannot frame the message for the serial link: {0}")]
    Frame(#[from] FrameError),
    /// No answer came within the retry budget.
    #[error("no {waiting_for} from the gateway after {attempts} attempt(s)")]
    Timeout {
        /// What was expected.
        waiting_for: &'static str,
        /// How many times the request was sent (or 1 for a plain wait).
        attempts: u32,
    },
    /// No answer came, and the network said nothing listens at the
    /// gateway's address (ICMP port unreachable).
    #[error(
        "the gateway is unreachable: nothing listens at its address (no {waiting_for} after {attempts} attempt(s))"
    )]
    Unreachable {
        /// What was expected.
        waiting_for: &'static str,
        /// How many times the request was sent.
        attempts: u32,
    },
    /// The gateway answered with a rejection (CONNACK, REGACK, PUBACK, SUBACK,
    /// WILLTOPICRESP or WILLMSGRESP with a return code other than 0x00).
    #[error("the gateway refused the request (return code {0:?})")]
    Rejected(ReturnCode),
    /// The gateway sent DISCONNECT: it does not (or no longer) know this
    /// client on this socket, and a new [`Client::connect`] is needed.
    #[error("the gateway disconnected the client")]
    Disconnected,
    /// The arguments cannot form a valid request.
    #[error("invalid request: {0}")]
    InvalidArgument(&'static str),
    /// The client's link has failed (socket error, serial port gone) and
    /// its receive task has stopped.
    #[error("the link to the gateway has failed (the client's receive task has stopped)")]
    Closed,
}

/// A will: the message the gateway publishes on the client's behalf when it
/// loses the client (keep-alive or sleep timer expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The topic name the will is published to.
    pub topic: String,
    /// The will payload.
    pub payload: Bytes,
    /// QoS of the will message (0, 1 or 2).
    pub qos: QoS,
    /// Whether the will message is retained.
    pub retain: bool,
}

/// How [`Client::connect`] connects, and how the client behaves afterwards.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The client id (1..=23 bytes by the spec; sngate accepts 64 by default).
    pub client_id: String,
    /// Keep-alive period in seconds sent in CONNECT. 0 asks the gateway for its
    /// default and turns automatic pings off. Default: 60.
    pub keep_alive_secs: u16,
    /// CleanSession flag. Default: true.
    pub clean_session: bool,
    /// Will to register during CONNECT (the WILLTOPIC/WILLMSG handshake).
    /// Default: none.
    pub will: Option<Will>,
    /// Time to wait for an answer before resending a request (T_RETRY).
    /// Default: 10 s.
    pub retry_interval: Duration,
    /// Resends of a request before giving up (N_RETRY). Default: 3.
    pub max_retries: u32,
    /// Send PINGREQ when nothing was sent for 3/4 of the keep-alive period, so
    /// an idle client is not considered lost. Default: true.
    pub auto_ping: bool,
    /// Pre-defined topic ids the client knows (the same table as the gateway's
    /// configuration): used to name messages that arrive on a pre-defined id and
    /// by [`Client::publish_named`]. Default: empty.
    pub predefined_topics: HashMap<u16, String>,
    /// Messages held for the application before the client stops
    /// acknowledging (QoS 1/2; the gateway then retransmits) or drops (QoS 0).
    /// Default: 4096.
    pub message_buffer: usize,
    /// The MQTT-SN version the client speaks. Default: 1.2.
    pub protocol: Protocol,
}

/// The MQTT-SN version a [`Client`] speaks.
///
/// In 2.0 the client keeps its 1.2 API: the will travels inside CONNECT, a
/// persistent session (`clean_session = false`) is one that never expires,
/// topic ids are session aliases, and a message that arrives by full topic
/// name has [`Message::topic_ref`] `TopicRef::Id(0)` (see `src/client/v2.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT-SN 1.2.
    #[default]
    V1_2,
    /// MQTT-SN 2.0 (OASIS CSD01).
    V2,
}

impl ConnectOptions {
    /// Default options for `client_id`.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            keep_alive_secs: 60,
            clean_session: true,
            will: None,
            retry_interval: Duration::from_secs(10),
            max_retries: 3,
            auto_ping: true,
            predefined_topics: HashMap::new(),
            message_buffer: 4096,
            protocol: Protocol::V1_2,
        }
    }

    /// Sets the keep-alive period, in seconds.
    pub fn keep_alive(mut self, secs: u16) -> Self {
        self.keep_alive_secs = secs;
        self
    }

    /// Sets the CleanSession flag.
    pub fn clean_session(mut self, clean: bool) -> Self {
        self.clean_session = clean;
        self
    }

    /// Sets the will.
    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    /// Sets the retransmission interval and count.
    pub fn retry(mut self, interval: Duration, max_retries: u32) -> Self {
        self.retry_interval = interval;
        self.max_retries = max_retries;
        self
    }

    /// Adds a pre-defined topic id.
    pub fn predefined(mut self, id: u16, topic: impl Into<String>) -> Self {
        self.predefined_topics.insert(id, topic.into());
        self
    }

    /// Sets the MQTT-SN version the client speaks.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Turns automatic keep-alive pings on or off.
    pub fn auto_ping(mut self, on: bool) -> Self {
        self.auto_ping = on;
        self
    }
}

/// A message the gateway delivered to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic name: resolved from the client's id table for a normal id,
    /// from [`ConnectOptions::predefined_topics`] for a pre-defined id (empty
    /// if the client does not know that id), the two characters of a short name.
    pub topic: String,
    /// The topic as it appeared on the wire.
    pub topic_ref: TopicRef,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// The retain flag: set for a retained message sent on subscribe.
    pub retain: bool,
    /// The DUP flag: the gateway resent it.
    pub dup: bool,
    /// When the client's receive task read it off the link (before it waited
    /// in the message buffer): what latency is measured against.
    pub received_at: tokio::time::Instant,
}

/// The gateway's answer to a successful SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The QoS granted.
    pub qos: QoS,
    /// The topic id the gateway will publish with: the registered id for a
    /// plain name, the id itself for a pre-defined id, 0 for a wildcard filter
    /// or a short name.
    pub topic_id: u16,
}
