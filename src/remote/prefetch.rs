//! Prefetch from build manifests and packs ([`Prefetch`], reading at start)
//! and their writes at close ([`WriteBack`]), two jobs that share only what
//! the first read of the scope's own manifest and pack ([`Seen`]).
//!
//! At start, a task reads the scope's manifest (else a fallback scope's) and
//! its pack, and fills the local mirror in the order the last go command
//! used the entries: the pack streams in through one GET, and entries the
//! pack lacks are downloaded one by one, a bounded number at a time. A
//! machine with anything on disk first reads only the pack's table (a ranged
//! GET beside the manifest's) and streams the rest only when it lacks enough
//! of it: a warm disk downloads the manifest and the table, nothing else. Each
//! single download goes through the index's single-flight, and a get for an
//! entry the pack holds waits for the stream to reach it, so no entry is
//! fetched twice at once. Gets for anything else take the lazy path. The
//! task stops at close. At close, the entries this go command used are
//! merged into the scope's manifest and written back (one PUT), and the pack
//! is rewritten when it lacks much of what the manifest now lists.
//!
//! Nothing here can fail a build: a missing, unreadable or unreachable
//! manifest or pack means less prefetch, and every entry is verified as any
//! other download.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::manifest::{self, Manifest, Used};
use super::pack::Packed;
use super::s3::RemoteError;
use super::Remote;
use crate::scope::Scope;
use crate::stats::Stats;
use crate::wire::Id;

/// What reading a scope's manifest found.
#[derive(Debug, Clone)]
enum Loaded {
    Missing,
    Found(Arc<Manifest>),
    /// There, but damaged: no prefetch, and the next write replaces it.
    Unreadable,
    /// The bucket did not answer: no prefetch, and no write either (it would
    /// drop the entries of the manifest we could not read).
    Failed,
}

/// What reading the scope's own pack found, for the rewrite at close.
#[derive(Debug, Clone, Default)]
enum PackSeen {
    /// Not looked at (prefetch off or stopped first): no rewrite.
    #[default]
    NotRead,
    /// None there, or one not worth reading: write one.
    Missing,
    Found(Arc<Vec<Packed>>),
    /// The bucket did not answer: no rewrite.
    Failed,
}

/// Entries a go command used (hits and puts), in order of first use.
#[derive(Debug, Default)]
pub struct Usage {
    list: Vec<Used>,
    at: HashMap<Id, usize>,
}

impl Usage {
    pub fn record(&mut self, u: Used) {
        match self.at.get(&u.action) {
            Some(&i) => self.list[i].gotten |= u.gotten,
            None if self.list.len() < manifest::MAX_ENTRIES => {
                self.at.insert(u.action, self.list.len());
                self.list.push(u);
            }
            None => {}
        }
    }

    pub fn take(&mut self) -> Vec<Used> {
        self.at.clear();
        std::mem::take(&mut self.list)
    }
}

/// A prefetched (or being prefetched) entry.
struct Slot {
    size: u64,
    done: bool,
    used: bool,
}

/// What reading the scope's own manifest and pack found, which the
/// write-back at close needs too: the reader fills it, the writer reads it.
#[derive(Default)]
struct Seen {
    /// The scope's own manifest as it was at start, read once for both the
    /// prefetch and the merge at close.
    previous: OnceCell<Loaded>,
    own_pack: Mutex<PackSeen>,
}

/// Reading: the scope's manifest and pack at start, into the local mirror.
pub struct Prefetch {
    scope: Scope,
    concurrency: usize,
    seen: Arc<Seen>,
    slots: Mutex<HashMap<Id, Slot>>,
    streaming: OnceLock<Streaming>,
    stopped: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Which scope's manifest the prefetch used, and its size (for --verbose).
    source: Mutex<Option<(String, usize)>>,
}

mod head;
mod unpack;
mod write;

use head::{ask_pack, Asked};
use unpack::{index_name, Streaming};
pub use write::WriteBack;

