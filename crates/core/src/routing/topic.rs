//! MQTT topic names and topic filters (MQTT 3.1.1 §4.7): validation and the
//! one reference [`matches`] function.
//!
//! This module owns the *rules*; [`crate::router`] and [`crate::retained`]
//! own the fast data structures and are checked against [`matches`] by
//! property tests. Everything here is pure and total: no input panics.
//!
//! Rules applied:
//! - A topic name is non-empty, at most 65535 bytes, and contains neither
//!   wildcard (`+`, `#`) nor NUL.
//! - A topic filter is non-empty, at most 65535 bytes, contains no NUL; `+`
//!   appears only as a whole level; `#` appears only as the whole last level.
//! - Levels are separated by `/`; empty levels are levels (`a//b` has three).
//! - `#` also matches the parent level (`a/#` matches `a`).
//! - A filter whose first level is a wildcard does not match a name starting
//!   with `$` (`#` and `+/x` do not match `$SYS/x`).

/// The longest topic name or filter MQTT can carry: a UTF-8 string with a
/// 16-bit length prefix.
pub const MAX_TOPIC_LEN: usize = 65535;

/// What is wrong with a topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is the empty string (MQTT 3.1.1 §4.7.3).
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// A topic name (as used in PUBLISH) contains `+` or `#`.
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// The topic contains the NUL character U+0000 (MQTT 3.1.1 §4.7.3).
    #[error("topic contains a NUL character")]
    Nul,
    /// A filter has `+` that is not a whole level, or `#` that is not the
    /// whole last level. `position` is the byte offset of the offending
    /// wildcard character.
    #[error("misplaced wildcard at byte {position}")]
    MisplacedWildcard {
        /// Byte offset of the misplaced `+` or `#` in the filter.
        position: usize,
    },
}

/// Checks a topic name as published: non-empty, at most [`MAX_TOPIC_LEN`]
/// bytes, no `+`, `#` or NUL.
///
/// ```
/// use sngate_core::topic::{validate_name, TopicError};
/// assert_eq!(validate_name("sensors/kitchen/temp"), Ok(()));
/// assert_eq!(validate_name("sensors/+/temp"), Err(TopicError::WildcardInName));
/// ```
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter as subscribed: non-empty, at most [`MAX_TOPIC_LEN`]
/// bytes, no NUL, `+` only as a whole level, `#` only as the whole last level.
///
/// ```
/// use sngate_core::topic::{validate_filter, TopicError};
/// assert_eq!(validate_filter("sport/+/player1/#"), Ok(()));
/// assert_eq!(
///     validate_filter("sport/tennis#"),
///     Err(TopicError::MisplacedWildcard { position: 12 })
/// );
/// ```
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut start = 0;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if is_last => {}
            _ => {
                if let Some(i) = level.bytes().position(|b| b == b'+' || b == b'#') {
                    return Err(TopicError::MisplacedWildcard {
                        position: start + i,
                    });
                }
            }
        }
        start += level.len() + 1;
    }
    Ok(())
}

