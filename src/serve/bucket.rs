//! The bucket behind `gocacher serve --remote`, as every path of the server
//! uses it: entry gets and puts, named gets and puts, and the probe that
//! tries a bucket out of use again. All of them obey one state, the
//! [`Remote`]'s under serve's policy (`pauses.rs`): a failure that
//! waiting may fix (credentials, a missing bucket, denied reads or writes,
//! an endpoint down) takes the bucket out of use, or pauses writes, for the
//! breaker's cooldown; then one request tries again. Nothing is given up for
//! good. While the bucket is out of use the server answers from its own
//! store; a PUT the bucket does not take is kept there, acknowledged, and
//! uploaded once the bucket answers again (a bounded number wait; beyond
//! them a PUT is answered 503).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::local::Entry;
use crate::remote::{upload_now, Remote, UploadJob};
use crate::stats::Stats;
use crate::wire::Id;

use super::metrics::{KindLabels, Metrics};

/// How recently the bucket must have answered for `/readyz` to say ready.
/// Several [`KEEPALIVE`] reads fit in it, so one slow or lost read does not
/// take a replica out of its balancer; a bucket gone for this long does.
pub(crate) const FRESH: Duration = Duration::from_secs(30);

/// How long the bucket may go unasked before the watch reads from it: an
/// idle server still knows within seconds whether its bucket answers, for
/// one small GET each time (about 17,000 a day when nothing else comes).
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Entries kept on disk that the bucket did not take, waiting for it, at
/// most (each a few hundred bytes of memory).
const WAITING_MAX: usize = 10_000;

/// Tries of a waiting entry, after which it is given up (the bucket takes
/// others but not this one).
const WAITING_TRIES: u32 = 5;

/// Waiting entries uploaded in one pass of the watch, which then goes on
/// checking the bucket.
const WAITING_PASS: usize = 256;

pub(crate) struct Bucket {
    pub(crate) remote: Arc<Remote>,
    /// Key prefix of named objects: `[PREFIX/]gocacher/v1`.
    pub(crate) named_prefix: String,
    pub(crate) stats: Arc<Stats>,
    /// Failures by kind already added to the metrics' counters (scrapes
    /// may run at once).
    exported: Mutex<[u64; crate::remote::FAILURE_KINDS.len()]>,
    /// Acknowledged entries the bucket did not take yet, oldest first.
    waiting: Mutex<VecDeque<(UploadJob, u32)>>,
}

impl Bucket {
    pub(crate) fn new(remote: Arc<Remote>, named_prefix: String, stats: Arc<Stats>) -> Bucket {
        Bucket {
            remote,
            named_prefix,
            stats,
            exported: Mutex::default(),
            waiting: Mutex::default(),
        }
    }

