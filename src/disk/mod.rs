//! The local disk tier: the mirror that serves every DiskPath.
//!
//! Layout, like Go's own cache: `<root>/<xx>/<action-hex>-a` holds a one-line
//! action entry and `<root>/<xx>/<output-hex>-d` the output bytes, where `xx`
//! is the first two hex digits of the name. Output files are shared by every
//! action that produced the same bytes and have no extension (golang/go#74451).
//!
//! Every write goes to a temp file in the target's own directory and is then
//! renamed into place, so a reader (this process, or another gocacher serving
//! another go command on the same directory) sees a whole file or none. An
//! existing output file is never rewritten: its bytes are fixed by its name.
//!
//! All methods block; callers run them on a blocking thread.

mod index;
mod overflow;
mod trim;
mod write;

/// Prefix of temp files; trim removes stale ones a crashed writer left.
const TEMP_PREFIX: &str = ".tmp-";

/// The directory of index files under the cache root.
const INDEX_DIR: &str = "ix";

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::local::{Entry, Indexed, PutError, Sink};
use crate::wire::Id;

pub use overflow::{has_room, Overflow};
pub use trim::{
    last_used, trim_roots, trim_roots_with, TrimPolicy, TrimReport, MIN_AGE as TRIM_MIN_AGE,
};
use write::{into_io, io_err, temp_beside, temp_builder, write_whole};
pub use write::{write_file, Scratch};

/// How stale an entry's mtime may get before a hit refreshes it. Go uses an
/// hour too: frequent enough for day-scale trimming, rare enough that hits
/// almost never write.
const MTIME_REFRESH: Duration = Duration::from_secs(3600);

/// First token of an action entry line; bump it if the format changes, and old
/// entries read as misses.
const ENTRY_VERSION: &str = "gocacher1";

pub struct DiskCache {
    root: PathBuf,
    /// Action entries from index files (see [`index`]).
    index: index::Lazy,
    /// Why the directory could not be written when it was opened (read-only,
    /// full): hits are still served, puts fail.
    unwritable: Option<io::Error>,
    /// The directory held no entries when it was opened (see
    /// [`DiskCache::was_empty`]).
    was_empty: bool,
}

impl DiskCache {
    /// Opens (creating if needed) a cache rooted at `root`, which is made
    /// absolute so every DiskPath is. A directory that exists but cannot be
    /// written (mounted read-only, full) opens all the same: it can still
    /// serve hits. [`DiskCache::unwritable`] says why writes will fail.
    pub fn open(root: &Path) -> io::Result<DiskCache> {
        fs::create_dir_all(root)?;
        let root = fs::canonicalize(root)?;
        let was_empty = !holds_entries(&root);
        // A probe file, removed when it drops.
        let unwritable = temp_builder()
            .tempfile_in(&root)
            .and_then(|mut f| f.write_all(b"probe"))
            .err();
        let index = index::Lazy::start(&root);
        Ok(DiskCache {
            root,
            index,
            unwritable,
            was_empty,
        })
    }

    /// Whether the directory held no entries when it was opened: no shard
    /// directory and no index. A prefetch then knows this machine is cold
    /// without asking the bucket what it lacks.
    pub fn was_empty(&self) -> bool {
        self.was_empty
    }

