//! Who each device's upstream session is (per-device mode): its client id
//! (the configured prefix + the device's id), its credentials and client
//! certificate from `[upstream.per_device]`, and its CleanSession flag,
//! keep-alive and will from the device itself ([`SessionParams`]).
//!
//! Credentials: the first `[[upstream.per_device.credentials]]` entry whose
//! `client_id` glob matches the device's id wins. An entry with a `username`
//! gives the user name and password (no password: empty); an entry without
//! one leaves the defaults (`[upstream.per_device] username`/`password`). An
//! entry's `cert_file`/`key_file` replace `[upstream.tls]`'s client
//! certificate for that device; otherwise the `[upstream.tls]` one (if any)
//! is presented. `%c` in a user name stands for the device's client id.
//! Every TLS configuration is built once, at start-up, so a bad file stops
//! the gateway instead of one device.

use std::sync::Arc;

use super::link::{Identity, Will, Window};
use super::rules::Rules;
use super::{BridgeError, tls};
use crate::config::UpstreamConfig;
use crate::core::SessionParams;
use crate::core::admission::glob_matches;

/// One credentials entry, ready to use.
struct Entry {
    glob: String,
    username: Option<String>,
    password: Option<String>,
    /// This entry's own TLS configuration (its client certificate).
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Builds device sessions' identities. See the module documentation.
pub(super) struct DeviceIdentities {
    prefix: String,
    username: Option<String>,
    password: Option<String>,
    entries: Vec<Entry>,
    /// `[upstream.tls]`, for devices without a certificate of their own.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The tag every session puts on its publishes and will (MQTT 5).
    origin: Option<Arc<str>>,
}

impl DeviceIdentities {
    /// Reads `[upstream.per_device]`; `tls` is the `[upstream.tls]`
    /// configuration already built.
    pub(super) fn new(
        cfg: &UpstreamConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        origin: Option<Arc<str>>,
    ) -> Result<Self, BridgeError> {
        let pd = &cfg.per_device;
        let mut entries = Vec::with_capacity(pd.credentials.len());
        for (i, c) in pd.credentials.iter().enumerate() {
            let own_tls = match (&c.cert_file, &c.key_file, &cfg.tls) {
                (None, None, _) => None,
                (Some(cert), Some(key), Some(t)) => {
                    Some(tls::client_config(&t.ca_file, Some((cert, key)))?)
                }
                _ => {
                    return Err(BridgeError::Option {
                        key: "per_device.credentials",
                        reason: format!(
                            "entry {i}: cert_file and key_file go together, and need [upstream.tls]"
                        ),
                    });
                }
            };
            entries.push(Entry {
                glob: c.client_id.clone(),
                username: c.username.clone(),
                password: c.password.clone(),
                tls: own_tls,
            });
        }
        Ok(Self {
            prefix: pd.client_id_prefix.clone(),
            username: pd.username.clone(),
            password: pd.password.clone(),
            entries,
            tls,
            origin,
        })
    }

    /// The upstream client id of device `client_id`.
    pub(super) fn upstream_id(&self, client_id: &str) -> String {
        format!("{}{client_id}", self.prefix)
    }

    /// The full identity of a device's session; the will goes through the
    /// bridge rules (a will no `out` rule lets out is not given to the broker).
    pub(super) fn identity(&self, params: &SessionParams, rules: &Rules) -> Identity {
        let device = &*params.client_id;
        let entry = self.entries.iter().find(|e| glob_matches(&e.glob, device));
        let (user, pass) = match entry {
            Some(Entry {
                username: Some(u),
                password,
                ..
            }) => (Some(u.clone()), password.clone()),
            _ => (self.username.clone(), self.password.clone()),
        };
        let credentials = user.map(|u| (u.replace("%c", device), pass.unwrap_or_default()));
        let tls = entry
            .and_then(|e| e.tls.clone())
            .or_else(|| self.tls.clone());
        let will = params.will.as_ref().and_then(|w| {
            let (topic, qos) = rules.outbound(&w.topic, w.qos.min(2))?;
            Some(Will {
                topic,
                payload: w.payload.clone(),
                qos,
                retain: w.retain,
            })
        });
        Identity {
            client_id: self.upstream_id(device),
            clean_session: params.clean_session,
            keep_alive_secs: params.keep_alive_secs,
            will,
            credentials,
            tls,
            origin: self.origin.clone(),
            window: Window::DEVICE,
            manual_acks: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BridgeRule, DeviceCredentials, Direction};
    use crate::core::session::Will;

    fn params(id: &str) -> SessionParams {
        SessionParams {
            client_id: Arc::from(id),
            clean_session: false,
            keep_alive_secs: 60,
            will: Some(Will {
                topic: "dev/status".into(),
                payload: bytes::Bytes::from_static(b"gone"),
                qos: 1,
                retain: true,
            }),
        }
    }

    fn cfg() -> UpstreamConfig {
        let mut c = UpstreamConfig {
            host: "h".into(),
            ..UpstreamConfig::default()
        };
        c.per_device.client_id_prefix = "sn-".into();
        c.per_device.username = Some("dev-%c".into());
        c.per_device.password = Some("shared".into());
        c.per_device.credentials = vec![
            DeviceCredentials {
                client_id: "vip-*".into(),
                username: Some("vip".into()),
                password: Some("secret".into()),
                ..DeviceCredentials::default()
            },
            DeviceCredentials {
                client_id: "anon-?".into(),
                ..DeviceCredentials::default()
            },
        ];
        c
    }

    #[test]
    fn prefix_credentials_and_defaults() {
        let ids = DeviceIdentities::new(&cfg(), None, Some(Arc::from("gw"))).expect("ids");
        let rules = Rules::new(&[]);
        let a = ids.identity(&params("vip-1"), &rules);
        assert_eq!(a.client_id, "sn-vip-1");
        assert_eq!(a.credentials, Some(("vip".into(), "secret".into())));
        assert_eq!(a.keep_alive_secs, 60);
        assert!(!a.clean_session);
        assert_eq!(
            a.will.as_ref().map(|w| w.topic.as_str()),
            Some("dev/status")
        );
        assert_eq!(a.origin.as_deref(), Some("gw"));
        let b = ids.identity(&params("s7"), &rules);
        assert_eq!(b.credentials, Some(("dev-s7".into(), "shared".into())));
        // An entry without a user name leaves the defaults.
        let c = ids.identity(&params("anon-1"), &rules);
        assert_eq!(c.credentials, Some(("dev-anon-1".into(), "shared".into())));
    }

    #[test]
    fn the_will_follows_the_rules() {
        let ids = DeviceIdentities::new(&cfg(), None, None).expect("ids");
        let out = Rules::new(&[BridgeRule {
            direction: Direction::Out,
            topic: "status".into(),
            qos: 0,
            local_prefix: "dev/".into(),
            remote_prefix: "site/".into(),
        }]);
        let w = ids.identity(&params("x"), &out).will.expect("a will");
        assert_eq!((w.topic.as_str(), w.qos), ("site/status", 0));
        let none = Rules::new(&[BridgeRule {
            direction: Direction::In,
            ..BridgeRule::default()
        }]);
        assert!(ids.identity(&params("x"), &none).will.is_none());
    }

    #[test]
    fn a_certificate_needs_the_tls_section() {
        let mut c = cfg();
        c.per_device.credentials[0].cert_file = Some("/c.pem".into());
        c.per_device.credentials[0].key_file = Some("/k.pem".into());
        assert!(matches!(
            DeviceIdentities::new(&c, None, None),
            Err(BridgeError::Option { .. })
        ));
    }
}
