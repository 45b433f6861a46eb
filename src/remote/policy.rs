//! What the tier does when the bucket fails: counting each failure by
//! kind, then the [`Policy`]: a go command's one-shot switches (read-only,
//! out of use), or serve's pauses that a later request or probe lifts.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::store::{FailureKind, RemoteError};
use super::{breaker, kind_index, Policy, Remote};
use crate::stats::Stats;

impl Remote {
    /// A bucket request of the tier's own (a get, a manifest or pack read
    /// or write) failed: counted in `remote_errors`, then as [`Self::failed`].
    pub(crate) fn request_failed(&self, err: &RemoteError, writing: bool) {
        Stats::inc(&self.stats.remote_errors);
        self.failed(err, writing);
    }

    /// Counts a failed call (`writing`: an upload or a write of a named
    /// object) and applies the policy for its kind.
    pub(crate) fn failed(&self, err: &RemoteError, writing: bool) {
        self.failures[kind_index(err.kind, writing)].fetch_add(1, Ordering::Relaxed);
        match self.opts.policy {
            Policy::OneShot => self.failed_once(err, writing),
            Policy::Server => self.failed_serving(err, writing),
        }
    }

    /// [`Policy::OneShot`]: stop for good (credentials, bucket, read
    /// denied), go read-only (write denied), or back off.
    fn failed_once(&self, err: &RemoteError, writing: bool) {
        let d = self.describe();
        match err.kind {
            FailureKind::Credentials => {
                self.breaker.disable();
                self.report("credentials", format_args!(
                    "{d}: the credentials were refused ({}); {}. Continuing with the local cache only",
                    err.message,
                    self.store.credentials_hint()
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

    /// [`Policy::Server`]: nothing is given up for good. A denied write
    /// pauses writes, anything else stops using the bucket (at once, or
    /// after [`breaker::THRESHOLD`] failures in a row for those that may
    /// pass by themselves); after the cooldown one request tries again.
    /// Each change of state is one line.
    fn failed_serving(&self, err: &RemoteError, writing: bool) {
        let d = self.describe();
        let retry = self.breaker.cooldown().as_secs();
        let what = match err.kind {
            FailureKind::AccessDenied if writing => {
                let mut paused = self.writes_paused.lock().unwrap();
                let was_on = paused.is_none();
                *paused = Some(Instant::now() + self.breaker.cooldown());
                drop(paused);
                if was_on {
                    eprintln!(
                        "gocacher serve: {d}: writes denied ({}); still reading it, while PUTs are kept in the local store and answered 503; retrying writes in {retry} s",
                        err.message
                    );
                }
                return;
            }
            FailureKind::Credentials => {
                if !self.breaker.trip() {
                    return;
                }
                format!(
                    "credentials refused ({}; {})",
                    err.message,
                    self.store.credentials_hint()
                )
            }
            FailureKind::NoBucket => {
                if !self.breaker.trip() {
                    return;
                }
                format!("the bucket does not exist ({})", err.message)
            }
            FailureKind::AccessDenied => {
                if !self.breaker.trip() {
                    return;
                }
                format!("reads denied ({})", err.message)
            }
            FailureKind::Unavailable | FailureKind::Other => {
                if !self.breaker.failure() {
                    return;
                }
                format!(
                    "{} failures in a row (last: {})",
                    breaker::THRESHOLD,
                    err.message
                )
            }
        };
        eprintln!(
            "gocacher serve: {d}: {what}; serving from the local store only (PUTs are kept there and answered 503), retrying the bucket in {retry} s"
        );
    }

    /// Records that the bucket answered a read; with [`Policy::Server`], a
    /// bucket that was out of use gets a line saying it is used again.
    pub(crate) fn answered(&self) {
        if self.breaker.success() {
            self.back_in_use();
        }
    }

    /// Records that the bucket took a write: closes a breaker this write
    /// probed, and ends a pause of writes.
    pub(crate) fn wrote(&self) {
        if self.breaker.answered() {
            self.back_in_use();
        }
        let resumed = self.writes_paused.lock().unwrap().take().is_some();
        if resumed && self.opts.policy == Policy::Server {
            eprintln!(
                "gocacher serve: {}: writes go through again; PUTs are written to the bucket",
                self.describe()
            );
        }
    }

    fn back_in_use(&self) {
        if self.opts.policy == Policy::Server {
            eprintln!(
                "gocacher serve: {}: answering again; using it for reads{}",
                self.describe(),
                if self.is_read_only() {
                    " (writes still denied)"
                } else {
                    " and writes"
                }
            );
        }
    }
}
