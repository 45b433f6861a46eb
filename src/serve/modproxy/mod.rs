//! `gocacher serve --modproxy`: a Go module proxy (the GOPROXY protocol)
//! and checksum-database proxy under `/mod/`, so that
//! `GOPROXY=http://HOST/mod` fetches modules through the server and
//! `GOSUMDB`, unchanged, verifies through it (docs/SERVER.md).
//!
//! - `path.rs`: what a URL asks for, checked strictly; `sumdb.rs` the
//!   checksum database's paths.
//! - `semver.rs`: the order of versions.
//! - `keep.rs`: immutable answers on disk (`<dir>/mod/...`) and in the
//!   bucket (`<prefix>/mod/...`), in the GOPROXY layout.
//! - `upstream.rs`: the module proxy behind this one.
//! - `lastgood.rs`: mutable answers kept as last good, for when the
//!   upstream fails.
//! - `verify.rs`: the check against the checksum database a fetched
//!   `.zip`/`.mod` passes before it is kept; `sidecar.rs` the hash kept
//!   beside each file, that every read from disk or bucket is checked
//!   against.
//! - `routes.rs`: the handler and its replies.
//! - `stored.rs`: zips sent with their files stored
//!   (`--modproxy-stored-zips`); `stored_bucket.rs` those copies in the
//!   bucket.
//!
//! An immutable answer (a version's `.info`, `.mod` and `.zip`; a sumdb
//! tile, full or partial) is looked for on disk, then in the bucket, then
//! upstream, with one fetch per file however many clients ask at once. A
//! mutable one (`list`, `@latest`, a query's `.info`, sumdb `latest` and
//! lookups) always goes upstream, with a short cache; `list` and lookups
//! are also kept as last good (`lastgood.rs`), and when the upstream
//! fails, `list`, `@latest` and lookups are answered from what is kept on
//! disk or in the bucket.

mod keep;
mod lastgood;
mod path;
mod prefetch;
mod routes;
mod semver;
mod sidecar;
mod stored;
mod stored_bucket;
mod sumdb;
mod tiles;
mod upstream;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;

use prometheus_client::metrics::{family::Family, gauge::Gauge};

use super::bucket::Bucket;
use super::metrics::KindLabels;
use crate::config::serve::ModProxyConfig;
use keep::{Keep, NotTaken};
use path::{Ask, Ext};
use sidecar::OnDisk;
use upstream::{Upstream, UpstreamError};
use verify::{Refusal, Verifier};

pub(crate) use keep::kept_dirs;
pub(crate) use prefetch::read_sums;
pub(crate) use routes::serve_mod;

/// Bytes of mutable answers held at once.
const MUTABLE_BYTES: u64 = 32 << 20;
/// Kept files whose place and length are remembered (the single-flight
/// map's entries: a path and a number each).
const KNOWN_FILES: u64 = 100_000;
/// The most a kept file other than a zip may hold (Go's own limit on a
/// `go.mod`).
const MAX_SMALL_FILE: u64 = 16 << 20;

/// Counters of `--modproxy`, for the metrics and the stop line.
#[derive(Default)]
pub(crate) struct Counts {
    /// Requests sent to the upstream, immutable answers and mutable ones.
    pub(crate) upstream_immutable: AtomicU64,
    pub(crate) upstream_mutable: AtomicU64,
    /// Immutable answers copied from the bucket to disk.
    pub(crate) from_bucket: AtomicU64,
    /// Mutable answers served from what is kept while the upstream failed.
    pub(crate) fallbacks: AtomicU64,
    /// Checksum database tiles fetched to check downloads.
    pub(crate) upstream_tiles: AtomicU64,
    /// `.zip`/`.mod` downloads by their check: proven by the database,
    /// kept unchecked (GONOSUMDB, GOSUMDB=off), refused (their hash is not
    /// the database's), and not checkable (the database failed).
    pub(crate) proven: AtomicU64,
    pub(crate) unverified: AtomicU64,
    pub(crate) mismatches: AtomicU64,
    pub(crate) check_failed: AtomicU64,
    /// Kept copies refused: not matching their sidecar, or (bucket) its
    /// sidecar unsigned by a trusted key.
    pub(crate) refused_bucket: AtomicU64,
    pub(crate) refused_disk: AtomicU64,
    /// Stored copies of zips made, taken from the bucket, and zips sent
    /// deflated since none could be (`--modproxy-stored-zips`).
    pub(crate) stored_made: AtomicU64,
    pub(crate) stored_from_bucket: AtomicU64,
    pub(crate) stored_fallbacks: AtomicU64,
}

