//! Packs: the entries of a scope's manifest in one object, so that a
//! prefetch is one long GET instead of a request per entry.
//!
//! One object per scope, `[PREFIX/]gocacher/v1/packs/<hash>`, `<hash>` as
//! for the scope's manifest. Layout:
//!
//! ```text
//! "gocacher-pack 2\n"
//! count  u32 LE
//! count table records of 89 bytes:
//!   action [32]  output [32]  size u64 LE  put_time i64 LE (ns)
//!   stored u64 LE  encoding u8 (0: raw, 1: one zstd frame)
//! sha256 [32] of count and the table
//! signature [64]: the writer's ed25519 signature of the scope's hash (the
//!   first 16 bytes of sha256(scope name), as in the key) and that sha256
//!   (zeros from a writer without --sign-key)
//! the bodies, in table order, `stored` bytes each
//! ```
//!
//! The table comes first so a reader knows what the pack holds before the
//! bodies arrive, and is checksummed, so a damaged table is refused whole.
//! Its signature binds every entry's action, output and size at once, and
//! the scope whose pack it is, so a signed pack copied under another scope's
//! key is untrusted there: a reader with `--trust-key` checks it once per
//! pack, then each body against its output ID as usual.
//! Each body is verified like any download: its size and its sha256 against
//! the output ID, before it becomes visible in the local mirror.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::manifest;
use crate::wire::Id;

const MAGIC: &[u8] = b"gocacher-pack 2\n";
const SIG_LEN: usize = crate::trust::SIG_LEN;
const RECORD: usize = 32 + 32 + 8 + 8 + 8 + 1;

/// Largest entry put in a pack; bigger ones (test binaries, say) are
/// downloaded on their own, concurrently with the pack.
pub const MAX_ENTRY_BYTES: u64 = 32 << 20;

/// Most entry bytes in one pack (before compression).
pub const MAX_PACK_BYTES: u64 = 2 << 30;

/// zstd level of pack bodies, as for single objects.
const LEVEL: i32 = super::format::ZSTD_LEVEL;

/// One entry of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub action: Id,
    pub output: Id,
    pub size: u64,
    pub put_time_nanos: i64,
}

/// A table record: the entry and how its body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    pub item: Item,
    pub stored: u64,
    pub zstd: bool,
}

/// Why reading a pack stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes did not arrive (network, timeout, stop).
    Source(io::Error),
    /// The bytes are not a valid pack.
    Corrupt(String),
    /// A valid pack that no `--trust-key` signed.
    Untrusted,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Source(e) => write!(f, "{e}"),
            ReadError::Corrupt(why) => f.write_str(why),
            ReadError::Untrusted => f.write_str("not signed by a trusted key"),
        }
    }
}

/// The object key of a scope's pack under `prefix`.
pub fn key(prefix: &str, scope: &str) -> String {
    manifest::scoped_key(prefix, "packs", scope)
}

fn read_exact(src: &mut impl Read, buf: &mut [u8]) -> Result<(), ReadError> {
    src.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Corrupt("truncated".into()),
        _ => ReadError::Source(e),
    })
}

/// How many bytes a pack's header and table take, from its first bytes
/// (`None`: fewer than the header's 20, not a pack, or a count over
/// [`manifest::MAX_ENTRIES`]). A reader that fetches a pack in ranges learns
/// here how much to ask for before the bodies.
pub fn table_len(head: &[u8]) -> Option<u64> {
    let count = head.get(MAGIC.len()..MAGIC.len() + 4)?;
    if &head[..MAGIC.len()] != MAGIC {
        return None;
    }
    let n = u32::from_le_bytes(count.try_into().ok()?) as u64;
    if n > manifest::MAX_ENTRIES as u64 {
        return None;
    }
    Some(MAGIC.len() as u64 + 4 + n * RECORD as u64 + 32 + SIG_LEN as u64)
}

