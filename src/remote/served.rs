//! The tier's calls on behalf of `gocacher serve`, which passes manifests
//! and packs through to the bucket for its clients: each call bounded by
//! the tier's timeouts, and its outcome recorded in the tier's state, as
//! the tier's own calls are.

use super::store::{FailureKind, Fetched, Ranged, RemoteError, Source};
use super::{upload_timeout, Remote};
use crate::stats::Stats;

/// Why a named object's write did not reach the bucket.
pub enum NotWritten {
    /// The bucket is out of use, or its writes are denied lately.
    Paused,
    Failed(RemoteError),
}

impl std::fmt::Display for NotWritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotWritten::Paused => {
                f.write_str("the bucket is out of use or its writes are denied; retrying it later")
            }
            NotWritten::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl Remote {
    /// Whether a read may go to the bucket now (takes the probe's turn when
    /// the bucket is being tried again). False: answer from the local
    /// store.
    pub fn may_read(&self) -> bool {
        self.breaker.allow()
    }

    /// Reads a named object (after [`Remote::may_read`]), to its headers
    /// within the lookup timeout.
    pub async fn read_named(&self, key: &str) -> Result<Fetched, RemoteError> {
        let timeout = self.opts.timeout;
        let got = tokio::time::timeout(timeout, self.store.get_named(key)).await;
        self.settle(got.unwrap_or(Err(RemoteError::timeout(timeout))))
    }

    /// Reads part of a named object (after [`Remote::may_read`]).
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<Ranged, RemoteError> {
        let timeout = self.opts.timeout;
        let asked = self.store.get_range(key, start, end, if_match);
        let got = tokio::time::timeout(timeout, asked).await;
        self.settle(got.unwrap_or(Err(RemoteError::timeout(timeout))))
    }

    /// Writes a named object, unless the bucket is out of use or its writes
    /// are paused. A failure counts as an upload error.
    pub async fn write_named(&self, key: &str, body: Source<'_>) -> Result<(), NotWritten> {
        if self.is_read_only() || !self.breaker.allow() {
            return Err(NotWritten::Paused);
        }
        let limit = upload_timeout(self.opts.upload_timeout, body.len());
        let put = tokio::time::timeout(limit, self.store.put_named(key, body)).await;
        match put.unwrap_or(Err(RemoteError::timeout(limit))) {
            Ok(()) => {
                self.wrote();
                Ok(())
            }
            Err(e) => {
                Stats::inc(&self.stats.upload_errors);
                self.failed(&e, e.kind == FailureKind::AccessDenied);
                Err(NotWritten::Failed(e))
            }
        }
    }

    /// Whether the bucket is out of use and its cooldown over: a probe is
    /// due, whether or not a request comes.
    pub fn probe_due(&self) -> bool {
        self.breaker.is_open() && !self.breaker.is_cooling()
    }

    /// Records a read's outcome in the tier's state.
    fn settle<T>(&self, got: Result<T, RemoteError>) -> Result<T, RemoteError> {
        match &got {
            Ok(_) => self.answered(),
            Err(e) => self.request_failed(e, false),
        }
        got
    }
}
