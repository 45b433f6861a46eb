//! `--modproxy-stored-zips`: module zips sent with their files stored (zip
//! method 0) rather than deflated. go inflates every file of a module zip
//! twice, once for its `h1:` hash and once to unpack it; stored files cost
//! it a copy instead. The `h1:` hash covers the files' names and contents,
//! not the zip's bytes, so go.sum and the checksum database accept the
//! re-packed zip.
//!
//! The stored copy of the kept zip `<module>/@v/<version>.zip` is
//! `<module>/@v/.stored-<version>.zip` beside it (no request can ask for a
//! name starting with a dot), made from the kept zip once it has passed its
//! checks, once however many clients ask at once, through a temp file
//! renamed into place. Its `h1:` must be the one the zip's sidecar records
//! (or, with none recorded, the kept zip's own). Its stamp is remembered
//! in memory with the kept zip's: it is sent only while both are
//! unchanged, and made again otherwise (after a restart too); trim removes
//! it like any kept file. The bucket keeps it zstd-compressed
//! (`stored_bucket.rs`), so that a new server fetches it instead of making
//! it.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use super::keep;
use super::sidecar::{self, Sidecar, Stamp};
use super::stored_bucket::Taken;
use super::ModProxy;
use crate::modverify::{self, GO_MAX_ZIP};

/// Stored copies start with this.
const STORED_PREFIX: &str = ".stored-";

/// The bytes a stored entry adds to its content at most, but for its name
/// (twice) and extra fields: its local header, its central directory
/// record and a data descriptor.
const ENTRY_OVERHEAD: u64 = 30 + 46 + 16;
/// The end of central directory record.
const END_RECORD: u64 = 22;

/// What is known of stored copies, by the kept zip's place and stamp.
pub(crate) struct StoredZips {
    made: moka::future::Cache<(String, Stamp), Made>,
    /// Copies taken from the bucket without their zip, by the zip's place.
    pub(crate) taken: moka::future::Cache<String, Taken>,
    /// Copies being made at once (one a core): the rest wait their turn.
    pub(crate) turns: tokio::sync::Semaphore,
    /// Room in memory for compressed copies from the bucket.
    pub(crate) packed: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, Clone, Copy)]
enum Made {
    /// The stored copy as written: its stamp and length.
    Copy(Stamp, u64),
    /// None could be made: the kept zip is sent.
    Original,
}

impl StoredZips {
    pub(crate) fn new() -> StoredZips {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        StoredZips {
            made: moka::future::Cache::new(super::KNOWN_FILES),
            taken: moka::future::Cache::new(super::KNOWN_FILES),
            turns: tokio::sync::Semaphore::new(cores),
            packed: Arc::new(tokio::sync::Semaphore::new(
                super::stored_bucket::PACKED_BUDGET as usize,
            )),
        }
    }
}

/// The place of the stored copy of the kept zip at `rel`.
pub(crate) fn place(rel: &str) -> String {
    match rel.rsplit_once("/@v/") {
        Some((module, file)) => format!("{module}/@v/{STORED_PREFIX}{file}"),
        None => format!("{STORED_PREFIX}{rel}"),
    }
}

impl ModProxy {
    /// What to send for the kept zip at `rel`, opened as `f` (`len` bytes)
    /// after its checks: its stored copy with `--modproxy-stored-zips`
    /// (made if need be), else `f` itself.
    pub(crate) async fn zip_to_send(
        self: &Arc<Self>,
        rel: &str,
        f: std::fs::File,
        len: u64,
    ) -> (std::fs::File, u64) {
        let Some(st) = &self.stored else {
            return (f, len);
        };
        let Ok(from) = f.metadata().map(|m| sidecar::stamp(&m)) else {
            return (f, len);
        };
        let key = (rel.to_string(), from);
        let copy = self.keep.path(&place(rel));
        // Twice at most: a copy trimmed or changed since it was made is
        // made again.
        for _ in 0..2 {
            let me = self.clone();
            let owned = rel.to_string();
            let made = st
                .made
                .get_with(key.clone(), async move {
                    // A task of its own: a client that goes away does not
                    // stop what others may be waiting for.
                    tokio::spawn(async move { me.make_stored(&owned, from).await })
                        .await
                        .unwrap_or(Made::Original)
                })
                .await;
            let Made::Copy(stamp, n) = made else {
                return (f, len);
            };
            match std::fs::File::open(&copy) {
                Ok(c) if c.metadata().is_ok_and(|m| sidecar::stamp(&m) == stamp) => {
                    keep::mark_used(&c);
                    return (c, n);
                }
                _ => st.made.invalidate(&key).await,
            }
        }
        (f, len)
    }

