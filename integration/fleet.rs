//! A fleet of `gocacher serve` replicas on one bucket, behind a real load
//! balancer, under real builds: MinIO, three (then four) replicas on
//! 127.0.0.1 with `--remote s3://fleet/fleet` and an empty `--dir` each,
//! Debian's HAProxy in front of them, and 16 concurrent `go build`s through
//! HAProxy, half with gocacher as GOCACHEPROG (`--cache-server`), half with
//! the seed's `go-cacher`, each on an empty GOCACHE and client dir, so every
//! hit is the fleet's. The phases: steady; one replica SIGKILLed under load;
//! a fourth replica on an empty disk joins; a rolling restart of every
//! replica (SIGTERM: /readyz at 503, so HAProxy takes it out while it still
//! serves its `--drain`; its exit; a start on the same port and disk). Each phase needs every build to succeed
//! and at least 95% of the builds' gets answered with hits.
//!
//! The HAProxy configuration (written by `HaProxy::config`), and why:
//!
//! - `option httpchk GET <HEALTH_PATH>`, `http-check expect status 200`,
//!   `inter 500ms fall 2 rise 2`: a replica that stops answering is out of
//!   the rotation within about a second, and one that starts is in after
//!   two good checks. HAProxy starts every server as up; a single failed
//!   check then takes it out, so a replica declared before it runs (the
//!   fourth here) gets no traffic until it answers.
//! - `retry-on conn-failure empty-response response-timeout`, `retries 3`,
//!   `option redispatch 1`: a request to a replica that was just killed
//!   (connection refused, or a connection closed with no response) is sent
//!   again to another replica, on every retry. Every request of the cache
//!   API is safe to repeat: GETs read, and a PUT stores a content-addressed
//!   entry. HAProxy only retries a request it still holds whole in its
//!   buffer (16 KiB by default), so a large upload cut by a killed replica
//!   fails back to the client, which goes on without it.
//! - `balance leastconn`: a replica that just joined, with no connections,
//!   gets the next requests.
//! - `timeout connect 1s` (a replica is local; a slow connect is a dead
//!   one), `timeout server 15s` (longer than a replica's bucket fetch of a
//!   large output), `timeout client 60s` and `timeout http-keep-alive 10s`
//!   (clients keep their connections between requests).
//! - A stats frontend on a port of its own (`/stats;csv`): the test reads
//!   each replica's state (UP/DOWN) and its response and retry counters.
//!
//! HAProxy runs in the foreground (`-db`) as the test's child, its log (one
//! line a request, `option httplog`) goes to a file printed on failure.
//! Install it with `apt-get install -y haproxy` (.ci/run does).

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

// ---- replicas ----

