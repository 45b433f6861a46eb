//! Prefetch from build manifests and packs, and their writes at close.
//!
//! At start, a task reads the scope's manifest (else a fallback scope's) and
//! its pack, and fills the local mirror in the order the last go command
//! used the entries: the pack streams in through one GET, and entries the
//! pack lacks are downloaded one by one, a bounded number at a time. Each
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

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use tokio::sync::{mpsc, oneshot, watch, OnceCell, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::manifest::{self, Manifest, Used};
use super::pack::{self, Decoder, Item, ReadError, Stored};
use super::s3::{Fetched, RemoteError};
use super::transfer::{self, ChannelReader};
use super::Remote;
use crate::disk::{DiskCache, PutError};
use crate::scope::Scope;
use crate::stats::Stats;
use crate::wire::Id;

/// A get for a pack entry further than this ahead of the stream's position
/// does not wait for it: it downloads the entry on its own (the stream then
/// passes over it).
const LOOKAHEAD: usize = 256;

/// Most threads decoding, verifying and writing a pack's entries.
const UNPACK_WORKERS: usize = 4;

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
    Found(Arc<Vec<Stored>>),
    /// The bucket did not answer: no rewrite.
    Failed,
}

/// A pack streaming into the local mirror: where each entry is in it, and
/// how far the stream got.
struct Streaming {
    at: HashMap<Id, usize>,
    /// Entries settled: written, already there, or refused.
    settled: Box<[AtomicBool]>,
    /// Entries read off the network so far.
    read: AtomicUsize,
    /// Changes at each settled entry and at the end.
    progress: watch::Receiver<Progress>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    settled: usize,
    /// The stream is over (done, failed or stopped).
    ended: bool,
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
    own_pack: Mutex<PackSeen>,
    streaming: OnceLock<Streaming>,
    stopped: AtomicBool,
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
            own_pack: Mutex::default(),
            streaming: OnceLock::new(),
            stopped: AtomicBool::new(false),
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
        let own = self.scope.name.clone();
        let (primary, own_pack) = tokio::join!(
            self.previous.get_or_init(|| load(&remote, &own)),
            open_pack(&remote, &own),
        );
        let seen = match &own_pack {
            Opened::Missing => Some(PackSeen::Missing),
            Opened::Failed => Some(PackSeen::Failed),
            Opened::Found(_) => None, // known once its table is read
        };
        if let Some(seen) = seen {
            *self.own_pack.lock().unwrap() = seen;
        }
        let (from, manifest, pack) = match primary.clone() {
            Loaded::Found(m) => (own, m, own_pack),
            Loaded::Failed => return,
            Loaded::Missing | Loaded::Unreadable => {
                // A pack without its manifest is not read; the next write
                // replaces both.
                if let Opened::Found(_) = own_pack {
                    *self.own_pack.lock().unwrap() = PackSeen::Missing;
                }
                let mut chosen = None;
                for f in &self.scope.fallbacks {
                    match tokio::join!(load(&remote, f), open_pack(&remote, f)) {
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
        *self.source.lock().unwrap() = Some((from, manifest.entries.len()));
        let all = manifest.entries.iter().map(|e| (e.action, e.size));
        match pack {
            Opened::Found(body) => self.with_pack(&remote, &manifest, body, is_own).await,
            Opened::Missing | Opened::Failed => self.download_each(&remote, all).await,
        }
    }

    /// Streams a pack in while downloading the manifest's other entries one
    /// by one; then, one by one, whatever the pack did not deliver.
    async fn with_pack(
        self: &Arc<Self>,
        remote: &Arc<Remote>,
        manifest: &Manifest,
        body: ByteStream,
        is_own: bool,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let (table_tx, table_rx) = oneshot::channel();
        let (me, r) = (self.clone(), remote.clone());
        let reader = tokio::task::spawn_blocking(move || {
            me.unpack(&r, ChannelReader::new(rx), table_tx, is_own)
        });
        let rest = async {
            let packed: HashSet<Id> = match table_rx.await {
                Ok(table) => table.iter().map(|s: &Stored| s.item.action).collect(),
                Err(_) => HashSet::new(), // no table: all one by one
            };
            let others = manifest
                .entries
                .iter()
                .filter(|e| !packed.contains(&e.action))
                .map(|e| (e.action, e.size));
            self.download_each(remote, others).await;
            let left = reader.await.unwrap_or_default();
            self.download_each(remote, left.into_iter()).await;
        };
        let (network, ()) = tokio::join!(transfer::pump(remote, body, tx), rest);
        if let Some(e) = network {
            if !self.stopped.load(Ordering::Relaxed) {
                transfer::fail(remote, &e);
            }
        }
    }

    /// The blocking side of a pack stream: reads its table, then writes each
    /// entry not already on disk. Returns the entries it did not reach.
    fn unpack(
        &self,
        remote: &Remote,
        mut src: ChannelReader,
        table_tx: oneshot::Sender<Arc<Vec<Stored>>>,
        is_own: bool,
    ) -> Vec<(Id, u64)> {
        let table = match pack::read_table(&mut src) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                if is_own {
                    *self.own_pack.lock().unwrap() = match e {
                        ReadError::Corrupt(_) => PackSeen::Missing,
                        ReadError::Source(_) => PackSeen::Failed,
                    };
                }
                self.pack_trouble(remote, &e);
                return Vec::new();
            }
        };
        if is_own {
            *self.own_pack.lock().unwrap() = PackSeen::Found(table.clone());
        }
        let (progress, watching) = watch::channel(Progress::default());
        let at = table.iter().enumerate().map(|(i, s)| (s.item.action, i));
        let stream = Streaming {
            at: at.collect(),
            settled: table.iter().map(|_| AtomicBool::new(false)).collect(),
            read: AtomicUsize::new(0),
            progress: watching,
        };
        if self.streaming.set(stream).is_err() {
            return Vec::new(); // one pack per go command
        }
        let stream = self.streaming.get().expect("just set");
        let _ = table_tx.send(table.clone());
        let settle = |i: usize| {
            stream.settled[i].store(true, Ordering::Release);
            progress.send_modify(|p| p.settled += 1);
        };

        // This thread reads bodies off the network; workers decode, verify
        // and write them, in parallel: on a warm build that is what cmd/go
        // waits for.
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, UNPACK_WORKERS);
        let (jobs, queue) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(workers * 2);
        let queue = Mutex::new(queue);
        let spare: Mutex<Vec<Vec<u8>>> = Mutex::default();
        let mut reached = table.len();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let mut decoder = match Decoder::new() {
                        Ok(d) => d,
                        Err(e) => {
                            remote.report("pack", format_args!("zstd decoder: {e}"));
                            return;
                        }
                    };
                    loop {
                        let job = queue.lock().unwrap().recv();
                        let Ok((i, frame)) = job else {
                            return;
                        };
                        let s = &table[i];
                        if s.zstd && s.item.size > pack::STREAM_OVER {
                            // Large: decoded as a stream, as it is written.
                            self.place(remote, &s.item, is_own, |disk| {
                                let mut dec = zstd::stream::read::Decoder::with_buffer(&frame[..])
                                    .map_err(PutError::Body)?;
                                disk.write_output(
                                    &s.item.output,
                                    s.item.size,
                                    transfer::chunks(&mut dec),
                                )
                            });
                        } else {
                            match decoder.decode(s, &frame) {
                                Ok(data) => self.place(remote, &s.item, is_own, |disk| {
                                    disk.write_output_bytes(&s.item.output, data)
                                }),
                                Err(why) => self.entry_corrupt(remote, &s.item, &why, is_own),
                            }
                        }
                        settle(i);
                        if frame.capacity() <= pack::KEEP_BUFFER {
                            spare.lock().unwrap().push(frame);
                        }
                    }
                });
            }
            for (i, s) in table.iter().enumerate() {
                stream.read.store(i, Ordering::Relaxed);
                let item = &s.item;
                let there = matches!(remote.disk.get(&item.action),
                    Ok(Some(ref l)) if l.output_id == item.output);
                let step = if there || self.stopped.load(Ordering::Relaxed) {
                    pack::skip(&mut src, s).map(|()| settle(i))
                } else {
                    let mut frame = spare.lock().unwrap().pop().unwrap_or_default();
                    pack::read_body(&mut src, s, &mut frame).map(|()| {
                        // Fails only if every worker is gone; their
                        // entries are then left to the gets.
                        let _ = jobs.send((i, frame));
                    })
                };
                if let Err(e) = step {
                    self.pack_trouble(remote, &e);
                    reached = i;
                    break;
                }
            }
            drop(jobs);
        });
        progress.send_modify(|p| p.ended = true);
        table[reached..]
            .iter()
            .map(|s| (s.item.action, s.item.size))
            .collect()
    }

    /// Writes one pack entry into the local mirror: its output by `output`
    /// (which verifies it), then its action.
    fn place(
        &self,
        remote: &Remote,
        item: &Item,
        is_own: bool,
        output: impl FnOnce(&DiskCache) -> Result<PathBuf, PutError>,
    ) {
        // The slot goes first: a get may find the entry on disk the moment
        // it is written, and must be able to claim it then.
        self.slots.lock().unwrap().insert(
            item.action,
            Slot {
                size: item.size,
                done: true,
                used: false,
            },
        );
        let disk = &remote.disk;
        let written = output(disk).and_then(|_| {
            disk.write_action(&item.action, &item.output, item.size, item.put_time_nanos)
        });
        if written.is_ok() {
            Stats::inc(&remote.stats.prefetched);
            Stats::inc(&remote.stats.pack_prefetched);
            return;
        }
        self.slots.lock().unwrap().remove(&item.action);
        match written {
            Err(e) if e.is_disk() => {
                remote.report("disk", format_args!("writing a prefetched entry: {e}"));
            }
            Err(e) => self.entry_corrupt(remote, item, &e.to_string(), is_own),
            Ok(()) => {}
        }
    }

    /// A pack entry failed to decode or verify: a get for it finds it
    /// missing and downloads it on its own, and the pack is rewritten at
    /// close.
    fn entry_corrupt(&self, remote: &Remote, item: &Item, why: &str, is_own: bool) {
        if is_own {
            *self.own_pack.lock().unwrap() = PackSeen::Missing;
        }
        Stats::inc(&remote.stats.corrupt);
        remote.report(
            "corrupt-pack-entry",
            format_args!(
                "{}: the pack entry for {} is corrupt ({why}); it is downloaded on its own instead",
                remote.describe(),
                remote.store.key(&item.action)
            ),
        );
    }

    /// A pack stream stopped early. Network trouble was counted by the pump;
    /// a damaged pack is counted and reported here; a stop is silent.
    fn pack_trouble(&self, remote: &Remote, e: &ReadError) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        if let ReadError::Corrupt(why) = e {
            Stats::inc(&remote.stats.corrupt);
            remote.report(
                "corrupt-pack",
                format_args!(
                    "{}: the pack of scope {:?} is damaged ({why}); the rest of its entries are downloaded one by one, and it will be replaced",
                    remote.describe(),
                    self.scope.name
                ),
            );
            *self.own_pack.lock().unwrap() = PackSeen::Missing;
        }
    }

    /// Called for a get of an entry not on disk: when the pack being
    /// streamed holds it, waits until the stream has settled it (true).
    /// False, at once, for an entry the pack does not hold or will not
    /// reach soon, and when the stream ended first.
    pub async fn await_pack(&self, action: &Id) -> bool {
        let Some(s) = self.streaming.get() else {
            return false;
        };
        let Some(&at) = s.at.get(action) else {
            return false;
        };
        if at >= s.read.load(Ordering::Relaxed) + LOOKAHEAD {
            return false;
        }
        let mut progress = s.progress.clone();
        loop {
            let ended = progress.borrow_and_update().ended;
            if s.settled[at].load(Ordering::Acquire) {
                return true;
            }
            if ended || progress.changed().await.is_err() {
                return false;
            }
        }
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
            if !remote.breaker.allow() {
                break; // the bucket is failing: leave the rest to the gets
            }
            if remote.knows(&action) || matches!(remote.disk.get(&action), Ok(Some(_))) {
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

    /// Merges what this go command used into the scope's manifest and writes
    /// it, with a new pack if the scope's is missing or stale. Skipped when
    /// read-only, when nothing was used, and when the previous manifest could
    /// not be read (writing would drop its entries). The manifest write is
    /// skipped too when it would say nothing new (see [`Manifest::covers`]).
    pub async fn write_back(&self, remote: &Arc<Remote>, used: &[Used]) {
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
        let unchanged = previous.is_some_and(|p| p.covers(&merged, now));
        let write_manifest = async {
            if unchanged {
                return;
            }
            let body = merged.encode();
            let key = remote.store.manifest_key(&self.scope.name);
            // cmd/go is waiting for the close reply: a slow bucket costs at
            // most this, as for reading a manifest.
            let bound = manifest_bound(remote);
            match tokio::time::timeout(bound, remote.store.put_replace(&key, body)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed(remote, &e, true),
                Err(_) => failed(remote, &RemoteError::timeout(bound), true),
            }
        };
        tokio::join!(write_manifest, self.write_pack(remote, &merged));
    }

    /// Writes the scope's pack anew when it is missing or stale (see
    /// [`pack::stale`]) and this machine holds nine in ten of the manifest's
    /// entries: those on disk here, in the manifest's order. Bounded by the
    /// upload timeout, build included.
    async fn write_pack(&self, remote: &Arc<Remote>, merged: &Manifest) {
        let current = match &*self.own_pack.lock().unwrap() {
            PackSeen::Found(t) => Some(t.clone()),
            PackSeen::Missing => None,
            PackSeen::NotRead | PackSeen::Failed => return,
        };
        let entries: Vec<(Id, Id, u64)> = merged
            .entries
            .iter()
            .map(|e| (e.action, e.output, e.size))
            .collect();
        let disk = remote.disk.clone();
        let build = tokio::task::spawn_blocking(move || -> io::Result<Option<_>> {
            let mut items = Vec::new();
            let (mut total, mut listed) = (0u64, 0usize);
            for (action, output, size) in entries {
                if size > pack::MAX_ENTRY_BYTES || total + size > pack::MAX_PACK_BYTES {
                    continue;
                }
                listed += 1;
                let Ok(Some(e)) = disk.get(&action) else {
                    continue;
                };
                if e.output_id != output || e.size != size {
                    continue;
                }
                total += e.size;
                let item = Item {
                    action,
                    output,
                    size: e.size,
                    put_time_nanos: e.put_time_nanos,
                };
                items.push((item, e.disk_path));
            }
            // A machine that holds only part of the manifest (a smaller go
            // command, or one stopped early) leaves the pack to one that
            // holds it all, rather than shrink it.
            if items.len() * 10 < listed * 9 {
                return Ok(None);
            }
            let wanted: Vec<Item> = items.iter().map(|(i, _)| *i).collect();
            if !pack::stale(current.as_deref().map(|t| &t[..]), &wanted) {
                return Ok(None);
            }
            // In a shard directory, like every temp file, where trim
            // clears one a killed process left behind.
            let (scratch, mut file) = disk.scratch_beside(&disk.output_path(&Id([0; 32])))?;
            let len = pack::write(&mut file, &items)?;
            Ok(Some((scratch, len)))
        });
        let bound = remote.opts.upload_timeout;
        let key = remote.store.pack_key(&self.scope.name);
        let written = tokio::time::timeout(bound, async {
            let (scratch, len) = match build.await.map_err(io::Error::other).and_then(|r| r) {
                Ok(Some(built)) => built,
                Ok(None) => return Ok(()),
                Err(e) => {
                    // Local trouble (a file gone, the disk full): no pack
                    // this time, and no bucket error.
                    remote.report("pack", format_args!("building the scope's pack: {e}"));
                    return Ok(());
                }
            };
            remote.store.put_replace_file(&key, scratch.path()).await?;
            Stats::inc(&remote.stats.packs_written);
            Stats::add(&remote.stats.bytes_uploaded, len);
            Ok(())
        });
        match written.await {
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

/// What asking for a scope's pack found.
enum Opened {
    Missing,
    /// Its body, to stream.
    Found(ByteStream),
    Failed,
}

/// Asks for a scope's pack (the body streams later, in `with_pack`).
async fn open_pack(remote: &Remote, scope: &str) -> Opened {
    if !remote.breaker.allow() {
        return Opened::Failed;
    }
    let key = remote.store.pack_key(scope);
    let bound = remote.opts.timeout;
    match tokio::time::timeout(bound, remote.store.get_key(&key)).await {
        Ok(Ok(Fetched::Missing)) => {
            remote.breaker.success();
            Opened::Missing
        }
        Ok(Ok(Fetched::Found { body, .. })) => {
            remote.breaker.success();
            Opened::Found(body)
        }
        Ok(Err(e)) => {
            failed(remote, &e, false);
            Opened::Failed
        }
        Err(_) => {
            failed(remote, &RemoteError::timeout(bound), false);
            Opened::Failed
        }
    }
}
