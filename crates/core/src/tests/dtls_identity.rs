//! Identity binding (`core::identity`): a device authenticated at the
//! transport (DTLS) connects only as the client ids its identity may use,
//! and a session bound to an identity is taken over or woken only by a peer
//! proving the same identity — the hijack of docs/security.md, closed.

use std::sync::Arc;

use super::*;
use crate::identity::IdentityBinding;

fn connect_packet(id: &str, clean_session: bool) -> Packet {
    Packet::Connect {
        will: false,
        clean_session,
        protocol_id: 1,
        duration: 60,
        client_id: id.to_owned(),
    }
}

fn dtls_peer(h: &mut Harness, port: u16, identity: &str) -> Peer {
    let p = Peer::udp_on(1, SocketAddr::from(([127, 0, 0, 1], port)));
    h.gw.handle_peer_authenticated(p.link.clone(), Arc::from(identity));
    p
}

fn mismatches(h: &Harness) -> u64 {
    h.gw.stats().drops(DropReason::IdentityMismatch)
}

const REFUSED: Packet = Packet::ConnAck {
    return_code: ReturnCode::NotSupported,
};

#[test]
fn a_client_id_other_than_the_identity_gets_connack_0x03_and_is_counted() {
    let mut h = Harness::new();
    let d = dtls_peer(&mut h, 10, "dev1");
    let out = h.send(&d, connect_packet("dev2", true));
    assert_eq!(packets_to(&out, &d), vec![REFUSED]);
    assert_eq!(h.gw.session_count(), 0);
    assert_eq!(mismatches(&h), 1);
    h.connect(&d, "dev1", true);
    assert_eq!(h.gw.client_state("dev1"), Some(&ClientState::Active));
}

#[test]
fn a_pattern_widens_the_client_ids_an_identity_may_use() {
    let mut h = Harness::with(EngineConfig {
        identity_binding: IdentityBinding::new("%i/*"),
        ..EngineConfig::default()
    });
    let d = dtls_peer(&mut h, 10, "dev1");
    h.connect(&d, "dev1/temp", true);
    let out = h.send(&d, connect_packet("dev2/temp", true));
    assert_eq!(packets_to(&out, &d), vec![REFUSED]);
    assert_eq!(mismatches(&h), 1);
}

#[test]
fn plain_udp_cannot_take_over_a_session_bound_to_an_identity() {
    let mut h = Harness::new();
    let d = dtls_peer(&mut h, 10, "dev1");
    h.connect(&d, "dev1", false);
    let attacker = peer(99);
    for clean in [false, true] {
        let out = h.send(&attacker, connect_packet("dev1", clean));
        assert!(out.is_empty(), "a takeover is ignored, got {out:?}");
    }
    assert_eq!(mismatches(&h), 2);
    // The device still owns its session and its address: it is not told to
    // disconnect, and its PINGREQ is answered.
    let out = h.send(&d, Packet::PingReq { client_id: None });
    assert_eq!(packets_to(&out, &d), vec![Packet::PingResp]);
    assert_eq!(h.gw.client_state("dev1"), Some(&ClientState::Active));
}

/// A subscriber "dev1" over DTLS, asleep with `n` QoS 1 messages buffered.
fn asleep_with_buffer(h: &mut Harness, n: u16) -> Peer {
    let d = dtls_peer(h, 10, "dev1");
    h.connect(&d, "dev1", false);
    h.subscribe(&d, 1, "t", QoS::AtLeastOnce);
    let out = h.send(&d, Packet::Disconnect { duration: Some(60) });
    assert_eq!(
        packets_to(&out, &d),
        vec![Packet::Disconnect { duration: None }]
    );
    let p = peer(1);
    h.connect(&p, "pub", true);
    let id = h.register(&p, 1, "t");
    for i in 0..n {
        h.send(
            &p,
            publish(QoS::AtMostOnce, TopicRef::Id(id), 0, &format!("m{i}")),
        );
    }
    assert_eq!(h.gw.queued_for("dev1"), usize::from(n));
    d
}

