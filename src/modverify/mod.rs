//! Module downloads checked against the Go checksum database, before the
//! module proxy keeps them.
//!
//! The go command trusts a module's `.zip` and `.mod` only when their
//! `h1:` hashes match go.sum or the checksum database. A proxy that keeps
//! what upstream sent, and serves it for years, checks the same before it
//! keeps anything, so a changed or truncated download never reaches the
//! bucket.
//!
//! The steps, for `module@version`:
//!
//! 1. Fetch `<db>/lookup/<module>@<version>` and [`Lookup::parse`] it with
//!    the database's [`VerifierKey`] (`GOSUMDB`'s key; [`go_env_key`]
//!    reads it): the tree head's Ed25519 signature is checked there.
//! 2. Fetch the tiles [`Lookup::tiles_needed`] names and call
//!    [`Lookup::prove`]: it recomputes the signed tree's root from the
//!    record and the tiles, so the record's hashes are the ones the
//!    database committed to, and returns them as [`Expected`]. A signature
//!    alone would prove nothing about the record, which sits outside the
//!    signed text.
//! 3. Hash the download ([`zip_h1`], [`zip_h1_file`], [`mod_h1`]) and
//!    [`Expected::check`] it.
//!
//! Not done here: the go command also checks that each tree head it sees
//! extends the ones it saw before (that the database shows everyone one
//! log). That needs state kept across lookups; every go command that
//! downloads through the proxy still makes that check itself.

mod hash;
mod lookup;
mod note;
mod tlog;

pub use hash::{files_h1, mod_h1, zip_h1, zip_h1_file, Limits, GO_MAX_ZIP};
pub use lookup::{Lookup, MAX_LOOKUP_BYTES};
pub use note::{go_env_key, known_key, VerifierKey};
pub use tlog::{Tile, Tree};

use std::fmt;

/// Why a download, a lookup or a key was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The download's hash is not the database's: never keep it.
    #[error(
        "{module}@{version}: the {file} hashes to {got}, but the checksum database has {expected}"
    )]
    Mismatch {
        module: String,
        version: String,
        file: File,
        expected: String,
        got: String,
    },
    /// The database has no hash for this file of the version.
    #[error("{module}@{version}: the checksum database has no hash for the {file}")]
    NotInDatabase {
        module: String,
        version: String,
        file: File,
    },
    #[error("{0}")]
    TooLarge(String),
    #[error("not a module zip: {0}")]
    BadZip(String),
    #[error("{0}")]
    Lookup(String),
    #[error("{0}")]
    Signature(String),
    #[error("{0}")]
    Proof(String),
    #[error("{0}")]
    Key(String),
    #[error("reading: {0}")]
    Io(std::io::Error),
}

/// Which of a version's files a hash is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    Zip,
    Mod,
}

impl fmt::Display for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            File::Zip => ".zip",
            File::Mod => ".mod",
        })
    }
}

/// The hashes the checksum database has for one version: the go.sum lines
/// `<module> <version> h1:...` (the zip) and `... /go.mod h1:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub module: String,
    pub version: String,
    pub zip: Option<String>,
    pub mod_: Option<String>,
}

impl Expected {
    /// Whether `got`, the `h1:` of the version's `file`, is the database's.
    pub fn check(&self, file: File, got: &str) -> Result<(), Error> {
        let want = match file {
            File::Zip => &self.zip,
            File::Mod => &self.mod_,
        };
        match want {
            None => Err(Error::NotInDatabase {
                module: self.module.clone(),
                version: self.version.clone(),
                file,
            }),
            Some(w) if w == got => Ok(()),
            Some(w) => Err(Error::Mismatch {
                module: self.module.clone(),
                version: self.version.clone(),
                file,
                expected: w.clone(),
                got: got.to_owned(),
            }),
        }
    }

    /// Hashes the zip at `path` and checks it.
    pub fn check_zip_file(&self, path: &std::path::Path, limits: &Limits) -> Result<(), Error> {
        self.check(File::Zip, &zip_h1_file(path, limits)?)
    }

    /// Hashes a `.mod` file's content and checks it.
    pub fn check_mod(&self, content: &[u8]) -> Result<(), Error> {
        self.check(File::Mod, &mod_h1(content))
    }
}

#[cfg(test)]
mod tests;
