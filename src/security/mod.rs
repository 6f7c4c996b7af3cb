//! Security material read from files: the ACL file in mosquitto's
//! `acl_file` format turned into the engine's [`Acl`] ([`acl_file`]), and the
//! embedded broker's password hashes ([`password`]). The `[security]`
//! section that names the ACL file and the admission rules is
//! configuration's (`crate::config::SecurityConfig`); the decisions
//! themselves are pure and live in `core::acl` and `core::admission`. This
//! module only reads, parses and hashes, and depends on neither the
//! configuration nor the broker, so both can depend on it.

pub mod acl_file;
pub mod password;

use std::path::Path;

use crate::core::acl::Acl;

pub use acl_file::{AclFileError, parse_acl};
pub use password::{HashError, PasswordHash};

/// Reads and parses an ACL file.
pub fn load_acl_file(path: &Path) -> Result<Acl, AclFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| AclFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_acl(&text).map_err(|e| e.in_file(path))
}
