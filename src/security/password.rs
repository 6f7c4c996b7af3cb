//! Password hashes for the embedded broker's `[[broker.users]]`: made by
//! `sngate passwd`, checked when the configuration is validated, verified
//! by the broker at every CONNECT with a user name.
//!
//! Passwords are stored as PBKDF2-HMAC-SHA256 hashes in the PHC string
//! format that RustCrypto's `pbkdf2` crate also writes and reads,
//! `$pbkdf2-sha256$i=<iterations>,l=<length>$<salt>$<hash>` (salt and hash in
//! unpadded standard base64), so the config never holds a password. The
//! arithmetic is ring's (already built as rustls's crypto provider), whose
//! `verify` compares in constant time.
//!
//! It lives here, beside the ACL file, rather than in the broker: both the
//! configuration (which checks a hash parses) and the broker (which checks
//! a password against it) depend on it, and it depends on neither.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use ring::rand::SecureRandom;

/// PBKDF2 iterations `sngate passwd` uses unless told otherwise.
pub const DEFAULT_ITERATIONS: u32 = 10_000;

/// Most iterations a hash may ask for: a typo in the config must not make
/// every CONNECT cost seconds.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Salt bytes in new hashes (16, as the PHC recommendation).
const SALT_LEN: usize = 16;

/// Hash bytes in new hashes (SHA-256's output).
const HASH_LEN: usize = 32;

const ALG: &str = "pbkdf2-sha256";

/// Why a password hash string is not one we can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not `$pbkdf2-sha256$i=N,l=N$salt$hash`.
    #[error("not a $pbkdf2-sha256$i=N,l=N$salt$hash string (make one with `sngate passwd`)")]
    Format,
    /// The algorithm is not PBKDF2-HMAC-SHA256.
    #[error("unsupported algorithm {0:?}: only pbkdf2-sha256")]
    Algorithm(String),
    /// The iteration count is 0, above [`MAX_ITERATIONS`], or not a number.
    #[error("iterations must be 1..={MAX_ITERATIONS}")]
    Iterations,
    /// Salt or hash is not unpadded base64, or has an unreasonable length.
    #[error("salt or hash is not valid base64 of a sensible length")]
    Encoding,
    /// The declared length `l` does not match the hash.
    #[error("the declared length does not match the hash")]
    Length,
    /// The system's random source failed while making a salt.
    #[error("no randomness for a salt")]
    Random,
}

/// A parsed password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret, but nobody needs it in a log either.
        f.debug_struct("PasswordHash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<PasswordHash, HashError> {
        let iterations = checked_iterations(iterations)?;
        let mut salt = vec![0u8; SALT_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| HashError::Random)?;
        let mut hash = vec![0u8; HASH_LEN];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password,
            &mut hash,
        );
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    /// True if `password` is the one hashed (constant-time comparison).
    pub fn verify(&self, password: &[u8]) -> bool {
        ring::pbkdf2::verify(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            self.iterations,
            &self.salt,
            password,
            &self.hash,
        )
        .is_ok()
    }

    /// Its iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }
}

fn checked_iterations(i: u32) -> Result<NonZeroU32, HashError> {
    NonZeroU32::new(i)
        .filter(|i| i.get() <= MAX_ITERATIONS)
        .ok_or(HashError::Iterations)
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "${ALG}$i={},l={}${}${}",
            self.iterations,
            self.hash.len(),
            b64_encode(&self.salt),
            b64_encode(&self.hash)
        )
    }
}

