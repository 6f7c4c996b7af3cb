//! Authorisation: which client may publish (write) or receive (read) on which
//! topic, with the rules and the decision procedure of mosquitto's `acl_file`
//! (so an operator's existing file means the same here). Pure data and
//! matching; the file is parsed into an [`Acl`] by `crate::security`.
//!
//! mosquitto's semantics, followed exactly for publish and delivery:
//! - `topic` lines before any `user` line belong to *anonymous* clients (no
//!   username) only; those after `user NAME` to that username only. A client
//!   sees one list: its user's, or the anonymous one.
//! - `pattern` lines apply to every client, after its own list, with `%c`
//!   replaced by the client id and `%u` by the username (a pattern with `%u`
//!   is skipped for a client without one). A client id or username holding
//!   `+` or `#` is denied outright when there are patterns.
//! - Within a list, `deny` rules are tried first; the first matching rule
//!   decides: `deny` refuses, a rule granting the access allows. No match
//!   refuses. Filters of `+`/`#` never match `$` topics.
//!
//! One extension (mosquitto 2.0 lets every SUBSCRIBE through and filters on
//! delivery only): [`Acl::may_subscribe`] refuses a filter that a `deny`
//! covers entirely, or that no rule could ever grant read on, so a device is
//! told at SUBSCRIBE time. Delivery is still checked per message.

use crate::topic::matches;

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages published on it.
    Read,
    /// Publish on it.
    Write,
}

/// What a rule grants: `read`, `write`, `readwrite`, or `deny` (nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `readwrite` (also the default when a line names no access).
    ReadWrite,
    /// `deny`: refuses what would otherwise be granted.
    Deny,
}

impl Permission {
    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Permission::ReadWrite, _)
                | (Permission::Read, Access::Read)
                | (Permission::Write, Access::Write)
        )
    }
}

/// One line: a permission on a topic filter (for patterns, a filter
/// template with `%c`/`%u`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What the rule grants or denies.
    pub permission: Permission,
    /// The topic filter (or template).
    pub filter: String,
}

/// Who asks: client id and, for MQTT clients that sent one, the username.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The client id (MQTT-SN devices are matched by this alone).
    pub client_id: &'a str,
    /// The username; `None` for MQTT-SN devices and anonymous MQTT clients.
    pub username: Option<&'a str>,
}

/// A parsed ACL file. An empty `Acl` (no rules) refuses everything, as
/// mosquitto does with an empty file; "no ACL" is `Option::None` upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: Vec<(String, Vec<Rule>)>,
    patterns: Vec<Rule>,
}

/// Adds a rule the way mosquitto does: `deny` rules in front.
fn push(list: &mut Vec<Rule>, rule: Rule) {
    if rule.permission == Permission::Deny {
        list.insert(0, rule);
    } else {
        list.push(rule);
    }
}

impl Acl {
    /// A `topic` line: for `user`'s list, or the anonymous list with `None`.
    pub fn add_topic(&mut self, user: Option<&str>, permission: Permission, filter: &str) {
        let rule = Rule {
            permission,
            filter: filter.to_owned(),
        };
        let list = match user {
            None => &mut self.anonymous,
            Some(name) => {
                if !self.users.iter().any(|(u, _)| u == name) {
                    self.users.push((name.to_owned(), Vec::new()));
                }
                match self.users.iter_mut().find(|(u, _)| u == name) {
                    Some((_, rules)) => rules,
                    None => return,
                }
            }
        };
        push(list, rule);
    }

    /// A `pattern` line (applies to every client).
    pub fn add_pattern(&mut self, permission: Permission, template: &str) {
        push(
            &mut self.patterns,
            Rule {
                permission,
                filter: template.to_owned(),
            },
        );
    }

    /// How many rules in all.
    pub fn len(&self) -> usize {
        self.anonymous.len()
            + self.patterns.len()
            + self.users.iter().map(|(_, r)| r.len()).sum::<usize>()
    }

    /// True when the ACL has no rule (and so refuses everything).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// May `who` do `access` on the topic name `topic`?
    pub fn allowed(&self, who: Principal<'_>, topic: &str, access: Access) -> bool {
        self.decide(who, |rule, filter| {
            if !matches(filter, topic) {
                return None;
            }
            if rule.permission == Permission::Deny {
                Some(false)
            } else if rule.permission.grants(access) {
                Some(true)
            } else {
                None
            }
        })
    }

