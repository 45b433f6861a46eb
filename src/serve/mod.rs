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
mod buffers;
mod evict;
mod handlers;
mod health;
mod http;
mod jwks;
mod listen;
mod metrics;
mod modproxy;
mod named;
pub(crate) mod pauses;
mod reply;
mod shared;
mod tls;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::sync::{Notify, Semaphore};

use crate::config::{RemoteConfig, ServeConfig};
use crate::disk::DiskCache;
use crate::remote::locations::Locations;
use crate::remote::s3::S3Store;
use crate::remote::Remote;
use crate::remote::StoreSettings;
use crate::stats::Stats;
use bucket::Bucket;
use evict::evict;
use shared::Shared;

/// Outputs compressed at once; each holds an output of up to 8 MiB and
/// its frame in memory.
const COMPRESSING: usize = 4;

/// How long a bucket miss is remembered. Replicas behind a load balancer
/// share the bucket: an entry one of them stores after another missed it
/// must be found by both, so the other asks the bucket again after this.
const SERVE_MISS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the server until SIGTERM (after `--drain`) or Ctrl-C; requests in
/// flight finish first.
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
            let (store, profile) = S3Store::connect(s3).await;
            let stats = Arc::new(Stats::default());
            let named_prefix = if s3.prefix.is_empty() {
                "gocacher/v1".to_string()
            } else {
                format!("{}/gocacher/v1", s3.prefix)
            };
            let opts = crate::remote::RemoteOptions {
                spool: false,
                miss_ttl: SERVE_MISS_TTL,
                ..rc.opts.clone()
            };
            let remote = Remote::new(
                Locations::one(Box::new(store), profile),
                disk.clone(),
                stats.clone(),
                opts,
                Box::new(pauses::Pauses::default()),
            );
            eprintln!(
                "gocacher serve: bucket {}{}",
                remote.describe(),
                if rc.opts.read_only {
                    " (--read-only: read from, never written to; PUTs are kept in the local store and answered 503)"
                } else {
                    ""
                }
            );
            Some(Arc::new(Bucket::new(remote, named_prefix, stats)))
        }
    };
    let named = disk.root().join("named");
    for kind in named::NAMED_KINDS {
        std::fs::create_dir_all(named.join(kind))
            .with_context(|| format!("creating {}", named.join(kind).display()))?;
    }
    let modproxy = match &cfg.modproxy {
        None => None,
        Some(mc) => {
            let mp = modproxy::ModProxy::new(mc, disk.root(), bucket.clone(), cfg.verbose)?;
            eprintln!(
                "gocacher serve: module proxy at /mod/ (GOPROXY=http://HOST/mod), fetching from {}; kept in {}{}",
                mp.upstream(),
                disk.root().join("mod").display(),
                match &bucket {
                    Some(b) if b.remote.is_read_only() => " (and read from the bucket's mod/, never written to it)",
                    Some(_) => " and the bucket's mod/",
                    None => "",
                }
            );
            eprintln!("gocacher serve: modproxy: {}", mp.describe_checks());
            let (places, skipped) = modproxy::read_sums(&mc.prefetch)?;
            let mp = Arc::new(mp);
            if !mc.prefetch.is_empty() {
                mp.prefetch(places, skipped);
            }
            Some(mp)
        }
    };
    let mut metrics = metrics::Metrics::default();
    if modproxy.is_some() {
        metrics.register_modproxy();
    }
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
    let disk_root = disk.root().to_path_buf();
    let shared = Arc::new(Shared {
        writes: Arc::new(Semaphore::new(cfg.max_pending_writes)),
        compressing: Arc::new(Semaphore::new(COMPRESSING)),
        whole_reads: Arc::new(Semaphore::new(
            (cfg.reply_memory / reply::WHOLE_UNIT).min(Semaphore::MAX_PERMITS as u64) as usize,
        )),
        buffers: buffers::Pool::new(usize::try_from(cfg.reply_memory / 2).unwrap_or(usize::MAX)),
        disk,
        remote: bucket,
        modproxy,
        auth,
        spaces: Default::default(),
        written: AtomicU64::new(0),
        trim_due: Notify::new(),
        health: Arc::new(health::Health::new(disk_root)),
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
            .route("/metrics", axum::routing::get(handlers::metrics))
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
    let app = handlers::router(shared.clone()).merge(health::routes(shared.clone()));
    let shutdown = || health::shutdown(shared.health.clone(), shared.cfg.drain);
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
    if let Some(b) = &shared.remote {
        b.upload_waiting().await;
        let left = b.waiting();
        if left > 0 {
            eprintln!(
                "gocacher serve: stopping with {left} acknowledged entries the bucket never took; they stay in the local store only"
            );
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
        if let Some(mp) = &shared.modproxy {
            eprintln!("gocacher serve: modproxy: {}", mp.summary());
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
