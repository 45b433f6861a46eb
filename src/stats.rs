//! Counters shared by every request, snapshotted into a serde struct for the
//! `--stats-file` JSON and the `--verbose` close line.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters. Relaxed atomics: each is an independent tally, read only at
/// close, so no ordering between them is needed.
#[derive(Debug, Default)]
pub struct Stats {
    pub gets: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub get_errors: AtomicU64,
    pub puts: AtomicU64,
    pub put_errors: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub remote_hits: AtomicU64,
    pub remote_misses: AtomicU64,
    pub remote_errors: AtomicU64,
    pub corrupt: AtomicU64,
    pub uploads: AtomicU64,
    pub upload_errors: AtomicU64,
    pub uploads_dropped: AtomicU64,
    pub uploads_skipped: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub prefetched: AtomicU64,
    pub prefetch_hits: AtomicU64,
    pub prefetch_unused_bytes: AtomicU64,
    pub pack_prefetched: AtomicU64,
    pub packs_written: AtomicU64,
    pub uploads_existing: AtomicU64,
    pub healed: AtomicU64,
    pub puts_not_kept: AtomicU64,
    pub untrusted: AtomicU64,
}

/// A point-in-time copy of [`Stats`]; the JSON keys are documented in README.md.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Get requests from cmd/go.
    pub gets: u64,
    /// Gets answered with a file.
    pub hits: u64,
    /// Gets answered "miss" because nothing was stored.
    pub misses: u64,
    /// Gets that failed on an I/O error; cmd/go saw a miss.
    pub get_errors: u64,
    /// Put requests from cmd/go.
    pub puts: u64,
    /// Puts answered with `Err` (bad body, wrong OutputID, disk error).
    pub put_errors: u64,
    /// Output bytes served by hits.
    pub bytes_read: u64,
    /// Body bytes received and stored by puts.
    pub bytes_written: u64,
    /// Gets answered from the bucket (downloaded, verified, written locally).
    pub remote_hits: u64,
    /// Gets the bucket did not have either.
    pub remote_misses: u64,
    /// Bucket requests that failed (timeouts, unreachable, refused); those gets were misses.
    pub remote_errors: u64,
    /// Objects, pack entries or packs that failed verification (metadata,
    /// table checksum, size, zstd or sha256); never served.
    pub corrupt: u64,
    /// Uploads the bucket accepted (including objects it already had).
    pub uploads: u64,
    /// Uploads that failed.
    pub upload_errors: u64,
    /// Uploads not attempted: queue full, bucket backing off, or unfinished at the drain deadline.
    pub uploads_dropped: u64,
    /// Puts not uploaded because the bucket is known to hold that entry.
    pub uploads_skipped: u64,
    /// Object bytes received from the bucket (on the wire, compressed).
    pub bytes_downloaded: u64,
    /// Object bytes sent to the bucket (on the wire, compressed).
    pub bytes_uploaded: u64,
    /// Entries downloaded ahead of cmd/go's gets, from a build manifest.
    #[serde(default)]
    pub prefetched: u64,
    /// Gets answered from prefetched entries (on disk or still downloading).
    #[serde(default)]
    pub prefetch_hits: u64,
    /// Output bytes of prefetched entries that no get asked for.
    #[serde(default)]
    pub prefetch_unused_bytes: u64,
    /// Of `prefetched`, entries that came in the scope's pack (one GET for all).
    #[serde(default)]
    pub pack_prefetched: u64,
    /// Packs this go command wrote (at close, when the scope's pack was missing or stale).
    #[serde(default)]
    pub packs_written: u64,
    /// Of `uploads`, those the bucket already held under that key (another
    /// machine stored it first; `If-None-Match` answered 412).
    #[serde(default)]
    pub uploads_existing: u64,
    /// Corrupt or unverifiable objects this go command replaced with its
    /// own verified output (delete, then create).
    #[serde(default)]
    pub healed: u64,
    /// Puts the cache dir could not take (read-only, full): stored in a temp
    /// dir for this go command only, so the build goes on, then dropped.
    #[serde(default)]
    pub puts_not_kept: u64,
    /// Objects, manifests and packs not signed by a `--trust-key` (unsigned,
    /// another key, or signed for another entry); never served or kept.
    #[serde(default)]
    pub untrusted: u64,
    /// The process's peak resident memory so far, in bytes (0 where the OS
    /// does not say).
    #[serde(default)]
    pub peak_rss_bytes: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            gets: get(&self.gets),
            hits: get(&self.hits),
            misses: get(&self.misses),
            get_errors: get(&self.get_errors),
            puts: get(&self.puts),
            put_errors: get(&self.put_errors),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            remote_hits: get(&self.remote_hits),
            remote_misses: get(&self.remote_misses),
            remote_errors: get(&self.remote_errors),
            corrupt: get(&self.corrupt),
            uploads: get(&self.uploads),
            upload_errors: get(&self.upload_errors),
            uploads_dropped: get(&self.uploads_dropped),
            uploads_skipped: get(&self.uploads_skipped),
            bytes_downloaded: get(&self.bytes_downloaded),
            bytes_uploaded: get(&self.bytes_uploaded),
            prefetched: get(&self.prefetched),
            prefetch_hits: get(&self.prefetch_hits),
            prefetch_unused_bytes: get(&self.prefetch_unused_bytes),
            pack_prefetched: get(&self.pack_prefetched),
            packs_written: get(&self.packs_written),
            uploads_existing: get(&self.uploads_existing),
            healed: get(&self.healed),
            puts_not_kept: get(&self.puts_not_kept),
            untrusted: get(&self.untrusted),
            peak_rss_bytes: peak_rss_bytes(),
        }
    }
}

