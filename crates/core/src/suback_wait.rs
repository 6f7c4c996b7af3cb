//! SUBACK means subscribed: a device's SUBSCRIBE that needs a new upstream
//! subscription is answered when the bridge says what the broker answered
//! ([`Gateway::handle_upstream_subscribed`]), not before — a message the
//! broker takes right after the device's SUBACK must reach the device.
//! Only while the bridge is connected ([`Gateway::handle_upstream_connected`]);
//! otherwise the SUBACK goes at once (offline operation), and a connection
//! lost answers every held SUBACK at once. The bridge answers at once too
//! when it already holds the filter, so the wait is one broker round trip;
//! it is bounded by [`SUBACK_WAIT`] on the engine's clock (the device is
//! then told granted: the bridge keeps trying). A filter the broker refused is
//! refused to the device (SUBACK "not supported") and its subscription
//! removed. Retained messages follow the SUBACK, as always.
//!
//! Whoever subscribes the same filter while its answer is awaited waits
//! for the same answer. A local MQTT client's SUBSCRIBE (several filters,
//! one SUBACK) waits until every filter that asked the bridge is answered;
//! a refused one is 0x80 in its SUBACK.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::gateway::{Gateway, Subscriber};
use crate::local::{LocalConnId, LocalDelivery};
use crate::output::{LocalAction, Output};
use crate::session::{Delivery, SessionId};
use sngate_wire::v1::{Packet, QoS, ReturnCode};

/// Longest a device's SUBACK waits for the broker's.
pub const SUBACK_WAIT: Duration = Duration::from_secs(5);

/// One device SUBACK held back.
#[derive(Debug, Clone)]
struct Held {
    sid: SessionId,
    msg_id: u16,
    filter: Arc<str>,
    granted: u8,
    topic_id: u16,
    deadline: Instant,
}

/// A local client's SUBACK, as its SUBSCRIBE left it.
#[derive(Debug, Clone)]
pub(crate) struct LocalSuback {
    pub(crate) sid: SessionId,
    pub(crate) conn: LocalConnId,
    pub(crate) pkid: u16,
    /// Per filter, in order.
    pub(crate) granted: Vec<Option<u8>>,
    /// The filters granted, for the retained messages.
    pub(crate) accepted: Vec<(String, u8)>,
    /// Indexes (in `granted`) of the filters awaiting the bridge.
    pub(crate) waiting: Vec<usize>,
}

/// One local client's SUBACK held back.
#[derive(Debug, Clone)]
struct LocalHeld {
    s: LocalSuback,
    deadline: Instant,
}

/// The SUBACKs held back, and whether the subscription being made asked
/// the bridge for a new upstream SUBSCRIBE.
#[derive(Debug, Default)]
pub(crate) struct SubackWait {
    held: Vec<Held>,
    local: Vec<LocalHeld>,
    /// Set when an upstream Subscribe/SessionSubscribe was emitted.
    pub(crate) asked: bool,
    /// The bridge is connected to the broker.
    connected: bool,
}

impl SubackWait {
    fn waiting_on(&self, filter: &str) -> bool {
        self.held.iter().any(|h| &*h.filter == filter)
            || self.local.iter().map(|l| &l.s).any(|l| {
                l.waiting
                    .iter()
                    .any(|&i| l.accepted_filter(i).is_some_and(|f| f == filter))
            })
    }
}

impl LocalSuback {
    /// The filter at index `i` of the SUBSCRIBE, if it was granted.
    fn accepted_filter(&self, i: usize) -> Option<&str> {
        // `accepted` holds the granted filters in order: count the granted
        // ones before `i`.
        let nth = self
            .granted
            .get(..i)?
            .iter()
            .filter(|g| g.is_some())
            .count();
        self.accepted.get(nth).map(|(f, _)| f.as_str())
    }
}

impl Gateway {
    /// Whether the SUBACK for `filter` must wait (the subscription just
    /// made asked the bridge, or someone already waits on it); clears the
    /// flag.
    pub(crate) fn suback_must_wait(&mut self, filter: &str) -> bool {
        let asked = std::mem::take(&mut self.suback_wait.asked);
        if self.cfg.upstream && asked && !self.suback_wait.connected {
            debug!(%filter, "upstream not connected: SUBACK at once (offline operation)");
        }
        self.cfg.upstream
            && self.suback_wait.connected
            && (asked || self.suback_wait.waiting_on(filter))
    }