pub(crate) struct ModProxy {
    upstream: Upstream,
    keep: Keep,
    verifier: Verifier,
    max_zip: u64,
    /// Kept files by their path under `<dir>/mod`, with their length; a
    /// file not yet known is fetched once, however many ask at once.
    known: moka::future::Cache<String, u64>,
    /// Mutable answers by their path, for `--modproxy-ttl`.
    recent: moka::future::Cache<String, Bytes>,
    pub(crate) counts: Counts,
    verbose: bool,
    /// With `--modproxy-stored-zips`.
    stored: Option<stored::StoredZips>,
}

impl ModProxy {
    /// Sets the proxy up: its upstream (`--upstream`, or the first entry of
    /// `go env GOPROXY`) and its store under `<dir>/mod`.
    pub(crate) fn new(
        cfg: &ModProxyConfig,
        dir: &std::path::Path,
        bucket: Option<Arc<Bucket>>,
        verbose: bool,
    ) -> Result<ModProxy> {
        let base = match &cfg.upstream {
            Some(u) => u.clone(),
            None => upstream::from_go_env()?,
        };
        let root = dir.join("mod");
        std::fs::create_dir_all(&root)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", root.display()))?;
        let verifier = Verifier::from_go_env()?;
        let (left, started) = (root.clone(), std::time::SystemTime::now());
        std::thread::spawn(move || {
            let n = keep::remove_left_temps(&left, started);
            if n > 0 {
                eprintln!(
                    "gocacher serve: modproxy: removed {n} temp files a stopped server left in {}; their files are fetched again when asked for",
                    left.display()
                );
            }
        });
        Ok(ModProxy {
            upstream: Upstream::new(base)?,
            keep: Keep::new(root, bucket, cfg.keys.clone()),
            verifier,
            max_zip: cfg.max_zip,
            known: moka::future::Cache::builder()
                .max_capacity(KNOWN_FILES)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            recent: moka::future::Cache::builder()
                .max_capacity(MUTABLE_BYTES)
                .weigher(|k: &String, v: &Bytes| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(cfg.ttl)
                .build(),
            counts: Counts::default(),
            verbose,
            stored: cfg.stored_zips.then(stored::StoredZips::new),
        })
    }

    /// Brings the metrics up to date with the counts.
    pub(crate) fn export(&self, m: &super::metrics::Metrics) {
        let c = &self.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        let set = |f: &Family<KindLabels, Gauge>, pairs: &[(&str, &AtomicU64)]| {
            for (kind, a) in pairs {
                let kind = kind.to_string();
                f.get_or_create(&KindLabels { kind }).set(n(a));
            }
        };
        set(
            &m.modproxy_upstream_fetches,
            &[
                ("immutable", &c.upstream_immutable),
                ("mutable", &c.upstream_mutable),
                ("tile", &c.upstream_tiles),
            ],
        );
        set(
            &m.modproxy_checks,
            &[
                ("proven", &c.proven),
                ("unverified", &c.unverified),
                ("mismatch", &c.mismatches),
                ("failed", &c.check_failed),
            ],
        );
        set(
            &m.modproxy_refused,
            &[("bucket", &c.refused_bucket), ("disk", &c.refused_disk)],
        );
        if self.stored.is_some() {
            set(
                &m.modproxy_stored_zips,
                &[
                    ("made", &c.stored_made),
                    ("from_bucket", &c.stored_from_bucket),
                    ("fallback", &c.stored_fallbacks),
                ],
            );
        }
        m.modproxy_from_bucket.set(n(&c.from_bucket));
        m.modproxy_fallbacks.set(n(&c.fallbacks));
    }

    /// The counts on one line (the stop line with `--verbose`).
    pub(crate) fn summary(&self) -> String {
        let c = &self.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "upstream fetches {} immutable {} mutable {} tiles, {} from the bucket, {} answered from what is kept; checked {} proven {} unchecked {} mismatched {} failed; refused {} from the bucket {} from disk",
            n(&c.upstream_immutable),
            n(&c.upstream_mutable),
            n(&c.upstream_tiles),
            n(&c.from_bucket),
            n(&c.fallbacks),
            n(&c.proven),
            n(&c.unverified),
            n(&c.mismatches),
            n(&c.check_failed),
            n(&c.refused_bucket),
            n(&c.refused_disk),
        ) + &match self.stored {
            Some(_) => format!(
                "; stored copies of zips {} made {} from the bucket {} not made",
                n(&c.stored_made),
                n(&c.stored_from_bucket),
                n(&c.stored_fallbacks)
            ),
            None => String::new(),
        }
    }