impl Prefetch {
    /// The prefetch of a scope, and the write-back of its manifest and pack
    /// at close: two jobs that share what the first one read.
    pub fn new(scope: Scope, concurrency: usize) -> (Arc<Prefetch>, WriteBack) {
        let seen = Arc::new(Seen::default());
        let writeback = WriteBack {
            scope: scope.name.clone(),
            seen: seen.clone(),
        };
        let prefetch = Arc::new(Prefetch {
            scope,
            concurrency,
            seen,
            slots: Mutex::default(),
            streaming: OnceLock::new(),
            stopped: AtomicBool::new(false),
            task: Mutex::default(),
            source: Mutex::default(),
        });
        (prefetch, writeback)
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Starts the prefetch task (unless the concurrency is 0).
    pub fn start(self: &Arc<Self>, remote: Arc<Remote>) {
        if self.concurrency == 0 {
            return;
        }
        let me = self.clone();
        let handle = tokio::spawn(async move { me.run(remote).await });
        *self.task.lock().unwrap() = Some(handle);
    }

    async fn run(self: Arc<Self>, remote: Arc<Remote>) {
        let own = self.scope.name.clone();
        // A cold machine (nothing on disk) needs the whole pack: ask for it
        // with the manifest. Any other asks for its table only, and for the
        // rest once the table shows the disk lacks enough of it.
        let whole = remote.local.was_empty();
        let (primary, own_pack) = tokio::join!(
            self.seen.previous.get_or_init(|| load(&remote, &own)),
            ask_pack(&remote, &own, whole),
        );
        let seen = match &own_pack {
            Asked::Missing => Some(PackSeen::Missing),
            Asked::Failed => Some(PackSeen::Failed),
            Asked::Whole(_) => None, // known once its table is read
            Asked::Head(h) => Some(h.seen()),
        };
        if let Some(seen) = seen {
            *self.seen.own_pack.lock().unwrap() = seen;
        }
        let (from, manifest, pack) = match primary.clone() {
            Loaded::Found(m) => (own, m, own_pack),
            Loaded::Failed => return,
            Loaded::Missing | Loaded::Unreadable => {
                // A pack without its manifest is not read; the next write
                // replaces both.
                if let Asked::Whole(_) | Asked::Head(_) = own_pack {
                    *self.seen.own_pack.lock().unwrap() = PackSeen::Missing;
                }
                let mut chosen = None;
                for f in &self.scope.fallbacks {
                    match tokio::join!(load(&remote, f), ask_pack(&remote, f, whole)) {
                        (Loaded::Found(m), p) => {
                            chosen = Some((f.clone(), m, p));
                            break;
                        }
                        (Loaded::Failed, _) => return,
                        _ => {}
                    }
                }
                let Some(chosen) = chosen else {
                    return;
                };
                chosen
            }
        };
        let is_own = from == self.scope.name;
        let index_name = index_name(&remote, &from);
        *self.source.lock().unwrap() = Some((from.clone(), manifest.entries.len()));
        let all = manifest.entries.iter().map(|e| (e.action, e.size));
        let (head, rest) = match pack {
            Asked::Whole(body) => (Bytes::new(), Some(body)),
            Asked::Head(head) => match self.rest_of(&remote, &from, head).await {
                Some(streamed) => streamed,
                None => return self.download_each(&remote, all).await,
            },
            Asked::Missing | Asked::Failed => return self.download_each(&remote, all).await,
        };
        self.with_pack(&remote, &manifest, head, rest, from, is_own, index_name)
            .await
    }

    /// Downloads entries one by one, a bounded number at a time, in order.
    async fn download_each(
        self: &Arc<Self>,
        remote: &Arc<Remote>,
        entries: impl Iterator<Item = (Id, u64)>,
    ) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut downloads = JoinSet::new();
        for (i, (action, size)) in entries.enumerate() {
            if i % 64 == 63 {
                // The disk checks below run on the protocol's thread: let
                // cmd/go's requests in between on a long manifest.
                tokio::task::yield_now().await;
            }
            if remote.breaker.is_cooling() {
                break; // the bucket is failing: leave the rest to the gets
            }
            if remote.knows(&action) || matches!(remote.local.get(&action), Ok(Some(_))) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            self.slots.lock().unwrap().insert(
                action,
                Slot {
                    size,
                    done: false,
                    used: false,
                },
            );
            let (me, r) = (self.clone(), remote.clone());
            downloads.spawn(async move {
                let fresh = r.prefetch_one(action).await;
                me.settle(action, fresh, &r.stats);
                drop(permit);
            });
            while downloads.try_join_next().is_some() {}
        }
        while downloads.join_next().await.is_some() {}
    }

