//! A circuit breaker for the bucket: after repeated failures, stop calling it
//! for a while, so a dead or stalling endpoint costs a build a few timeouts,
//! not one per request. When the wait is over, one request (the probe) may
//! try; the others keep being refused until it succeeds or fails, so a
//! black-holed endpoint costs one more timeout per cooldown, not one per
//! waiting request.

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
    /// While a probe is out (half-open), until when it holds its turn. A
    /// probe whose caller never reports (its answer said nothing about the
    /// bucket, or it was cancelled) gives the turn up after a cooldown.
    probe_until: Option<Instant>,
    /// Set for failures that waiting will not fix (wrong credentials, no
    /// such bucket) in a one-shot process: the bucket is not called again.
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

    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// Whether a request may go to the bucket now. Once the cooldown is
    /// over, true for one caller (the probe) until it reports.
    pub fn allow(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        if s.disabled {
            return false;
        }
        let now = Instant::now();
        match s.open_until {
            None => true,
            Some(t) if now < t => false,
            Some(_) => {
                if s.probe_until.is_some_and(|p| now < p) {
                    return false;
                }
                s.probe_until = Some(now + self.cooldown);
                true
            }
        }
    }

    /// Whether requests are being refused (open, a probe out, or disabled),
    /// without taking the probe's turn.
    pub fn is_open(&self) -> bool {
        let s = self.state.lock().unwrap();
        s.disabled || s.open_until.is_some()
    }

    /// Whether requests are refused now and a probe could not go either
    /// (open with its cooldown running, or disabled): for callers that
    /// check before queueing work that will ask [`Breaker::allow`] later.
    pub fn is_cooling(&self) -> bool {
        let s = self.state.lock().unwrap();
        s.disabled || s.open_until.is_some_and(|t| Instant::now() < t)
    }

    /// Records an answer; returns true when it closed an open breaker.
    pub fn success(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        s.failures = 0;
        s.probe_until = None;
        s.open_until.take().is_some() && !s.disabled
    }

    /// Records an answer that says nothing of how lookups fare (an upload):
    /// closes an open breaker whose probe it was, leaves a closed one's
    /// count of failures alone. True when it closed the breaker.
    pub fn answered(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        if s.open_until.is_none() || s.probe_until.is_none() {
            return false;
        }
        s.failures = 0;
        s.probe_until = None;
        s.open_until = None;
        !s.disabled
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
            s.probe_until = None;
            s.open_until = Some(Instant::now() + self.cooldown);
            return was_closed;
        }
        false
    }

    /// Opens the breaker at once, whatever its count (a failure that will
    /// not pass by itself, in a process that keeps trying); true when it
    /// was closed.
    pub fn trip(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        let was_closed = s.open_until.is_none();
        s.failures = 0;
        s.probe_until = None;
        s.open_until = Some(Instant::now() + self.cooldown);
        was_closed
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

    fn opened(cooldown: Duration) -> Breaker {
        let b = Breaker::with_cooldown(cooldown);
        for _ in 0..THRESHOLD {
            b.failure();
        }
        assert!(!b.allow());
        b
    }

    #[test]
    fn half_open_admits_one_probe_until_it_reports() {
        let b = opened(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        let admitted = (0..100).filter(|_| b.allow()).count();
        assert_eq!(admitted, 1, "one probe after the cooldown");
        assert!(b.is_open());
        // The probe fails: open again for a cooldown, then one more probe.
        b.failure();
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!((0..100).filter(|_| b.allow()).count(), 1);
        // It succeeds: everyone goes.
        assert!(b.success(), "the probe's success closes it");
        assert_eq!((0..100).filter(|_| b.allow()).count(), 100);
        assert!(!b.is_open());
    }

    #[test]
    fn half_open_admits_one_probe_across_threads() {
        let b = std::sync::Arc::new(opened(Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(60));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..50).filter(|_| b.allow()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 1);
    }

    #[test]
    fn a_probe_that_never_reports_gives_its_turn_up() {
        let b = opened(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(), "a second probe after a cooldown of silence");
    }

    #[test]
    fn an_upload_closes_only_the_breaker_it_probed() {
        let b = Breaker::default();
        b.failure();
        assert!(!b.answered(), "closed: nothing to close");
        b.failure();
        assert!(b.failure(), "the upload's answer did not reset the count");
        let b = opened(Duration::from_millis(20));
        assert!(!b.answered(), "no probe out yet");
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.allow());
        assert!(b.answered());
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn a_trip_opens_at_once() {
        let b = Breaker::with_cooldown(Duration::from_millis(20));
        assert!(b.trip());
        assert!(!b.allow());
        assert!(!b.trip(), "already open");
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.allow());
        assert!(b.success());
    }
}
