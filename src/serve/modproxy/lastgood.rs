//! Mutable answers as they were last good, kept so that a server whose
//! upstream fails still answers from what it (or another server on the
//! same bucket) saw before:
//!
//! - `<module>/@v/list`: the upstream's last good list, on disk and in the
//!   bucket at its GOPROXY place, rewritten only when it changes. While the
//!   upstream fails, `list` answers the versions of it (and of the disk)
//!   whose `.mod` is kept, and `@latest` the `.info` of the version go
//!   itself would pick among them.
//! - `sumdb/<name>/supported`: kept once the upstream said so, since go
//!   asks it before any lookup and gives the database up on an error.
//! - `sumdb/<name>/lookup/<module>@<version>`: the first good answer,
//!   kept once. Its signed tree head may be older than one a client has
//!   seen; go accepts it after checking that the older tree is a prefix of
//!   the newer one, with tiles this server keeps.
//!
//! Partial tiles need nothing here: a tile at a given width never changes,
//! so they are kept like full ones.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::keep::Scratch;
use super::path::{canonical, escape, unescape, Ask, Ext, SumdbKind};
use super::semver::semver_cmp;
use super::upstream::MAX_SMALL;
use super::ModProxy;
use crate::remote::store::Fetched;

/// Versions of a kept list looked for in the bucket, newest first, when
/// the upstream fails.
const CHECKED_VERSIONS: usize = 64;
/// Kept versions whose `.info` `@latest` tries, newest first.
const LATEST_TRIES: usize = 3;

/// Where a mutable answer is kept once good, relative to the module store;
/// `None` for one that is not kept.
pub(crate) fn last_good_at(ask: &Ask) -> Option<String> {
    match ask {
        Ask::List { module } => Some(format!("{module}/@v/list")),
        Ask::Sumdb {
            name,
            rest,
            kind: SumdbKind::Mutable,
        } if rest.starts_with("lookup/") && !rest.ends_with("/go.mod") => {
            Some(format!("sumdb/{name}/{rest}"))
        }
        Ask::Sumdb {
            name,
            kind: SumdbKind::Supported,
            ..
        } => Some(format!("sumdb/{name}/supported")),
        _ => None,
    }
}

impl ModProxy {
    /// Keeps a good upstream answer to a mutable request, when it is one
    /// worth keeping and differs from what is kept (a lookup is kept
    /// once). The disk copy is written before this returns; the bucket's
    /// in the background.
    pub(super) async fn remember(&self, ask: &Ask, body: &Bytes) {
        let Some(rel) = last_good_at(ask) else {
            return;
        };
        let path = self.keep.path(&rel);
        let once = matches!(ask, Ask::Sumdb { .. });
        match tokio::fs::read(&path).await {
            Ok(_) if once => return,
            Ok(old) if old == body.as_ref() => return,
            _ => {}
        }
        let written = self.keep.scratch(&rel).and_then(|mut s: Scratch| {
            std::io::Write::write_all(s.file.as_file_mut(), body)?;
            s.commit()
        });
        match written {
            Ok(()) => self.keep.upload_later(&rel, body.len() as u64),
            Err(e) => eprintln!(
                "gocacher serve: modproxy: {rel} not kept on the server's disk ({e}); it is fetched from the upstream again next time"
            ),
        }
    }

    /// A kept mutable answer, from disk or else the bucket (then kept on
    /// disk too).
    async fn last_good(&self, rel: &str) -> Option<Bytes> {
        if let Ok(b) = tokio::fs::read(self.keep.path(rel)).await {
            return Some(Bytes::from(b));
        }
        let b = self.keep.bucket.as_ref().filter(|b| b.remote.may_read())?;
        let key = b.mod_key(rel);
        let body = match b.remote.read_named(&key).await {
            Ok(Fetched::Found { body, .. }) => body,
            Ok(Fetched::Missing) => return None,
            Err(e) => {
                eprintln!("gocacher serve: modproxy: reading {key} from the bucket failed ({e}); answering without it");
                return None;
            }
        };
        match body.collect(&key, MAX_SMALL).await {
            Ok(v) => {
                self.counts.from_bucket.fetch_add(1, Ordering::Relaxed);
                let v = Bytes::from(v);
                self.remember_on_disk(rel, &v);
                Some(v)
            }
            Err(e) => {
                eprintln!("gocacher serve: modproxy: reading {key} from the bucket failed ({e}); answering without it");
                None
            }
        }
    }

    /// Writes a kept answer read from the bucket to disk (no upload).
    fn remember_on_disk(&self, rel: &str, body: &[u8]) {
        let _ = self.keep.scratch(rel).and_then(|mut s| {
            std::io::Write::write_all(s.file.as_file_mut(), body)?;
            s.commit()
        });
    }

