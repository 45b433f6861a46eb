//! Stored copies of zips in the bucket (`--modproxy-stored-zips`), so that
//! a new server fetches each one instead of inflating the zip again: the
//! copy made from `<module>/@v/<version>.zip` is kept zstd-compressed at
//! `<prefix>/mod/<module>/@v/.stored-<version>.zip.zst` (a name no
//! GOPROXY client asks for).
//!
//! It needs no sidecar of its own: the `h1:` hash covers every file's name
//! and content, and the zip's sidecar records it, proven by the checksum
//! database (and signed, with `--sign-key`). A copy from the bucket is
//! unpacked to a temp file and kept only if it is a zip of stored files
//! with that very hash; anything else is counted as refused, and the copy
//! is made from the zip and copied to the bucket in its place.
//!
//! A server that has not kept a zip takes its copy alone, when asked for
//! the zip or prefetching it: the zip's sidecar comes from the bucket (and
//! its signature is checked under `--trust-key`), the zip itself never.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::keep;
use super::sidecar::{self, Stamp};
use super::stored::{check_stored, place};
use super::ModProxy;
use crate::modverify::GO_MAX_ZIP;
use crate::remote::store::{Fetched, Source};

/// zstd's level for copies sent to the bucket: most of level 19's ratio on
/// source text, at a speed that keeps a copy's upload behind its making.
const LEVEL: i32 = 3;

/// The bucket's place of the stored copy of the kept zip at `rel`.
pub(crate) fn bucket_place(rel: &str) -> String {
    format!("{}.zst", place(rel))
}

/// Bytes of compressed copies held in memory at once, while they are
/// unpacked (in KiB permits); a copy beyond it goes through a temp file.
pub(crate) const PACKED_BUDGET: u32 = 4 << 10;

/// A compressed copy as downloaded.
enum Packed {
    Memory(
        Vec<u8>,
        #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
    ),
    File(tempfile::NamedTempFile),
}

/// Why the bucket's copy was not taken.
enum NotTaken {
    /// Not what it claims to be: counted, never served.
    Refused(String),
    /// The bucket or the disk failed.
    Unusable(String),
}

/// A stored copy as the bucket gave it (or did not).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Taken {
    /// Kept on disk: its stamp and length.
    Copy(Stamp, u64),
    /// The bucket has none, or is out of use, or failed.
    Absent,
    /// The bucket's copy is not the zip's files: counted and logged once.
    Refused,
}

impl ModProxy {
    /// For a zip whose own bytes this server has not kept: its stored copy
    /// taken from the bucket without the zip (the zip's sidecar gives the
    /// hash), once however many ask at once; the copy opened, and its
    /// length. `None`: go the zip's way (no stored zips, the zip is
    /// known here, or the bucket has no good copy).
    pub(crate) async fn stored_alone(self: &Arc<Self>, rel: &str) -> Option<(std::fs::File, u64)> {
        let st = self.stored.as_ref()?;
        if self.known.contains_key(rel) {
            return None;
        }
        let (me, owned) = (self.clone(), rel.to_string());
        let got = st
            .taken
            .get_with(rel.to_string(), async move {
                // A task of its own: a client that goes away does not stop
                // what others may be waiting for.
                tokio::spawn(async move { me.take_alone(&owned).await })
                    .await
                    .unwrap_or(Taken::Absent)
            })
            .await;
        let Taken::Copy(stamp, n) = got else {
            return None;
        };
        match std::fs::File::open(self.keep.path(&place(rel))) {
            Ok(c) if c.metadata().is_ok_and(|m| sidecar::stamp(&m) == stamp) => {
                keep::mark_used(&c);
                Some((c, n))
            }
            _ => {
                st.taken.invalidate(rel).await;
                None
            }
        }
    }

