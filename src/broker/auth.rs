//! Who may connect to the embedded broker: the check of a CONNECT's user
//! name and password against `[[broker.users]]`.
//!
//! The hashes themselves are [`crate::security::password`]'s. Their cost,
//! [`DEFAULT_ITERATIONS`](crate::security::password::DEFAULT_ITERATIONS), is
//! chosen so one check takes a few milliseconds on a Raspberry Pi
//! (docs/broker.md has the figures); it runs on tokio's blocking pool, one at
//! a time, so a client trying passwords in a loop costs the gateway at most
//! one core and never stalls the engine. An unknown user name is checked
//! against a dummy hash of the same cost, so timing does not tell which
//! names exist.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::security::{HashError, PasswordHash};

/// The embedded broker's user list and anonymous policy, checking CONNECTs.
#[derive(Debug)]
pub struct Authenticator {
    users: HashMap<String, PasswordHash>,
    allow_anonymous: bool,
    /// Checked for an unknown user, so its refusal takes as long.
    dummy: PasswordHash,
    /// One check at a time: a flood of CONNECTs holds one core at most.
    permits: Semaphore,
}

impl Authenticator {
    /// From `[broker]`; fails on a hash that does not parse (naming the user).
    pub fn new(cfg: &BrokerConfig) -> Result<Authenticator, (String, HashError)> {
        let mut users = HashMap::new();
        for user in &cfg.users {
            let hash = user
                .password_hash
                .parse::<PasswordHash>()
                .map_err(|e| (user.name.clone(), e))?;
            users.insert(user.name.clone(), hash);
        }
        let iterations = users
            .values()
            .map(PasswordHash::iterations)
            .max()
            .unwrap_or(1);
        let dummy =
            PasswordHash::new(b"not a password", iterations).map_err(|e| (String::new(), e))?;
        Ok(Authenticator {
            users,
            allow_anonymous: cfg.anonymous_allowed(),
            dummy,
            permits: Semaphore::new(1),
        })
    }

    /// Whether a client without a user name is let in.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// Decides a CONNECT's `login` (user name, password). A client without
    /// one is let in only if anonymous clients are; one with a user name
    /// must match a configured user — unless no users are configured and
    /// anonymous clients are allowed, when the credentials are not looked at.
    pub async fn check(self: &Arc<Self>, login: Option<(&str, &str)>) -> bool {
        let Some((name, password)) = login else {
            return self.allow_anonymous;
        };
        if self.users.is_empty() {
            return self.allow_anonymous;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let this = Arc::clone(self);
        let name = name.to_owned();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || this.check_now(&name, password.as_bytes()))
            .await
            .unwrap_or(false)
    }

    /// The check itself, blocking for one hash computation.
    pub fn check_now(&self, name: &str, password: &[u8]) -> bool {
        match self.users.get(name) {
            Some(hash) => hash.verify(password),
            None => {
                let _ = self.dummy.verify(password);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerUser;

    fn config(users: &[(&str, &str)], allow_anonymous: Option<bool>) -> BrokerConfig {
        BrokerConfig {
            users: users
                .iter()
                .map(|(name, pw)| BrokerUser {
                    name: (*name).to_owned(),
                    password_hash: PasswordHash::new(pw.as_bytes(), 100).unwrap().to_string(),
                })
                .collect(),
            allow_anonymous,
            ..BrokerConfig::default()
        }
    }

    #[tokio::test]
    async fn users_and_the_anonymous_policy_decide_a_connect() {
        let auth =
            Arc::new(Authenticator::new(&config(&[("node", "pw1"), ("ha", "pw2")], None)).unwrap());
        assert!(
            !auth.allow_anonymous(),
            "users configured: anonymous off by default"
        );
        assert!(auth.check(Some(("node", "pw1"))).await);
        assert!(auth.check(Some(("ha", "pw2"))).await);
        assert!(!auth.check(Some(("node", "pw2"))).await);
        assert!(!auth.check(Some(("nobody", "pw1"))).await);
        assert!(!auth.check(None).await);

        let open = Arc::new(Authenticator::new(&config(&[("node", "pw1")], Some(true))).unwrap());
        assert!(open.check(None).await);
        // Credentials given are still checked.
        assert!(!open.check(Some(("node", "bad"))).await);

        let none = Arc::new(Authenticator::new(&config(&[], None)).unwrap());
        assert!(none.check(None).await);
        assert!(none.check(Some(("any", "thing"))).await);
    }

    #[test]
    fn a_bad_hash_names_its_user() {
        let mut cfg = config(&[("node", "pw")], None);
        cfg.users[0].password_hash = "nope".into();
        let err = Authenticator::new(&cfg).unwrap_err();
        assert_eq!(err, ("node".to_owned(), HashError::Format));
    }
}
