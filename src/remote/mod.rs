//! The bucket tier: lazy downloads into the local mirror, asynchronous
//! uploads, an in-memory index of what the bucket is known to hold, and the
//! policy that keeps a slow, down or misconfigured bucket from failing or
//! stalling a build.
//!
//! Every failure here ends as a miss for cmd/go and a counted error; the
//! first failure of each kind also gets one line on stderr.

pub mod breaker;
mod connect;
pub mod format;
pub mod http;
pub mod locations;
pub mod manifest;
pub mod pack;
mod policy;
mod prefetch;
pub mod s3;
mod served;
mod spool;
pub mod store;
mod transfer;
mod upload;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::local::{Entry, Sink};
use crate::stats::Stats;
use crate::wire::Id;

use breaker::Breaker;
use locations::Locations;
use store::FailureKind;

pub use connect::{connect, StoreSettings};
pub use policy::{FailurePolicy, OneShot};
pub use prefetch::{Prefetch, Usage, WriteBack};
pub use served::NotWritten;
pub(crate) use upload::upload_timeout;
pub use upload::{upload_now, UploadJob, Uploader};

/// Entries the index holds: recent hits, uploads and known misses of this
/// process. A bound on its memory, well above what one go command uses.
const INDEX_CAPACITY: u64 = 65_536;

/// How long a go command's tier remembers a known miss (and a corrupt
/// object). Another machine may upload the entry meanwhile; a few minutes
/// keeps repeated lookups in one go command cheap.
pub const MISS_TTL: Duration = Duration::from_secs(300);

/// Downloads writing to disk at once (see [`Remote::writers`]): a few keep
/// the disk and the cores busy; more only add memory.
const DOWNLOAD_WRITERS: usize = 4;

/// Tuning for the bucket tier (validated flags).
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Bound on one GET (to the response headers, then between body chunks).
    pub timeout: Duration,
    /// Bound on one upload.
    pub upload_timeout: Duration,
    pub upload_workers: usize,
    pub upload_queue: usize,
    pub read_only: bool,
    /// How long the breaker stays open ([`breaker::COOLDOWN`]).
    pub breaker_cooldown: Duration,
    /// Keep a cold machine's upload bodies for the pack written at close
    /// (off for `gocacher serve`, which writes no packs of its own).
    pub spool: bool,
    /// How long a known miss is remembered: [`MISS_TTL`] for a go command;
    /// a server behind a load balancer asks the bucket again sooner, as
    /// another replica may have stored the entry meanwhile.
    pub miss_ttl: Duration,
    /// Signing of uploads and trust of downloads (`--sign-key`,
    /// `--trust-key`); default: nothing signed, every writer trusted.
    pub keys: Arc<crate::trust::Keys>,
}

/// Kinds of failure as counted (see [`Remote::failures`]): a denied read
/// and a denied write are told apart.
pub const FAILURE_KINDS: [&str; 6] = [
    "credentials",
    "no_bucket",
    "read_denied",
    "write_denied",
    "unavailable",
    "other",
];

fn kind_index(kind: FailureKind, writing: bool) -> usize {
    match kind {
        FailureKind::Credentials => 0,
        FailureKind::NoBucket => 1,
        FailureKind::AccessDenied if writing => 3,
        FailureKind::AccessDenied => 2,
        FailureKind::Unavailable => 4,
        FailureKind::Other => 5,
    }
}

/// What the index knows of an action in the bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Known {
    /// The bucket has it, with this output (downloaded or uploaded here).
    Present(Id),
    /// The bucket did not have it when asked.
    Missing,
    /// The bucket's object failed verification (counted and reported once).
    Corrupt,
}

