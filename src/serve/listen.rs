//! The accept loop: a connection costs a file descriptor and a task, so
//! how many are open at once, and how long one may sit without sending a
//! request, are the server's flags, not its clients' choice.
//!
//! - `--max-connections`: beyond it, new connections wait in the kernel's
//!   listen queue until one closes (one log line a minute at most while
//!   that lasts). The cap is lowered to fit the open-file limit.
//! - `--idle-timeout`: a connection that has not sent a whole request
//!   header for this long, new or idle between requests, is closed. A body
//!   that trickles is `--body-timeout`'s (in the handlers); a response in
//!   progress is never cut.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

/// File descriptors kept for the store, the bucket and the metrics port
/// when `--max-connections` is fitted to the open-file limit.
const FD_RESERVE: u64 = 256;

/// How often "connections are full" may be logged.
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Raises the open-file limit as far as allowed and fits `--max-connections`
/// under it (with a line saying so when it had to be lowered).
pub(crate) fn fit_connections(max: usize) -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        // No limit (RLIM_INFINITY) is `None`.
        let mut lim = getrlimit(Resource::Nofile);
        let hard = lim.maximum.unwrap_or(u64::MAX);
        let mut soft = lim.current.unwrap_or(u64::MAX);
        let want = (max as u64).saturating_add(FD_RESERVE);
        if soft < want {
            lim.current = Some(want.min(hard));
            if setrlimit(Resource::Nofile, lim).is_ok() {
                soft = want.min(hard);
            }
        }
        let room = soft.saturating_sub(FD_RESERVE).max(1);
        if (max as u64) > room {
            eprintln!(
                "gocacher serve: --max-connections {max} is over the open-file limit {soft} less {FD_RESERVE} kept for the store; serving at most {room} connections at once"
            );
            return room as usize;
        }
    }
    max
}

/// Serves `app` on the connections `listener` accepts until `shutdown`
/// resolves; then stops accepting and waits for requests in flight.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: axum::Router,
    max_connections: usize,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let mut logged: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if logged.is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY) {
                    eprintln!(
                        "gocacher serve: {max_connections} connections open (--max-connections); new ones wait until one closes"
                    );
                    logged = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let (io, _addr) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => break,
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(idle_timeout);
        let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that went away, or sent no header in time: nothing
            // to tell anyone.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(all(test, unix))]
mod tests {
    use super::{fit_connections, FD_RESERVE};
    use rustix::process::{getrlimit, Resource};

    /// A cap under the open-file limit is kept; one over any limit the
    /// process may raise to is lowered to what the raised limit leaves.
    #[test]
    fn connections_fit_under_the_open_file_limit() {
        assert_eq!(fit_connections(8), 8);
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        let fitted = fit_connections(usize::MAX / 2) as u64;
        let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        assert!(soft <= hard, "{soft} > {hard}");
        assert_eq!(fitted, soft.saturating_sub(FD_RESERVE).max(1));
        assert!(fitted < (usize::MAX / 2) as u64);
    }
}