#[test]
fn a_wake_up_pingreq_from_another_identity_or_none_is_ignored_and_counted() {
    let mut h = Harness::new();
    asleep_with_buffer(&mut h, 3);
    let wake = Packet::PingReq {
        client_id: Some("dev1".into()),
    };
    let plain = peer(99);
    assert!(h.send(&plain, wake.clone()).is_empty());
    let other = dtls_peer(&mut h, 11, "dev2");
    assert!(h.send(&other, wake).is_empty());
    assert_eq!(mismatches(&h), 2);
    assert_eq!(h.gw.client_state("dev1"), Some(&ClientState::Asleep));
    assert_eq!(h.gw.queued_for("dev1"), 3);
}

#[test]
fn a_sleeper_with_a_new_address_and_dtls_session_resumes_with_its_buffer() {
    let mut h = Harness::new();
    let old = asleep_with_buffer(&mut h, 2);
    // Its DTLS session ends (NAT rebinding); a new one from a new port
    // proves the same identity.
    h.gw.handle_peer_closed(&old.link);
    let moved = dtls_peer(&mut h, 20, "dev1");
    let out = h.send(
        &moved,
        Packet::PingReq {
            client_id: Some("dev1".into()),
        },
    );
    let delivered: Vec<Bytes> = packets_to(&out, &moved)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish { payload, .. } => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![b("m0"), b("m1")], "got {out:?}");
    assert_eq!(
        packets_to(&out, &moved).last(),
        Some(&Packet::PingResp),
        "the hand-over ends with PINGRESP"
    );
    assert!(packets_to(&out, &old).is_empty());
    assert_eq!(h.gw.queued_for("dev1"), 0);
    assert_eq!(mismatches(&h), 0);
}

#[test]
fn a_new_identity_at_a_reused_address_does_not_speak_for_the_old_session() {
    let mut h = Harness::new();
    let d = dtls_peer(&mut h, 10, "dev1");
    h.connect(&d, "dev1", false);
    h.subscribe(&d, 1, "t", QoS::AtMostOnce);
    // The same address now authenticates as dev2 (NAT reuse, or the port
    // passed to another device): dev1's session loses the address.
    let same = dtls_peer(&mut h, 10, "dev2");
    let out = h.send(&same, subscribe(QoS::AtMostOnce, 2, "secret/#"));
    assert!(
        !packets_to(&out, &same)
            .iter()
            .any(|p| matches!(p, Packet::SubAck { .. })),
        "no session speaks for the new identity, got {out:?}"
    );
}

#[test]
fn the_acl_names_a_dtls_device_by_its_identity() {
    use crate::acl::{Acl, Permission};
    let mut acl = Acl::default();
    acl.add_topic(Some("dev1"), Permission::Write, "plant/1/#");
    acl.add_pattern(Permission::Write, "own/%u/#");
    let mut h = Harness::with(EngineConfig {
        acl: Some(Arc::new(acl)),
        identity_binding: IdentityBinding::new("%i/*"),
        ..EngineConfig::default()
    });
    let d = dtls_peer(&mut h, 10, "dev1");
    h.connect(&d, "dev1/a", true);
    let allowed = h.register(&d, 1, "plant/1/temp");
    let own = h.register(&d, 2, "own/dev1/x");
    let denied = h.register(&d, 3, "plant/2/temp");
    let mut acked = Vec::new();
    for (i, id) in [allowed, own, denied].into_iter().enumerate() {
        let msg_id = 10 + u16::try_from(i).unwrap_or(0);
        let out = h.send(&d, publish(QoS::AtLeastOnce, TopicRef::Id(id), msg_id, "v"));
        for p in packets_to(&out, &d) {
            if let Packet::PubAck { return_code, .. } = p {
                acked.push(return_code);
            }
        }
    }
    assert_eq!(acked[..2], [ReturnCode::Accepted, ReturnCode::Accepted]);
    assert_ne!(acked.get(2), Some(&ReturnCode::Accepted), "got {acked:?}");
    assert_eq!(h.gw.stats().drops(DropReason::AclDenied), 1);
}