    /// May `who` subscribe to `filter`? Refused when a `deny` rule covers
    /// every topic the filter matches, or when no rule grants read on any of
    /// them (the module documentation explains this extension).
    pub fn may_subscribe(&self, who: Principal<'_>, filter: &str) -> bool {
        self.decide(who, |rule, rule_filter| match rule.permission {
            Permission::Deny => covers(rule_filter, filter).then_some(false),
            p if p.grants(Access::Read) => intersects(rule_filter, filter).then_some(true),
            _ => None,
        })
    }

    /// mosquitto's procedure: the client's list, then the patterns; the first
    /// rule `verdict` has an opinion on decides; no opinion refuses.
    fn decide(
        &self,
        who: Principal<'_>,
        mut verdict: impl FnMut(&Rule, &str) -> Option<bool>,
    ) -> bool {
        let own = match who.username {
            Some(name) => self
                .users
                .iter()
                .find(|(u, _)| u == name)
                .map(|(_, r)| r.as_slice()),
            None => Some(self.anonymous.as_slice()),
        };
        for rule in own.unwrap_or(&[]) {
            if let Some(v) = verdict(rule, &rule.filter) {
                return v;
            }
        }
        if self.patterns.is_empty() {
            return false;
        }
        let dangerous = |s: &str| s.contains(['+', '#']);
        if who.username.is_some_and(dangerous) || dangerous(who.client_id) {
            return false;
        }
        if who.client_id.is_empty() {
            return false;
        }
        for rule in &self.patterns {
            let Some(filter) = substitute(&rule.filter, who) else {
                continue;
            };
            if let Some(v) = verdict(rule, &filter) {
                return v;
            }
        }
        false
    }
}

