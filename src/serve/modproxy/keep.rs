//! Where immutable answers are kept: `<dir>/mod/<rel>` on the server's disk
//! and `<prefix>/mod/<rel>` in the bucket, `<rel>` being the GOPROXY
//! layout (`<escaped module>/@v/<escaped version>.<ext>`,
//! `sumdb/<name>/tile/...`), so that either copy works as
//! `GOPROXY=file://...`. A file is written to a temp file beside its place
//! and renamed into it once whole and checked: nothing partial is ever
//! visible, whatever happens to the request or the process. Each `.info`,
//! `.mod` and `.zip` has a sidecar (`sidecar.rs`), written after it, that
//! every read from disk or bucket is checked against.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use sha2::{Digest, Sha256};

use super::super::bucket::Bucket;
use super::path::{canonical, unescape};
use super::semver::{pseudo, semver_cmp};
use super::sidecar::{self, OnDisk, Sidecar, Stamp};
use crate::remote::store::{Fetched, Source};
use crate::trust::Keys;

/// Temp files start with this: no name a request can ask for does (no
/// path element starts with a dot), and listings skip them.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// A temp file in `dir`, under a name no request can ask for.
pub(crate) fn temp_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
}

/// Bucket uploads under way at once; more wait their turn.
const UPLOADS: usize = 8;

pub(crate) struct Keep {
    /// `<dir>/mod`.
    pub(crate) root: PathBuf,
    pub(crate) bucket: Option<Arc<Bucket>>,
    pub(crate) uploads: Arc<Semaphore>,
    /// `--sign-key` signs sidecars; `--trust-key` takes from the bucket
    /// only files whose sidecar one of its keys signed.
    pub(crate) keys: Arc<Keys>,
    /// Kept files by place, with their stamp when last hashed.
    memo: moka::sync::Cache<String, Stamp>,
}

/// A file being written, removed when dropped unless committed.
pub(crate) struct Scratch {
    pub(crate) file: tempfile::NamedTempFile,
    target: PathBuf,
}

