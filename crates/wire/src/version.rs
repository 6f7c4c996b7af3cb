//! Which MQTT-SN version a datagram speaks, for a gateway serving 1.2 and 2.0
//! devices on one port.
//!
//! The same type byte means different packets in the two versions (2.0
//! CONNECT is 1.2's SEARCHGW type 0x01; 2.0 PUBCOMP `04 07 pid` has the
//! bytes of a 1.2 WILLTOPIC; …), and the draft has no detection text beyond
//! "the server looks at the Protocol Version" (§3.1.5). The rule here:
//!
//! 1. **The version belongs to the session.** A peer key (address; address
//!    and addressing information behind a forwarder) gets a version from the
//!    CONNECT that created its session, and every later datagram of that key
//!    is decoded with that version's codec until the session ends. A new
//!    CONNECT ([`connect_version`]) starts a new session, of its own version.
//! 2. **A datagram from a key without a session is 1.2 whenever it is a valid
//!    1.2 packet** ([`classify_first_datagram`]): only what the 1.2 decoder
//!    refuses is tried as 2.0. So no 1.2 datagram is ever read as 2.0 — 1.2
//!    devices behave exactly as before — and the cost falls on the few 2.0
//!    packets whose bytes are also valid 1.2 (listed in docs/protocol-v2.md;
//!    none of them is a CONNECT).
//! 3. **A 2.0 CONNECT is never a valid 1.2 packet**: its type 0x01 is 1.2's
//!    SEARCHGW, which is exactly 3 bytes (5 in the long form), while a 2.0
//!    CONNECT is at least 10. Conversely a 1.2 CONNECT (type 0x04, at least
//!    6 bytes) is never a valid 2.0 PUBACK (4 or 5 bytes). The session's
//!    version is therefore always decided without ambiguity.
//!
//! A 2.0-shaped CONNECT whose version byte is not 2 is reported as such, so
//! the gateway may answer CONNACK 0x84 [MQTT-SN-3.1.5-2].

use crate::{v1, v2};

/// An MQTT-SN protocol version a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT-SN 1.2 (CONNECT type 0x04, protocol id 0x01).
    V1_2,
    /// MQTT-SN 2.0 (CONNECT type 0x01, protocol version 0x02).
    V2_0,
}

impl ProtocolVersion {
    /// "1.2" or "2.0", for `/status`, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V1_2 => "1.2",
            ProtocolVersion::V2_0 => "2.0",
        }
    }
}

/// What a datagram from a key without a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstDatagram {
    /// A valid 1.2 packet: handled by the 1.2 path as it always was.
    V1_2 {
        /// The 1.2 reading.
        packet: v1::Packet,
        /// The 2.0 reading when the same bytes are a valid 2.0 packet too
        /// (never a CONNECT): the gateway may use it where the 1.2 reading
        /// means nothing from a peer without a session (a 1.2 PINGRESP
        /// `02 17` is also a 2.0 SEARCHGW).
        as_v2: Option<v2::Packet>,
    },
    /// Valid only as 2.0.
    V2_0(v2::Packet),
    /// A 2.0-shaped CONNECT (type 0x01, at least 10 bytes) with another
    /// protocol version: no valid 1.2 packet either.
    V2ConnectUnsupportedVersion {
        /// The CONNECT's packet id, for a CONNACK 0x84.
        packet_id: u16,
        /// The version byte it carries.
        version: u8,
    },
    /// Neither version's decoder accepts it.
    Undecodable {
        /// Why it is not 1.2.
        v1: v1::DecodeError,
        /// Why it is not 2.0.
        v2: v2::DecodeError,
    },
}

impl FirstDatagram {
    /// The version this datagram is handled as, if any.
    pub fn version(&self) -> Option<ProtocolVersion> {
        match self {
            FirstDatagram::V1_2 { .. } => Some(ProtocolVersion::V1_2),
            FirstDatagram::V2_0(_) | FirstDatagram::V2ConnectUnsupportedVersion { .. } => {
                Some(ProtocolVersion::V2_0)
            }
            FirstDatagram::Undecodable { .. } => None,
        }
    }
}

/// Classifies a datagram from a peer key that has no session (rule 2 of the
/// module doc): 1.2 if the 1.2 decoder accepts it, else 2.0 if the 2.0
/// decoder does.
pub fn classify_first_datagram(datagram: &[u8]) -> FirstDatagram {
    match v1::decode(datagram) {
        Ok(packet) => FirstDatagram::V1_2 {
            packet,
            as_v2: v2::decode(datagram).ok(),
        },
        Err(v1_error) => match v2::decode(datagram) {
            Ok(packet) => FirstDatagram::V2_0(packet),
            Err(v2::DecodeError::UnsupportedProtocolVersion { packet_id, version }) => {
                FirstDatagram::V2ConnectUnsupportedVersion { packet_id, version }
            }
            Err(v2_error) => FirstDatagram::Undecodable {
                v1: v1_error,
                v2: v2_error,
            },
        },
    }
}

/// The version of a CONNECT, from any key (rule 1: a CONNECT starts a new
/// session, possibly of the other version): `Some` iff the datagram is a
/// valid CONNECT of that version (the type byte picks the one codec that
/// can read it: 0x04 is 1.2's CONNECT, 0x01 is 2.0's).
pub fn connect_version(datagram: &[u8]) -> Option<ProtocolVersion> {
    let length = v1::header::parse_length(datagram).ok().flatten()?;
    if length.total != datagram.len() {
        return None;
    }
    match datagram.get(length.field_len)? {
        0x04 => matches!(v1::decode(datagram), Ok(v1::Packet::Connect { .. }))
            .then_some(ProtocolVersion::V1_2),
        0x01 => matches!(v2::decode(datagram), Ok(v2::Packet::Connect(_)))
            .then_some(ProtocolVersion::V2_0),
        _ => None,
    }
}
