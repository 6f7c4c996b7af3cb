//! Counters the engine keeps about itself: packets in and out, every drop
//! with its reason, and every refusal at a configured limit, so that nothing
//! is lost silently. Exported as metrics by the shell; read by tests to prove
//! that bad input was counted.

use sngate_wire::v1::QoS;

/// Why a packet or message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The datagram did not decode.
    Malformed,
    /// A packet that makes no sense in the sender's state.
    OutOfState,
    /// A packet from a peer with no session that needs one.
    UnknownPeer,
    /// An acknowledgement that matches nothing in flight.
    UnmatchedAck,
    /// A QoS −1 publish while those are disabled, or to an unusable topic.
    QosMinusOneRefused,
    /// A message for a device whose queue is full.
    QueueFull,
    /// A message for a device that could not be delivered after all retries.
    RetriesExhausted,
    /// A message the device refused (REGACK or PUBACK with a rejecting code,
    /// "invalid topic id" a second time), or one with no topic id to give.
    RefusedByDevice,
    /// A message too large for the device's link.
    TooLarge,
    /// A message for a device that disconnected with a clean session.
    SessionGone,
    /// The upstream copy of a QoS 0 message while the bridge had no room.
    UpstreamFull,
    /// New work (CONNECT, PUBLISH, SUBSCRIBE, …) that arrived while the
    /// gateway was shutting down: only acknowledgements are taken then.
    ShuttingDown,
    /// A CONNECT (or QoS −1 publish) from a device the admission rules do
    /// not allow (client id or UDP source network).
    NotAdmitted,
    /// A publish, subscription, will or delivery the ACL refused.
    AclDenied,
    /// A datagram over its bucket's rate: its session's
    /// (`per_session_packets_per_sec`), or for what creates state or comes
    /// from no session its source address's (`per_source_packets_per_sec`).
    RateLimited,
    /// A device's QoS 1/2 message the upstream broker refused (per-device
    /// mode), or is known to refuse by the limits it announced (the device
    /// got a rejecting PUBACK either way).
    UpstreamRefused,
    /// Per-device mode: a message on a device's upstream session that
    /// matches none of its subscriptions.
    NoSubscription,
    /// A publish or will to `$SYS/…` from a device or a local client: the
    /// broker's own topics.
    SysReserved,
    /// From a device authenticated at the transport (DTLS): a CONNECT with a
    /// client id its identity may not use (CONNACK 0x03); or a takeover or
    /// wake-up PINGREQ of a session bound to another identity, from a peer
    /// with another identity or none (ignored).
    IdentityMismatch,
}

impl DropReason {
    /// Every reason, for exporting all counters (zeros included).
    pub const ALL: [DropReason; 19] = [
        DropReason::Malformed,
        DropReason::OutOfState,
        DropReason::UnknownPeer,
        DropReason::UnmatchedAck,
        DropReason::QosMinusOneRefused,
        DropReason::QueueFull,
        DropReason::RetriesExhausted,
        DropReason::RefusedByDevice,
        DropReason::TooLarge,
        DropReason::SessionGone,
        DropReason::UpstreamFull,
        DropReason::ShuttingDown,
        DropReason::NotAdmitted,
        DropReason::AclDenied,
        DropReason::RateLimited,
        DropReason::UpstreamRefused,
        DropReason::NoSubscription,
        DropReason::SysReserved,
        DropReason::IdentityMismatch,
    ];

    /// A short snake_case label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::OutOfState => "out_of_state",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::UnmatchedAck => "unmatched_ack",
            DropReason::QosMinusOneRefused => "qos_minus_one_refused",
            DropReason::QueueFull => "queue_full",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::RefusedByDevice => "refused_by_device",
            DropReason::TooLarge => "too_large",
            DropReason::SessionGone => "session_gone",
            DropReason::UpstreamFull => "upstream_full",
            DropReason::ShuttingDown => "shutting_down",
            DropReason::NotAdmitted => "not_admitted",
            DropReason::AclDenied => "acl_denied",
            DropReason::RateLimited => "rate_limited",
            DropReason::UpstreamRefused => "upstream_refused",
            DropReason::NoSubscription => "no_subscription",
            DropReason::SysReserved => "sys_reserved",
            DropReason::IdentityMismatch => "identity_mismatch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A configured limit the engine refused something at, where no
/// [`DropReason`] is the limit's own (those: `queue_full` for the queue
/// limits, `too_large` for `max_packet_bytes`, `rate_limited` for the
/// per-source rate). Each is named by its configuration key. A delivery
/// dropped at `max_topics_per_client` is also counted as
/// `refused_by_device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitHit {
    /// A CONNECT whose client id is longer than `max_client_id_len`
    /// (CONNACK "not supported").
    MaxClientIdLen,
    /// A new device or local client refused because `max_clients` sessions
    /// exist and none could be evicted.
    MaxClients,
    /// A topic id refused because the client holds `max_topics_per_client`
    /// (REGACK or SUBACK "congestion", or a delivery with no id to give).
    MaxTopicsPerClient,
    /// A subscription refused because the client holds
    /// `max_subscriptions_per_client`.
    MaxSubscriptionsPerClient,
    /// A retained message not stored because `max_retained_messages` topics
    /// hold one (the message itself is still delivered).
    MaxRetainedMessages,
    /// A retained message not stored because the retained messages would
    /// hold more than `max_retained_bytes` (the message itself is still
    /// delivered; a topic's older retained message is cleared, not kept
    /// stale).
    MaxRetainedBytes,
    /// A topic id refused because the topic names of every client together
    /// hold `max_topic_bytes_total` (REGACK or SUBACK "congestion", or a
    /// delivery with no id to give).
    MaxTopicBytesTotal,
    /// A subscription refused because the filters of every client together
    /// hold `max_subscription_bytes_total`.
    MaxSubscriptionBytesTotal,
}

