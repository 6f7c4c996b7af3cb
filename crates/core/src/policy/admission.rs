//! Admission of MQTT-SN devices. v1.2 carries no credentials, so who may
//! connect is configuration: an allow-list of client ids (glob patterns) and,
//! per transport, of source addresses: networks (CIDR) for UDP, radio
//! addresses for each serial link. Checked by the engine at CONNECT (and the
//! source addresses for QoS −1 publishes too). Pure: the patterns, networks
//! and radio addresses are parsed here from the configuration's strings.

use std::net::IpAddr;

use crate::peer::{LinkAddr, Peer, SHORT_RADIO_ADDRESS};

/// What happens to a CONNECT that is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refusal {
    /// Answer CONNACK with 0x03 "rejected: not supported".
    #[default]
    ConnAck,
    /// Say nothing (the device cannot tell a refusal from a lost packet).
    Drop,
}

/// A network in CIDR form, `10.0.0.0/8` or `fd00::/8`; a bare address is a
/// single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IP address.
    #[error("`{0}` is not an IP address")]
    Address(String),
    /// The prefix length is not a number within the address's bits.
    #[error("prefix length `{0}` is not 0..=32 (IPv4) or 0..=128 (IPv6)")]
    Prefix(String),
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr_s, prefix_s) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| CidrError::Address(addr_s.to_owned()))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_s {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= bits => n,
                _ => return Err(CidrError::Prefix(p.to_owned())),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Is `ip` inside this network? An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) is
    /// compared as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let host_bits = bits - u32::from(prefix);
    if host_bits >= bits {
        return true; // /0
    }
    (a >> host_bits) == (b >> host_bits)
}

/// Does client id `id` match glob `pattern`? `*` matches any run of
/// characters (none included), `?` exactly one; everything else itself.
/// Linear in practice (the classic backtrack-to-last-star algorithm), so a
/// hostile id cannot make it slow.
pub fn glob_matches(pattern: &str, id: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = id.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || s.get(si) == Some(&c) => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == '*')
}

/// One allowed source on a serial link, from `allow_radio_addresses`.
///
/// On a link with radio addressing (XBee) it names a remote radio by its
/// 64-bit address (16 hex digits) or its 16-bit one (4 hex digits), and
/// admits every device heard from it, forwarded nodes behind it included; or,
/// written `RADIO/NODE`, only the node with that wireless node id behind that
/// radio. On a link without (SLIP, raw: the port is the only link address)
/// it names a forwarder's wireless node id. Hex is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadioAddr {
    /// The remote radio (XBee links only; 16-bit ones tagged with
    /// [`SHORT_RADIO_ADDRESS`], as the codec tags them).
    radio: Option<u64>,
    /// The wireless node id behind a forwarder.
    node: Option<Vec<u8>>,
}

/// Why an `allow_radio_addresses` entry did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadioAddrError {
    /// A radio address that is not 16 or 4 hex digits.
    #[error(
        "`{0}` is not a radio address: 16 hex digits (64-bit, e.g. 0013A20040A1B2C3) \
         or 4 (16-bit), optionally /NODE (a forwarder's node id in hex)"
    )]
    Radio(String),
    /// A node id that is not 1..=255 bytes in hex (an even number of digits).
    #[error("`{0}` is not a wireless node id: 1 to 255 bytes in hex (an even number of digits)")]
    Node(String),
    /// `RADIO/NODE` on a link whose peers have no radio address.
    #[error("`{0}`: on a slip or raw link only forwarder node ids are addresses (no RADIO/ part)")]
    NotAddressed(String),
}

impl RadioAddr {
    /// Parses an entry for a link with radio addressing (`addressed`: XBee)
    /// or without (SLIP, raw).
    pub fn parse(s: &str, addressed: bool) -> Result<RadioAddr, RadioAddrError> {
        let (radio_s, node_s) = match (addressed, s.split_once('/')) {
            (true, Some((r, n))) => (Some(r), Some(n)),
            (true, None) => (Some(s), None),
            (false, Some(_)) => return Err(RadioAddrError::NotAddressed(s.to_owned())),
            (false, None) => (None, Some(s)),
        };
        let radio = radio_s
            .map(|r| parse_radio(r).ok_or_else(|| RadioAddrError::Radio(r.to_owned())))
            .transpose()?;
        let node = node_s
            .map(|n| parse_node(n).ok_or_else(|| RadioAddrError::Node(n.to_owned())))
            .transpose()?;
        Ok(RadioAddr { radio, node })
    }