    /// Whether the bridge is connected to the broker (as last told).
    pub(crate) fn upstream_connected(&self) -> bool {
        self.suback_wait.connected
    }

    /// The bridge connected to the broker, or lost it: while it is not
    /// connected SUBACKs go at once, and those held are answered (granted).
    pub fn handle_upstream_connected(&mut self, now: Instant, connected: bool) {
        self.suback_wait.connected = connected;
        if !connected {
            // The broker is away: the store takes what waited for it.
            self.write_lingering(now, true);
            for h in std::mem::take(&mut self.suback_wait.held) {
                self.answer_held(now, h, true);
            }
            self.release_local(|_| true);
        }
    }

    /// Holds the SUBACK back until the bridge answers or `now` + [`SUBACK_WAIT`].
    /// The message id of `sid`'s SUBSCRIBE whose SUBACK is held, if any.
    pub(crate) fn held_suback_for(&self, sid: SessionId) -> Option<u16> {
        self.suback_wait
            .held
            .iter()
            .find(|h| h.sid == sid)
            .map(|h| h.msg_id)
    }

    pub(crate) fn hold_suback(
        &mut self,
        now: Instant,
        sid: SessionId,
        msg_id: u16,
        filter: Arc<str>,
        granted: u8,
        topic_id: u16,
    ) {
        // A device re-sending its SUBSCRIBE waits once.
        self.suback_wait
            .held
            .retain(|h| !(h.sid == sid && h.msg_id == msg_id));
        self.suback_wait.held.push(Held {
            sid,
            msg_id,
            filter,
            granted,
            topic_id,
            deadline: now + SUBACK_WAIT,
        });
    }

    /// The bridge says what the broker answered to a SUBSCRIBE for local
    /// `filter` (`client_id`: the device's own session in per-device mode):
    /// the SUBACKs waiting on it are sent — granted, or refused with the
    /// subscription removed.
    pub fn handle_upstream_subscribed(
        &mut self,
        now: Instant,
        client_id: Option<&str>,
        filter: &str,
        accepted: bool,
    ) {
        let (answered, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.suback_wait.held)
            .into_iter()
            .partition(|h| {
                &*h.filter == filter
                    && client_id.is_none_or(|c| {
                        self.sessions
                            .get(&h.sid)
                            .is_some_and(|s| &*s.client_id == c)
                    })
            });
        self.suback_wait.held = kept;
        for h in answered {
            self.answer_held(now, h, accepted);
        }
        if client_id.is_none() {
            self.local_answered(filter, accepted);
        }
    }

    /// A local client's SUBACK: now, or held while filters await the
    /// bridge.
    pub(crate) fn local_suback(&mut self, now: Instant, s: LocalSuback) {
        if s.waiting.is_empty() {
            self.send_local_suback(s);
        } else {
            self.suback_wait.local.push(LocalHeld {
                s,
                deadline: now + SUBACK_WAIT,
            });
        }
    }

    /// The bridge answered for `filter`: local SUBACKs waiting on it are
    /// updated, and sent once nothing else is awaited.
    fn local_answered(&mut self, filter: &str, accepted: bool) {
        let mut done = Vec::new();
        let mut refused = Vec::new();
        for (n, held) in self.suback_wait.local.iter_mut().enumerate() {
            let l = &mut held.s;
            let hit: Vec<usize> = l
                .waiting
                .iter()
                .copied()
                .filter(|&i| l.accepted_filter(i) == Some(filter))
                .collect();
            if hit.is_empty() {
                continue;
            }
            l.waiting.retain(|i| !hit.contains(i));
            if !accepted {
                for &i in &hit {
                    if let Some(g) = l.granted.get_mut(i) {
                        *g = None;
                    }
                }
                l.accepted.retain(|(f, _)| f != filter);
                refused.push(l.sid);
            }
            if l.waiting.is_empty() {
                done.push(n);
            }
        }
        for sid in refused {
            self.stats.drop(crate::stats::DropReason::UpstreamRefused);
            let removed = self
                .locals
                .sessions
                .get_mut(&sid)
                .is_some_and(|s| s.subscriptions.remove(filter).is_some());
            if removed {
                self.unsubscribe_filter(Subscriber::Local(sid), filter);
            }
        }
        for n in done.into_iter().rev() {
            if n < self.suback_wait.local.len() {
                let l = self.suback_wait.local.remove(n);
                self.send_local_suback(l.s);
            }
        }
    }

