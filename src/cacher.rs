//! The orchestration: joins the protocol's [`Handler`] to the storage tiers
//! and the stats. Decides what cmd/go sees of each failure: a get that fails
//! on I/O is a counted error answered as a miss; a put that fails is an `Err`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use std::time::Duration;

use crate::config::RemoteConfig;
use crate::disk::{self, DiskCache};
use crate::local::PutError;
use crate::protocol::{Handler, Hit, Put, PutBody};
use crate::remote::manifest::Used;
use crate::remote::{connect, OneShot, Prefetch, Remote, UploadJob, Uploader, Usage, WriteBack};
use crate::scope::Scope;
use crate::stats::{Snapshot, Stats};
use crate::wire::Id;
use tokio::sync::OnceCell;

/// How long close waits for a stopped pack stream to finish the entries in
/// hand and write its local index (a warm build's stream has usually ended
/// before close).
const STREAM_END_WAIT: Duration = Duration::from_secs(1);

/// What the cacher does at close besides draining.
#[derive(Debug, Clone, Default)]
pub struct CloseOptions {
    /// Print the one-line summary on stderr.
    pub verbose: bool,
    /// Write the stats JSON here.
    pub stats_file: Option<PathBuf>,
    /// Append this go command's row to this GitHub Actions job summary.
    pub job_summary: Option<PathBuf>,
}

pub struct Cacher {
    disk: Arc<DiskCache>,
    stats: Arc<Stats>,
    close: CloseOptions,
    /// Disk trouble is reported once per process: a full disk would otherwise
    /// print a line per request into the user's build output.
    disk_warned: AtomicBool,
    /// The bucket, when `--remote` is set: its settings, and the tier, made
    /// on first use so the capability message never waits for the AWS
    /// configuration chain (which may look at profiles or instance metadata).
    /// With it, the scope whose manifest this go command reads and writes.
    /// `None` in the cell: the client could not be set up in time.
    remote: Option<(RemoteConfig, Scope, OnceCell<Option<RemoteTier>>)>,
    /// What this go command used, for its scope's manifest (with a bucket).
    usage: Mutex<Usage>,
    /// Where puts go when the cache dir cannot take them.
    overflow: Arc<disk::Overflow>,
    /// Set at the first disk error of a put: later puts go to the overflow.
    disk_failed: AtomicBool,
}

struct RemoteTier {
    remote: Arc<Remote>,
    uploader: Uploader,
    prefetch: Arc<Prefetch>,
    writeback: WriteBack,
    /// How long close waits for queued uploads.
    drain: Duration,
}

impl Cacher {
    pub fn new(disk: DiskCache, close: CloseOptions) -> Cacher {
        let cacher = Cacher {
            disk: Arc::new(disk),
            stats: Arc::new(Stats::default()),
            close,
            disk_warned: AtomicBool::new(false),
            remote: None,
            usage: Mutex::default(),
            overflow: Arc::new(disk::Overflow::default()),
            disk_failed: AtomicBool::new(false),
        };
        if let Some(err) = cacher.disk.unwritable() {
            cacher.warn_disk(format_args!(
                "cannot be written ({err}); serving hits from it, and puts from a temp dir for this go command"
            ));
        }
        cacher
    }

    /// Adds the bucket tier, connected on first use (or by
    /// [`Cacher::start_prefetch`]), with its manifest scope.
    pub fn with_remote(mut self, config: RemoteConfig, scope: Scope) -> Cacher {
        self.remote = Some((config, scope, OnceCell::new()));
        self
    }

    /// With a bucket: connects and starts prefetching from the scope's
    /// manifest, in the background (the protocol loop goes on meanwhile).
    pub fn start_prefetch(self: &Arc<Self>) {
        if self.remote.is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(tier) = me.tier().await {
                tier.prefetch.start(tier.remote.clone());
            }
        });
    }

    /// The bucket tier if it is already connected.
    fn connected(&self) -> Option<&RemoteTier> {
        self.remote
            .as_ref()
            .and_then(|(_, _, cell)| cell.get())
            .and_then(Option::as_ref)
    }

    fn record(&self, action: Id, output: Id, size: u64, gotten: bool) {
        if self.remote.is_some() {
            self.usage.lock().unwrap().record(Used {
                action,
                output,
                size,
                gotten,
            });
        }
    }

    /// The bucket tier, connecting on first call; `None` without `--remote`.
    async fn tier(&self) -> Option<&RemoteTier> {
        let (config, scope, cell) = self.remote.as_ref()?;
        let tier = cell
            .get_or_init(|| async {
                let store = connect(&config.store, &config.also_read, self.close.verbose).await?;
                // Without manifests and packs there is nothing to prefetch
                // from (said above with --verbose).
                let concurrency = if store.keeps_named() {
                    config.prefetch_concurrency
                } else {
                    0
                };
                let remote = Remote::new(
                    store,
                    self.disk.clone(),
                    self.stats.clone(),
                    config.opts.clone(),
                    Box::new(OneShot),
                );
                let (prefetch, writeback) = Prefetch::new(scope.clone(), concurrency);
                Some(RemoteTier {
                    uploader: Uploader::start(remote.clone()),
                    prefetch,
                    writeback,
                    remote,
                    drain: config.drain,
                })
            })
            .await;
        tier.as_ref()
    }

    pub fn disk(&self) -> &Arc<DiskCache> {
        &self.disk
    }

    /// The overflow dir, removed by the binary after close.
    pub fn overflow(&self) -> &disk::Overflow {
        &self.overflow
    }

    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Whether a disk problem has been reported on stderr already.
    pub fn disk_trouble_reported(&self) -> bool {
        self.disk_warned.load(Ordering::Relaxed)
    }

    fn warn_disk(&self, what: impl std::fmt::Display) {
        if !self.disk_warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "gocacher: local cache {}: {what} (further disk errors are only counted)",
                self.disk.root().display()
            );
        }
    }

    fn write_stats(&self, path: &PathBuf, snap: &Snapshot) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(snap)?;
        json.push(b'\n');
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }
}

