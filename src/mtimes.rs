//! `gocacher fix-mtimes [DIR]`: give every file git tracks under DIR an
//! mtime that depends only on its contents, so `go test` results stay cached
//! across fresh checkouts.
//!
//! Go's test cache keys a test run on the size, mode and mtime of every file
//! the test opened (golang/go#58571), and a fresh clone gives every file the
//! time of the clone. So a test that reads testdata never hits the cache in
//! CI. The rule here: a tracked file's mtime is a point between 2000 and
//! 2020 picked by its git blob ID (the hash of its contents), to the
//! nanosecond. Two checkouts of the same contents get the same mtime,
//! whatever the commit, the clone depth (`actions/checkout` fetches one
//! commit) or the clock; changed contents get another mtime. Directories
//! holding tracked files get one picked by the names of what they hold,
//! since `os.Stat` of a directory also lands in the key.
//!
//! Why not the last commit's time: it needs the whole history (a shallow
//! clone would give every file HEAD's time, so every commit would miss),
//! walking it costs seconds on a large repository, and commit times have
//! one-second resolution, so two different versions can share one.
//!
//! Left alone: files that differ from the index (a local edit keeps its
//! real mtime, so it is never mistaken for the committed version), symlinks,
//! submodules and unmerged paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// 2000-01-01T00:00:00Z: mtimes are picked from twenty years after it. All
/// are in the past, which matters: cmd/go caches no test result that read a
/// file modified in the last two seconds, or in the future.
const BASE_SECS: u64 = 946_684_800;
const SPAN_NANOS: u64 = 20 * 365 * 86_400 * 1_000_000_000;

/// What one run changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub dirs: usize,
    /// Tracked files with local changes (or deleted), left alone.
    pub modified: usize,
    /// Symlinks, submodules and unmerged paths, left alone.
    pub skipped: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "set the mtime of {} files and {} directories; left alone {} with local changes and {} symlinks, submodules or unmerged paths",
            self.files, self.dirs, self.modified, self.skipped
        )
    }
}

/// The mtime for a hash (hex digits, at least 16): its first 64 bits, as
/// nanoseconds into the span.
pub fn mtime_for(hash_hex: &str) -> Option<SystemTime> {
    Some(mtime_at(u64::from_str_radix(hash_hex.get(..16)?, 16).ok()?))
}

fn mtime_at(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(BASE_SECS) + Duration::from_nanos(n % SPAN_NANOS)
}

/// Sets the mtimes under `dir` (see the module doc).
pub fn fix(dir: &Path) -> Result<Report> {
    let index = git(dir, &["ls-files", "--stage", "-z"])?;
    let modified: BTreeSet<Vec<u8>> = git(dir, &["ls-files", "--modified", "-z"])?
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut report = Report::default();
    // Each directory's tracked children, for the directories' mtimes.
    let mut children: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for rec in index.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        // "<mode> <object> <stage>\t<path>"
        let Some(tab) = rec.iter().position(|&b| b == b'\t') else {
            continue;
        };
        let (meta, path) = (&rec[..tab], &rec[tab + 1..]);
        let meta = String::from_utf8_lossy(meta);
        let mut parts = meta.split(' ');
        let (Some(mode), Some(object), Some(stage)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // Each directory on the way down holds the next name.
        let mut parent: &[u8] = b"";
        let mut start = 0;
        for (i, &b) in path.iter().enumerate() {
            if b == b'/' {
                children
                    .entry(parent.to_vec())
                    .or_default()
                    .insert(path[start..i].to_vec());
                parent = &path[..i];
                start = i + 1;
            }
        }
        children
            .entry(parent.to_vec())
            .or_default()
            .insert(path[start..].to_vec());
        if stage != "0" || !matches!(mode, "100644" | "100755") {
            report.skipped += 1;
            continue;
        }
        if modified.contains(path) {
            report.modified += 1;
            continue;
        }
        let Some(t) = mtime_for(object) else {
            continue;
        };
        let full = dir.join(path_of(path)?);
        match set_mtime(&full, t) {
            Ok(()) => report.files += 1,
            // Deleted since ls-files ran: nothing to keep stable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.modified += 1,
            Err(e) => {
                return Err(e).with_context(|| format!("setting the mtime of {}", full.display()))
            }
        }
    }
    for (d, names) in &children {
        let mut h = Sha256::new();
        for n in names {
            // A NUL after each name keeps "ab","c" apart from "a","bc".
            h.update(n);
            h.update([0]);
        }
        let digest = h.finalize();
        let t = mtime_at(u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")));
        let full = if d.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(path_of(d)?)
        };
        if set_mtime(&full, t).is_ok() {
            report.dirs += 1;
        }
    }
    Ok(report)
}

