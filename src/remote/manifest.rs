//! Build manifests: which entries a go command used, per scope, so that the
//! next go command in that scope can download them before it asks.
//!
//! One object per scope, `[PREFIX/]gocacher/v1/manifests/<hash>`, where
//! `<hash>` is the first 32 hex digits of sha256(scope). Its body is one zstd
//! frame of:
//!
//! ```text
//! "gocacher-manifest 2\n"
//! generation  u64 LE   (1 for the first manifest of a scope, +1 per write)
//! scope       [16]     the first 16 bytes of sha256(scope name): the name
//!                      itself (a path, a repository, a job) never leaves
//!                      the machine
//! count       u32 LE, then `count` records of 88 bytes:
//!   action [32]  output [32]  size u64 LE  last_gen u64 LE  last_used u64 LE
//!   flags u8 (bit 0: some go command got this entry, not only put it)
//! signature   [64]     ed25519 signature of the sha256 of all the above
//!                      (zeros from a writer without --sign-key)
//! ```
//!
//! Records are in prefetch order: the entries of the latest go command in
//! the order it first used them, then older entries still kept.
//! `last_used` is seconds since the Unix epoch.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::wire::Id;

const MAGIC: &[u8] = b"gocacher-manifest 2\n";
const SIG_LEN: usize = crate::trust::SIG_LEN;
const RECORD: usize = 32 + 32 + 8 + 8 + 8 + 1;
const FLAG_GOTTEN: u8 = 1;

/// Most entries a manifest keeps: room for a large monorepo's
/// `go test ./...`, and a bound on what one manifest costs to read.
pub const MAX_ENTRIES: usize = 100_000;

/// An entry not used by this many of the scope's latest go commands is dropped.
pub const MAX_IDLE_RUNS: u64 = 20;

/// An entry not used for this long is dropped.
pub const MAX_IDLE_SECS: u64 = 7 * 86_400;

/// A manifest that would not change is still rewritten after this long, so
/// its entries' last-use times stay fresh (well within [`MAX_IDLE_SECS`]).
pub const REWRITE_SECS: u64 = 86_400;

/// Largest object read as a manifest (compressed); anything bigger is not one.
pub const MAX_OBJECT_BYTES: usize = 32 << 20;

/// Largest output size a record may claim.
const MAX_SIZE: u64 = 1 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub action: Id,
    pub output: Id,
    pub size: u64,
    /// The generation of the last manifest write whose go command used it.
    pub last_gen: u64,
    pub last_used: u64,
    /// Some go command asked for it. cmd/go puts some entries it never gets
    /// back in a warm build; those are dropped once a run like the last one
    /// has not asked for them.
    pub gotten: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub generation: u64,
    /// [`scope_hash`] of the scope's name.
    pub scope: [u8; 16],
    pub entries: Vec<Record>,
}

/// Why a manifest was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a manifest, or a damaged one: what is wrong.
    Damaged(String),
    /// A well-formed manifest no `--trust-key` signed.
    Untrusted,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Damaged(why) => f.write_str(why),
            Refused::Untrusted => f.write_str("not signed by a trusted key"),
        }
    }
}

impl From<String> for Refused {
    fn from(why: String) -> Refused {
        Refused::Damaged(why)
    }
}

/// What a manifest records of its scope's name: the first 16 bytes of its
/// sha256 (as in the object's key).
pub fn scope_hash(scope: &str) -> [u8; 16] {
    Sha256::digest(scope.as_bytes())[..16].try_into().unwrap()
}

/// An entry a go command used, in order of first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    pub action: Id,
    pub output: Id,
    pub size: u64,
    /// Got (a hit), not only put.
    pub gotten: bool,
}

/// The object key of a scope's manifest under `prefix`.
pub fn key(prefix: &str, scope: &str) -> String {
    scoped_key(prefix, "manifests", scope)
}

/// `[prefix/]gocacher/v1/<kind>/<first 32 hex digits of sha256(scope)>`.
pub fn scoped_key(prefix: &str, kind: &str, scope: &str) -> String {
    let hash = hex::encode(scope_hash(scope));
    if prefix.is_empty() {
        format!("gocacher/v1/{kind}/{hash}")
    } else {
        format!("{prefix}/gocacher/v1/{kind}/{hash}")
    }
}

