//! One simulated device: its task publishes on schedule (sleeping and
//! waking on its duty cycle when it is a sleeper), records what it receives
//! when it is a subscriber, drains, and disconnects. It never returns an
//! error: failures are counted in its [`DeviceOutcome`], and three in a row
//! stop the device, so a dead gateway ends the run instead of stalling it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::payload::{self, Header};
use super::tracker::{Seen, SeqTracker};
use super::{DrainTarget, MinusOneTopic, QosMix, Shared, SimLength, qos_number};
use crate::client::{Client, ClientError, Message};
use crate::proto::{QoS, ReturnCode, TopicRef};

/// Errors in a row after which a device stops.
const MAX_CONSECUTIVE_ERRORS: u32 = 3;

/// Latency samples a subscriber keeps before adding them to the shared
/// histogram (one lock per batch).
const SAMPLE_BATCH: usize = 256;

/// Error messages a device keeps for the report.
const KEPT_ERRORS: usize = 3;

/// What one device did; indices are QoS −1, 0, 1, 2.
#[derive(Debug, Default)]
pub(super) struct DeviceOutcome {
    pub sent: [u64; 4],
    pub acknowledged: [u64; 4],
    pub rejected: [u64; 4],
    pub errors: u64,
    pub error_messages: Vec<String>,
    /// Why the device stopped early, if it did.
    pub failed: Option<String>,
    /// What it received, when it subscribes.
    pub received: Option<Received>,
}

/// A subscriber's counts; indices are the publish QoS −1, 0, 1, 2.
#[derive(Debug, Default)]
pub(super) struct Received {
    pub delivered: [u64; 4],
    pub duplicates: [u64; 4],
    /// Messages that are not this run's (other traffic on the filter).
    pub foreign: u64,
    /// When the last new message arrived.
    pub last_delivery: Option<Instant>,
}

/// Picks each message's QoS so that the mix holds exactly over any run
/// (smooth weighted round robin).
#[derive(Debug)]
struct QosPicker {
    weights: [i64; 4],
    current: [i64; 4],
}

impl QosPicker {
    /// A picker for `mix`, `phase` picks into its cycle, so devices that
    /// each send a few messages still add up to the mix together.
    fn new(mix: &QosMix, phase: usize) -> Self {
        let qos = [
            QoS::MinusOne,
            QoS::AtMostOnce,
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
        ];
        let mut picker = QosPicker {
            weights: qos.map(|q| i64::from(mix.percent(q))),
            current: [0; 4],
        };
        for _ in 0..phase % 100 {
            picker.pick();
        }
        picker
    }

    fn pick(&mut self) -> usize {
        let total: i64 = self.weights.iter().sum();
        for (c, w) in self.current.iter_mut().zip(self.weights) {
            *c += w;
        }
        let mut best = 0;
        for (i, c) in self.current.iter().enumerate() {
            if *c > self.current.get(best).copied().unwrap_or(i64::MIN) {
                best = i;
            }
        }
        if let Some(c) = self.current.get_mut(best) {
            *c -= total;
        }
        best
    }
}

