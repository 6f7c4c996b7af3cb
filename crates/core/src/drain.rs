//! Shutting down gracefully. Once the driver calls
//! [`Gateway::start_draining`], the engine takes only what completes the
//! exchanges already under way — devices' acknowledgements (PUBACK, PUBREC,
//! PUBCOMP, REGACK), the release of a QoS 2 message they sent (PUBREL), a
//! plain PINGREQ and DISCONNECT — and refuses new work (CONNECT, PUBLISH,
//! REGISTER, SUBSCRIBE, a wake-up, …), counting it as `shutting_down`. A
//! device's QoS 1/2 PUBLISH is then not acknowledged, so the device keeps
//! it. Deliveries in flight carry on, retransmissions included, and
//! [`Gateway::undelivered`] tells the driver what is left, so it can wait
//! for them within its bound and then say what it is leaving behind.

use tracing::debug;

use super::gateway::Gateway;
use super::peer::Peer;
use super::stats::DropReason;
use sngate_wire::v1::Packet;

/// What the engine still holds that has not reached its destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Undelivered {
    /// Exchanges in flight to devices that can receive now, awaiting their
    /// acknowledgement.
    pub in_flight: usize,
    /// Messages queued for devices that can receive now, behind the one in
    /// flight.
    pub queued: usize,
    /// Messages buffered for devices that cannot receive now (asleep,
    /// disconnected, lost), with exchanges in flight to them.
    pub buffered_unreachable: usize,
    /// Devices' QoS 1/2 messages held unacknowledged for upstream room (the
    /// devices keep them and send them again).
    pub parked: usize,
}

impl Undelivered {
    /// What can still reach a device during a drain: in flight or queued
    /// for one that can receive.
    pub fn deliverable(&self) -> usize {
        self.in_flight + self.queued
    }
}

impl Gateway {
    /// Enters the shutdown drain (see the module documentation). There is no
    /// way back: the driver stops the engine at the end of its bound.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// True once [`start_draining`](Self::start_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// What has not reached its destination yet.
    pub fn undelivered(&self) -> Undelivered {
        let mut u = Undelivered {
            parked: self.parked.len(),
            ..Undelivered::default()
        };
        for s in self.sessions.values() {
            let in_flight = usize::from(s.inflight.is_some());
            if s.is_reachable() {
                u.in_flight += in_flight;
                u.queued += s.queue.len();
            } else {
                u.buffered_unreachable += in_flight + s.queue.len();
            }
        }
        u
    }

    pub(super) fn refuse_while_draining(&mut self, peer: &Peer, packet: &Packet) {
        debug!(%peer, msg = %packet.msg_type(), "shutting down: new work refused");
        self.stats.drop(DropReason::ShuttingDown);
    }
}

/// Whether the engine still takes `packet` while draining: only what
/// completes an exchange already under way.
pub(super) fn taken_while_draining(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::PubAck { .. }
            | Packet::PubRec { .. }
            | Packet::PubComp { .. }
            | Packet::PubRel { .. }
            | Packet::RegAck { .. }
            | Packet::PingReq { client_id: None }
            | Packet::Disconnect { .. }
    )
}