/// A pattern with `%c` and `%u` replaced; `None` when it needs a username
/// the client does not have (mosquitto skips such a pattern).
fn substitute(template: &str, who: Principal<'_>) -> Option<String> {
    if template.contains("%u") && who.username.is_none() {
        return None;
    }
    let mut out = String::with_capacity(template.len() + who.client_id.len());
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match (after.chars().next(), who.username) {
            (Some('c'), _) => {
                out.push_str(who.client_id);
                rest = &after[1..];
            }
            (Some('u'), Some(user)) => {
                out.push_str(user);
                rest = &after[1..];
            }
            _ => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// Can some topic name match both filters? (`$` topics: a filter starting
/// with a wildcard matches none, as in [`matches`].)
pub fn intersects(a: &str, b: &str) -> bool {
    let wild = |f: &str| f.starts_with('+') || f.starts_with('#');
    let dollar = |f: &str| f.starts_with('$');
    if (dollar(a) && wild(b)) || (dollar(b) && wild(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(r)) if l == r => {}
            _ => return false,
        }
    }
}

/// Does filter `outer` match every topic that filter `inner` matches?
pub fn covers(outer: &str, inner: &str) -> bool {
    let wild = |f: &str| f.starts_with('+') || f.starts_with('#');
    // `+/…` or `#` never matches `$` topics; an inner `$` filter is not
    // covered by it. An inner wildcard start matches no `$` topics, so a
    // literal `$…` outer cannot cover it either (handled level-wise below).
    if inner.starts_with('$') && wild(outer) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(l), Some(r)) if l == r && l != "+" && l != "#" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> Principal<'_> {
        Principal {
            client_id: id,
            username: None,
        }
    }

    fn user<'a>(id: &'a str, name: &'a str) -> Principal<'a> {
        Principal {
            client_id: id,
            username: Some(name),
        }
    }

    #[test]
    fn empty_acl_refuses_everything() {
        let acl = Acl::default();
        assert!(!acl.allowed(device("d"), "a", Access::Write));
        assert!(!acl.allowed(user("c", "u"), "a", Access::Read));
    }

    #[test]
    fn anonymous_rules_apply_only_to_clients_without_username() {
        let mut acl = Acl::default();
        acl.add_topic(None, Permission::ReadWrite, "open/#");
        acl.add_topic(Some("roger"), Permission::Read, "roger/#");
        assert!(acl.allowed(device("d"), "open/x", Access::Write));
        // A named user gets its own list only, not the anonymous one.
        assert!(!acl.allowed(user("c", "roger"), "open/x", Access::Write));
        assert!(acl.allowed(user("c", "roger"), "roger/x", Access::Read));
        assert!(!acl.allowed(user("c", "roger"), "roger/x", Access::Write));
        // An unknown username has no list at all.
        assert!(!acl.allowed(user("c", "nobody"), "open/x", Access::Read));
    }

    #[test]
    fn deny_wins_over_a_broader_grant_whatever_the_order() {
        let mut acl = Acl::default();
        acl.add_topic(None, Permission::ReadWrite, "home/#");
        acl.add_topic(None, Permission::Deny, "home/secret/#");
        assert!(acl.allowed(device("d"), "home/kitchen", Access::Write));
        assert!(!acl.allowed(device("d"), "home/secret/key", Access::Write));
        assert!(!acl.allowed(device("d"), "home/secret/key", Access::Read));
    }

    #[test]
    fn first_matching_rule_without_the_access_does_not_stop_the_search() {
        let mut acl = Acl::default();
        acl.add_topic(None, Permission::Read, "a/#");
        acl.add_topic(None, Permission::Write, "a/b");
        assert!(acl.allowed(device("d"), "a/b", Access::Write));
        assert!(!acl.allowed(device("d"), "a/c", Access::Write));
    }

    #[test]
    fn patterns_substitute_client_id_and_username() {
        let mut acl = Acl::default();
        acl.add_pattern(Permission::Write, "devices/%c/up");
        acl.add_pattern(Permission::Read, "users/%u/#");
        assert!(acl.allowed(device("node7"), "devices/node7/up", Access::Write));
        assert!(!acl.allowed(device("node7"), "devices/node8/up", Access::Write));
        assert!(!acl.allowed(device("node7"), "devices/node7/up", Access::Read));
        // %u needs a username: skipped for devices.
        assert!(!acl.allowed(device("node7"), "users//x", Access::Read));
        assert!(acl.allowed(user("c", "ann"), "users/ann/x", Access::Read));
        // Patterns apply to named users too, after their own (absent) list.
        assert!(acl.allowed(user("c9", "ann"), "devices/c9/up", Access::Write));
    }

    #[test]
    fn pattern_deny_comes_first_and_dangerous_ids_are_refused() {
        let mut acl = Acl::default();
        acl.add_pattern(Permission::ReadWrite, "x/%c/#");
        acl.add_pattern(Permission::Deny, "x/%c/private");
        assert!(acl.allowed(device("n"), "x/n/open", Access::Write));
        assert!(!acl.allowed(device("n"), "x/n/private", Access::Write));
        // An id with a wildcard would widen the pattern: refused.
        assert!(!acl.allowed(device("#"), "x/anything/open", Access::Write));
        assert!(!acl.allowed(user("n", "a+b"), "x/n/open", Access::Write));
    }

    #[test]
    fn own_list_decides_before_patterns() {
        let mut acl = Acl::default();
        acl.add_topic(None, Permission::Deny, "x/#");
        acl.add_pattern(Permission::ReadWrite, "x/%c");
        assert!(!acl.allowed(device("n"), "x/n", Access::Write));
    }

    #[test]
    fn wildcards_do_not_match_dollar_topics() {
        let mut acl = Acl::default();
        acl.add_topic(None, Permission::ReadWrite, "#");
        assert!(!acl.allowed(device("d"), "$SYS/broker/uptime", Access::Read));
        acl.add_topic(None, Permission::Read, "$SYS/#");
        assert!(acl.allowed(device("d"), "$SYS/broker/uptime", Access::Read));
    }

    #[test]
    fn subscribe_needs_a_possible_read_and_no_covering_deny() {
        let mut acl = Acl::default();
        acl.add_topic(None, Permission::Read, "sensors/+/temp");
        acl.add_topic(None, Permission::Write, "cmd/#");
        acl.add_topic(None, Permission::Deny, "sensors/secret/#");
        let d = device("d");
        assert!(acl.may_subscribe(d, "sensors/+/temp"));
        assert!(acl.may_subscribe(d, "sensors/#")); // some topics readable
        assert!(acl.may_subscribe(d, "#"));
        assert!(!acl.may_subscribe(d, "cmd/#")); // write only
        assert!(!acl.may_subscribe(d, "sensors/secret/temp"));
        assert!(!acl.may_subscribe(d, "other/+"));
    }

    #[test]
    fn intersects_and_covers() {
        assert!(intersects("a/+", "+/b"));
        assert!(intersects("a/#", "a"));
        assert!(!intersects("a/b", "a/c"));
        assert!(!intersects("a/+", "a"));
        assert!(!intersects("#", "$SYS/x"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(covers("#", "a/#"));
        assert!(!covers("#", "$SYS/#"));
    }

    #[test]
    fn substitution_leaves_other_percent_signs() {
        let who = user("c", "u");
        assert_eq!(
            substitute("a/%x/%c/%u/%", who).as_deref(),
            Some("a/%x/c/u/%")
        );
        assert_eq!(substitute("a/%u", device("c")), None);
    }
}
