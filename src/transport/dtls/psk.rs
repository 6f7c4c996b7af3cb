//! Pre-shared keys for DTLS devices, in mosquitto's `psk_file` format: one
//! `identity:hexkey` per line, `#` comments and blank lines ignored. The
//! keys live in a [`PskKeys`] shared by every DTLS listener and swapped
//! whole on SIGHUP, so a handshake sees either the old file or the new one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Longest identity accepted (RFC 4279 allows 2^16 - 1 bytes; devices use
/// short names, and the identity becomes a client id).
pub const MAX_IDENTITY_BYTES: usize = 128;
/// Longest key accepted, in bytes (RFC 4279: 64 octets should be enough).
pub const MAX_KEY_BYTES: usize = 64;

/// Why a psk file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PskFileError {
    /// The file could not be read.
    #[error("cannot read psk file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not `identity:hexkey`.
    #[error("{path}:{line}: {why}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

/// Identity → key, as one file gave them.
pub type KeyMap = HashMap<Vec<u8>, Vec<u8>>;

/// Parses the text of a psk file (`path` only names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<KeyMap, PskFileError> {
    let mut keys = KeyMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| PskFileError::Line {
            path: path.to_owned(),
            line: i + 1,
            why: why.to_owned(),
        };
        let (identity, hex) = line
            .rsplit_once(':')
            .ok_or_else(|| bad("expected identity:hexkey"))?;
        if identity.is_empty() || identity.len() > MAX_IDENTITY_BYTES {
            return Err(bad("the identity must be 1 to 128 bytes"));
        }
        let key = decode_hex(hex)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES)
            .ok_or_else(|| bad("the key must be 1 to 64 bytes in hex"))?;
        if keys.insert(identity.as_bytes().to_vec(), key).is_some() {
            return Err(bad("the identity is listed twice"));
        }
    }
    Ok(keys)
}

/// Reads and parses a psk file.
pub fn load(path: &Path) -> Result<KeyMap, PskFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PskFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Hex (either case, even length) to bytes.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The keys in force, shared by the listeners and replaced on reload.
#[derive(Debug, Clone, Default)]
pub struct PskKeys(Arc<RwLock<Arc<KeyMap>>>);

impl PskKeys {
    /// Keys from a parsed file.
    pub fn new(keys: KeyMap) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(keys))))
    }

    /// Puts `keys` in force for every handshake from now on.
    pub fn replace(&self, keys: KeyMap) {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        *slot = Arc::new(keys);
    }

    /// The key of `identity`, if the file lists it.
    pub fn get(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        map.get(identity).cloned()
    }

    /// How many identities are listed.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no identity is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mosquitto_psk_file_lines() {
        let keys = parse(
            "# devices\n\ndev1:00112233445566778899AABBCCDDEEFF\n  dev:2:abcd\n",
            Path::new("psk"),
        )
        .expect("valid");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[b"dev1".as_slice()].len(), 16);
        // The key follows the last colon: identities may hold colons.
        assert_eq!(keys[b"dev:2".as_slice()], vec![0xab, 0xcd]);
    }

    #[test]
    fn refuses_bad_lines_with_their_number() {
        for (text, line) in [
            ("dev1\n", 1),
            ("ok:00\ndev1:0g\n", 2),
            ("dev1:abc\n", 1),
            (":00\n", 1),
            ("dev1:\n", 1),
            ("a:00\na:01\n", 2),
        ] {
            match parse(text, Path::new("psk")) {
                Err(PskFileError::Line { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn replace_swaps_every_key_at_once() {
        let keys = PskKeys::new(parse("a:00\n", Path::new("p")).expect("valid"));
        assert_eq!(keys.get(b"a"), Some(vec![0]));
        keys.replace(parse("b:01\n", Path::new("p")).expect("valid"));
        assert_eq!(keys.get(b"a"), None);
        assert_eq!(keys.get(b"b"), Some(vec![1]));
    }
}
