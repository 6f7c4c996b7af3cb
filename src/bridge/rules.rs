//! Topic rules for the upstream bridge, in the style of mosquitto's `topic`
//! bridge lines: which topics cross, which way, at what QoS at most, and how
//! their prefixes change on the way.
//!
//! This module owns only the pure mapping (no IO, no rumqttc types):
//!
//! - **out** (`out` or `both` rules): a local topic `local_prefix + X`, where
//!   `X` matches the rule's `topic` filter, is published upstream as
//!   `remote_prefix + X` with QoS `min(message QoS, rule QoS)`;
//! - **in** (`in` or `both` rules): the bridge subscribes upstream to
//!   `remote_prefix + topic` at the rule's QoS, and a remote topic
//!   `remote_prefix + X` that matches is delivered locally as
//!   `local_prefix + X`.
//!
//! A prefix may name its gateway: [`GATEWAY_PLACEHOLDER`] (`{gateway}`)
//! stands for the gateway's upstream client id, so one rules file keeps the
//! topics of several gateways on one broker apart (issue 23:
//! `remote_prefix = "site/{gateway}/"`).
//!
//! The first matching rule wins, in file order. With no rules at all the
//! bridge is *transparent*: every local topic goes out unchanged and the
//! upstream subscriptions are the local subscribers' filters (see
//! [`Rules::is_transparent`]).

use crate::config::{BridgeRule, Direction};
use crate::core::topic::matches;

/// The compiled bridge rules. Cheap to build; immutable afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<BridgeRule>,
}

/// In a rule's `local_prefix` or `remote_prefix`: the gateway's upstream
/// client id.
pub const GATEWAY_PLACEHOLDER: &str = "{gateway}";

impl Rules {
    /// Wraps the configured rules (already validated by the config loader),
    /// as written.
    pub fn new(rules: &[BridgeRule]) -> Self {
        Self {
            rules: rules.to_vec(),
        }
    }

    /// The rules of the gateway whose upstream client id is `gateway`: each
    /// [`GATEWAY_PLACEHOLDER`] in a prefix becomes that id.
    pub fn for_gateway(rules: &[BridgeRule], gateway: &str) -> Self {
        let expand = |p: &str| p.replace(GATEWAY_PLACEHOLDER, gateway);
        Self {
            rules: rules
                .iter()
                .map(|r| BridgeRule {
                    local_prefix: expand(&r.local_prefix),
                    remote_prefix: expand(&r.remote_prefix),
                    ..r.clone()
                })
                .collect(),
        }
    }

    /// True when there are no rules: everything goes out unchanged, and the
    /// upstream subscriptions follow the local subscribers dynamically.
    pub fn is_transparent(&self) -> bool {
        self.rules.is_empty()
    }

    /// Maps a local topic name to the remote topic and QoS it is published
    /// upstream with, or `None` when no `out`/`both` rule lets it cross.
    pub fn outbound(&self, local_topic: &str, qos: u8) -> Option<(String, u8)> {
        if self.is_transparent() {
            return Some((local_topic.to_owned(), qos));
        }
        self.rules
            .iter()
            .filter(|r| matches!(r.direction, Direction::Out | Direction::Both))
            .find_map(|r| {
                let rest = local_topic.strip_prefix(r.local_prefix.as_str())?;
                matches(&r.topic, rest)
                    .then(|| (format!("{}{rest}", r.remote_prefix), qos.min(r.qos)))
            })
    }

    /// Maps a remote topic name received from upstream to the local topic and
    /// QoS it is delivered with, or `None` when no `in`/`both` rule covers it.
    pub fn inbound(&self, remote_topic: &str, qos: u8) -> Option<(String, u8)> {
        if self.is_transparent() {
            return Some((remote_topic.to_owned(), qos));
        }
        self.rules
            .iter()
            .filter(|r| matches!(r.direction, Direction::In | Direction::Both))
            .find_map(|r| {
                let rest = remote_topic.strip_prefix(r.remote_prefix.as_str())?;
                matches(&r.topic, rest)
                    .then(|| (format!("{}{rest}", r.local_prefix), qos.min(r.qos)))
            })
    }

