//! Where puts go when the cache dir cannot take them (read-only, full), and
//! the free-space check that decides it.

use std::fs;
use std::path::{Path, PathBuf};

use super::{io_err, DiskCache, Entry, PutError};
use crate::wire::Id;

/// Space a put must leave free on the cache dir's filesystem, besides its
/// own bytes, else it goes to the overflow dir: the entry file, the
/// filesystem's own blocks, other writers.
#[cfg_attr(not(unix), allow(dead_code))]
const ROOM_MARGIN: u64 = 1 << 20;

/// Whether the filesystem holding `root` has room for `size` more bytes.
/// One `statvfs` (about a microsecond); true when it cannot be asked.
#[cfg(unix)]
pub fn has_room(root: &Path, size: u64) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid
    // NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return true;
    }
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    free >= size.saturating_add(ROOM_MARGIN)
}

#[cfg(not(unix))]
pub fn has_room(_root: &Path, _size: u64) -> bool {
    true
}

/// A private cache dir in the system's temp dir for puts the real one
/// cannot take (read-only, full), made on first use and removed when the
/// process is done with it: cmd/go needs a DiskPath for every put it makes,
/// and only for the length of its own command.
#[derive(Default)]
pub struct Overflow {
    cache: std::sync::OnceLock<DiskCache>,
}

impl Overflow {
    /// Where it is (or would be).
    pub fn root(&self) -> PathBuf {
        std::env::temp_dir().join(format!("gocacher-overflow-{}", std::process::id()))
    }

    pub fn in_use(&self) -> bool {
        self.cache.get().is_some()
    }

    /// The overflow cache, made on first call.
    pub fn get(&self) -> Result<&DiskCache, PutError> {
        if let Some(c) = self.cache.get() {
            return Ok(c);
        }
        let root = self.root();
        let made = DiskCache::open(&root).map_err(|e| io_err(&root, e))?;
        Ok(self.cache.get_or_init(|| made))
    }

    /// A get's look at what was put here.
    pub fn get_entry(&self, action: &Id) -> Option<Entry> {
        self.cache.get()?.get(action).ok().flatten()
    }

    /// Deletes the overflow dir, if one was made.
    pub fn remove(&self) {
        if let Some(c) = self.cache.get() {
            let _ = fs::remove_dir_all(c.root());
        }
    }
}
