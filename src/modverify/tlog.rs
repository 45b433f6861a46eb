//! The checksum database's log (golang.org/x/mod/sumdb/tlog): its signed
//! tree head, and the proof that a record is in the tree, from the log's
//! tiles.
//!
//! The log is an RFC 6962 Merkle tree: a record's leaf is
//! SHA-256(0x00 || record), a node SHA-256(0x01 || left || right). Its
//! hashes are served in tiles of height 8: the tile at level L and index t
//! lists the hashes at tree level 8·L from position 256·t on, as many as
//! the tree has complete (a full tile 256, the right edge's fewer, named
//! `.p/<width>`).
//!
//! The proof recomputes the signed tree's root with the record's own hash
//! in its leaf, taking every other subtree's hash from the tiles. A root
//! equal to the signed one shows the record is that leaf of that tree: a
//! wrong tile or a changed record gives another root. Tiles need no trust
//! of their own, so they may come from anywhere.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::Error;

type Hash = [u8; 32];

/// The tile height every checksum database the go command talks to uses.
const HEIGHT: u32 = 8;
const TILE_WIDTH: u64 = 1 << HEIGHT;

/// A signed tree head: the log's size and root hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tree {
    pub size: u64,
    root: Hash,
}

impl Tree {
    /// Parses a tree note's text (`go.sum database tree\n<size>\n<root>\n`,
    /// maybe with more lines, which Go ignores).
    pub fn parse(text: &[u8]) -> Result<Tree, Error> {
        let bad = || Error::Lookup("the signed note is not a tree head".into());
        let text = std::str::from_utf8(text).map_err(|_| bad())?;
        let rest = text
            .strip_prefix("go.sum database tree\n")
            .ok_or_else(bad)?;
        let mut lines = rest.splitn(3, '\n');
        let (size, root) = match (lines.next(), lines.next(), lines.next()) {
            (Some(s), Some(r), Some(_)) => (s, r),
            _ => return Err(bad()),
        };
        let size = match size.parse::<u64>() {
            Ok(n) if n.to_string() == size => n,
            _ => return Err(bad()),
        };
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(bad)?;
        Ok(Tree { size, root })
    }
}

/// One tile of the log, as a tree of [`Tree::size`] has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub level: u32,
    pub index: u64,
    /// Hashes the tile lists: 256, or fewer at the tree's right edge.
    pub width: u64,
}

impl Tile {
    /// The tile's path under `<db>/` (`tile/8/<level>/<index>[.p/<width>]`),
    /// the index in groups of three digits, all but the last with an `x`.
    pub fn path(&self) -> String {
        let mut n = self.index;
        let mut digits = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            digits = format!("x{:03}/{digits}", n % 1000);
        }
        let partial = if self.width < TILE_WIDTH {
            format!(".p/{}", self.width)
        } else {
            String::new()
        };
        format!("tile/{HEIGHT}/{}/{digits}{partial}", self.level)
    }

    /// The full tile that this partial one is the start of: a log serves
    /// it instead once the tree has grown past it.
    pub fn full(&self) -> Tile {
        Tile {
            width: TILE_WIDTH,
            ..*self
        }
    }
}

/// The tiles [`prove`] reads for record `id` in `tree`.
pub fn tiles_needed(id: u64, tree: &Tree) -> Result<Vec<Tile>, Error> {
    check_id(id, tree)?;
    let mut tiles = Vec::new();
    root(tree.size, id, [0; 32], &mut |tile, _| {
        if !tiles.contains(&tile) {
            tiles.push(tile);
        }
        Ok([0; 32])
    })?;
    tiles.sort();
    Ok(tiles)
}

/// Proves that `record` (the record text of a lookup, its final newline
/// included) is record `id` of the signed `tree`, from the tiles
/// [`tiles_needed`] named. A tile's data may be the full tile's.
pub fn prove(
    id: u64,
    record: &[u8],
    tree: &Tree,
    tiles: &HashMap<Tile, Vec<u8>>,
) -> Result<(), Error> {
    check_id(id, tree)?;
    let leaf = record_hash(record);
    let got = root(tree.size, id, leaf, &mut |tile, entry| {
        let data = tiles
            .get(&tile)
            .ok_or_else(|| Error::Proof(format!("tile {} was not given", tile.path())))?;
        let at = entry as usize * 32;
        data.get(at..at + 32)
            .map(|h| h.try_into().expect("32 bytes"))
            .ok_or_else(|| Error::Proof(format!("tile {} is too short", tile.path())))
    })?;
    if got != tree.root {
        return Err(Error::Proof(format!(
            "record {id} and the tiles give the root {}, not the signed tree's {}",
            STANDARD.encode(got),
            STANDARD.encode(tree.root)
        )));
    }
    Ok(())
}

fn check_id(id: u64, tree: &Tree) -> Result<(), Error> {
    if id >= tree.size {
        return Err(Error::Proof(format!(
            "record {id} is not in the signed tree of {} records",
            tree.size
        )));
    }
    Ok(())
}

fn record_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A stored hash of the tree, by the tile holding it and its entry there.
type Stored<'a> = dyn FnMut(Tile, u64) -> Result<Hash, Error> + 'a;

/// The root of a tree of `size` leaves, with `leaf` as leaf `id`'s hash.
fn root(size: u64, id: u64, leaf: Hash, stored: &mut Stored) -> Result<Hash, Error> {
    root_in(0, size, size, id, leaf, stored)
}

/// The RFC 6962 hash of leaves `lo..hi` of a tree of `size` leaves.
fn root_in(
    lo: u64,
    hi: u64,
    size: u64,
    id: u64,
    leaf: Hash,
    stored: &mut Stored,
) -> Result<Hash, Error> {
    let n = hi - lo;
    let holds_id = lo <= id && id < hi;
    if n == 1 && holds_id {
        return Ok(leaf);
    }
    if n.is_power_of_two() && !holds_id {
        return complete(n.trailing_zeros(), lo >> n.trailing_zeros(), size, stored);
    }
    // The largest power of two below n: RFC 6962's split.
    let k = 1u64 << (63 - (n - 1).leading_zeros());
    let left = root_in(lo, lo + k, size, id, leaf, stored)?;
    let right = root_in(lo + k, hi, size, id, leaf, stored)?;
    Ok(node_hash(&left, &right))
}

/// The hash of the complete subtree at tree level `level`, position `pos`:
/// stored in a tile at each eighth level, hashed up from one in between.
fn complete(level: u32, pos: u64, size: u64, stored: &mut Stored) -> Result<Hash, Error> {
    if level.is_multiple_of(HEIGHT) {
        let tile_level = level / HEIGHT;
        let index = pos / TILE_WIDTH;
        let at_level = size >> level;
        let width = (at_level - index * TILE_WIDTH).min(TILE_WIDTH);
        let tile = Tile {
            level: tile_level,
            index,
            width,
        };
        return stored(tile, pos % TILE_WIDTH);
    }
    let left = complete(level - 1, pos * 2, size, stored)?;
    let right = complete(level - 1, pos * 2 + 1, size, stored)?;
    Ok(node_hash(&left, &right))
}
