//! `--modproxy-prefetch FILE`: the module files a `go.sum` names, copied
//! from the bucket to the server's disk in the background as the server
//! starts, [`AT_ONCE`] at a time. go downloads a few files at a time and
//! waits on each; a new runner's proxy that already holds them answers
//! from disk. Each file goes through the same single fetch and the same
//! checks as a request for it, so a request arriving mid-copy waits for
//! that copy rather than starting its own.
//!
//! Only the bucket is read: a file the bucket lacks is left for go to ask
//! for, and then comes from the upstream as usual. A go.sum can name more
//! `.mod` files than go reads (it keeps those of pruned versions); their
//! copies cost a GET each and are trimmed like any kept file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::path::{self, escape, Ask, Ext};
use super::upstream::UpstreamError;
use super::ModProxy;

/// Files copied from the bucket at once.
const AT_ONCE: usize = 16;
/// The largest go.sum read.
const MAX_SUM_FILE: u64 = 64 << 20;

/// The kept places a go.sum's text names, as requests would ask for them:
/// every `.mod` first (go reads them to load the module graph), then the
/// `.info` and `.zip` of each version with a zip line. Places named twice
/// come once; lines that are not `module version hash` are counted and
/// skipped.
pub(crate) fn wanted(text: &str, seen: &mut HashSet<String>) -> (Vec<(Ask, String)>, usize) {
    let (mut mods, mut rest, mut skipped) = (Vec::new(), Vec::new(), 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 || !f[2].contains(':') {
            skipped += 1;
            continue;
        }
        let (module, version) = (escape(f[0]), f[1]);
        let places = match version.strip_suffix("/go.mod") {
            Some(v) => vec![(escape(v), Ext::Mod)],
            None => vec![(escape(version), Ext::Info), (escape(version), Ext::Zip)],
        };
        for (v, ext) in places {
            let raw = format!("{module}/@v/{v}.{}", ext.as_str());
            let Some((ask, rel)) = path::parse(&raw)
                .ok()
                .and_then(|a| a.kept_at().map(|rel| (a, rel)))
            else {
                skipped += 1;
                continue;
            };
            if seen.insert(rel.clone()) {
                match ext {
                    Ext::Mod => mods.push((ask, rel)),
                    _ => rest.push((ask, rel)),
                }
            }
        }
    }
    mods.append(&mut rest);
    (mods, skipped)
}

/// Reads the go.sum files of `--modproxy-prefetch`: the places they name,
/// in order, and how many lines were skipped. An unreadable file is an
/// error: the flag names it, so it was meant to be there.
pub(crate) fn read_sums(files: &[PathBuf]) -> Result<(Vec<(Ask, String)>, usize)> {
    let (mut all, mut skipped, mut seen) = (Vec::new(), 0, HashSet::new());
    for f in files {
        let len = std::fs::metadata(f)
            .with_context(|| format!("--modproxy-prefetch {}", f.display()))?
            .len();
        if len > MAX_SUM_FILE {
            anyhow::bail!(
                "--modproxy-prefetch {}: {len} bytes, more than a go.sum may have ({MAX_SUM_FILE})",
                f.display()
            );
        }
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--modproxy-prefetch {}", f.display()))?;
        let (mut places, n) = wanted(&text, &mut seen);
        all.append(&mut places);
        skipped += n;
    }
    // Mods of every file first, in the order the files gave them.
    all.sort_by_key(|(a, _)| !matches!(a, Ask::Version { ext: Ext::Mod, .. }));
    all.truncate(super::KNOWN_FILES as usize);
    Ok((all, skipped))
}