    /// A named object's key in the bucket.
    pub(crate) fn named_key(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.named_prefix)
    }

    /// A module proxy answer's key (`--modproxy`): `[PREFIX/]mod/<rel>`,
    /// beside `gocacher/v1`, in the GOPROXY layout.
    pub(crate) fn mod_key(&self, rel: &str) -> String {
        let prefix = self
            .named_prefix
            .strip_suffix("gocacher/v1")
            .unwrap_or_default();
        format!("{prefix}mod/{rel}")
    }

    /// Looks an action up in the bucket (a local miss); `None` while the
    /// bucket is out of use, as for a miss.
    pub(crate) async fn fetch(&self, action: Id) -> Option<Entry> {
        self.remote.fetch(action).await.map(|(e, _)| e)
    }

    /// An entry the store kept: written to the bucket now or, if the bucket
    /// does not take it, once it takes writes again. `false`: neither
    /// (`--read-only`, or too many already waiting).
    pub(crate) async fn put_entry(&self, job: UploadJob) -> bool {
        if upload_now(&self.remote, job.clone()).await {
            return true;
        }
        if self.remote.writes_off() {
            return false;
        }
        let mut waiting = self.waiting.lock().unwrap();
        if waiting.len() >= WAITING_MAX {
            return false;
        }
        if waiting.is_empty() {
            eprintln!(
                "gocacher serve: {} did not take an entry; acknowledging the entries it does not take from the local store, and uploading them once it takes writes again (up to {WAITING_MAX}; more are answered 503)",
                self.remote.describe()
            );
        }
        waiting.push_back((job, 0));
        true
    }

    /// Acknowledged entries the bucket has not taken yet.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.lock().unwrap().len()
    }

    /// Uploads entries waiting for the bucket, oldest first, up to
    /// [`WAITING_PASS`], until one fails (it stays first, and is given up
    /// after [`WAITING_TRIES`]); one trimmed from the store meanwhile is
    /// dropped.
    /// Nothing is tried while the bucket is out of use or its writes are
    /// paused (once a pause is over, the next write tries again).
    pub(crate) async fn upload_waiting(&self) {
        if self.waiting() == 0 || !self.remote.in_use() || self.remote.is_read_only() {
            return;
        }
        let (mut done, mut dropped) = (0u64, 0u64);
        for _ in 0..WAITING_PASS {
            let Some((job, tries)) = self.waiting.lock().unwrap().pop_front() else {
                break;
            };
            if !job.path.exists() {
                dropped += 1;
                continue;
            }
            if upload_now(&self.remote, job.clone()).await {
                done += 1;
                continue;
            }
            if tries + 1 >= WAITING_TRIES {
                eprintln!(
                    "gocacher serve: {} did not take the entry for action {} in {WAITING_TRIES} tries; giving it up (it stays in the local store only)",
                    self.remote.describe(),
                    job.action.to_hex()
                );
            } else {
                self.waiting.lock().unwrap().push_front((job, tries + 1));
            }
            break;
        }
        if done + dropped > 0 {
            let left = self.waiting();
            eprintln!(
                "gocacher serve: uploaded to {} {done} of the entries kept while it did not take them ({dropped} trimmed from the store first); {left} still waiting{}",
                self.remote.describe(),
                if left > 0 { " (the next pass in a few seconds)" } else { "" }
            );
        }
    }

    /// Tries a bucket out of use again once its cooldown is over, and reads
    /// from one in use that nothing else asked for [`KEEPALIVE`], whether or
    /// not a request comes: a read of a named object nobody writes (a miss
    /// is an answer). The first read goes as the server starts.
    pub(crate) async fn watch(self: Arc<Self>) {
        let every =
            (self.remote.breaker().cooldown() / 4).clamp(Duration::from_millis(100), KEEPALIVE);
        let key = self.named_key("manifests", &"0".repeat(32));
        loop {
            let quiet = self
                .remote
                .last_answer()
                .is_none_or(|t| t.elapsed() >= KEEPALIVE);
            let due = self.remote.probe_due() || (self.remote.in_use() && quiet);
            if due && self.remote.may_read() {
                let _ = self.remote.read_named(&key).await;
            }
            self.upload_waiting().await;
            tokio::time::sleep(every).await;
        }
    }

    /// Why the server is not ready on account of the bucket (`/readyz`):
    /// out of use, or no answer for [`FRESH`]; `None` when it answers. A
    /// bucket that answers slowly, or refuses writes, is ready.
    pub(crate) fn not_ready(&self) -> Option<String> {
        let d = self.remote.describe();
        if !self.remote.in_use() {
            return Some(format!(
                "{d} is out of use after failures; serving from the local store while it is retried"
            ));
        }
        match self.remote.last_answer() {
            None => Some(format!("{d} has not answered yet")),
            Some(t) if t.elapsed() > FRESH => Some(format!(
                "{d} has not answered for {} s",
                t.elapsed().as_secs()
            )),
            Some(_) => None,
        }
    }

    /// Brings the metrics up to date with the bucket's state.
    pub(crate) fn export(&self, m: &Metrics) {
        m.bucket_in_use.set(self.remote.in_use() as i64);
        m.bucket_writes.set(self.remote.writes_go_through() as i64);
        let mut exported = self.exported.lock().unwrap();
        for (i, (kind, n)) in self.remote.failures().into_iter().enumerate() {
            let c = m.bucket_errors.get_or_create(&KindLabels {
                kind: kind.to_string(),
            });
            if n > exported[i] {
                c.inc_by(n - exported[i]);
                exported[i] = n;
            }
        }
    }
}
