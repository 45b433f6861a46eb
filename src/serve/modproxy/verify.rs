//! The check a `.zip` or `.mod` fetched from the upstream passes before it
//! is kept: its `h1:` hash must be the one the checksum database proves
//! (`crate::modverify`), for modules the database covers.
//!
//! The database is `go env GOSUMDB` (its key; a bare name takes the key
//! the go toolchain knows), reached through the upstream's sumdb proxy
//! (`<upstream>/sumdb/<name>/lookup/...` and `.../tile/...`), as go
//! reaches it through a proxy. Modules matching `GONOSUMDB` (which
//! defaults to `GOPRIVATE`), and every module with `GOSUMDB=off`, are kept
//! unchecked, as go itself checks none of them: a log line and the
//! `unverified` count say so. A module the database has no record of, a
//! lookup that fails its proof, or a database that does not answer: the
//! file is not kept and the client gets 502 (go falls through `|` to its
//! next proxy), as go itself would fail.
//!
//! Proven hashes (by module and version) and tiles are kept in memory,
//! bounded, so a version's `.mod` and `.zip` cost one lookup and modules
//! share the tiles near the tree's top.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::path::{unescape, Ask, Ext, SumdbKind};
use super::sidecar::{sha256_file, Sidecar};
use super::upstream::UpstreamError;
use super::ModProxy;
use crate::modverify::{self, Expected, Lookup, Tile, VerifierKey};

/// Proven versions remembered.
const PROVEN: u64 = 50_000;
/// Bytes of tiles remembered (a full tile is 8 KiB).
const TILE_BYTES: u64 = 16 << 20;

pub(crate) struct Verifier {
    /// `None`: `GOSUMDB=off`.
    key: Option<VerifierKey>,
    /// `GONOSUMDB` (or `GOPRIVATE`): module path patterns not checked.
    private: String,
    proven: moka::future::Cache<String, Arc<Expected>>,
    tiles: moka::future::Cache<Tile, Arc<Vec<u8>>>,
}

/// Why a download was not kept.
pub(crate) enum Refusal {
    /// Its hash is not the database's, or the database has none: counted
    /// as `mismatch`.
    Mismatch(String),
    /// It could not be checked: counted as `failed`.
    Failed(String),
}

impl Verifier {
    /// The database and the patterns of `go env GOSUMDB GONOSUMDB`.
    pub(crate) fn from_go_env() -> Result<Verifier> {
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        let (gosumdb, private) = match std::process::Command::new("go")
            .args(["env", "GOSUMDB", "GONOSUMDB"])
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let mut l = text.lines().map(|s| s.trim().to_string());
                (l.next().unwrap_or_default(), l.next().unwrap_or_default())
            }
            _ => (env("GOSUMDB"), {
                let n = env("GONOSUMDB");
                if n.is_empty() {
                    env("GOPRIVATE")
                } else {
                    n
                }
            }),
        };
        let first = gosumdb.split_whitespace().next().unwrap_or("");
        let key = match first {
            "off" => None,
            k if k.contains('+') => Some(VerifierKey::parse(k)?),
            _ => match modverify::go_env_key() {
                Ok(k) => Some(k),
                Err(e) => bail!(
                    "--modproxy checks modules against the checksum database, and {e}; set GOSUMDB=<name>+<hash>+<key> (or GOSUMDB=off to keep modules unchecked)"
                ),
            },
        };
        Ok(Verifier::new(key, private))
    }

    pub(crate) fn new(key: Option<VerifierKey>, private: String) -> Verifier {
        Verifier {
            key,
            private,
            proven: moka::future::Cache::builder().max_capacity(PROVEN).build(),
            tiles: moka::future::Cache::builder()
                .max_capacity(TILE_BYTES)
                .weigher(|_, v: &Arc<Vec<u8>>| u32::try_from(v.len() + 64).unwrap_or(u32::MAX))
                .build(),
        }
    }

    /// What the start line says of the check.
    pub(crate) fn describe(&self) -> String {
        match &self.key {
            None => "GOSUMDB=off: .zip and .mod files are kept unchecked".into(),
            Some(k) => format!(
                "checking .zip and .mod files against the checksum database {} (key {}) through the upstream{}",
                k.name(),
                k.id(),
                if self.private.is_empty() {
                    String::new()
                } else {
                    format!("; modules matching GONOSUMDB {:?} are kept unchecked", self.private)
                }
            ),
        }
    }

    /// Why `module` (unescaped) is not checked, if it is not.
    fn unchecked(&self, module: &str) -> Option<String> {
        if self.key.is_none() {
            return Some("GOSUMDB=off".into());
        }
        match_prefix_patterns(&self.private, module)
            .then(|| format!("it matches GONOSUMDB {:?}", self.private))
    }
}

