//! Prefetch from build manifests, and the manifest write at close.
//!
//! At start, a task reads the scope's manifest (else a fallback scope's) and
//! downloads its entries into the local mirror, in the order the last go
//! command used them, a bounded number at a time. Each download goes through
//! the index's single-flight, so a get for an entry in flight waits for that
//! download instead of starting another. Gets for anything else take the lazy
//! path. The task is dropped at close. At close, the entries this go command
//! used are merged into the scope's manifest and written back (one PUT).
//!
//! Nothing here can fail a build: a missing, unreadable or unreachable
//! manifest means no prefetch, and every download is verified as any other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OnceCell, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::manifest::{self, Manifest, Used};
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

pub struct Prefetch {
    scope: Scope,
    concurrency: usize,
    /// The scope's own manifest as it was at start, read once for both the
    /// prefetch and the merge at close.
    previous: OnceCell<Loaded>,
    slots: Mutex<HashMap<Id, Slot>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Which scope's manifest the prefetch used, and its size (for --verbose).
    source: Mutex<Option<(String, usize)>>,
}

impl Prefetch {
    pub fn new(scope: Scope, concurrency: usize) -> Arc<Prefetch> {
        Arc::new(Prefetch {
            scope,
            concurrency,
            previous: OnceCell::new(),
            slots: Mutex::default(),
            task: Mutex::default(),
            source: Mutex::default(),
        })
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
        let primary = self
            .previous
            .get_or_init(|| load(&remote, &self.scope.name))
            .await
            .clone();
        let mut chosen = match primary {
            Loaded::Found(m) => Some((self.scope.name.clone(), m)),
            Loaded::Failed => return,
            Loaded::Missing | Loaded::Unreadable => None,
        };
        if chosen.is_none() {
            for f in &self.scope.fallbacks {
                match load(&remote, f).await {
                    Loaded::Found(m) => {
                        chosen = Some((f.clone(), m));
                        break;
                    }
                    Loaded::Failed => return,
                    Loaded::Missing | Loaded::Unreadable => {}
                }
            }
        }
        let Some((from, manifest)) = chosen else {
            return;
        };
        *self.source.lock().unwrap() = Some((from, manifest.entries.len()));

        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut downloads = JoinSet::new();
        for (i, e) in manifest.entries.iter().enumerate() {
            if i % 64 == 63 {
                // The disk checks below run on the protocol's thread: let
                // cmd/go's requests in between on a long manifest.
                tokio::task::yield_now().await;
            }
            if !remote.breaker.allow() {
                break; // the bucket is failing: leave the rest to the gets
            }
            if remote.knows(&e.action) {
                continue;
            }
            if matches!(remote.disk.get(&e.action), Ok(Some(ref l)) if l.output_id == e.output) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            self.slots.lock().unwrap().insert(
                e.action,
                Slot {
                    size: e.size,
                    done: false,
                    used: false,
                },
            );
            let (me, r, action) = (self.clone(), remote.clone(), e.action);
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

    /// Merges what this go command used into the scope's manifest and writes
    /// it. Skipped when read-only, when nothing was used, and when the
    /// previous manifest could not be read (writing would drop its entries).
    pub async fn write_manifest(&self, remote: &Remote, used: &[Used]) {
        if used.is_empty() || remote.is_read_only() || !remote.breaker.allow() {
            return;
        }
        let previous = match self
            .previous
            .get_or_init(|| load(remote, &self.scope.name))
            .await
        {
            Loaded::Found(m) => Some(m.clone()),
            Loaded::Missing | Loaded::Unreadable => None,
            Loaded::Failed => return,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let merged = Manifest::merge(previous.as_deref(), used, &self.scope.name, now);
        let body = merged.encode();
        let key = remote.store.manifest_key(&self.scope.name);
        // cmd/go is waiting for the close reply: a slow bucket costs at most
        // this, as for reading a manifest.
        let bound = manifest_bound(remote);
        match tokio::time::timeout(bound, remote.store.put_replace(&key, body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed(remote, &e, true),
            Err(_) => failed(remote, &RemoteError::timeout(bound), true),
        }
    }
}

fn failed(remote: &Remote, e: &RemoteError, writing: bool) {
    Stats::inc(&remote.stats.remote_errors);
    remote.failed(e, writing);
}

/// Bound on reading or writing one manifest. A manifest is ~90 bytes an
/// entry (~100 KB for `go build std`, up to 9 MB at the cap): the lookup
/// bound, plus some seconds for the body.
fn manifest_bound(remote: &Remote) -> Duration {
    remote.opts.timeout + Duration::from_secs(8)
}

/// Reads and parses a scope's manifest.
async fn load(remote: &Remote, scope: &str) -> Loaded {
    if !remote.breaker.allow() {
        return Loaded::Failed;
    }
    let key = remote.store.manifest_key(scope);
    let bound = manifest_bound(remote);
    let read = tokio::time::timeout(
        bound,
        remote.store.read_small(&key, manifest::MAX_OBJECT_BYTES),
    );
    match read.await {
        Ok(Ok(None)) => {
            remote.breaker.success();
            Loaded::Missing
        }
        Ok(Ok(Some(body))) => {
            remote.breaker.success();
            match Manifest::decode(&body) {
                Ok(m) => Loaded::Found(Arc::new(m)),
                Err(why) => {
                    remote.report(
                        "manifest",
                        format_args!(
                            "{}: manifest {key} (scope {scope:?}) is unreadable ({why}); no prefetch from it, and it will be replaced",
                            remote.describe()
                        ),
                    );
                    Loaded::Unreadable
                }
            }
        }
        Ok(Err(e)) => {
            failed(remote, &e, false);
            Loaded::Failed
        }
        Err(_) => {
            failed(remote, &RemoteError::timeout(bound), false);
            Loaded::Failed
        }
    }
}