    /// The stored copy of the kept zip at `rel`, as it was when it had the
    /// stamp `from`: the bucket's when it has one whose files are the
    /// zip's, else made here (and then copied to the bucket).
    async fn make_stored(&self, rel: &str, from: Stamp) -> Made {
        let side = self.keep.path(&sidecar::place(rel).unwrap_or_default());
        let want = tokio::fs::read(&side)
            .await
            .map_err(|e| format!("reading its sidecar: {e}"))
            .and_then(|t| Sidecar::parse(&t).map_err(|e| format!("its sidecar: {e}")))
            .map(|car| car.h1);
        // Not if the bucket's copy was refused already, when it was taken
        // without the zip.
        let refused = match &self.stored {
            Some(st) => matches!(st.taken.get(rel).await, Some(Taken::Refused)),
            None => false,
        };
        if let (Ok(Some(h1)), false) = (&want, refused) {
            if let Taken::Copy(stamp, n) = self.stored_from_bucket(rel, h1).await {
                self.counts
                    .stored_from_bucket
                    .fetch_add(1, Ordering::Relaxed);
                return Made::Copy(stamp, n);
            }
        }
        let (zip, copy) = (self.keep.path(rel), self.keep.path(&place(rel)));
        let max_zip = self.max_zip;
        let _turn = match &self.stored {
            Some(st) => st.turns.acquire().await.ok(),
            None => None,
        };
        let got = tokio::task::spawn_blocking(move || make(&zip, from, &copy, want?, max_zip))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let c = &self.counts;
        match got {
            Ok((stamp, n)) => {
                c.stored_made.fetch_add(1, Ordering::Relaxed);
                if self.verbose {
                    eprintln!("gocacher serve: modproxy: made the stored copy of {rel} ({n} bytes); sending that for it");
                }
                self.upload_stored_later(rel);
                Made::Copy(stamp, n)
            }
            Err(why) => {
                c.stored_fallbacks.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "gocacher serve: modproxy: no stored copy of {rel}: {why}; sending the zip as kept (deflated) until it is fetched again or the server restarts"
                );
                Made::Original
            }
        }
    }
}

/// Writes the stored copy of the zip at `zip` (checked, with the stamp
/// `from`) to `copy`, through a temp file beside it renamed into place once
/// whole and checked: the copy's stamp and length. Its `h1:` must be
/// `want`, or with `None` the zip's own; nor may it be larger than
/// `max_zip` or Go's bound. On any failure no copy is left.
pub(crate) fn make(
    zip: &Path,
    from: Stamp,
    copy: &Path,
    want: Option<String>,
    max_zip: u64,
) -> Result<(Stamp, u64), String> {
    let got = write_copy(zip, from, copy, want, max_zip);
    if got.is_err() {
        let _ = std::fs::remove_file(copy);
    }
    got
}

fn write_copy(
    zip: &Path,
    from: Stamp,
    copy: &Path,
    want: Option<String>,
    max_zip: u64,
) -> Result<(Stamp, u64), String> {
    let limit = max_zip.min(GO_MAX_ZIP);
    let f = std::fs::File::open(zip).map_err(|e| format!("opening the zip: {e}"))?;
    if f.metadata().map(|m| sidecar::stamp(&m)).ok() != Some(from) {
        return Err("the zip changed since it was checked".into());
    }
    let mut archive =
        ZipArchive::new(io::BufReader::new(f)).map_err(|e| format!("the zip: {e}"))?;
    let mut size = END_RECORD;
    for i in 0..archive.len() {
        let e = archive
            .by_index_raw(i)
            .map_err(|e| format!("entry {i}: {e}"))?;
        let extra = e.extra_data().map_or(0, |x| x.len() as u64);
        let headers = ENTRY_OVERHEAD + 2 * (e.name_raw().len() as u64 + extra);
        size = size.saturating_add(e.size()).saturating_add(headers);
    }
    if size > limit {
        return Err(format!(
            "stored, it would have about {size} bytes, over the limit of {limit}"
        ));
    }
    let dir = copy.parent().ok_or("the copy has no directory")?;
    let mut temp =
        keep::temp_in(dir).map_err(|e| format!("making a temp file in {}: {e}", dir.display()))?;
    let writing = |e: &dyn std::fmt::Display| format!("writing the copy: {e}");
    let mut out = ZipWriter::new(BufWriter::new(temp.as_file_mut()));
    // Each file's SHA-256 as it goes into the copy, for the copy's h1; and
    // its name and size, to check the copy's directory against.
    let mut files = Vec::with_capacity(archive.len());
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..archive.len() {
        let mut e = archive.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let name = e.name_raw().to_vec();
        let options: SimpleFileOptions = e
            .options()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(
                e.last_modified()
                    .filter(DateTime::is_valid)
                    .unwrap_or_default(),
            );
        out.start_file_with_options(options.name(&name))
            .map_err(|e| writing(&e))?;
        let shown = String::from_utf8_lossy(&name).into_owned();
        let (mut sum, mut n) = (Sha256::new(), 0u64);
        loop {
            let got = e.read(&mut buf).map_err(|e| format!("{shown}: {e}"))?;
            if got == 0 {
                break;
            }
            sum.update(&buf[..got]);
            out.write_all(&buf[..got]).map_err(|e| writing(&e))?;
            n += got as u64;
        }
        let name = String::from_utf8(name).map_err(|_| format!("{shown}: a name not UTF-8"))?;
        if name.contains('\n') {
            return Err(format!("{shown}: a name with a newline"));
        }
        files.push((name, sum.finalize().into(), n));
    }
    out.finish()
        .map_err(|e| writing(&e))?
        .flush()
        .map_err(|e| writing(&e))?;
    check_directory(temp.path(), &files)?;
    let limits = modverify::Limits { max_zip: limit };
    let got = modverify::files_h1(files.into_iter().map(|(n, h, _)| (n, h)).collect());
    let want = match want {
        Some(h) => h,
        None => modverify::zip_h1_file(zip, &limits).map_err(|e| format!("the zip: {e}"))?,
    };
    if got != want {
        return Err(format!(
            "the copy's files hash to {got}, the zip's to {want}"
        ));
    }
    temp.persist(copy).map_err(|e| writing(&e.error))?;
    let m = std::fs::metadata(copy).map_err(|e| writing(&e))?;
    Ok((sidecar::stamp(&m), m.len()))
}

