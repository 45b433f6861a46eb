//! `gocacher serve`'s own fault suite, beside the client's (faults.rs):
//! the server's bucket killed and restarted under load, its disk full,
//! a thousand idle connections and a hundred slow uploads at once, and the
//! server itself killed with SIGKILL under load. Clients are real `go`
//! builds (gocacher's `--cache-server`, the seed's `go-cacher`) and raw
//! HTTP writers whose every acknowledged byte is checked.
//!
//! Beside it, in `serve_faults/`: `connections.rs` (idle connections and
//! slow uploads) and `bounds.rs` (what bounds the server's memory by its
//! flags rather than by its clients: request methods in the metrics,
//! exchanged sessions, namespaces that only read).
//!
//! Each fault test prints a row of the table in docs/FAULTS.md (with the
//! server's peak RSS, VmHWM) and appends it to `serve-faults-table.md` in
//! cargo's test temp dir.

mod support;

#[path = "serve_faults/bounds.rs"]
mod bounds;
#[path = "serve_faults/connections.rs"]
mod connections;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::s3server::{free_port, tool_bin, Kind, S3Server};
use support::{GoEnv, GoRun, Toolchain};

/// `gocacher serve` on a store of the test's choosing (say, a small tmpfs).
struct Serve {
    port: u16,
    store: PathBuf,
    logs: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Serve {
    fn start(store: &Path, args: &[&str], env: Vec<(String, String)>) -> Serve {
        let mut s = Serve {
            port: free_port(),
            store: store.to_path_buf(),
            logs: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gocacher"))
            .arg("serve")
            .arg("--dir")
            .arg(&self.store)
            .arg("--listen")
            .arg(self.addr().to_string())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start gocacher serve");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(self.addr()).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gocacher serve exited ({st}):\n{}", self.log());
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{}", self.log());
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("server.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kb / 1024.0
    }

    /// Open file descriptors.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Appends a row to the table (and prints it); the first row of a run
/// writes the header.
fn row(fault: &str, asserted: &str, wall: Duration, rss_mib: f64) {
    static HEADER: std::sync::Once = std::sync::Once::new();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-faults-table.md");
    HEADER.call_once(|| {
        let _ = std::fs::write(
            &path,
            "| fault | what is asserted | wall | server peak RSS |\n|---|---|--:|--:|\n",
        );
    });
    let line = format!(
        "| {fault} | {asserted} | {:.1} s | {rss_mib:.0} MiB |",
        wall.as_secs_f64()
    );
    println!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) {
        let _ = writeln!(f, "{line}");
    }
}

fn hex_id(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Pseudo-random bytes (no two seeds alike).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// One HTTP/1.1 exchange on a fresh connection: the status and the body.
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(head.as_bytes()).ok()?;
    c.write_all(body).ok()?;
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&reply[..split])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, reply[split + 4..].to_vec()))
}

fn put(addr: SocketAddr, path: &str, extra: &str, body: &[u8]) -> Option<u16> {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    request(addr, &head, body).map(|r| r.0)
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> Option<(u16, Vec<u8>)> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    request(addr, &head, b"")
}

/// A gocacher machine of its own, through the server.
fn through(url: &str) -> GoEnv {
    GoEnv::new(Toolchain::Local).with_flags(&["--cache-server", url])
}

/// The seed's `go-cacher` on a machine of its own, through the server.
fn seed_through(url: &str) -> GoEnv {
    let env = GoEnv::new(Toolchain::Local);
    let bin = tool_bin("GOCACHER_GO_CACHER_BIN", "go-cacher", "install-seed.sh");
    let prog = format!(
        "{} --cache-server {url} --cache-dir {}",
        bin.display(),
        env.cache_dir().display()
    );
    env.with_program(&prog)
}

fn build(env: GoEnv, module: &Path) -> thread::JoinHandle<GoRun> {
    let dir = module.to_path_buf();
    thread::spawn(move || env.go(&dir, &["build", "./..."]))
}