impl FromStr for PasswordHash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, HashError> {
        let mut fields = s.split('$');
        if fields.next() != Some("") {
            return Err(HashError::Format);
        }
        let (Some(alg), Some(params), Some(salt), Some(hash), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(HashError::Format);
        };
        if alg != ALG {
            return Err(HashError::Algorithm(alg.to_owned()));
        }
        let mut iterations = None;
        let mut length = None;
        for param in params.split(',') {
            let (key, value) = param.split_once('=').ok_or(HashError::Format)?;
            let value: Option<u32> = value.parse().ok();
            match key {
                "i" => iterations = Some(value.ok_or(HashError::Iterations)?),
                "l" => length = Some(value.ok_or(HashError::Length)?),
                _ => return Err(HashError::Format),
            }
        }
        let iterations = checked_iterations(iterations.ok_or(HashError::Iterations)?)?;
        let salt = b64_decode(salt).ok_or(HashError::Encoding)?;
        let hash = b64_decode(hash).ok_or(HashError::Encoding)?;
        // PHC: salts of 8..=48 bytes; outputs of 10..=64 bytes.
        if !(8..=48).contains(&salt.len()) || !(10..=64).contains(&hash.len()) {
            return Err(HashError::Encoding);
        }
        if length.is_some_and(|l| usize::try_from(l).ok() != Some(hash.len())) {
            return Err(HashError::Length);
        }
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 without padding (the PHC string format's "B64").
fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The inverse of [`b64_encode`]; `None` for anything else (padding, other
/// characters, a length of 1 mod 4, stray low bits).
fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = B64.iter().position(|&b| b == c)?;
            n |= (v as u32) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        let len = chunk.len() - 1;
        // Bits below the last whole byte must be zero (canonical form).
        if n & (0x00ff_ffff >> (8 * len)) != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[1..=len]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = PasswordHash::new(b"s3cret", 1000).unwrap();
        assert!(h.verify(b"s3cret"));
        assert!(!h.verify(b"s3cret "));
        assert!(!h.verify(b""));
        // Salted: the same password hashes differently each time.
        let again = PasswordHash::new(b"s3cret", 1000).unwrap();
        assert_ne!(h.to_string(), again.to_string());
        assert!(again.verify(b"s3cret"));
    }

    #[test]
    fn the_string_form_round_trips() {
        let h = PasswordHash::new(b"pw", 1234).unwrap();
        let s = h.to_string();
        assert!(s.starts_with("$pbkdf2-sha256$i=1234,l=32$"), "{s}");
        let back: PasswordHash = s.parse().unwrap();
        assert_eq!(back, h);
        assert!(back.verify(b"pw"));
    }

    #[test]
    fn hashes_made_elsewhere_verify() {
        // Python: hashlib.pbkdf2_hmac("sha256", b"password",
        // b"saltsaltsaltsalt", 4096), base64 without padding — the PHC
        // form RustCrypto's pbkdf2 crate writes.
        let s = "$pbkdf2-sha256$i=4096,l=32$c2FsdHNhbHRzYWx0c2FsdA$\
                 FuNbErQfRlymTQaVeNdQBZd1zK1d861T1rIErLEi0e4";
        let h: PasswordHash = s.parse().unwrap();
        assert!(h.verify(b"password"));
        assert!(!h.verify(b"Password"));
        assert_eq!(h.to_string(), s);
    }

    #[test]
    fn malformed_hashes_are_refused_with_a_reason() {
        let good_salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let good_hash = "FuNbErQfRlymTQaVeNdQBZd1zK1d861T1rIErLEi0e4";
        let cases = [
            (String::new(), HashError::Format),
            ("plaintext".to_owned(), HashError::Format),
            ("$pbkdf2-sha256$i=1$a".to_owned(), HashError::Format),
            (
                format!("$argon2id$i=1${good_salt}${good_hash}"),
                HashError::Algorithm("argon2id".into()),
            ),
            (
                format!("$pbkdf2-sha256$i=0${good_salt}${good_hash}"),
                HashError::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$i=99999999${good_salt}${good_hash}"),
                HashError::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$l=32${good_salt}${good_hash}"),
                HashError::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$i=10,l=31${good_salt}${good_hash}"),
                HashError::Length,
            ),
            (
                format!("$pbkdf2-sha256$i=10,x=1${good_salt}${good_hash}"),
                HashError::Format,
            ),
            (
                format!("$pbkdf2-sha256$i=10${good_salt}=${good_hash}"),
                HashError::Encoding,
            ),
            (
                format!("$pbkdf2-sha256$i=10$c2Fsd${good_hash}"),
                HashError::Encoding,
            ),
            (
                format!("$pbkdf2-sha256$i=10${good_salt}${good_hash}$"),
                HashError::Format,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<PasswordHash>().err(), Some(want), "{s:?}");
        }
    }

    #[test]
    fn base64_matches_rfc_4648_without_padding() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64_encode(raw.as_bytes()), enc);
            assert_eq!(b64_decode(enc).as_deref(), Some(raw.as_bytes()));
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(b64_decode(&b64_encode(&all)), Some(all));
        // Non-canonical trailing bits, bad characters, impossible length.
        assert_eq!(b64_decode("Zh"), None);
        assert_eq!(b64_decode("Zm9v!"), None);
        assert_eq!(b64_decode("Zm9vY"), None);
    }
}
