//! The write-back at close: the scope's manifest, merged, and its pack when
//! it is missing or stale.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::super::manifest::{Manifest, Used};
use super::super::pack::{self, Item};
use super::super::store::Source;
use super::super::upload::upload_timeout;
use super::super::Remote;
use super::{bounded, load, manifest_bound, Loaded, PackSeen, Seen};
use crate::stats::Stats;
use crate::wire::Id;

/// Writing: the scope's manifest and pack at close.
pub struct WriteBack {
    /// The scope's name.
    pub(super) scope: String,
    pub(super) seen: Arc<Seen>,
}

impl WriteBack {
    /// Merges what this go command used into the scope's manifest and writes
    /// it, with a new pack if the scope's is missing or stale. Skipped when
    /// read-only, when nothing was used, and when the previous manifest could
    /// not be read (writing would drop its entries). The manifest write is
    /// skipped too when it would say nothing new (see [`Manifest::covers`]).
    pub async fn write(&self, remote: &Arc<Remote>, used: &[Used]) {
        if used.is_empty()
            || remote.is_read_only()
            || !remote.store.keeps_named()
            || remote.breaker.is_cooling()
        {
            return;
        }
        let previous = match self
            .seen
            .previous
            .get_or_init(|| load(remote, &self.scope))
            .await
        {
            Loaded::Found(m) => Some(m.clone()),
            Loaded::Missing | Loaded::Unreadable => None,
            Loaded::Failed => return,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let merged = Manifest::merge(previous.as_deref(), used, &self.scope, now);
        let unchanged = previous.is_some_and(|p| p.covers(&merged, now));
        let write_manifest = async {
            if unchanged {
                return;
            }
            let body = merged.encode(remote.opts.keys.signer.as_ref());
            let key = remote.store.manifest_key(&self.scope);
            // cmd/go is waiting for the close reply: a slow bucket costs at
            // most this, as for reading a manifest.
            let body = bytes::Bytes::from(body);
            let put = remote.store.put_named(&key, Source::Memory(&body));
            bounded(remote, manifest_bound(remote), true, put).await;
        };
        tokio::join!(write_manifest, self.write_pack(remote, &merged));
    }

    /// Writes the scope's pack anew when it is missing or stale (see
    /// [`pack::stale`]) and this machine holds nine in ten of the manifest's
    /// entries: those on disk here, in the manifest's order. Bounded by the
    /// upload of its size.
    async fn write_pack(&self, remote: &Arc<Remote>, merged: &Manifest) {
        let current = match &*self.seen.own_pack.lock().unwrap() {
            PackSeen::Found(t) => Some(t.clone()),
            PackSeen::Missing => None,
            PackSeen::NotRead | PackSeen::Failed => return,
        };
        let entries: Vec<(Id, Id, u64)> = merged
            .entries
            .iter()
            .map(|e| (e.action, e.output, e.size))
            .collect();
        let local = remote.local.clone();
        let spool = remote.spool.clone();
        let keys = remote.opts.keys.clone();
        let scope = self.scope.clone();
        let build = tokio::task::spawn_blocking(move || -> io::Result<Option<_>> {
            let mut items = Vec::new();
            let (mut total, mut listed) = (0u64, 0usize);
            for (action, output, size) in entries {
                if size > pack::MAX_ENTRY_BYTES || total + size > pack::MAX_PACK_BYTES {
                    continue;
                }
                listed += 1;
                let Ok(Some(e)) = local.get(&action) else {
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
            let (scratch, mut file) = local.scratch(None)?;
            // Bodies the uploads compressed are copied, not compressed again.
            let stored = |item: &Item, out: &mut dyn io::Write| match &spool {
                Some(s) => s.copy_to(&item.output, out),
                None => Ok(None),
            };
            let len = pack::write(&mut file, &items, &stored, keys.signer.as_ref(), &scope)?;
            Ok(Some((scratch, len)))
        });
        let key = remote.store.pack_key(&self.scope);
        let (scratch, len) = match build.await.map_err(io::Error::other).and_then(|r| r) {
            Ok(Some(built)) => built,
            Ok(None) => return,
            Err(e) => {
                // Local trouble (a file gone, the disk full): no pack this
                // time, and no bucket error.
                remote.report("pack", format_args!("building the scope's pack: {e}"));
                return;
            }
        };
        // Bounded like an upload of its size (and, with everything else at
        // close, by the close deadline).
        let bound = upload_timeout(remote.opts.upload_timeout, len);
        let put = remote.store.put_named(&key, Source::File(&scratch, len));
        if bounded(remote, bound, true, put).await.is_some() {
            Stats::inc(&remote.stats.packs_written);
            Stats::add(&remote.stats.bytes_uploaded, len);
        }
    }
}
