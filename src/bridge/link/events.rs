//! rumqttc's events, of either protocol version, reduced to the
//! [`LinkEvent`]s the bridge's machine takes (which packet, which id, which
//! reason code counts as a refusal, the origin tag of an MQTT 5 message).

use rumqttc::v5::mqttbytes::v5 as m5;

use super::{LinkEvent, ORIGIN_PROPERTY};

pub(super) fn from_v4(ev: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Outgoing, Packet};
    match ev {
        Event::Incoming(Packet::ConnAck(c)) => LinkEvent::ConnAck {
            session_present: c.session_present,
        },
        Event::Incoming(Packet::Publish(p)) => LinkEvent::Publish {
            topic: Some(p.topic),
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            subscription_ids: Vec::new(),
            origin: None,
        },
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            ok: true,
        },
        Event::Incoming(Packet::PubRec(a)) => LinkEvent::PubRec {
            pkid: a.pkid,
            ok: true,
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
            ok: matches!(
                a.reason,
                m5::PubAckReason::Success | m5::PubAckReason::NoMatchingSubscribers
            ),
        },
        Event::Incoming(Incoming::PubRec(a)) => LinkEvent::PubRec {
            pkid: a.pkid,
            ok: matches!(
                a.reason,
                m5::PubRecReason::Success | m5::PubRecReason::NoMatchingSubscribers
            ),
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