impl Scratch {
    /// Renames the whole, checked file into its place.
    pub(crate) fn commit(self) -> io::Result<()> {
        self.file
            .persist(&self.target)
            .map(|_| ())
            .map_err(|e| e.error)
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Why the bucket's copy of a file was not taken.
pub(crate) enum NotTaken {
    /// The bucket failed or the copy could not be kept.
    Unusable(String),
    /// The copy does not match its sidecar, or its sidecar is malformed or
    /// not signed by a trusted key: counted, never served.
    Refused(String),
}

impl Keep {
    pub(crate) fn new(root: PathBuf, bucket: Option<Arc<Bucket>>, keys: Arc<Keys>) -> Keep {
        Keep {
            root,
            bucket,
            uploads: Arc::new(Semaphore::new(UPLOADS)),
            keys,
            memo: moka::sync::Cache::new(super::KNOWN_FILES),
        }
    }

    /// The file of a kept answer (`rel` is checked by `path::parse`).
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A temp file beside `rel`'s place.
    pub(crate) fn scratch(&self, rel: &str) -> io::Result<Scratch> {
        let target = self.path(rel);
        let dir = target.parent().expect("a kept file has a directory");
        std::fs::create_dir_all(dir)?;
        let file = temp_in(dir)?;
        Ok(Scratch { file, target })
    }

    /// The disk's copy of `rel`, checked against its sidecar (hashed unless
    /// unchanged since it last was). A file without a sidecar is absent; one
    /// that does not match it is removed.
    pub(crate) async fn on_disk(&self, rel: &str) -> OnDisk {
        let path = self.path(rel);
        let Some(side) = sidecar::place(rel) else {
            return match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_file() => OnDisk::Good(m.len(), sidecar::stamp(&m)),
                _ => OnDisk::Absent,
            };
        };
        let (side, memo) = (self.path(&side), self.memo.get(rel));
        let got = tokio::task::spawn_blocking(move || sidecar::check_on_disk(&path, &side, memo))
            .await
            .unwrap_or_else(|e| OnDisk::Refused(e.to_string()));
        match &got {
            OnDisk::Good(_, st) => self.memo.insert(rel.to_string(), *st),
            _ => self.memo.invalidate(rel),
        }
        got
    }

    /// Whether an opened kept file is still as it was when last checked
    /// (files without a sidecar always are).
    pub(crate) fn unchanged(&self, rel: &str, f: &std::fs::File) -> bool {
        if sidecar::place(rel).is_none() {
            return true;
        }
        let now = f.metadata().ok().map(|m| sidecar::stamp(&m));
        now.is_some() && now == self.memo.get(rel)
    }

    /// Writes the sidecar of the file just kept at `rel` (signed with
    /// `--sign-key`), after it.
    pub(crate) fn keep_sidecar(&self, rel: &str, mut car: Sidecar) -> io::Result<()> {
        let Some(side) = sidecar::place(rel) else {
            return Ok(());
        };
        if let Some(s) = &self.keys.signer {
            car.sign(rel, s);
        }
        self.write_sidecar(rel, &side, &car.render())
    }

    fn write_sidecar(&self, rel: &str, side: &str, text: &[u8]) -> io::Result<()> {
        let mut scratch = self.scratch(side)?;
        io::Write::write_all(scratch.file.as_file_mut(), text)?;
        scratch.commit()?;
        if let Ok(m) = std::fs::metadata(self.path(rel)) {
            self.memo.insert(rel.to_string(), sidecar::stamp(&m));
        }
        Ok(())
    }

    /// Copies `rel` from the bucket to disk, checked against its sidecar
    /// (size, sha256 and, with `--trust-key`, its signature) before it is
    /// kept; its length, or `None` when the bucket has no such object, or
    /// no sidecar for it, or is out of use.
    pub(crate) async fn copy_from_bucket(
        &self,
        rel: &str,
        limit: u64,
    ) -> Result<Option<u64>, NotTaken> {
        let Some(b) = self.bucket.as_ref().filter(|b| b.remote.may_read()) else {
            return Ok(None);
        };
        let unusable = NotTaken::Unusable;
        let key = b.mod_key(rel);
        // The sidecar and the file at once: one round trip, not two.
        let (car, file) = tokio::join!(self.bucket_sidecar(rel), b.remote.read_named(&key));
        let car = match (sidecar::place(rel), car?) {
            (None, _) => None,
            (Some(_), None) => return Ok(None),
            (Some(side), Some((car, text))) => Some((side, car, text)),
        };
        let (mut body, wire_len) = match file {
            Ok(Fetched::Missing) => return Ok(None),
            Ok(Fetched::Found { body, wire_len, .. }) => (body, wire_len),
            Err(e) => return Err(unusable(e.to_string())),
        };
        if wire_len > limit {
            return Err(unusable(format!(
                "{key} has {wire_len} bytes, over the limit {limit}"
            )));
        }
        let mut scratch = self.scratch(rel).map_err(|e| unusable(e.to_string()))?;
        let mut n = 0u64;
        let mut sum = Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| unusable(format!("reading {key}: {e}")))?;
            n += chunk.len() as u64;
            if n > wire_len {
                return Err(unusable(format!(
                    "{key} is longer than the {wire_len} bytes announced"
                )));
            }
            sum.update(&chunk);
            io::Write::write_all(scratch.file.as_file_mut(), &chunk)
                .map_err(|e| unusable(format!("keeping {key}: {e}")))?;
        }
        if n != wire_len {
            return Err(unusable(format!(
                "{key} stopped at {n} of {wire_len} bytes"
            )));
        }
        if let Some((_, car, _)) = &car {
            car.matches(n, &sum.finalize().into())
                .map_err(|e| NotTaken::Refused(format!("{key}: {e}")))?;
        }
        scratch
            .commit()
            .map_err(|e| unusable(format!("keeping {key}: {e}")))?;
        if let Some((side, _, text)) = car {
            self.write_sidecar(rel, &side, &text)
                .map_err(|e| unusable(format!("keeping {side}: {e}")))?;
        }
        Ok(Some(n))
    }

    /// The bucket's sidecar of `rel`, checked (its form and, with
    /// `--trust-key`, its signature), with its text; `None` when `rel` has
    /// no sidecar or the bucket none for it, or is out of use.
    pub(crate) async fn bucket_sidecar(
        &self,
        rel: &str,
    ) -> Result<Option<(Sidecar, Vec<u8>)>, NotTaken> {
        let (Some(b), Some(side)) = (
            self.bucket.as_ref().filter(|b| b.remote.may_read()),
            sidecar::place(rel),
        ) else {
            return Ok(None);
        };
        let side_key = b.mod_key(&side);
        let Some(text) = self
            .small_object(b, &side_key)
            .await
            .map_err(NotTaken::Unusable)?
        else {
            return Ok(None);
        };
        let car =
            Sidecar::parse(&text).map_err(|e| NotTaken::Refused(format!("{side_key}: {e}")))?;
        if let Some(t) = &self.keys.trust {
            if !car.signed_by(rel, t) {
                return Err(NotTaken::Refused(format!(
                    "{side_key} is not signed by a --trust-key key"
                )));
            }
        }
        Ok(Some((car, text)))
    }

    /// A sidecar object, whole; `None` if missing.
    async fn small_object(&self, b: &Bucket, key: &str) -> Result<Option<Vec<u8>>, String> {
        let (mut body, wire_len) = match b.remote.read_named(key).await {
            Ok(Fetched::Missing) => return Ok(None),
            Ok(Fetched::Found { body, wire_len, .. }) => (body, wire_len),
            Err(e) => return Err(e.to_string()),
        };
        if wire_len > sidecar::MAX_SIDECAR {
            return Err(format!("{key} has {wire_len} bytes: not a sidecar"));
        }
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(|e| format!("reading {key}: {e}"))?);
            if out.len() as u64 > sidecar::MAX_SIDECAR {
                return Err(format!("{key} is longer than a sidecar"));
            }
        }
        Ok(Some(out))
    }

    /// Copies a kept file, then its sidecar, to the bucket in the
    /// background (see [`Keep::uploader`]); a failure is logged, and the
    /// next server to miss it fetches it again.
    pub(crate) fn upload_later(&self, rel: &str, len: u64) {
        let Some(b) = self.uploader() else {
            return;
        };
        let mut files = vec![(self.path(rel), b.mod_key(rel), Some(len))];
        if let Some(side) = sidecar::place(rel) {
            files.push((self.path(&side), b.mod_key(&side), None));
        }
        let uploads = self.uploads.clone();
        tokio::spawn(async move {
            let _turn = uploads.acquire_owned().await;
            for (path, key, len) in files {
                let len = match len {
                    Some(n) => n,
                    None => match tokio::fs::metadata(&path).await {
                        Ok(m) => m.len(),
                        Err(_) => return,
                    },
                };
                if let Err(e) = b.remote.write_named(&key, Source::File(&path, len)).await {
                    eprintln!(
                        "gocacher serve: modproxy: {key} not copied to the bucket ({e}); it stays on this server's disk"
                    );
                    return;
                }
            }
        });
    }

    /// The bucket, when this server copies what it keeps to it: with
    /// `--remote`, unless `--read-only`; not with `--trust-key` alone,
    /// whose unsigned sidecars nobody would take.
    pub(crate) fn uploader(&self) -> Option<Arc<Bucket>> {
        let b = self.bucket.clone().filter(|b| !b.remote.is_read_only())?;
        (self.keys.trust.is_none() || self.keys.signer.is_some()).then_some(b)
    }

    /// Marks a kept file and its sidecar used, for trim.
    pub(crate) fn mark_used(&self, rel: &str, f: &std::fs::File) {
        mark_used(f);
        if let Some(side) = sidecar::place(rel) {
            if let Ok(s) = std::fs::File::open(self.path(&side)) {
                mark_used(&s);
            }
        }
    }

    /// The versions of `module` kept on disk (those with a `.mod`), as a
    /// `list` answer says them: unescaped, sorted, without pseudo-versions.
    pub(crate) fn versions(&self, module: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.path(&format!("{module}/@v"))) else {
            return Vec::new();
        };
        let mut v: Vec<String> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let version = name.strip_suffix(".mod")?;
                (canonical(version) && !pseudo(version)).then(|| version.to_string())
            })
            .collect();
        v.sort_by(|a, b| semver_cmp(a, b));
        v.into_iter().map(|v| unescape(&v)).collect()
    }

    /// The newest kept version of `module` (pseudo-versions too) whose
    /// `.info` is kept: what `@latest` falls back to.
    pub(crate) fn newest_info(&self, module: &str) -> Option<PathBuf> {
        let dir = std::fs::read_dir(self.path(&format!("{module}/@v"))).ok()?;
        let best = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let version = name.strip_suffix(".info")?;
                canonical(version).then(|| version.to_string())
            })
            .max_by(|a, b| semver_cmp(a, b))?;
        Some(self.path(&format!("{module}/@v/{best}.info")))
    }
}

