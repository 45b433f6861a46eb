//! End-to-end through the seed project's cache servers: the real `go` with
//! gocacher as its GOCACHEPROG and `--cache-server` pointing at the real
//! `gocached` or `go-cacher-server`, started by the test on 127.0.0.1 (and,
//! for faults, a fault proxy in between). gocached's JWT auth is pointed at
//! a test OIDC issuer (integration/oidc).

mod support;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::faultproxy::{Fault, FaultProxy, Rule};
use support::seedserver::{Issuer, Seed, SeedServer};
use support::{GoEnv, GoRun, Toolchain};

const STEPS: [&[&str]; 3] = [
    &["build", "./..."],
    &["test", "./..."],
    &["run", "./cmd/fixture"],
];

/// The claim every test token carries, and what gocached is told to want.
const SUB: &str = "repo:test/repo:ref:refs/heads/main";

fn machine(url: &str, flags: &[&str]) -> GoEnv {
    let mut all = vec!["--cache-server", url];
    all.extend_from_slice(flags);
    GoEnv::new(Toolchain::Local).with_flags(&all)
}

/// The fixture program's right output, built without gocacher.
fn plain_output(module: &Path) -> String {
    let run = GoEnv::new(Toolchain::Local).go(module, &["run", "./cmd/fixture"]);
    run.assert_ok();
    run.stdout
}

fn gocacher_lines(run: &GoRun) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("gocacher:"))
        .collect()
}

/// Cold build, test and run fill the server; a second machine with empty
/// caches gets every stored entry from it, verified.
fn second_machine_gets_everything_from(kind: Seed) {
    let server = SeedServer::start(kind);
    let module = support::fixture_copy();
    let dir = module.path();
    let expected = plain_output(dir);
    let a = machine(&server.url(), &[]);
    for args in STEPS {
        let run = a.go(dir, args);
        run.assert_ok();
        let s = &run.stats;
        assert!(s.uploads > 0, "{kind:?} {args:?}: {s:?}");
        assert_eq!(
            s.upload_errors + s.uploads_dropped + s.remote_errors + s.corrupt,
            0,
            "{kind:?} {args:?}: {s:?}\n{}",
            run.stderr
        );
    }
    let (mut served, mut downloaded) = (0, 0);
    for args in STEPS {
        // Each on a machine of its own, so that every hit is the server's.
        let run = a.new_machine().go(dir, args);
        run.assert_ok();
        run.assert_warm();
        let s = &run.stats;
        // cmd/go asks for a few actions twice in one go command; the second
        // get is served by the local mirror the first filled.
        assert!(
            s.remote_hits * 100 >= s.hits * 99 && s.remote_hits > 0,
            "{kind:?} {args:?}: every hit from the server: {s:?}"
        );
        assert_eq!(s.remote_errors + s.corrupt, 0, "{kind:?} {args:?}: {s:?}");
        assert_eq!(s.prefetched, 0, "no prefetch through {kind:?}");
        if args[0] == "run" {
            assert_eq!(run.stdout, expected, "wrong program output");
        }
        served += s.bytes_read;
        downloaded += s.bytes_downloaded;
    }
    match kind {
        // gocached compresses what it stores with lz4 and sends it so.
        Seed::Gocached => assert!(
            downloaded * 10 < served * 8,
            "lz4 not used: {downloaded} bytes down for {served} served"
        ),
        Seed::GoCacherServer => assert!(downloaded >= served, "{downloaded} < {served}"),
        Seed::Serve => unreachable!("integration/serve.rs tests gocacher serve"),
    }
}

#[test]
fn gocached_serves_a_second_machine() {
    second_machine_gets_everything_from(Seed::Gocached);
}

#[test]
fn go_cacher_server_serves_a_second_machine() {
    second_machine_gets_everything_from(Seed::GoCacherServer);
}

