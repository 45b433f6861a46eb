//! Counters shared by every request, snapshotted into a serde struct for the
//! `--stats-file` JSON and the `--verbose` close line.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

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
}

/// A point-in-time copy of [`Stats`]; the JSON keys are documented in README.md.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
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
        }
    }
}

impl Snapshot {
    /// The seed's one-line summary, under our name.
    pub fn summary(&self) -> String {
        format!(
            "gocacher: closing; {} gets ({} hits, {} misses, {} errors); {} puts ({} errors)",
            self.gets, self.hits, self.misses, self.get_errors, self.puts, self.put_errors
        )
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
            s.snapshot().summary(),
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
        ] {
            assert!(v[key].is_u64(), "{key} missing or not an integer: {v}");
        }
    }
}