    /// The remote filter a device's own session subscribes to for the local
    /// `filter` (per-device mode): unchanged when transparent; with rules,
    /// `remote_prefix + rest` for the first `in`/`both` rule whose
    /// `local_prefix` starts the filter and whose topic filter some topic
    /// matches together with `rest`. What comes down is still mapped (and
    /// checked) by [`inbound`](Self::inbound). `None` when no rule fits.
    pub fn remote_filter(&self, filter: &str) -> Option<String> {
        if self.is_transparent() {
            return Some(filter.to_owned());
        }
        self.rules
            .iter()
            .filter(|r| matches!(r.direction, Direction::In | Direction::Both))
            .find_map(|r| {
                let rest = filter.strip_prefix(r.local_prefix.as_str())?;
                overlaps(&r.topic, rest).then(|| format!("{}{rest}", r.remote_prefix))
            })
    }

    /// The static upstream subscriptions (remote filter, QoS) of the `in` and
    /// `both` rules, duplicates removed. Empty when transparent.
    pub fn subscriptions(&self) -> Vec<(String, u8)> {
        let mut out: Vec<(String, u8)> = Vec::new();
        for r in &self.rules {
            if !matches!(r.direction, Direction::In | Direction::Both) {
                continue;
            }
            let filter = format!("{}{}", r.remote_prefix, r.topic);
            match out.iter_mut().find(|(f, _)| *f == filter) {
                Some((_, q)) => *q = (*q).max(r.qos),
                None => out.push((filter, r.qos)),
            }
        }
        out
    }
}