    async fn take_alone(&self, rel: &str) -> Taken {
        let car = match self.keep.bucket_sidecar(rel).await {
            Ok(Some((car, _))) => car,
            // The zip's way counts and logs what is wrong with it.
            _ => return Taken::Absent,
        };
        let Some(h1) = car.h1 else {
            return Taken::Absent;
        };
        // A copy this server took before it restarted: its hash is checked
        // again rather than the bucket read again.
        let copy = self.keep.path(&place(rel));
        let limit = self.max_zip.min(GO_MAX_ZIP);
        if copy.is_file() {
            let (c, want) = (copy.clone(), h1.clone());
            let checked = tokio::task::spawn_blocking(move || {
                check_stored(&c, &want, limit)?;
                let m = std::fs::metadata(&c).map_err(|e| e.to_string())?;
                Ok::<_, String>((sidecar::stamp(&m), m.len()))
            })
            .await;
            if let Ok(Ok((stamp, n))) = checked {
                self.counts
                    .stored_from_bucket
                    .fetch_add(1, Ordering::Relaxed);
                return Taken::Copy(stamp, n);
            }
        }
        let got = self.stored_from_bucket(rel, &h1).await;
        if let Taken::Copy(..) = got {
            self.counts
                .stored_from_bucket
                .fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// The bucket's stored copy of the zip at `rel`, kept on disk once its
    /// files hash to `h1` (a refusal is counted and logged).
    pub(crate) async fn stored_from_bucket(&self, rel: &str, h1: &str) -> Taken {
        let Some(b) = self.keep.bucket.as_ref().filter(|b| b.remote.may_read()) else {
            return Taken::Absent;
        };
        let key = b.mod_key(&bucket_place(rel));
        let copy = self.keep.path(&place(rel));
        let limit = self.max_zip.min(GO_MAX_ZIP);
        let got = match b.remote.read_named(&key).await {
            Ok(Fetched::Missing) => return Taken::Absent,
            Ok(Fetched::Found { body, wire_len, .. }) if wire_len <= limit => {
                self.unpack(body, wire_len, &copy, h1, limit).await
            }
            Ok(Fetched::Found { wire_len, .. }) => Err(NotTaken::Unusable(format!(
                "{wire_len} bytes, over the limit of {limit}"
            ))),
            Err(e) => Err(NotTaken::Unusable(e.to_string())),
        };
        match got {
            Ok((stamp, n)) => {
                if self.verbose {
                    eprintln!(
                        "gocacher serve: modproxy: took the stored copy of {rel} from the bucket ({n} bytes); sending that for it"
                    );
                }
                Taken::Copy(stamp, n)
            }
            Err(NotTaken::Unusable(why)) => {
                eprintln!(
                    "gocacher serve: modproxy: the bucket's {key} is unusable ({why}); making the stored copy from the zip"
                );
                Taken::Absent
            }
            Err(NotTaken::Refused(why)) => {
                self.counts.refused_bucket.fetch_add(1, Ordering::Relaxed);
                let then = match self.keep.uploader() {
                    Some(_) => " and copying it to the bucket",
                    None => "",
                };
                eprintln!(
                    "gocacher serve: modproxy: REFUSED the bucket's {key}: {why}; not served, making the stored copy from the zip{then}"
                );
                Taken::Refused
            }
        }
    }

    /// Downloads the compressed copy (into memory within
    /// [`PACKED_BUDGET`], else to a temp file), then unpacks and checks it
    /// (a core at a time, as copies are made) into `copy`.
    async fn unpack(
        &self,
        mut body: crate::remote::store::Body,
        wire_len: u64,
        copy: &Path,
        h1: &str,
        limit: u64,
    ) -> Result<(Stamp, u64), NotTaken> {
        let unusable = |e: &dyn std::fmt::Display| NotTaken::Unusable(e.to_string());
        let st = self
            .stored
            .as_ref()
            .ok_or(NotTaken::Unusable("no stored zips".into()))?;
        let dir = copy
            .parent()
            .ok_or(NotTaken::Unusable("no directory".into()))?;
        // The zip's directory, if nothing of it is kept yet.
        std::fs::create_dir_all(dir).map_err(|e| unusable(&e))?;
        let kib = u32::try_from(wire_len.div_ceil(1024)).unwrap_or(u32::MAX);
        let mut packed = match st.packed.clone().try_acquire_many_owned(kib) {
            Ok(permit) => Packed::Memory(Vec::with_capacity(wire_len as usize), permit),
            Err(_) => Packed::File(keep::temp_in(dir).map_err(|e| unusable(&e))?),
        };
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| unusable(&format!("reading it: {e}")))?;
            n += chunk.len() as u64;
            if n > wire_len {
                return Err(unusable(&"longer than announced"));
            }
            match &mut packed {
                Packed::Memory(v, _) => v.extend_from_slice(&chunk),
                Packed::File(f) => f.write_all(&chunk).map_err(|e| unusable(&e))?,
            }
        }
        if n != wire_len {
            return Err(unusable(&format!("stopped at {n} of {wire_len} bytes")));
        }
        let _turn = st.turns.acquire().await.ok();
        let (copy, h1) = (copy.to_path_buf(), h1.to_string());
        tokio::task::spawn_blocking(move || {
            let from: Box<dyn Read + '_> = match &packed {
                Packed::Memory(v, _) => Box::new(&v[..]),
                Packed::File(f) => Box::new(f.reopen().map_err(|e| unusable(&e))?),
            };
            unpack_checked(from, &copy, &h1, limit)
        })
        .await
        .unwrap_or_else(|e| Err(NotTaken::Unusable(e.to_string())))
    }

    /// Copies the stored copy just made of `rel` to the bucket,
    /// compressed, in the background (when the bucket takes this server's
    /// writes); a failure is logged, and the next server to miss it makes
    /// its own.
    pub(crate) fn upload_stored_later(&self, rel: &str) {
        let Some(b) = self.keep.uploader() else {
            return;
        };
        let copy = self.keep.path(&place(rel));
        let key = b.mod_key(&bucket_place(rel));
        let uploads = self.keep.uploads.clone();
        tokio::spawn(async move {
            let _turn = uploads.acquire_owned().await;
            let Some(dir) = copy.parent().map(Path::to_path_buf) else {
                return;
            };
            let packed = tokio::task::spawn_blocking(move || pack(&copy, &dir)).await;
            let (packed, len) = match packed {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    eprintln!("gocacher serve: modproxy: {key} not made ({e}); not copied to the bucket, the next server makes its own");
                    return;
                }
                Err(_) => return,
            };
            if let Err(e) = b
                .remote
                .write_named(&key, Source::File(packed.path(), len))
                .await
            {
                eprintln!(
                    "gocacher serve: modproxy: {key} not copied to the bucket ({e}); the next server makes its own"
                );
            }
        });
    }
}

