//! What a SIGHUP reload may change in a running gateway, decided without
//! touching it. The serial links and the buffers sized at start keep their
//! start-up settings until a restart; the engine, which a reload
//! reconfigures at once, must go on describing those running links, not the
//! ones the new file lists. This module keeps the start-up settings
//! ([`Started`]), matches a new configuration's `[[serial]]` entries against
//! the running links ([`serial_lists`]), so a radio allow-list reaches only
//! the link it was written for, and sorts every change into applied at once
//! or needing a restart ([`ReloadPlan`]). The driver carries the plan out
//! (`driver::reload`): it sets the log level, reads the ACL file and hands
//! the engine its new settings.

use super::{Config, GatewayConfig, LimitsConfig, SerialConfig, StoreConfig};
use crate::core::EngineConfig;

/// The settings the running gateway was started with that a reload cannot
/// change, with the radio allow-lists in force (which a reload can).
#[derive(Debug, Clone)]
pub struct Started {
    /// Each running serial link, by its port index: its start-up settings,
    /// with the `allow_radio_addresses` in force now.
    pub serial: Vec<SerialConfig>,
    /// `gateway.max_packet_bytes` as started: the serial framers' bound and
    /// the bridge's room are sized by it, so the engine keeps it too.
    pub max_packet_bytes: usize,
}

impl Started {
    /// The start-up configuration's.
    pub fn new(config: &Config) -> Self {
        Started {
            serial: config.serial.clone(),
            max_packet_bytes: config.gateway.max_packet_bytes,
        }
    }
}

/// A new configuration's `[[serial]]` entries matched against the running
/// links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialReload {
    /// Each running link, by port index, with the allow-list to apply: the
    /// new entry's where the entry at that index is the same link (same
    /// restart-only settings), else the list in force.
    pub links: Vec<SerialConfig>,
    /// Running links (port indices) whose entry in the new configuration
    /// is another link, or missing: their allow-list was kept.
    pub kept: Vec<usize>,
    /// Whether any link was added, removed or changed (a restart applies it).
    pub needs_restart: bool,
    /// Whether an allow-list in force changes.
    pub lists_changed: bool,
}

/// Matches `new` against the `running` links (see [`SerialReload`]). The
/// engine indexes allow-lists by running port, so a list taken by position
/// from a file whose links were added, removed or reordered would guard
/// another link (an empty one there admits everyone).
pub fn serial_lists(running: &[SerialConfig], new: &[SerialConfig]) -> SerialReload {
    let mut kept = Vec::new();
    let links: Vec<SerialConfig> = running
        .iter()
        .enumerate()
        .map(|(i, link)| match new.get(i) {
            Some(entry) if entry.restart_only() == link.restart_only() => SerialConfig {
                allow_radio_addresses: entry.allow_radio_addresses.clone(),
                ..link.clone()
            },
            _ => {
                kept.push(i);
                link.clone()
            }
        })
        .collect();
    SerialReload {
        needs_restart: new
            .iter()
            .map(SerialConfig::restart_only)
            .ne(running.iter().map(SerialConfig::restart_only)),
        lists_changed: links
            .iter()
            .zip(running)
            .any(|(a, b)| a.allow_radio_addresses != b.allow_radio_addresses),
        links,
        kept,
    }
}

/// What a new configuration changes, compared with the running one: the
/// settings a reload applies at once, those that need a restart, and the
/// serial allow-lists matched to the running links. The log level is not
/// in either list: whether it applies at once depends on the running
/// logger, which the driver knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Dotted keys or sections that changed and apply at once.
    pub applied: Vec<&'static str>,
    /// Dotted keys or sections that changed and need a restart.
    pub restart: Vec<&'static str>,
    /// The new `[[serial]]` entries matched against the running links.
    pub serial: SerialReload,
}