fn metrics_text(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics", "").expect("the metrics port answers");
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

/// Unmounts a test's tmpfs when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const BUCKET: &str = "serve-faults";

#[test]
fn minio_killed_and_restarted_under_load() {
    let started = Instant::now();
    let mut minio = S3Server::start(Kind::Minio);
    minio.create_bucket(BUCKET);
    let store = tempfile::tempdir().unwrap();
    let server = Serve::start(
        &store.path().join("store"),
        &["--remote", &format!("s3://{BUCKET}/s")],
        minio.env(),
    );
    let module = support::fixture_copy();
    let url = server.url();
    // Three machines build at once, two with gocacher, one with the seed's
    // go-cacher; MinIO dies 2 s in and is back 3 s later.
    let builds = vec![
        build(through(&url), module.path()),
        build(through(&url), module.path()),
        build(seed_through(&url), module.path()),
    ];
    thread::sleep(Duration::from_secs(2));
    minio.kill();
    // A PUT while the bucket is down is kept and acknowledged: the seed's
    // go-cacher fails the build on any PUT error.
    let data = bytes(1, 4096);
    let action = hex_id(b"while the bucket is down");
    let status = put(
        server.addr(),
        &format!("/{action}/{}", hex_id(&data)),
        "",
        &data,
    );
    assert_eq!(status, Some(204), "{}", server.log());
    thread::sleep(Duration::from_secs(3));
    minio.restart();
    let back = Instant::now();
    for b in builds {
        b.join().unwrap().assert_ok();
    }
    // Without a restart, the server uploads it once the bucket answers.
    let key = format!("s/gocacher/v1/{action}");
    let uploaded = "of the entries kept while it did not take them";
    while !minio.keys(BUCKET, "s/").contains(&key) || !server.log().contains(uploaded) {
        assert!(
            back.elapsed() < Duration::from_secs(90),
            "acknowledged but not in the bucket 90 s after MinIO came back: {key}\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(500));
    }
    let recovered = back.elapsed();
    // A second server with an empty store serves it: from the bucket.
    let other_store = tempfile::tempdir().unwrap();
    let other = Serve::start(
        &other_store.path().join("store"),
        &["--remote", &format!("s3://{BUCKET}/s")],
        minio.env(),
    );
    let (status, body) = get(
        other.addr(),
        &format!("/action/{action}"),
        "Want-Object: 1\r\n",
    )
    .unwrap();
    assert_eq!((status, body == data), (200, true), "{}", other.log());
    // And builds through the first server go on.
    through(&url)
        .go(module.path(), &["build", "./..."])
        .assert_ok();
    println!("writes reached the bucket {recovered:?} after MinIO came back");
    row(
        "MinIO killed 2 s into 3 concurrent builds (2 gocacher, 1 go-cacher), restarted 3 s later",
        &format!(
            "0 failed builds; a PUT while MinIO was down acknowledged, and in the bucket {:.0} s after MinIO came back, read back through a second server; no server restart",
            recovered.as_secs_f64()
        ),
        started.elapsed(),
        server.peak_rss_mib(),
    );
}

#[test]
fn the_servers_disk_full() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs (the suite runs as root)"
    );
    let _guard = Mounted(mnt.clone());
    let store = mnt.join("store");
    let server = Serve::start(&store, &[], vec![]);
    // Fill the disk to 3 MB from the top.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(3 << 20)).unwrap();
    }
    let module = support::fixture_copy();
    let url = server.url();
    let runs: Vec<GoRun> = vec![
        build(through(&url), module.path()),
        build(seed_through(&url), module.path()),
    ]
    .into_iter()
    .map(|b| b.join().unwrap())
    .collect();
    for r in &runs {
        r.assert_ok();
    }
    let s = &runs[0].stats;
    assert!(
        s.upload_errors + s.uploads_dropped > 0,
        "the disk never filled: {s:?}\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("is full"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    support::assert_store_whole(&store);
    let before = support::files_in(&store);
    // Space frees: the next machine's puts are kept.
    std::fs::remove_file(&filler).unwrap();
    let run = through(&url).go(module.path(), &["build", "./..."]);
    run.assert_ok();
    assert!(
        run.stats.uploads > 0 && run.stats.upload_errors == 0,
        "{:?}\n{}",
        run.stats,
        server.log()
    );
    assert!(support::files_in(&store) > before);
    support::assert_store_whole(&store);
    row(
        "the server's --dir a 64 MB tmpfs filled to 3 MB free, 2 concurrent builds (gocacher, go-cacher); then space freed",
        "0 failed builds; PUTs refused 507 (a log line a minute at most), no partial entry or temp file; after freeing, the next build's uploads all kept",
        started.elapsed(),
        server.peak_rss_mib(),
    );
}

