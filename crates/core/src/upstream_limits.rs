//! What the upstream broker will take, as its CONNACK announced it (MQTT 5
//! Maximum Packet Size, Maximum QoS, Retain Available): an input from the
//! bridge ([`Gateway::handle_upstream_limits`]), so that a device's QoS 1/2
//! message the broker is known to refuse gets a rejecting PUBACK
//! ("not supported") instead of an acknowledgement — a message the gateway
//! acknowledged and then could not deliver would be lost behind the
//! device's back (the bridge would quarantine it as a dead letter).
//!
//! The bridge sends limits only when every message goes up under its own
//! topic (no bridge rules): with rules, whether and as what a message goes
//! up is the bridge's decision, and its dead-letter record covers it.

use std::time::Instant;

use crate::gateway::Gateway;

/// The broker's limits that decide, before a device is answered, whether
/// it will refuse a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Largest PUBLISH packet the bridge may send, in bytes (the broker's
    /// Maximum Packet Size, or the bridge's own bound).
    pub max_packet_size: usize,
    /// Bytes a PUBLISH adds besides its topic and payload, as the bridge
    /// encodes it (topic length, packet id, properties), without the fixed
    /// header.
    pub packet_overhead: usize,
    /// Maximum QoS (0..=2).
    pub max_qos: u8,
    /// Retained messages are taken.
    pub retain_available: bool,
}

/// The fixed header's most bytes (type byte and a four-byte length).
const FIXED_HEADER_MAX: usize = 5;

impl UpstreamLimits {
    /// Why the broker would refuse a message on `topic` with a payload of
    /// `payload_len` bytes at `qos` (`retain`), if it would.
    pub fn refusal(
        &self,
        topic: &str,
        payload_len: usize,
        qos: u8,
        retain: bool,
    ) -> Option<&'static str> {
        let size = FIXED_HEADER_MAX
            .saturating_add(self.packet_overhead)
            .saturating_add(topic.len())
            .saturating_add(payload_len);
        if size > self.max_packet_size {
            Some("larger than the upstream broker's maximum packet size")
        } else if qos > self.max_qos {
            Some("QoS above the upstream broker's maximum")
        } else if retain && !self.retain_available {
            Some("retain is not available on the upstream broker")
        } else {
            None
        }
    }
}

impl Gateway {
    /// The bridge's broker announced its limits (`None`: unknown, or the
    /// bridge decides alone; everything is taken then).
    pub fn handle_upstream_limits(&mut self, now: Instant, limits: Option<UpstreamLimits>) {
        let _ = now;
        self.upstream_limits = limits;
    }

    /// Why the upstream broker would refuse this device message, when the
    /// gateway bridges and knows the broker's limits.
    pub(crate) fn upstream_refusal(
        &self,
        topic: &str,
        payload_len: usize,
        qos: u8,
        retain: bool,
    ) -> Option<&'static str> {
        if !self.cfg.upstream {
            return None;
        }
        self.upstream_limits?
            .refusal(topic, payload_len, qos, retain)
    }
}
