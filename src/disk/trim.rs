//! Trimming, Go's way: at most once a day, remove files unused for longer than
//! the trim age, and then (optionally) the least recently used files until the
//! directory fits a size cap. Files used within [`MIN_AGE`] are never removed,
//! whatever the cap: another go command may hold their DiskPath right now.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{INDEX_DIR, TEMP_PREFIX};

/// Files younger than this are never trimmed (Go's own rule of thumb). Also
/// the floor for `--trim-age`, checked when flags are validated.
pub const MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// How often a trim may run; recorded in `<root>/trim.txt` like Go's cache.
const TRIM_INTERVAL: Duration = Duration::from_secs(24 * 3600);

const STAMP: &str = "trim.txt";

#[derive(Debug, Clone)]
pub struct TrimPolicy {
    /// Remove files whose mtime is older than this.
    pub max_age: Duration,
    /// Then, if set, remove oldest-first until the total is at most this.
    pub max_size: Option<u64>,
    /// Stop (and leave the stamp alone, so the next run resumes) after this.
    pub deadline: Duration,
    /// Files used more recently than this are never removed: [`MIN_AGE`] for
    /// a client's cache dir, whose DiskPaths a go command may hold open;
    /// zero for `gocacher serve`'s store, which serves files by copy.
    pub min_age: Duration,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct TrimReport {
    pub removed_files: u64,
    pub removed_bytes: u64,
    pub kept_files: u64,
    pub kept_bytes: u64,
    pub complete: bool,
}

impl std::fmt::Display for TrimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed {} files ({} bytes); kept {} files ({} bytes)",
            self.removed_files, self.removed_bytes, self.kept_files, self.kept_bytes
        )
    }
}

/// Runs a trim if none ran within [`TRIM_INTERVAL`]. `Ok(None)`: not due.
pub fn run(root: &Path, policy: &TrimPolicy) -> io::Result<Option<TrimReport>> {
    let now = SystemTime::now();
    let stamp = root.join(STAMP);
    if let Ok(text) = fs::read_to_string(&stamp) {
        if let Ok(secs) = text.trim().parse::<u64>() {
            let last = UNIX_EPOCH + Duration::from_secs(secs);
            if now.duration_since(last).unwrap_or_default() < TRIM_INTERVAL {
                return Ok(None);
            }
        }
    }
    let report = trim_now(root, policy, now)?;
    if report.complete {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        fs::write(&stamp, format!("{secs}\n"))?;
    }
    Ok(Some(report))
}

/// One pass over every shard directory (and `ix/`), whatever the stamp says.
pub fn trim_now(root: &Path, policy: &TrimPolicy, now: SystemTime) -> io::Result<TrimReport> {
    trim_dirs(&store_dirs(&[root.to_path_buf()], &[])?, policy, now)
}

/// [`trim_now`] over several cache roots at once, with one size cap for all
/// of them (`gocacher serve`'s namespaces), least recently used first.
/// `named` lists directories under each root whose files are trimmed with
/// the entries ([`last_used`] is their last use): `gocacher serve`'s
/// manifests and packs.
pub fn trim_roots(
    roots: &[PathBuf],
    named: &[&str],
    policy: &TrimPolicy,
    now: SystemTime,
) -> io::Result<TrimReport> {
    trim_roots_with(roots, named, &[], policy, now)
}

/// [`trim_roots`] with more directories whose files are trimmed under the
/// same cap, by [`last_used`] (`gocacher serve --modproxy`'s kept modules).
pub fn trim_roots_with(
    roots: &[PathBuf],
    named: &[&str],
    extra: &[PathBuf],
    policy: &TrimPolicy,
    now: SystemTime,
) -> io::Result<TrimReport> {
    let mut dirs = store_dirs(roots, named)?;
    dirs.extend(extra.iter().map(|d| (d.clone(), true)));
    trim_dirs(&dirs, policy, now)
}

/// A directory of files to trim, and whether a file's last use is
/// [`last_used`] (else its modification time, as for entries).
type Dir = (PathBuf, bool);

/// The shard directories (and `ix/`) of every root, then its `named` ones
/// that exist.
fn store_dirs(roots: &[PathBuf], named: &[&str]) -> io::Result<Vec<Dir>> {
    let mut dirs = Vec::new();
    for root in roots {
        for shard in fs::read_dir(root)? {
            let shard = shard?;
            let name = shard.file_name();
            // Index files age like entries (see index.rs).
            let is_shard = name == INDEX_DIR
                || name.len() == 2
                    && name
                        .to_str()
                        .is_some_and(|s| s.bytes().all(|b| b.is_ascii_hexdigit()));
            if is_shard && shard.file_type()?.is_dir() {
                dirs.push((shard.path(), false));
            }
        }
        for n in named {
            let dir = root.join(n);
            if dir.is_dir() {
                dirs.push((dir, true));
            }
        }
    }
    Ok(dirs)
}

/// When a file was last used: the later of its modification time and its
/// access time. A reader that must not change a file's modification time
/// (it names the file's version) marks a use in its access time instead.
pub fn last_used(m: &fs::Metadata) -> SystemTime {
    let modified = m.modified().unwrap_or(UNIX_EPOCH);
    match m.accessed() {
        Ok(a) if a > modified => a,
        _ => modified,
    }
}

fn trim_dirs(dirs: &[Dir], policy: &TrimPolicy, now: SystemTime) -> io::Result<TrimReport> {
    let started = std::time::Instant::now();
    let max_age = policy.max_age.max(policy.min_age);
    let mut report = TrimReport::default();
    // Survivors, for the size pass: (last use, size, path).
    let mut kept: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    // Bytes of writes still in progress: never removed by the size pass, so
    // they must not count against the cap either, or every finished file
    // would go while uploads are under way.
    let mut temp_bytes = 0u64;
    for (dir, by_access) in dirs {
        if started.elapsed() > policy.deadline {
            return Ok(report);
        }
        let Ok(files) = fs::read_dir(dir) else {
            continue;
        };
        for file in files {
            let Ok(file) = file else { continue };
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let used = if *by_access {
                last_used(&meta)
            } else {
                meta.modified().unwrap_or(now)
            };
            let age = now.duration_since(used).unwrap_or_default();
            let is_temp = file.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            let limit = if is_temp { MIN_AGE } else { max_age };
            if age > limit {
                if fs::remove_file(file.path()).is_ok() {
                    report.removed_files += 1;
                    report.removed_bytes += meta.len();
                }
            } else {
                report.kept_files += 1;
                report.kept_bytes += meta.len();
                if is_temp {
                    temp_bytes += meta.len();
                } else if policy.max_size.is_some() {
                    kept.push((used, meta.len(), file.path()));
                }
            }
        }
    }
    if let Some(cap) = policy.max_size {
        kept.sort_unstable_by_key(|(used, _, _)| *used);
        for (used, size, path) in kept {
            if report.kept_bytes.saturating_sub(temp_bytes) <= cap {
                break;
            }
            if now.duration_since(used).unwrap_or_default() <= policy.min_age {
                // Everything after this is newer still.
                break;
            }
            if fs::remove_file(&path).is_ok() {
                report.removed_files += 1;
                report.removed_bytes += size;
                report.kept_files -= 1;
                report.kept_bytes -= size;
            }
        }
    }
    report.complete = true;
    Ok(report)
}