    /// Does this entry admit a peer with radio address `radio` (none on a
    /// SLIP or raw link) and forwarder node id `node` (none when direct)?
    fn matches(&self, radio: Option<u64>, node: Option<&[u8]>) -> bool {
        self.radio == radio
            && match &self.node {
                Some(n) => node == Some(n.as_slice()),
                // A radio admits the nodes behind it. (An entry with neither
                // part cannot be parsed.)
                None => self.radio.is_some(),
            }
    }
}

/// 16 hex digits: a 64-bit address; 4: a 16-bit one, tagged.
fn parse_radio(s: &str) -> Option<u64> {
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None; // from_str_radix would take a leading `+`
    }
    let n = u64::from_str_radix(s, 16).ok()?;
    match s.len() {
        16 => Some(n),
        4 => Some(SHORT_RADIO_ADDRESS | n),
        _ => None,
    }
}

/// 1..=255 bytes, two hex digits each.
fn parse_node(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() > 2 * 255 {
        return None;
    }
    let digit = |b: u8| char::from(b).to_digit(16);
    s.as_bytes()
        .chunks(2)
        .map(|pair| match *pair {
            [hi, lo] => u8::try_from(digit(hi)? << 4 | digit(lo)?).ok(),
            _ => None,
        })
        .collect()
}

/// The admission rules. The default admits every device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admission {
    /// Client id globs; empty admits any client id.
    pub allow_clients: Vec<String>,
    /// UDP source networks; empty admits any source. Serial peers are not
    /// filtered by this (their addresses are radio addresses).
    pub allow_udp_sources: Vec<Cidr>,
    /// Per serial link, by its index in the configuration: the radio
    /// addresses devices may connect (and publish at QoS −1) from. An empty
    /// list, or a link past the end, admits every peer on that link; a
    /// non-empty one admits only the peers it names — on a SLIP or raw link
    /// that means only forwarded nodes, since the port itself has no address.
    pub allow_radio: Vec<Vec<RadioAddr>>,
    /// What a refused CONNECT gets.
    pub refusal: Refusal,
}

impl Admission {
    /// May a device with this client id connect from `peer`?
    pub fn admits(&self, client_id: &str, peer: &Peer) -> bool {
        self.admits_source(peer) && self.admits_client_id(client_id)
    }

    /// Does the client id match the allow-list (the source checked apart)?
    pub fn admits_client_id(&self, client_id: &str) -> bool {
        self.allow_clients.is_empty()
            || self
                .allow_clients
                .iter()
                .any(|g| glob_matches(g, client_id))
    }

    /// Is `peer`'s source address allowed (QoS −1 publishes are checked
    /// with this alone: they carry no client id)?
    pub fn admits_source(&self, peer: &Peer) -> bool {
        let node = peer.node.as_deref();
        match &peer.link {
            LinkAddr::Udp { addr, .. } => {
                self.allow_udp_sources.is_empty()
                    || self
                        .allow_udp_sources
                        .iter()
                        .any(|net| net.contains(addr.ip()))
            }
            LinkAddr::Radio { port, addr } => self.admits_radio(*port, Some(*addr), node),
            LinkAddr::Serial { port } => self.admits_radio(*port, None, node),
        }
    }

