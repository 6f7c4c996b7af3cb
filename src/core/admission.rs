//! Admission of MQTT-SN devices. v1.2 carries no credentials, so who may
//! connect is configuration: an allow-list of client ids (glob patterns) and,
//! for UDP, of source networks (CIDR). Checked by the engine at CONNECT (and
//! the source networks for QoS −1 publishes too). Pure: the patterns and
//! networks are parsed here from the configuration's strings.

use std::net::IpAddr;

use super::peer::{LinkAddr, Peer};

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
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
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
            Some(&c) if c == '?' || c == s[si] => {
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
    p[pi..].iter().all(|&c| c == '*')
}

/// The admission rules. The default admits every device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admission {
    /// Client id globs; empty admits any client id.
    pub allow_clients: Vec<String>,
    /// UDP source networks; empty admits any source. Serial peers are not
    /// filtered by this (their addresses are radio addresses).
    pub allow_udp_sources: Vec<Cidr>,
    /// What a refused CONNECT gets.
    pub refusal: Refusal,
}

impl Admission {
    /// May a device with this client id connect from `peer`?
    pub fn admits(&self, client_id: &str, peer: &Peer) -> bool {
        self.admits_source(peer)
            && (self.allow_clients.is_empty()
                || self
                    .allow_clients
                    .iter()
                    .any(|g| glob_matches(g, client_id)))
    }

    /// Is `peer`'s source address allowed (QoS −1 publishes are checked
    /// with this alone: they carry no client id)?
    pub fn admits_source(&self, peer: &Peer) -> bool {
        match &peer.link {
            LinkAddr::Udp { addr, .. } if !self.allow_udp_sources.is_empty() => self
                .allow_udp_sources
                .iter()
                .any(|net| net.contains(addr.ip())),
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
    fn admission_checks_id_and_udp_source_only() {
        let adm = Admission {
            allow_clients: vec!["sensor-*".into()],
            allow_udp_sources: vec![cidr("127.0.0.0/8")],
            refusal: Refusal::ConnAck,
        };
        let local = Peer::udp("127.0.0.1:5000".parse().unwrap_or_else(|_| unreachable!()));
        let remote = Peer::udp("192.0.2.1:5000".parse().unwrap_or_else(|_| unreachable!()));
        assert!(adm.admits("sensor-1", &local));
        assert!(!adm.admits("other", &local));
        assert!(!adm.admits("sensor-1", &remote));
        assert!(adm.admits("sensor-1", &Peer::serial(0)));
        assert!(Admission::default().admits("anything", &remote));
    }
}