/// Checks a stored copy that came from elsewhere (the bucket): a zip
/// within `limit` bytes whose every file is stored and whose `h1:` is
/// `want`.
pub(crate) fn check_stored(copy: &Path, want: &str, limit: u64) -> Result<(), String> {
    let f = std::fs::File::open(copy).map_err(|e| format!("opening the copy: {e}"))?;
    let len = f.metadata().map_err(|e| format!("the copy: {e}"))?.len();
    if len > limit.min(GO_MAX_ZIP) {
        return Err(format!(
            "the copy has {len} bytes, over the limit of {limit}"
        ));
    }
    let mut archive =
        ZipArchive::new(io::BufReader::new(f)).map_err(|e| format!("the copy: {e}"))?;
    let mut files = Vec::with_capacity(archive.len());
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..archive.len() {
        let mut e = archive.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let name = String::from_utf8(e.name_raw().to_vec())
            .map_err(|_| format!("entry {i}: a name not UTF-8"))?;
        if e.compression() != CompressionMethod::Stored || name.contains('\n') {
            return Err(format!("entry {i} ({name:?}) is not a file stored"));
        }
        let mut sum = Sha256::new();
        loop {
            let got = e.read(&mut buf).map_err(|e| format!("{name}: {e}"))?;
            if got == 0 {
                break;
            }
            sum.update(&buf[..got]);
        }
        files.push((name, sum.finalize().into()));
    }
    let got = modverify::files_h1(files);
    if got != want {
        return Err(format!("its files hash to {got}, not {want}"));
    }
    Ok(())
}