/// Where a put's bytes went.
struct Written {
    path: PathBuf,
    /// In the cache dir (false: in the overflow dir, for this go command).
    kept: bool,
    /// The cache dir failed while taking this put (reported by the caller).
    disk_error: Option<PutError>,
}

/// Bodies up to this size are held (by reference) while they are written,
/// so that if the cache dir fails under them they can be written to the
/// overflow dir instead. A larger body whose write fails is an `Err`; the
/// free-space check before each write makes that rare.
const RETRY_MAX: u64 = 4 << 20;

/// Writes a put to the cache dir, or to the overflow dir when the cache dir
/// cannot take it: cmd/go fails some go commands (`go build ./...` among
/// them) on a put error, so a read-only or full cache dir must not produce
/// one while any place can hold the bytes.
fn store(
    disk: &DiskCache,
    overflow: &disk::Overflow,
    put: Put,
    put_time_nanos: i64,
    mut body: PutBody,
    skip_disk: bool,
) -> Result<Written, PutError> {
    let write = |d: &DiskCache, next: &mut dyn FnMut() -> Option<crate::protocol::Chunk>| {
        let path = d.write_output(&put.output_id, put.size, next)?;
        d.write_action(&put.action_id, &put.output_id, put.size, put_time_nanos)?;
        Ok::<_, PutError>(path)
    };
    if skip_disk {
        let path = write(overflow.get()?, &mut || body.blocking_next())?;
        return Ok(Written {
            path,
            kept: false,
            disk_error: None,
        });
    }
    let mut held: Option<Vec<bytes::Bytes>> = (put.size <= RETRY_MAX).then(Vec::new);
    let first = write(disk, &mut || {
        let chunk = body.blocking_next();
        if let (Some(h), Some(Ok(c))) = (held.as_mut(), chunk.as_ref()) {
            h.push(c.clone());
        }
        chunk
    });
    match first {
        Ok(path) => Ok(Written {
            path,
            kept: true,
            disk_error: None,
        }),
        Err(err) if err.is_disk() => {
            let Some(held) = held else { return Err(err) };
            let mut again = held.into_iter().map(Ok);
            let path = write(overflow.get()?, &mut || {
                again.next().or_else(|| body.blocking_next())
            })?;
            Ok(Written {
                path,
                kept: false,
                disk_error: Some(err),
            })
        }
        Err(err) => Err(err),
    }
}

impl Handler for Cacher {
    async fn get(&self, action_id: Id) -> Option<Hit> {
        Stats::inc(&self.stats.gets);
        // The lookup runs right here, not on the blocking pool: it is an
        // open, a read of one short line, an fstat and a stat, all served from
        // the page cache, while a hop to the pool and back costs
        // two thread wake-ups. cmd/go sends most gets one at a time and waits
        // for each, so the round trip is the whole cost (with the one-thread
        // runtime and epoll-driven pipes, the main gain on local-warm builds).
        let local = match self.disk.get(&action_id) {
            Ok(None) if self.overflow.in_use() => self.overflow.get_entry(&action_id),
            Ok(found) => found,
            Err(err) => {
                Stats::inc(&self.stats.get_errors);
                self.warn_disk(format_args!("get {action_id:?}: {err}"));
                return None;
            }
        };
        // Only a local miss goes to the bucket (and only then does this
        // future wait, which makes the protocol loop run it as a task).
        let (found, from_bucket, downloaded) = match local {
            Some(e) => (Some(e), false, false),
            None => match self.tier().await {
                Some(tier) => {
                    // An entry the prefetch's pack is about to write is
                    // waited for, not downloaded a second time.
                    let packed = if tier.prefetch.await_pack(&tier.remote, &action_id).await {
                        self.disk.get(&action_id).ok().flatten()
                    } else {
                        None
                    };
                    match packed {
                        Some(e) => (Some(e), true, false),
                        None => match tier.remote.fetch(action_id).await {
                            Some((e, fresh)) => (Some(e), true, fresh),
                            None => (None, true, false),
                        },
                    }
                }
                None => (None, false, false),
            },
        };
        match found {
            Some(e) => {
                Stats::inc(&self.stats.hits);
                Stats::add(&self.stats.bytes_read, e.size);
                // A hit this get did not download itself may be a prefetch's.
                let prefetched = !downloaded
                    && self
                        .connected()
                        .is_some_and(|t| t.prefetch.claim(&action_id));
                if prefetched {
                    Stats::inc(&self.stats.prefetch_hits);
                } else if from_bucket {
                    Stats::inc(&self.stats.remote_hits);
                }
                self.record(action_id, e.output_id, e.size, true);
                Some(Hit {
                    output_id: e.output_id,
                    size: e.size,
                    put_time_nanos: e.put_time_nanos,
                    disk_path: e.disk_path,
                })
            }
            None => {
                Stats::inc(&self.stats.misses);
                None
            }
        }
    }