fn qos_at(index: usize) -> QoS {
    match index {
        0 => QoS::MinusOne,
        1 => QoS::AtMostOnce,
        2 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Counts a device out of the publishing ones when dropped — at the end of
/// its publish phase, or if its task unwinds — so subscribers always learn
/// when publishing is over.
struct Publishing(Option<Arc<Shared>>);

impl Drop for Publishing {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take()
            && shared.publishing.fetch_sub(1, Ordering::AcqRel) == 1
        {
            shared.published.notify_one();
        }
    }
}

/// A subscriber's receive state.
struct Inbox {
    /// One per sending device.
    trackers: Vec<SeqTracker>,
    counts: Received,
    samples: Vec<u64>,
}

pub(super) struct Device {
    index: usize,
    client: Client,
    shared: Arc<Shared>,
    drain: watch::Receiver<Option<DrainTarget>>,
    topic: String,
    topic_id: Option<u16>,
    /// Whether subscribers' filter matches this device's topic.
    matched: bool,
    sleeper: bool,
    /// Active (CONNECTed) rather than asleep.
    active: bool,
    picker: QosPicker,
    seq: u64,
    consecutive_errors: u32,
    outcome: DeviceOutcome,
    inbox: Option<Inbox>,
}

impl Device {
    pub fn new(
        index: usize,
        client: Client,
        shared: Arc<Shared>,
        drain: watch::Receiver<Option<DrainTarget>>,
    ) -> Self {
        let cfg = &shared.cfg;
        let topic = cfg.topic_of(index);
        let matched = crate::core::topic::matches(&cfg.filter(), &topic);
        let inbox = (index < cfg.subscribers).then(|| Inbox {
            trackers: vec![SeqTracker::default(); cfg.devices],
            counts: Received::default(),
            samples: Vec::with_capacity(SAMPLE_BATCH),
        });
        Device {
            index,
            client,
            drain,
            topic,
            topic_id: None,
            matched,
            sleeper: index < cfg.sleeping_devices(),
            active: true,
            picker: QosPicker::new(&cfg.qos, index),
            seq: 0,
            consecutive_errors: 0,
            outcome: DeviceOutcome::default(),
            inbox,
            shared,
        }
    }

    /// Publishes, drains (subscribers), disconnects.
    pub async fn run(mut self, start: Instant) -> DeviceOutcome {
        let publishing = Publishing(Some(Arc::clone(&self.shared)));
        self.publish_phase(start).await;
        // What every subscriber should receive of this device's messages.
        for (q, (sent, rejected)) in self
            .outcome
            .sent
            .iter()
            .zip(self.outcome.rejected)
            .enumerate()
        {
            // QoS −1 goes to a topic subscribers subscribe to by itself.
            if (q == 0 || self.matched)
                && let Some(slot) = self.shared.expected_each.get(q)
            {
                slot.fetch_add(sent.saturating_sub(rejected), Ordering::AcqRel);
            }
        }
        drop(publishing);
        if self.inbox.is_some() && self.outcome.failed.is_none() {
            self.drain_phase().await;
        }
        self.flush_samples();
        let mut outcome = std::mem::take(&mut self.outcome);
        outcome.received = self.inbox.take().map(|inbox| inbox.counts);
        // Leave cleanly, but never wait long for it.
        let wait = self.shared.cfg.retry_interval;
        let _ = tokio::time::timeout(wait, self.client.disconnect()).await;
        outcome
    }

    async fn publish_phase(&mut self, start: Instant) {
        let cfg = &self.shared.cfg;
        let period = Duration::from_secs_f64(1.0 / cfg.rate);
        let devices = cfg.devices as f64;
        let mut due = start + period.mul_f64(self.index as f64 / devices);
        let (count, stop_at) = match cfg.length {
            SimLength::Messages(n) => (Some(n), None),
            SimLength::Duration(d) => (None, Some(start + d)),
        };
        let cycle = if self.sleeper { cfg.sleep } else { None };
        let mut awake_until = cycle.map(|c| start + c.awake);
        loop {
            if self.outcome.failed.is_some() || count.is_some_and(|n| self.seq >= n) {
                return;
            }
            if stop_at.is_some_and(|end| due >= end) {
                return;
            }
            if let (Some(cycle), Some(until)) = (cycle, awake_until)
                && due >= until
            {
                self.sleep_and_wake(cycle.asleep_secs, None).await;
                if self.outcome.failed.is_some() {
                    return;
                }
                self.reconnect().await;
                let now = Instant::now();
                awake_until = Some(now + cycle.awake);
                due = due.max(now);
                continue;
            }
            self.receive_until(due).await;
            self.publish_one().await;
            due += period;
            let now = Instant::now();
            if due < now {
                // Behind schedule (the gateway is slower than the rate):
                // carry on from now rather than send a burst.
                due = now;
            }
        }
    }

    /// Reads messages until `until` (or returns at once if not subscribed:
    /// nothing to read then).
    async fn receive_until(&mut self, until: Instant) {
        loop {
            tokio::select! {
                message = self.client.next_message() => match message {
                    Some(m) => self.record(m),
                    None => {
                        self.fail("the client's link failed".into());
                        return;
                    }
                },
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }

    async fn publish_one(&mut self) {
        let q = self.picker.pick();
        let qos = qos_at(q);
        let topic = match qos {
            QoS::MinusOne => match self.shared.cfg.minus_one_topic {
                MinusOneTopic::Short(s) => TopicRef::Short(s),
                MinusOneTopic::Predefined(id) => TopicRef::Predefined(id),
            },
            _ => match self.topic_id {
                Some(id) => TopicRef::Id(id),
                None => match self.client.register(&self.topic).await {
                    Ok(id) => {
                        self.topic_id = Some(id);
                        TopicRef::Id(id)
                    }
                    Err(e) => return self.on_error("REGISTER", e).await,
                },
            },
        };
        let header = Header {
            run: self.shared.run,
            device: self.index as u32,
            seq: self.seq,
            sent_us: self.shared.epoch.elapsed().as_micros() as u64,
            qos: qos_number(q),
        };
        let body = payload::encode(&header, self.shared.cfg.payload_size);
        self.seq += 1;
        if let Some(n) = self.outcome.sent.get_mut(q) {
            *n += 1;
        }
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        match self.client.publish(topic, body, qos, false).await {
            Ok(()) => {
                self.consecutive_errors = 0;
                if matches!(qos, QoS::AtLeastOnce | QoS::ExactlyOnce) {
                    if let Some(n) = self.outcome.acknowledged.get_mut(q) {
                        *n += 1;
                    }
                    self.shared.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                if let ClientError::Rejected(code) = e {
                    if let Some(n) = self.outcome.rejected.get_mut(q) {
                        *n += 1;
                    }
                    if code == ReturnCode::InvalidTopicId {
                        self.topic_id = None;
                    }
                }
                self.on_error("PUBLISH", e).await;
            }
        }
        while let Some(m) = self.client.try_message() {
            self.record(m);
        }
    }

    /// DISCONNECT(duration) unless already asleep, sleep for the duration
    /// (or until `until`, if sooner), then wake with PINGREQ and collect
    /// what the gateway buffered. The client is asleep afterwards.
    async fn sleep_and_wake(&mut self, asleep_secs: u16, until: Option<Instant>) {
        if self.active {
            if let Err(e) = self.client.sleep(asleep_secs).await {
                return self.on_error("DISCONNECT (sleep)", e).await;
            }
            self.active = false;
        }
        let mut wake_at = Instant::now() + Duration::from_secs(u64::from(asleep_secs));
        if let Some(until) = until {
            wake_at = wake_at.min(until);
        }
        tokio::time::sleep_until(wake_at).await;
        match self.client.wake_and_collect().await {
            Ok(messages) => {
                self.consecutive_errors = 0;
                for m in messages {
                    self.record(m);
                }
            }
            Err(e) => self.on_error("PINGREQ (wake)", e).await,
        }
    }

    /// CONNECT again (after sleeping, or after the gateway disconnected us).
    async fn reconnect(&mut self) {
        match self.client.reconnect().await {
            Ok(()) => {
                self.active = true;
                self.topic_id = None;
                self.consecutive_errors = 0;
            }
            Err(e) => {
                // Not via on_error: a failed reconnect must not recurse.
                self.count_error("CONNECT", &e);
                self.fail(format!("device {}: CONNECT failed: {e}", self.index));
            }
        }
    }

    /// Subscribers: receive (or wake and collect) until every expected
    /// delivery is in, or the drain deadline passes.
    async fn drain_phase(&mut self) {
        let asleep_secs = match self.shared.cfg.sleep {
            Some(cycle) if self.sleeper => Some(cycle.asleep_secs),
            _ => None,
        };
        loop {
            if self.outcome.failed.is_some() {
                return;
            }
            let target = *self.drain.borrow();
            if let Some(target) = target
                && (self.unique_received() >= target.expected || Instant::now() >= target.deadline)
            {
                return;
            }
            match asleep_secs {
                Some(secs) => {
                    let until = target.map(|t| t.deadline);
                    self.sleep_and_wake(secs, until).await;
                }
                None => {
                    // Wake at least once a second to look at the deadline.
                    let tick = Instant::now() + Duration::from_secs(1);
                    let until = target.map_or(tick, |t| t.deadline.min(tick));
                    tokio::select! {
                        message = self.client.next_message() => match message {
                            Some(m) => self.record(m),
                            None => self.fail("the client's link failed".into()),
                        },
                        changed = self.drain.changed() => {
                            if changed.is_err() {
                                // The run is over: nobody will say more.
                                return;
                            }
                        }
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }
    }

    fn unique_received(&self) -> u64 {
        self.inbox
            .as_ref()
            .map_or(0, |inbox| inbox.counts.delivered.iter().sum())
    }

    /// Counts one received message.
    fn record(&mut self, m: Message) {
        let shared = &self.shared;
        let Some(inbox) = self.inbox.as_mut() else {
            return;
        };
        let header = payload::decode(&m.payload).filter(|h| h.run == shared.run);
        let Some((header, tracker)) = header.and_then(|h| {
            let tracker = inbox.trackers.get_mut(usize::try_from(h.device).ok()?)?;
            (-1..=2).contains(&h.qos).then_some((h, tracker))
        }) else {
            inbox.counts.foreign += 1;
            return;
        };
        // −1..=2 checked above: the index is 0..=3.
        let q = usize::try_from(header.qos + 1).unwrap_or(0);
        let mut flush = false;
        match tracker.observe(header.seq) {
            Seen::New => {
                if let Some(n) = inbox.counts.delivered.get_mut(q) {
                    *n += 1;
                }
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                let sent_at = shared.epoch + Duration::from_micros(header.sent_us);
                let latency = m.received_at.saturating_duration_since(sent_at);
                inbox
                    .samples
                    .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                inbox.counts.last_delivery = inbox.counts.last_delivery.max(Some(m.received_at));
                flush = inbox.samples.len() >= SAMPLE_BATCH;
            }
            Seen::Duplicate => {
                if let Some(n) = inbox.counts.duplicates.get_mut(q) {
                    *n += 1;
                }
            }
        }
        if flush {
            self.flush_samples();
        }
    }

    /// Adds the kept latency samples to the shared histogram.
    fn flush_samples(&mut self) {
        let Some(inbox) = self.inbox.as_mut() else {
            return;
        };
        if inbox.samples.is_empty() {
            return;
        }
        let mut histogram = self
            .shared
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for sample in inbox.samples.drain(..) {
            histogram.saturating_record(sample.max(1));
        }
    }

    fn count_error(&mut self, during: &str, e: &ClientError) {
        self.outcome.errors += 1;
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        if self.outcome.error_messages.len() < KEPT_ERRORS {
            self.outcome
                .error_messages
                .push(format!("device {}: {during}: {e}", self.index));
        }
    }

    /// Counts an error; a DISCONNECT from the gateway is answered with a new
    /// CONNECT, a dead link or too many errors in a row stop the device.
    async fn on_error(&mut self, during: &str, e: ClientError) {
        self.count_error(during, &e);
        self.consecutive_errors += 1;
        match e {
            ClientError::Closed | ClientError::Io(_) => {
                self.fail(format!("device {}: {during}: {e}", self.index));
            }
            _ if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS => {
                self.fail(format!(
                    "device {}: {MAX_CONSECUTIVE_ERRORS} errors in a row, the last: {during}: {e}",
                    self.index
                ));
            }
            ClientError::Disconnected => self.reconnect().await,
            _ => {}
        }
    }

    fn fail(&mut self, why: String) {
        if self.outcome.failed.is_none() {
            self.outcome.failed = Some(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picker_holds_the_mix_exactly() {
        let mix: QosMix = "-1=10,0=40,1=40,2=10".parse().expect("mix");
        let mut picker = QosPicker::new(&mix, 0);
        let mut counts = [0u32; 4];
        for _ in 0..100 {
            counts[picker.pick()] += 1;
        }
        assert_eq!(counts, [10, 40, 40, 10]);
        // And within any prefix, never more than one away from the share.
        let mut picker = QosPicker::new(&"0=50,1=50".parse().expect("mix"), 0);
        let picks: Vec<usize> = (0..6).map(|_| picker.pick()).collect();
        assert_eq!(picks.iter().filter(|&&q| q == 1).count(), 3);
        // Devices at successive phases, a few messages each, add up too.
        let mut counts = [0u32; 4];
        for device in 0..20 {
            let mut picker = QosPicker::new(&mix, device);
            for _ in 0..25 {
                counts[picker.pick()] += 1;
            }
        }
        assert_eq!(counts, [50, 200, 200, 50]);
    }
}
