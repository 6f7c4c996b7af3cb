//! What a simulation reports: the live [`Progress`] once a second, and the
//! final [`SimReport`] — built here from the devices' outcomes, printed as
//! plain text (`Display`) or serialised to JSON (`serde`).

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::device::DeviceOutcome;
use super::{Shared, qos_number};

/// Errors listed in a report; the rest are only counted.
const LISTED_ERRORS: usize = 10;

/// Live counters, handed to the progress callback about once a second.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Since publishing started.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// Messages published so far.
    pub sent: u64,
    /// QoS 1/2 messages acknowledged so far.
    pub acknowledged: u64,
    /// Distinct messages received by subscribers so far.
    pub delivered: u64,
    /// Errors so far.
    pub errors: u64,
    /// Devices still publishing.
    pub publishing: usize,
    /// All devices.
    pub devices: usize,
    /// Publish rate over the last interval, messages per second.
    pub sent_per_sec: f64,
    /// Delivery rate over the last interval, messages per second.
    pub delivered_per_sec: f64,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>5.0}s] sent {} ({:.0}/s), acked {}, delivered {} ({:.0}/s), errors {}, publishing {}/{}",
            self.elapsed.as_secs_f64(),
            self.sent,
            self.sent_per_sec,
            self.acknowledged,
            self.delivered,
            self.delivered_per_sec,
            self.errors,
            self.publishing,
            self.devices,
        )
    }
}

/// Counts for the messages published at one QoS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QosReport {
    /// The publish QoS: −1, 0, 1 or 2.
    pub qos: i8,
    /// Messages published.
    pub sent: u64,
    /// Acknowledged (PUBACK at QoS 1, PUBCOMP at QoS 2; 0 below QoS 1).
    pub acknowledged: u64,
    /// Refused by the gateway (a PUBACK with a return code).
    pub rejected: u64,
    /// Deliveries expected: for every subscriber, each message sent on a
    /// topic it subscribed to (refused ones excepted).
    pub expected: u64,
    /// Distinct messages received by subscribers.
    pub delivered: u64,
    /// `expected − delivered` (never below 0).
    pub lost: u64,
    /// Messages a subscriber received more than once (each extra copy).
    pub duplicates: u64,
}

/// Latency from send to arrival, over every distinct delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencyReport {
    /// How many deliveries were timed.
    pub samples: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// Mean, µs.
    pub mean_us: u64,
}

/// The summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// The run id (in every client id and payload), hexadecimal.
    pub run_id: String,
    /// The gateway.
    pub gateway: String,
    /// Devices simulated.
    pub devices: usize,
    /// Of which subscribing.
    pub subscribers: usize,
    /// Of which sleeping on a duty cycle.
    pub sleepers: usize,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// How long publishing took, seconds.
    pub publish_secs: f64,
    /// Messages published.
    pub sent: u64,
    /// QoS 1/2 messages acknowledged.
    pub acknowledged: u64,
    /// Messages the gateway refused.
    pub rejected: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Expected but not delivered.
    pub lost: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Messages on the filter that this run did not send.
    pub foreign: u64,
    /// The same counts per publish QoS (the QoS levels sent).
    pub per_qos: Vec<QosReport>,
    /// Latency; `None` when nothing was delivered.
    pub latency: Option<LatencyReport>,
    /// Messages published per second (over the publishing time).
    pub sent_per_sec: f64,
    /// Messages delivered per second (from the start to the last delivery).
    pub delivered_per_sec: f64,
    /// Errors counted (timeouts, refusals, disconnections…).
    pub errors: u64,
    /// Devices that stopped early (three errors in a row, a dead link).
    pub failed_devices: u64,
    /// The first errors, as text.
    pub error_messages: Vec<String>,
}