    /// Sends a local SUBACK, then the retained messages of what it granted.
    fn send_local_suback(&mut self, l: LocalSuback) {
        self.push_output(Output::Local {
            conn: l.conn,
            action: LocalAction::SubAck {
                pkid: l.pkid,
                granted: l.granted,
            },
        });
        for (filter, qos) in l.accepted {
            let retained: Vec<LocalDelivery> = self
                .retained
                .matching(&filter)
                .map(|(topic, msg)| LocalDelivery {
                    topic: Arc::from(topic),
                    payload: msg.payload.clone(),
                    qos: msg.qos.min(qos),
                    retain: true,
                    store_id: None,
                })
                .collect();
            for delivery in retained {
                if !self.acl_may_read(Subscriber::Local(l.sid), &delivery.topic) {
                    continue;
                }
                self.deliver_local(l.sid, delivery);
            }
        }
    }

    /// The next instant a held SUBACK times out.
    pub(crate) fn next_suback_deadline(&self) -> Option<Instant> {
        let local = self.suback_wait.local.iter().map(|l| l.deadline);
        self.suback_wait
            .held
            .iter()
            .map(|h| h.deadline)
            .chain(local)
            .min()
    }

    /// Answers the held SUBACKs whose wait is over (granted).
    pub(crate) fn expire_subacks(&mut self, now: Instant) {
        let (due, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.suback_wait.held)
            .into_iter()
            .partition(|h| h.deadline <= now);
        self.suback_wait.held = kept;
        for h in due {
            debug!(client = %self.client_label(h.sid), filter = %h.filter, "no answer from the upstream broker in time; SUBACK granted");
            self.answer_held(now, h, true);
        }
        self.release_local(|l| l.deadline <= now);
    }

    /// Sends the local SUBACKs `which` selects as they stand (what is
    /// still awaited is granted).
    fn release_local(&mut self, which: impl Fn(&LocalHeld) -> bool) {
        let (due, kept): (Vec<LocalHeld>, Vec<LocalHeld>) =
            std::mem::take(&mut self.suback_wait.local)
                .into_iter()
                .partition(|l| which(l));
        self.suback_wait.local = kept;
        for l in due {
            self.send_local_suback(l.s);
        }
    }

    fn answer_held(&mut self, now: Instant, h: Held, accepted: bool) {
        if !self.sessions.contains_key(&h.sid) {
            return;
        }
        if !accepted {
            debug!(client = %self.client_label(h.sid), filter = %h.filter, "the upstream broker refused the filter; SUBACK refused");
            self.stats.drop(crate::stats::DropReason::UpstreamRefused);
            let removed = self
                .sessions
                .get_mut(&h.sid)
                .is_some_and(|s| s.subscriptions.remove(h.filter.as_ref()).is_some());
            if removed {
                self.remove_subscription(h.sid, &h.filter);
            }
            return self.send_to(
                h.sid,
                Packet::SubAck {
                    qos: QoS::AtMostOnce,
                    topic_id: 0,
                    msg_id: h.msg_id,
                    return_code: ReturnCode::NotSupported,
                },
            );
        }
        self.send_to(
            h.sid,
            Packet::SubAck {
                qos: QoS::from_bits(h.granted),
                topic_id: h.topic_id,
                msg_id: h.msg_id,
                return_code: ReturnCode::Accepted,
            },
        );
        self.deliver_retained_for(now, h.sid, &h.filter, h.granted);
    }

    /// Retained messages for a new subscription, after its SUBACK.
    pub(crate) fn deliver_retained_for(
        &mut self,
        now: Instant,
        sid: SessionId,
        filter: &str,
        granted: u8,
    ) {
        // A 2.0 device's Retain Handling may ask for none (devices/v2.rs).
        if self
            .sessions
            .get(&sid)
            .and_then(|s| s.v2.as_ref())
            .is_some_and(|l| l.withholds_retained(filter))
        {
            return;
        }
        let retained: Vec<Delivery> = self
            .retained
            .matching(filter)
            .map(|(topic, msg)| Delivery {
                topic: Arc::from(topic),
                payload: msg.payload.clone(),
                qos: msg.qos.min(granted),
                retain: true,
                reregistered: false,
                sent_as: None,
                store_id: None,
                downlink: None,
            })
            .collect();
        for delivery in retained {
            if !self.acl_may_read(Subscriber::Device(sid), &delivery.topic) {
                continue;
            }
            self.enqueue(now, sid, delivery);
        }
    }
}