impl LimitHit {
    /// Every limit, for exporting all counters (zeros included).
    pub const ALL: [LimitHit; 8] = [
        LimitHit::MaxClientIdLen,
        LimitHit::MaxClients,
        LimitHit::MaxTopicsPerClient,
        LimitHit::MaxSubscriptionsPerClient,
        LimitHit::MaxRetainedMessages,
        LimitHit::MaxRetainedBytes,
        LimitHit::MaxTopicBytesTotal,
        LimitHit::MaxSubscriptionBytesTotal,
    ];

    /// The limit's configuration key, as metrics label it.
    pub fn key(self) -> &'static str {
        match self {
            LimitHit::MaxClientIdLen => "gateway.max_client_id_len",
            LimitHit::MaxClients => "limits.max_clients",
            LimitHit::MaxTopicsPerClient => "limits.max_topics_per_client",
            LimitHit::MaxSubscriptionsPerClient => "limits.max_subscriptions_per_client",
            LimitHit::MaxRetainedMessages => "limits.max_retained_messages",
            LimitHit::MaxRetainedBytes => "limits.max_retained_bytes",
            LimitHit::MaxTopicBytesTotal => "limits.max_topic_bytes_total",
            LimitHit::MaxSubscriptionBytesTotal => "limits.max_subscription_bytes_total",
        }
    }
}

/// The engine's counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Datagrams received (before decoding).
    pub datagrams_in: u64,
    /// Packets handed to the driver for transmission.
    pub packets_out: u64,
    /// PUBLISH messages accepted from devices (all QoS levels).
    pub publishes_in: u64,
    /// PUBLISH messages sent to devices (first transmissions only).
    pub publishes_out: u64,
    /// Retransmissions to devices.
    pub retransmissions: u64,
    /// PUBLISH messages accepted from local MQTT clients (embedded broker).
    pub local_in: u64,
    /// Messages handed to local MQTT clients (embedded broker).
    pub local_out: u64,
    /// Messages handed to the upstream bridge.
    pub upstream_out: u64,
    /// Wills published.
    pub wills_published: u64,
    /// Per-device mode: messages delivered to devices from their own
    /// upstream sessions.
    pub session_messages_in: u64,
    /// Device QoS 1/2 publishes held unacknowledged until the upstream bridge
    /// had room (backpressure).
    pub publishes_parked: u64,
    /// Outbox records never written: the broker acknowledged the message
    /// within the linger (`linger.rs`).
    pub outbox_writes_saved: u64,
    /// Outbox records written after a linger: the broker had not answered
    /// in time, was lost, or the gateway was stopping.
    pub outbox_writes_lingered: u64,
    /// CleanSession = false sessions removed after `session_expiry`.
    pub sessions_expired: u64,
    /// Disconnected or lost sessions removed to make room for a new client
    /// at `max_clients`.
    pub sessions_evicted: u64,
    /// Of `sessions_evicted`, sessions whose client never sent anything
    /// after its CONNECT (evicted first, oldest first).
    pub unproven_evicted: u64,
    /// PUBLISH messages accepted from devices by QoS, indexed by
    /// [`qos_index`] (−1, 0, 1, 2); they add up to `publishes_in`.
    pub publishes_in_by_qos: [u64; 4],
    /// PUBLISH messages sent to devices by QoS (first transmissions), indexed
    /// by [`qos_index`]; they add up to `publishes_out`.
    pub publishes_out_by_qos: [u64; 4],
    drops: [u64; DropReason::ALL.len()],
    limit_hits: [u64; LimitHit::ALL.len()],
}

/// The QoS levels in the order of the `*_by_qos` arrays.
pub const QOS_LEVELS: [QoS; 4] = [
    QoS::MinusOne,
    QoS::AtMostOnce,
    QoS::AtLeastOnce,
    QoS::ExactlyOnce,
];

/// Where `qos` is counted in the `*_by_qos` arrays.
pub fn qos_index(qos: QoS) -> usize {
    match qos {
        QoS::MinusOne => 0,
        QoS::AtMostOnce => 1,
        QoS::AtLeastOnce => 2,
        QoS::ExactlyOnce => 3,
    }
}

/// Adds one to the counter at `index` of a table indexed by an enum's
/// position (always in range: the tables are sized by the enums).
pub(crate) fn count_one<T: Copy + core::ops::AddAssign + From<u8>>(table: &mut [T], index: usize) {
    if let Some(counter) = table.get_mut(index) {
        *counter += T::from(1);
    }
}

impl Stats {
    /// Counts one PUBLISH accepted from a device at `qos` (as it came on the
    /// wire, so QoS −1 is told apart from 0).
    pub fn publish_in(&mut self, qos: QoS) {
        count_one(&mut self.publishes_in_by_qos, qos_index(qos));
    }

    /// Counts one first transmission of a PUBLISH to a device at `qos`.
    pub fn publish_out(&mut self, qos: QoS) {
        count_one(&mut self.publishes_out_by_qos, qos_index(qos));
    }

    /// Counts one drop.
    pub fn drop(&mut self, reason: DropReason) {
        count_one(&mut self.drops, reason.index());
    }

    /// How many drops for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// All drops, whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Counts one refusal at `limit`.
    pub fn limit_hit(&mut self, limit: LimitHit) {
        count_one(&mut self.limit_hits, limit as usize);
    }

    /// How many refusals at `limit`.
    pub fn limit_hits(&self, limit: LimitHit) -> u64 {
        self.limit_hits.get(limit as usize).copied().unwrap_or(0)
    }
}
