//! `sngate sim`: a load simulator — N MQTT-SN devices over UDP against a
//! running gateway, each one a [`Client`](crate::client::Client), measuring
//! what the gateway does with the load: messages sent and acknowledged,
//! delivered to subscribing devices, lost, duplicated, and how late.
//!
//! # A run
//!
//! 1. **Connect.** Device 0 first (so an unreachable gateway or a refused
//!    CONNECT is one clear [`SimError`]), then the others, a bounded number
//!    at a time. Subscribing devices subscribe to the filter (and to the
//!    QoS −1 topic when the mix has −1) before anyone publishes.
//! 2. **Publish.** Every device publishes at its rate (starts staggered over
//!    one period) until it has sent its count or the duration is over, the
//!    QoS of each message drawn from the mix in exact proportions. Device
//!    `i` publishes on `PREFIX/i` (registered once per connection); QoS −1
//!    goes to a short name or a pre-defined id. Sleeping devices alternate:
//!    awake and publishing for a while, then DISCONNECT(duration), asleep,
//!    woken with PINGREQ to collect what the gateway buffered, CONNECT again.
//! 3. **Drain.** When the last device has finished publishing, the number of
//!    deliveries each subscriber should get is known; subscribers read (or
//!    wake and collect) until they have that many, or the drain time is over.
//! 4. **Report.** [`SimReport`]: totals and per QoS, latency percentiles.
//!
//! # Measuring
//!
//! Each payload carries the run id, the device, its sequence number, the
//! publish QoS and the send time ([`payload`]); a subscriber counts a
//! message delivered or duplicate per sending device ([`tracker`], bounded
//! memory), and its latency is the time from send to the moment the
//! client's receive task read it off the socket — one clock, one process.
//! Latencies go into one HDR histogram (3 significant digits, up to an
//! hour): fixed memory whatever the run length. Lost = expected − delivered,
//! where expected counts, for every subscriber, each message sent on a topic
//! its subscriptions match (less those the gateway refused).
//!
//! Every wait is bounded: client requests by their retries, a device stops
//! after three errors in a row, subscribers by the drain time.

mod device;
pub mod payload;
mod report;
pub mod tracker;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use report::{LatencyReport, Progress, QosReport, SimReport};

use crate::client::{Client, ClientError, ConnectOptions, Protocol};
use crate::proto::{QoS, SubscribeTopic};
use device::{Device, DeviceOutcome};

/// The most (subscriber, sending device) pairs a run tracks: each costs a
/// [`tracker::SeqTracker`] (24 bytes, plus 128 while it has gaps).
pub const MAX_STREAMS: usize = 10_000_000;

/// The slowest and fastest per-device rates, messages per second.
pub const MIN_RATE: f64 = 0.001;
/// See [`MIN_RATE`].
pub const MAX_RATE: f64 = 1_000_000.0;

/// The longest duration, drain, retry interval or awake time accepted (a
/// year): bounds that keep every deadline computable.
pub const MAX_SPAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long each device publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SimLength {
    /// This many messages per device.
    Messages(u64),
    /// For this long (every device stops at the same instant).
    Duration(Duration),
}

/// Where QoS −1 messages are published (they need no registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinusOneTopic {
    /// A two-character short topic name.
    Short([u8; 2]),
    /// A pre-defined topic id (the gateway must have it configured).
    Predefined(u16),
}

/// The share of messages published at each QoS, in percent, as parsed from
/// `-1=10,0=40,1=40,2=10` (or a single QoS: `1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QosMix {
    /// Percentages for QoS −1, 0, 1, 2; they add up to 100.
    percent: [u32; 4],
}

impl QosMix {
    /// Every message at `qos`.
    pub fn only(qos: QoS) -> Self {
        let mut percent = [0; 4];
        if let Some(slot) = percent.get_mut(qos_index(qos)) {
            *slot = 100;
        }
        QosMix { percent }
    }

    /// The mix from percentages for QoS −1, 0, 1 and 2, which must add up
    /// to 100.
    pub fn from_percent(percent: [u32; 4]) -> Result<Self, String> {
        let total: u32 = percent.iter().sum();
        if total != 100 {
            return Err(format!("the QoS shares add up to {total} %, not 100 %"));
        }
        Ok(QosMix { percent })
    }

