//! The bucket behind `gocacher serve --remote`, as every path of the server
//! uses it: entry gets and puts, named gets and puts, and the probe that
//! tries a bucket out of use again. All of them obey one state, the
//! [`Remote`]'s under serve's policy (`pauses.rs`): a failure that
//! waiting may fix (credentials, a missing bucket, denied reads or writes,
//! an endpoint down) takes the bucket out of use, or pauses writes, for the
//! breaker's cooldown; then one request tries again. Nothing is given up for
//! good. While the bucket is out of use the server answers from its own
//! store, and a PUT is kept there but answered 503, as when the bucket
//! refuses it.

use std::sync::{Arc, Mutex};

use crate::local::Entry;
use crate::remote::{upload_now, Remote, UploadJob};
use crate::stats::Stats;
use crate::wire::Id;

use super::metrics::{KindLabels, Metrics};

pub(crate) struct Bucket {
    pub(crate) remote: Arc<Remote>,
    /// Key prefix of named objects: `[PREFIX/]gocacher/v1`.
    pub(crate) named_prefix: String,
    pub(crate) stats: Arc<Stats>,
    /// Failures by kind already added to the metrics' counters (scrapes
    /// may run at once).
    exported: Mutex<[u64; crate::remote::FAILURE_KINDS.len()]>,
}

impl Bucket {
    pub(crate) fn new(remote: Arc<Remote>, named_prefix: String, stats: Arc<Stats>) -> Bucket {
        Bucket {
            remote,
            named_prefix,
            stats,
            exported: Mutex::default(),
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

    /// Writes an entry to the bucket; whether it has it now.
    pub(crate) async fn put_entry(&self, job: UploadJob) -> bool {
        upload_now(&self.remote, job).await
    }

    /// Tries a bucket out of use again once its cooldown is over, whether
    /// or not a request comes: a read of a named object nobody writes (a
    /// miss is an answer).
    pub(crate) async fn watch(self: Arc<Self>) {
        let every =
            (self.remote.breaker().cooldown() / 4).max(std::time::Duration::from_millis(100));
        let key = self.named_key("manifests", &"0".repeat(32));
        loop {
            tokio::time::sleep(every).await;
            if self.remote.probe_due() && self.remote.may_read() {
                let _ = self.remote.read_named(&key).await;
            }
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
