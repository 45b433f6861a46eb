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
//! minimum age, over entries and named objects alike: least recently used
//! files first, down to `--max-size`. A named object being sent is read
//! from its open file, so a trim that unlinks it meanwhile does not cut
//! the reply short.

mod auth;
mod bucket;
mod handlers;
mod listen;
mod metrics;
mod named;
mod tls;

pub use auth::{AuthConfig, Grant, GLOBAL};

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::{Notify, Semaphore};

use crate::config::{parse_size, RemoteConfig, StoreSettings};
use crate::disk::{DiskCache, TrimPolicy};
use crate::remote::s3::S3Store;
use crate::remote::Remote;
use crate::stats::Stats;
use bucket::Bucket;

/// Replies compressed at once; each holds an output of up to 8 MiB and
/// its frame in memory.
const COMPRESSING: usize = 4;

/// The lz4 frames of recently served outputs, kept so that an output many
/// clients fetch is compressed once, not once per reply.
const FRAME_CACHE_BYTES: u64 = 16 << 20;

/// How often the store is trimmed when little is written.
const TRIM_EVERY: Duration = Duration::from_secs(600);

/// How long one trim pass may run before it stops (the next one resumes).
const TRIM_DEADLINE: Duration = Duration::from_secs(300);

/// `gocacher serve`'s own flags (`--max-size` and `--verbose` are the
/// global ones).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Without auth (--token-file, --jwt-issuer),
    /// keep it on localhost or a private network: anyone who reaches it can
    /// read and write.
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

    /// Static Bearer tokens, one `TOKEN NAMESPACE read|write` per line
    /// (namespace `global`: the shared one). Turns auth on.
    #[arg(long, env = "GOCACHER_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Accept identity tokens (JWTs) from this OIDC issuer at
    /// /auth/exchange-token (repeatable; env: comma-separated). Turns auth
    /// on; needs at least one --jwt-claim.
    #[arg(
        long,
        env = "GOCACHER_JWT_ISSUERS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub jwt_issuer: Vec<String>,

    /// The audience identity tokens must have.
    #[arg(
        long,
        env = "GOCACHER_JWT_AUDIENCE",
        value_name = "AUD",
        default_value = "gocached"
    )]
    pub jwt_audience: String,

    /// A claim every identity token must have, as CLAIM=VALUE (repeatable;
    /// all must match), e.g. repository=org/repo.
    #[arg(
        long,
        env = "GOCACHER_JWT_CLAIMS",
        value_name = "CLAIM=VALUE",
        value_delimiter = ','
    )]
    pub jwt_claim: Vec<String>,

    /// Tokens with all of these claims write the global namespace, e.g.
    /// ref=refs/heads/main (repeatable). Others write only their own.
    #[arg(
        long,
        env = "GOCACHER_GLOBAL_JWT_CLAIMS",
        value_name = "CLAIM=VALUE",
        value_delimiter = ','
    )]
    pub global_jwt_claim: Vec<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (a port of its own,
    /// never the build-facing one).
    #[arg(long, env = "GOCACHER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// The claim whose value names a session's own namespace (with GitHub:
    /// `ref`, so that each pull request has its own).
    #[arg(
        long,
        env = "GOCACHER_NAMESPACE_CLAIM",
        value_name = "CLAIM",
        default_value = "sub"
    )]
    pub namespace_claim: String,

    /// Sessions made by /auth/exchange-token kept at once; beyond this the
    /// least recently used is dropped (its client exchanges again).
    #[arg(
        long,
        env = "GOCACHER_MAX_SESSIONS",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub max_sessions: u64,

    /// Connections open at once; more wait in the listen queue until one
    /// closes. Capped by the open-file limit.
    #[arg(
        long,
        env = "GOCACHER_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 4096
    )]
    pub max_connections: usize,

    /// A connection that sends no complete request header for this long
    /// (new, or idle between requests) is closed.
    #[arg(
        long,
        env = "GOCACHER_IDLE_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub idle_timeout: String,

    /// Serve HTTPS with this PEM certificate chain (the server's first);
    /// needs --tls-key. Read at start: restart to rotate it.
    #[arg(
        long,
        env = "GOCACHER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "GOCACHER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
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
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub verbose: bool,
    pub auth: AuthConfig,
    pub metrics_listen: Option<SocketAddr>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
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
        let claims = |flag: &str, v: &[String]| -> Result<Vec<auth::Claim>> {
            v.iter().map(|c| auth::parse_claim(flag, c)).collect()
        };
        let auth = AuthConfig {
            token_file: self.token_file.clone(),
            issuers: self
                .jwt_issuer
                .iter()
                .map(|i| i.trim_end_matches('/').to_string())
                .filter(|i| !i.is_empty())
                .collect(),
            audience: self.jwt_audience.clone(),
            claims: claims("--jwt-claim", &self.jwt_claim)?,
            global_claims: claims("--global-jwt-claim", &self.global_jwt_claim)?,
            namespace_claim: self.namespace_claim.clone(),
            max_sessions: self.max_sessions,
        };
        if self.max_sessions == 0 {
            bail!("--max-sessions must be at least 1");
        }
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        let idle_timeout = duration("--idle-timeout", &self.idle_timeout)?;
        if idle_timeout.is_zero() {
            bail!("--idle-timeout must be more than 0s");
        }
        if !auth.issuers.is_empty() && auth.claims.is_empty() {
            bail!("--jwt-issuer needs at least one --jwt-claim (say, repository=ORG/REPO): without one, any token the issuer signs for anyone would do");
        }
        if let Some(i) = auth
            .issuers
            .iter()
            .find(|i| !i.starts_with("https://") && !i.starts_with("http://"))
        {
            bail!("--jwt-issuer {i:?}: expected an https:// (or http://) URL");
        }
        Ok(ServeConfig {
            listen,
            dir,
            max_size,
            max_age: duration("--max-age", &self.max_age)?,
            max_object_size,
            max_pending_writes: self.max_pending_writes,
            body_timeout: duration("--body-timeout", &self.body_timeout)?,
            max_connections: self.max_connections,
            idle_timeout,
            verbose,
            auth,
            metrics_listen: match &self.metrics_listen {
                None => None,
                Some(a) => Some(a.parse().with_context(|| {
                    format!("--metrics-listen {a:?}: not an address like 127.0.0.1:9100")
                })?),
            },
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                (None, None) => None,
                _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
            },
        })
    }
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) cfg: ServeConfig,
    pub(crate) disk: Arc<DiskCache>,
    pub(crate) writes: Arc<Semaphore>,
    /// Outputs being lz4-compressed for a reply ([`COMPRESSING`]).
    pub(crate) compressing: Semaphore,
    /// Bytes of outputs being read whole for a reply, in 64 KiB units
    /// ([`handlers::WHOLE_BUDGET`]).
    pub(crate) whole_reads: Semaphore,
    /// Recent replies' compression ([`FRAME_CACHE_BYTES`]), by output path.
    pub(crate) frames: moka::future::Cache<std::path::PathBuf, handlers::Frame>,
    /// Bytes stored since the last trim; a twentieth of `--max-size` wakes
    /// it, so the store never grows more than that past the cap.
    pub(crate) written: AtomicU64,
    pub(crate) trim_due: Notify,
    pub(crate) metrics: metrics::Metrics,
    /// The bucket behind the store (`--remote`): every PUT is in it before
    /// it is acknowledged, a local miss is looked up in it, and manifests and
    /// packs are read from and written to it directly.
    pub(crate) remote: Option<Arc<Bucket>>,
    /// Sessions and their grants; `None`: no auth, everyone writes global.
    pub(crate) auth: Option<auth::Auth>,
    /// Namespaces' stores, made by their first write: `<root>/ns/<hash>`.
    spaces: std::sync::Mutex<std::collections::HashMap<String, Arc<DiskCache>>>,
}