/// Reads a pack's header and table; with `trust`, only a table one of its
/// keys signed as the pack of `scope`.
pub fn read_table(
    src: &mut impl Read,
    trust: Option<&crate::trust::Trust>,
    scope: &str,
) -> Result<Vec<Packed>, ReadError> {
    let mut magic = [0u8; MAGIC.len()];
    read_exact(src, &mut magic)?;
    if magic != MAGIC {
        return Err(ReadError::Corrupt(
            "not a gocacher pack (wrong header)".into(),
        ));
    }
    let mut count = [0u8; 4];
    read_exact(src, &mut count)?;
    let n = u32::from_le_bytes(count) as usize;
    if n > manifest::MAX_ENTRIES {
        return Err(ReadError::Corrupt(format!("{n} entries announced")));
    }
    let mut table = vec![0u8; n * RECORD];
    read_exact(src, &mut table)?;
    let mut sum = [0u8; 32];
    read_exact(src, &mut sum)?;
    let actual: [u8; 32] = Sha256::new()
        .chain_update(count)
        .chain_update(&table)
        .finalize()
        .into();
    if actual != sum {
        return Err(ReadError::Corrupt("table checksum mismatch".into()));
    }
    let mut sig = [0u8; SIG_LEN];
    read_exact(src, &mut sig)?;
    if trust.is_some_and(|t| !t.pack(&manifest::scope_hash(scope), &actual, &sig)) {
        return Err(ReadError::Untrusted);
    }
    let mut out = Vec::with_capacity(n);
    let mut total = 0u64;
    for r in table.chunks_exact(RECORD) {
        let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap());
        let item = Item {
            action: Id(r[0..32].try_into().unwrap()),
            output: Id(r[32..64].try_into().unwrap()),
            size: u64_at(64),
            put_time_nanos: u64_at(72) as i64,
        };
        let stored = u64_at(80);
        let zstd = match r[88] {
            0 => false,
            1 => true,
            e => return Err(ReadError::Corrupt(format!("unknown encoding {e}"))),
        };
        total = total.saturating_add(item.size);
        let fits = if zstd {
            stored <= max_frame(item.size)
        } else {
            stored == item.size
        };
        if item.size > MAX_ENTRY_BYTES || total > MAX_PACK_BYTES || !fits {
            return Err(ReadError::Corrupt(format!(
                "an entry claims {} bytes stored as {stored}",
                item.size
            )));
        }
        out.push(Packed { item, stored, zstd });
    }
    Ok(out)
}

/// The largest zstd frame a body of `size` bytes compresses to (zstd's own
/// bound, rounded up).
fn max_frame(size: u64) -> u64 {
    size.saturating_add(size / 128).saturating_add(1024)
}

/// Passes over the next body.
pub fn skip(src: &mut impl Read, s: &Packed) -> Result<(), ReadError> {
    let n =
        io::copy(&mut src.by_ref().take(s.stored), &mut io::sink()).map_err(ReadError::Source)?;
    if n != s.stored {
        return Err(ReadError::Corrupt("truncated".into()));
    }
    Ok(())
}

/// Reads the next body, as stored, into `frame`.
pub fn read_body(src: &mut impl Read, s: &Packed, frame: &mut Vec<u8>) -> Result<(), ReadError> {
    frame.resize(s.stored as usize, 0);
    read_exact(src, frame)
}

/// Decodes bodies, reusing its buffer.
pub struct Decoder {
    dctx: zstd::bulk::Decompressor<'static>,
    out: Vec<u8>,
}

/// A buffer over this is dropped after use rather than kept for the next
/// body: most entries are small, and a large one should not pin its size.
pub const KEEP_BUFFER: usize = 1 << 20;

impl Decoder {
    pub fn new() -> io::Result<Decoder> {
        Ok(Decoder {
            dctx: zstd::bulk::Decompressor::new()?,
            out: Vec::new(),
        })
    }

    /// A body's bytes, from its stored form. Their sha256 is the caller's
    /// to check (the disk tier does, as it writes).
    pub fn decode<'a>(&'a mut self, s: &Packed, frame: &'a [u8]) -> Result<&'a [u8], String> {
        if !s.zstd {
            return Ok(frame);
        }
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        }
        self.out.clear();
        self.out.reserve(s.item.size as usize);
        let n = self
            .dctx
            .decompress_to_buffer(frame, &mut self.out)
            .map_err(|e| format!("zstd: {e}"))?;
        if n as u64 != s.item.size {
            return Err(format!("decodes to {n} bytes, not {}", s.item.size));
        }
        Ok(&self.out)
    }
}

/// Writes an entry's body in its stored form, if it has it: its stored
/// length and whether it is zstd (see [`write`]).
pub type StoredBody<'a> = dyn Fn(&Item, &mut dyn Write) -> io::Result<Option<(u64, bool)>> + 'a;

