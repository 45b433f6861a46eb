//! Asynchronous uploads: one bounded queue, a fixed number of concurrent
//! uploads, a timeout on each, and a drain with a deadline at close. A put is
//! answered as soon as its local file is written; the upload follows. When
//! the queue is full, the upload is dropped and counted: the build never
//! waits for the bucket.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::format::{Encoding, ObjectMeta, COMPRESS_MAX_RATIO, COMPRESS_MIN, ZSTD_LEVEL};
use super::spool::Spool;
use super::store::{FailureKind, PutOutcome, RemoteError, Source};
use super::Remote;
use crate::local::Sink;
use crate::stats::Stats;
use crate::wire::Id;

/// Outputs up to this size are compressed in memory; larger ones through a
/// scratch file, so an upload never holds a big body in memory.
const IN_MEMORY_MAX: u64 = 256 << 10;

/// One put to copy to the bucket. The file is the local mirror's output file,
/// which is never rewritten, so it can be read at leisure.
#[derive(Debug, Clone)]
pub struct UploadJob {
    pub action: Id,
    pub output: Id,
    pub size: u64,
    pub put_time_nanos: i64,
    pub path: PathBuf,
}

pub struct Uploader {
    /// Taken at drain, which closes the queue. A std Mutex: held only to
    /// clone or take the sender.
    tx: Mutex<Option<mpsc::Sender<UploadJob>>>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    queued: AtomicU64,
    done: Arc<AtomicU64>,
    remote: Arc<Remote>,
}

impl Uploader {
    /// Starts the dispatcher; must be called inside the runtime.
    pub fn start(remote: Arc<Remote>) -> Uploader {
        let (tx, rx) = mpsc::channel(remote.opts.upload_queue.max(1));
        let done = Arc::new(AtomicU64::new(0));
        let dispatcher = tokio::spawn(dispatch(remote.clone(), rx, done.clone()));
        Uploader {
            tx: Mutex::new(Some(tx)),
            dispatcher: Mutex::new(Some(dispatcher)),
            queued: AtomicU64::new(0),
            done,
            remote,
        }
    }

    /// Queues an upload unless it is redundant or the queue is full.
    pub async fn enqueue(&self, job: UploadJob) {
        let r = &self.remote;
        if r.is_read_only() {
            return;
        }
        if r.knows_present(&job.action, &job.output).await {
            Stats::inc(&r.stats.uploads_skipped);
            return;
        }
        if r.breaker.is_cooling() {
            Stats::inc(&r.stats.uploads_dropped);
            return;
        }
        let tx = self.tx.lock().unwrap().clone();
        match tx.map(|tx| tx.try_send(job)) {
            Some(Ok(())) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            _ => Stats::inc(&r.stats.uploads_dropped),
        }
    }

    /// Closes the queue and waits until `deadline` for queued and running
    /// uploads; those still unfinished then are counted as dropped. Stops
    /// waiting at once when the breaker is open: uploads to a bucket that
    /// stopped answering cannot finish, and cmd/go is waiting for close.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        self.tx.lock().unwrap().take();
        let Some(mut handle) = self.dispatcher.lock().unwrap().take() else {
            return;
        };
        let started = tokio::time::Instant::now();
        let why = loop {
            tokio::select! {
                _ = &mut handle => return,
                _ = tokio::time::sleep_until(deadline) => {
                    break format!("after {:.1}s at close", started.elapsed().as_secs_f64())
                }
                _ = tokio::time::sleep(BREAKER_POLL) => {
                    if self.remote.breaker.is_cooling() {
                        break "at close: the bucket is not answering".to_string();
                    }
                }
            }
        };
        // Aborting the dispatcher drops its set of running uploads, which
        // aborts them too.
        handle.abort();
        let left = self.queued.load(Ordering::Relaxed) - self.done.load(Ordering::Relaxed);
        if left == 0 {
            return;
        }
        Stats::add(&self.remote.stats.uploads_dropped, left);
        self.remote.report(
            "drain",
            format_args!(
                "{}: {left} uploads unfinished {why}; dropped",
                self.remote.describe(),
            ),
        );
    }
}

/// How often a drain looks at the breaker.
const BREAKER_POLL: Duration = Duration::from_millis(50);

