//! The `h1:` hash of a module zip and of a `.mod` file, as go.sum and the
//! checksum database record them (golang.org/x/mod/sumdb/dirhash, Hash1).
//!
//! Hash1 lists the files, sorts their names bytewise, writes one line per
//! file, `<sha256 hex of its content>  <name>\n`, and is `h1:` followed by
//! the standard base64 of the SHA-256 of those lines. For a zip the names
//! are the entries' names as stored (`module@version/...`, every entry,
//! directories included, as Go's `HashZip` lists them); a `.mod` file is
//! hashed as the one file `go.mod`.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::Error;

/// Go's bound on a module zip and on the total size of its files
/// (`MaxZipFile` in golang.org/x/mod/zip): the go command refuses either
/// above it, so nothing above it is worth keeping.
pub const GO_MAX_ZIP: u64 = 500 << 20;

/// What a zip may cost to hash.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest zip, in bytes, the caller will read; Go's own bound
    /// ([`GO_MAX_ZIP`]) applies as well, whichever is lower.
    pub max_zip: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_zip: GO_MAX_ZIP,
        }
    }
}

/// The `h1:` of one file named `go.mod` holding `content`: the hash on a
/// go.sum `/go.mod` line.
pub fn mod_h1(content: &[u8]) -> String {
    let mut lines = Sha256::new();
    push_line(&mut lines, &Sha256::digest(content).into(), b"go.mod");
    finish(lines)
}

/// The `h1:` of the module zip at `path`.
pub fn zip_h1_file(path: &Path, limits: &Limits) -> Result<String, Error> {
    let file = std::fs::File::open(path).map_err(Error::Io)?;
    zip_h1(io::BufReader::new(file), limits)
}

/// The `h1:` of a module zip read from `reader`.
///
/// Refused before anything is decompressed: a zip over the limit, an entry
/// name with a newline (Go cannot hash it), a name that is not UTF-8, two
/// entries of one name or an entry with a second name in an extra field
/// (neither in a zip the go command makes, and this reader would not list
/// them as Go's does), and a total declared size of the entries over Go's
/// bound. While hashing, an entry whose content is
/// not exactly its declared size, or fails its CRC, is refused, so what is
/// read never exceeds the declared total.
pub fn zip_h1<R: Read + Seek>(mut reader: R, limits: &Limits) -> Result<String, Error> {
    let max_zip = limits.max_zip.min(GO_MAX_ZIP);
    let len = reader.seek(SeekFrom::End(0)).map_err(Error::Io)?;
    if len > max_zip {
        return Err(Error::TooLarge(format!(
            "the zip is {len} bytes, over the limit of {max_zip}"
        )));
    }
    reader.seek(SeekFrom::Start(0)).map_err(Error::Io)?;
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|e| Error::BadZip(format!("not a zip: {e}")))?;
    // The archive keeps one entry per name, so Go's count of lines and
    // ours would differ.
    if archive.has_duplicate_names() {
        return Err(Error::BadZip("two entries have one name".into()));
    }

    // The names and declared sizes first, from the central directory.
    let mut entries: Vec<(String, usize)> = Vec::with_capacity(archive.len());
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| Error::BadZip(format!("entry {i}: {e}")))?;
        // Go hashes the name in the header; an Info-ZIP Unicode Path field
        // would give the entry another name here.
        if entry
            .extra_data_fields()
            .any(|f| matches!(f, zip::ExtraField::UnicodePath(_)))
        {
            return Err(Error::BadZip(format!(
                "entry {i} has a second name (a Unicode Path field)"
            )));
        }
        let name = std::str::from_utf8(entry.name_raw())
            .map_err(|_| Error::BadZip(format!("entry {i}'s name is not UTF-8")))?
            .to_owned();
        if name.contains('\n') {
            return Err(Error::BadZip(format!(
                "entry name {name:?} has a newline, which an h1 hash cannot list"
            )));
        }
        total = total.saturating_add(entry.size());
        if total > GO_MAX_ZIP {
            return Err(Error::TooLarge(format!(
                "the zip's files add up to more than {GO_MAX_ZIP} bytes unpacked"
            )));
        }
        entries.push((name, i));
    }
    entries.sort_unstable();

    let mut lines = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    for (name, i) in &entries {
        let mut entry = archive
            .by_index(*i)
            .map_err(|e| Error::BadZip(format!("{name}: {e}")))?;
        let declared = entry.size();
        let mut file = Sha256::new();
        let mut read: u64 = 0;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| Error::BadZip(format!("{name}: {e}")))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            if read > declared {
                return Err(Error::BadZip(format!(
                    "{name} unpacks to more than its declared {declared} bytes"
                )));
            }
            file.update(&buf[..n]);
        }
        if read != declared {
            return Err(Error::BadZip(format!(
                "{name} unpacks to {read} bytes, not its declared {declared}"
            )));
        }
        push_line(&mut lines, &file.finalize().into(), name.as_bytes());
    }
    Ok(finish(lines))
}

/// The `h1:` of files given by name and SHA-256 of their contents, in any
/// order (names must hold no newline).
pub fn files_h1(mut files: Vec<(String, [u8; 32])>) -> String {
    files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut lines = Sha256::new();
    for (name, digest) in &files {
        push_line(&mut lines, digest, name.as_bytes());
    }
    finish(lines)
}

fn push_line(lines: &mut Sha256, digest: &[u8; 32], name: &[u8]) {
    lines.update(hex::encode(digest).as_bytes());
    lines.update(b"  ");
    lines.update(name);
    lines.update(b"\n");
}

fn finish(lines: Sha256) -> String {
    format!("h1:{}", STANDARD.encode(lines.finalize()))
}