impl ReloadPlan {
    /// Compares `new` with the running configuration `current`, whose
    /// links and buffers were started with `started`.
    pub fn new(current: &Config, new: &Config, started: &Started) -> ReloadPlan {
        let serial = serial_lists(&started.serial, &new.serial);
        // `max_packet_bytes` sized the serial framers and the bridge's room.
        let live_gateway = |g: &GatewayConfig| GatewayConfig {
            max_packet_bytes: 0,
            ..g.clone()
        };
        let live = [
            (
                "gateway",
                live_gateway(&new.gateway) != live_gateway(&current.gateway),
            ),
            ("timers", new.timers != current.timers),
            (
                "predefined_topics",
                new.predefined_topics != current.predefined_topics,
            ),
            // The ACL file's contents are read again on every reload regardless.
            ("security", new.security != current.security),
            // The engine applies a new linger to the messages that follow.
            (
                "store.linger_ms",
                new.store.linger_ms != current.store.linger_ms,
            ),
            ("serial.allow_radio_addresses", serial.lists_changed),
            (
                "log.trace_client",
                new.log.trace_client != current.log.trace_client,
            ),
            (
                "limits",
                LimitsConfig {
                    max_retained_messages: 0,
                    ..new.limits.clone()
                } != LimitsConfig {
                    max_retained_messages: 0,
                    ..current.limits.clone()
                },
            ),
        ];
        let fixed = [
            ("udp", new.udp != current.udp),
            ("serial", serial.needs_restart),
            (
                "gateway.max_packet_bytes",
                new.gateway.max_packet_bytes != started.max_packet_bytes,
            ),
            ("upstream", new.upstream != current.upstream),
            ("broker", new.broker != current.broker),
            (
                "store",
                StoreConfig {
                    linger_ms: 0,
                    ..new.store.clone()
                } != StoreConfig {
                    linger_ms: 0,
                    ..current.store.clone()
                },
            ),
            ("discovery", new.discovery != current.discovery),
            (
                "limits.max_retained_messages",
                new.limits.max_retained_messages != current.limits.max_retained_messages,
            ),
            ("log.format", new.log.format != current.log.format),
            ("http", new.http != current.http),
        ];
        let changed = |list: &[(&'static str, bool)]| {
            list.iter()
                .filter(|(_, changed)| *changed)
                .map(|(k, _)| *k)
                .collect()
        };
        ReloadPlan {
            applied: changed(&live),
            restart: changed(&fixed),
            serial,
        }
    }

    /// The engine's settings from `new` as a running gateway can take them:
    /// the allow-lists of the running links, and the packet bound it was
    /// started with. The ACL (`acl`) is the caller's to read.
    pub fn engine_config(&self, new: &Config, started: &Started) -> EngineConfig {
        let mut engine = new.engine_config();
        engine.admission = new.security.admission(&self.serial.links);
        engine.max_packet_bytes = started.max_packet_bytes;
        engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SerialFraming;

    fn link(device: &str, framing: SerialFraming, list: &[&str]) -> SerialConfig {
        SerialConfig {
            device: device.into(),
            framing,
            allow_radio_addresses: list.iter().map(|s| (*s).to_owned()).collect(),
            ..SerialConfig::default()
        }
    }

    fn lists(r: &SerialReload) -> Vec<Vec<String>> {
        r.links
            .iter()
            .map(|l| l.allow_radio_addresses.clone())
            .collect()
    }

    const A: &str = "0013A20040A1B2C3";
    const B: &str = "0013A20040A1B2C4";

    fn running() -> Vec<SerialConfig> {
        vec![
            link("/dev/ttyUSB0", SerialFraming::Xbee, &[A]),
            link("/dev/ttyUSB1", SerialFraming::Slip, &["0A"]),
        ]
    }

    #[test]
    fn the_same_links_take_their_new_lists() {
        let new = vec![
            link("/dev/ttyUSB0", SerialFraming::Xbee, &[A, B]),
            link("/dev/ttyUSB1", SerialFraming::Slip, &[]),
        ];
        let r = serial_lists(&running(), &new);
        assert_eq!(lists(&r), vec![vec![A.to_owned(), B.to_owned()], vec![]]);
        assert!(r.kept.is_empty() && !r.needs_restart && r.lists_changed);
        let same = serial_lists(&running(), &running());
        assert!(!same.lists_changed && !same.needs_restart);
        assert_eq!(same.links, running());
    }

    #[test]
    fn a_link_inserted_before_the_running_ones_shifts_no_list() {
        // A new, unlisted link first: by position, the running XBee link
        // would get its empty list and admit every radio.
        let new = vec![
            link("/dev/ttyACM0", SerialFraming::Raw, &[]),
            link("/dev/ttyUSB0", SerialFraming::Xbee, &[A, B]),
            link("/dev/ttyUSB1", SerialFraming::Slip, &["0A"]),
        ];
        let r = serial_lists(&running(), &new);
        assert_eq!(lists(&r), vec![vec![A.to_owned()], vec!["0A".to_owned()]]);
        assert_eq!(r.kept, vec![0, 1]);
        assert!(r.needs_restart && !r.lists_changed);
        // The running links keep their start-up settings.
        assert_eq!(r.links, running());
    }

    #[test]
    fn removed_reordered_or_changed_links_keep_the_lists_in_force() {
        let swapped = vec![
            link("/dev/ttyUSB1", SerialFraming::Slip, &[]),
            link("/dev/ttyUSB0", SerialFraming::Xbee, &[]),
        ];
        let r = serial_lists(&running(), &swapped);
        assert_eq!(r.links, running());
        assert_eq!(r.kept, vec![0, 1]);
        assert!(r.needs_restart);

        let removed = vec![link("/dev/ttyUSB1", SerialFraming::Slip, &[])];
        let r = serial_lists(&running(), &removed);
        assert_eq!(r.links, running());
        assert_eq!(r.kept, vec![0, 1]);

        // The first link re-framed (a restart-only change), the second
        // unchanged but for its list: only the second list applies.
        let changed = vec![
            link("/dev/ttyUSB0", SerialFraming::Raw, &[]),
            link("/dev/ttyUSB1", SerialFraming::Slip, &["0B"]),
        ];
        let r = serial_lists(&running(), &changed);
        assert_eq!(lists(&r), vec![vec![A.to_owned()], vec!["0B".to_owned()]]);
        assert_eq!(r.links[0].framing, SerialFraming::Xbee);
        assert_eq!(r.kept, vec![0]);
        assert!(r.needs_restart && r.lists_changed);

        // A link appended after the running ones: theirs apply; the new
        // one waits for a restart.
        let mut appended = running();
        appended[0].allow_radio_addresses = vec![B.to_owned()];
        appended.push(link("/dev/ttyACM0", SerialFraming::Raw, &[]));
        let r = serial_lists(&running(), &appended);
        assert_eq!(lists(&r), vec![vec![B.to_owned()], vec!["0A".to_owned()]]);
        assert!(r.kept.is_empty() && r.needs_restart && r.lists_changed);
    }

    #[test]
    fn a_plan_sorts_changes_into_applied_and_restart() {
        let current = Config::default();
        let started = Started::new(&current);
        let same = ReloadPlan::new(&current, &current, &started);
        assert!(same.applied.is_empty() && same.restart.is_empty());

        let mut new = current.clone();
        new.timers.max_retries = 9;
        new.limits.max_retained_messages = 1;
        new.gateway.max_packet_bytes = 512;
        new.http.listen = Some(([127, 0, 0, 1], 9180).into());
        let plan = ReloadPlan::new(&current, &new, &started);
        assert_eq!(plan.applied, vec!["timers"]);
        assert_eq!(
            plan.restart,
            vec![
                "gateway.max_packet_bytes",
                "limits.max_retained_messages",
                "http"
            ]
        );
        let engine = plan.engine_config(&new, &started);
        assert_eq!(engine.max_retries, 9);
        assert_eq!(engine.max_packet_bytes, current.gateway.max_packet_bytes);
    }

    #[test]
    fn a_new_linger_applies_at_once_and_the_state_dir_needs_a_restart() {
        let current = Config::default();
        let started = Started::new(&current);
        let mut new = current.clone();
        new.store.linger_ms = 50;
        let plan = ReloadPlan::new(&current, &new, &started);
        assert_eq!(plan.applied, vec!["store.linger_ms"]);
        assert!(plan.restart.is_empty());
        assert_eq!(
            plan.engine_config(&new, &started).outbox_linger,
            std::time::Duration::from_millis(50)
        );
        new.store.state_dir = "/elsewhere".into();
        let plan = ReloadPlan::new(&current, &new, &started);
        assert_eq!(plan.restart, vec!["store"]);
    }
}
