//! rumqttc's events, of either protocol version, reduced to the
//! [`LinkEvent`]s the bridge's machine takes (which packet, which id, which
//! reason code counts as a refusal, the origin tag of an MQTT 5 message).

use rumqttc::v5::mqttbytes::v5 as m5;

use super::{LinkEvent, ORIGIN_PROPERTY};
use crate::bridge::machine::BrokerLimits;

pub(super) fn from_v4(ev: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Outgoing, Packet};
    match ev {
        Event::Incoming(Packet::ConnAck(c)) => LinkEvent::ConnAck {
            session_present: c.session_present,
            limits: BrokerLimits::default(),
        },
        Event::Incoming(Packet::Publish(p)) => LinkEvent::Publish {
            pkid: p.pkid,
            topic: Some(p.topic),
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            subscription_ids: Vec::new(),
            origin: None,
        },
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            code: 0,
        },
        Event::Incoming(Packet::PubRec(a)) => LinkEvent::PubRec {
            pkid: a.pkid,
            code: 0,
        },
        Event::Incoming(Packet::PubComp(a)) => LinkEvent::PubComp { pkid: a.pkid },
        Event::Incoming(Packet::SubAck(s)) => LinkEvent::SubAck {
            refused: s
                .return_codes
                .iter()
                .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                .count(),
        },
        Event::Outgoing(Outgoing::Publish(p)) => LinkEvent::SentPublish(p),
        Event::Outgoing(Outgoing::AwaitAck(p)) => LinkEvent::HeldPublish(p),
        Event::Outgoing(Outgoing::PubRel(p)) => LinkEvent::SentPubRel(p),
        Event::Outgoing(Outgoing::Subscribe(_) | Outgoing::Unsubscribe(_)) => {
            LinkEvent::SentControl
        }
        Event::Outgoing(Outgoing::Disconnect) => LinkEvent::SentDisconnect,
        _ => LinkEvent::Other,
    }
}

pub(super) fn from_v5(ev: rumqttc::v5::Event) -> LinkEvent {
    use rumqttc::Outgoing;
    use rumqttc::v5::{Event, Incoming};
    match ev {
        Event::Incoming(Incoming::ConnAck(c)) => LinkEvent::ConnAck {
            session_present: c.session_present,
            limits: limits_v5(c.properties.as_ref()),
        },
        Event::Incoming(Incoming::Publish(p)) => {
            let (subscription_ids, origin) = match p.properties {
                Some(props) => {
                    let origin = props
                        .user_properties
                        .into_iter()
                        .find(|(k, _)| k == ORIGIN_PROPERTY)
                        .map(|(_, v)| v);
                    (props.subscription_identifiers, origin)
                }
                None => (Vec::new(), None),
            };
            LinkEvent::Publish {
                pkid: p.pkid,
                topic: String::from_utf8(p.topic.to_vec()).ok(),
                payload: p.payload,
                qos: p.qos as u8,
                retain: p.retain,
                subscription_ids,
                origin,
            }
        }
        Event::Incoming(Incoming::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            code: puback_code(a.reason),
        },
        Event::Incoming(Incoming::PubRec(a)) => LinkEvent::PubRec {
            pkid: a.pkid,
            code: pubrec_code(a.reason),
        },
        Event::Incoming(Incoming::PubComp(a)) => LinkEvent::PubComp { pkid: a.pkid },
        Event::Incoming(Incoming::SubAck(s)) => LinkEvent::SubAck {
            refused: s
                .return_codes
                .iter()
                .filter(|c| !matches!(c, m5::SubscribeReasonCode::Success(_)))
                .count(),
        },
        Event::Outgoing(Outgoing::Publish(p)) => LinkEvent::SentPublish(p),
        Event::Outgoing(Outgoing::AwaitAck(p)) => LinkEvent::HeldPublish(p),
        Event::Outgoing(Outgoing::PubRel(p)) => LinkEvent::SentPubRel(p),
        Event::Outgoing(Outgoing::Subscribe(_) | Outgoing::Unsubscribe(_)) => {
            LinkEvent::SentControl
        }
        Event::Outgoing(Outgoing::Disconnect) => LinkEvent::SentDisconnect,
        _ => LinkEvent::Other,
    }
}

/// The limits an MQTT 5 CONNACK announces (absent properties allow).
fn limits_v5(p: Option<&m5::ConnAckProperties>) -> BrokerLimits {
    let mut l = BrokerLimits::default();
    if let Some(p) = p {
        l.max_packet_size = p.max_packet_size.filter(|&n| n > 0);
        l.max_qos = p.max_qos.map_or(2, |q| q.min(2));
        l.retain_available = p.retain_available != Some(0);
        l.wildcards_available = p.wildcard_subscription_available != Some(0);
        l.shared_available = p.shared_subscription_available != Some(0);
        l.receive_max = p.receive_max.filter(|&n| n > 0);
    }
    l
}

/// The reason code of a PUBACK or PUBREC (their reason sets are the same).
macro_rules! reason_code {
    ($name:ident, $ty:ty) => {
        fn $name(r: $ty) -> u8 {
            use $ty as R;
            match r {
                R::Success => 0x00,
                R::NoMatchingSubscribers => 0x10,
                R::UnspecifiedError => 0x80,
                R::ImplementationSpecificError => 0x83,
                R::NotAuthorized => 0x87,
                R::TopicNameInvalid => 0x90,
                R::PacketIdentifierInUse => 0x91,
                R::QuotaExceeded => 0x97,
                R::PayloadFormatInvalid => 0x99,
            }
        }
    };
}
reason_code!(puback_code, m5::PubAckReason);
reason_code!(pubrec_code, m5::PubRecReason);