    /// The share of QoS `qos`, in percent.
    pub fn percent(&self, qos: QoS) -> u32 {
        self.percent.get(qos_index(qos)).copied().unwrap_or(0)
    }

    /// Whether any message is published at `qos`.
    pub fn has(&self, qos: QoS) -> bool {
        self.percent(qos) > 0
    }
}

impl FromStr for QosMix {
    type Err = String;

    /// `1` (all at QoS 1), or `QOS=PERCENT` pairs separated by commas, e.g.
    /// `0=50,1=40,2=10`; QoS is −1, 0, 1 or 2.
    fn from_str(s: &str) -> Result<Self, String> {
        let parse_qos = |q: &str| match q.trim() {
            "-1" => Ok(QoS::MinusOne),
            "0" => Ok(QoS::AtMostOnce),
            "1" => Ok(QoS::AtLeastOnce),
            "2" => Ok(QoS::ExactlyOnce),
            other => Err(format!("{other:?} is not a QoS (-1, 0, 1 or 2)")),
        };
        if !s.contains('=') {
            return parse_qos(s).map(QosMix::only);
        }
        let mut percent = [0u32; 4];
        let mut given = [false; 4];
        for part in s.split(',') {
            let (qos, share) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected QOS=PERCENT"))?;
            let i = qos_index(parse_qos(qos)?);
            let share: u32 = share
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: {share:?} is not a whole percentage"))?;
            if given.get(i).copied().unwrap_or(true) {
                return Err(format!("{part:?}: QoS {qos} given twice"));
            }
            if let (Some(g), Some(p)) = (given.get_mut(i), percent.get_mut(i)) {
                *g = true;
                *p = share;
            }
        }
        QosMix::from_percent(percent)
    }
}

/// The sleep duty cycle of sleeping devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepCycle {
    /// How long a device stays awake (publishing, receiving live) per cycle.
    pub awake: Duration,
    /// How long it sleeps: the Duration of its DISCONNECT, in seconds (≥ 1).
    pub asleep_secs: u16,
}

/// One simulation. [`SimConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The gateway's UDP address (its DTLS address with `dtls`).
    pub gateway: SocketAddr,
    /// Every device connects over DTLS with this pre-shared key, each with
    /// its own session, as client id `IDENTITY/sim…-N` (so the gateway's
    /// `[dtls] client_id_pattern` must allow `%i/*`). `None`: plain UDP.
    pub dtls: Option<crate::transport::dtls::client::PskCredentials>,
    /// How many devices (≥ 1).
    pub devices: usize,
    /// Messages per second each device publishes ([`MIN_RATE`]..=[`MAX_RATE`]).
    /// Default: 1.
    pub rate: f64,
    /// How long each device publishes. Default: 10 messages.
    pub length: SimLength,
    /// The QoS of the messages. Default: all QoS 1.
    pub qos: QosMix,
    /// Payload size in bytes (≥ [`payload::HEADER_LEN`]); payloads carry the
    /// measurement header, zero-padded. Default: 64.
    pub payload_size: usize,
    /// How many devices (the first ones) also subscribe. Default: 1.
    pub subscribers: usize,
    /// The QoS subscribers ask for; messages arrive at the lower of it and
    /// their publish QoS. Default: 2 (each at its publish QoS).
    pub subscribe_qos: QoS,
    /// Device `i` publishes to `{topic_prefix}/{i}`. Default: `sngate/sim`.
    pub topic_prefix: String,
    /// The filter subscribers subscribe to. Default (`None`):
    /// `{topic_prefix}/#`.
    pub filter: Option<String>,
    /// Where QoS −1 messages go (subscribers subscribe to it too). Default:
    /// the short name `sm`.
    pub minus_one_topic: MinusOneTopic,
    /// The sleep duty cycle; `None`: nobody sleeps. Default: none.
    pub sleep: Option<SleepCycle>,
    /// How many devices (the first ones) follow the sleep cycle. Default:
    /// all of them (when there is a cycle).
    pub sleepers: usize,
    /// How long subscribers may still wait for deliveries once publishing
    /// is over. Default: 10 s.
    pub drain: Duration,
    /// Keep-alive of every device, in seconds. Default: 60.
    pub keep_alive_secs: u16,
    /// Devices' retransmission interval (T_RETRY). Default: 2 s.
    pub retry_interval: Duration,
    /// Devices' retransmissions before a request fails (N_RETRY). Default: 3.
    pub max_retries: u32,
    /// Devices connecting at the same time. Default: 100.
    pub connect_concurrency: usize,
    /// The MQTT-SN version the devices speak. Default: all 1.2.
    pub protocol: SimProtocol,
}