/// Runs git in `dir` and returns its stdout; a failure names git's reason.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "{} is not a git work tree: git {}: {}",
            dir.display(),
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

#[cfg(unix)]
fn path_of(bytes: &[u8]) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// git prints paths as UTF-8 on Windows.
#[cfg(not(unix))]
fn path_of(bytes: &[u8]) -> Result<PathBuf> {
    Ok(PathBuf::from(
        std::str::from_utf8(bytes).context("a path git printed is not UTF-8")?,
    ))
}

/// Sets a file's or directory's mtime, leaving its atime. Opening read-only
/// is enough on Unix (futimens needs ownership, not write permission).
#[cfg(unix)]
fn set_mtime(path: &Path, t: SystemTime) -> std::io::Result<()> {
    std::fs::File::open(path)?.set_modified(t)
}

/// Windows needs a handle with the right to write attributes (and backup
/// semantics to open a directory), not one to write the contents.
#[cfg(windows)]
fn set_mtime(path: &Path, t: SystemTime) -> std::io::Result<()> {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
    const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
    std::fs::File::options()
        .access_mode(FILE_WRITE_ATTRIBUTES)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?
        .set_modified(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimes_are_in_the_past_and_spread() {
        let a = mtime_for("0000000000000000").unwrap();
        let b = mtime_for("ffffffffffffffffffff").unwrap();
        let c = mtime_for("8f3a9c1e00000001").unwrap();
        assert_eq!(a, UNIX_EPOCH + Duration::from_secs(BASE_SECS));
        let end = UNIX_EPOCH + Duration::from_secs(BASE_SECS) + Duration::from_nanos(SPAN_NANOS);
        for t in [a, b, c] {
            assert!(t >= a && t < end);
        }
        assert_ne!(b, c);
        assert!(mtime_for("abc").is_none());
        assert!(mtime_for("zzzzzzzzzzzzzzzz").is_none());
    }

    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn mtime(p: &Path) -> SystemTime {
        std::fs::metadata(p).unwrap().modified().unwrap()
    }

    #[test]
    fn files_and_directories_get_content_times() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("top.txt"), "top").unwrap();
        std::fs::write(d.join("a/b/deep.txt"), "deep").unwrap();
        std::fs::write(d.join("a/b/edited.txt"), "before").unwrap();
        std::fs::write(d.join("untracked.txt"), "x").unwrap();
        git_in(d, &["init", "-q"]);
        git_in(d, &["add", "top.txt", "a"]);
        git_in(d, &["commit", "-q", "-m", "m"]);
        std::fs::write(d.join("a/b/edited.txt"), "after!").unwrap();
        let edited = mtime(&d.join("a/b/edited.txt"));
        let untracked = mtime(&d.join("untracked.txt"));

        let r = fix(d).unwrap();
        assert_eq!(
            r,
            Report {
                files: 2,
                dirs: 3,
                modified: 1,
                skipped: 0
            }
        );
        for f in ["top.txt", "a/b/deep.txt"] {
            let blob = git_in(d, &["rev-parse", &format!("HEAD:{f}")]);
            assert_eq!(mtime(&d.join(f)), mtime_for(&blob).unwrap(), "{f}");
        }
        assert_eq!(mtime(&d.join("a/b/edited.txt")), edited);
        assert_eq!(mtime(&d.join("untracked.txt")), untracked);
        // A directory's time is picked by the names of what it holds.
        let names = |ns: &[&str]| {
            let mut h = Sha256::new();
            for n in ns {
                h.update(n.as_bytes());
                h.update([0]);
            }
            mtime_for(&hex::encode(h.finalize())).unwrap()
        };
        assert_eq!(mtime(&d.join("a")), names(&["b"]));
        assert_eq!(mtime(&d.join("a/b")), names(&["deep.txt", "edited.txt"]));
        assert_eq!(mtime(d), names(&["a", "top.txt"]));
        // Run again: the same times (nothing depends on the clock).
        fix(d).unwrap();
        assert_eq!(mtime(&d.join("a")), names(&["b"]));
    }
}