pub struct Remote {
    store: Locations,
    local: Arc<dyn Sink>,
    stats: Arc<Stats>,
    opts: RemoteOptions,
    breaker: Breaker,
    /// Single-flight too: concurrent gets of one key share one download.
    index: moka::future::Cache<Id, Known>,
    read_only: AtomicBool,
    /// What a failure does: a go command's [`OneShot`], or serve's own.
    policy: Box<dyn FailurePolicy>,
    /// Failures counted by kind, as [`FAILURE_KINDS`] names them.
    failures: [AtomicU64; FAILURE_KINDS.len()],
    /// Downloads decompressing and writing at once. Each holds a zstd window
    /// and buffers; the network requests themselves are not limited by this,
    /// so a prefetch keeps many round trips in flight while memory stays
    /// bounded.
    writers: tokio::sync::Semaphore,
    /// Failure kinds already reported on stderr (std Mutex: never held
    /// across an await).
    reported: Mutex<HashSet<&'static str>>,
    /// Upload bodies kept for the pack at close (a cold machine only).
    spool: Option<Arc<spool::Spool>>,
    /// When the bucket last answered a read or took a write (std Mutex:
    /// never held across an await).
    answered_at: Mutex<Option<Instant>>,
}

impl Remote {
    pub fn new(
        store: Locations,
        local: Arc<dyn Sink>,
        stats: Arc<Stats>,
        opts: RemoteOptions,
        policy: Box<dyn FailurePolicy>,
    ) -> Arc<Remote> {
        let index = moka::future::Cache::builder()
            .max_capacity(INDEX_CAPACITY)
            .expire_after(KnownExpiry {
                miss: opts.miss_ttl,
            })
            .build();
        let spool = (opts.spool && local.was_empty() && !opts.read_only && store.keeps_named())
            .then(|| spool::Spool::new(&*local).map(Arc::new))
            .flatten();
        Arc::new(Remote {
            spool,
            read_only: AtomicBool::new(opts.read_only),
            policy,
            failures: Default::default(),
            store,
            local,
            stats,
            breaker: Breaker::with_cooldown(opts.breaker_cooldown),
            opts,
            index,
            writers: tokio::sync::Semaphore::new(DOWNLOAD_WRITERS),
            reported: Mutex::default(),
            answered_at: Mutex::default(),
        })
    }

    pub fn describe(&self) -> &str {
        self.store.describe()
    }

