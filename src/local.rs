//! The local cache as the tiers beside it see it: what a hit is
//! ([`Entry`]), why a write fails ([`PutError`]), and [`Sink`], what the
//! remote tier writes the entries it verified into.
//!
//! The disk tier implements [`Sink`]; the remote tier is handed one and
//! never names the disk. So a get flows one way, `cacher` → `remote` →
//! sink, and a store or a local cache can change without the other.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::wire::Id;

/// A stored action: what a get hit returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub output_id: Id,
    pub size: u64,
    pub put_time_nanos: i64,
    pub disk_path: PathBuf,
}

/// An action's entry without its path: what an index holds, and what a
/// pack's table says of each of its entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Indexed {
    pub output_id: Id,
    pub size: u64,
    pub put_time_nanos: i64,
}

/// Why a put failed. The caller reports all of them to cmd/go as `Err`.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("body hashes to {actual:?}, not the OutputID {expected:?}")]
    Mismatch { expected: Id, actual: Id },
    #[error("body has {actual} bytes, expected {expected}")]
    Size { expected: u64, actual: u64 },
    #[error("reading body: {0}")]
    Body(io::Error),
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl PutError {
    /// Whether the disk itself is the problem (full, read-only, gone), as
    /// opposed to a bad request.
    pub fn is_disk(&self) -> bool {
        matches!(self, PutError::Io { .. })
    }
}

/// Where the remote tier puts what it downloaded and verified, and where it
/// looks first. Every method blocks; callers run them on a blocking thread
/// (or accept a file system call on the current one, as a get does).
pub trait Sink: Send + Sync + 'static {
    /// Whether the cache held nothing when it opened: a cold machine, which
    /// a prefetch fills whole without asking what it lacks.
    fn was_empty(&self) -> bool;

    /// The entry for `action`, if the cache has it (`Ok(None)`: a miss).
    fn get(&self, action: &Id) -> io::Result<Option<Entry>>;

    /// Whether the cache holds `action` with this very output: a pack's
    /// entry it need not download. An error reading it is a no.
    fn holds(&self, action: &Id, output: &Id) -> bool {
        matches!(self.get(action), Ok(Some(e)) if e.output_id == *output)
    }

    /// Stores an output from chunks, checking that they hash to `output`
    /// and add up to `size` before anything becomes visible. Returns the
    /// output's path.
    fn write_output(
        &self,
        output: &Id,
        size: u64,
        next: &mut dyn FnMut() -> Option<io::Result<Bytes>>,
    ) -> Result<PathBuf, PutError>;

    /// [`Sink::write_output`] of bytes already in memory.
    fn write_output_bytes(&self, output: &Id, data: &[u8]) -> Result<PathBuf, PutError>;

    /// Records that `action` produced `output` (already stored).
    fn write_action(
        &self,
        action: &Id,
        output: &Id,
        size: u64,
        put_time_nanos: i64,
    ) -> Result<(), PutError>;

    /// Makes `action` a hit from now on, in this process, without writing an
    /// entry of its own. Its output must already be stored.
    fn index(&self, action: Id, entry: Indexed);

    /// Writes (or replaces) the index `name`, so later processes on this
    /// cache find these entries too.
    fn write_index(
        &self,
        name: &str,
        entries: &mut dyn Iterator<Item = (Id, Indexed)>,
    ) -> Result<(), PutError>;

    /// A temp file on the same file system as `path` (an output of this
    /// cache), or anywhere in the cache with `None`: the file is removed
    /// when the returned path drops, and one a killed process left behind
    /// is cleared by the cache's own trimming.
    fn scratch(&self, beside: Option<&Path>) -> io::Result<(tempfile::TempPath, File)>;
}
