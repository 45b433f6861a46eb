//! What every request handler shares: the settings, the global store and
//! each namespace's, the write, compression and read budgets, the read
//! buffers, the metrics, the bucket and the sessions.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};

use super::auth::{self, Grant, GLOBAL};
use super::bucket::Bucket;
use super::metrics;
use crate::config::ServeConfig;
use crate::disk::DiskCache;

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) cfg: ServeConfig,
    pub(crate) disk: Arc<DiskCache>,
    pub(crate) writes: Arc<Semaphore>,
    /// Outputs being lz4-compressed ([`super::COMPRESSING`]).
    pub(crate) compressing: Arc<Semaphore>,
    /// Bytes of files read whole and held by replies, in units of
    /// [`super::reply::WHOLE_UNIT`] (`--reply-memory`).
    pub(crate) whole_reads: Arc<Semaphore>,
    /// Those replies' buffers, used again.
    pub(crate) buffers: Arc<super::buffers::Pool>,
    /// Bytes stored since the last trim; a twentieth of `--max-size` wakes
    /// it, so the store never grows more than that past the cap.
    pub(crate) written: AtomicU64,
    pub(crate) trim_due: Notify,
    /// The drain and the store's write check, for `/readyz`.
    pub(crate) health: Arc<super::health::Health>,
    pub(crate) metrics: metrics::Metrics,
    /// The bucket behind the store (`--remote`): every PUT is in it before
    /// it is acknowledged, a local miss is looked up in it, and manifests and
    /// packs are read from and written to it directly.
    pub(crate) remote: Option<Arc<Bucket>>,
    /// Sessions and their grants; `None`: no auth, everyone writes global.
    pub(crate) auth: Option<auth::Auth>,
    /// The module proxy (`--modproxy`).
    pub(crate) modproxy: Option<Arc<super::modproxy::ModProxy>>,
    /// Namespaces' stores, made by their first write: `<root>/ns/<hash>`.
    pub(crate) spaces: std::sync::Mutex<std::collections::HashMap<String, Arc<DiskCache>>>,
}

impl Shared {
    /// A namespace's store (the global one is `disk`).
    pub(crate) fn space(&self, namespace: &str) -> io::Result<Arc<DiskCache>> {
        if namespace == GLOBAL {
            return Ok(self.disk.clone());
        }
        let mut spaces = self.spaces.lock().unwrap();
        if let Some(d) = spaces.get(namespace) {
            return Ok(d.clone());
        }
        let d = Arc::new(DiskCache::open(&namespace_root(
            self.disk.root(),
            namespace,
        ))?);
        spaces.insert(namespace.to_string(), d.clone());
        Ok(d)
    }

    /// A namespace's store if something was ever written to it: reading
    /// creates no directory, so readers cost no disk and no memory.
    pub(crate) fn written_space(&self, namespace: &str) -> io::Result<Option<Arc<DiskCache>>> {
        if namespace == GLOBAL {
            return Ok(Some(self.disk.clone()));
        }
        if let Some(d) = self.spaces.lock().unwrap().get(namespace) {
            return Ok(Some(d.clone()));
        }
        match std::fs::metadata(namespace_root(self.disk.root(), namespace)) {
            Ok(_) => self.space(namespace).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stores a grant reads, in order: its namespace's (if it has
    /// one), then global.
    pub(crate) fn reading(&self, grant: &Grant) -> io::Result<Vec<Arc<DiskCache>>> {
        if grant.is_global() {
            return Ok(vec![self.disk.clone()]);
        }
        let mut stores = Vec::with_capacity(2);
        stores.extend(self.written_space(&grant.namespace)?);
        stores.push(self.disk.clone());
        Ok(stores)
    }

    pub(crate) fn stored(&self, n: u64) {
        let total = self.written.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.cfg.max_size / 20 {
            self.trim_due.notify_one();
        }
    }
}

/// Where a namespace's store lives: a hash of its name (names come from
/// tokens and claims, and may hold any character).
fn namespace_root(root: &Path, namespace: &str) -> PathBuf {
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(namespace.as_bytes())[..16]);
    root.join("ns").join(hash)
}

/// Every store under `root`: the global one and each namespace's.
pub(crate) fn store_roots(root: &Path) -> Vec<PathBuf> {
    let mut roots = vec![root.to_path_buf()];
    if let Ok(dir) = std::fs::read_dir(root.join("ns")) {
        roots.extend(dir.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    roots
}
