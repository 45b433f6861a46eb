//! What the tier does when the bucket fails: each failure is counted by
//! kind, then handed to the tier's [`FailurePolicy`]. [`OneShot`] is a go
//! command's: switches that last the process (read-only, out of use).
//! `gocacher serve` brings its own (`serve/pauses.rs`): pauses that a later
//! request or probe lifts.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::store::{FailureKind, RemoteError};
use super::{breaker, kind_index, Remote};
use crate::stats::Stats;

/// What the tier does after a failed call, and when the bucket answers
/// again. The failure is already counted; the policy decides whether the
/// bucket stays in use, whether writes go on, and what the log says.
pub trait FailurePolicy: Send + Sync + 'static {
    /// A call failed (`writing`: an upload or a write of a named object).
    fn failed(&self, tier: &Remote, err: &RemoteError, writing: bool);

    /// Until when writes wait after a denied one, if they do: past it the
    /// next write tries, and a write that goes through ends the pause.
    fn writes_paused_until(&self) -> Option<Instant> {
        None
    }

    /// A write went through: ends a pause of writes, if any.
    fn wrote(&self, _tier: &Remote) {}

    /// The bucket answered after it was out of use.
    fn back_in_use(&self, _tier: &Remote) {}
}

/// A go command's policy: it lasts minutes, and a refused credential, a
/// missing bucket or a denied read will not pass in that time. Reads stop
/// for the rest of the process, or writes do (a denied write); each kind
/// gets one line. Anything else backs off through the breaker.
pub struct OneShot;

impl FailurePolicy for OneShot {
    fn failed(&self, tier: &Remote, err: &RemoteError, writing: bool) {
        tier.failed_once(err, writing)
    }
}

impl Remote {
    /// A bucket request of the tier's own (a get, a manifest or pack read
    /// or write) failed: counted in `remote_errors`, then as [`Self::failed`].
    pub(crate) fn request_failed(&self, err: &RemoteError, writing: bool) {
        Stats::inc(&self.stats.remote_errors);
        self.failed(err, writing);
    }

    /// Counts a failed call (`writing`: an upload or a write of a named
    /// object) and applies the tier's policy.
    pub(crate) fn failed(&self, err: &RemoteError, writing: bool) {
        self.failures[kind_index(err.kind, writing)].fetch_add(1, Ordering::Relaxed);
        self.policy.failed(self, err, writing);
    }

    /// [`OneShot`]: stop for good (credentials, bucket, read denied), go
    /// read-only (write denied), or back off.
    fn failed_once(&self, err: &RemoteError, writing: bool) {
        let d = self.describe();
        match err.kind {
            FailureKind::Credentials => {
                self.breaker.disable();
                self.report("credentials", format_args!(
                    "{d}: the credentials were refused ({}); {}. Continuing with the local cache only",
                    err.message,
                    self.credentials_hint()
                ));
            }
            FailureKind::NoBucket => {
                self.breaker.disable();
                self.report(
                    "bucket",
                    format_args!(
                        "{d}: the bucket does not exist ({}). Continuing with the local cache only",
                        err.message
                    ),
                );
            }
            FailureKind::AccessDenied if writing => {
                self.read_only.store(true, Ordering::Relaxed);
                self.report(
                    "write-denied",
                    format_args!(
                        "{d}: uploads are denied ({}); switching to read-only for this run",
                        err.message
                    ),
                );
            }
            FailureKind::AccessDenied => {
                self.breaker.disable();
                self.report(
                    "read-denied",
                    format_args!(
                        "{d}: reads are denied ({}). Continuing with the local cache only",
                        err.message
                    ),
                );
            }
            FailureKind::Unavailable | FailureKind::Other => {
                if self.breaker.failure() {
                    self.report("unavailable", format_args!(
                        "{d}: {} failures in a row (last: {}); not using the bucket for {}s at a time",
                        breaker::THRESHOLD,
                        err.message,
                        self.opts.breaker_cooldown.as_secs()
                    ));
                }
            }
        }
    }

    /// Records that the bucket answered a read; a bucket that was out of
    /// use is back, which the policy may say.
    pub(crate) fn answered(&self) {
        *self.answered_at.lock().unwrap() = Some(Instant::now());
        if self.breaker.success() {
            self.policy.back_in_use(self);
        }
    }

    /// Records that the bucket took a write: closes a breaker this write
    /// probed, and ends a pause of writes.
    pub(crate) fn wrote(&self) {
        *self.answered_at.lock().unwrap() = Some(Instant::now());
        if self.breaker.answered() {
            self.policy.back_in_use(self);
        }
        self.policy.wrote(self);
    }
}