    fn admits_radio(&self, port: u16, radio: Option<u64>, node: Option<&[u8]>) -> bool {
        match self.allow_radio.get(usize::from(port)) {
            Some(list) if !list.is_empty() => list.iter().any(|a| a.matches(radio, node)),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn globs() {
        assert!(glob_matches("sensor-*", "sensor-12"));
        assert!(glob_matches("sensor-*", "sensor-"));
        assert!(!glob_matches("sensor-*", "actuator-1"));
        assert!(glob_matches("node-??", "node-07"));
        assert!(!glob_matches("node-??", "node-7"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exact1"));
        assert!(glob_matches("*é*", "caféx"));
        // Pathological input stays quick (no exponential backtracking).
        let id = "a".repeat(2000);
        assert!(!glob_matches("*a*a*a*a*a*b", &id));
    }

    #[test]
    fn cidr_parsing() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("192.168.1.7".parse::<Cidr>().is_ok());
        assert!("fd00::/8".parse::<Cidr>().is_ok());
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "1.2.3.4/x".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
    }

    #[test]
    fn cidr_contains() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(cidr("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(cidr("::/0").contains(ip("fe80::1")));
        assert!(cidr("fd00::/8").contains(ip("fd12::1")));
        assert!(!cidr("fd00::/8").contains(ip("fe80::1")));
        assert!(!cidr("10.0.0.0/8").contains(ip("fd00::1")));
        // Dual-stack sockets report IPv4 peers as mapped addresses.
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn admission_checks_id_and_udp_source() {
        let adm = Admission {
            allow_clients: vec!["sensor-*".into()],
            allow_udp_sources: vec![cidr("127.0.0.0/8")],
            refusal: Refusal::ConnAck,
            ..Admission::default()
        };
        let local = Peer::udp("127.0.0.1:5000".parse().unwrap_or_else(|_| unreachable!()));
        let remote = Peer::udp("192.0.2.1:5000".parse().unwrap_or_else(|_| unreachable!()));
        assert!(adm.admits("sensor-1", &local));
        assert!(!adm.admits("other", &local));
        assert!(!adm.admits("sensor-1", &remote));
        assert!(adm.admits("sensor-1", &Peer::serial(0)));
        assert!(Admission::default().admits("anything", &remote));
    }

    fn radio(s: &str, addressed: bool) -> RadioAddr {
        RadioAddr::parse(s, addressed).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn on_radio(port: u16, addr: u64) -> Peer {
        Peer {
            link: LinkAddr::Radio { port, addr },
            node: None,
        }
    }

    #[test]
    fn radio_address_parsing() {
        assert_eq!(
            radio("0013A20040a1b2c3", true),
            RadioAddr {
                radio: Some(0x0013_A200_40A1_B2C3),
                node: None
            }
        );
        assert_eq!(
            radio("1a2B", true).radio,
            Some(SHORT_RADIO_ADDRESS | 0x1A2B)
        );
        assert_eq!(
            radio("0013A20040A1B2C3/0aFF", true).node,
            Some(vec![0x0A, 0xFF])
        );
        assert_eq!(
            radio("01", false),
            RadioAddr {
                radio: None,
                node: Some(vec![1])
            }
        );
        for bad in [
            "",
            "123",
            "0013A20040A1B2C",
            "+013A20040A1B2C3",
            "00 3",
            "xyz1",
        ] {
            assert!(
                matches!(RadioAddr::parse(bad, true), Err(RadioAddrError::Radio(_))),
                "{bad:?}"
            );
        }
        for bad in ["", "1", "0g", "+1", &"00".repeat(256)] {
            assert!(
                matches!(RadioAddr::parse(bad, false), Err(RadioAddrError::Node(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            RadioAddr::parse("1A2B/01", false),
            Err(RadioAddrError::NotAddressed(_))
        ));
        assert!(matches!(
            RadioAddr::parse("1A2B/", true),
            Err(RadioAddrError::Node(_))
        ));
        assert!(RadioAddr::parse(&"ab".repeat(255), false).is_ok());
    }

    #[test]
    fn radio_allow_lists_are_per_link() {
        let adm = Admission {
            allow_radio: vec![
                // Port 0: XBee, one radio, and one node behind another radio.
                vec![
                    radio("0013A20040A1B2C3", true),
                    radio("1A2B", true),
                    radio("0013A20000000009/07", true),
                ],
                // Port 1: no list.
                vec![],
                // Port 2: SLIP with a forwarder, node 0x01 only.
                vec![radio("01", false)],
            ],
            ..Admission::default()
        };
        let allowed = on_radio(0, 0x0013_A200_40A1_B2C3);
        assert!(adm.admits("any", &allowed));
        assert!(adm.admits_source(&allowed.forwarded(vec![5].into())));
        assert!(adm.admits_source(&on_radio(0, SHORT_RADIO_ADDRESS | 0x1A2B)));
        assert!(
            !adm.admits_source(&on_radio(0, 0x1A2B)),
            "untagged 0x1A2B is a 64-bit address"
        );
        assert!(!adm.admits("any", &on_radio(0, 0x0013_A200_40A1_B2C4)));
        let fwd = on_radio(0, 0x0013_A200_0000_0009);
        assert!(!adm.admits_source(&fwd));
        assert!(adm.admits_source(&fwd.forwarded(vec![7].into())));
        assert!(!adm.admits_source(&fwd.forwarded(vec![8].into())));
        // The same radio on a link without a list, or past the configured ones.
        assert!(adm.admits_source(&on_radio(1, 0x42)));
        assert!(adm.admits_source(&on_radio(3, 0x42)));
        // SLIP: forwarded node 01 only; the port itself has no address.
        assert!(adm.admits_source(&Peer::serial(2).forwarded(vec![1].into())));
        assert!(!adm.admits_source(&Peer::serial(2).forwarded(vec![2].into())));
        assert!(!adm.admits_source(&Peer::serial(2)));
        // The UDP list is not consulted for serial peers, nor the reverse.
        let udp = Peer::udp("192.0.2.1:5000".parse().unwrap_or_else(|_| unreachable!()));
        assert!(adm.admits_source(&udp));
    }
}