    /// What to check when the store refuses the credentials.
    pub(crate) fn credentials_hint(&self) -> &'static str {
        self.store.credentials_hint()
    }

    /// The breaker that takes the bucket out of use and lets one probe
    /// through after its cooldown.
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Whether writes are off: configured so, denied for good (one-shot),
    /// or denied lately (a server, until its retry).
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
            || self
                .policy
                .writes_paused_until()
                .is_some_and(|t| Instant::now() < t)
    }

    /// Whether writes are off for good: configured so, or denied for good
    /// (one-shot); not paused for a while.
    pub fn writes_off(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    /// When the bucket last answered a read (a miss too) or took a write;
    /// `None` before its first answer.
    pub fn last_answer(&self) -> Option<Instant> {
        *self.answered_at.lock().unwrap()
    }

    /// Whether the bucket is being used for reads (the breaker is closed).
    pub fn in_use(&self) -> bool {
        !self.breaker.is_open()
    }

    /// Whether writes go to the bucket: it is in use, and writes are
    /// neither configured off nor denied.
    pub fn writes_go_through(&self) -> bool {
        self.in_use()
            && !self.read_only.load(Ordering::Relaxed)
            && self.policy.writes_paused_until().is_none()
    }

    /// Failures so far, by kind ([`FAILURE_KINDS`]).
    pub fn failures(&self) -> [(&'static str, u64); FAILURE_KINDS.len()] {
        std::array::from_fn(|i| (FAILURE_KINDS[i], self.failures[i].load(Ordering::Relaxed)))
    }

    /// Looks an action up in the bucket; on a hit the output is verified and
    /// written to the local mirror before this returns its entry, with
    /// whether this call downloaded it (false: it joined a download already
    /// under way, such as a prefetch, or found one finished).
    pub async fn fetch(&self, action: Id) -> Option<(Entry, bool)> {
        match self.index.get(&action).await {
            Some(Known::Missing) => {
                Stats::inc(&self.stats.remote_misses);
                return None;
            }
            Some(Known::Corrupt) => return None,
            // On disk already (downloaded or uploaded here): no bucket call,
            // so no turn of the breaker's probe.
            Some(Known::Present(_)) => {
                if let Ok(Some(e)) = self.local.get(&action) {
                    return Some((e, false));
                }
            }
            None => {}
        }
        if !self.breaker.allow() {
            return None;
        }
        match self.download_once(action).await {
            Some((Known::Present(_), fresh)) => match self.local.get(&action) {
                Ok(Some(e)) => Some((e, fresh)),
                _ => None,
            },
            Some((Known::Missing, _)) => {
                Stats::inc(&self.stats.remote_misses);
                None
            }
            Some((Known::Corrupt, _)) | None => None,
        }
    }

    /// Downloads an action for a prefetch, sharing the download with any get
    /// of it. True when this call downloaded it and it is now on disk.
    pub(crate) async fn prefetch_one(&self, action: Id) -> bool {
        if !self.breaker.allow() {
            return false;
        }
        matches!(
            self.download_once(action).await,
            Some((Known::Present(_), true))
        )
    }

    /// Downloads `action` unless the index has settled it already; callers
    /// at the same moment share one download. The outcome, and whether this
    /// call ran the download; `None` when it failed (counted and reported).
    async fn download_once(&self, action: Id) -> Option<(Known, bool)> {
        let entry = self
            .index
            .entry(action)
            .or_try_insert_with(transfer::download(self, action))
            .await
            .ok()?;
        Some((*entry.value(), entry.is_fresh()))
    }

    /// Whether the index has settled this action (downloaded, uploaded,
    /// missing or corrupt) in this process.
    pub(crate) fn knows(&self, action: &Id) -> bool {
        self.index.contains_key(action)
    }

    /// Whether an upload of this action would be redundant.
    pub async fn knows_present(&self, action: &Id, output: &Id) -> bool {
        self.index.get(action).await == Some(Known::Present(*output))
    }

    /// Whether this process found the bucket's object for `action` corrupt
    /// (recently): an upload of it must replace it.
    pub(crate) async fn knows_corrupt(&self, action: &Id) -> bool {
        self.index.get(action).await == Some(Known::Corrupt)
    }

    pub(crate) async fn note_present(&self, action: Id, output: Id) {
        self.index.insert(action, Known::Present(output)).await;
    }

    /// Counts something no `--trust-key` signed (an object, a manifest, a
    /// pack); the first of a run gets one line, `what` saying which.
    pub(crate) fn untrusted(&self, what: std::fmt::Arguments<'_>) {
        Stats::inc(&self.stats.untrusted);
        self.report(
            "untrusted",
            format_args!(
                "{}: {what}; not used (further untrusted objects, manifests and packs are only counted)",
                self.describe()
            ),
        );
    }

    /// One stderr line per kind of trouble per process.
    pub(crate) fn report(&self, kind: &'static str, msg: std::fmt::Arguments<'_>) {
        if self.reported.lock().unwrap().insert(kind) {
            eprintln!("gocacher: {msg}");
        }
    }
}

/// Known misses expire; what the bucket holds does not change under a key.
struct KnownExpiry {
    miss: Duration,
}

impl moka::Expiry<Id, Known> for KnownExpiry {
    fn expire_after_create(
        &self,
        _key: &Id,
        value: &Known,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        match value {
            Known::Missing => Some(self.miss),
            Known::Corrupt => Some(MISS_TTL),
            Known::Present(_) => None,
        }
    }

    fn expire_after_update(
        &self,
        key: &Id,
        value: &Known,
        now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;