    /// Whether `module`'s `.<ext>` of `version` (escaped) is kept: on disk,
    /// or in the bucket (then copied to disk).
    async fn has(&self, module: &str, version: &str, ext: Ext) -> bool {
        let rel = format!("{module}/@v/{version}.{}", ext.as_str());
        if self.keep.path(&rel).is_file() {
            return true;
        }
        let limit = super::MAX_SMALL_FILE;
        matches!(self.keep.copy_from_bucket(&rel, limit).await, Ok(Some(_)))
    }

    /// The versions of `module` kept (escaped, oldest first): those of the
    /// last good list whose `.mod` is kept, and those on disk.
    async fn kept_versions(&self, module: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .keep
            .versions(module)
            .iter()
            .map(|v| escape(v))
            .collect();
        if let Some(list) = self.last_good(&format!("{module}/@v/list")).await {
            let mut listed: Vec<String> = String::from_utf8_lossy(&list)
                .split_whitespace()
                .map(escape)
                .filter(|v| canonical(v) && !out.contains(v))
                .collect();
            listed.sort_by(|a, b| semver_cmp(b, a));
            listed.truncate(CHECKED_VERSIONS);
            let checks = listed.iter().map(|v| self.has(module, v, Ext::Mod));
            let found = futures_util::future::join_all(checks).await;
            out.extend(
                listed
                    .into_iter()
                    .zip(found)
                    .filter_map(|(v, ok)| ok.then_some(v)),
            );
        }
        out.sort_by(|a, b| semver_cmp(a, b));
        out.dedup();
        out
    }

    /// A `list` answer from what is kept, while the upstream fails.
    pub(super) async fn kept_list(&self, module: &str) -> Option<Bytes> {
        let versions = self.kept_versions(module).await;
        if versions.is_empty() {
            return None;
        }
        let s: String = versions.iter().map(|v| unescape(v) + "\n").collect();
        Some(Bytes::from(s))
    }

    /// An `@latest` answer from what is kept, while the upstream fails: the
    /// `.info` of the version go would pick (the newest release, else the
    /// newest pre-release, else the newest pseudo-version kept on disk).
    pub(super) async fn kept_latest(&self, module: &str) -> Option<Bytes> {
        let mut candidates = self.kept_versions(module).await;
        if let Some(p) = self.keep.newest_info(module) {
            if let Some(v) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".info"))
            {
                candidates.push(v.to_string());
            }
        }
        candidates.sort_by(|a, b| latest_order(a, b));
        candidates.dedup();
        for v in candidates.iter().rev().take(LATEST_TRIES) {
            if self.has(module, v, Ext::Info).await {
                let rel = format!("{module}/@v/{v}.info");
                if let Ok(b) = tokio::fs::read(self.keep.path(&rel)).await {
                    return Some(Bytes::from(b));
                }
            }
        }
        None
    }

    /// A kept `supported` or lookup answer, while the upstream fails.
    pub(super) async fn kept_sumdb(&self, ask: &Ask) -> Option<Bytes> {
        let rel = last_good_at(ask)?;
        self.last_good(&rel).await
    }
}

/// The order in which go's `@latest` prefers versions (the last is
/// picked): pseudo-versions, then pre-releases, then releases, each by
/// semantic version.
fn latest_order(a: &str, b: &str) -> std::cmp::Ordering {
    let rank = |v: &str| {
        if super::semver::pseudo(v) {
            0
        } else if v.trim_end_matches("+incompatible").contains('-') {
            1
        } else {
            2
        }
    };
    rank(a).cmp(&rank(b)).then_with(|| semver_cmp(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_prefers_releases_then_prereleases_then_pseudo_versions() {
        let mut v = vec![
            "v1.3.0-rc.1",
            "v1.2.0",
            "v0.0.0-20230120002735-62a210ff1fd5",
            "v1.10.0",
            "v2.0.0+incompatible",
        ];
        v.sort_by(|a, b| latest_order(a, b));
        assert_eq!(
            v,
            [
                "v0.0.0-20230120002735-62a210ff1fd5",
                "v1.3.0-rc.1",
                "v1.2.0",
                "v1.10.0",
                "v2.0.0+incompatible"
            ]
        );
        assert_eq!(escape("v1.2.0-RC1"), "v1.2.0-!r!c1");
        let lookup =
            super::super::path::parse("sumdb/sum.example.org/lookup/example.com/m@v1.0.0").unwrap();
        assert_eq!(
            last_good_at(&lookup).unwrap(),
            "sumdb/sum.example.org/lookup/example.com/m@v1.0.0"
        );
    }
}
