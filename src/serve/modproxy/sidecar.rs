//! The sidecar kept beside each `.info`, `.mod` and `.zip`, on disk and in
//! the bucket (docs/FORMAT.md): `<version>.<ext>hash` in the same `@v/`
//! directory (as Go's own module cache keeps `<version>.ziphash`), so the
//! GOPROXY layout stays a valid `GOPROXY=file://` tree. It records the
//! file's size and SHA-256 (what every later read is checked against), its
//! `h1:` hash and the checksum database that proved it, and, with
//! `--sign-key`, a signature over all of that and the file's place.
//!
//! A read from the bucket hashes the object as it is copied to disk. A read
//! from disk is checked by the file's size, modification time and inode
//! against the last time it was hashed (a memo in memory): hashing a zip
//! on every request would read it twice, while any write, truncation or
//! replacement changes one of the three. The first read after a start
//! hashes the file whole.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::trust::{sig_from_hex, Signer, Trust, SIG_LEN};

const FIRST_LINE: &str = "gocacher module file v1";
/// The most a sidecar may hold (a signed one is under 400 bytes).
pub(crate) const MAX_SIDECAR: u64 = 4096;

/// The place of the sidecar of the kept file at `rel`; `None` for sumdb
/// tiles, which every reader checks against the signed tree head itself.
pub(crate) fn place(rel: &str) -> Option<String> {
    if rel.starts_with("sumdb/") || !rel.contains("/@v/") {
        return None;
    }
    [".zip", ".mod", ".info"]
        .iter()
        .any(|e| rel.ends_with(e))
        .then(|| format!("{rel}hash"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sidecar {
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
    /// The file's `h1:` hash (a `.zip` or `.mod`); `None` for an `.info`.
    pub(crate) h1: Option<String>,
    /// The checksum database that proved `h1`; `None`: not checked
    /// against one (an `.info`, GONOSUMDB, GOSUMDB=off).
    pub(crate) sumdb: Option<String>,
    pub(crate) sig: Option<[u8; SIG_LEN]>,
}

impl Sidecar {
    /// The signed text: every line but the signature.
    fn text(&self) -> String {
        format!(
            "{FIRST_LINE}\nsize {}\nsha256 {}\nh1 {}\nsumdb {}\n",
            self.size,
            hex::encode(self.sha256),
            self.h1.as_deref().unwrap_or("-"),
            self.sumdb.as_deref().unwrap_or("-"),
        )
    }

    pub(crate) fn render(&self) -> Vec<u8> {
        let mut t = self.text();
        if let Some(s) = &self.sig {
            t.push_str(&format!("sig {}\n", hex::encode(s)));
        }
        t.into_bytes()
    }

    /// Signs the sidecar of the file at `rel`.
    pub(crate) fn sign(&mut self, rel: &str, signer: &Signer) {
        self.sig = Some(signer.sign_module(rel, self.text().as_bytes()));
    }

    /// Whether the sidecar is signed, for the file at `rel`, by a key of
    /// `trust`.
    pub(crate) fn signed_by(&self, rel: &str, trust: &Trust) -> bool {
        self.sig
            .as_ref()
            .is_some_and(|s| trust.module(rel, self.text().as_bytes(), s))
    }

    /// Reads a sidecar; only the exact form [`Sidecar::render`] writes is
    /// taken, so the signed text is never ambiguous.
    pub(crate) fn parse(b: &[u8]) -> Result<Sidecar, String> {
        let text = std::str::from_utf8(b).map_err(|_| "the sidecar is not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(FIRST_LINE) {
            return Err(format!("the sidecar does not start {FIRST_LINE:?}"));
        }
        let mut field = |name: &str| -> Result<String, String> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| format!("the sidecar has no {name} line where expected"))
        };
        let size = field("size")?
            .parse()
            .map_err(|_| "the sidecar's size is not a number".to_string())?;
        let sha256 = hex::decode(field("sha256")?)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| "the sidecar's sha256 is not 64 hex digits".to_string())?;
        let opt = |v: String| (v != "-").then_some(v);
        let h1 = opt(field("h1")?);
        let sumdb = opt(field("sumdb")?);
        let sig = match field("sig") {
            Ok(s) => Some(sig_from_hex(&s).ok_or("the sidecar's sig is not 128 hex digits")?),
            Err(_) => None,
        };
        let s = Sidecar {
            size,
            sha256,
            h1,
            sumdb,
            sig,
        };
        if s.render() != b {
            return Err("the sidecar is not in the form gocacher writes".into());
        }
        Ok(s)
    }

    /// Whether a file of `size` bytes hashing to `sha256` is this one's;
    /// the reason if not.
    pub(crate) fn matches(&self, size: u64, sha256: &[u8; 32]) -> Result<(), String> {
        if size != self.size {
            return Err(format!(
                "it has {size} bytes, its sidecar says {}",
                self.size
            ));
        }
        if sha256 != &self.sha256 {
            return Err(format!(
                "its sha256 is {}, its sidecar says {}",
                hex::encode(sha256),
                hex::encode(self.sha256)
            ));
        }
        Ok(())
    }
}

/// A file's size and SHA-256.
pub(crate) fn sha256_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok((n, h.finalize().into()));
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
}

/// What changes when a file is written, cut or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Stamp {
    len: u64,
    mtime: Option<std::time::SystemTime>,
    ino: u64,
}