/// The directories under `root` that hold kept files, for trim (which
/// removes files least recently used first; the directories stay).
pub(crate) fn kept_dirs(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut has_files = false;
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < MAX_DEPTH => walk(&e.path(), depth + 1, out),
                Ok(t) if t.is_file() => has_files = true,
                _ => {}
            }
        }
        if has_files {
            out.push(dir.to_path_buf());
        }
    }
    /// Deeper than any module path or tile path the parser lets through.
    const MAX_DEPTH: usize = 300;
    let mut out = Vec::new();
    walk(root, 0, &mut out);
    out
}

/// Removes the temp files under `root` (`<dir>/mod`) that a server
/// killed mid-write left behind: those last written before `started`, this
/// server's start (a server's directory is its own). Their names are never
/// served; this only gives their space back.
pub(crate) fn remove_left_temps(root: &Path, started: std::time::SystemTime) -> u64 {
    let mut removed = 0;
    for dir in kept_dirs(root) {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let temp = e.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            let left = e
                .metadata()
                .is_ok_and(|m| m.is_file() && m.modified().is_ok_and(|t| t < started));
            if temp && left && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Marks a kept file used, for trim (least recently used first), at most
/// once an hour: in its access time, as named objects are.
pub(super) fn mark_used(file: &std::fs::File) {
    let Ok(m) = file.metadata() else { return };
    let now = std::time::SystemTime::now();
    let used = crate::disk::last_used(&m);
    if now.duration_since(used).unwrap_or_default() > std::time::Duration::from_secs(3600) {
        let _ = file.set_times(std::fs::FileTimes::new().set_accessed(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_versions_list_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let keep = Keep::new(dir.path().to_path_buf(), None, Default::default());
        let at = dir.path().join("example.com/!m/@v");
        std::fs::create_dir_all(&at).unwrap();
        for f in [
            "v1.10.0.mod",
            "v1.2.0.mod",
            "v1.2.0.info",
            "v1.2.0-!r!c1.mod",
            "v0.0.0-20230120002735-62a210ff1fd5.mod",
            "v0.0.0-20230120002735-62a210ff1fd5.info",
            ".tmp-abc",
            "v1.11.0.zip",
        ] {
            std::fs::write(at.join(f), "x").unwrap();
        }
        assert_eq!(
            keep.versions("example.com/!m"),
            ["v1.2.0-RC1", "v1.2.0", "v1.10.0"]
        );
        assert_eq!(
            keep.newest_info("example.com/!m").unwrap(),
            at.join("v1.2.0.info")
        );
        assert!(keep.versions("example.com/none").is_empty());
    }
}