/// Peak RSS from getrusage (Linux reports kilobytes, macOS bytes).
#[cfg(unix)]
fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let max = ru.ru_maxrss.max(0) as u64;
    if cfg!(target_os = "macos") {
        max
    } else {
        max * 1024
    }
}

#[cfg(not(unix))]
fn peak_rss_bytes() -> u64 {
    0
}

impl Snapshot {
    /// The seed's one-line summary, under our name; with a bucket, its part
    /// follows.
    pub fn summary(&self, remote: bool) -> String {
        let mut line = format!(
            "gocacher: closing; {} gets ({} hits, {} misses, {} errors); {} puts ({} errors)",
            self.gets, self.hits, self.misses, self.get_errors, self.puts, self.put_errors
        );
        if remote {
            line += &format!(
                "; remote: {} hits, {} misses, {} errors, {} corrupt ({} healed), {} untrusted; {} uploads ({} errors, {} dropped, {} skipped); {:.1} MB down, {:.1} MB up",
                self.remote_hits,
                self.remote_misses,
                self.remote_errors,
                self.corrupt,
                self.healed,
                self.untrusted,
                self.uploads,
                self.upload_errors,
                self.uploads_dropped,
                self.uploads_skipped,
                self.bytes_downloaded as f64 / 1e6,
                self.bytes_uploaded as f64 / 1e6
            );
            line += &format!(
                "; prefetch: {} entries ({} from the pack), {} hits, {:.1} MB unused; {} packs written",
                self.prefetched,
                self.pack_prefetched,
                self.prefetch_hits,
                self.prefetch_unused_bytes as f64 / 1e6,
                self.packs_written
            );
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_seed_form() {
        let s = Stats::default();
        Stats::add(&s.gets, 3);
        Stats::inc(&s.hits);
        Stats::add(&s.misses, 2);
        Stats::inc(&s.puts);
        assert_eq!(
            s.snapshot().summary(false),
            "gocacher: closing; 3 gets (1 hits, 2 misses, 0 errors); 1 puts (0 errors)"
        );
    }

    #[test]
    fn json_has_every_key_as_integer() {
        let v = serde_json::to_value(Stats::default().snapshot()).unwrap();
        for key in [
            "gets",
            "hits",
            "misses",
            "get_errors",
            "puts",
            "put_errors",
            "bytes_read",
            "bytes_written",
            "remote_hits",
            "remote_misses",
            "remote_errors",
            "corrupt",
            "uploads",
            "upload_errors",
            "uploads_dropped",
            "uploads_skipped",
            "bytes_downloaded",
            "bytes_uploaded",
            "prefetched",
            "prefetch_hits",
            "prefetch_unused_bytes",
            "pack_prefetched",
            "packs_written",
            "uploads_existing",
            "healed",
            "puts_not_kept",
            "untrusted",
            "peak_rss_bytes",
        ] {
            assert!(v[key].is_u64(), "{key} missing or not an integer: {v}");
        }
    }
}