async fn dispatch(remote: Arc<Remote>, mut rx: mpsc::Receiver<UploadJob>, done: Arc<AtomicU64>) {
    let slots = Arc::new(Semaphore::new(remote.opts.upload_workers.max(1)));
    let mut running = tokio::task::JoinSet::new();
    while let Some(job) = rx.recv().await {
        while running.try_join_next().is_some() {}
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (remote, done) = (remote.clone(), done.clone());
        running.spawn(async move {
            upload(&remote, job).await;
            done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    while running.join_next().await.is_some() {}
}

/// Uploads one entry now, as the queue would; whether the store has it
/// afterwards (`gocacher serve` acknowledges a PUT only then).
pub async fn upload_now(r: &Remote, job: UploadJob) -> bool {
    upload(r, job).await
}

async fn upload(r: &Remote, job: UploadJob) -> bool {
    if r.is_read_only() || !r.breaker.allow() {
        Stats::inc(&r.stats.uploads_dropped);
        return false;
    }
    let prep = {
        let (job, local, spool) = (job.clone(), r.local.clone(), r.spool.clone());
        let encode = r.store.takes_encoded();
        tokio::task::spawn_blocking(move || {
            let (meta, payload) = if encode {
                prepare(&job, &*local)?
            } else {
                raw(&job)
            };
            if let Some(spool) = spool {
                payload.keep(&meta, &spool);
            }
            Ok::<_, std::io::Error>((meta, payload))
        })
        .await
    };
    let (mut meta, payload) = match prep {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            // The local file vanished (trimmed by another process?) or is
            // unreadable: nothing to upload.
            Stats::inc(&r.stats.upload_errors);
            r.report(
                "upload-read",
                format_args!("reading {} for upload: {e}", job.path.display()),
            );
            return false;
        }
        Err(e) => {
            Stats::inc(&r.stats.upload_errors);
            r.report("upload-read", format_args!("preparing upload: {e}"));
            return false;
        }
    };
    meta.signature =
        r.opts
            .keys
            .sign_entry(&job.action, &meta.output_id, meta.size, meta.put_time_nanos);
    let wire_len = payload.len();
    let limit = upload_timeout(r.opts.upload_timeout, wire_len);
    let started = Instant::now();
    // An object this process found corrupt (or untrusted) is replaced:
    // deleted, then created as usual (so a good copy another machine writes
    // meanwhile wins as any first writer does). Without this, `If-None-Match`
    // would keep the bad object forever. A writer that may not delete skips
    // this one object and keeps writing the others.
    let heal = r.knows_corrupt(&job.action).await;
    let store = async {
        if heal {
            r.store.remove(&job.action).await.map_err(Step::Heal)?;
        }
        r.store
            .put(&job.action, &meta, payload.source())
            .await
            .map_err(Step::Put)
    };
    let stored = match tokio::time::timeout(limit, store).await {
        Ok(Ok(stored)) => {
            // No breaker.success() here: a bucket too slow for lookups may
            // still take uploads, and their successes must not keep
            // resetting the count of lookups that timed out (each of which
            // cmd/go waits for). A write that probed an open breaker closes
            // it, though, and one that follows denied writes resumes them.
            r.wrote();
            Stats::inc(&r.stats.uploads);
            match stored {
                PutOutcome::Created => {
                    Stats::add(&r.stats.bytes_uploaded, wire_len);
                    if heal {
                        Stats::inc(&r.stats.healed);
                    }
                }
                PutOutcome::AlreadyThere => Stats::inc(&r.stats.uploads_existing),
            }
            r.note_present(job.action, job.output).await;
            true
        }
        Ok(Err(Step::Heal(e))) if e.kind == FailureKind::AccessDenied => {
            Stats::inc(&r.stats.upload_errors);
            r.report(
                "heal-denied",
                format_args!(
                    "{}: object {} is corrupt or untrusted, and deleting it to replace it was denied ({}); leaving it, uploading the others (later ones are only counted)",
                    r.describe(),
                    r.store.key(&job.action),
                    e.message
                ),
            );
            false
        }
        Ok(Err(Step::Heal(e) | Step::Put(e))) => {
            Stats::inc(&r.stats.upload_errors);
            r.failed(&e, e.kind == FailureKind::AccessDenied);
            false
        }
        Err(_) => {
            Stats::inc(&r.stats.upload_errors);
            r.failed(&RemoteError::timeout(started.elapsed()), false);
            false
        }
    };
    drop(payload);
    stored
}

/// Which call of an upload failed.
enum Step {
    /// The delete of a corrupt or untrusted object before its replacement.
    Heal(RemoteError),
    Put(RemoteError),
}

/// The bytes to send: small and incompressible outputs as they are, others
/// as one zstd frame when that saves at least 10%.
enum Payload {
    Memory(Bytes),
    File {
        path: PathBuf,
        len: u64,
        _scratch: Option<tempfile::TempPath>,
    },
}

impl Payload {
    fn len(&self) -> u64 {
        match self {
            Payload::Memory(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    /// Keeps the body in the spool for the pack (best effort).
    fn keep(&self, meta: &ObjectMeta, spool: &Spool) {
        let zstd = meta.encoding == Encoding::Zstd;
        match self {
            Payload::Memory(b) => {
                spool.keep(meta.output_id, meta.size, zstd, b.len() as u64, &mut &b[..])
            }
            Payload::File { path, len, .. } => {
                if let Ok(mut f) = std::fs::File::open(path) {
                    spool.keep(meta.output_id, meta.size, zstd, *len, &mut f);
                }
            }
        }
    }

    fn source(&self) -> Source<'_> {
        match self {
            Payload::Memory(b) => Source::Memory(b),
            Payload::File { path, len, .. } => Source::File(path, *len),
        }
    }
}

/// The output as it is, for stores that take raw bytes (the seed's servers):
/// the local mirror's file, which is never rewritten.
fn raw(job: &UploadJob) -> (ObjectMeta, Payload) {
    let meta = ObjectMeta {
        output_id: job.output,
        size: job.size,
        put_time_nanos: job.put_time_nanos,
        encoding: Encoding::Identity,
        signature: None,
    };
    let payload = Payload::File {
        path: job.path.clone(),
        len: job.size,
        _scratch: None,
    };
    (meta, payload)
}

fn prepare(job: &UploadJob, local: &dyn Sink) -> std::io::Result<(ObjectMeta, Payload)> {
    let mut meta = ObjectMeta {
        output_id: job.output,
        size: job.size,
        put_time_nanos: job.put_time_nanos,
        encoding: Encoding::Identity,
        signature: None,
    };
    let worth = |compressed: u64| (compressed as f64) <= job.size as f64 * COMPRESS_MAX_RATIO;
    if job.size < COMPRESS_MIN {
        return Ok((
            meta,
            Payload::Memory(Bytes::from(std::fs::read(&job.path)?)),
        ));
    }
    if job.size <= IN_MEMORY_MAX {
        let mut cctx = Pooled::take()?;
        let raw = std::fs::read(&job.path)?;
        let mut packed = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
        cctx.get()
            .compress2(&mut packed, &raw)
            .map_err(zstd_error)?;
        return Ok(if worth(packed.len() as u64) {
            meta.encoding = Encoding::Zstd;
            (meta, Payload::Memory(Bytes::from(packed)))
        } else {
            (meta, Payload::Memory(Bytes::from(raw)))
        });
    }
    let (scratch, file) = local.scratch(Some(&job.path))?;
    // The frame records its content size, so a decoder allocates a window no
    // bigger than the output instead of zstd's full 2 MiB (level 3).
    let mut enc = zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), ZSTD_LEVEL)?;
    enc.set_pledged_src_size(Some(job.size))?;
    enc.include_contentsize(true)?;
    std::io::copy(&mut std::fs::File::open(&job.path)?, &mut enc)?;
    let file = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
    let len = file.metadata()?.len();
    Ok(if worth(len) {
        meta.encoding = Encoding::Zstd;
        let path = scratch.to_path_buf();
        (
            meta,
            Payload::File {
                path,
                len,
                _scratch: Some(scratch),
            },
        )
    } else {
        (
            meta,
            Payload::File {
                path: job.path.clone(),
                len: job.size,
                _scratch: None,
            },
        )
    })
}

/// zstd contexts for outputs compressed in memory, reused: making one per
/// upload allocated (and the kernel zeroed) its tables for every output. At
/// most [`POOL_MAX`] are kept, each sized for [`IN_MEMORY_MAX`] at most
/// (larger outputs stream through a context of their own, which goes with
/// them rather than keep a big window in the pool).
static POOL: Mutex<Vec<zstd::zstd_safe::CCtx<'static>>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 2;

/// A context taken from the pool, at [`ZSTD_LEVEL`], returned when dropped.
struct Pooled(Option<zstd::zstd_safe::CCtx<'static>>);

impl Pooled {
    fn take() -> std::io::Result<Pooled> {
        use zstd::zstd_safe::{CCtx, CParameter, ResetDirective};
        let mut cctx = POOL.lock().unwrap().pop().unwrap_or_else(CCtx::create);
        // Parameters stay as they were, but a frame left unfinished (an
        // upload whose read failed) must not leak into the next.
        cctx.reset(ResetDirective::SessionOnly)
            .map_err(zstd_error)?;
        cctx.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))
            .map_err(zstd_error)?;
        Ok(Pooled(Some(cctx)))
    }
}

impl Pooled {
    fn get(&mut self) -> &mut zstd::zstd_safe::CCtx<'static> {
        self.0.as_mut().expect("taken only by drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap();
        if let Some(cctx) = self.0.take().filter(|_| pool.len() < POOL_MAX) {
            pool.push(cctx);
        }
    }
}

fn zstd_error(code: usize) -> std::io::Error {
    std::io::Error::other(zstd::zstd_safe::get_error_name(code))
}

/// Sizes an upload's timeout: the base, plus a second per 8 MiB so large
/// test binaries on a slow link are not cut off.
pub(crate) fn upload_timeout(base: Duration, wire_len: u64) -> Duration {
    base + Duration::from_secs(wire_len / (8 << 20))
}