/// Reads the copy's central directory back: every file, in order, with
/// its name and size, each stored.
fn check_directory(copy: &Path, files: &[(String, [u8; 32], u64)]) -> Result<(), String> {
    let f = std::fs::File::open(copy).map_err(|e| format!("reopening the copy: {e}"))?;
    let mut archive =
        ZipArchive::new(io::BufReader::new(f)).map_err(|e| format!("the copy: {e}"))?;
    if archive.len() != files.len() {
        return Err(format!(
            "the copy lists {} files, not {}",
            archive.len(),
            files.len()
        ));
    }
    for (i, (name, _, size)) in files.iter().enumerate() {
        let e = archive
            .by_index_raw(i)
            .map_err(|e| format!("the copy's entry {i}: {e}"))?;
        if e.name_raw() != name.as_bytes()
            || e.size() != *size
            || e.compressed_size() != *size
            || e.compression() != CompressionMethod::Stored
        {
            return Err(format!("the copy's entry {i} is not {name} stored"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A deflated module zip of two files, one in a directory.
    fn deflated(path: &Path) {
        let f = std::fs::File::create(path).unwrap();
        let mut w = ZipWriter::new(f);
        let when = DateTime::from_date_and_time(2024, 5, 6, 7, 8, 10).unwrap();
        for (name, body, mode) in [
            (
                "example.com/m@v1.0.0/go.mod",
                "module example.com/m\n".repeat(40),
                0o644,
            ),
            (
                "example.com/m@v1.0.0/sub/a.go",
                "package sub\n// filler\n".repeat(90),
                0o755,
            ),
        ] {
            let o = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .last_modified_time(when)
                .unix_permissions(mode);
            w.start_file(name, o).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap();
    }

    fn stamp_of(p: &Path) -> Stamp {
        sidecar::stamp(&std::fs::metadata(p).unwrap())
    }

    /// An entry's name, method, time, attributes and content.
    type Entry = (String, CompressionMethod, Option<DateTime>, u32, Vec<u8>);

    fn entries(p: &Path) -> Vec<Entry> {
        let mut a = ZipArchive::new(std::fs::File::open(p).unwrap()).unwrap();
        (0..a.len())
            .map(|i| {
                let mut e = a.by_index(i).unwrap();
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                let m = e.compression();
                (
                    e.name().unwrap().into_owned(),
                    m,
                    e.last_modified(),
                    e.external_attributes(),
                    body,
                )
            })
            .collect()
    }

    /// A dir holding a deflated zip, the place of its stored copy, and the
    /// zip's h1.
    fn a_kept_zip() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let (zip, copy) = (
            dir.path().join("v1.0.0.zip"),
            dir.path().join(".stored-v1.0.0.zip"),
        );
        deflated(&zip);
        let h1 = modverify::zip_h1_file(&zip, &Default::default()).unwrap();
        (dir, zip, copy, h1)
    }

    #[test]
    fn a_stored_copy_has_the_same_files_and_hash() {
        let (_dir, zip, copy, h1) = a_kept_zip();
        let (st, n) = make(&zip, stamp_of(&zip), &copy, Some(h1.clone()), 1 << 20).unwrap();
        assert_eq!(
            (st, n),
            (stamp_of(&copy), std::fs::metadata(&copy).unwrap().len())
        );
        assert!(n > std::fs::metadata(&zip).unwrap().len());
        let (before, after) = (entries(&zip), entries(&copy));
        assert_eq!(before.len(), 2);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.1, CompressionMethod::Deflated);
            assert_eq!(a.1, CompressionMethod::Stored, "{}", a.0);
            assert_eq!((&b.0, b.2, b.3, &b.4), (&a.0, a.2, a.3, &a.4));
        }
        assert_eq!(
            modverify::zip_h1_file(&copy, &Default::default()).unwrap(),
            h1
        );
        // With no h1 recorded, the zip's own is the one to match.
        make(&zip, stamp_of(&zip), &copy, None, 1 << 20).unwrap();
    }

    #[test]
    fn a_bad_zip_a_wrong_hash_or_too_large_leaves_no_copy() {
        let (dir, zip, copy, h1) = a_kept_zip();
        let left = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        let st = stamp_of(&zip);
        let e = make(&zip, st, &copy, Some("h1:other=".into()), 1 << 20).unwrap_err();
        assert!(e.contains("hash to"), "{e}");
        assert_eq!(left(), ["v1.0.0.zip"]);
        let e = make(&zip, st, &copy, Some(h1.clone()), 1000).unwrap_err();
        assert!(e.contains("over the limit"), "{e}");
        assert_eq!(left(), ["v1.0.0.zip"]);

        // A copy made before, then a byte of the zip's compressed data
        // flipped: the copy goes too.
        make(&zip, st, &copy, Some(h1.clone()), 1 << 20).unwrap();
        let mut bytes = std::fs::read(&zip).unwrap();
        let mut a = ZipArchive::new(std::fs::File::open(&zip).unwrap()).unwrap();
        let start = a.by_index_raw(0).unwrap().data_start().unwrap() as usize;
        drop(a);
        bytes[start + 5] ^= 0x5a;
        std::fs::write(&zip, &bytes).unwrap();
        let e = make(&zip, st, &copy, Some(h1.clone()), 1 << 20).unwrap_err();
        assert!(e.contains("changed"), "{e}");
        let e = make(&zip, stamp_of(&zip), &copy, Some(h1), 1 << 20).unwrap_err();
        assert!(e.contains("go.mod"), "{e}");
        assert_eq!(left(), ["v1.0.0.zip"]);
    }

    #[test]
    fn copies_are_beside_their_zip_under_a_name_no_request_has() {
        let rel = "example.com/!m/@v/v1.0.0.zip";
        assert_eq!(place(rel), "example.com/!m/@v/.stored-v1.0.0.zip");
        assert!(super::super::path::parse(&place(rel)).is_err());
    }
}
