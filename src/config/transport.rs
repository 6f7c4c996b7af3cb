//! The sections for the links devices reach the gateway over: `[udp]`
//! (the listeners) and `[[serial]]` (radio dongles and forwarders on serial
//! ports, with their framing and line settings), with their defaults and
//! rules. `transport/` opens what these describe; a reload can change only a
//! serial link's `allow_radio_addresses` (see `reload.rs`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::Deserialize;

use super::{ConfigError, MIB};

/// `[udp]`: the UDP listeners devices talk to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// Addresses to listen on, IPv4 (`"0.0.0.0:1883"`) or IPv6 (`"[::]:1883"`);
    /// at least one, or none with `[dtls] listen` (DTLS devices only).
    /// Default: `["0.0.0.0:1883"]`.
    pub listen: Vec<SocketAddr>,
    /// Socket receive buffer (SO_RCVBUF), in bytes. Default: 4 MiB.
    pub recv_buffer_bytes: usize,
    /// Socket send buffer (SO_SNDBUF), in bytes. Default: 1 MiB.
    pub send_buffer_bytes: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                1883,
            ))],
            recv_buffer_bytes: 4 * MIB,
            send_buffer_bytes: MIB,
        }
    }
}

impl UdpConfig {
    /// Checks `[udp]`: at least one listener, unless devices have DTLS
    /// listeners (`has_dtls`): then none is allowed, so that no device can
    /// connect without proving an identity.
    pub(super) fn validate(&self, has_dtls: bool) -> Result<(), ConfigError> {
        if self.listen.is_empty() && !has_dtls {
            return Err(ConfigError::invalid(
                "udp.listen",
                "needs at least one address",
            ));
        }
        Ok(())
    }
}

/// `[[serial]]`: one serial port and how MQTT-SN messages are framed on it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SerialConfig {
    /// The device, e.g. `/dev/ttyUSB0` (required). A port that disappears is
    /// reopened with backoff until it is back.
    pub device: String,
    /// How messages are framed: `"xbee"` (Digi XBee API frames; each remote
    /// radio is its own peer), `"slip"` (RFC 1055, for a forwarder; may carry
    /// forwarder encapsulation), `"raw"` (back-to-back MQTT-SN messages
    /// delimited by their Length field). Default: `"xbee"`.
    pub framing: SerialFraming,
    /// Baud rate. Default: 9600 (XBee modules' factory setting).
    pub baud: u32,
    /// Data bits, 5..=8. Default: 8.
    pub data_bits: u8,
    /// Parity: `"none"`, `"odd"` or `"even"`. Default: `"none"`.
    pub parity: SerialParity,
    /// Stop bits, 1 or 2. Default: 1.
    pub stop_bits: u8,
    /// Flow control: `"none"`, `"software"` (XON/XOFF) or `"hardware"`
    /// (RTS/CTS). Default: `"none"`.
    pub flow_control: SerialFlowControl,
    /// XBee API mode 2 (escaped; how modules ship for this use) rather than
    /// mode 1. Default: true.
    pub xbee_escaped: bool,
    /// XBee transmit frame: `"zigbee"` (0x10), `"64"` (0x00, 802.15.4 with
    /// 64-bit addresses) or `"16"` (0x01, 16-bit). Default: `"zigbee"`.
    pub xbee_tx: XbeeTx,
    /// Append and check a CRC-16 on SLIP frames. Default: false.
    pub slip_crc: bool,
    /// First wait before reopening a lost port, in seconds (≥ 1). Default: 1.
    pub reopen_min_secs: u32,
    /// Longest wait between reopening attempts, in seconds. Default: 30.
    pub reopen_max_secs: u32,
    /// The radio addresses devices on this link may connect (and publish at
    /// QoS −1) from, in hex (case-insensitive); empty (the default) admits
    /// every device on the link. On an `xbee` link: a remote radio's 64-bit
    /// address (16 digits, `"0013A20040A1B2C3"`) or 16-bit one (4 digits),
    /// which admits the forwarded nodes behind it too, or `"RADIO/NODE"` for
    /// one forwarded node behind that radio. On a `slip` or `raw` link: a
    /// forwarder's wireless node id (`"01"`); the port itself has no address,
    /// so a device not behind a forwarder is refused once the list is set.
    /// Refused devices are treated as `[security] refused_connect` says and
    /// counted as `not_admitted` (docs/security.md). Applied on SIGHUP to
    /// the running link, while this entry is still that link (same position
    /// and [`SerialConfig::restart_only`] settings).
    pub allow_radio_addresses: Vec<String>,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            device: String::new(),
            framing: SerialFraming::Xbee,
            baud: 9600,
            data_bits: 8,
            parity: SerialParity::None,
            stop_bits: 1,
            flow_control: SerialFlowControl::None,
            xbee_escaped: true,
            xbee_tx: XbeeTx::Zigbee,
            slip_crc: false,
            reopen_min_secs: 1,
            reopen_max_secs: 30,
            allow_radio_addresses: Vec::new(),
        }
    }
}

