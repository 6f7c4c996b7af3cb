//! mosquitto's `acl_file` format, parsed into the engine's [`Acl`], line by
//! line as mosquitto reads it, so an existing file means the same here:
//!
//! - a line whose first character is `#` is a comment; blank lines are
//!   skipped; trailing whitespace is ignored;
//! - `user NAME`: the `topic` lines that follow belong to that username
//!   (lines before any `user` line belong to anonymous clients);
//! - `topic [read|write|readwrite|deny] FILTER`: without an access word the
//!   rule is `readwrite` (so a filter with a space needs the access word);
//! - `pattern [read|write|readwrite|deny] FILTER`: for every client, with
//!   `%c` (client id) and `%u` (username) substituted;
//! - anything else, an unknown access word, or an invalid filter is an error
//!   naming the line (mosquitto refuses to start on those too).

use std::path::{Path, PathBuf};

use crate::core::acl::{Acl, Permission};
use crate::core::topic::validate_filter;

/// Why an ACL file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AclFileError {
    /// The file could not be read.
    #[error("{}: cannot read the ACL file", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not valid.
    #[error("{}line {line}: {reason}", .path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Line {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl AclFileError {
    /// Names the file a parse error came from.
    pub fn in_file(self, file: &Path) -> Self {
        match self {
            AclFileError::Line { line, reason, .. } => AclFileError::Line {
                path: Some(file.to_owned()),
                line,
                reason,
            },
            other => other,
        }
    }
}

/// Parses the text of an ACL file.
pub fn parse_acl(text: &str) -> Result<Acl, AclFileError> {
    let mut acl = Acl::default();
    let mut user: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let err = |reason: String| AclFileError::Line {
            path: None,
            line: i + 1,
            reason,
        };
        let line = raw.trim_end();
        if line.starts_with('#') {
            continue;
        }
        // Tokens are separated by spaces (as mosquitto's strtok on " ").
        let line = line.trim_start_matches(' ');
        if line.is_empty() {
            continue;
        }
        let (keyword, rest) = match line.split_once(' ') {
            Some((k, r)) => (k, r.trim_start_matches(' ')),
            None => (line, ""),
        };
        match keyword {
            "user" => {
                let name = rest.trim();
                if name.is_empty() {
                    return Err(err("`user` without a username".into()));
                }
                user = Some(name.to_owned());
            }
            "topic" | "pattern" => {
                if rest.is_empty() {
                    return Err(err(format!("`{keyword}` without a topic")));
                }
                let (permission, filter) = match rest.split_once(' ') {
                    None => (Permission::ReadWrite, rest),
                    Some((access, filter)) => {
                        let permission = match access {
                            "read" => Permission::Read,
                            "write" => Permission::Write,
                            "readwrite" => Permission::ReadWrite,
                            "deny" => Permission::Deny,
                            other => {
                                return Err(err(format!(
                                    "invalid access `{other}` (read, write, readwrite or deny)"
                                )));
                            }
                        };
                        (permission, filter.trim())
                    }
                };
                if validate_filter(filter).is_err() {
                    return Err(err(format!("invalid topic filter `{filter}`")));
                }
                if keyword == "topic" {
                    acl.add_topic(user.as_deref(), permission, filter);
                } else {
                    acl.add_pattern(permission, filter);
                }
            }
            other => return Err(err(format!("unknown keyword `{other}`"))),
        }
    }
    Ok(acl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::acl::{Access, Principal};

    const EXAMPLE: &str = "\
# This affects access control for clients with no username.
topic read $SYS/#
topic sensors/#

# This only affects clients with username \"roger\".
user roger
topic foo/bar
topic deny foo/bar/secret
topic read   spaced out/topic  

# This affects all clients.
pattern write $SYS/broker/connection/%c/state
pattern readwrite devices/%c/#
pattern read users/%u/#
";

    fn who<'a>(id: &'a str, user: Option<&'a str>) -> Principal<'a> {
        Principal {
            client_id: id,
            username: user,
        }
    }

    #[test]
    fn parses_mosquittos_example() -> Result<(), AclFileError> {
        let acl = parse_acl(EXAMPLE)?;
        assert_eq!(acl.len(), 8);
        let anon = who("dev1", None);
        let roger = who("c1", Some("roger"));
        assert!(acl.allowed(anon, "$SYS/broker/uptime", Access::Read));
        assert!(!acl.allowed(anon, "$SYS/broker/uptime", Access::Write));
        assert!(acl.allowed(anon, "sensors/t1", Access::Write));
        assert!(acl.allowed(anon, "devices/dev1/x", Access::Write));
        assert!(!acl.allowed(anon, "devices/dev2/x", Access::Write));
        assert!(acl.allowed(roger, "foo/bar", Access::Write));
        assert!(!acl.allowed(roger, "sensors/t1", Access::Write));
        assert!(!acl.allowed(roger, "foo/bar/secret", Access::Read));
        assert!(acl.allowed(roger, "spaced out/topic", Access::Read));
        assert!(acl.allowed(roger, "users/roger/inbox", Access::Read));
        assert!(acl.allowed(roger, "$SYS/broker/connection/c1/state", Access::Write));
        Ok(())
    }

    #[test]
    fn user_lines_take_the_rest_of_the_line() -> Result<(), AclFileError> {
        let acl = parse_acl("user  with space \ntopic a\n")?;
        assert!(acl.allowed(who("c", Some("with space")), "a", Access::Write));
        Ok(())
    }

    #[test]
    fn comments_must_start_the_line() -> Result<(), AclFileError> {
        // mosquitto treats only a `#` in the first column as a comment.
        assert!(parse_acl("  # indented\n").is_err());
        assert!(parse_acl("#comment\n\n   \n")?.is_empty());
        Ok(())
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("topic\n", 1),
            ("topic a\ntopic readonly a/b\n", 2),
            ("\n\nuser\n", 3),
            ("topic a/#/b\n", 1),
            ("pattern read a+\n", 1),
            ("publish a\n", 1),
        ];
        for (text, line) in cases {
            match parse_acl(text) {
                Err(AclFileError::Line { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn any_bytes_never_panic() {
        for text in [
            "\u{0}",
            "topic \u{feff}",
            "pattern %",
            "user \ttab",
            "topic deny",
        ] {
            let _ = parse_acl(text);
        }
    }
}
