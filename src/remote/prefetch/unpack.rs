//! The pack side of the prefetch: streaming a pack (asked for in `head`)
//! into the local mirror (one reader, a few decoding and writing workers),
//! and letting gets wait for the entries it is about to deliver.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use super::super::manifest::Manifest;
use super::super::pack::{self, Decoder, Item, Packed, ReadError};
use super::super::transfer::{self, ChannelReader};
use super::super::Remote;
use super::{PackSeen, Prefetch, Slot};
use crate::local::{Indexed, PutError, Sink};
use crate::stats::Stats;
use crate::wire::Id;

/// A get for a pack entry further than this ahead of the stream's position
/// does not wait for it: it downloads the entry on its own (the stream then
/// passes over it).
const LOOKAHEAD: usize = 256;

/// Most threads decoding, verifying and writing a pack's entries.
const UNPACK_WORKERS: usize = 4;

/// A pack streaming into the local mirror: where each entry is in it, and
/// how far the stream got.
pub(super) struct Streaming {
    at: HashMap<Id, usize>,
    /// Entries settled: written, already there, or refused.
    settled: Box<[AtomicBool]>,
    /// Entries read off the network so far.
    read: AtomicUsize,
    /// Where each entry ends in the pack's body (stored bytes, cumulative).
    ends: Box<[u64]>,
    /// A get gave up waiting: the stream is slower than a get may wait, so
    /// the gets after it download their entries on their own.
    too_slow: AtomicBool,
    /// Changes at each settled entry and at the end.
    progress: watch::Receiver<Progress>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    settled: usize,
    /// The stream is over (done, failed or stopped).
    ended: bool,
}