impl Manifest {
    /// This go command's entries first, then the previous manifest's entries
    /// it did not use, unless they have been idle too long, or were only
    /// ever put and this go command, which used at least half of what the
    /// last one did, did not ask for them; at most [`MAX_ENTRIES`].
    /// `used` has one item per action (see `Usage`).
    pub fn merge(previous: Option<&Manifest>, used: &[Used], scope: &str, now: u64) -> Manifest {
        let generation = previous.map_or(1, |p| p.generation + 1);
        let mut seen = HashSet::with_capacity(used.len());
        let mut entries = Vec::with_capacity(used.len());
        let before: std::collections::HashMap<Id, &Record> = previous
            .map(|p| p.entries.iter().map(|e| (e.action, e)).collect())
            .unwrap_or_default();
        for u in used {
            if seen.insert(u.action) {
                entries.push(Record {
                    action: u.action,
                    output: u.output,
                    size: u.size,
                    last_gen: generation,
                    last_used: now,
                    gotten: u.gotten || before.get(&u.action).is_some_and(|e| e.gotten),
                });
            }
        }
        if let Some(prev) = previous {
            let last_run = prev
                .entries
                .iter()
                .filter(|e| e.last_gen == prev.generation);
            let (mut last, mut again) = (0usize, 0usize);
            for e in last_run {
                last += 1;
                again += seen.contains(&e.action) as usize;
            }
            let like_last = last > 0 && again * 2 >= last;
            for e in &prev.entries {
                let idle_runs = generation.saturating_sub(e.last_gen);
                let idle_secs = now.saturating_sub(e.last_used);
                if idle_runs <= MAX_IDLE_RUNS
                    && idle_secs <= MAX_IDLE_SECS
                    && (e.gotten || !like_last)
                    && seen.insert(e.action)
                {
                    entries.push(*e);
                }
            }
        }
        entries.truncate(MAX_ENTRIES);
        Manifest {
            generation,
            scope: scope_hash(scope),
            entries,
        }
    }

    /// Whether writing `next` (the merge of this manifest with a go
    /// command's entries) can be skipped: it lists the same entries, with
    /// the same outputs and flags, and this one was written less than
    /// [`REWRITE_SECS`] ago. A warm go command that used what the last one
    /// did then costs no PUT at close; the generations it would have
    /// counted only slow down aging.
    pub fn covers(&self, next: &Manifest, now: u64) -> bool {
        let written = self.entries.iter().map(|e| e.last_used).max().unwrap_or(0);
        if now.saturating_sub(written) > REWRITE_SECS || self.entries.len() != next.entries.len() {
            return false;
        }
        let mine: std::collections::HashMap<Id, (Id, bool)> = self
            .entries
            .iter()
            .map(|e| (e.action, (e.output, e.gotten)))
            .collect();
        next.entries
            .iter()
            .all(|e| mine.get(&e.action) == Some(&(e.output, e.gotten)))
    }

