//! Asking for a scope's pack: the whole of it on a cold machine, else its
//! head (header and table) with a ranged GET, and the rest only when the
//! table shows the disk lacks enough of it.

use std::sync::Arc;

use bytes::Bytes;

use super::super::pack::{self, Packed, ReadError};
use super::super::store::{Body, Fetched, Ranged, RemoteError};
use super::super::Remote;
use super::{bounded, manifest_bound, PackSeen, Prefetch};
use crate::stats::Stats;

/// What asking for a scope's pack found.
pub(super) enum Asked {
    Missing,
    /// The whole pack's body, to stream.
    Whole(Body),
    /// Its table, read with a ranged GET; the bodies are asked for later,
    /// if at all.
    Head(Head),
    Failed,
}

/// A pack's first bytes: its header and table, and the start of its bodies.
pub(super) struct Head {
    bytes: Bytes,
    /// The table, or why it is unreadable or untrusted.
    table: Result<Arc<Vec<Packed>>, ReadError>,
    etag: Option<String>,
    /// The whole pack's length.
    total: u64,
}

impl Head {
    /// What this head says of a scope's own pack, for the rewrite at close.
    pub(super) fn seen(&self) -> PackSeen {
        match &self.table {
            Ok(t) => PackSeen::Found(t.clone()),
            Err(_) => PackSeen::Missing,
        }
    }
}

/// Bytes of a pack asked for with its table: the table of a pack of up to
/// ~2,800 entries (`go build std` has ~1,100), and so one request for most.
/// A longer table takes a second ranged GET.
const HEAD_BYTES: u64 = 256 << 10;

/// Asks for a scope's pack: the whole of it (`whole`), or its head only.
pub(super) async fn ask_pack(remote: &Remote, scope: &str, whole: bool) -> Asked {
    if !remote.breaker.allow() {
        return Asked::Failed;
    }
    let key = remote.store.pack_key(scope);
    if !whole {
        return match bounded(
            remote,
            manifest_bound(remote),
            false,
            read_head(remote, &key, scope),
        )
        .await
        {
            Some(Some(head)) => {
                remote.answered();
                Asked::Head(head)
            }
            Some(None) => {
                remote.answered();
                Asked::Missing
            }
            None => Asked::Failed,
        };
    }
    let asked = remote.store.get_named(&key);
    match bounded(remote, remote.opts.timeout, false, asked).await {
        Some(Fetched::Missing) => {
            remote.answered();
            Asked::Missing
        }
        Some(Fetched::Found { body, .. }) => {
            remote.answered();
            Asked::Whole(body)
        }
        None => Asked::Failed,
    }
}

/// Reads the head of `scope`'s pack: [`HEAD_BYTES`], and then the rest of
/// its table if that is longer (from the same object: `If-Match` its ETag).
async fn read_head(remote: &Remote, key: &str, scope: &str) -> Result<Option<Head>, RemoteError> {
    let (mut bytes, etag, total) = match remote
        .store
        .get_range(key, 0, Some(HEAD_BYTES - 1), None)
        .await?
    {
        Ranged::Found { body, etag, total } => {
            let bytes = collect(remote, key, body, HEAD_BYTES).await?;
            let total = total.unwrap_or(bytes.len() as u64);
            (bytes, etag, total)
        }
        // Changed cannot happen without If-Match; Past: an empty object.
        Ranged::Missing | Ranged::Changed => return Ok(None),
        Ranged::Past => (Vec::new(), None, 0),
    };
    let wanted = pack::table_len(&bytes).unwrap_or(0).min(total);
    if wanted > bytes.len() as u64 {
        let end = Some(wanted - 1);
        match remote
            .store
            .get_range(key, bytes.len() as u64, end, etag.as_deref())
            .await?
        {
            Ranged::Found { body, .. } => {
                let rest = wanted - bytes.len() as u64;
                bytes.extend(collect(remote, key, body, rest).await?)
            }
            // Replaced between the two requests: as if there were none; the
            // rewrite at close does not touch a pack it did not read.
            Ranged::Missing | Ranged::Changed | Ranged::Past => return Ok(None),
        }
    }
    let trust = remote.opts.keys.trust.as_ref();
    let table = pack::read_table(&mut &bytes[..], trust, scope).map(Arc::new);
    Ok(Some(Head {
        bytes: Bytes::from(bytes),
        table,
        etag,
        total,
    }))
}

/// A ranged body of at most `asked` bytes, read whole and counted as
/// downloaded. A longer one (a server that ignores `Range` sends the whole
/// pack) is cut off there, not buffered.
async fn collect(
    remote: &Remote,
    key: &str,
    body: Body,
    asked: u64,
) -> Result<Vec<u8>, RemoteError> {
    let bytes = body.collect(key, asked as usize).await?;
    Stats::add(&remote.stats.bytes_downloaded, bytes.len() as u64);
    Ok(bytes)
}

impl Prefetch {
    /// After the manifest: whether the disk lacks enough of the pack whose
    /// head is in hand to stream the rest of it, and if so that stream (the
    /// head, then the rest). `None`: the entries the disk lacks, if any, are
    /// fewer and cheaper one by one.
    pub(super) async fn rest_of(
        &self,
        remote: &Remote,
        scope: &str,
        head: Head,
    ) -> Option<(Bytes, Option<Body>)> {
        let table = match head.table {
            Ok(t) => t,
            Err(e) => {
                self.pack_trouble(remote, &e);
                return None;
            }
        };
        let local = remote.local.clone();
        let lacking = tokio::task::spawn_blocking(move || {
            let mut lacking = (0usize, 0u64);
            for s in table.iter() {
                if !local.holds(&s.item.action, &s.item.output) {
                    lacking.0 += 1;
                    lacking.1 += s.stored;
                }
            }
            lacking
        });
        let (count, bytes) = lacking.await.ok()?;
        let rest_len = head.total.saturating_sub(head.bytes.len() as u64);
        if count == 0 {
            return None;
        }
        if rest_len == 0 {
            return Some((head.bytes, None)); // all of it is in hand
        }
        // One round of single downloads gets them, and they are a small part
        // of what the stream would carry.
        if count <= self.concurrency && bytes * 4 < rest_len {
            return None;
        }
        let key = remote.store.pack_key(scope);
        let start = head.bytes.len() as u64;
        let asked = remote
            .store
            .get_range(&key, start, None, head.etag.as_deref());
        match bounded(remote, remote.opts.timeout, false, asked).await? {
            Ranged::Found { body, .. } => Some((head.bytes, Some(body))),
            Ranged::Missing | Ranged::Changed | Ranged::Past => None,
        }
    }
}