impl ModProxy {
    /// Checks a fetched file (in its temp file `file`, `len` bytes) before
    /// it is kept, and makes its sidecar. `.info` files are hashed but not
    /// checked: they hold no module content.
    pub(crate) async fn before_keeping(&self, ask: &Ask, file: &Path) -> Result<Sidecar, Refusal> {
        let Ask::Version {
            module,
            version,
            ext,
        } = ask
        else {
            return Err(Refusal::Failed("not a module file".into()));
        };
        let (ext, owned, limits) = (
            *ext,
            file.to_path_buf(),
            modverify::Limits {
                max_zip: self.max_zip,
            },
        );
        let hashed = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let (size, sha256) = sha256_file(&owned).map_err(|e| format!("reading it: {e}"))?;
            let h1 = match ext {
                Ext::Info => None,
                Ext::Mod => Some(modverify::mod_h1(
                    &std::fs::read(&owned).map_err(|e| format!("reading it: {e}"))?,
                )),
                Ext::Zip => {
                    Some(modverify::zip_h1_file(&owned, &limits).map_err(|e| e.to_string())?)
                }
            };
            Ok((size, sha256, h1))
        })
        .await
        .map_err(|e| Refusal::Failed(e.to_string()))?
        .map_err(Refusal::Failed)?;
        let (size, sha256, h1) = hashed;
        let mut car = Sidecar {
            size,
            sha256,
            h1,
            sumdb: None,
            sig: None,
        };
        let Some(h1) = car.h1.clone() else {
            return Ok(car);
        };
        let (m, v) = (unescape(module), unescape(version));
        let counts = &self.counts;
        if let Some(why) = self.verifier.unchecked(&m) {
            counts.unverified.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "gocacher serve: modproxy: {m}@{v}'s .{} is kept unchecked against the checksum database ({why}); go checks it against go.sum",
                ext.as_str()
            );
            return Ok(car);
        }
        let expected = match self.prove(module, version, &m, &v).await {
            Ok(e) => e,
            Err(e) => {
                counts.check_failed.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Failed(e));
            }
        };
        let file = match ext {
            Ext::Zip => modverify::File::Zip,
            _ => modverify::File::Mod,
        };
        if let Err(e) = expected.check(file, &h1) {
            counts.mismatches.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Mismatch(e.to_string()));
        }
        counts.proven.fetch_add(1, Ordering::Relaxed);
        car.sumdb = self.verifier.key.as_ref().map(|k| k.name().to_string());
        Ok(car)
    }

    /// The hashes the database proves for `module@version` (escaped, and
    /// `m@v` unescaped); one lookup per version however many ask.
    async fn prove(
        &self,
        module: &str,
        version: &str,
        m: &str,
        v: &str,
    ) -> Result<Arc<Expected>, String> {
        let key = self.verifier.key.clone().expect("checked by unchecked()");
        let got = self
            .verifier
            .proven
            .try_get_with(format!("{module}@{version}"), async {
                let ask = Ask::Sumdb {
                    name: key.name().to_string(),
                    rest: format!("lookup/{module}@{version}"),
                    kind: SumdbKind::Mutable,
                };
                let body = self.fresh(&ask).await.map_err(|e| match &*e {
                    UpstreamError::NotFound(why) => format!(
                        "the checksum database {} has no record of {m}@{v} ({why}); for a private module, set GONOSUMDB or GOPRIVATE for the server",
                        key.name()
                    ),
                    e => format!(
                        "{m}@{v} could not be checked against the checksum database: {e}"
                    ),
                })?;
                let lookup = Lookup::parse(m, v, &body, &key).map_err(|e| e.to_string())?;
                let mut tiles = HashMap::new();
                for t in lookup.tiles_needed() {
                    tiles.insert(t, self.tile(key.name(), t).await?.to_vec());
                }
                match lookup.prove(&tiles) {
                    Ok(e) => Ok(Arc::new(e)),
                    Err(e) => {
                        // Never reuse a tile that took part in a failed proof.
                        for t in tiles.keys() {
                            self.verifier.tiles.invalidate(t).await;
                        }
                        Err(e.to_string())
                    }
                }
            })
            .await;
        got.map_err(|e: Arc<String>| (*e).clone())
    }

    /// A tile of the database `name`, from memory or the upstream; a
    /// partial tile that is gone is read from its full tile.
    async fn tile(&self, name: &str, t: Tile) -> Result<Arc<Vec<u8>>, String> {
        let got = self
            .verifier
            .tiles
            .try_get_with(t, async {
                let fetch = |t: Tile| async move {
                    self.counts.upstream_tiles.fetch_add(1, Ordering::Relaxed);
                    self.upstream
                        .small(&format!("sumdb/{name}/{}", t.path()))
                        .await
                };
                let data = match fetch(t).await {
                    Err(UpstreamError::NotFound(_)) if t != t.full() => fetch(t.full()).await,
                    other => other,
                };
                data.map(|b| Arc::new(b.to_vec()))
                    .map_err(|e| format!("reading a checksum database tile: {e}"))
            })
            .await;
        got.map_err(|e: Arc<String>| (*e).clone())
    }
}

/// Whether a prefix of `target` matches one of the comma-separated glob
/// `patterns`, as go's GONOSUMDB and GOPRIVATE do
/// (golang.org/x/mod/module.MatchPrefixPatterns): a pattern of N path
/// elements matches the target's first N, `*` any run of characters but
/// `/`, `?` one.
pub(crate) fn match_prefix_patterns(patterns: &str, target: &str) -> bool {
    patterns
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| {
            let n = p.split('/').count();
            let elems: Vec<&str> = target.split('/').collect();
            if elems.len() < n {
                return false;
            }
            let prefix = elems[..n].join("/");
            glob(p.as_bytes(), prefix.as_bytes())
        })
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&p[1..], s) || (s.first().is_some_and(|&c| c != b'/') && glob(p, &s[1..]))
        }
        (Some(b'?'), Some(&c)) if c != b'/' => glob(&p[1..], &s[1..]),
        (Some(&a), Some(&b)) if a == b && a != b'?' => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::match_prefix_patterns as m;

    #[test]
    fn gonosumdb_patterns_match_as_go_does() {
        assert!(m("corp.example", "corp.example/a/b"));
        assert!(m("*.corp.example", "git.corp.example/a"));
        assert!(!m("*.corp.example", "corp.example/a"));
        assert!(m("x.example/priv*", "x.example/private/m"));
        assert!(!m("x.example/priv*", "x.example/public/m"));
        assert!(m(" , a.example/b,c.example ", "c.example/d"));
        assert!(!m("a.example/b/c", "a.example/b"));
        assert!(m("git?.example", "git1.example/m"));
        assert!(!m("", "anything.example"));
    }
}