    /// A prefetch download ended: the slot stays if this prefetch downloaded
    /// the entry, and goes if it failed or a get had already fetched it.
    fn settle(&self, action: Id, fresh: bool, stats: &Stats) {
        let mut slots = self.slots.lock().unwrap();
        if fresh {
            if let Some(s) = slots.get_mut(&action) {
                s.done = true;
            }
            Stats::inc(&stats.prefetched);
        } else {
            slots.remove(&action);
        }
    }

    /// Called for a get answered with `action` that did not download it
    /// itself: true (and the entry counts as used) when a prefetch did.
    pub fn claim(&self, action: &Id) -> bool {
        match self.slots.lock().unwrap().get_mut(action) {
            Some(s) => {
                s.used = true;
                true
            }
            None => false,
        }
    }

    /// Stops the prefetch; its unfinished downloads are dropped (their temp
    /// files with them).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Bytes of prefetched entries no get asked for.
    pub fn unused_bytes(&self) -> u64 {
        self.slots
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.done && !s.used)
            .map(|s| s.size)
            .sum()
    }

    /// For --verbose: which manifest fed the prefetch.
    pub fn note(&self) -> String {
        match &*self.source.lock().unwrap() {
            Some((scope, n)) if *scope == self.scope.name => {
                format!("prefetch from this scope's manifest ({n} entries)")
            }
            Some((scope, n)) => format!("prefetch from fallback scope {scope:?} ({n} entries)"),
            None => "no manifest to prefetch from".to_string(),
        }
    }
}

/// One bucket request (a manifest or pack, read or written) under `bound`.
/// A failure or a timeout is counted and reported (`writing`: as a write)
/// and gives `None`.
async fn bounded<T>(
    remote: &Remote,
    bound: Duration,
    writing: bool,
    request: impl Future<Output = Result<T, RemoteError>>,
) -> Option<T> {
    match tokio::time::timeout(bound, request).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            remote.request_failed(&e, writing);
            None
        }
        Err(_) => {
            remote.request_failed(&RemoteError::timeout(bound), writing);
            None
        }
    }
}

/// Bound on reading or writing one manifest, whose size is capped by
/// `manifest::MAX_ENTRIES`: the lookup bound, plus some seconds for the
/// body.
fn manifest_bound(remote: &Remote) -> Duration {
    remote.opts.timeout + Duration::from_secs(8)
}

/// Reads and parses a scope's manifest.
async fn load(remote: &Remote, scope: &str) -> Loaded {
    if !remote.breaker.allow() {
        return Loaded::Failed;
    }
    let key = remote.store.manifest_key(scope);
    let read = super::locations::read_small(&remote.store, &key, manifest::MAX_OBJECT_BYTES);
    let Some(read) = bounded(remote, manifest_bound(remote), false, read).await else {
        return Loaded::Failed;
    };
    remote.answered();
    if let Some(body) = &read {
        Stats::add(&remote.stats.bytes_downloaded, body.len() as u64);
    }
    match read {
        None => Loaded::Missing,
        Some(body) => match Manifest::decode(&body, remote.opts.keys.trust.as_ref()) {
            Ok(m) if m.scope == manifest::scope_hash(scope) => Loaded::Found(Arc::new(m)),
            Ok(_) => {
                remote.report(
                    "manifest",
                    format_args!(
                        "{}: manifest {key} (scope {scope:?}) was written for another scope; no prefetch from it, and it will be replaced",
                        remote.describe()
                    ),
                );
                Loaded::Unreadable
            }
            Err(manifest::Refused::Untrusted) => {
                remote.untrusted(format_args!(
                    "manifest {key} (scope {scope:?}) is untrusted (not signed by a --trust-key), so no prefetch from it; it will be replaced"
                ));
                Loaded::Unreadable
            }
            Err(manifest::Refused::Damaged(why)) => {
                remote.report(
                    "manifest",
                    format_args!(
                        "{}: manifest {key} (scope {scope:?}) is unreadable ({why}); no prefetch from it, and it will be replaced",
                        remote.describe()
                    ),
                );
                Loaded::Unreadable
            }
        },
    }
}