impl Shared {
    /// A namespace's store (the global one is `disk`).
    pub(crate) fn space(&self, namespace: &str) -> io::Result<Arc<DiskCache>> {
        if namespace == GLOBAL {
            return Ok(self.disk.clone());
        }
        let mut spaces = self.spaces.lock().unwrap();
        if let Some(d) = spaces.get(namespace) {
            return Ok(d.clone());
        }
        let d = Arc::new(DiskCache::open(&namespace_root(
            self.disk.root(),
            namespace,
        ))?);
        spaces.insert(namespace.to_string(), d.clone());
        Ok(d)
    }

    /// A namespace's store if something was ever written to it: reading
    /// creates no directory, so readers cost no disk and no memory.
    pub(crate) fn written_space(&self, namespace: &str) -> io::Result<Option<Arc<DiskCache>>> {
        if namespace == GLOBAL {
            return Ok(Some(self.disk.clone()));
        }
        if let Some(d) = self.spaces.lock().unwrap().get(namespace) {
            return Ok(Some(d.clone()));
        }
        match std::fs::metadata(namespace_root(self.disk.root(), namespace)) {
            Ok(_) => self.space(namespace).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stores a grant reads, in order: its namespace's (if it has
    /// one), then global.
    pub(crate) fn reading(&self, grant: &Grant) -> io::Result<Vec<Arc<DiskCache>>> {
        if grant.is_global() {
            return Ok(vec![self.disk.clone()]);
        }
        let mut stores = Vec::with_capacity(2);
        stores.extend(self.written_space(&grant.namespace)?);
        stores.push(self.disk.clone());
        Ok(stores)
    }

    pub(crate) fn stored(&self, n: u64) {
        let total = self.written.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.cfg.max_size / 20 {
            self.trim_due.notify_one();
        }
    }
}

/// Where a namespace's store lives: a hash of its name (names come from
/// tokens and claims, and may hold any character).
fn namespace_root(root: &Path, namespace: &str) -> PathBuf {
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(namespace.as_bytes())[..16]);
    root.join("ns").join(hash)
}

/// Every store under `root`: the global one and each namespace's.
fn store_roots(root: &Path) -> Vec<PathBuf> {
    let mut roots = vec![root.to_path_buf()];
    if let Ok(dir) = std::fs::read_dir(root.join("ns")) {
        roots.extend(dir.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    roots
}

/// Runs the server until SIGTERM or Ctrl-C; requests in flight finish first.
pub fn run(cfg: ServeConfig, remote: Option<RemoteConfig>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(cfg, remote))
}

async fn serve(cfg: ServeConfig, remote: Option<RemoteConfig>) -> Result<()> {
    let disk = Arc::new(
        DiskCache::open(&cfg.dir)
            .with_context(|| format!("opening the store {}", cfg.dir.display()))?,
    );
    if let Some(e) = disk.unwritable() {
        bail!("the store {} cannot be written: {e}", cfg.dir.display());
    }
    let bucket = match remote {
        None => None,
        Some(rc) => {
            let StoreSettings::S3(s3) = &rc.store else {
                bail!("serve shares its store through a bucket (--remote s3://...)");
            };
            let store = S3Store::connect(s3).await;
            let stats = Arc::new(Stats::default());
            let named_prefix = if s3.prefix.is_empty() {
                "gocacher/v1".to_string()
            } else {
                format!("{}/gocacher/v1", s3.prefix)
            };
            let opts = crate::remote::RemoteOptions {
                spool: false,
                policy: crate::remote::Policy::Server,
                ..rc.opts.clone()
            };
            let remote = Remote::new(Box::new(store), disk.clone(), stats.clone(), opts);
            eprintln!("gocacher serve: bucket {}", remote.describe());
            Some(Arc::new(Bucket::new(remote, named_prefix, stats)))
        }
    };
    let named = disk.root().join("named");
    for kind in named::NAMED_KINDS {
        std::fs::create_dir_all(named.join(kind))
            .with_context(|| format!("creating {}", named.join(kind).display()))?;
    }
    let mut metrics = metrics::Metrics::default();
    if let Some(b) = &bucket {
        metrics.register_bucket();
        tokio::spawn(b.clone().watch());
    }
    let auth = if cfg.auth.enabled() {
        Some(auth::Auth::new(
            cfg.auth.clone(),
            metrics.auth_failures.clone(),
        )?)
    } else {
        None
    };
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        writes: Arc::new(Semaphore::new(cfg.max_pending_writes)),
        compressing: Semaphore::new(COMPRESSING),
        whole_reads: Semaphore::new((handlers::WHOLE_BUDGET / handlers::WHOLE_UNIT) as usize),
        frames: moka::future::Cache::builder()
            .max_capacity(FRAME_CACHE_BYTES)
            .weigher(|_, f: &handlers::Frame| f.weight())
            .build(),
        disk,
        remote: bucket,
        auth,
        spaces: Default::default(),
        written: AtomicU64::new(0),
        trim_due: Notify::new(),
        metrics,
        cfg,
    });
    eprintln!(
        "gocacher serve: listening on {}://{addr}, store {}{}",
        if tls.is_some() { "https" } else { "http" },
        shared.disk.root().display(),
        match (&shared.auth, addr.ip().is_loopback()) {
            (Some(_), _) => "; Bearer tokens required",
            (None, true) => "; no auth: anyone who can reach this address can read and write the cache",
            (None, false) => "; no auth: anyone who can reach this address can read and write the cache (not on localhost: put it on a private network, or give --token-file or --jwt-issuer)",
        }
    );
    tokio::spawn(evict(shared.clone()));
    if let Some(addr) = shared.cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for metrics"))?;
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics::metrics))
            .with_state(shared.clone());
        eprintln!(
            "gocacher serve: metrics on http://{}/metrics",
            l.local_addr()?
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                eprintln!("gocacher serve: the metrics server stopped: {e}");
            }
        });
    }
    let app = handlers::router(shared.clone());
    let (max_conns, idle) = (
        listen::fit_connections(shared.cfg.max_connections),
        shared.cfg.idle_timeout,
    );
    // Headers and body go out in separate writes: with Nagle's algorithm the
    // body would wait for the client's delayed ACK on every response.
    use axum::serve::ListenerExt;
    match tls {
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            listen::serve(listener, app, max_conns, idle, shutdown()).await
        }
        Some(acceptor) => {
            let listener = tls::listener(acceptor, listener).tap_io(|tls| {
                let _ = tls.get_ref().0.set_nodelay(true);
            });
            listen::serve(listener, app, max_conns, idle, shutdown()).await
        }
    }
    if shared.cfg.verbose {
        let m = &shared.metrics;
        eprintln!(
            "gocacher serve: stopped; hits {} misses {} puts {} bytes in {} out {}",
            m.hits.get(),
            m.misses.get(),
            m.puts.get(),
            m.bytes_in.get(),
            m.bytes_out.get()
        );
        if let Some(b) = &shared.remote {
            eprintln!(
                "gocacher serve: bucket: {}",
                b.stats.snapshot().summary(true)
            );
        }
        if let Some(a) = &shared.auth {
            eprintln!(
                "gocacher serve: {} sessions, {} refused tokens",
                a.sessions(),
                a.failures.get()
            );
        }
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

/// Trims the store (every namespace's entries and named objects) at start,
/// every [`TRIM_EVERY`], and whenever a twentieth of `--max-size` has been
/// written since the last trim.
async fn evict(shared: Arc<Shared>) {
    loop {
        shared.written.store(0, Ordering::Relaxed);
        let policy = TrimPolicy {
            max_age: shared.cfg.max_age,
            max_size: Some(shared.cfg.max_size),
            deadline: TRIM_DEADLINE,
            min_age: Duration::ZERO,
        };
        let roots = store_roots(shared.disk.root());
        let report = tokio::task::spawn_blocking(move || {
            crate::disk::trim_roots(
                &roots,
                &named::NAMED_DIRS,
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