/// Which MQTT-SN version the simulated devices speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimProtocol {
    /// Every device speaks 1.2.
    #[default]
    V1_2,
    /// Every device speaks 2.0.
    V2,
    /// A fleet half and half: even-numbered devices speak 1.2, odd-numbered
    /// ones 2.0, so publishers and subscribers of both versions meet.
    Mixed,
}

impl SimProtocol {
    /// The version device `index` speaks.
    pub fn of(self, index: usize) -> Protocol {
        match self {
            SimProtocol::V1_2 => Protocol::V1_2,
            SimProtocol::V2 => Protocol::V2,
            SimProtocol::Mixed if index % 2 == 1 => Protocol::V2,
            SimProtocol::Mixed => Protocol::V1_2,
        }
    }
}

impl SimConfig {
    /// The defaults, against `gateway` with `devices` devices.
    pub fn new(gateway: SocketAddr, devices: usize) -> Self {
        SimConfig {
            gateway,
            devices,
            rate: 1.0,
            length: SimLength::Messages(10),
            qos: QosMix::only(QoS::AtLeastOnce),
            payload_size: 64,
            subscribers: 1,
            subscribe_qos: QoS::ExactlyOnce,
            topic_prefix: "sngate/sim".to_owned(),
            filter: None,
            minus_one_topic: MinusOneTopic::Short(*b"sm"),
            sleep: None,
            sleepers: usize::MAX,
            drain: Duration::from_secs(10),
            keep_alive_secs: 60,
            retry_interval: Duration::from_secs(2),
            max_retries: 3,
            connect_concurrency: 100,
            dtls: None,
            protocol: SimProtocol::V1_2,
        }
    }

    /// The filter subscribers use.
    pub fn filter(&self) -> String {
        self.filter
            .clone()
            .unwrap_or_else(|| format!("{}/#", self.topic_prefix))
    }

    /// How many devices sleep.
    pub fn sleeping_devices(&self) -> usize {
        if self.sleep.is_some() {
            self.sleepers.min(self.devices)
        } else {
            0
        }
    }

    /// The topic device `i` publishes to.
    pub fn topic_of(&self, device: usize) -> String {
        format!("{}/{device}", self.topic_prefix)
    }

    /// Checks the settings once, before anything is sent.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |why: String| Err(SimError::Invalid(why));
        if self.devices == 0 {
            return bad("at least one device is needed".into());
        }
        if !(MIN_RATE..=MAX_RATE).contains(&self.rate) {
            return bad(format!(
                "the rate must be {MIN_RATE}..={MAX_RATE} messages per second (got {})",
                self.rate
            ));
        }
        match self.length {
            SimLength::Messages(0) => return bad("each device must send at least 1 message".into()),
            SimLength::Duration(d) if d.is_zero() || d > MAX_SPAN => {
                return bad(format!(
                    "the duration must be above 0 and at most {} s",
                    MAX_SPAN.as_secs()
                ));
            }
            _ => {}
        }
        for (what, d) in [
            ("the drain time", self.drain),
            ("the retry interval", self.retry_interval),
            (
                "the awake time",
                self.sleep.map_or(Duration::ZERO, |c| c.awake),
            ),
        ] {
            if d > MAX_SPAN {
                return bad(format!("{what} must be at most {} s", MAX_SPAN.as_secs()));
            }
        }
        if self.payload_size < payload::HEADER_LEN || self.payload_size > 65_000 {
            return bad(format!(
                "the payload size must be {}..=65000 bytes (the measurement header takes {})",
                payload::HEADER_LEN,
                payload::HEADER_LEN
            ));
        }
        if self.subscribers > self.devices {
            return bad(format!(
                "{} subscribers, but only {} devices",
                self.subscribers, self.devices
            ));
        }
        let streams = self.subscribers.saturating_mul(self.devices);
        if streams > MAX_STREAMS {
            return bad(format!(
                "{} subscribers × {} devices = {streams} message streams to track; at most {MAX_STREAMS}",
                self.subscribers, self.devices
            ));
        }
        if self.subscribe_qos == QoS::MinusOne {
            return bad("a subscription's QoS is 0, 1 or 2".into());
        }
        if self.topic_prefix.is_empty()
            || crate::core::topic::validate_name(&self.topic_of(0)).is_err()
        {
            return bad(format!("{:?} cannot start a topic name", self.topic_prefix));
        }
        if let Err(e) = crate::core::topic::validate_filter(&self.filter()) {
            return bad(format!("filter {:?}: {e}", self.filter()));
        }
        if let Some(cycle) = self.sleep
            && (cycle.awake.is_zero() || cycle.asleep_secs == 0)
        {
            return bad("a sleep cycle needs an awake time above 0 and at least 1 s asleep".into());
        }
        if self.retry_interval.is_zero() {
            return bad("the retry interval must be above 0".into());
        }
        if self.connect_concurrency == 0 {
            return bad("the connect concurrency must be at least 1".into());
        }
        Ok(())
    }
}