impl SerialConfig {
    /// The settings a reload cannot apply to a running link (all but
    /// `allow_radio_addresses`, which the engine applies at once).
    pub fn restart_only(&self) -> SerialConfig {
        SerialConfig {
            allow_radio_addresses: Vec::new(),
            ..self.clone()
        }
    }
}

/// How MQTT-SN messages are framed on a serial port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SerialFraming {
    /// Digi XBee API frames.
    #[default]
    Xbee,
    /// RFC 1055 SLIP.
    Slip,
    /// MQTT-SN messages back to back, delimited by their Length field.
    Raw,
}

impl SerialFraming {
    /// Whether devices on the link have radio addresses of their own (XBee
    /// API frames carry the remote radio's); on a SLIP or raw link the port
    /// is the only link address.
    pub fn has_radio_addresses(self) -> bool {
        self == SerialFraming::Xbee
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SerialParity {
    /// No parity bit.
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Serial flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SerialFlowControl {
    /// None.
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// Which XBee transmit frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum XbeeTx {
    /// 0x10 Zigbee Transmit Request.
    #[default]
    #[serde(rename = "zigbee")]
    Zigbee,
    /// 0x00 TX Request, 64-bit address (802.15.4 modules).
    #[serde(rename = "64")]
    Ieee64,
    /// 0x01 TX Request, 16-bit address (802.15.4 modules).
    #[serde(rename = "16")]
    Ieee16,
}

/// Checks the `[[serial]]` entry at index `i`.
pub(super) fn validate_serial(i: usize, p: &SerialConfig) -> Result<(), ConfigError> {
    let invalid =
        |k: &str, reason: &str| Err(ConfigError::invalid(format!("serial[{i}].{k}"), reason));
    if p.device.is_empty() {
        return invalid("device", "must name the serial device, e.g. /dev/ttyUSB0");
    }
    if p.baud == 0 {
        return invalid("baud", "must be at least 1");
    }
    if !(5..=8).contains(&p.data_bits) {
        return invalid("data_bits", "must be 5, 6, 7 or 8");
    }
    if !(1..=2).contains(&p.stop_bits) {
        return invalid("stop_bits", "must be 1 or 2");
    }
    if p.reopen_min_secs == 0 || p.reopen_min_secs > p.reopen_max_secs {
        return invalid(
            "reopen_min_secs",
            "must be at least 1 and at most reopen_max_secs",
        );
    }
    let addressed = p.framing.has_radio_addresses();
    for (j, a) in p.allow_radio_addresses.iter().enumerate() {
        if let Err(e) = crate::core::admission::RadioAddr::parse(a, addressed) {
            return invalid(&format!("allow_radio_addresses[{j}]"), &e.to_string());
        }
    }
    Ok(())
}
