//! A fleet of `gocacher serve` replicas on one bucket, behind a real load
//! balancer, under real builds: MinIO, three (then four) replicas on
//! 127.0.0.1 with `--remote s3://fleet/fleet` and an empty `--dir` each,
//! Debian's HAProxy in front of them, and 16 concurrent `go build`s through
//! HAProxy, half with gocacher as GOCACHEPROG (`--cache-server`), half with
//! the seed's `go-cacher`, each on an empty GOCACHE and client dir, so every
//! hit is the fleet's. The phases: steady; one replica SIGKILLed under load;
//! a fourth replica on an empty disk joins; a rolling restart of every
//! replica (SIGTERM: /readyz at 503, so HAProxy takes it out while it still
//! serves its `--drain`; its exit; a start on the same port and disk).
//! Each phase needs every build to succeed and at least 95% of the builds'
//! gets answered with hits.
//!
//! HAProxy, its configuration and its stats: `fleet/haproxy.rs`; a replica
//! started, killed, stopped and started again: `fleet/replica.rs`.

#[path = "fleet/haproxy.rs"]
mod haproxy;
#[path = "fleet/replica.rs"]
mod replica;
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use haproxy::{HaProxy, ServerStats};
use replica::Replica;
use support::s3server::{free_port, tool_bin, Kind, S3Server};
use support::{GoEnv, GoRun, Toolchain};

/// What HAProxy's health check asks each replica for (200 when it serves).
const HEALTH_PATH: &str = "/readyz";
/// Each replica's `--drain`: longer than HAProxy takes to see /readyz
/// fail (`fall 2` checks `inter 500ms` apart).
const DRAIN: &str = "3s";
const HAPROXY: &str = "/usr/sbin/haproxy";
const BUCKET: &str = "fleet";
const CLIENTS: usize = 16;
/// A phase whose builds are not all done by then is stuck.
const PHASE_LIMIT: Duration = Duration::from_secs(180);
/// For state changes HAProxy's checks should see within a second or two.
const CHECK_LIMIT: Duration = Duration::from_secs(20);
/// Set in every build's environment, so that whatever a build left running
/// when the test fails can be found and killed.
const MARK: &str = "GOCACHER_FLEET_RUN";

// ---- HTTP ----

/// One GET on a fresh connection: the status and body (chunks joined), or
/// None when the server does not answer.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    c.write_all(head.as_bytes()).ok()?;
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).ok()?;
    let text = String::from_utf8_lossy(&reply).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, body.to_string()));
    }
    let (mut rest, mut out) = (body, String::new());
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some((status, out));
        }
        out.push_str(after.get(..n)?);
        rest = after.get(n + 2..)?;
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- clients ----

/// Kills every process with `MARK=<id>` in its environment (what builds
/// left running when the test failed), however the test ends.
struct Reaper(String);

impl Reaper {
    fn kill_marked(&self) {
        let needle = format!("{MARK}={}", self.0).into_bytes();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(p.path().join("environ")) else {
                continue;
            };
            if env.split(|&b| b == 0).any(|v| v == needle.as_slice()) {
                // SAFETY: kill(2) on a process this test started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill_marked();
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    Gocacher,
    Seed,
}

/// Client `i` on a machine of its own: an empty GOCACHE and client dir.
fn machine(i: usize, url: &str, mark: &str) -> (Client, GoEnv) {
    let env = GoEnv::new(Toolchain::Local).with_env(vec![(MARK.to_string(), mark.to_string())]);
    if i.is_multiple_of(2) {
        (Client::Gocacher, env.with_flags(&["--cache-server", url]))
    } else {
        let bin = tool_bin("GOCACHER_GO_CACHER_BIN", "go-cacher", "install-seed.sh");
        let prog = format!(
            "{} --cache-server {url} --cache-dir {}",
            bin.display(),
            env.cache_dir().display()
        );
        (Client::Seed, env.with_program(&prog))
    }
}

struct Build {
    client: Client,
    run: GoRun,
    wall: Duration,
}

impl Build {
    /// Gets not answered with a hit: misses and errors.
    fn misses(&self) -> usize {
        self.run.lost.len() + self.run.never_stored_misses + self.run.get_errors
    }
}

/// 16 clients build the fixture through `url` at once, each again on a new
/// machine until `during` has returned; `during` runs meanwhile.
fn load(url: &str, module: &Path, mark: &str, during: impl FnOnce()) -> (Vec<Build>, Duration) {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, dir, mark) = (url.to_string(), module.to_path_buf(), mark.to_string());
            let (stop, done) = (stop.clone(), done.clone());
            thread::spawn(move || loop {
                let (client, env) = machine(i, &url, &mark);
                let t = Instant::now();
                let run = env.go(&dir, &["build", "./..."]);
                done.lock().unwrap().push(Build {
                    client,
                    run,
                    wall: t.elapsed(),
                });
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            })
        })
        .collect();
    // Set however `during` ends, so that no client starts another build
    // after a failure.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    drop({
        let stop = Stop(stop.clone());
        during();
        stop
    });
    while !workers.iter().all(|w| w.is_finished()) {
        assert!(
            start.elapsed() < PHASE_LIMIT,
            "{} of {CLIENTS} clients still building after {PHASE_LIMIT:?}",
            workers.iter().filter(|w| !w.is_finished()).count()
        );
        thread::sleep(Duration::from_millis(50));
    }
    for w in workers {
        if let Err(e) = w.join() {
            std::panic::resume_unwind(e);
        }
    }
    let builds = std::mem::take(&mut *done.lock().unwrap());
    (builds, start.elapsed())
}

