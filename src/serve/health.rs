//! What a load balancer asks, and how the server leaves one.
//!
//! - `GET /healthz`: 200 `ok` while the process answers; no I/O.
//! - `GET /readyz`: 200 `ready`, or 503 with one line saying why not: the
//!   server is shutting down, its store cannot be written (a temp file
//!   created and removed in it, at most once per [`DISK_EVERY`]), or, with
//!   `--remote`, the bucket is out of use or has not answered for
//!   [`super::bucket::FRESH`].
//!
//! Neither needs a token, neither counts as a cache request in the metrics,
//! and neither is logged with `--verbose`.
//!
//! SIGTERM starts a drain: `/readyz` answers 503 at once while everything
//! else is served as before for `--drain`, so the balancer sends new
//! requests elsewhere; then the server stops accepting and finishes the
//! requests in flight. A second SIGTERM, or Ctrl-C, ends the drain early.
//! Ctrl-C alone stops at once.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::http::text;
use super::shared::Shared;

/// How often `/readyz` may write to the store to see that it can: a
/// balancer asking many times a second costs one file a second at most.
pub(crate) const DISK_EVERY: Duration = Duration::from_secs(1);

/// A write check that has not returned for this long (a hung disk) makes
/// the server not ready, whatever the last check said.
const DISK_HUNG: Duration = Duration::from_secs(5);

/// Readiness that is not the bucket's: the drain, and the store's last
/// write check.
pub(crate) struct Health {
    dir: PathBuf,
    draining: AtomicBool,
    /// The last write check (std Mutex: held for a few instructions, never
    /// across an await or the check's I/O).
    disk: Mutex<DiskCheck>,
    /// Names the checks' temp files apart.
    checks: AtomicU64,
}

struct DiskCheck {
    at: Instant,
    /// Why the store could not be written, if it could not.
    failed: Option<String>,
    /// When the check under way started, if one is.
    running: Option<Instant>,
}

impl Health {
    /// For a store that was found writable as the server started.
    pub(crate) fn new(dir: PathBuf) -> Health {
        Health {
            dir,
            draining: AtomicBool::new(false),
            disk: Mutex::new(DiskCheck {
                at: Instant::now(),
                failed: None,
                running: None,
            }),
            checks: AtomicU64::new(0),
        }
    }

    /// From now on `/readyz` answers 503.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Why the store is not ready, checking it again first when the last
    /// check is over [`DISK_EVERY`] old and none is under way.
    async fn disk_not_ready(self: &Arc<Self>) -> Option<String> {
        let run = {
            let mut d = self.disk.lock().unwrap();
            if let Some(started) = d.running {
                if started.elapsed() > DISK_HUNG {
                    return Some(format!(
                        "a write to the store {} has not returned for {} s",
                        self.dir.display(),
                        started.elapsed().as_secs()
                    ));
                }
                false
            } else if d.at.elapsed() >= DISK_EVERY {
                d.running = Some(Instant::now());
                true
            } else {
                false
            }
        };
        if run {
            // The check records its own result, so a request that goes away
            // meanwhile leaves no check marked as running.
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.check_disk()).await;
        }
        self.disk.lock().unwrap().failed.clone()
    }

    fn check_disk(&self) {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!(".readyz-{}-{n}.tmp", std::process::id()));
        let wrote = std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(b"ok"))
            .and_then(|()| std::fs::remove_file(&path));
        if wrote.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        let failed = wrote
            .err()
            .map(|e| format!("the store {} cannot be written: {e}", self.dir.display()));
        let mut d = self.disk.lock().unwrap();
        match (&d.failed, &failed) {
            (None, Some(why)) => {
                eprintln!("gocacher serve: {why}; /readyz answers 503 until a write succeeds (tried again at most each second while asked)")
            }
            (Some(_), None) => {
                eprintln!("gocacher serve: the store can be written again; /readyz answers 200")
            }
            _ => {}
        }
        d.failed = failed;
        d.at = Instant::now();
        d.running = None;
    }
}

/// The health routes, outside the cache's metrics and auth.
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let h = &s.health;
    let why = if h.draining.load(Ordering::Relaxed) {
        Some("shutting down".to_string())
    } else if let Some(why) = h.disk_not_ready().await {
        Some(why)
    } else {
        s.remote.as_ref().and_then(|b| b.not_ready())
    };
    match why {
        None => text(StatusCode::OK, "ready"),
        Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Resolves when the server should stop accepting: at once on Ctrl-C; on
/// SIGTERM, after `drain` (during which `/readyz` answers 503), or sooner
/// on a second SIGTERM or Ctrl-C.
pub(crate) async fn shutdown(health: Arc<Health>, drain: Duration) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("gocacher serve: Ctrl-C: stopping; requests in flight finish first");
                return;
            }
        }
        health.drain();
        if drain.is_zero() {
            eprintln!(
                "gocacher serve: SIGTERM: stopping (--drain 0s); requests in flight finish first"
            );
            return;
        }
        eprintln!(
            "gocacher serve: SIGTERM: /readyz now answers 503; serving for {} more so a load balancer drains this replica, then stopping (a second SIGTERM or Ctrl-C stops sooner)",
            humantime::format_duration(drain)
        );
        tokio::select! {
            _ = tokio::time::sleep(drain) => {
                eprintln!("gocacher serve: drained; stopping: no new connections, requests in flight finish first");
            }
            _ = term.recv() => {
                eprintln!("gocacher serve: second SIGTERM: stopping now; requests in flight finish first");
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("gocacher serve: Ctrl-C: stopping now; requests in flight finish first");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (health, drain);
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However often `/readyz` is asked, the store is written at most once
    /// per [`DISK_EVERY`], and the temp file does not stay.
    #[tokio::test]
    async fn the_store_is_written_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let h = Arc::new(Health::new(store.clone()));
        let checks = || h.checks.load(Ordering::Relaxed);
        let age = || h.disk.lock().unwrap().at -= DISK_EVERY;
        for _ in 0..100 {
            assert_eq!(h.disk_not_ready().await, None);
        }
        assert_eq!(checks(), 0, "checked within a second of the start's");
        age();
        let why = h.disk_not_ready().await.expect("no store: not ready");
        assert!(why.contains("cannot be written"), "{why}");
        for _ in 0..100 {
            assert_eq!(h.disk_not_ready().await.as_ref(), Some(&why));
        }
        assert_eq!(checks(), 1);
        std::fs::create_dir(&store).unwrap();
        age();
        assert_eq!(h.disk_not_ready().await, None);
        assert_eq!(checks(), 2);
        assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);
    }
}