/// Unpacks the zstd frame at `packed` into `copy` (through a temp file
/// beside it, renamed into place once whole and checked): its stamp and
/// length.
fn unpack_checked(
    packed: impl Read,
    copy: &Path,
    h1: &str,
    limit: u64,
) -> Result<(Stamp, u64), NotTaken> {
    let unusable = |e: io::Error| NotTaken::Unusable(e.to_string());
    let dir = copy
        .parent()
        .ok_or(NotTaken::Unusable("no directory".into()))?;
    let mut temp = keep::temp_in(dir).map_err(unusable)?;
    let decoder = zstd::stream::read::Decoder::new(packed).map_err(unusable)?;
    let mut out = io::BufWriter::new(temp.as_file_mut());
    let n = io::copy(&mut decoder.take(limit + 1), &mut out)
        .map_err(|e| NotTaken::Refused(format!("not a zstd frame: {e}")))?;
    out.flush().map_err(unusable)?;
    drop(out);
    if n > limit {
        return Err(NotTaken::Refused(format!(
            "more than {limit} bytes unpacked"
        )));
    }
    check_stored(temp.path(), h1, limit).map_err(NotTaken::Refused)?;
    temp.persist(copy).map_err(|e| unusable(e.error))?;
    let m = std::fs::metadata(copy).map_err(unusable)?;
    Ok((sidecar::stamp(&m), m.len()))
}

/// The stored copy at `copy` compressed into a temp file in `dir`, and its
/// length.
fn pack(copy: &Path, dir: &Path) -> io::Result<(tempfile::NamedTempFile, u64)> {
    let mut from = std::fs::File::open(copy)?;
    let mut temp = keep::temp_in(dir)?;
    let mut enc = zstd::stream::write::Encoder::new(io::BufWriter::new(temp.as_file_mut()), LEVEL)?;
    io::copy(&mut from, &mut enc)?;
    enc.finish()?.flush()?;
    let len = temp.as_file().metadata()?.len();
    Ok((temp, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    /// A zip of `files`, each stored or deflated.
    fn zip_of(path: &Path, files: &[(&str, &str)], method: zip::CompressionMethod) {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        for (name, body) in files {
            let o = zip::write::SimpleFileOptions::default().compression_method(method);
            w.start_file(*name, o).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap();
    }

    fn h1(path: &Path) -> String {
        crate::modverify::zip_h1_file(path, &Default::default()).unwrap()
    }

    #[test]
    fn a_packed_copy_unpacks_to_the_same_bytes_only_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (copy, back) = (dir.path().join("copy.zip"), dir.path().join("back.zip"));
        let files = [
            ("m@v1.0.0/go.mod", "module m\n"),
            ("m@v1.0.0/a.go", "package a\n"),
        ];
        zip_of(&copy, &files, zip::CompressionMethod::Stored);
        let (packed, _) = pack(&copy, dir.path()).unwrap();
        let want = h1(&copy);
        let (stamp, n) = unpack_checked(File::open(packed.path()).unwrap(), &back, &want, 1 << 20)
            .ok()
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&copy).unwrap());
        assert_eq!(
            (stamp, n),
            (sidecar::stamp(&std::fs::metadata(&back).unwrap()), n)
        );
        std::fs::remove_file(&back).unwrap();

        let refused = |packed: &Path, want: &str, limit: u64| match unpack_checked(
            File::open(packed).unwrap(),
            &back,
            want,
            limit,
        ) {
            Err(NotTaken::Refused(why)) => why,
            Err(NotTaken::Unusable(why)) => panic!("unusable: {why}"),
            Ok(_) => panic!("taken"),
        };
        // Another hash, too small a limit, not zstd, deflated files.
        assert!(refused(packed.path(), "h1:other=", 1 << 20).contains("hash to"));
        assert!(refused(packed.path(), &want, 100).contains("more than 100"));
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not zstd").unwrap();
        assert!(refused(&junk, &want, 1 << 20).contains("zstd"));
        let deflated = dir.path().join("deflated.zip");
        zip_of(&deflated, &files, zip::CompressionMethod::Deflated);
        let (packed, _) = pack(&deflated, dir.path()).unwrap();
        assert!(refused(packed.path(), &want, 1 << 20).contains("not a file stored"));
        assert!(!back.exists());
    }

    #[test]
    fn the_bucket_place_is_beside_the_zip_under_a_name_no_request_has() {
        let rel = "example.com/!m/@v/v1.0.0.zip";
        assert_eq!(
            bucket_place(rel),
            "example.com/!m/@v/.stored-v1.0.0.zip.zst"
        );
        assert!(super::super::path::parse(&bucket_place(rel)).is_err());
    }
}
