//! A circuit breaker for the bucket: after repeated failures, stop calling it
//! for a while, so a dead or stalling endpoint costs a build a few timeouts,
//! not one per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker. Three rules out one unlucky
/// request while bounding the stall of a black-holed endpoint to three
/// timeouts.
pub const THRESHOLD: u32 = 3;

/// How long the breaker stays open before one request may try again.
pub const COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Breaker {
    /// A std Mutex: held for a few instructions, never across an await.
    state: Mutex<State>,
    cooldown: Duration,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker::with_cooldown(COOLDOWN)
    }
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// Set for failures that waiting will not fix (wrong credentials, no
    /// such bucket): the bucket is not called again in this process.
    disabled: bool,
}

impl Breaker {
    /// A breaker that stays open this long (tests shorten it).
    pub fn with_cooldown(cooldown: Duration) -> Breaker {
        Breaker {
            state: Mutex::default(),
            cooldown,
        }
    }

    /// Whether a request may go to the bucket now.
    pub fn allow(&self) -> bool {
        let s = self.state.lock().unwrap();
        !s.disabled && s.open_until.is_none_or(|t| Instant::now() >= t)
    }

    pub fn success(&self) {
        let mut s = self.state.lock().unwrap();
        s.failures = 0;
        s.open_until = None;
    }

    /// Records a failure; returns true when this one opened the breaker.
    pub fn failure(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        s.failures += 1;
        // In the half-open state (cooldown over) one failure reopens it.
        let half_open = s.open_until.is_some();
        if s.failures >= THRESHOLD || half_open {
            let was_closed = !half_open;
            s.failures = 0;
            s.open_until = Some(Instant::now() + self.cooldown);
            return was_closed;
        }
        false
    }

    /// Stops all calls for the rest of the process.
    pub fn disable(&self) {
        self.state.lock().unwrap().disabled = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_resets_on_success() {
        let b = Breaker::default();
        assert!(b.allow());
        assert!(!b.failure());
        b.success();
        for _ in 1..THRESHOLD {
            assert!(!b.failure());
        }
        assert!(b.allow());
        assert!(b.failure(), "the threshold-th failure opens it");
        assert!(!b.allow());
    }

    #[test]
    fn disable_is_final() {
        let b = Breaker::default();
        b.disable();
        b.success();
        assert!(!b.allow());
    }
}
