//! A remote that is slow or wrong, not down: a body that trickles, a pack
//! that trickles, and a huge body sent in place of a range. Every build
//! passes without waiting for the slow bytes, and the huge body is not
//! read past what was asked for.

use super::*;

/// `go build ./...` in `dir` with `env`, and how long it took. Should it
/// take 150 s, a watchdog kills its gocacher (found by its cache dir), so a
/// gocacher that waits for good fails the test's bound instead of hanging
/// the suite.
fn build_watched(env: &GoEnv, dir: &std::path::Path) -> (GoRun, Duration) {
    let cache_dir = env.cache_dir().to_path_buf();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = thread::spawn({
        let done = done.clone();
        move || {
            let until = Instant::now() + secs(150);
            while Instant::now() < until {
                thread::sleep(Duration::from_millis(200));
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
            }
            let pattern = format!("--cache-dir {}", cache_dir.display());
            let _ = Command::new("pkill")
                .args(["-9", "-f", "--", &pattern])
                .status();
        }
    });
    let start = Instant::now();
    let run = env.without_stats().go(dir, &["build", "./..."]);
    let took = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watchdog.join().unwrap();
    (run, took)
}

/// A get whose body trickles (prompt headers, then 1 byte a second) ends as
/// a miss at its deadline (`--remote-timeout` plus a second per MiB of
/// body), counted in `remote_errors`; the build compiles that package
/// itself and finishes, instead of waiting for the whole body.
#[test]
fn a_trickling_body_ends_as_a_miss_at_its_deadline() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let proxy = FaultProxy::start(server.addr());
    let module = support::fixture_copy();
    let remote = format!("s3://{BUCKET}/trickle");
    let writer = GoEnv::new(Toolchain::Local)
        .with_flags(&["--remote", &remote, "--scope", "w"])
        .with_env(server.env_with_endpoint(&proxy.url()));
    writer.go(module.path(), &["build", "./..."]).assert_ok();
    // The largest entry, so that waiting for it whole would take longest.
    let (key, len) = server
        .entry_keys(BUCKET, "trickle/")
        .into_iter()
        .map(|k| {
            let len = server.get_raw(BUCKET, &k).len();
            (k, len)
        })
        .max_by_key(|(_, len)| *len)
        .expect("the writer uploaded nothing");
    assert!(len >= 200, "the largest entry is {len} bytes");
    // A machine of another scope: no manifest, no pack, each entry is a GET.
    let reader = writer
        .new_machine()
        .with_flags(&["--remote", &remote, "--scope", "r"]);
    proxy.set(vec![Rule::new(Fault::TrickleBody { bytes_per_sec: 1 })
        .method("GET")
        .path(&key)]);
    // Should the get wait for the whole body, the watchdog ends gocacher
    // (and the build fails the bound below) rather than the test hanging.
    let (run, took) = build_watched(&reader, module.path());
    proxy.clear();
    let lines = gocacher_lines(&run);
    table(format!(
        "| a {len}-byte body at 1 byte/s | ok | {:.1} s | | remote_errors {}, remote_hits {} |",
        took.as_secs_f64(),
        run.stats.remote_errors,
        run.stats.remote_hits
    ));
    run.assert_ok();
    assert_eq!(proxy.counts().fault("trickle_body"), 1, "never asked for");
    assert!(
        took < secs(90),
        "the build took {took:?} with one trickling body"
    );
    assert!(run.stats.remote_errors >= 1, "{:?}", run.stats);
    assert!(lines.len() <= 3, "{lines:#?}");
}

/// A pack that trickles in (its head in time, the rest at 64 KiB/s) is
/// not waited for: one get waits as long as downloading the bytes before
/// its entry may take, then every get downloads its entry on its own, and
/// the build finishes instead of following the pack.
#[test]
fn a_trickling_pack_is_not_waited_for() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let proxy = FaultProxy::start(server.addr());
    let module = support::fixture_copy();
    let remote = format!("s3://{BUCKET}/slow-pack");
    let flags = [
        "--remote",
        &remote,
        "--scope",
        "w",
        "--remote-timeout",
        "10s",
    ];
    let writer = GoEnv::new(Toolchain::Local)
        .with_flags(&flags)
        .with_env(server.env_with_endpoint(&proxy.url()));
    writer.go(module.path(), &["build", "./..."]).assert_ok();
    let pack = server.pack_keys(BUCKET, "slow-pack/");
    assert_eq!(pack.len(), 1, "{pack:?}");
    let pack_len = server.get_raw(BUCKET, &pack[0]).len();
    // The same scope on a new machine: the manifest, then the pack.
    let reader = writer.new_machine();
    proxy.set(vec![Rule::new(Fault::TrickleBody {
        bytes_per_sec: 64 << 10,
    })
    .method("GET")
    .path("/packs/")]);
    let (run, took) = build_watched(&reader, module.path());
    proxy.clear();
    table(format!(
        "| a {:.1} MB pack at 64 KiB/s | ok | {:.1} s | | remote_hits {}, prefetch_hits {} |",
        pack_len as f64 / 1e6,
        took.as_secs_f64(),
        run.stats.remote_hits,
        run.stats.prefetch_hits
    ));
    run.assert_ok();
    assert!(proxy.counts().fault("trickle_body") >= 1, "never asked for");
    assert!(
        took < secs(90),
        "the build took {took:?} with a trickling pack"
    );
    let lines = gocacher_lines(&run);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("arrives slower than a get may wait")),
        "{lines:#?}"
    );
    assert!(run.stats.remote_hits > 0, "{:?}", run.stats);
}

/// A pack asked for in ranges (its head, by a machine that has entries)
/// whose server answers with `200 OK` and a huge body: gocacher reads no
/// more than it asked for, and its memory stays bounded.
#[test]
fn a_huge_body_instead_of_a_range_is_cut_off() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let proxy = FaultProxy::start(server.addr());
    let module = support::fixture_copy();
    let remote = format!("s3://{BUCKET}/huge");
    let env = GoEnv::new(Toolchain::Local)
        .with_flags(&["--remote", &remote, "--scope", "s"])
        .with_env(server.env_with_endpoint(&proxy.url()));
    // The first go command writes the manifest, a second machine the pack.
    env.go(module.path(), &["build", "./..."]).assert_ok();
    let second = env.new_machine();
    second.go(module.path(), &["build", "./..."]).assert_ok();
    assert_eq!(server.pack_keys(BUCKET, "huge/").len(), 1);

    const HUGE: u64 = 512 << 20;
    proxy.set(vec![Rule::new(Fault::HugeBody { bytes: HUGE })
        .method("GET")
        .path("/gocacher/v1/packs/")]);
    // gocacher on its own, its stdin held open: its prefetch (which asks
    // for the pack's head, the machine being warm) runs to its end.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gocacher"))
        .args(["--cache-dir", &second.cache_dir().display().to_string()])
        .args(["--remote", &remote, "--scope", "s"])
        .envs(server.env_with_endpoint(&proxy.url()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + secs(40);
    while proxy.counts().huge_ended == 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(100));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let counts = proxy.counts();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "huge body: {} of {HUGE} bytes sent before gocacher hung up; gocacher VmHWM {} MiB",
        counts.huge_sent,
        hwm_kb / 1024
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(counts.fault("huge_body"), 1, "the pack was never asked for");
    assert_eq!(counts.huge_ended, 1, "gocacher still reads the huge body");
    assert!(
        counts.huge_sent < 32 << 20,
        "{} bytes read of a reply to a ranged GET",
        counts.huge_sent
    );
    assert!(hwm_kb < 128 << 10, "gocacher's peak RSS: {hwm_kb} kB");
}