/// gocached with JWT auth: identity tokens from a file and from GitHub
/// Actions' endpoint are exchanged; a bad token costs misses and one line,
/// never the build; a gocached restart (which forgets every session) costs
/// one more exchange.
#[test]
fn gocached_identity_tokens_are_exchanged() {
    let issuer = Issuer::start();
    let claim = format!("sub={SUB}");
    let mut server = SeedServer::start_with(
        Seed::Gocached,
        &[
            "--jwt-issuer",
            &issuer.url,
            "--jwt-claim",
            &claim,
            "--global-jwt-claim",
            &claim,
        ],
    );
    let proxy = FaultProxy::start(server.addr());
    let module = support::fixture_copy();
    let dir = module.path();
    let expected = plain_output(dir);
    let tokens = tempfile::tempdir().unwrap();
    let token_file = |name: &str, query: &str| {
        let path = tokens.path().join(name);
        std::fs::write(&path, issuer.mint(query)).unwrap();
        path.display().to_string()
    };

    // Without any token: every request is refused; the build goes on.
    let anonymous = machine(&proxy.url(), &[]);
    let run = anonymous.go(dir, &["build", "./..."]);
    run.assert_ok();
    assert_eq!(run.stats.uploads, 0, "{:?}", run.stats);
    assert!(run.stats.remote_errors > 0, "{:?}", run.stats);
    let lines = gocacher_lines(&run);
    assert_eq!(lines.len(), 1, "one warning: {lines:?}");
    assert!(lines[0].contains("credentials were refused"), "{lines:?}");

    // A good token from a file: one exchange, then uploads.
    let good = token_file("good", "");
    let a = machine(&proxy.url(), &["--oidc-token-file", &good]);
    proxy.reset_counts();
    let run = a.go(dir, &["build", "./..."]);
    run.assert_ok();
    let s = &run.stats;
    assert!(s.uploads > 0, "{s:?}\n{}", run.stderr);
    assert_eq!(
        s.upload_errors + s.remote_errors,
        0,
        "{s:?}\n{}",
        run.stderr
    );
    assert_eq!(proxy.counts().method("POST"), 1, "one exchange");
    assert!(gocacher_lines(&run).is_empty(), "{}", run.stderr);

    // GitHub Actions: gocacher asks the runner's endpoint for a token
    // (audience gocached) once the server wants one.
    let actions = GoEnv::new(Toolchain::Local)
        .with_flags(&["--cache-server", &proxy.url()])
        .with_env(vec![
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
                format!("{}/actions-token?api-version=2.0", issuer.url),
            ),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(),
                "actions-request-token".into(),
            ),
        ]);
    let run = actions.go(dir, &["build", "./..."]);
    run.assert_ok();
    run.assert_warm();
    assert!(
        run.stats.remote_hits * 100 >= run.stats.hits * 99,
        "{:?}",
        run.stats
    );

    // Expired, or for another audience: misses, one warning, a good build.
    for (name, query) in [("expired", "exp=-120"), ("audience", "aud=not-gocached")] {
        let bad = token_file(name, query);
        let m = machine(&proxy.url(), &["--oidc-token-file", &bad]);
        let run = m.go(dir, &["run", "./cmd/fixture"]);
        run.assert_ok();
        assert_eq!(run.stdout, expected);
        let s = &run.stats;
        assert_eq!(s.remote_hits + s.uploads, 0, "{name}: {s:?}");
        let lines = gocacher_lines(&run);
        assert_eq!(lines.len(), 1, "{name}: one warning: {lines:?}");
        assert!(lines[0].contains("token exchange was refused"), "{lines:?}");
    }

    // gocached restarted mid-run: the next request's 401 brings one more
    // exchange, and the run goes on with hits. Added latency keeps the run
    // long enough to restart the server in the middle of it.
    proxy.set(vec![
        Rule::new(Fault::Latency(Duration::from_millis(40))).method("GET")
    ]);
    proxy.reset_counts();
    let b = a.new_machine();
    let restarted = thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let start = Instant::now();
            while proxy.counts().method("GET") < 30 {
                assert!(start.elapsed() < Duration::from_secs(120), "no gets");
                thread::sleep(Duration::from_millis(10));
            }
            let before = proxy.counts().method("GET");
            server.restart();
            before
        });
        let run = b.go(dir, &["run", "./cmd/fixture"]);
        (run, watcher.join().unwrap())
    });
    let (run, gets_before) = restarted;
    run.assert_ok();
    assert_eq!(run.stdout, expected);
    let s = &run.stats;
    assert_eq!(
        proxy.counts().method("POST"),
        2,
        "exchanged again: {s:?}\n{}",
        run.stderr
    );
    assert!(
        s.remote_hits > gets_before,
        "hits after the restart: {s:?} ({gets_before} gets before it)\n{}",
        run.stderr
    );
}

