//! Where puts go when the cache dir cannot take them (read-only, full), and
//! the free-space check that decides it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tempfile::TempDir;

use super::{io_err, DiskCache, Entry, PutError};
use crate::wire::Id;

/// Space a put must leave free on the cache dir's filesystem, besides its
/// own bytes, else it goes to the overflow dir: the entry file, the
/// filesystem's own blocks, other writers.
#[cfg_attr(not(unix), allow(dead_code))]
const ROOM_MARGIN: u64 = 1 << 20;

/// Whether the filesystem holding `root` has room for `size` more bytes.
/// One `statvfs`; true when it cannot be asked.
#[cfg(unix)]
pub fn has_room(root: &Path, size: u64) -> bool {
    let Ok(st) = rustix::fs::statvfs(root) else {
        return true;
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
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
///
/// The temp dir is shared with every user of the machine, so the directory
/// gets a random name and mode 0700 (`tempfile`): a name another user could
/// guess could be a symlink planted there first, which the cache would
/// write through and the removal would delete the target of.
#[derive(Default)]
pub struct Overflow {
    /// The directory, or why it could not be made; made on first use.
    made: OnceLock<Result<PathBuf, (io::ErrorKind, String)>>,
    /// Owns the directory until [`Overflow::remove`] deletes it.
    dir: Mutex<Option<TempDir>>,
    cache: OnceLock<DiskCache>,
}

impl Overflow {
    /// The directory, made on first call.
    fn made(&self) -> Result<&Path, io::Error> {
        let made = self.made.get_or_init(|| {
            let mut b = tempfile::Builder::new();
            b.prefix("gocacher-overflow-");
            #[cfg(unix)]
            b.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
            let dir = b
                .tempdir_in(std::env::temp_dir())
                .map_err(|e| (e.kind(), e.to_string()))?;
            let path = dir.path().to_path_buf();
            *self.dir.lock().unwrap() = Some(dir);
            Ok(path)
        });
        match made {
            Ok(p) => Ok(p),
            Err((kind, why)) => Err(io::Error::new(*kind, why.clone())),
        }
    }

    /// Where puts go once the cache dir cannot take them, for messages; the
    /// directory is made by this call if it was not yet.
    pub fn describe(&self) -> String {
        match self.made() {
            Ok(p) => p.display().to_string(),
            Err(e) => format!(
                "nowhere (no private dir could be made in {}: {e}; they fail)",
                std::env::temp_dir().display()
            ),
        }
    }

    pub fn in_use(&self) -> bool {
        self.cache.get().is_some()
    }

    /// The overflow cache, made on first call.
    pub fn get(&self) -> Result<&DiskCache, PutError> {
        if let Some(c) = self.cache.get() {
            return Ok(c);
        }
        let root = self.made().map_err(|e| io_err(&std::env::temp_dir(), e))?;
        let made = DiskCache::open(root).map_err(|e| io_err(root, e))?;
        Ok(self.cache.get_or_init(|| made))
    }

    /// A get's look at what was put here.
    pub fn get_entry(&self, action: &Id) -> Option<Entry> {
        self.cache.get()?.get(action).ok().flatten()
    }

    /// Deletes the overflow dir, if one was made. Symlinks in it are removed,
    /// never followed.
    pub fn remove(&self) {
        if let Some(dir) = self.dir.lock().unwrap().take() {
            let _ = dir.close();
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use sha2::Digest;

    use super::*;

    /// A symlink planted at the name the overflow dir once had
    /// (`gocacher-overflow-PID`), and one planted inside it, both to a
    /// victim directory: the cache writes through neither, and removing
    /// the overflow dir leaves the victim whole.
    #[test]
    fn overflow_dir_is_private_and_its_removal_follows_no_symlink() {
        let victim = tempfile::tempdir().unwrap();
        fs::write(victim.path().join("precious"), b"keep me").unwrap();
        let planted =
            std::env::temp_dir().join(format!("gocacher-overflow-{}", std::process::id()));
        let _ = fs::remove_file(&planted);
        symlink(victim.path(), &planted).unwrap();

        let o = Overflow::default();
        let cache = o.get().unwrap();
        let root = cache.root().to_path_buf();
        let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        let shown = o.describe();
        let body = b"an output";
        let output = Id(sha2::Sha256::digest(body).into());
        cache
            .write_output_bytes(&output, body)
            .unwrap_or_else(|e| panic!("{e}"));
        symlink(victim.path(), root.join("planted")).unwrap();
        o.remove();
        let _ = fs::remove_file(&planted);

        let left: Vec<_> = fs::read_dir(victim.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["precious"], "the victim dir was written or emptied");
        assert_eq!(
            fs::read(victim.path().join("precious")).unwrap(),
            b"keep me"
        );
        assert_eq!(mode, 0o700, "the overflow dir is {mode:o}");
        assert!(!root.exists(), "the overflow dir is left behind");
        assert!(shown.contains("gocacher-overflow-"), "{shown}");
    }
}