impl Prefetch {
    /// Streams a pack in while downloading the manifest's other entries one
    /// by one; then, one by one, whatever the pack did not deliver. The pack
    /// is `head` (its first bytes, already read; may be empty) then `rest`,
    /// the pack of scope `from`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn with_pack(
        self: &Arc<Self>,
        remote: &Arc<Remote>,
        manifest: &Manifest,
        head: Bytes,
        rest: Option<super::super::store::Body>,
        from: String,
        is_own: bool,
        index_name: String,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let (table_tx, table_rx) = oneshot::channel();
        let (me, r) = (self.clone(), remote.clone());
        let reader = tokio::task::spawn_blocking(move || {
            let src = ChannelReader::new(rx);
            me.unpack(&r, src, table_tx, &from, is_own, &index_name)
        });
        let others = async {
            let packed: HashSet<Id> = match table_rx.await {
                Ok(table) => table.iter().map(|s: &Packed| s.item.action).collect(),
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
        let feed = async move {
            if !head.is_empty() && tx.send(Ok(head)).await.is_err() {
                return None; // the reader gave up; it says why
            }
            match rest {
                Some(body) => transfer::pump(remote, body, tx, None).await,
                None => None,
            }
        };
        let (network, ()) = tokio::join!(feed, others);
        if let Some(e) = network {
            if !self.stopped.load(Ordering::Relaxed) {
                transfer::fail(remote, &e);
            }
        }
    }

    /// The blocking side of a pack stream: reads its table, then writes each
    /// entry not already on disk, and at the end the local index of them all
    /// (`index_name`). Returns the entries it did not reach. The pack is
    /// scope `from`'s, and trusted only as that scope's.
    fn unpack(
        &self,
        remote: &Remote,
        mut src: ChannelReader,
        table_tx: oneshot::Sender<Arc<Vec<Packed>>>,
        from: &str,
        is_own: bool,
        index_name: &str,
    ) -> Vec<(Id, u64)> {
        let table = match pack::read_table(&mut src, remote.opts.keys.trust.as_ref(), from) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                // A go command that ended before the table arrived learnt
                // nothing about the pack: it stays "not read", so close does
                // not rewrite a pack that may be fine.
                if is_own && !self.stopped.load(Ordering::Relaxed) {
                    *self.seen.own_pack.lock().unwrap() = match e {
                        ReadError::Corrupt(_) | ReadError::Untrusted => PackSeen::Missing,
                        ReadError::Source(_) => PackSeen::Failed,
                    };
                }
                self.pack_trouble(remote, &e);
                return Vec::new();
            }
        };
        if is_own {
            *self.seen.own_pack.lock().unwrap() = PackSeen::Found(table.clone());
        }
        let (progress, watching) = watch::channel(Progress::default());
        let at = table.iter().enumerate().map(|(i, s)| (s.item.action, i));
        let stream = Streaming {
            at: at.collect(),
            settled: table.iter().map(|_| AtomicBool::new(false)).collect(),
            read: AtomicUsize::new(0),
            ends: table
                .iter()
                .scan(0u64, |end, s| {
                    *end += s.stored;
                    Some(*end)
                })
                .collect(),
            too_slow: AtomicBool::new(false),
            progress: watching,
        };
        if self.streaming.set(stream).is_err() {
            return Vec::new(); // one pack per go command
        }
        let stream = self.streaming.get().expect("just set");
        let _ = table_tx.send(table.clone());
        // Entries on disk by the end: written by a worker, or already there.
        let held: Box<[AtomicBool]> = table.iter().map(|_| AtomicBool::new(false)).collect();
        let written = AtomicUsize::new(0);
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
                        let placed = if s.zstd && s.item.size > pack::STREAM_OVER {
                            // Large: decoded as a stream, as it is written.
                            self.place(remote, &s.item, is_own, |local| {
                                let mut dec = zstd::stream::read::Decoder::with_buffer(&frame[..])
                                    .map_err(PutError::Body)?;
                                let mut next = transfer::chunks(&mut dec);
                                local.write_output(&s.item.output, s.item.size, &mut next)
                            })
                        } else {
                            match decoder.decode(s, &frame) {
                                Ok(data) => self.place(remote, &s.item, is_own, |local| {
                                    local.write_output_bytes(&s.item.output, data)
                                }),
                                Err(why) => {
                                    self.entry_corrupt(remote, &s.item, &why, is_own);
                                    false
                                }
                            }
                        };
                        if placed {
                            held[i].store(true, Ordering::Relaxed);
                            written.fetch_add(1, Ordering::Relaxed);
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
                let there = remote.local.holds(&item.action, &item.output);
                if there {
                    held[i].store(true, Ordering::Relaxed);
                }
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
        if written.load(Ordering::Relaxed) > 0 {
            let mut entries = table
                .iter()
                .zip(held.iter())
                .filter(|(_, h)| h.load(Ordering::Relaxed))
                .map(|(s, _)| (s.item.action, indexed(&s.item)));
            if let Err(e) = remote.local.write_index(index_name, &mut entries) {
                // Only costs the next go command here a download per entry.
                remote.report("disk", format_args!("writing the pack's local index: {e}"));
            }
        }
        progress.send_modify(|p| p.ended = true);
        table[reached..]
            .iter()
            .map(|s| (s.item.action, s.item.size))
            .collect()
    }

    /// Writes one pack entry into the local mirror: its output by `output`
    /// (which verifies it); its action goes to the in-memory index (and, when
    /// the stream ends, to the index file), not to an `-a` file of its own.
    /// False if it could not be written.
    fn place(
        &self,
        remote: &Remote,
        item: &Item,
        is_own: bool,
        output: impl FnOnce(&dyn Sink) -> Result<PathBuf, PutError>,
    ) -> bool {
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
        match output(&*remote.local) {
            Ok(_) => {
                remote.local.index(item.action, indexed(item));
                Stats::inc(&remote.stats.prefetched);
                Stats::inc(&remote.stats.pack_prefetched);
                true
            }
            Err(e) => {
                self.slots.lock().unwrap().remove(&item.action);
                if e.is_disk() {
                    remote.report("disk", format_args!("writing a prefetched entry: {e}"));
                } else {
                    self.entry_corrupt(remote, item, &e.to_string(), is_own);
                }
                false
            }
        }
    }