/// Writes a pack of `items` (each with the path of its output file) to
/// `out`, signed as the pack of `scope`; returns its length. Fails if a file is gone or changed size.
/// `stored` may write an entry's body already in stored form (see
/// [`super::spool`]), giving its length and whether it is zstd, or `None`
/// to have it compressed here.
pub fn write(
    out: &mut File,
    items: &[(Item, PathBuf)],
    stored: &StoredBody,
    signer: Option<&crate::trust::Signer>,
    scope: &str,
) -> io::Result<u64> {
    let head = MAGIC.len() + 4 + items.len() * RECORD + 32 + SIG_LEN;
    out.seek(SeekFrom::Start(head as u64))?;
    let mut table = Vec::with_capacity(items.len() * RECORD);
    let mut cctx = zstd::bulk::Compressor::new(LEVEL)?;
    let (mut raw, mut packed) = (Vec::new(), Vec::new());
    let body_bytes;
    {
        let mut w = Counting {
            inner: BufWriter::with_capacity(256 << 10, &mut *out),
            n: 0,
        };
        for (item, path) in items {
            let changed =
                || io::Error::other(format!("{} changed size while packing", path.display()));
            let before = w.n;
            let zstd = if let Some((_, zstd)) = stored(item, &mut w)? {
                zstd
            } else if item.size > STREAM_OVER {
                // Large bodies stream through the encoder: memory stays at
                // its window, whatever their size. Always zstd (at worst a
                // few bytes per 128 KiB block over raw).
                let mut enc = zstd::stream::write::Encoder::new(&mut w, LEVEL)?;
                enc.set_pledged_src_size(Some(item.size))?;
                enc.include_contentsize(true)?;
                let copied = io::copy(&mut File::open(path)?, &mut enc)?;
                enc.finish()?;
                if copied != item.size {
                    return Err(changed());
                }
                true
            } else {
                raw.clear();
                File::open(path)?.read_to_end(&mut raw)?;
                if raw.len() as u64 != item.size {
                    return Err(changed());
                }
                packed.clear();
                packed.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                cctx.compress_to_buffer(&raw[..], &mut packed)?;
                let zstd = packed.len() < raw.len();
                w.write_all(if zstd { &packed } else { &raw })?;
                zstd
            };
            let stored = w.n - before;
            table.extend_from_slice(&item.action.0);
            table.extend_from_slice(&item.output.0);
            table.extend_from_slice(&item.size.to_le_bytes());
            table.extend_from_slice(&item.put_time_nanos.to_le_bytes());
            table.extend_from_slice(&stored.to_le_bytes());
            table.push(zstd as u8);
        }
        w.flush()?;
        body_bytes = w.n;
    }
    let count = (items.len() as u32).to_le_bytes();
    let sum: [u8; 32] = Sha256::new()
        .chain_update(count)
        .chain_update(&table)
        .finalize()
        .into();
    let sig = signer.map_or([0u8; SIG_LEN], |s| {
        s.sign_pack(&manifest::scope_hash(scope), &sum)
    });
    out.seek(SeekFrom::Start(0))?;
    let mut w = BufWriter::new(&mut *out);
    w.write_all(MAGIC)?;
    w.write_all(&count)?;
    w.write_all(&table)?;
    w.write_all(&sum)?;
    w.write_all(&sig)?;
    w.flush()?;
    Ok(head as u64 + body_bytes)
}

/// Bodies over this are compressed and decompressed as streams rather than
/// in one buffer, so memory stays small whatever an entry's size.
pub const STREAM_OVER: u64 = 1 << 20;

/// A writer that counts what goes through it.
struct Counting<W: Write> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a new pack is worth writing for `wanted` (the entries a pack
/// would now hold) given the `current` one's table: when there is none, when
/// it lacks over a tenth of what is wanted, or when over a fifth of it is no
/// longer wanted, counting entries and bytes each (an entry costs a request
/// when it is lacking and two file creations when it is dead weight, so
/// small entries count as much as large ones).
pub fn stale(current: Option<&[Packed]>, wanted: &[Item]) -> bool {
    if wanted.is_empty() {
        return false;
    }
    let Some(current) = current else {
        return true;
    };
    let have: HashSet<(Id, Id)> = current
        .iter()
        .map(|s| (s.item.action, s.item.output))
        .collect();
    let want: HashMap<Id, Id> = wanted.iter().map(|i| (i.action, i.output)).collect();
    let tally = |items: &mut dyn Iterator<Item = &Item>| {
        items.fold((0u64, 0u64), |(n, b), i| (n + 1, b + i.size))
    };
    let over = |part: (u64, u64), whole: (u64, u64), tenths: u64| {
        part.0 * 10 > whole.0 * tenths || part.1 * 10 > whole.1 * tenths
    };
    let lacking = tally(
        &mut wanted
            .iter()
            .filter(|i| !have.contains(&(i.action, i.output))),
    );
    let dead = tally(
        &mut current
            .iter()
            .map(|s| &s.item)
            .filter(|i| want.get(&i.action) != Some(&i.output)),
    );
    let current_total = tally(&mut current.iter().map(|s| &s.item));
    over(lacking, tally(&mut wanted.iter()), 1) || over(dead, current_total, 2)
}

#[cfg(test)]
mod tests;