impl ModProxy {
    /// Starts copying `places` from the bucket to disk in the background;
    /// logs what it does, and once done, what it did.
    pub(crate) fn prefetch(self: &Arc<Self>, places: Vec<(Ask, String)>, skipped: usize) {
        if self.keep.bucket.is_none() {
            eprintln!(
                "gocacher serve: modproxy: --modproxy-prefetch without --remote: there is no bucket to copy from; files come when asked for"
            );
            return;
        }
        eprintln!(
            "gocacher serve: modproxy: copying the {} files the go.sum files name from the bucket to disk, {AT_ONCE} at a time, in the background{}{}",
            places.len(),
            if self.stored.is_some() {
                ", and each zip's stored copy (the bucket's, or made here)"
            } else {
                ""
            },
            if skipped > 0 {
                format!(" ({skipped} go.sum lines not understood, skipped)")
            } else {
                String::new()
            }
        );
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let tally = Arc::new(Tally::default());
            let turns = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
            let mut tasks = tokio::task::JoinSet::new();
            for (ask, rel) in places {
                let Ok(turn) = turns.clone().acquire_owned().await else {
                    break;
                };
                let (me, tally) = (me.clone(), tally.clone());
                tasks.spawn(async move {
                    let _turn = turn;
                    me.prefetch_one(ask, rel, &tally).await;
                });
            }
            while tasks.join_next().await.is_some() {}
            let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
            eprintln!(
                "gocacher serve: modproxy: prefetch done in {:.2}s: {} copied from the bucket, {} already on disk, {} not in the bucket (they come from the upstream when asked for){}",
                started.elapsed().as_secs_f64(),
                n(&tally.copied),
                n(&tally.on_disk),
                n(&tally.missing),
                if me.stored.is_some() {
                    "; stored copies of zips not yet on disk come in the background, one a core at a time"
                } else {
                    ""
                },
            );
        });
    }

    async fn prefetch_one(self: &Arc<Self>, ask: Ask, rel: String, tally: &Tally) {
        // With stored zips, a zip's stored copy alone when the bucket has
        // it: the zip itself is then never needed.
        if let Ask::Version { ext: Ext::Zip, .. } = ask {
            if self.stored_alone(&rel).await.is_some() {
                tally.copied.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // Whether this prefetch's own fetch copied it from the bucket.
        let copied = Arc::new(AtomicBool::new(false));
        let (me, owned_ask, owned_rel, flag) =
            (self.clone(), ask.clone(), rel.clone(), copied.clone());
        let got = self
            .known
            .try_get_with(rel.clone(), async move {
                tokio::spawn(async move {
                    let found = me.kept_copy(&owned_ask, &owned_rel).await;
                    flag.store(found.is_some_and(|(_, c)| c), Ordering::Relaxed);
                    found.map(|(n, _)| n).ok_or(UpstreamError::Skipped)
                })
                .await
                .unwrap_or_else(|e| Err(UpstreamError::Failed(e.to_string())))
            })
            .await;
        // A zip's stored copy too (--modproxy-stored-zips), so that go's
        // request finds it made; in a task of its own, so that the copies
        // from the bucket go on meanwhile.
        if let (Ok(len), Some(_), Ask::Version { ext: Ext::Zip, .. }) = (&got, &self.stored, &ask) {
            if let Ok(f) = std::fs::File::open(self.keep.path(&rel)) {
                if self.keep.unchanged(&rel, &f) {
                    let (me, len) = (self.clone(), *len);
                    tokio::spawn(async move { drop(me.zip_to_send(&rel, f, len).await) });
                }
            }
        }
        let slot = match got {
            Err(_) => &tally.missing,
            Ok(_) if copied.load(Ordering::Relaxed) => &tally.copied,
            // On disk already, known already, or joined a request's fetch.
            Ok(_) => &tally.on_disk,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a prefetch did, file by file.
#[derive(Default)]
struct Tally {
    copied: AtomicU64,
    on_disk: AtomicU64,
    missing: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_go_sum_names_mods_first_then_infos_and_zips() {
        let text = "\
github.com/BurntSushi/toml v1.3.2 h1:o7IhLm0Msx3BaB+n3Ag7L8EVlByGnpq14C4YWiu/gL8=
github.com/BurntSushi/toml v1.3.2/go.mod h1:CxXYINrC8qIiEnFrOxCa7Jy5BFHlXnUU2pbicEuybxQ=
golang.org/x/text v0.3.0/go.mod h1:NqM8EUOU14njkJ3fqMW+pc6Ldnwhi/IjpwHt7yyuwOQ=

not a line
example.com/m ../../etc h1:x=
github.com/BurntSushi/toml v1.3.2/go.mod h1:CxXYINrC8qIiEnFrOxCa7Jy5BFHlXnUU2pbicEuybxQ=
";
        let (places, skipped) = wanted(text, &mut HashSet::new());
        let rels: Vec<&str> = places.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            rels,
            [
                "github.com/!burnt!sushi/toml/@v/v1.3.2.mod",
                "golang.org/x/text/@v/v0.3.0.mod",
                "github.com/!burnt!sushi/toml/@v/v1.3.2.info",
                "github.com/!burnt!sushi/toml/@v/v1.3.2.zip",
            ]
        );
        assert_eq!(
            skipped, 3,
            "the bad line, and the bad version's info and zip"
        );
    }

    #[test]
    fn several_go_sums_list_every_mod_before_any_zip() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.sum"), dir.path().join("b.sum"));
        std::fs::write(&a, "example.com/a v1.0.0 h1:x=\n").unwrap();
        std::fs::write(
            &b,
            "example.com/b v1.0.0/go.mod h1:y=\nexample.com/a v1.0.0 h1:x=\n",
        )
        .unwrap();
        let (places, skipped) = read_sums(&[a, b]).unwrap();
        let rels: Vec<&str> = places.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            rels,
            [
                "example.com/b/@v/v1.0.0.mod",
                "example.com/a/@v/v1.0.0.info",
                "example.com/a/@v/v1.0.0.zip",
            ]
        );
        assert_eq!(skipped, 0);
        let err = read_sums(&[dir.path().join("none")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("--modproxy-prefetch"),
            "{err:#}"
        );
    }
}
