//! SUBSCRIBE and UNSUBSCRIBE (fact sheet §7.5, traps T-2/T-15/T-16): filters by
//! name (with `+`/`#`), pre-defined id or short name; the SUBACK's topic id and
//! return code; retained messages on subscribe; and keeping the upstream
//! bridge's subscriptions equal to what local clients want.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use crate::engine_config::EngineConfig;
use crate::gateway::{Gateway, Subscriber};
use crate::output::UpstreamCommand;
use crate::session::SessionId;
use crate::stats::LimitHit;
use sngate_wire::v1::{Packet, QoS, ReturnCode, SubscribeTopic};

/// The limit a subscription to `filter` would pass, if any, for a client
/// that holds `count` subscriptions (`held`: this filter among them, which
/// a repeated SUBSCRIBE only updates) while every client's filters hold
/// `filter_bytes`.
pub(crate) fn subscription_limit(
    cfg: &EngineConfig,
    filter_bytes: usize,
    held: bool,
    count: usize,
    filter: &str,
) -> Option<LimitHit> {
    if held {
        None
    } else if count >= cfg.max_subscriptions_per_client {
        Some(LimitHit::MaxSubscriptionsPerClient)
    } else if filter_bytes.saturating_add(filter.len()) > cfg.max_subscription_bytes_total {
        Some(LimitHit::MaxSubscriptionBytesTotal)
    } else {
        None
    }
}

impl Gateway {
    pub(crate) fn on_subscribe(
        &mut self,
        now: Instant,
        sid: SessionId,
        qos: QoS,
        msg_id: u16,
        topic: SubscribeTopic,
    ) {
        let granted = qos.as_mqtt();
        let refuse = |return_code| Packet::SubAck {
            qos: QoS::AtMostOnce,
            topic_id: 0,
            msg_id,
            return_code,
        };
        let filter = match self.subscription_filter(&topic) {
            Ok(filter) => filter,
            Err(code) => {
                debug!(client = %self.client_label(sid), ?topic, "refusing SUBSCRIBE");
                return self.send_to(sid, refuse(code));
            }
        };
        if !self.acl_check_subscribe(Subscriber::Device(sid), &filter) {
            return self.send_to(sid, refuse(ReturnCode::NotSupported));
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        // The limits first, so a refused SUBSCRIBE takes no topic id.
        if let Some(limit) = subscription_limit(
            &self.cfg,
            self.subscriptions.filter_bytes(),
            s.subscriptions.contains_key(filter.as_ref()),
            s.subscriptions.len(),
            &filter,
        ) {
            debug!(client = %s.client_id, limit = limit.key(), "subscription limit reached");
            self.stats.limit_hit(limit);
            return self.send_to(sid, refuse(ReturnCode::Congestion));
        }
        let topic_id = match &topic {
            SubscribeTopic::Predefined(id) => *id,
            // Short names and wildcard filters carry id 0 (traps T-2, T-15).
            SubscribeTopic::Short(_) => 0,
            SubscribeTopic::Name(name) if crate::topic::has_wildcards(name) => 0,
            SubscribeTopic::Name(name) => match s.topics.assign_within(
                name,
                true,
                Some(&self.topic_bytes),
                self.cfg.max_topic_bytes_total,
            ) {
                Ok(id) => id,
                Err(full) => {
                    debug!(client = %s.client_id, error = %full, "refusing SUBSCRIBE");
                    self.stats.limit_hit(full.limit());
                    return self.send_to(sid, refuse(ReturnCode::Congestion));
                }
            },
        };
        self.suback_wait.asked = false;
        info!(client = %self.client_label(sid), %filter, qos = granted, "subscribed");
        self.add_subscription(sid, &filter, granted);
        if let (SubscribeTopic::Predefined(id), Some(s)) = (&topic, self.sessions.get_mut(&sid)) {
            s.predefined_subscriptions.insert(*id);
        }
        // SUBACK means subscribed: a new upstream subscription is answered
        // when the broker has answered (suback_wait.rs).
        if self.suback_must_wait(&filter) {
            return self.hold_suback(now, sid, msg_id, filter, granted, topic_id);
        }
        self.send_to(
            sid,
            Packet::SubAck {
                qos: QoS::from_bits(granted),
                topic_id,
                msg_id,
                return_code: ReturnCode::Accepted,
            },
        );
        // Retained messages follow the SUBACK.
        self.deliver_retained_for(now, sid, &filter, granted);
    }

    pub(crate) fn on_unsubscribe(&mut self, sid: SessionId, msg_id: u16, topic: SubscribeTopic) {
        if let Ok(filter) = self.subscription_filter(&topic) {
            // By name or by id, the pre-defined topic is no longer subscribed.
            let predefined = self.predefined_by_name.get(&filter).copied();
            let removed = self.sessions.get_mut(&sid).is_some_and(|s| {
                if let Some(id) = predefined {
                    s.predefined_subscriptions.remove(&id);
                }
                s.subscriptions.remove(filter.as_ref()).is_some()
            });
            if removed {
                self.remove_subscription(sid, &filter);
            }
        }
        // UNSUBACK whether or not the subscription existed (v1.2 has no code).
        self.send_to(sid, Packet::UnsubAck { msg_id });
    }

    /// The MQTT filter a SUBSCRIBE/UNSUBSCRIBE names, or the return code refusing it.
    pub(crate) fn subscription_filter(
        &self,
        topic: &SubscribeTopic,
    ) -> Result<Arc<str>, ReturnCode> {
        match topic {
            SubscribeTopic::Name(name) => crate::topic::validate_filter(name)
                .map(|()| Arc::from(name.as_str()))
                .map_err(|_| ReturnCode::NotSupported),
            SubscribeTopic::Predefined(id) => self.predefined_name(*id),
            SubscribeTopic::Short(bytes) => crate::gateway::short_name(bytes),
        }
    }

    fn add_subscription(&mut self, sid: SessionId, filter: &str, qos: u8) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let is_new = s.subscriptions.insert(filter.to_owned(), qos).is_none();
        if self.per_device() {
            self.subscribe_on_device_session(sid, filter, qos);
        } else {
            self.subscribe_filter(Subscriber::Device(sid), filter, qos, is_new);
        }
    }