    async fn put(&self, put: Put, body: PutBody) -> anyhow::Result<PathBuf> {
        Stats::inc(&self.stats.puts);
        let put_time_nanos = crate::wire::now_nanos();
        let (disk, overflow) = (self.disk.clone(), self.overflow.clone());
        let mut skip_disk =
            self.disk_failed.load(Ordering::Relaxed) || self.disk.unwritable().is_some();
        if !skip_disk && !disk::has_room(self.disk.root(), put.size) {
            skip_disk = true;
            self.disk_failed.store(true, Ordering::Relaxed);
            self.warn_disk(format_args!(
                "the filesystem is full; puts are served from {} for this go command",
                self.overflow.describe()
            ));
        }
        let stored = tokio::task::spawn_blocking(move || {
            store(&disk, &overflow, put, put_time_nanos, body, skip_disk)
        })
        .await;
        match stored {
            Ok(Ok(Written {
                path,
                kept,
                disk_error,
            })) => {
                if let Some(err) = disk_error {
                    self.disk_failed.store(true, Ordering::Relaxed);
                    self.warn_disk(format_args!(
                        "{err}; puts are served from {} for this go command",
                        self.overflow.describe()
                    ));
                }
                if !kept {
                    Stats::inc(&self.stats.puts_not_kept);
                }
                Stats::add(&self.stats.bytes_written, put.size);
                self.record(put.action_id, put.output_id, put.size, false);
                if let Some(tier) = self.tier().await {
                    tier.uploader
                        .enqueue(UploadJob {
                            action: put.action_id,
                            output: put.output_id,
                            size: put.size,
                            put_time_nanos,
                            path: path.clone(),
                        })
                        .await;
                }
                Ok(path)
            }
            Ok(Err(err)) => {
                Stats::inc(&self.stats.put_errors);
                if err.is_disk() {
                    self.warn_disk(&err);
                }
                Err(err.into())
            }
            Err(join) => {
                Stats::inc(&self.stats.put_errors);
                Err(anyhow::anyhow!("put task failed: {join}"))
            }
        }
    }

    async fn close(&self) {
        // A tier never used has nothing to drain. Everything close waits for
        // on the bucket (the stream's end, queued uploads, the manifest and
        // the pack) shares one deadline, the drain timeout.
        if let Some(tier) = self.connected() {
            let deadline = tokio::time::Instant::now() + tier.drain;
            tier.prefetch.stop();
            tier.prefetch
                .stream_ended(STREAM_END_WAIT.min(tier.drain))
                .await;
            Stats::add(
                &self.stats.prefetch_unused_bytes,
                tier.prefetch.unused_bytes(),
            );
            tier.uploader.drain(deadline).await;
            let used = self.usage.lock().unwrap().take();
            let write_back = tier.writeback.write(&tier.remote, &used);
            if tokio::time::timeout_at(deadline, write_back).await.is_err() {
                Stats::inc(&self.stats.remote_errors);
                tier.remote.report(
                    "close-deadline",
                    format_args!(
                        "{}: the manifest and pack writes did not finish within {}s of close; dropped",
                        tier.remote.describe(),
                        tier.drain.as_secs_f64()
                    ),
                );
            }
        }
        let snap = self.stats.snapshot();
        if let Some(path) = &self.close.stats_file {
            if let Err(err) = self.write_stats(path, &snap) {
                eprintln!("gocacher: stats file: {err:#}");
            }
        }
        if let Some(path) = &self.close.job_summary {
            if let Err(err) = crate::summary::add_row(path, &snap) {
                eprintln!("gocacher: job summary {}: {err}", path.display());
            }
        }
        if self.close.verbose {
            eprintln!("{}", snap.summary(self.remote.is_some()));
            if let Some(tier) = self.connected() {
                eprintln!(
                    "gocacher: scope {:?}: {}",
                    tier.prefetch.scope().name,
                    tier.prefetch.note()
                );
            }
        }
    }
}