/// Whether some topic name matches both filters.
fn overlaps(a: &str, b: &str) -> bool {
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            // "x/#" also matches "x".
            (None, Some(rest)) | (Some(rest), None) => {
                return rest == "#";
            }
            (Some(x), Some(y)) if x == y || x == "+" || y == "+" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(direction: Direction, topic: &str, qos: u8, local: &str, remote: &str) -> BridgeRule {
        BridgeRule {
            direction,
            topic: topic.to_owned(),
            qos,
            local_prefix: local.to_owned(),
            remote_prefix: remote.to_owned(),
        }
    }

    #[test]
    fn the_gateway_placeholder_names_each_gateways_topics() {
        let rules = [
            rule(Direction::Out, "sensors/#", 1, "", "site/{gateway}/"),
            rule(Direction::In, "cmd/#", 1, "", "site/{gateway}/"),
        ];
        let a = Rules::for_gateway(&rules, "gw-a");
        let b = Rules::for_gateway(&rules, "gw-b");
        assert_eq!(
            a.outbound("sensors/t", 1),
            Some(("site/gw-a/sensors/t".into(), 1))
        );
        assert_eq!(
            b.outbound("sensors/t", 1),
            Some(("site/gw-b/sensors/t".into(), 1))
        );
        assert_eq!(a.subscriptions(), [("site/gw-a/cmd/#".to_owned(), 1)]);
        assert_eq!(a.inbound("site/gw-b/cmd/x", 1), None, "b's commands");
        assert_eq!(a.inbound("site/gw-a/cmd/x", 1), Some(("cmd/x".into(), 1)));
        // As written without a gateway.
        assert_eq!(
            Rules::new(&rules).outbound("sensors/t", 1),
            Some(("site/{gateway}/sensors/t".into(), 1))
        );
    }

    #[test]
    fn device_filters_map_through_in_rules() {
        let r = Rules::new(&[
            rule(Direction::Out, "#", 2, "", ""),
            rule(Direction::In, "cmd/#", 1, "dev/", "site1/"),
        ]);
        assert_eq!(r.remote_filter("dev/cmd/x"), Some("site1/cmd/x".into()));
        assert_eq!(r.remote_filter("dev/+/x"), Some("site1/+/x".into()));
        assert_eq!(r.remote_filter("dev/#"), Some("site1/#".into()));
        assert_eq!(
            r.remote_filter("dev/status/x"),
            None,
            "no in rule covers it"
        );
        assert_eq!(
            r.remote_filter("other/cmd/x"),
            None,
            "not under the local prefix"
        );
        assert_eq!(Rules::new(&[]).remote_filter("a/#"), Some("a/#".into()));
    }

    #[test]
    fn filter_overlap() {
        assert!(overlaps("a/#", "a"));
        assert!(overlaps("a/+", "+/b"));
        assert!(!overlaps("a/+", "a/b/c"));
        assert!(overlaps("#", "x/y"));
        assert!(!overlaps("a/b", "a/c"));
    }

    #[test]
    fn transparent_passes_everything_unchanged() {
        let r = Rules::new(&[]);
        assert!(r.is_transparent());
        assert_eq!(r.outbound("a/b", 2), Some(("a/b".into(), 2)));
        assert_eq!(r.inbound("$SYS/x", 1), Some(("$SYS/x".into(), 1)));
        assert!(r.subscriptions().is_empty());
    }

    #[test]
    fn out_rule_maps_prefixes_and_caps_qos() {
        let r = Rules::new(&[rule(Direction::Out, "sensors/#", 1, "dev/", "site1/")]);
        assert_eq!(
            r.outbound("dev/sensors/t1", 2),
            Some(("site1/sensors/t1".into(), 1))
        );
        assert_eq!(
            r.outbound("dev/sensors/t1", 0),
            Some(("site1/sensors/t1".into(), 0))
        );
        // Parent level matches `#`.
        assert_eq!(
            r.outbound("dev/sensors", 0),
            Some(("site1/sensors".into(), 0))
        );
        assert_eq!(r.outbound("sensors/t1", 1), None, "local prefix missing");
        assert_eq!(r.outbound("dev/other/t1", 1), None, "filter mismatch");
        // An out rule neither subscribes nor lets anything in.
        assert!(r.subscriptions().is_empty());
        assert_eq!(r.inbound("site1/sensors/t1", 1), None);
    }

    #[test]
    fn in_rule_subscribes_and_maps_back() {
        let r = Rules::new(&[rule(Direction::In, "cmd/+", 2, "local/", "cloud/")]);
        assert_eq!(r.subscriptions(), vec![("cloud/cmd/+".to_owned(), 2)]);
        assert_eq!(
            r.inbound("cloud/cmd/reboot", 1),
            Some(("local/cmd/reboot".into(), 1))
        );
        assert_eq!(r.inbound("cloud/cmd/a/b", 1), None);
        assert_eq!(r.inbound("other/cmd/a", 1), None);
        assert_eq!(r.outbound("local/cmd/reboot", 1), None, "in-only");
    }

    #[test]
    fn both_rule_is_symmetric_and_first_match_wins() {
        let r = Rules::new(&[
            rule(Direction::Both, "a/#", 0, "", "up/"),
            rule(Direction::Both, "#", 2, "", "all/"),
            rule(Direction::In, "a/#", 1, "", "up/"),
        ]);
        assert_eq!(r.outbound("a/x", 2), Some(("up/a/x".into(), 0)));
        assert_eq!(r.outbound("b/x", 2), Some(("all/b/x".into(), 2)));
        assert_eq!(r.inbound("up/a/x", 2), Some(("a/x".into(), 0)));
        assert_eq!(r.inbound("all/z", 2), Some(("z".into(), 2)));
        // Duplicate filters collapse to the highest QoS.
        assert_eq!(
            r.subscriptions(),
            vec![("up/a/#".to_owned(), 1), ("all/#".to_owned(), 2)]
        );
    }

    #[test]
    fn dollar_topics_do_not_match_leading_wildcards() {
        let r = Rules::new(&[rule(Direction::Both, "#", 2, "", "")]);
        assert_eq!(r.outbound("$SYS/x", 1), None);
        assert_eq!(r.outbound("x", 1), Some(("x".into(), 1)));
    }
}