    /// The object's bytes, signed by `signer` if given.
    pub fn encode(&self, signer: Option<&crate::trust::Signer>) -> Vec<u8> {
        let mut raw = Vec::with_capacity(MAGIC.len() + 28 + self.entries.len() * RECORD + SIG_LEN);
        raw.extend_from_slice(MAGIC);
        raw.extend_from_slice(&self.generation.to_le_bytes());
        raw.extend_from_slice(&self.scope);
        raw.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            raw.extend_from_slice(&e.action.0);
            raw.extend_from_slice(&e.output.0);
            raw.extend_from_slice(&e.size.to_le_bytes());
            raw.extend_from_slice(&e.last_gen.to_le_bytes());
            raw.extend_from_slice(&e.last_used.to_le_bytes());
            raw.push(if e.gotten { FLAG_GOTTEN } else { 0 });
        }
        let sum: [u8; 32] = Sha256::digest(&raw).into();
        raw.extend_from_slice(&signer.map_or([0; SIG_LEN], |s| s.sign_manifest(&sum)));
        zstd::bulk::compress(&raw, 3).expect("zstd compression of an in-memory buffer")
    }

    /// Parses a manifest object; any damage is an error that says what.
    /// With `trust`, only a manifest one of its keys signed is taken.
    pub fn decode(body: &[u8], trust: Option<&crate::trust::Trust>) -> Result<Manifest, Refused> {
        if body.len() > MAX_OBJECT_BYTES {
            return Err(format!("{} bytes, more than a manifest can be", body.len()).into());
        }
        let limit = MAGIC.len() + 28 + MAX_ENTRIES * RECORD + SIG_LEN;
        let raw = zstd::bulk::decompress(body, limit).map_err(|e| format!("not zstd: {e}"))?;
        if raw.len() < SIG_LEN {
            return Err("truncated".to_string().into());
        }
        let (content, sig) = raw.split_at(raw.len() - SIG_LEN);
        let mut r = Cursor {
            buf: content,
            pos: 0,
        };
        if r.take(MAGIC.len())? != MAGIC {
            return Err("not a gocacher manifest (wrong header)".to_string().into());
        }
        let generation = r.u64()?;
        let scope: [u8; 16] = r.take(16)?.try_into().unwrap();
        let count = r.u32()? as usize;
        if count > MAX_ENTRIES || content.len() - r.pos != count * RECORD {
            return Err(format!(
                "{count} entries announced, {} bytes of records",
                content.len() - r.pos
            )
            .into());
        }
        if let Some(trust) = trust {
            let sum: [u8; 32] = Sha256::digest(content).into();
            if !trust.manifest(&sum, sig.try_into().unwrap()) {
                return Err(Refused::Untrusted);
            }
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let action = Id(r.take(32)?.try_into().unwrap());
            let output = Id(r.take(32)?.try_into().unwrap());
            let size = r.u64()?;
            if size > MAX_SIZE {
                return Err(format!("an entry claims {size} bytes").into());
            }
            entries.push(Record {
                action,
                output,
                size,
                last_gen: r.u64()?,
                last_used: r.u64()?,
                gotten: r.take(1)?[0] & FLAG_GOTTEN != 0,
            });
        }
        Ok(Manifest {
            generation,
            scope,
            entries,
        })
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| "truncated".to_string())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(n: u8) -> Used {
        Used {
            action: Id([n; 32]),
            output: Id([n.wrapping_add(100); 32]),
            size: n as u64 * 10,
            gotten: true,
        }
    }

    fn put(n: u8) -> Used {
        Used {
            gotten: false,
            ..used(n)
        }
    }

    fn actions(m: &Manifest) -> Vec<u8> {
        m.entries.iter().map(|e| e.action.0[0]).collect()
    }

    #[test]
    fn round_trip() {
        let m = Manifest::merge(None, &[used(1), put(2), used(1)], "scope/x", 1000);
        assert_eq!(m.generation, 1);
        assert_eq!(actions(&m), [1, 2], "duplicates keep their first use");
        assert!(m.entries[0].gotten && !m.entries[1].gotten);
        assert_eq!(Manifest::decode(&m.encode(None), None), Ok(m));
    }

    #[test]
    fn a_smaller_run_does_not_clobber() {
        let big = Manifest::merge(None, &[used(1), used(2), used(3)], "s", 1000);
        let small = Manifest::merge(Some(&big), &[used(3)], "s", 2000);
        assert_eq!(small.generation, 2);
        assert_eq!(actions(&small), [3, 1, 2], "this run's entries first");
        assert_eq!(small.entries[0].last_used, 2000);
        assert_eq!(small.entries[1].last_used, 1000);
    }

    #[test]
    fn entries_only_put_go_when_a_like_run_skips_them() {
        let cold = Manifest::merge(None, &[put(1), put(2), put(3), put(4)], "s", 1);
        // A small run (1 of 4) keeps everything.
        let small = Manifest::merge(Some(&cold), &[used(1)], "s", 2);
        assert_eq!(actions(&small), [1, 2, 3, 4]);
        // A run like the cold one got 1-3 back, never 4.
        let warm = Manifest::merge(Some(&cold), &[used(1), used(2), used(3)], "s", 2);
        assert_eq!(actions(&warm), [1, 2, 3]);
        // Entries got once stay through unlike runs.
        let other = Manifest::merge(Some(&warm), &[used(5), used(6), used(7), used(8)], "s", 3);
        assert_eq!(actions(&other), [5, 6, 7, 8, 1, 2, 3]);
    }

    #[test]
    fn idle_entries_age_out() {
        let mut m = Manifest::merge(None, &[used(1), used(2)], "s", 1000);
        for _ in 0..MAX_IDLE_RUNS {
            m = Manifest::merge(Some(&m), &[used(2)], "s", 1000);
        }
        assert_eq!(actions(&m), [2, 1], "idle for exactly the limit: kept");
        m = Manifest::merge(Some(&m), &[used(2)], "s", 1000);
        assert_eq!(actions(&m), [2]);
        let later = Manifest::merge(Some(&m), &[used(3)], "s", 1000 + MAX_IDLE_SECS + 1);
        assert_eq!(actions(&later), [3], "a week idle: dropped");
    }

    #[test]
    fn unchanged_merges_need_no_write() {
        let m = Manifest::merge(None, &[used(1), used(2), put(3)], "s", 1000);
        // The same entries again, in another order: nothing new.
        let again = Manifest::merge(Some(&m), &[used(2), used(1), put(3)], "s", 2000);
        assert!(m.covers(&again, 2000));
        // A new entry, a changed output, or a put entry now got: write.
        let more = Manifest::merge(Some(&m), &[used(4)], "s", 2000);
        assert!(!m.covers(&more, 2000));
        let mut changed = used(1);
        changed.output = Id([9; 32]);
        let other = Manifest::merge(Some(&m), &[changed], "s", 2000);
        assert!(!m.covers(&other, 2000));
        let got = Manifest::merge(Some(&m), &[used(3)], "s", 2000);
        assert!(!m.covers(&got, 2000));
        // Unchanged but written over a day ago: write, to keep it fresh.
        let late = 1000 + REWRITE_SECS + 1;
        let again = Manifest::merge(Some(&m), &[used(1)], "s", late);
        assert!(!m.covers(&again, late));
    }

    #[test]
    fn damage_is_an_error() {
        let good = Manifest::merge(None, &[used(1), used(2)], "s", 1).encode(None);
        assert!(Manifest::decode(b"garbage", None).is_err());
        assert!(Manifest::decode(&good[..good.len() / 2], None).is_err());
        let mut raw = zstd::bulk::decompress(&good, 1 << 20).unwrap();
        raw.remove(raw.len() - SIG_LEN - 1);
        let e = Manifest::decode(&zstd::bulk::compress(&raw, 1).unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("entries announced"), "{e}");
        raw[0] = b'G';
        let e = Manifest::decode(&zstd::bulk::compress(&raw, 1).unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
    }

    #[test]
    fn trust_takes_only_signed_manifests_and_no_name_is_stored() {
        use crate::trust::{Signer, Trust};
        let key = Signer::from_hex(&"31".repeat(32)).unwrap();
        let other = Signer::from_hex(&"32".repeat(32)).unwrap();
        let trust = Trust::parse(&[key.public_hex()]).unwrap();
        let m = Manifest::merge(None, &[used(1), used(2)], "github:secret/repo:job", 1);
        assert_eq!(
            Manifest::decode(&m.encode(Some(&key)), Some(&trust)),
            Ok(m.clone())
        );
        for body in [m.encode(None), m.encode(Some(&other))] {
            assert_eq!(
                Manifest::decode(&body, Some(&trust)),
                Err(Refused::Untrusted)
            );
            assert_eq!(Manifest::decode(&body, None), Ok(m.clone()));
        }
        // A signed manifest with one byte changed is not trusted.
        let mut raw = zstd::bulk::decompress(&m.encode(Some(&key)), 1 << 20).unwrap();
        raw[MAGIC.len()] ^= 1;
        let body = zstd::bulk::compress(&raw, 1).unwrap();
        assert_eq!(
            Manifest::decode(&body, Some(&trust)),
            Err(Refused::Untrusted)
        );
        let raw = zstd::bulk::decompress(&m.encode(None), 1 << 20).unwrap();
        assert!(
            !raw.windows(6).any(|w| w == b"secret"),
            "the scope name is in the object"
        );
        assert_eq!(m.scope, scope_hash("github:secret/repo:job"));
    }

    #[test]
    fn keys_hash_the_scope() {
        let k = key("ci", "github:o/r");
        assert!(k.starts_with("ci/gocacher/v1/manifests/"), "{k}");
        assert_eq!(k.len(), "ci/gocacher/v1/manifests/".len() + 32);
        assert_ne!(k, key("ci", "github:o/s"));
        assert!(key("", "x").starts_with("gocacher/v1/manifests/"));
    }
}