/// Adds up the devices' outcomes.
pub(super) fn build(
    shared: &Shared,
    start: Instant,
    publish_end: Instant,
    outcomes: Vec<DeviceOutcome>,
    panics: Vec<String>,
) -> SimReport {
    let cfg = &shared.cfg;
    let mut sent = [0u64; 4];
    let mut acknowledged = [0u64; 4];
    let mut rejected = [0u64; 4];
    let mut delivered = [0u64; 4];
    let mut duplicates = [0u64; 4];
    let mut foreign = 0;
    let mut errors = 0;
    let mut failed_devices = panics.len() as u64;
    let mut error_messages = panics;
    let mut last_delivery = None;
    let add = |into: &mut [u64; 4], from: &[u64; 4]| {
        for (a, b) in into.iter_mut().zip(from) {
            *a += b;
        }
    };
    for o in &outcomes {
        add(&mut sent, &o.sent);
        add(&mut acknowledged, &o.acknowledged);
        add(&mut rejected, &o.rejected);
        errors += o.errors;
        if let Some(why) = &o.failed {
            failed_devices += 1;
            if error_messages.len() < LISTED_ERRORS {
                error_messages.push(why.clone());
            }
        }
        for m in &o.error_messages {
            if error_messages.len() < LISTED_ERRORS && !error_messages.contains(m) {
                error_messages.push(m.clone());
            }
        }
        if let Some(r) = &o.received {
            add(&mut delivered, &r.delivered);
            add(&mut duplicates, &r.duplicates);
            foreign += r.foreign;
            last_delivery = last_delivery.max(r.last_delivery);
        }
    }
    let subscribers = cfg.subscribers as u64;
    let per_qos: Vec<QosReport> = (0..4)
        .filter(|&q| sent[q] > 0 || delivered[q] > 0)
        .map(|q| {
            let expected = shared.expected_each[q]
                .load(std::sync::atomic::Ordering::Acquire)
                .saturating_mul(subscribers);
            QosReport {
                qos: qos_number(q),
                sent: sent[q],
                acknowledged: acknowledged[q],
                rejected: rejected[q],
                expected,
                delivered: delivered[q],
                lost: expected.saturating_sub(delivered[q]),
                duplicates: duplicates[q],
            }
        })
        .collect();
    let total = |f: fn(&QosReport) -> u64| per_qos.iter().map(f).sum::<u64>();
    let latency = {
        let h = shared
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (!h.is_empty()).then(|| LatencyReport {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean().round() as u64,
        })
    };
    let publish_secs = publish_end.duration_since(start).as_secs_f64();
    let delivered_total = total(|q| q.delivered);
    let delivery_secs = last_delivery
        .map(|t: Instant| t.saturating_duration_since(start).as_secs_f64())
        .unwrap_or(0.0);
    SimReport {
        run_id: format!("{:08x}", shared.run),
        gateway: cfg.gateway.to_string(),
        devices: cfg.devices,
        subscribers: cfg.subscribers,
        sleepers: cfg.sleeping_devices(),
        payload_bytes: cfg.payload_size,
        publish_secs,
        sent: total(|q| q.sent),
        acknowledged: total(|q| q.acknowledged),
        rejected: total(|q| q.rejected),
        expected: total(|q| q.expected),
        delivered: delivered_total,
        lost: total(|q| q.lost),
        duplicates: total(|q| q.duplicates),
        foreign,
        per_qos,
        latency,
        sent_per_sec: rate(total_sent(&sent), publish_secs),
        delivered_per_sec: rate(delivered_total, delivery_secs),
        errors,
        failed_devices,
        error_messages,
    }
}

fn total_sent(sent: &[u64; 4]) -> u64 {
    sent.iter().sum()
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sngate sim: run {} against {}: {} devices ({} subscribing, {} sleeping), {}-byte payloads",
            self.run_id,
            self.gateway,
            self.devices,
            self.subscribers,
            self.sleepers,
            self.payload_bytes
        )?;
        writeln!(
            f,
            "  sent        {} in {:.2} s ({:.1} msg/s); acknowledged {}, rejected {}",
            self.sent, self.publish_secs, self.sent_per_sec, self.acknowledged, self.rejected
        )?;
        writeln!(
            f,
            "  delivered   {} of {} expected ({:.1} msg/s); lost {}, duplicates {}{}",
            self.delivered,
            self.expected,
            self.delivered_per_sec,
            self.lost,
            self.duplicates,
            if self.foreign > 0 {
                format!(", not from this run {}", self.foreign)
            } else {
                String::new()
            }
        )?;
        match &self.latency {
            Some(l) => writeln!(
                f,
                "  latency     p50 {}, p99 {}, max {} (mean {}, {} samples)",
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.max_us),
                ms(l.mean_us),
                l.samples
            )?,
            None => writeln!(f, "  latency     no deliveries to time")?,
        }
        writeln!(
            f,
            "  {:<6} {:>10} {:>10} {:>9} {:>10} {:>10} {:>8} {:>10}",
            "QoS", "sent", "acked", "rejected", "expected", "delivered", "lost", "duplicate"
        )?;
        for q in &self.per_qos {
            writeln!(
                f,
                "  {:<6} {:>10} {:>10} {:>9} {:>10} {:>10} {:>8} {:>10}",
                q.qos,
                q.sent,
                q.acknowledged,
                q.rejected,
                q.expected,
                q.delivered,
                q.lost,
                q.duplicates
            )?;
        }
        if self.errors > 0 || self.failed_devices > 0 {
            writeln!(
                f,
                "  errors      {} ({} devices stopped early)",
                self.errors, self.failed_devices
            )?;
            for e in &self.error_messages {
                writeln!(f, "    {e}")?;
            }
        }
        Ok(())
    }
}
