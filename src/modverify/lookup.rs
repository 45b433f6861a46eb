//! A checksum database's answer to `<db>/lookup/<module>@<version>`:
//! `<record id>\n`, the record's go.sum lines, a blank line, and the signed
//! tree head the record is in.

use std::collections::HashMap;

use super::note::VerifierKey;
use super::tlog::{self, Tile, Tree};
use super::{Error, Expected};

/// The largest lookup answer [`Lookup::parse`] takes: a record is a few
/// lines and a tree note a few more, so callers bound their read with it.
pub const MAX_LOOKUP_BYTES: usize = 64 << 10;

/// A lookup whose tree head is signed by the database's key, its record not
/// yet proven to be in that tree: [`Lookup::prove`] does that and only then
/// gives the hashes.
#[derive(Debug, Clone)]
pub struct Lookup {
    module: String,
    version: String,
    id: u64,
    record: Vec<u8>,
    tree: Tree,
}

impl Lookup {
    /// Parses the lookup of `module@version` (the module path unescaped,
    /// as in go.sum) and checks its tree note's signature under `key`.
    pub fn parse(
        module: &str,
        version: &str,
        body: &[u8],
        key: &VerifierKey,
    ) -> Result<Lookup, Error> {
        let at = format!("{module}@{version}");
        let bad = |why: &str| Error::Lookup(format!("the lookup of {at}: {why}"));
        if body.len() > MAX_LOOKUP_BYTES {
            return Err(bad(&format!("over {MAX_LOOKUP_BYTES} bytes")));
        }
        let nl = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no record id"))?;
        let id = std::str::from_utf8(&body[..nl])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("the first line is not a record id"))?;
        let rest = &body[nl + 1..];
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(|| bad("no blank line after the record"))?;
        let (record, note) = (&rest[..end + 1], &rest[end + 2..]);
        let text = std::str::from_utf8(record).map_err(|_| bad("the record is not UTF-8"))?;
        if text.chars().any(|c| c < ' ' && c != '\n') {
            return Err(bad("the record has a control character"));
        }
        let signed = key
            .open(note)
            .map_err(|e| Error::Signature(format!("the lookup of {at}: {e}")))?;
        let tree = Tree::parse(signed)?;
        if id >= tree.size {
            return Err(bad(&format!(
                "record {id} is not in the signed tree of {} records",
                tree.size
            )));
        }
        let lookup = Lookup {
            module: module.to_owned(),
            version: version.to_owned(),
            id,
            record: record.to_owned(),
            tree,
        };
        // Refuse now a record that does not name the version asked for.
        lookup.hashes()?;
        Ok(lookup)
    }

    /// The record's number in the log.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The signed tree head.
    pub fn tree(&self) -> Tree {
        self.tree
    }

    /// The tiles [`Lookup::prove`] needs, to fetch from `<db>/<path>`
    /// (falling back to [`Tile::full`] when a partial tile is gone).
    pub fn tiles_needed(&self) -> Vec<Tile> {
        tlog::tiles_needed(self.id, &self.tree).expect("parse checked the id")
    }

    /// The hashes, once the record is proven to be in the signed tree by
    /// `tiles` (each tile [`Lookup::tiles_needed`] names, with its data).
    pub fn prove(&self, tiles: &HashMap<Tile, Vec<u8>>) -> Result<Expected, Error> {
        tlog::prove(self.id, &self.record, &self.tree, tiles).map_err(|e| {
            Error::Proof(format!(
                "the lookup of {}@{}: {e}",
                self.module, self.version
            ))
        })?;
        self.hashes()
    }

    fn hashes(&self) -> Result<Expected, Error> {
        let text = std::str::from_utf8(&self.record).expect("parse checked UTF-8");
        let mut expected = Expected {
            module: self.module.clone(),
            version: self.version.clone(),
            zip: None,
            mod_: None,
        };
        let zip_prefix = format!("{} {} ", self.module, self.version);
        let mod_prefix = format!("{} {}/go.mod ", self.module, self.version);
        for line in text.lines() {
            let (slot, hash) = if let Some(h) = line.strip_prefix(&mod_prefix) {
                (&mut expected.mod_, h)
            } else if let Some(h) = line.strip_prefix(&zip_prefix) {
                (&mut expected.zip, h)
            } else {
                continue;
            };
            if !hash.starts_with("h1:") {
                continue;
            }
            if slot.as_deref().is_some_and(|h| h != hash) {
                return Err(Error::Lookup(format!(
                    "the lookup of {}@{} has two h1 hashes for one file",
                    self.module, self.version
                )));
            }
            *slot = Some(hash.to_owned());
        }
        if expected.zip.is_none() && expected.mod_.is_none() {
            return Err(Error::Lookup(format!(
                "the lookup's record has no h1 line for {}@{}",
                self.module, self.version
            )));
        }
        Ok(expected)
    }
}