/// Why a simulation could not run. The client's error is the `source`
/// (printed as the cause).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The settings are inconsistent.
    #[error("invalid simulation: {0}")]
    Invalid(String),
    /// A device could not connect (gateway unreachable, CONNECT refused,
    /// out of sockets…).
    #[error("device {device} ({client_id}) cannot connect to the gateway at {gateway}")]
    Connect {
        /// The device's index.
        device: usize,
        /// Its client id.
        client_id: String,
        /// The gateway.
        gateway: SocketAddr,
        /// What the client said.
        source: ClientError,
    },
    /// A subscribing device's SUBSCRIBE failed.
    #[error("device {device} ({client_id}) cannot subscribe to {topic}")]
    Subscribe {
        /// The device's index.
        device: usize,
        /// Its client id.
        client_id: String,
        /// The filter or topic.
        topic: String,
        /// What the client said.
        source: ClientError,
    },
}

/// QoS −1, 0, 1, 2 as an index 0..=3.
pub(crate) fn qos_index(qos: QoS) -> usize {
    match qos {
        QoS::MinusOne => 0,
        QoS::AtMostOnce => 1,
        QoS::AtLeastOnce => 2,
        QoS::ExactlyOnce => 3,
    }
}

/// The QoS at index 0..=3, as a number −1..=2.
pub(crate) fn qos_number(index: usize) -> i8 {
    match index {
        0 => -1,
        1 => 0,
        2 => 1,
        _ => 2,
    }
}

/// What the devices and the coordinator share while a run lasts.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub run: u32,
    /// The payloads' time base.
    pub epoch: Instant,
    /// Live counters, for progress.
    pub sent: AtomicU64,
    pub acknowledged: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    /// Devices still publishing; the last one to finish notifies `published`.
    pub publishing: AtomicUsize,
    pub published: Notify,
    /// Per publish QoS: how many messages each subscriber should receive.
    pub expected_each: [AtomicU64; 4],
    /// The latency histogram (µs), fed in batches.
    pub latency: std::sync::Mutex<Histogram<u64>>,
}

/// What subscribers learn when publishing is over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DrainTarget {
    /// Deliveries each subscriber should get.
    pub expected: u64,
    /// When to stop waiting for them.
    pub deadline: Instant,
}

