//! The `gocacher` binary: flags, then the protocol on stdin/stdout.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use gocacher::cacher::{Cacher, CloseOptions};
use gocacher::config::{Args, Command, Config};
use gocacher::disk::{DiskCache, TrimPolicy};
use gocacher::protocol;
use gocacher::remote::s3::redact_url;
use gocacher::remote::StoreSettings;
use gocacher::scope::Scope;

mod stdio;

/// Blocking threads for file I/O. cmd/go keeps at most a few dozen requests in
/// flight; more threads would only add memory (each has its own stack).
const MAX_BLOCKING_THREADS: usize = 16;

/// How long a trim may run after close before it stops and resumes next time.
/// cmd/go no longer waits for us by then, so this only bounds an idle process.
const TRIM_DEADLINE: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let config = match Args::parse_from_env().validate() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("gocacher: {err:#}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gocacher: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates its own malloc arena; with the
/// blocking pool's threads each holding freed buffers in its own arena, the
/// process keeps far more memory than it uses. Two arenas are plenty for a
/// process whose threads mostly wait on I/O. A fixed mmap threshold (glibc
/// otherwise raises it each time a mapped block is freed) keeps large
/// short-lived buffers, such as zstd windows and HTTP bodies, out of the heap,
/// where they would fragment it and raise peak RSS (bench/README.md has the
/// numbers).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn run(config: Config) -> Result<()> {
    limit_malloc_arenas();
    if let Some(serve) = config.serve {
        return gocacher::serve::run(serve, config.remote);
    }
    if let Some(Command::Keygen { path }) = &config.command {
        let public = gocacher::trust::keygen(path)?;
        eprintln!(
            "gocacher: wrote the private key to {} (keep it secret: --sign-key) and the public key to {}.pub (--trust-key)",
            path.display(),
            path.display()
        );
        println!("{public}");
        return Ok(());
    }
    if config.command == Some(Command::GithubReadOnly) {
        let d = gocacher::github::decide_from_env();
        println!("{}\t{}\t{}", d.read_only, d.key.input(), d.reason);
        return Ok(());
    }
    if let Some(Command::FixMtimes { dir }) = &config.command {
        let report = gocacher::mtimes::fix(dir).context("fix-mtimes")?;
        println!("fix-mtimes {}: {report}", dir.display());
        return Ok(());
    }
    // One async thread: cmd/go sends most gets one at a time and waits for
    // each, so what counts is the round trip, and every hop between threads
    // (a futex wake-up) costs more than the work. Reading stdin, answering a
    // hit and writing stdout all happen on this thread; bulk file I/O goes to
    // the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if config.command == Some(Command::Check) {
        let remote = config
            .remote
            .as_ref()
            .expect("validated: check has --remote");
        return runtime.block_on(gocacher::check::run(remote));
    }
    let disk = DiskCache::open(&config.cache_dir)
        .with_context(|| format!("cache dir {}", config.cache_dir.display()))?;
    if config.command == Some(Command::Trim) {
        let r = disk
            .trim_now(&trim_policy(&config))
            .with_context(|| format!("trimming {}", disk.root().display()))?;
        let unfinished = if r.complete {
            ""
        } else {
            "; stopped at the deadline"
        };
        println!("trimmed {}: {r}{unfinished}", disk.root().display());
        return Ok(());
    }
    if config.verbose {
        eprintln!("gocacher: cache dir {}", disk.root().display());
        if config.gateway_port_ignored {
            eprintln!("gocacher: --gateway-addr-port is ignored (give --cache-server URL)");
        }
    }
    let mut cacher = Cacher::new(
        disk,
        CloseOptions {
            verbose: config.verbose,
            stats_file: config.stats_file.clone(),
            job_summary: config.job_summary.clone(),
        },
    );
    if let Some(remote) = config.remote.clone() {
        if config.verbose {
            match &remote.store {
                StoreSettings::S3(s3) => eprintln!(
                    "gocacher: bucket s3://{}/{}{}",
                    s3.bucket,
                    s3.prefix,
                    match &s3.endpoint {
                        Some(ep) => format!(" at {}", redact_url(ep)),
                        None => String::new(),
                    }
                ),
                StoreSettings::Http(h) => eprintln!(
                    "gocacher: cache server {}{}",
                    redact_url(&h.base),
                    if h.access_token.is_some() {
                        ", with an access token"
                    } else if h.identity.is_some() {
                        ", with an identity token to exchange"
                    } else {
                        ""
                    }
                ),
            }
        }
        if config.verbose {
            for (bucket, prefix) in &remote.also_read {
                eprintln!("gocacher: also reading s3://{bucket}/{prefix} (never written)");
            }
            let keys = &remote.opts.keys;
            if let Some(s) = &keys.signer {
                eprintln!("gocacher: signing uploads with key {}", s.public_hex());
            }
            match &keys.trust {
                Some(t) => eprintln!(
                    "gocacher: using only entries signed by {} trusted key(s)",
                    t.len()
                ),
                None => {
                    eprintln!("gocacher: no --trust-key: every writer of the bucket is trusted")
                }
            }
        }
        let scope = Scope::resolve(remote.scope.clone(), remote.scope_fallback.clone());
        if config.verbose {
            eprintln!(
                "gocacher: scope {:?}, fallbacks {:?}",
                scope.name, scope.fallbacks
            );
        }
        cacher = cacher.with_remote(remote, scope);
    }
    let cacher = Arc::new(cacher);
    runtime.block_on(async {
        // Spawned before the loop starts; runs once the capabilities are out.
        cacher.start_prefetch();
        let (stdin, stdout) = stdio::open();
        protocol::serve(stdin, stdout, cacher.clone()).await
    })?;
    // cmd/go waits for our stdout to close, not for us to exit: close it now
    // so the go command finishes while we trim.
    close_stdout();
    cacher.overflow().remove();
    if cacher.disk().unwritable().is_some() {
        // Nothing to trim in a directory we cannot write (already reported).
        runtime.shutdown_timeout(Duration::from_millis(100));
        return Ok(());
    }
    match cacher.disk().trim(&trim_policy(&config)) {
        Ok(Some(r)) if config.verbose => {
            let unfinished = if r.complete {
                ""
            } else {
                "; unfinished, resumes next time"
            };
            eprintln!("gocacher: trimmed: {r}{unfinished}")
        }
        Ok(_) => {}
        // A full disk was reported already; its trim failing is no news.
        Err(_) if cacher.disk_trouble_reported() => {}
        Err(err) => eprintln!("gocacher: trim: {err}"),
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// Points fd 1 at /dev/null, which closes the pipe to cmd/go. Closing fd 1
/// outright would leave the number free, and the next file this process
/// opened (a trim's, say) would become its "stdout".
fn trim_policy(config: &Config) -> TrimPolicy {
    TrimPolicy {
        max_age: config.trim_age,
        max_size: config.max_size,
        deadline: TRIM_DEADLINE,
        min_age: gocacher::disk::TRIM_MIN_AGE,
    }
}

/// Points fd 1 at /dev/null: nothing in this process writes to stdout
/// after `serve` returned (the writer task has finished).
#[cfg(unix)]
fn close_stdout() {
    let Ok(null) = std::fs::File::options().write(true).open("/dev/null") else {
        return;
    };
    let _ = rustix::stdio::dup2_stdout(&null);
}

#[cfg(not(unix))]
fn close_stdout() {}