/// Waits until HAProxy has answered `n` more responses than at `from`: the
/// builds are under way.
fn wait_for_load(h: &HaProxy, from: u64, n: u64) {
    let start = Instant::now();
    while h.responses() < from + n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "fewer than {n} responses through HAProxy 60 s into the phase"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One phase's numbers: printed, and its builds checked.
fn report(
    phase: &str,
    builds: &[Build],
    wall: Duration,
    before: &HashMap<String, ServerStats>,
    after: &HashMap<String, ServerStats>,
) {
    let failed: Vec<&Build> = builds.iter().filter(|b| !b.run.status.success()).collect();
    let rate = |kind: Option<Client>| {
        let of: Vec<&Build> = builds
            .iter()
            .filter(|b| kind.is_none_or(|k| b.client == k))
            .collect();
        let gets: usize = of.iter().map(|b| b.run.gets).sum();
        let misses: usize = of.iter().map(|b| b.misses()).sum();
        (gets, misses)
    };
    let pct = |(gets, misses): (usize, usize)| {
        100.0 * (gets - misses.min(gets)) as f64 / gets.max(1) as f64
    };
    let (all, ours, seed) = (
        rate(None),
        rate(Some(Client::Gocacher)),
        rate(Some(Client::Seed)),
    );
    let mut walls: Vec<Duration> = builds.iter().map(|b| b.wall).collect();
    walls.sort();
    let delta = |name: &str, f: fn(&ServerStats) -> u64| {
        let a = after.get(name).map(f).unwrap_or(0);
        let b = before.get(name).map(f).unwrap_or(0);
        a.saturating_sub(b)
    };
    let mut names: Vec<&String> = after.keys().filter(|n| *n != "BACKEND").collect();
    names.sort();
    let per_replica: Vec<String> = names
        .iter()
        .map(|n| format!("{n} {}", delta(n, |s| s.responses)))
        .collect();
    eprintln!(
        "fleet: {phase}: {} builds ({} failed) in {:.1} s (median build {:.1} s, slowest {:.1} s); \
         hits {:.1}% of {} gets (gocacher {:.1}%, go-cacher {:.1}%; {} get errors); \
         responses per replica: {}; HAProxy retries {}, redispatches {}, failed connections {}, \
         failed responses {}, 5xx to clients {}",
        builds.len(),
        failed.len(),
        wall.as_secs_f64(),
        walls[walls.len() / 2].as_secs_f64(),
        walls.last().unwrap().as_secs_f64(),
        pct(all),
        all.0,
        pct(ours),
        pct(seed),
        builds.iter().map(|b| b.run.get_errors).sum::<usize>(),
        per_replica.join(", "),
        delta("BACKEND", |s| s.retries),
        delta("BACKEND", |s| s.redispatches),
        delta("BACKEND", |s| s.conn_errors),
        delta("BACKEND", |s| s.resp_errors),
        delta("BACKEND", |s| s.server_errors),
    );
    if let Some(b) = failed.first() {
        panic!(
            "{phase}: {} of {} builds failed; the first ({:?}, {}):\n{}",
            failed.len(),
            builds.len(),
            b.client,
            b.run.status,
            tail(&b.run.stderr, 40)
        );
    }
    assert!(
        builds.len() >= CLIENTS && all.0 > 0,
        "{phase}: {} builds",
        builds.len()
    );
    assert!(
        all.1 * 20 <= all.0,
        "{phase}: hits {:.1}% (under 95%): {} misses or errors in {} gets",
        pct(all),
        all.1,
        all.0
    );
}

#[test]
fn a_fleet_behind_haproxy_serves_every_build() {
    let started = Instant::now();
    let mark = format!("{}-{}", std::process::id(), started.elapsed().as_nanos());
    let reaper = Reaper(mark.clone());
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket(BUCKET);
    let mut replicas: Vec<Replica> = (1..=4)
        .map(|i| Replica::new(&format!("r{i}"), minio.env()))
        .collect();
    for r in &mut replicas[..3] {
        r.start();
    }
    let servers: Vec<(&str, u16)> = replicas.iter().map(|r| (r.name.as_str(), r.port)).collect();
    let haproxy = HaProxy::start(&servers);
    for r in &replicas[..3] {
        haproxy.wait_for(&r.name, true);
    }
    haproxy.wait_for("r4", false);
    let url = haproxy.url();
    let module = support::fixture_copy();
    let dir = module.path();

    // One build fills the fleet, and through it the bucket.
    let (_, warm) = machine(0, &url, &mark);
    let t = Instant::now();
    let run = warm.go(dir, &["build", "./..."]);
    run.assert_ok();
    assert!(
        run.stats.uploads > 200 && run.stats.upload_errors == 0,
        "the first build's uploads: {:?}",
        run.stats
    );
    eprintln!(
        "fleet: warm-up: 1 build in {:.1} s, {} gets, {} uploads",
        t.elapsed().as_secs_f64(),
        run.gets,
        run.stats.uploads
    );

    // 1. Steady.
    let before = haproxy.stats();
    let (builds, wall) = load(&url, dir, &mark, || {});
    report("steady", &builds, wall, &before, &haproxy.stats());

    // 2. A replica SIGKILLed once the builds are under way.
    let before = haproxy.stats();
    let (builds, wall) = load(&url, dir, &mark, || {
        wait_for_load(&haproxy, before["BACKEND"].responses, 300);
        replicas[1].kill9();
        haproxy.wait_for("r2", false);
    });
    report(
        "r2 killed (SIGKILL)",
        &builds,
        wall,
        &before,
        &haproxy.stats(),
    );
    replicas[1].start();
    haproxy.wait_for("r2", true);

    // 3. A fourth replica, on an empty disk, joins under load: what it
    // serves comes from the bucket.
    let before = haproxy.stats();
    let (builds, wall) = load(&url, dir, &mark, || {
        wait_for_load(&haproxy, before["BACKEND"].responses, 300);
        replicas[3].start();
        haproxy.wait_for("r4", true);
        let joined = haproxy.stats()["r4"].responses;
        let start = Instant::now();
        while haproxy.stats()["r4"].responses < joined + 100 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "r4 is up but answered under 100 requests in 60 s"
            );
            thread::sleep(Duration::from_millis(50));
        }
    });
    report("r4 joins", &builds, wall, &before, &haproxy.stats());
    let r4 = &replicas[3];
    let (hits, misses, puts) = (
        r4.counter("gocacher_serve_hits_total"),
        r4.counter("gocacher_serve_misses_total"),
        r4.counter("gocacher_serve_puts_total"),
    );
    eprintln!("fleet: r4 (empty disk at start): {hits} hits, {misses} misses, {puts} puts");
    assert!(
        hits > puts && hits >= 50,
        "r4 served {hits} hits (with {puts} puts): not from the bucket\n{}",
        tail(&r4.log(), 40)
    );

    // 4. A rolling restart of every replica under load: each is stopped
    // (SIGTERM), out of HAProxy's rotation, started again on its port and
    // store, and back in the rotation before the next.
    let before = haproxy.stats();
    let (builds, wall) = load(&url, dir, &mark, || {
        wait_for_load(&haproxy, before["BACKEND"].responses, 300);
        for r in replicas.iter_mut() {
            // Out of HAProxy's rotation (its /readyz at 503) while it
            // still serves: the balancer drains it before it exits.
            r.signal_term();
            haproxy.wait_for(&r.name, false);
            assert!(
                r.running(),
                "{} exited before HAProxy took it out of rotation:\n{}",
                r.name,
                tail(&r.log(), 40)
            );
            let st = r.wait_exit();
            assert!(
                st.success(),
                "{} exited {st} on SIGTERM:\n{}",
                r.name,
                tail(&r.log(), 40)
            );
            r.start();
            haproxy.wait_for(&r.name, true);
        }
    });
    report("rolling restart", &builds, wall, &before, &haproxy.stats());
    eprintln!("fleet: done in {:.1} s", started.elapsed().as_secs_f64());
    drop(reaper);
}
