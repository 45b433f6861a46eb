//! Eviction: the store trimmed, least recently used first, down to
//! `--max-size` and `--max-age`, the module proxy's kept files with it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::named;
use super::shared::{store_roots, Shared};
use crate::disk::TrimPolicy;

/// How often the store is trimmed when little is written.
const TRIM_EVERY: Duration = Duration::from_secs(600);

/// How long one trim pass may run before it stops (the next one resumes).
const TRIM_DEADLINE: Duration = Duration::from_secs(300);

/// Trims the store (every namespace's entries and named objects) at start,
/// every [`TRIM_EVERY`], and whenever a twentieth of `--max-size` has been
/// written since the last trim.
pub(crate) async fn evict(shared: Arc<Shared>) {
    loop {
        shared.written.store(0, Ordering::Relaxed);
        let policy = TrimPolicy {
            max_age: shared.cfg.max_age,
            max_size: Some(shared.cfg.max_size),
            deadline: TRIM_DEADLINE,
            min_age: Duration::ZERO,
        };
        let roots = store_roots(shared.disk.root());
        let modules = shared.modproxy.as_ref().map(|m| m.root().to_path_buf());
        let report = tokio::task::spawn_blocking(move || {
            let kept = modules.map(|m| super::modproxy::kept_dirs(&m));
            crate::disk::trim_roots_with(
                &roots,
                &named::NAMED_DIRS,
                kept.as_deref().unwrap_or_default(),
                &policy,
                std::time::SystemTime::now(),
            )
        })
        .await;
        match report {
            Ok(Ok(r)) => {
                let m = &shared.metrics;
                m.evicted_files.inc_by(r.removed_files);
                m.evicted_bytes.inc_by(r.removed_bytes);
                m.store_bytes.set(r.kept_bytes as i64);
                if shared.cfg.verbose {
                    eprintln!("gocacher serve: trim: {r}");
                }
            }
            Ok(Err(e)) => eprintln!("gocacher serve: trimming the store: {e}"),
            Err(e) => eprintln!("gocacher serve: trimming the store: {e}"),
        }
        let _ = tokio::time::timeout(TRIM_EVERY, shared.trim_due.notified()).await;
    }
}
