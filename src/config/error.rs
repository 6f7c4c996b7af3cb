//! Why a configuration could not be loaded ([`ConfigError`]), and the
//! key-to-line locator that points a validation error at the line of the
//! document that set the key, through the spans toml's parser keeps
//! ([`toml::de::DeTable`]).

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The text is not valid TOML, has a value of the wrong type, or has an
    /// unknown key. `message` is toml's, which names the line and column.
    #[error("{}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and the offending text.
        message: String,
    },
    /// The config parsed but breaks a rule.
    #[error("{}invalid `{key}`: {reason}", Location(.path, *.line))]
    Invalid {
        /// The file (empty when the config did not come from a file).
        path: PathBuf,
        /// The dotted key, e.g. `predefined_topics[1].id`.
        key: String,
        /// 1-based line of the key in the file, when it is there.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

/// Displays `FILE:LINE: ` or `FILE: ` (nothing for an empty path), the prefix
/// of an [`Invalid`](ConfigError::Invalid) message.
struct Location<'a>(&'a Path, Option<usize>);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.as_os_str().is_empty() {
            return Ok(());
        }
        write!(f, "{}", self.0.display())?;
        if let Some(line) = self.1 {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")
    }
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: PathBuf::new(),
            key: key.into(),
            line: None,
            reason: reason.into(),
        }
    }

    /// Attributes an [`Invalid`](ConfigError::Invalid) error to the document
    /// `toml_text` read from `path`: sets the path, and the line of the key
    /// (or of its nearest enclosing table or array element that the document
    /// spells out). Other variants are returned unchanged.
    pub fn locate(self, path: &Path, toml_text: &str) -> Self {
        match self {
            ConfigError::Invalid {
                key, reason, line, ..
            } => {
                let line = line.or_else(|| line_of_key(toml_text, &key));
                ConfigError::Invalid {
                    path: path.to_owned(),
                    key,
                    line,
                    reason,
                }
            }
            other => other,
        }
    }

    /// The dotted key an [`Invalid`](ConfigError::Invalid) error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// One step of a dotted key: a table key or an array index.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into `[Key(a), Key(b), Index(2), Key(c)]`.
fn split_key(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(i) = stripped[..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

/// The 1-based line where `key` (dotted) is written in `toml_text`, or where its
/// nearest enclosing table or array element is, using toml's parser spans.
/// `None` if the document does not parse or does not mention the key at all.
fn line_of_key(toml_text: &str, key: &str) -> Option<usize> {
    let root = DeTable::parse(toml_text).ok()?;
    let mut best: Option<usize> = None;
    let mut table: &DeTable<'_> = root.get_ref();
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for segment in split_key(key) {
        let next = match (segment, value) {
            (Segment::Key(k), None) => table.get_key_value(k).map(|(k, v)| (k.span().start, v)),
            (Segment::Key(k), Some(v)) => match v.get_ref() {
                DeValue::Table(t) => t.get_key_value(k).map(|(k, v)| (k.span().start, v)),
                _ => None,
            },
            (Segment::Index(i), Some(v)) => v.get_ref().get(i).map(|e| (e.span().start, e)),
            (Segment::Index(_), None) => None,
        };
        let Some((offset, v)) = next else { break };
        best = Some(offset);
        value = Some(v);
        if let DeValue::Table(t) = v.get_ref() {
            table = t;
        }
    }
    best.map(|offset| line_at(toml_text, offset))
}

fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_without_document_key_falls_back() {
        let err = ConfigError::invalid("udp.listen", "x").locate(Path::new("f"), "[gateway]\n");
        assert_eq!(err.to_string(), "f: invalid `udp.listen`: x");
        let err = ConfigError::invalid("udp.listen", "x").locate(Path::new("f"), "not toml [");
        assert_eq!(err.to_string(), "f: invalid `udp.listen`: x");
    }

    #[test]
    fn split_key_handles_indices() {
        use Segment::*;
        assert_eq!(
            split_key("upstream.rules[2].qos"),
            vec![Key("upstream"), Key("rules"), Index(2), Key("qos")]
        );
    }
}
