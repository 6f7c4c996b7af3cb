//! The `[security]` section: which MQTT-SN devices are admitted (client id
//! globs, UDP source networks, and with each `[[serial]]` link's radio
//! allow-list) and the ACL file, turned into the engine's
//! [`Admission`] and [`Acl`]. The decisions themselves are pure and live in
//! `core::admission` and `core::acl`; reading and parsing the ACL file is
//! `crate::security`'s. A reload applies this section at once.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tracing::info;

use super::{ConfigError, SerialConfig};
use crate::core::acl::Acl;
use crate::core::admission::{Admission, Cidr, RadioAddr, Refusal};
use crate::security::{AclFileError, load_acl_file};

/// `[security]`: admission of MQTT-SN devices and authorisation (ACL) for
/// every client. The defaults admit every device and authorise everything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// An ACL file in mosquitto's `acl_file` format (`user`, `topic`,
    /// `pattern`); unset (the default) authorises every publish and
    /// subscription. Read at start and again on SIGHUP. From the command
    /// line: `--acl-file FILE`.
    pub acl_file: Option<PathBuf>,
    /// Client id globs (`*` any run, `?` one character) of the MQTT-SN
    /// devices that may connect; empty (the default) admits any id. From the
    /// command line: `--allow-client PATTERN`, repeatable.
    pub allow_clients: Vec<String>,
    /// UDP source networks (CIDR, `10.0.0.0/8`, or a single address) devices
    /// may connect and publish at QoS −1 from; empty (the default) admits any.
    pub allow_udp_sources: Vec<String>,
    /// What a device that is not admitted gets: `"connack"` (CONNACK 0x03
    /// "rejected: not supported", the default) or `"drop"` (no answer).
    pub refused_connect: RefusedConnect,
}

/// `[security] refused_connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RefusedConnect {
    /// CONNACK with 0x03.
    #[default]
    Connack,
    /// Silence.
    Drop,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            acl_file: None,
            allow_clients: Vec::new(),
            allow_udp_sources: Vec::new(),
            refused_connect: RefusedConnect::Connack,
        }
    }
}

impl SecurityConfig {
    /// Checks the section (CIDR syntax, non-empty globs); called by
    /// `Config::validate`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, s) in self.allow_udp_sources.iter().enumerate() {
            if let Err(e) = s.parse::<Cidr>() {
                return Err(ConfigError::invalid(
                    format!("security.allow_udp_sources[{i}]"),
                    e.to_string(),
                ));
            }
        }
        for (i, g) in self.allow_clients.iter().enumerate() {
            if g.is_empty() {
                return Err(ConfigError::invalid(
                    format!("security.allow_clients[{i}]"),
                    "an empty pattern admits nothing; use \"*\" for any id",
                ));
            }
        }
        if self
            .acl_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "security.acl_file",
                "empty path; leave the key out for no ACL",
            ));
        }
        Ok(())
    }

    /// The engine's admission rules, with each serial link's
    /// `allow_radio_addresses` (`serial`, in configuration order). The
    /// configuration was validated: a CIDR or radio address that does not
    /// parse cannot reach here, and is skipped if it does.
    pub fn admission(&self, serial: &[SerialConfig]) -> Admission {
        Admission {
            allow_clients: self.allow_clients.clone(),
            allow_udp_sources: self
                .allow_udp_sources
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            allow_radio: serial
                .iter()
                .map(|link| {
                    let addressed = link.framing.has_radio_addresses();
                    link.allow_radio_addresses
                        .iter()
                        .filter_map(|a| RadioAddr::parse(a, addressed).ok())
                        .collect()
                })
                .collect(),
            refusal: match self.refused_connect {
                RefusedConnect::Connack => Refusal::ConnAck,
                RefusedConnect::Drop => Refusal::Drop,
            },
        }
    }

    /// The `acl_file`, read and parsed, if one is configured (at start and
    /// on every reload, so an edited file applies on SIGHUP), logged with
    /// its rule count.
    pub fn load_acl(&self) -> Result<Option<Arc<Acl>>, AclFileError> {
        let acl = self
            .acl_file
            .as_deref()
            .map(|p| load_acl_file(p).map(Arc::new))
            .transpose()?;
        if let (Some(acl), Some(path)) = (&acl, &self.acl_file) {
            info!(file = %path.display(), rules = acl.len(), "ACL loaded");
        }
        Ok(acl)
    }
}