    /// Why this directory could not be written when it was opened, if so.
    pub fn unwritable(&self) -> Option<&io::Error> {
        self.unwritable.as_ref()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn action_path(&self, id: &Id) -> PathBuf {
        self.file_path(id, "-a")
    }

    pub fn output_path(&self, id: &Id) -> PathBuf {
        self.file_path(id, "-d")
    }

    fn file_path(&self, id: &Id, suffix: &str) -> PathBuf {
        let hex = id.to_hex();
        let mut p = self.root.join(&hex[..2]);
        p.push(hex + suffix);
        p
    }

    /// Looks up an action. `Ok(None)` is a miss: no entry, an entry in another
    /// format, or an output file that is missing or of the wrong size.
    pub fn get(&self, action: &Id) -> io::Result<Option<Entry>> {
        match self.get_action_file(action)? {
            Some(e) => Ok(Some(e)),
            None => self.get_indexed(action),
        }
    }

    fn get_action_file(&self, action: &Id) -> io::Result<Option<Entry>> {
        let apath = self.action_path(action);
        let mut file = match File::open(&apath) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // One read: entries are ~160 bytes. (read_to_string would add an
        // fstat, an lseek and a second read, and this is the hot path.)
        let mut buf = [0u8; 512];
        let n = file.read(&mut buf)?;
        let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
        let Some((entry_action, output_id, size, put_time_nanos)) = parse_entry(line) else {
            return Ok(None);
        };
        if entry_action != *action {
            return Ok(None);
        }
        let Some(entry) = self.entry_with_output(output_id, size, put_time_nanos)? else {
            return Ok(None);
        };
        let now = SystemTime::now();
        if stale(&file.metadata()?, now) {
            touch(&apath, now);
        }
        Ok(Some(entry))
    }

    /// The entry for an action mapped to `output_id`, if its output file is
    /// there with the right size (a miss otherwise); refreshes the output's
    /// mtime when stale.
    fn entry_with_output(
        &self,
        output_id: Id,
        size: u64,
        put_time_nanos: i64,
    ) -> io::Result<Option<Entry>> {
        let dpath = self.output_path(&output_id);
        let meta = match fs::metadata(&dpath) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.len() != size {
            return Ok(None);
        }
        let now = SystemTime::now();
        if stale(&meta, now) {
            touch(&dpath, now);
        }
        Ok(Some(Entry {
            output_id,
            size,
            put_time_nanos,
            disk_path: dpath,
        }))
    }

    /// Stores an output from a stream of chunks, checking that the bytes hash
    /// to `output_id` and add up to `size` before anything becomes visible.
    /// Returns the output's path.
    pub fn write_output(
        &self,
        output_id: &Id,
        size: u64,
        next: impl FnMut() -> Option<io::Result<Bytes>>,
    ) -> Result<PathBuf, PutError> {
        self.write_output_from(output_id, size, next)
    }

    /// [`DiskCache::write_output`] of bytes already in memory.
    pub fn write_output_bytes(&self, output_id: &Id, data: &[u8]) -> Result<PathBuf, PutError> {
        let mut once = Some(data);
        self.write_output_from(output_id, data.len() as u64, || once.take().map(Ok))
    }

    fn write_output_from<B: AsRef<[u8]>>(
        &self,
        output_id: &Id,
        size: u64,
        mut next: impl FnMut() -> Option<io::Result<B>>,
    ) -> Result<PathBuf, PutError> {
        let dpath = self.output_path(output_id);
        // The output's name is its hash, so a file already there of the right
        // size holds these bytes: leave it alone (someone may be reading it)
        // and only check the body. Go's std build puts the same outputs (the
        // empty one above all) hundreds of times.
        let exists = |p: &Path| matches!(fs::metadata(p), Ok(m) if m.len() == size);
        let mut temp = if exists(&dpath) {
            None
        } else {
            Some(self.temp_file(&dpath)?)
        };
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = next() {
            let chunk = chunk.map_err(PutError::Body)?;
            let chunk = chunk.as_ref();
            hasher.update(chunk);
            written += chunk.len() as u64;
            if written > size {
                // Stop early: a bad object could otherwise fill the disk.
                return Err(PutError::Size {
                    expected: size,
                    actual: written,
                });
            }
            if let Some((guard, file)) = &mut temp {
                file.write_all(chunk).map_err(|e| io_err(guard.path(), e))?;
            }
        }
        if written != size {
            return Err(PutError::Size {
                expected: size,
                actual: written,
            });
        }
        let actual = Id(hasher.finalize().into());
        if actual != *output_id {
            return Err(PutError::Mismatch {
                expected: *output_id,
                actual,
            });
        }
        let Some((mut guard, file)) = temp else {
            // A re-put marks the output used, as Go's cache does: a fresh
            // action entry must not name an output trim is about to remove.
            if let Ok(m) = fs::metadata(&dpath) {
                let now = SystemTime::now();
                if stale(&m, now) {
                    touch(&dpath, now);
                }
            }
            return Ok(dpath);
        };
        drop(file);
        // Another process may have stored it meanwhile; same bytes either way.
        if !exists(&dpath) {
            guard.commit(&dpath)?;
        }
        Ok(dpath)
    }

    /// Records that `action` produced `output_id` (already stored).
    pub fn write_action(
        &self,
        action: &Id,
        output_id: &Id,
        size: u64,
        put_time_nanos: i64,
    ) -> Result<(), PutError> {
        let line = entry_line(action, output_id, size, put_time_nanos);
        write_whole(&self.action_path(action), line.as_bytes())
    }

    /// A new temp file beside `target`, creating the shard directory if needed.
    fn temp_file(&self, target: &Path) -> Result<(Scratch, File), PutError> {
        temp_beside(target)
    }

    /// A scratch file in the same directory as `path` (e.g. a compressed copy
    /// for upload), removed when the returned guard drops.
    pub fn scratch_beside(&self, path: &Path) -> io::Result<(Scratch, File)> {
        self.temp_file(path).map_err(into_io)
    }

    /// Temp files present in the shard directories: none once every writer
    /// has finished, unless a writer crashed (trim removes those later).
    pub fn temp_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?.path();
            if shard.is_dir() {
                for f in fs::read_dir(&shard)? {
                    let f = f?;
                    if f.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                        out.push(f.path());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes old entries according to `policy`. See [`trim`].
    pub fn trim(&self, policy: &TrimPolicy) -> io::Result<Option<TrimReport>> {
        trim::run(&self.root, policy)
    }

    /// Trims now, whatever the daily stamp says (`gocacher trim`).
    pub fn trim_now(&self, policy: &TrimPolicy) -> io::Result<TrimReport> {
        trim::trim_now(&self.root, policy, SystemTime::now())
    }
}

/// Marks a file used. Best effort: a read-only cache dir still serves hits.
fn touch(path: &Path, now: SystemTime) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(now);
    }
}

/// Whether a hit should refresh this file's mtime (for trim).
fn stale(m: &fs::Metadata, now: SystemTime) -> bool {
    m.modified()
        .map(|t| now.duration_since(t).unwrap_or_default() > MTIME_REFRESH)
        .unwrap_or(false)
}

/// An action entry, as an `-a` file or an index line holds it.
fn entry_line(action: &Id, output_id: &Id, size: u64, put_time_nanos: i64) -> String {
    format!(
        "{ENTRY_VERSION} {} {} {size} {put_time_nanos}\n",
        action.to_hex(),
        output_id.to_hex()
    )
}

fn parse_entry(line: &str) -> Option<(Id, Id, u64, i64)> {
    let mut it = line.split_ascii_whitespace();
    if it.next()? != ENTRY_VERSION {
        return None;
    }
    let action = Id::from_hex(it.next()?)?;
    let output = Id::from_hex(it.next()?)?;
    let size = it.next()?.parse().ok()?;
    let time = it.next()?.parse().ok()?;
    Some((action, output, size, time))
}

/// Whether `root` has a shard directory (`00`..`ff`) or an index dir: one
/// `read_dir` pass that stops at the first.
fn holds_entries(root: &Path) -> bool {
    let Ok(dir) = fs::read_dir(root) else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        (name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())) || name == INDEX_DIR
    })
}