/// One `gocacher serve --remote` replica, with its store, its log and its
/// ports kept across restarts.
struct Replica {
    name: String,
    port: u16,
    metrics_port: u16,
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Replica {
    fn new(name: &str, env: Vec<(String, String)>) -> Replica {
        Replica {
            name: name.to_string(),
            port: free_port(),
            metrics_port: free_port(),
            root: tempfile::tempdir().unwrap(),
            env,
            child: None,
        }
    }

    fn store(&self) -> PathBuf {
        self.root.path().join("store")
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the replica and waits until it accepts connections.
    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gocacher"))
            .arg("serve")
            .arg("--dir")
            .arg(self.store())
            .arg("--listen")
            .arg(local(self.port).to_string())
            .arg("--metrics-listen")
            .arg(local(self.metrics_port).to_string())
            .args(["--remote", &format!("s3://{BUCKET}/fleet")])
            .args(["--drain", DRAIN])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start gocacher serve");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(local(self.port)).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("replica {} exited ({st}):\n{}", self.name, self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "replica {} not listening after 60 s:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: its /readyz answers 503 at once, and it serves on for its
    /// `--drain` before it stops.
    fn signal_term(&self) {
        let c = self.child.as_ref().expect("replica running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
    }

    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        let c = self.child.as_mut().expect("replica started");
        c.try_wait().unwrap().is_none()
    }

    /// Its exit after [`Replica::signal_term`] (in-flight requests finish
    /// first).
    fn wait_exit(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("replica running");
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "replica {} still running 30 s after SIGTERM:\n{}",
                    self.name,
                    tail(&self.log(), 50)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A counter from the replica's /metrics (0 when it is not there).
    fn counter(&self, name: &str) -> u64 {
        let (status, text) = http_get(local(self.metrics_port), "/metrics")
            .unwrap_or_else(|| panic!("replica {}'s metrics port does not answer", self.name));
        assert_eq!(status, 200, "{text}");
        text.lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|rest| rest.trim().parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!(
                "--- replica {} log ({}), last lines:\n{}",
                self.name,
                self.log_path().display(),
                tail(&self.log(), 40)
            );
        }
    }
}

// ---- HAProxy ----

/// One server's row of HAProxy's stats.
#[derive(Clone, Debug, Default)]
struct ServerStats {
    status: String,
    /// HTTP responses it gave (every class).
    responses: u64,
    /// Requests HAProxy sent again after a failure on it, and sent to
    /// another server.
    retries: u64,
    redispatches: u64,
    /// Failed connections, and responses that failed (e.g. none at all).
    conn_errors: u64,
    resp_errors: u64,
    /// 5xx responses (on the backend row: what clients were answered).
    server_errors: u64,
}

struct HaProxy {
    dir: tempfile::TempDir,
    port: u16,
    stats_port: u16,
    child: Option<Child>,
}

impl HaProxy {
    fn config(port: u16, stats_port: u16, servers: &[(&str, u16)]) -> String {
        let mut cfg = format!(
            "global
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 1s
    timeout client 60s
    timeout server 15s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 10s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend cache
    bind 127.0.0.1:{port}
    default_backend replicas

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend replicas
    balance leastconn
    option httpchk GET {HEALTH_PATH}
    http-check expect status 200
    default-server check inter 500ms fastinter 500ms downinter 500ms fall 2 rise 2
"
        );
        for (name, port) in servers {
            cfg.push_str(&format!("    server {name} 127.0.0.1:{port}\n"));
        }
        cfg
    }

    fn start(servers: &[(&str, u16)]) -> HaProxy {
        assert!(
            Path::new(HAPROXY).exists(),
            "HAProxy is not installed at {HAPROXY}: run `apt-get update && apt-get install -y haproxy` (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (port, stats_port) = (free_port(), free_port());
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, HaProxy::config(port, stats_port, servers)).unwrap();
        let check = Command::new(HAPROXY)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "HAProxy refuses the test's config:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let mut h = HaProxy {
            dir,
            port,
            stats_port,
            child: Some(child),
        };
        let start = Instant::now();
        while http_get(local(stats_port), "/stats;csv").is_none() {
            if let Some(st) = h.child.as_mut().unwrap().try_wait().unwrap() {
                h.child = None;
                panic!("HAProxy exited ({st}):\n{}", h.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "HAProxy's stats port does not answer after 20 s:\n{}",
                h.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        h
    }

    fn url(&self) -> String {
        format!("http://{}", local(self.port))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The backend's servers by name, and the backend itself as "BACKEND".
    fn stats(&self) -> HashMap<String, ServerStats> {
        let (status, csv) =
            http_get(local(self.stats_port), "/stats;csv").expect("HAProxy's stats port answers");
        assert_eq!(status, 200, "{csv}");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no {name} in HAProxy's stats: {header:?}"))
        };
        let (px, sv, st) = (col("pxname"), col("svname"), col("status"));
        let hrsp: Vec<usize> = ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx"]
            .iter()
            .chain(&["hrsp_other"])
            .map(|n| col(n))
            .collect();
        let (wretr, wredis, econ, eresp, h5) = (
            col("wretr"),
            col("wredis"),
            col("econ"),
            col("eresp"),
            col("hrsp_5xx"),
        );
        let mut out = HashMap::new();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < header.len() || f[px] != "replicas" {
                continue;
            }
            let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            out.insert(
                f[sv].to_string(),
                ServerStats {
                    status: f[st].to_string(),
                    responses: hrsp.iter().map(|&i| n(i)).sum(),
                    retries: n(wretr),
                    redispatches: n(wredis),
                    conn_errors: n(econ),
                    resp_errors: n(eresp),
                    server_errors: n(h5),
                },
            );
        }
        out
    }

    /// Waits until HAProxy's checks have `server` up (or down).
    fn wait_for(&self, server: &str, up: bool) {
        let start = Instant::now();
        loop {
            let status = self
                .stats()
                .get(server)
                .map(|s| s.status.clone())
                .unwrap_or_default();
            if (up && status == "UP") || (!up && status.starts_with("DOWN")) {
                return;
            }
            assert!(
                start.elapsed() < CHECK_LIMIT,
                "HAProxy has {server} {status:?}, not {}, after {CHECK_LIMIT:?}",
                if up { "UP" } else { "DOWN" }
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Responses the backend gave so far, over all its servers.
    fn responses(&self) -> u64 {
        self.stats()
            .get("BACKEND")
            .map(|s| s.responses)
            .unwrap_or(0)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- HAProxy log ({}), last lines:\n{}",
                self.log_path().display(),
                tail(&self.log(), 60)
            );
        }
    }
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
