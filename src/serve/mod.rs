//! `gocacher serve`: a cache server for a team or a fleet.
//!
//! One port speaks both of the seed's APIs (gocached's `Want-Object` gets
//! with lz4, and go-cacher-server's JSON plus `/output/`), and the named
//! objects (manifests and packs) that let a gocacher client prefetch through
//! the server as it does from a bucket (docs/FORMAT.md, "Cache server").
//!
//! The store is the client's own disk layout ([`DiskCache`]): every write goes
//! to a temp file that is renamed into place only once its bytes hash to
//! their output ID, so no partial entry is ever visible, whatever happens to
//! the request or the process. Eviction is the client's trim with no
//! minimum age: least recently used files first, down to `--max-size`.

mod handlers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::{Notify, Semaphore};

use crate::config::parse_size;
use crate::disk::{DiskCache, TrimPolicy};

/// How often the store is trimmed when little is written.
const TRIM_EVERY: Duration = Duration::from_secs(600);

/// How long one trim pass may run before it stops (the next one resumes).
const TRIM_DEADLINE: Duration = Duration::from_secs(300);

/// `gocacher serve`'s own flags (`--max-size` and `--verbose` are the
/// global ones).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Without auth (none yet), keep it on localhost
    /// or a private network: anyone who reaches it can read and write.
    #[arg(
        long,
        env = "GOCACHER_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:31364"
    )]
    pub listen: String,

    /// The server's store. Default: the user cache directory +
    /// /gocacher-serve (e.g. ~/.cache/gocacher-serve).
    #[arg(long, env = "GOCACHER_SERVE_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Evict entries unused for longer than this. Units: s, m, h, d.
    #[arg(
        long,
        env = "GOCACHER_MAX_AGE",
        value_name = "DURATION",
        default_value = "60d"
    )]
    pub max_age: String,

    /// Refuse bodies larger than this with 413.
    #[arg(
        long,
        env = "GOCACHER_MAX_OBJECT_SIZE",
        value_name = "SIZE",
        default_value = "1GiB"
    )]
    pub max_object_size: String,

    /// Uploads being written at once; more get 503 with Retry-After.
    #[arg(
        long,
        env = "GOCACHER_MAX_PENDING_WRITES",
        value_name = "N",
        default_value_t = 64
    )]
    pub max_pending_writes: usize,

    /// How long a request body may take, plus one second per 256 KiB of it;
    /// a body that trickles longer is cut off with 408 and nothing is kept.
    #[arg(
        long,
        env = "GOCACHER_BODY_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s"
    )]
    pub body_timeout: String,
}

/// The store's size cap when `--max-size` is not given (gocached's default).
const DEFAULT_MAX_SIZE: u64 = 50 << 30;

/// Validated settings of `gocacher serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    pub max_size: u64,
    pub max_age: Duration,
    pub max_object_size: u64,
    pub max_pending_writes: usize,
    pub body_timeout: Duration,
    pub verbose: bool,
}

impl ServeArgs {
    pub fn validate(&self, max_size: Option<&str>, verbose: bool) -> Result<ServeConfig> {
        let listen = self.listen.parse().with_context(|| {
            format!(
                "--listen {:?}: not an address like 127.0.0.1:31364",
                self.listen
            )
        })?;
        let dir = match &self.dir {
            Some(d) if d.as_os_str().is_empty() => bail!("--dir is empty"),
            Some(d) => d.clone(),
            None => dirs::cache_dir()
                .context("no user cache directory (set $HOME or XDG_CACHE_HOME, or pass --dir)")?
                .join("gocacher-serve"),
        };
        let max_size = match max_size {
            None => DEFAULT_MAX_SIZE,
            Some(s) => match parse_size(s)
                .with_context(|| format!("--max-size {s:?}: not a size like 50GiB"))?
            {
                0 => u64::MAX,
                n => n,
            },
        };
        let duration = |flag: &str, v: &str| {
            humantime::parse_duration(v)
                .with_context(|| format!("{flag} {v:?}: not a duration like 60d or 10s"))
        };
        let max_object_size = parse_size(&self.max_object_size).with_context(|| {
            format!(
                "--max-object-size {:?}: not a size like 1GiB",
                self.max_object_size
            )
        })?;
        if self.max_pending_writes == 0 {
            bail!("--max-pending-writes must be at least 1");
        }
        Ok(ServeConfig {
            listen,
            dir,
            max_size,
            max_age: duration("--max-age", &self.max_age)?,
            max_object_size,
            max_pending_writes: self.max_pending_writes,
            body_timeout: duration("--body-timeout", &self.body_timeout)?,
            verbose,
        })
    }
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) cfg: ServeConfig,
    pub(crate) disk: Arc<DiskCache>,
    /// Manifests and packs: `<dir>/named/<kind>/<hash>`.
    pub(crate) named: PathBuf,
    pub(crate) writes: Arc<Semaphore>,
    /// Bytes stored since the last trim; a twentieth of `--max-size` wakes
    /// it, so the store never grows more than that past the cap.
    pub(crate) written: AtomicU64,
    pub(crate) trim_due: Notify,
    pub(crate) counters: Counters,
}

