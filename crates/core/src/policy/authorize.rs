//! The engine's use of the ACL (`core::acl`): who a session is (client id,
//! and as the username a local MQTT client's, or a DTLS device's identity), and the checks on publish,
//! subscribe, will and delivery, each denial counted as
//! [`DropReason::AclDenied`] and logged. With no ACL configured every check
//! passes without looking anything up.
//!
//! Before any ACL, one rule no configuration changes: `$SYS/…` belongs to
//! the broker. A publish or will there from a device or a local MQTT
//! client is refused, counted as [`DropReason::SysReserved`] and logged
//! (at the 1st, 2nd, 4th… refusal), so no client can pass its message off
//! as the gateway's own status.

use tracing::{debug, info};

use crate::acl::{Access, Principal};
use crate::gateway::{Gateway, Subscriber};
use crate::stats::DropReason;

impl Gateway {
    /// May `who` do `access` on topic name `topic`? A denial is counted and
    /// logged (`what` says which operation was refused).
    pub(crate) fn acl_check(
        &mut self,
        who: Subscriber,
        topic: &str,
        access: Access,
        what: &str,
    ) -> bool {
        if access == Access::Write && self.sys_refused(topic, what) {
            return false;
        }
        let Some(acl) = self.cfg.acl.clone() else {
            return true;
        };
        let allowed = self.with_principal(who, |p| acl.allowed(p, topic, access));
        if !allowed {
            self.acl_denied(who, topic, what);
        }
        allowed
    }

    /// May `who` subscribe to `filter` (see `Acl::may_subscribe`)? A denial
    /// is counted and logged.
    pub(crate) fn acl_check_subscribe(&mut self, who: Subscriber, filter: &str) -> bool {
        let Some(acl) = self.cfg.acl.clone() else {
            return true;
        };
        let allowed = self.with_principal(who, |p| acl.may_subscribe(p, filter));
        if !allowed {
            self.acl_denied(who, filter, "subscribe");
        }
        allowed
    }

    /// May a QoS −1 publish (no session, so anonymous and with no client
    /// id: only the anonymous `topic` rules can allow it) go to `topic`?
    pub(crate) fn acl_check_anonymous_write(&mut self, topic: &str) -> bool {
        if self.sys_refused(topic, "QoS -1 publish") {
            return false;
        }
        let Some(acl) = self.cfg.acl.clone() else {
            return true;
        };
        let who = Principal {
            client_id: "",
            username: None,
        };
        let allowed = acl.allowed(who, topic, Access::Write);
        if !allowed {
            info!(%topic, "ACL denied a QoS -1 publish");
            self.stats.drop(DropReason::AclDenied);
        }
        allowed
    }

    /// Delivery check (mosquitto checks read on every delivery): counted, and
    /// logged at debug only, since one message may be skipped for many.
    pub(crate) fn acl_may_read(&mut self, who: Subscriber, topic: &str) -> bool {
        let Some(acl) = self.cfg.acl.clone() else {
            return true;
        };
        let allowed = self.with_principal(who, |p| acl.allowed(p, topic, Access::Read));
        if !allowed {
            debug!(client = %self.subscriber_label(who), %topic, "ACL denied delivery");
            self.stats.drop(DropReason::AclDenied);
        }
        allowed
    }

    /// Is `topic` the broker's (`$SYS` or under it)? Then a client's write
    /// there is refused: counted and logged.
    fn sys_refused(&mut self, topic: &str, what: &str) -> bool {
        if !is_sys(topic) {
            return false;
        }
        self.stats.drop(DropReason::SysReserved);
        if let Some(total) = self.log_gates.sys_refused.allow() {
            info!(%topic, what, total, "refused: $SYS/ belongs to the broker");
        }
        true
    }

    fn acl_denied(&mut self, who: Subscriber, topic: &str, what: &str) {
        info!(client = %self.subscriber_label(who), %topic, what, "ACL denied");
        self.stats.drop(DropReason::AclDenied);
    }

    fn subscriber_label(&self, who: Subscriber) -> String {
        self.with_principal(who, |p| match p.username {
            Some(u) => format!("{} (user {u})", p.client_id),
            None => p.client_id.to_owned(),
        })
    }

    /// Calls `f` with the session's identity (an unknown session is an
    /// anonymous client with an empty id, which patterns never match).
    fn with_principal<T>(&self, who: Subscriber, f: impl FnOnce(Principal<'_>) -> T) -> T {
        match who {
            // A device authenticated at the transport (DTLS) is the ACL's
            // user of its identity: `user NAME` blocks and `%u` name it.
            Subscriber::Device(sid) => {
                let s = self.sessions.get(&sid);
                f(Principal {
                    client_id: s.map_or("", |s| &s.client_id),
                    username: s.and_then(|s| s.identity.as_deref()),
                })
            }
            Subscriber::Local(sid) => {
                let s = self.locals.sessions.get(&sid);
                f(Principal {
                    client_id: s.map_or("", |s| &s.client_id),
                    username: s.and_then(|s| s.username.as_deref()),
                })
            }
        }
    }
}

/// `$SYS` and every topic under it (a filter too: `$SYS/#`, `$SYS/+/x`).
pub(crate) fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}
