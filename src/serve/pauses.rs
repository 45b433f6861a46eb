//! serve's [`FailurePolicy`]: a server runs for months, and credentials
//! rotate, buckets get created, policies get fixed. Nothing is given up for
//! good. A denied write pauses writes; anything else stops using the bucket
//! (at once, or after [`breaker::THRESHOLD`] failures in a row for those
//! that may pass by themselves). After the breaker's cooldown one request
//! tries again. Each change of state is one line.

use std::sync::Mutex;
use std::time::Instant;

use crate::remote::breaker;
use crate::remote::store::{FailureKind, RemoteError};
use crate::remote::{FailurePolicy, Remote};

#[derive(Default)]
pub struct Pauses {
    /// After a denied write, until when writes wait; past it, the next
    /// write tries (std Mutex: never held across an await).
    writes_paused: Mutex<Option<Instant>>,
}

impl FailurePolicy for Pauses {
    fn failed(&self, tier: &Remote, err: &RemoteError, writing: bool) {
        let d = tier.describe();
        let retry = tier.breaker().cooldown().as_secs();
        let what = match err.kind {
            FailureKind::AccessDenied if writing => {
                let mut paused = self.writes_paused.lock().unwrap();
                let was_on = paused.is_none();
                *paused = Some(Instant::now() + tier.breaker().cooldown());
                drop(paused);
                if was_on {
                    eprintln!(
                        "gocacher serve: {d}: writes denied ({}); still reading it, while PUTs are kept in the local store and uploaded once writes go through; retrying writes in {retry} s",
                        err.message
                    );
                }
                return;
            }
            FailureKind::Credentials => {
                if !tier.breaker().trip() {
                    return;
                }
                format!(
                    "credentials refused ({}; {})",
                    err.message,
                    tier.credentials_hint()
                )
            }
            FailureKind::NoBucket => {
                if !tier.breaker().trip() {
                    return;
                }
                format!("the bucket does not exist ({})", err.message)
            }
            FailureKind::AccessDenied => {
                if !tier.breaker().trip() {
                    return;
                }
                format!("reads denied ({})", err.message)
            }
            FailureKind::Unavailable | FailureKind::Other => {
                if !tier.breaker().failure() {
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
            "gocacher serve: {d}: {what}; serving from the local store only (PUTs are kept there and uploaded once it answers), retrying the bucket in {retry} s"
        );
    }

    fn writes_paused_until(&self) -> Option<Instant> {
        *self.writes_paused.lock().unwrap()
    }

    fn wrote(&self, tier: &Remote) {
        if self.writes_paused.lock().unwrap().take().is_some() {
            eprintln!(
                "gocacher serve: {}: writes go through again; PUTs are written to the bucket",
                tier.describe()
            );
        }
    }

    fn back_in_use(&self, tier: &Remote) {
        eprintln!(
            "gocacher serve: {}: answering again; using it for reads{}",
            tier.describe(),
            if tier.is_read_only() {
                " (writes still denied)"
            } else {
                " and writes"
            }
        );
    }
}