    /// What the start line says of the checksum database check and of
    /// signed sidecars.
    pub(crate) fn describe_checks(&self) -> String {
        let k = &self.keep.keys;
        let signed = match (&k.signer, &k.trust) {
            (Some(s), _) => format!("; sidecars signed by {}", s.public_hex()),
            (None, Some(_)) => "; bucket files taken only with a sidecar signed by a --trust-key key, nothing written to the bucket (no --sign-key)".into(),
            (None, None) => String::new(),
        };
        format!("{}{signed}", self.verifier.describe())
    }

    /// Where kept files live on disk (`<dir>/mod`).
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.keep.root
    }

    /// The upstream's URL, for messages.
    pub(crate) fn upstream(&self) -> &str {
        &self.upstream.shown
    }

    /// The disk's copy of an immutable answer (`rel`, its place): its
    /// length once it is there, from the bucket or the upstream if need be.
    async fn kept(self: &Arc<Self>, ask: &Ask, rel: &str) -> Result<u64, Arc<UpstreamError>> {
        loop {
            let (me, ask, owned) = (self.clone(), ask.clone(), rel.to_string());
            let got = self
                .known
                .try_get_with(rel.to_string(), async move {
                    // A task of its own: a client that goes away does not
                    // stop a fetch others may be waiting for.
                    tokio::spawn(async move { me.obtain(&ask, &owned).await })
                        .await
                        .unwrap_or_else(|e| Err(UpstreamError::Failed(e.to_string())))
                })
                .await;
            match got {
                // A prefetch that found it nowhere kept, and that this
                // request joined: now the upstream.
                Err(e) if matches!(*e, UpstreamError::Skipped) => continue,
                got => return got,
            }
        }
    }

    /// Forgets what [`ModProxy::kept`] knew of `rel` (its file is gone).
    async fn forget(&self, rel: &str) {
        self.known.invalidate(rel).await;
    }

    async fn obtain(&self, ask: &Ask, rel: &str) -> Result<u64, UpstreamError> {
        if let Some((n, _)) = self.kept_copy(ask, rel).await {
            return Ok(n);
        }
        let limit = limit(ask, self.max_zip);
        let failed = |what: &str, e: std::io::Error| {
            UpstreamError::Failed(format!("{what} {rel} on the server's disk: {e}"))
        };
        let mut scratch = self.keep.scratch(rel).map_err(|e| failed("keeping", e))?;
        self.counts
            .upstream_immutable
            .fetch_add(1, Ordering::Relaxed);
        if self.verbose {
            eprintln!("gocacher serve: modproxy: fetching {rel} from the upstream");
        }
        let n = match self
            .upstream
            .to_file(&ask.upstream_path(), scratch.file.as_file_mut(), limit)
            .await
        {
            Ok(n) => n,
            Err(UpstreamError::Failed(why)) => {
                drop(scratch);
                if let Some(n) = self.cut_from_wider(rel).await {
                    self.counts.fallbacks.fetch_add(1, Ordering::Relaxed);
                    return Ok(n);
                }
                return Err(UpstreamError::Failed(why));
            }
            Err(e) => return Err(e),
        };
        let car = if sidecar::place(rel).is_some() {
            let car = self.before_keeping(ask, scratch.path()).await;
            Some(car.map_err(|r| {
                let (what, why) = match r {
                    Refusal::Mismatch(why) => ("REFUSED", why),
                    Refusal::Failed(why) => ("could not check", why),
                };
                eprintln!(
                    "gocacher serve: modproxy: {what} {rel} from the upstream {}: {why}; not kept, answering 502",
                    self.upstream.shown
                );
                UpstreamError::Failed(format!(
                    "{rel} from the upstream {} failed its check, not kept: {why}",
                    self.upstream.shown
                ))
            })?)
        } else {
            None
        };
        scratch.commit().map_err(|e| failed("keeping", e))?;
        if let Some(car) = car {
            self.keep
                .keep_sidecar(rel, car)
                .map_err(|e| failed("keeping the sidecar of", e))?;
        }
        self.keep.upload_later(rel, n);
        Ok(n)
    }

    /// The disk's copy of `rel` if it is there and good, else the bucket's
    /// copied to disk: its length, and whether it came from the bucket.
    async fn kept_copy(&self, ask: &Ask, rel: &str) -> Option<(u64, bool)> {
        match self.keep.on_disk(rel).await {
            OnDisk::Good(n, _) => return Some((n, false)),
            OnDisk::Absent => {}
            OnDisk::Refused(why) => {
                self.counts.refused_disk.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "gocacher serve: modproxy: REFUSED {rel} on the server's disk: {why}; removed it, fetching it again (bucket, then upstream)"
                );
            }
        }
        match self.keep.copy_from_bucket(rel, limit(ask, self.max_zip)).await {
            Ok(Some(n)) => {
                self.counts.from_bucket.fetch_add(1, Ordering::Relaxed);
                return Some((n, true));
            }
            Ok(None) => {}
            Err(NotTaken::Unusable(e)) => eprintln!(
                "gocacher serve: modproxy: {rel} from the bucket is unusable ({e}); fetching it from the upstream"
            ),
            Err(NotTaken::Refused(e)) => {
                self.counts.refused_bucket.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "gocacher serve: modproxy: REFUSED the bucket's {rel}: {e}; not served, fetching it again from the upstream {} (and keeping that copy)",
                    self.upstream.shown
                );
            }
        }
        None
    }

    /// A mutable answer: from the upstream, or from the last
    /// `--modproxy-ttl`; one upstream request however many ask at once.
    async fn fresh(&self, ask: &Ask) -> Result<Bytes, Arc<UpstreamError>> {
        let rel = ask.upstream_path();
        self.recent
            .try_get_with(rel.clone(), async {
                self.counts.upstream_mutable.fetch_add(1, Ordering::Relaxed);
                let body = self.upstream.small(&rel).await?;
                self.remember(ask, &body).await;
                Ok(body)
            })
            .await
    }

    /// What is kept that answers a mutable request while the upstream
    /// fails (on disk, else in the bucket): for `list`, the versions kept;
    /// for `@latest`, the `.info` of the one go would pick; for sumdb
    /// `supported` and lookups, the last good answer (`lastgood.rs`).
    async fn fallback(&self, ask: &Ask) -> Option<Bytes> {
        let found = match ask {
            Ask::List { module } => self.kept_list(module).await,
            Ask::Latest { module } => self.kept_latest(module).await,
            Ask::Sumdb { .. } => self.kept_sumdb(ask).await,
            _ => None,
        };
        if found.is_some() {
            self.counts.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        found
    }
}

/// The most a kept file may hold.
fn limit(ask: &Ask, max_zip: u64) -> u64 {
    match ask {
        Ask::Version { ext: Ext::Zip, .. } => max_zip,
        _ => MAX_SMALL_FILE,
    }
}