/// The disk tier is where the remote tier puts what it verified.
impl Sink for DiskCache {
    fn was_empty(&self) -> bool {
        DiskCache::was_empty(self)
    }

    fn get(&self, action: &Id) -> io::Result<Option<Entry>> {
        DiskCache::get(self, action)
    }

    fn write_output(
        &self,
        output: &Id,
        size: u64,
        next: &mut dyn FnMut() -> Option<io::Result<Bytes>>,
    ) -> Result<PathBuf, PutError> {
        self.write_output_from(output, size, next)
    }

    fn write_output_bytes(&self, output: &Id, data: &[u8]) -> Result<PathBuf, PutError> {
        DiskCache::write_output_bytes(self, output, data)
    }

    fn write_action(
        &self,
        action: &Id,
        output: &Id,
        size: u64,
        put_time_nanos: i64,
    ) -> Result<(), PutError> {
        DiskCache::write_action(self, action, output, size, put_time_nanos)
    }

    fn index(&self, action: Id, entry: Indexed) {
        DiskCache::index(self, action, entry)
    }

    fn write_index(
        &self,
        name: &str,
        entries: &mut dyn Iterator<Item = (Id, Indexed)>,
    ) -> Result<(), PutError> {
        DiskCache::write_index(self, name, entries)
    }

    fn scratch(&self, beside: Option<&Path>) -> io::Result<(tempfile::TempPath, File)> {
        let target = match beside {
            Some(path) => path.to_path_buf(),
            None => self.output_path(&Id([0; 32])),
        };
        let (mut scratch, file) = self.scratch_beside(&target)?;
        Ok((scratch.0.take().expect("a new scratch file"), file))
    }
}

#[cfg(test)]
mod tests;