    /// Puts a subscription in the trie; a filter no one held before is
    /// subscribed upstream. `is_new`: the subscriber did not hold it yet (a
    /// repeated SUBSCRIBE only changes the QoS).
    pub(crate) fn subscribe_filter(
        &mut self,
        subscriber: Subscriber,
        filter: &str,
        qos: u8,
        is_new: bool,
    ) {
        self.subscriptions.subscribe(filter, subscriber, qos);
        if is_new {
            let refs = self.filter_refs.entry(filter.to_owned()).or_insert(0);
            *refs += 1;
            // `$SYS` is the gateway's own (its broker's status), never the
            // upstream broker's: not bridged.
            if *refs == 1 && self.cfg.upstream && !crate::policy::is_sys(filter) {
                self.upstream(UpstreamCommand::Subscribe {
                    filter: filter.to_owned(),
                    qos: 2,
                });
                self.suback_wait.asked = true;
            }
        }
    }

    /// Removes one session's subscription from the trie and the upstream
    /// reference counts (the session's own map is updated by the caller).
    pub(crate) fn remove_subscription(&mut self, sid: SessionId, filter: &str) {
        if self.per_device() {
            self.unsubscribe_on_device_session(sid, filter);
        } else {
            self.unsubscribe_filter(Subscriber::Device(sid), filter);
        }
    }

    /// Takes a subscription out of the trie; the last holder of a filter
    /// unsubscribes it upstream.
    pub(crate) fn unsubscribe_filter(&mut self, subscriber: Subscriber, filter: &str) {
        if !self.subscriptions.unsubscribe(filter, subscriber) {
            return;
        }
        let last = match self.filter_refs.get_mut(filter) {
            Some(refs) if *refs > 1 => {
                *refs -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if last {
            self.filter_refs.remove(filter);
            if self.cfg.upstream && !crate::policy::is_sys(filter) {
                self.upstream(UpstreamCommand::Unsubscribe {
                    filter: filter.to_owned(),
                });
            }
        }
    }
}
