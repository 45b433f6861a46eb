//! Whole-file writes in the cache dir: a temp file beside the target,
//! renamed into place once written, so a reader sees the old file, the new
//! one, or none.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::TEMP_PREFIX;
use crate::local::PutError;

pub(super) fn io_err(path: &Path, source: io::Error) -> PutError {
    PutError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A new temp file beside `target`, creating its directory if needed.
pub(super) fn temp_beside(target: &Path) -> Result<(Scratch, File), PutError> {
    let dir = target.parent().expect("cache paths have a shard dir");
    let tmp = match temp_builder().tempfile_in(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            temp_builder().tempfile_in(dir)
        }
        made => made,
    }
    .map_err(|e| io_err(dir, e))?;
    let (file, path) = tmp.into_parts();
    Ok((Scratch(Some(path)), file))
}

/// Writes `bytes` as the file `path`, whole or not at all, through a temp
/// file beside it: a reader sees no file, or the old one, or the new one.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_whole(path, bytes).map_err(into_io)
}

/// [`write_file`], with the path in the error.
pub(super) fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), PutError> {
    let (mut guard, mut file) = temp_beside(path)?;
    file.write_all(bytes).map_err(|e| io_err(guard.path(), e))?;
    drop(file);
    guard.commit(path)
}

pub(super) fn into_io(e: PutError) -> io::Error {
    match e {
        PutError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// Temp files in the cache dir: a random name after [`TEMP_PREFIX`]
/// (which trim and the index skip), created exclusively, so concurrent
/// writers, threads or processes, never share one. Their mode is a plain
/// create's (0666 less the umask), not tempfile's 0600: an entry renamed
/// into place is as readable as Go's own cache files.
pub(super) fn temp_builder() -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(TEMP_PREFIX);
    #[cfg(unix)]
    b.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    b
}

/// A temp file in the cache dir, removed when dropped unless committed.
pub struct Scratch(pub(super) Option<tempfile::TempPath>);

impl Scratch {
    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("temp file not yet committed")
    }

    /// Renames the temp file onto `target`, atomically replacing it. On
    /// failure it stays, to be removed on drop.
    pub fn commit_to(&mut self, target: &Path) -> io::Result<()> {
        let tmp = self.0.take().expect("temp file not yet committed");
        tmp.persist(target).map_err(|e| {
            self.0 = Some(e.path);
            e.error
        })
    }

    /// [`Scratch::commit_to`], for the writers in this module.
    pub(super) fn commit(&mut self, target: &Path) -> Result<(), PutError> {
        self.commit_to(target).map_err(|e| io_err(target, e))
    }
}