/// Rules shared by names and filters: non-empty, bounded, no NUL.
fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.bytes().any(|b| b == 0) {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// True if `s` contains a wildcard character (`+` or `#`) anywhere.
///
/// For a validated filter this says whether it can match more than one name;
/// for a name it says the name is invalid.
pub fn has_wildcards(s: &str) -> bool {
    s.bytes().any(|b| b == b'+' || b == b'#')
}

/// True if topic filter `filter` matches topic name `name` (MQTT 3.1.1
/// §4.7). This is the reference definition the router and the retained
/// store agree with.
///
/// Both arguments are assumed valid ([`validate_filter`],
/// [`validate_name`]); on invalid input the answer is unspecified but the
/// function still returns (it never panics). In particular a `#` level
/// matches everything after it wherever it stands.
///
/// ```
/// use sngate_core::topic::matches;
/// assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
/// assert!(matches("sport/+", "sport/"));
/// assert!(!matches("sport/+", "sport"));
/// assert!(!matches("#", "$SYS/uptime"));
/// assert!(matches("$SYS/#", "$SYS/uptime"));
/// ```
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            // `#` matches the rest, including nothing at all (the parent).
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(nl)) => {
                if fl != nl {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_names() {
        for n in [
            "a",
            "/",
            "//",
            "sport/tennis/player1",
            "/finance",
            "$SYS/broker/uptime",
            " ",
            "ünïcödé/温度",
        ] {
            assert_eq!(validate_name(n), Ok(()), "{n:?}");
        }
    }

    #[test]
    fn invalid_names() {
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a+b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a\0b"), Err(TopicError::Nul));
        let long = "x".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_name(&long), Err(TopicError::TooLong));
        let max = "x".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_name(&max), Ok(()));
    }

    #[test]
    fn valid_filters() {
        for f in [
            "#",
            "+",
            "+/+",
            "/+",
            "+/",
            "sport/#",
            "sport/tennis/player1/#",
            "sport/+/player1",
            "sport/+",
            "+/tennis/#",
            "a//b",
            "$SYS/#",
            "/",
        ] {
            assert_eq!(validate_filter(f), Ok(()), "{f:?}");
        }
    }

    #[test]
    fn invalid_filters() {
        use TopicError::*;
        assert_eq!(validate_filter(""), Err(Empty));
        assert_eq!(validate_filter("a\0/#"), Err(Nul));
        assert_eq!(
            validate_filter(&"+/".repeat(40_000)),
            Err(TooLong),
            "length is checked for filters too"
        );
        // §4.7.1.2: "sport/tennis#" and "sport/tennis/#/ranking" are not valid.
        assert_eq!(
            validate_filter("sport/tennis#"),
            Err(MisplacedWildcard { position: 12 })
        );
        assert_eq!(
            validate_filter("sport/tennis/#/ranking"),
            Err(MisplacedWildcard { position: 13 })
        );
        // §4.7.1.3: "sport+" is not valid.
        assert_eq!(
            validate_filter("sport+"),
            Err(MisplacedWildcard { position: 5 })
        );
        assert_eq!(
            validate_filter("#/"),
            Err(MisplacedWildcard { position: 0 })
        );
        assert_eq!(
            validate_filter("##"),
            Err(MisplacedWildcard { position: 0 })
        );
        assert_eq!(
            validate_filter("a/++"),
            Err(MisplacedWildcard { position: 2 })
        );
        assert_eq!(
            validate_filter("a/b+/c"),
            Err(MisplacedWildcard { position: 3 })
        );
    }

    #[test]
    fn has_wildcards_works() {
        assert!(has_wildcards("a/+"));
        assert!(has_wildcards("#"));
        assert!(has_wildcards("a#b"));
        assert!(!has_wildcards("a/b/c"));
        assert!(!has_wildcards(""));
    }

    #[test]
    fn spec_multi_level_wildcard() {
        // §4.7.1.2
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        assert!(!matches(f, "sport/tennis"));
        // "sport/#" also matches the singular "sport".
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("#", "sport"));
        assert!(matches("#", "/"));
        assert!(matches("#", "a/b/c"));
    }

    #[test]
    fn spec_single_level_wildcard() {
        // §4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/tennis/#", "sport/tennis/player1"));
        assert!(matches("+/tennis/#", "sport/tennis"));
        assert!(!matches("+/tennis/#", "sport/golf"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(matches("+", "a"));
        assert!(matches("+", ""));
    }

    #[test]
    fn spec_dollar_topics() {
        // §4.7.2
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$SYS"));
        assert!(matches("$SYS", "$SYS"));
        // Only the first level is special.
        assert!(matches("a/+", "a/$x"));
        assert!(matches("a/#", "a/$x/y"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(!matches("a/+", "a//b"));
        assert!(matches("a/#", "a//b"));
        assert!(matches("/", "/"));
        assert!(!matches("/", ""));
        assert!(matches("+/+", "/"));
        assert!(!matches("+", "/"));
    }

    #[test]
    fn exact_matching_is_case_and_byte_sensitive() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "A/b"));
        assert!(!matches("a/b", "a/b/"));
        assert!(!matches("a/b/", "a/b"));
        assert!(!matches("a/b", "a/bc"));
        assert!(!matches("ab", "a"));
    }

    proptest! {
        #[test]
        fn never_panics(f in ".{0,40}", n in ".{0,40}") {
            let _ = matches(&f, &n);
            let _ = validate_filter(&f);
            let _ = validate_name(&n);
            let _ = has_wildcards(&f);
        }

        #[test]
        fn valid_name_is_valid_filter_and_matches_itself(n in "[a-c/$+#\0]{0,12}") {
            if validate_name(&n).is_ok() {
                prop_assert_eq!(validate_filter(&n), Ok(()));
                prop_assert!(matches(&n, &n));
                prop_assert!(!has_wildcards(&n));
            }
        }

        #[test]
        fn misplaced_position_points_at_a_wildcard(f in "[a/+#]{1,12}") {
            if let Err(TopicError::MisplacedWildcard { position }) = validate_filter(&f) {
                let b = f.as_bytes().get(position).copied();
                prop_assert!(b == Some(b'+') || b == Some(b'#'));
            }
        }
    }
}
