//! Action indexes: many action entries in one file.
//!
//! A pack delivers a whole build's entries at once. An `-a` file for each
//! would cost an inode apiece, and creating inodes is a good part of what a
//! remote-warm build waits for (on ext4 without a journal, each creation also
//! scans past recently deleted inodes). So the prefetch records a pack's
//! entries in memory as it writes their outputs, and when the pack is done
//! writes them to one index file, `<root>/ix/<name>`: one line per entry, in
//! the `-a` format. Every index is read when the cache opens.
//!
//! An entry in an index is as good as an `-a` file: a get still checks that
//! the output file is there with the right size. When both exist, the `-a`
//! file answers (it may come from a later put). Trim treats `ix/` like a
//! shard directory, so an index unused for the trim age goes, and with it
//! only the mappings: the outputs age on their own.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::{entry_line, parse_entry, stale, touch, DiskCache, Entry, PutError};
use crate::wire::Id;

/// The directory of index files under the cache root.
pub(super) const INDEX_DIR: &str = "ix";

/// An action entry held by an index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Indexed {
    pub output_id: Id,
    pub size: u64,
    pub put_time_nanos: i64,
}

/// Reads every index file under `root` (unreadable ones and bad lines are
/// skipped: they only cost a download). Refreshes the mtime of indexes in
/// use, as a get does for `-a` files, so trim keeps them.
pub(super) fn load(root: &Path) -> HashMap<Id, Indexed> {
    let mut all = HashMap::new();
    let Ok(dir) = fs::read_dir(root.join(INDEX_DIR)) else {
        return all;
    };
    let now = SystemTime::now();
    for file in dir.flatten() {
        if file
            .file_name()
            .to_string_lossy()
            .starts_with(super::trim::TEMP_PREFIX)
        {
            continue;
        }
        let path = file.path();
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            if let Some((action, output_id, size, put_time_nanos)) = parse_entry(line) {
                all.insert(
                    action,
                    Indexed {
                        output_id,
                        size,
                        put_time_nanos,
                    },
                );
            }
        }
        if file.metadata().is_ok_and(|m| stale(&m, now)) {
            touch(&path, now);
        }
    }
    all
}

impl DiskCache {
    /// Makes `action` a hit from now on, in this process, without an `-a`
    /// file. Its output must already be stored.
    pub fn index(&self, action: Id, entry: Indexed) {
        self.index.write().unwrap().insert(action, entry);
    }

    /// Writes (or replaces) the index file `name` with `entries`, so later
    /// go commands on this directory find them too.
    pub fn write_index(
        &self,
        name: &str,
        entries: impl Iterator<Item = (Id, Indexed)>,
    ) -> Result<(), PutError> {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()),
            "index names are plain: {name:?}"
        );
        let path = self.root.join(INDEX_DIR).join(name);
        let mut text = String::new();
        for (action, e) in entries {
            text.push_str(&entry_line(&action, &e.output_id, e.size, e.put_time_nanos));
        }
        self.write_whole(&path, text.as_bytes())
    }

    /// A get's second chance, after the `-a` file: the in-memory index.
    pub(super) fn get_indexed(&self, action: &Id) -> io::Result<Option<Entry>> {
        let Some(e) = self.index.read().unwrap().get(action).copied() else {
            return Ok(None);
        };
        self.entry_with_output(e.output_id, e.size, e.put_time_nanos)
    }
}
