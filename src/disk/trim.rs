//! Trimming, Go's way: at most once a day, remove files unused for longer than
//! the trim age, and then (optionally) the least recently used files until the
//! directory fits a size cap. Files used within [`MIN_AGE`] are never removed,
//! whatever the cap: another go command may hold their DiskPath right now.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Files younger than this are never trimmed (Go's own rule of thumb). Also
/// the floor for `--trim-age`, checked when flags are validated.
pub const MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// How often a trim may run; recorded in `<root>/trim.txt` like Go's cache.
const TRIM_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Prefix of temp files; trim removes stale ones a crashed writer left.
pub(super) const TEMP_PREFIX: &str = ".tmp-";

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
    trim_roots(&[root.to_path_buf()], policy, now)
}

/// [`trim_now`] over several cache roots at once, with one size cap for all
/// of them (`gocacher serve`'s namespaces), least recently used first.
pub fn trim_roots(
    roots: &[std::path::PathBuf],
    policy: &TrimPolicy,
    now: SystemTime,
) -> io::Result<TrimReport> {
    let started = std::time::Instant::now();
    let max_age = policy.max_age.max(policy.min_age);
    let mut report = TrimReport::default();
    // Survivors, for the size pass: (mtime, size, path).
    let mut kept: Vec<(SystemTime, u64, std::path::PathBuf)> = Vec::new();
    let shards = roots
        .iter()
        .map(fs::read_dir)
        .collect::<io::Result<Vec<_>>>()?;
    for shard in shards.into_iter().flatten() {
        let shard = shard?;
        let name = shard.file_name();
        // Index files age like entries (see index.rs).
        let is_shard = name == super::index::INDEX_DIR
            || name.len() == 2
                && name
                    .to_str()
                    .is_some_and(|s| s.bytes().all(|b| b.is_ascii_hexdigit()));
        if !is_shard || !shard.file_type()?.is_dir() {
            continue;
        }
        if started.elapsed() > policy.deadline {
            return Ok(report);
        }
        for file in fs::read_dir(shard.path())? {
            let Ok(file) = file else { continue };
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(now);
            let age = now.duration_since(mtime).unwrap_or_default();
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
                if policy.max_size.is_some() {
                    kept.push((mtime, meta.len(), file.path()));
                }
            }
        }
    }
    if let Some(cap) = policy.max_size {
        kept.sort_unstable_by_key(|(mtime, _, _)| *mtime);
        for (mtime, size, path) in kept {
            if report.kept_bytes <= cap {
                break;
            }
            if now.duration_since(mtime).unwrap_or_default() <= policy.min_age {
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