/// The run id: differs between runs (time, process, a counter), so clients
/// and payloads of concurrent or earlier runs are told apart.
fn new_run_id() -> u32 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// Runs a simulation; `progress` is called about once a second with live
/// counters. Fails only when the run cannot start (invalid settings, a
/// device that cannot connect or subscribe); what goes wrong later is
/// counted in the report.
pub async fn run(
    cfg: SimConfig,
    mut progress: impl FnMut(&Progress),
) -> Result<SimReport, SimError> {
    cfg.validate()?;
    let run = new_run_id();
    let clients = connect_all(&cfg, run).await?;
    let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| SimError::Invalid(format!("latency histogram: {e}")))?;
    let devices = cfg.devices;
    let shared = Arc::new(Shared {
        cfg,
        run,
        epoch: Instant::now(),
        sent: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        publishing: AtomicUsize::new(devices),
        published: Notify::new(),
        expected_each: Default::default(),
        latency: std::sync::Mutex::new(histogram),
    });
    let (drain_tx, drain_rx) = watch::channel(None);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let device = Device::new(index, client, Arc::clone(&shared), drain_rx.clone());
        tasks.spawn(device.run(start));
    }
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_tick = (start, 0u64, 0u64);
    let mut publish_end = None;
    let mut outcomes: Vec<DeviceOutcome> = Vec::with_capacity(devices);
    let mut panics = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                let sent = shared.sent.load(Ordering::Relaxed);
                let delivered = shared.delivered.load(Ordering::Relaxed);
                let secs = now.duration_since(last_tick.0).as_secs_f64().max(1e-9);
                progress(&Progress {
                    elapsed: now.duration_since(start),
                    sent,
                    acknowledged: shared.acknowledged.load(Ordering::Relaxed),
                    delivered,
                    errors: shared.errors.load(Ordering::Relaxed),
                    publishing: shared.publishing.load(Ordering::Relaxed),
                    devices,
                    sent_per_sec: sent.saturating_sub(last_tick.1) as f64 / secs,
                    delivered_per_sec: delivered.saturating_sub(last_tick.2) as f64 / secs,
                });
                last_tick = (now, sent, delivered);
            }
            _ = shared.published.notified(), if publish_end.is_none() => {
                let now = Instant::now();
                publish_end = Some(now);
                let expected = shared
                    .expected_each
                    .iter()
                    .map(|e| e.load(Ordering::Acquire))
                    .sum();
                let _ = drain_tx.send(Some(DrainTarget {
                    expected,
                    deadline: now + shared.cfg.drain,
                }));
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(outcome)) => outcomes.push(outcome),
                Some(Err(e)) => panics.push(format!("a device task ended abnormally: {e}")),
            },
        }
    }
    let publish_end = publish_end.unwrap_or_else(Instant::now);
    Ok(report::build(&shared, start, publish_end, outcomes, panics))
}

/// Connects every device (device 0 alone first), subscribing the
/// subscribers; the first failure ends the run.
async fn connect_all(cfg: &SimConfig, run: u32) -> Result<Vec<Client>, SimError> {
    let cfg = Arc::new(cfg.clone());
    let first = connect_device(Arc::clone(&cfg), run, 0).await?;
    let mut clients: Vec<Option<Client>> = Vec::with_capacity(cfg.devices);
    clients.push(Some(first));
    clients.resize_with(cfg.devices, || None);
    let permits = Arc::new(Semaphore::new(cfg.connect_concurrency));
    let mut connecting = JoinSet::new();
    for index in 1..cfg.devices {
        let (cfg, permits) = (Arc::clone(&cfg), Arc::clone(&permits));
        connecting.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (index, connect_device(cfg, run, index).await)
        });
    }
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok((index, Ok(client))) => {
                if let Some(slot) = clients.get_mut(index) {
                    *slot = Some(client);
                }
            }
            Ok((_, Err(e))) => {
                connecting.abort_all();
                return Err(e);
            }
            Err(e) => {
                connecting.abort_all();
                return Err(SimError::Invalid(format!(
                    "a connecting task ended abnormally: {e}"
                )));
            }
        }
    }
    Ok(clients.into_iter().flatten().collect())
}

/// The client id of device `index` in run `run`.
pub(crate) fn client_id(run: u32, index: usize) -> String {
    format!("sim{run:08x}-{index}")
}