/// Faults between gocacher and gocached: every build succeeds with the
/// right output, nothing wrong is served, and the counters say what
/// happened.
#[test]
fn gocached_faults_never_fail_a_build() {
    let mut server = SeedServer::start(Seed::Gocached);
    let proxy = FaultProxy::start(server.addr());
    let module = support::fixture_copy();
    let dir = module.path();
    let expected = plain_output(dir);
    let run_on = |m: &GoEnv| {
        let run = m.go(dir, &["run", "./cmd/fixture"]);
        run.assert_ok();
        assert_eq!(run.stdout, expected, "wrong program output");
        run
    };
    // Fill the server.
    let filler = machine(&proxy.url(), &[]);
    let run = run_on(&filler);
    assert!(run.stats.uploads > 0);

    // 500s on every lookup and upload.
    proxy.set(vec![Rule::new(Fault::Status {
        code: 500,
        s3_code: "InternalError",
    })]);
    let run = run_on(&filler.new_machine());
    let s = &run.stats;
    assert_eq!(s.remote_hits, 0, "{s:?}");
    assert!(
        s.remote_errors > 0 && s.upload_errors + s.uploads_dropped > 0,
        "{s:?}"
    );

    // A 5 s stall on lookups: cut off at --remote-timeout, then the breaker.
    proxy.set(vec![
        Rule::new(Fault::Latency(Duration::from_secs(5))).method("GET")
    ]);
    let start = Instant::now();
    let run = run_on(&filler.new_machine().with_flags(&[
        "--cache-server",
        &proxy.url(),
        "--remote-timeout",
        "1s",
    ]));
    let s = &run.stats;
    assert!(s.remote_errors > 0, "{s:?}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );

    // Bodies cut short: counted as network errors, never served.
    proxy.set(vec![Rule::new(Fault::CutBody).method("GET").every(2)]);
    let run = run_on(&filler.new_machine());
    let s = &run.stats;
    assert!(s.remote_errors > 0, "{s:?}");
    assert!(s.remote_hits > 0, "the other half is served: {s:?}");
    proxy.clear();

    // Bodies that do not hash to their Go-Output-Id: every blob gocached
    // keeps in a file (all but the smallest) is swapped for a valid lz4
    // frame of the same size with one byte changed.
    let tampered = tamper_blobs(&server.store_dir());
    assert!(
        tampered > 0,
        "no blob files in {}",
        server.store_dir().display()
    );
    let run = run_on(&filler.new_machine());
    let s = &run.stats;
    assert!(s.corrupt > 0, "{s:?}");
    let lines = gocacher_lines(&run);
    assert!(
        lines.iter().any(|l| l.contains("is corrupt")),
        "one line says so: {lines:?}"
    );

    // The server killed mid-build: the rest of the build goes on without it.
    let victim = filler.new_machine();
    proxy.reset_counts();
    let run = thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let start = Instant::now();
            while proxy.counts().method("GET") < 20 && start.elapsed() < Duration::from_secs(60) {
                thread::sleep(Duration::from_millis(5));
            }
            server.kill();
        });
        let run = run_on(&victim);
        killer.join().unwrap();
        run
    });
    assert!(run.stats.remote_errors > 0, "{:?}", run.stats);
}

/// Rewrites every `.lz4` blob under gocached's store as a valid lz4 frame of
/// the same length whose content differs in one byte. The count rewritten.
fn tamper_blobs(store: &Path) -> usize {
    use std::io::{Read, Write};
    let mut n = 0;
    for shard in std::fs::read_dir(store).unwrap().flatten() {
        if !shard.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "lz4") {
                continue;
            }
            let mut plain = Vec::new();
            lz4::Decoder::new(std::fs::File::open(&path).unwrap())
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
            let mid = plain.len() / 2;
            plain[mid] ^= 0x55;
            let mut enc = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            enc.write_all(&plain).unwrap();
            let (frame, done) = enc.finish();
            done.unwrap();
            std::fs::write(&path, frame).unwrap();
            n += 1;
        }
    }
    n
}