    /// A pack entry failed to decode or verify: a get for it finds it
    /// missing and downloads it on its own, and the pack is rewritten at
    /// close.
    fn entry_corrupt(&self, remote: &Remote, item: &Item, why: &str, is_own: bool) {
        if self.stopped.load(Ordering::Relaxed) {
            return; // cut off by the stop, not damaged
        }
        if is_own {
            *self.seen.own_pack.lock().unwrap() = PackSeen::Missing;
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
    pub(super) fn pack_trouble(&self, remote: &Remote, e: &ReadError) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        match e {
            ReadError::Source(_) => return,
            ReadError::Corrupt(why) => {
                Stats::inc(&remote.stats.corrupt);
                remote.report(
                    "corrupt-pack",
                    format_args!(
                        "{}: the pack of scope {:?} is damaged ({why}); the rest of its entries are downloaded one by one, and it will be replaced",
                        remote.describe(),
                        self.scope.name
                    ),
                );
            }
            ReadError::Untrusted => remote.untrusted(format_args!(
                "a pack for scope {:?} is untrusted (not signed by a --trust-key as this scope's pack); its entries are downloaded one by one",
                self.scope.name
            )),
        }
        *self.seen.own_pack.lock().unwrap() = PackSeen::Missing;
    }

    /// At close, after `stop`: waits (at most `bound`) for the pack stream to
    /// end, so that the index of what it wrote is on disk before this
    /// process exits.
    pub async fn stream_ended(&self, bound: Duration) {
        if let Some(s) = self.streaming.get() {
            let mut progress = s.progress.clone();
            let _ = tokio::time::timeout(bound, progress.wait_for(|p| p.ended)).await;
        }
    }

    /// Called for a get of an entry not on disk: when the pack being
    /// streamed holds it, waits until the stream has settled it (true).
    /// False, at once, for an entry the pack does not hold or will not
    /// reach soon, when the stream ended first, and once a wait ran out.
    ///
    /// A wait is bounded as a download of the bytes between the stream's
    /// position and the entry's end would be (`--remote-timeout` plus a
    /// second per MiB): a pack that trickles in makes one get give up, and
    /// from then on every get downloads its entry on its own.
    pub async fn await_pack(&self, remote: &Remote, action: &Id) -> bool {
        let Some(s) = self.streaming.get() else {
            return false;
        };
        let Some(&at) = s.at.get(action) else {
            return false;
        };
        let read = s.read.load(Ordering::Relaxed);
        if at >= read + LOOKAHEAD || s.too_slow.load(Ordering::Relaxed) {
            return false;
        }
        let from = read.checked_sub(1).map_or(0, |i| s.ends[i]);
        let bound = transfer::body_bound(remote.opts.timeout, s.ends[at].saturating_sub(from));
        let mut progress = s.progress.clone();
        let wait = async {
            loop {
                let ended = progress.borrow_and_update().ended;
                if s.settled[at].load(Ordering::Acquire) {
                    return true;
                }
                if ended || progress.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(bound, wait).await {
            Ok(settled) => settled,
            Err(_) => {
                if !s.too_slow.swap(true, Ordering::Relaxed) {
                    remote.report(
                        "slow-pack",
                        format_args!(
                            "{}: the pack of scope {:?} arrives slower than a get may wait ({:.0?} for an entry); gets download their entries one by one while it goes on",
                            remote.describe(),
                            self.scope.name,
                            bound
                        ),
                    );
                }
                false
            }
        }
    }
}

fn indexed(item: &Item) -> Indexed {
    Indexed {
        output_id: item.output,
        size: item.size,
        put_time_nanos: item.put_time_nanos,
    }
}

/// The name of the local index of a scope's pack: a hash of where the pack
/// is (bucket, endpoint, key).
pub(super) fn index_name(remote: &Remote, scope: &str) -> String {
    let key = remote.store.pack_key(scope);
    let digest = Sha256::digest(format!("{}\n{key}", remote.describe()));
    Id(digest.into()).to_hex()[..32].to_owned()
}