pub(crate) fn stamp(m: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(m);
    #[cfg(not(unix))]
    let ino = 0;
    Stamp {
        len: m.len(),
        mtime: m.modified().ok(),
        ino,
    }
}

/// A kept file on disk, checked against its sidecar.
#[derive(Debug)]
pub(crate) enum OnDisk {
    /// It matches: its length and stamp.
    Good(u64, Stamp),
    /// The file or its sidecar is not there.
    Absent,
    /// It does not match its sidecar (both are removed): why.
    Refused(String),
}

/// Checks the file at `path` against its sidecar at `side`, hashing it
/// unless it still has the stamp `memo` it had when last hashed.
pub(crate) fn check_on_disk(path: &Path, side: &Path, memo: Option<Stamp>) -> OnDisk {
    let Ok(m) = std::fs::metadata(path) else {
        return OnDisk::Absent;
    };
    if !m.is_file() {
        return OnDisk::Absent;
    }
    let before = stamp(&m);
    if memo == Some(before) {
        return OnDisk::Good(m.len(), before);
    }
    let text = match std::fs::read(side) {
        Ok(t) => t,
        Err(_) => return OnDisk::Absent,
    };
    let refuse = |why: String| {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(side);
        OnDisk::Refused(why)
    };
    let car = match Sidecar::parse(&text) {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    match sha256_file(path) {
        Ok((n, sum)) => match car.matches(n, &sum) {
            Ok(()) => OnDisk::Good(n, before),
            Err(e) => refuse(e),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => OnDisk::Absent,
        Err(e) => refuse(format!("reading it: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn car() -> Sidecar {
        Sidecar {
            size: 12,
            sha256: [7; 32],
            h1: Some("h1:abc=".into()),
            sumdb: Some("sum.example.org".into()),
            sig: None,
        }
    }

    #[test]
    fn sidecars_round_trip_and_sign() {
        let c = car();
        assert_eq!(Sidecar::parse(&c.render()).unwrap(), c);
        let info = Sidecar {
            h1: None,
            sumdb: None,
            ..car()
        };
        assert!(String::from_utf8(info.render())
            .unwrap()
            .contains("h1 -\nsumdb -\n"));
        assert_eq!(Sidecar::parse(&info.render()).unwrap(), info);

        let signer = Signer::from_hex(&hex::encode([1u8; 32])).unwrap();
        let trust = Trust::parse(&[signer.public_hex()]).unwrap();
        let mut s = car();
        assert!(!s.signed_by("m/@v/v1.0.0.zip", &trust), "unsigned");
        s.sign("m/@v/v1.0.0.zip", &signer);
        let back = Sidecar::parse(&s.render()).unwrap();
        assert!(back.signed_by("m/@v/v1.0.0.zip", &trust));
        assert!(!back.signed_by("m/@v/v1.0.1.zip", &trust), "moved");
        let other = Trust::parse(&[hex::encode([9u8; 32])]).unwrap();
        assert!(!back.signed_by("m/@v/v1.0.0.zip", &other), "another key");
        let changed = Sidecar { size: 13, ..back };
        assert!(!changed.signed_by("m/@v/v1.0.0.zip", &trust), "changed");

        for bad in [
            "",
            "gocacher module file v2\n",
            "gocacher module file v1\nsize x\n",
            "gocacher module file v1\nsize 1\nsha256 00\nh1 -\nsumdb -\n",
        ] {
            assert!(Sidecar::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let mut extra = c.render();
        extra.extend_from_slice(b"more\n");
        assert!(Sidecar::parse(&extra).is_err());
    }

    #[test]
    fn places_are_beside_module_files_only() {
        assert_eq!(place("m/@v/v1.0.0.zip").unwrap(), "m/@v/v1.0.0.ziphash");
        assert_eq!(place("m/@v/v1.0.0.mod").unwrap(), "m/@v/v1.0.0.modhash");
        assert_eq!(place("m/@v/v1.0.0.info").unwrap(), "m/@v/v1.0.0.infohash");
        assert_eq!(place("sumdb/sum.example.org/tile/8/0/000"), None);
    }

    #[test]
    fn disk_copies_are_checked_and_memoized() {
        let dir = tempfile::tempdir().unwrap();
        let (f, side) = (dir.path().join("v.zip"), dir.path().join("v.ziphash"));
        std::fs::write(&f, b"hello world!").unwrap();
        assert!(matches!(check_on_disk(&f, &side, None), OnDisk::Absent));
        let (n, sum) = sha256_file(&f).unwrap();
        let c = Sidecar {
            size: n,
            sha256: sum,
            ..car()
        };
        std::fs::write(&side, c.render()).unwrap();
        let OnDisk::Good(12, st) = check_on_disk(&f, &side, None) else {
            panic!()
        };
        // Unchanged: the memo answers without reading the sidecar.
        std::fs::write(&side, b"junk").unwrap();
        assert!(matches!(
            check_on_disk(&f, &side, Some(st)),
            OnDisk::Good(12, _)
        ));
        std::fs::write(&side, c.render()).unwrap();
        // Cut short: refused, both removed.
        std::fs::write(&f, b"hello").unwrap();
        let OnDisk::Refused(why) = check_on_disk(&f, &side, Some(st)) else {
            panic!()
        };
        assert!(why.contains("5 bytes"), "{why}");
        assert!(!f.exists() && !side.exists());
    }
}