#[test]
fn kill_9_under_load_then_restart() {
    let started = Instant::now();
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("store");
    let mut server = Serve::start(&store, &[], vec![]);
    let addr = server.addr();
    let module = support::fixture_copy();
    // A real build through the server, killed under it.
    let go = build(through(&server.url()).without_stats(), module.path());
    // Writers of entries (10 KB to 600 KB) and packs (1 to 3 MB); each
    // remembers what was acknowledged, and what was only attempted.
    type Acked = Vec<(String, String, String)>; // (path, sha256, what)
    let attempted = Arc::new(Mutex::new(
        std::collections::HashMap::<String, String>::new(),
    ));
    let writers: Vec<thread::JoinHandle<Acked>> = (0..6u64)
        .map(|w| {
            let attempted = attempted.clone();
            thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..10_000u64 {
                    let seed = w * 1_000_000 + i;
                    let (path, data) = if i % 3 == 2 {
                        let data = bytes(seed, (1 << 20) + (seed as usize * 7919) % (2 << 20));
                        let name = &hex_id(format!("pack {seed}").as_bytes())[..32];
                        (format!("/gocacher/v1/packs/{name}"), data)
                    } else {
                        let data = bytes(seed, 10_000 + (seed as usize * 7919) % 600_000);
                        let action = hex_id(format!("kill action {seed}").as_bytes());
                        (format!("/{action}/{}", hex_id(&data)), data)
                    };
                    let sum = hex_id(&data);
                    attempted.lock().unwrap().insert(path.clone(), sum.clone());
                    match put(addr, &path, "", &data) {
                        Some(204) | Some(200) | Some(201) => acked.push((path, sum, String::new())),
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(2500));
    let rss = server.peak_rss_mib();
    server.kill();
    let acked: Acked = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let run = go.join().unwrap();
    run.assert_ok();
    let packs = acked.iter().filter(|a| a.0.contains("/packs/")).count();
    assert!(
        acked.len() > 20 && packs > 0,
        "{} acknowledged",
        acked.len()
    );
    // Nothing partial where it could be served: whole entries, and every
    // pack file holds exactly the bytes some writer sent under its name.
    // (Writes cut by the kill leave temp files, which are never served and
    // which trim removes.)
    support::assert_entries_whole(&store);
    let attempted = attempted.lock().unwrap();
    if let Ok(dir) = std::fs::read_dir(store.join("named/packs")) {
        for f in dir.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let want = attempted.get(&format!("/gocacher/v1/packs/{name}"));
            let have = hex_id(&std::fs::read(f.path()).unwrap());
            assert_eq!(Some(&have), want, "named/packs/{name}: partial or stray");
        }
    }
    server.restart();
    for (path, sum, _) in &acked {
        let url = match path.strip_prefix("/gocacher/v1/") {
            Some(_) => path.clone(),
            None => format!("/action/{}", &path[1..65]),
        };
        let (status, body) = get(addr, &url, "Want-Object: 1\r\n").unwrap();
        assert_eq!(status, 200, "acknowledged {path} lost after kill -9");
        assert_eq!(&hex_id(&body), sum, "{path}: wrong bytes after kill -9");
    }
    println!(
        "{} acknowledged ({packs} packs) before kill -9, all served whole after the restart",
        acked.len()
    );
    row(
        "kill -9 of the server 2.5 s into 6 writers (entries, packs) and a build; restart",
        &format!(
            "the build ok; every acknowledged PUT ({}, {packs} packs) served after the restart with its bytes; no partial entry or pack on disk (a cut write's temp file is never served)",
            acked.len()
        ),
        started.elapsed(),
        rss,
    );
}