async fn connect_device(cfg: Arc<SimConfig>, run: u32, index: usize) -> Result<Client, SimError> {
    let client_id = match &cfg.dtls {
        Some(psk) => format!("{}/{}", psk.identity, client_id(run, index)),
        None => client_id(run, index),
    };
    let subscriber = index < cfg.subscribers;
    let sleeper = index < cfg.sleeping_devices();
    let mut options = ConnectOptions::new(client_id.clone())
        .keep_alive(cfg.keep_alive_secs)
        .retry(cfg.retry_interval, cfg.max_retries)
        .protocol(cfg.protocol.of(index))
        // A sleeping subscriber connects again after every sleep: its
        // subscriptions must survive that.
        .clean_session(!(subscriber && sleeper));
    if let MinusOneTopic::Predefined(id) = cfg.minus_one_topic {
        options = options.predefined(id, String::new());
    }
    let endpoint = match &cfg.dtls {
        Some(psk) => crate::client::Endpoint::Dtls {
            gateway: cfg.gateway,
            psk: psk.clone(),
        },
        None => crate::client::Endpoint::Udp(cfg.gateway),
    };
    let mut client = Client::connect_via(endpoint, options)
        .await
        .map_err(|source| SimError::Connect {
            device: index,
            client_id: client_id.clone(),
            gateway: cfg.gateway,
            source,
        })?;
    if subscriber {
        let mut topics = vec![(SubscribeTopic::Name(cfg.filter()), cfg.filter())];
        if cfg.qos.has(QoS::MinusOne) {
            topics.push(match cfg.minus_one_topic {
                MinusOneTopic::Short(s) => (
                    SubscribeTopic::Short(s),
                    String::from_utf8_lossy(&s).into_owned(),
                ),
                MinusOneTopic::Predefined(id) => (
                    SubscribeTopic::Predefined(id),
                    format!("pre-defined id {id}"),
                ),
            });
        }
        for (topic, shown) in topics {
            client
                .subscribe(topic, cfg.subscribe_qos)
                .await
                .map_err(|source| SimError::Subscribe {
                    device: index,
                    client_id: client_id.clone(),
                    topic: shown,
                    source,
                })?;
        }
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_mix_forms() {
        assert_eq!("1".parse::<QosMix>(), Ok(QosMix::only(QoS::AtLeastOnce)));
        let mix: QosMix = "0=50,1=40,2=10".parse().expect("valid");
        assert_eq!(
            (
                mix.percent(QoS::MinusOne),
                mix.percent(QoS::AtMostOnce),
                mix.percent(QoS::AtLeastOnce),
                mix.percent(QoS::ExactlyOnce)
            ),
            (0, 50, 40, 10)
        );
        let mix: QosMix = "-1=25, 0=75".parse().expect("valid");
        assert!(mix.has(QoS::MinusOne) && !mix.has(QoS::AtLeastOnce));
        for bad in [
            "3",
            "0=50,1=40",
            "0=50,0=50",
            "0=x",
            "0:100",
            "",
            "1=100,2=0,1=0",
        ] {
            assert!(bad.parse::<QosMix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let gw = "127.0.0.1:1883".parse().expect("address");
        assert!(SimConfig::new(gw, 3).validate().is_ok());
        type Change = Box<dyn Fn(&mut SimConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.devices = 0), "at least one device"),
            (Box::new(|c| c.rate = 0.0), "rate"),
            (Box::new(|c| c.rate = f64::NAN), "rate"),
            (Box::new(|c| c.rate = 1e-300), "rate"),
            (
                Box::new(|c| c.length = SimLength::Duration(Duration::MAX)),
                "duration",
            ),
            (Box::new(|c| c.drain = Duration::MAX), "drain"),
            (
                Box::new(|c| c.length = SimLength::Messages(0)),
                "at least 1 message",
            ),
            (Box::new(|c| c.payload_size = 10), "payload size"),
            (Box::new(|c| c.subscribers = 4), "subscribers"),
            (
                Box::new(|c| {
                    c.devices = 10_000;
                    c.subscribers = 1_001;
                }),
                "message streams",
            ),
            (Box::new(|c| c.filter = Some("a/#/b".into())), "filter"),
            (Box::new(|c| c.topic_prefix = "a/+".into()), "topic name"),
            (
                Box::new(|c| {
                    c.sleep = Some(SleepCycle {
                        awake: Duration::from_secs(1),
                        asleep_secs: 0,
                    })
                }),
                "sleep cycle",
            ),
        ];
        for (change, needle) in cases {
            let mut cfg = SimConfig::new(gw, 3);
            change(&mut cfg);
            let err = cfg.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err} (wanted {needle:?})");
        }
    }

    #[test]
    fn run_ids_differ() {
        let ids: std::collections::HashSet<u32> = (0..1000).map(|_| new_run_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
