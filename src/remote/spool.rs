//! The frames uploads compressed, kept for the pack written at close.
//!
//! A cold machine uploads every output it builds, each compressed, and at
//! close writes its scope's pack of the same outputs: compressing them all a
//! second time would double the helper's compression work on a cold build.
//! Instead each upload appends its body, as sent, to one scratch file, and
//! the pack copies those bytes. Only a machine that started with an empty
//! cache dir keeps one (any other rarely writes a pack), and only up to the
//! pack's own limits; the file goes when the process ends.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Mutex;

use crate::local::Sink;
use crate::wire::Id;

use super::pack;

/// Where one output's stored body is in the spool.
#[derive(Debug, Clone, Copy)]
struct Kept {
    offset: u64,
    len: u64,
    zstd: bool,
}

pub struct Spool {
    inner: Mutex<Inner>,
}

struct Inner {
    _scratch: tempfile::TempPath,
    file: File,
    /// The same file, opened for reading (the scratch file is write-only).
    reader: File,
    end: u64,
    frames: HashMap<Id, Kept>,
    /// Set at the first write error: the spool is then left as it is.
    broken: bool,
}

impl Spool {
    /// A spool in the cache dir, or `None` if no scratch file can be made.
    pub fn new(local: &dyn Sink) -> Option<Spool> {
        let (scratch, file) = local.scratch(None).ok()?;
        let reader = File::open(&scratch).ok()?;
        Some(Spool {
            inner: Mutex::new(Inner {
                _scratch: scratch,
                file,
                reader,
                end: 0,
                frames: HashMap::new(),
                broken: false,
            }),
        })
    }

    /// Keeps an output's body as uploaded (`zstd`: one zstd frame of the
    /// `size`-byte output; else the raw bytes), read from `src`, `len` bytes.
    /// Bodies the pack would not take are not kept. Best effort: a failure
    /// only means the pack compresses that entry itself.
    pub fn keep(&self, output: Id, size: u64, zstd: bool, len: u64, src: &mut dyn Read) {
        if size > pack::MAX_ENTRY_BYTES {
            return;
        }
        let mut s = self.inner.lock().unwrap();
        if s.broken || s.frames.contains_key(&output) || s.end + len > pack::MAX_PACK_BYTES {
            return;
        }
        let offset = s.end;
        let copied = s
            .file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| io::copy(&mut src.take(len), &mut s.file));
        match copied {
            Ok(n) if n == len => {
                s.end += len;
                s.frames.insert(output, Kept { offset, len, zstd });
            }
            _ => s.broken = true,
        }
    }

    /// Writes the kept body of `output` to `out`: its stored length and
    /// whether it is zstd; `Ok(None)` when none is kept. An error may come
    /// after some bytes were written.
    pub fn copy_to(&self, output: &Id, out: &mut dyn Write) -> io::Result<Option<(u64, bool)>> {
        let mut s = self.inner.lock().unwrap();
        let Some(f) = s.frames.get(output).copied() else {
            return Ok(None);
        };
        s.reader.seek(SeekFrom::Start(f.offset))?;
        let n = io::copy(&mut (&mut s.reader).take(f.len), out)?;
        if n != f.len {
            return Err(io::Error::other(
                "the upload spool is shorter than it was written",
            ));
        }
        Ok(Some((f.len, f.zstd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_bodies_come_back_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::disk::DiskCache::open(dir.path()).unwrap();
        let spool = Spool::new(&disk).unwrap();
        spool.keep(Id([1; 32]), 10, false, 10, &mut &b"0123456789"[..]);
        spool.keep(Id([2; 32]), 99, true, 3, &mut &b"abc"[..]);
        // A short source breaks the spool but loses what it holds.
        spool.keep(Id([3; 32]), 5, false, 5, &mut &b"xy"[..]);
        spool.keep(Id([4; 32]), 1, false, 1, &mut &b"z"[..]);
        let mut out = Vec::new();
        let mut copy = |n: u8| spool.copy_to(&Id([n; 32]), &mut out).unwrap();
        assert_eq!(copy(2), Some((3, true)));
        assert_eq!(copy(1), Some((10, false)));
        assert_eq!(copy(3), None);
        assert_eq!(copy(4), None);
        assert_eq!(out, b"abc0123456789");
        // Too big for a pack: not kept.
        let big = pack::MAX_ENTRY_BYTES + 1;
        spool.keep(Id([5; 32]), big, true, 1, &mut &b"q"[..]);
        drop(spool);
        // The scratch file goes with the spool.
        assert!(disk.temp_files().unwrap().is_empty());
    }
}
