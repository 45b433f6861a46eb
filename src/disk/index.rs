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
//!
//! The index files are read on a thread of their own, started when the cache
//! opens, so the first answers to cmd/go never wait for them: only a get that
//! misses its `-a` file does, and only until the read is done. An index
//! file's mtime is refreshed when one of its entries answers a get (at most
//! once an hour, as for `-a` files), never merely because it was read: an
//! index no go command uses ages out.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::SystemTime;

use super::{
    entry_line, parse_entry, stale, touch, DiskCache, Entry, PutError, INDEX_DIR, TEMP_PREFIX,
};
use crate::local::Indexed;
use crate::wire::Id;

/// Most index files read at start, newest first.
const MAX_FILES: usize = 256;

/// Reading stops after the file that brings the entries to this many: a
/// bound on the index's memory, far above one module's build.
const MAX_ENTRIES: usize = 100_000;

/// What the index files held when the cache opened, plus the entries this
/// process indexed since.
#[derive(Default)]
pub(super) struct Index {
    /// Entry, and the index file it came from (`None`: indexed by this
    /// process, not read from a file).
    entries: RwLock<HashMap<Id, (Indexed, Option<u32>)>>,
    files: Vec<IndexFile>,
}

struct IndexFile {
    path: PathBuf,
    /// Whether a hit should refresh its mtime: stale when read, and not yet
    /// refreshed by this process.
    stale: AtomicBool,
}

/// The index, read in the background (see the module notes).
pub(super) struct Lazy {
    loaded: OnceLock<Index>,
    loader: Mutex<Option<JoinHandle<Index>>>,
}

impl Lazy {
    /// Starts reading `root`'s index files on a new thread (or right here,
    /// should a thread not start).
    pub(super) fn start(root: &Path) -> Lazy {
        let lazy = Lazy {
            loaded: OnceLock::new(),
            loader: Mutex::new(None),
        };
        let dir = root.join(INDEX_DIR);
        if !dir.exists() {
            let _ = lazy.loaded.set(Index::default());
            return lazy;
        }
        let spawned = std::thread::Builder::new()
            .name("gocacher-index".into())
            .spawn({
                let dir = dir.clone();
                move || load(&dir)
            });
        match spawned {
            Ok(handle) => *lazy.loader.lock().unwrap() = Some(handle),
            Err(_) => {
                let _ = lazy.loaded.set(load(&dir));
            }
        }
        lazy
    }

    /// The index, waiting for the read to finish if need be.
    pub(super) fn get(&self) -> &Index {
        self.loaded.get_or_init(|| {
            let handle = self.loader.lock().unwrap().take();
            handle.and_then(|h| h.join().ok()).unwrap_or_default()
        })
    }
}

/// Reads every index file in `dir` (unreadable ones and bad lines are
/// skipped: they only cost a download). Touches nothing.
fn load(dir: &Path) -> Index {
    let mut index = Index::default();
    let Ok(listing) = fs::read_dir(dir) else {
        return index;
    };
    let now = SystemTime::now();
    // Newest first, up to the caps: an index left out is one no recent go
    // command used (a hit refreshes its mtime), and costs at most a
    // download per entry; it then ages out.
    let mut found: Vec<(SystemTime, PathBuf, fs::Metadata)> = listing
        .flatten()
        .filter(|f| !f.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
        .filter_map(|f| {
            let m = f.metadata().ok()?;
            Some((m.modified().unwrap_or(now), f.path(), m))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    let entries = index.entries.get_mut().unwrap();
    for (_, path, meta) in found.into_iter().take(MAX_FILES) {
        if entries.len() >= MAX_ENTRIES {
            break;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let n = index.files.len() as u32;
        // Files come newest first, so an action already entered came from a
        // newer file and stays: two packs that disagree about an action (a
        // scope's pack rewritten after a changed build) are settled by the
        // one written last. Within one file the last line wins, as it would
        // were the lines puts.
        let mut mine = HashMap::new();
        for line in text.lines() {
            if let Some((action, output_id, size, put_time_nanos)) = parse_entry(line) {
                let e = Indexed {
                    output_id,
                    size,
                    put_time_nanos,
                };
                mine.insert(action, e);
            }
        }
        for (action, e) in mine {
            entries.entry(action).or_insert((e, Some(n)));
        }
        let is_stale = stale(&meta, now);
        index.files.push(IndexFile {
            path,
            stale: AtomicBool::new(is_stale),
        });
    }
    index
}

impl DiskCache {
    /// Makes `action` a hit from now on, in this process, without an `-a`
    /// file. Its output must already be stored.
    pub fn index(&self, action: Id, entry: Indexed) {
        let index = self.index.get();
        index.entries.write().unwrap().insert(action, (entry, None));
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
        super::write_whole(&path, text.as_bytes())
    }

    /// A get's second chance, after the `-a` file: the index. A hit marks
    /// its index file used.
    pub(super) fn get_indexed(&self, action: &Id) -> io::Result<Option<Entry>> {
        let index = self.index.get();
        let Some((e, file)) = index.entries.read().unwrap().get(action).copied() else {
            return Ok(None);
        };
        let found = self.entry_with_output(e.output_id, e.size, e.put_time_nanos)?;
        if found.is_some() {
            if let Some(f) = file.and_then(|n| index.files.get(n as usize)) {
                if f.stale.swap(false, Ordering::Relaxed) {
                    touch(&f.path, SystemTime::now());
                }
            }
        }
        Ok(found)
    }
}
