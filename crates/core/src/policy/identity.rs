//! Identity binding: a device that authenticated at the transport (DTLS: its
//! PSK identity or its certificate's common name) may use only the client ids
//! its identity is allowed, and a session made by an identity is that
//! identity's — a CONNECT takeover or a wake-up PINGREQ from a peer with
//! another identity (or none, over plain UDP) is not its to make.
//!
//! Pure: the pattern is data and the decision a function of it; the engine
//! consults it at CONNECT and wake-up (`devices/lifecycle.rs`) and counts
//! each refusal as `identity_mismatch`.

use super::admission::glob_matches;

/// Which client ids an authenticated identity may connect as: the identity
/// itself, and what a pattern allows, where `%i` stands for the identity,
/// `*` for any run of characters and `?` for one (`"%i/*"`: also
/// `dev1/temp` for `dev1`). The default, `"%i"`, allows the identity alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBinding {
    pattern: String,
}

impl Default for IdentityBinding {
    fn default() -> Self {
        Self {
            pattern: "%i".to_owned(),
        }
    }
}

impl IdentityBinding {
    /// A binding from its pattern (e.g. `"%i"` or `"%i/*"`).
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
        }
    }

    /// The pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// May a device authenticated as `identity` connect as `client_id`?
    ///
    /// The identity is substituted literally: an identity holding a glob
    /// character (`*`, `?`) is only ever matched character for character,
    /// so an identity cannot widen its own pattern.
    pub fn permits(&self, identity: &str, client_id: &str) -> bool {
        if client_id == identity {
            return true;
        }
        if identity.contains(['*', '?']) {
            // Compare piecewise: every literal part of the pattern and every
            // `%i` must line up exactly; only the pattern's own `*`/`?` glob.
            return self.literal_identity_match(identity, client_id);
        }
        glob_matches(&self.pattern.replace("%i", identity), client_id)
    }

    /// `permits` for an identity with glob characters: the client id must
    /// begin with the identity wherever the pattern begins with `%i`, and be
    /// exactly the identity for the default pattern; anything else refused.
    fn literal_identity_match(&self, identity: &str, client_id: &str) -> bool {
        match self.pattern.strip_prefix("%i") {
            Some("") => client_id == identity,
            Some(rest) if !rest.contains("%i") => client_id
                .strip_prefix(identity)
                .is_some_and(|tail| glob_matches(rest, tail)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_binds_client_id_to_identity() {
        let b = IdentityBinding::default();
        assert!(b.permits("dev1", "dev1"));
        assert!(!b.permits("dev1", "dev2"));
        assert!(!b.permits("dev1", "dev1/x"));
        assert!(!b.permits("dev1", ""));
    }

    #[test]
    fn pattern_widens() {
        let b = IdentityBinding::new("%i/*");
        assert!(b.permits("dev1", "dev1/a"));
        assert!(b.permits("dev1", "dev1/"));
        assert!(b.permits("dev1", "dev1"), "the identity itself, always");
        assert!(!b.permits("dev1", "dev10"));
        assert!(!b.permits("dev1", "dev2/a"));
    }

    #[test]
    fn an_identity_with_glob_characters_cannot_widen_itself() {
        let b = IdentityBinding::default();
        assert!(!b.permits("*", "anyone"));
        assert!(b.permits("*", "*"));
        let b = IdentityBinding::new("%i/*");
        assert!(!b.permits("d?", "dx/a"));
        assert!(b.permits("d?", "d?/a"));
    }
}