/// Request counters, logged at shutdown with `--verbose`.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

impl Shared {
    pub(crate) fn stored(&self, n: u64) {
        let total = self.written.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.cfg.max_size / 20 {
            self.trim_due.notify_one();
        }
    }
}

/// Runs the server until SIGTERM or Ctrl-C; requests in flight finish first.
pub fn run(cfg: ServeConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(cfg))
}

async fn serve(cfg: ServeConfig) -> Result<()> {
    let disk = DiskCache::open(&cfg.dir)
        .with_context(|| format!("opening the store {}", cfg.dir.display()))?;
    if let Some(e) = disk.unwritable() {
        bail!("the store {} cannot be written: {e}", cfg.dir.display());
    }
    let named = disk.root().join("named");
    for kind in handlers::NAMED_KINDS {
        std::fs::create_dir_all(named.join(kind))
            .with_context(|| format!("creating {}", named.join(kind).display()))?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        writes: Arc::new(Semaphore::new(cfg.max_pending_writes)),
        disk: Arc::new(disk),
        named,
        written: AtomicU64::new(0),
        trim_due: Notify::new(),
        counters: Counters::default(),
        cfg,
    });
    eprintln!(
        "gocacher serve: listening on http://{addr}, store {}; no auth: anyone who can reach this address can read and write the cache{}",
        shared.disk.root().display(),
        if addr.ip().is_loopback() { "" } else { " (not on localhost: put it on a private network)" }
    );
    tokio::spawn(evict(shared.clone()));
    let app = handlers::router(shared.clone());
    // Headers and body go out in separate writes: with Nagle's algorithm the
    // body would wait for the client's delayed ACK on every response.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    if shared.cfg.verbose {
        let c = &shared.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        eprintln!(
            "gocacher serve: stopped; hits {} misses {} puts {} refused {} bytes in {} out {}",
            n(&c.hits),
            n(&c.misses),
            n(&c.puts),
            n(&c.refused),
            n(&c.bytes_in),
            n(&c.bytes_out)
        );
    }
    Ok(())
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Trims the store at start, every [`TRIM_EVERY`], and whenever a twentieth
/// of `--max-size` has been written since the last trim.
async fn evict(shared: Arc<Shared>) {
    loop {
        shared.written.store(0, Ordering::Relaxed);
        let policy = TrimPolicy {
            max_age: shared.cfg.max_age,
            max_size: Some(shared.cfg.max_size),
            deadline: TRIM_DEADLINE,
            min_age: Duration::ZERO,
        };
        let disk = shared.disk.clone();
        let report = tokio::task::spawn_blocking(move || disk.trim_now(&policy)).await;
        match report {
            Ok(Ok(r)) if shared.cfg.verbose => eprintln!("gocacher serve: trim: {r}"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("gocacher serve: trimming the store: {e}"),
            Err(e) => eprintln!("gocacher serve: trimming the store: {e}"),
        }
        let _ = tokio::time::timeout(TRIM_EVERY, shared.trim_due.notified()).await;
    }
}
