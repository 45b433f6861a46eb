//! End-to-end through a real bucket: the real `go` with gocacher as its
//! GOCACHEPROG, `--remote` pointing at a MinIO or LocalStack server that the
//! test starts on 127.0.0.1. Every scenario runs against both servers.

#[path = "s3/prefetch.rs"]
mod prefetch;
mod support;
#[path = "s3/trust.rs"]
mod trust;

use std::thread;
use std::time::{Duration, Instant};

use prefetch::*;
use support::s3server::{Kind, S3Server};
use support::{GoEnv, GoRun, Toolchain};
use trust::*;

const BUCKET: &str = "gocacher-test";

/// A machine using `server`'s bucket under `prefix`, with extra flags.
fn machine(server: &S3Server, prefix: &str, flags: &[&str]) -> GoEnv {
    let remote = format!("s3://{BUCKET}/{prefix}");
    let mut all = vec!["--remote", remote.as_str()];
    all.extend_from_slice(flags);
    GoEnv::new(Toolchain::Local)
        .with_flags(&all)
        .with_env(server.env())
}

fn started(kind: Kind) -> S3Server {
    let s = S3Server::start(kind);
    s.create_bucket(BUCKET);
    s
}

fn gocacher_lines(run: &GoRun) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("gocacher:"))
        .collect()
}

/// Cold build and test fill the bucket; a second machine with empty caches
/// gets every stored entry from it.
fn cold_fills_bucket_then_fresh_machine_hits(kind: Kind) {
    let server = started(kind);
    let a = machine(&server, "shared", &[]);
    let module = support::fixture_copy();
    let dir = module.path();
    let mut cold_run = String::new();
    for args in [
        &["build", "./..."][..],
        &["test", "./..."],
        &["run", "./cmd/fixture"],
    ] {
        let run = a.go(dir, args);
        run.assert_ok();
        let s = &run.stats;
        assert!(s.uploads > 0, "{args:?}: {s:?}");
        assert_eq!(
            s.upload_errors + s.uploads_dropped + s.remote_errors,
            0,
            "{args:?}: {s:?}"
        );
        assert_eq!(
            s.uploads + s.uploads_skipped,
            s.puts,
            "every put reached the bucket: {s:?}"
        );
        if args[0] == "run" {
            cold_run = run.stdout.clone();
        }
    }
    assert!(!server.keys(BUCKET, "shared/gocacher/v1/").is_empty());

    let b = a.new_machine();
    for args in [
        &["build", "./..."][..],
        &["test", "./..."],
        &["run", "./cmd/fixture"],
    ] {
        let run = b.go(dir, args);
        run.assert_ok();
        run.assert_warm();
        let s = &run.stats;
        assert!(s.remote_hits + s.prefetch_hits > 0, "{args:?}: {s:?}");
        assert_eq!(s.corrupt + s.remote_errors, 0, "{args:?}: {s:?}");
        match args[0] {
            "test" => {
                for line in run.stdout.lines().filter(|l| l.starts_with("ok")) {
                    assert!(line.ends_with("(cached)"), "test ran again: {line}");
                }
            }
            "run" => assert_eq!(run.stdout, cold_run),
            _ => {}
        }
    }
    // A new machine has nothing locally: all its hits come from the bucket,
    // prefetched or fetched on demand.
    let first = b.new_machine().go(dir, &["build", "./..."]);
    first.assert_ok();
    let s = &first.stats;
    assert_eq!(s.remote_hits + s.prefetch_hits, s.hits, "{s:?}");
    assert_eq!(first.stats.hits + first.stats.misses, first.stats.gets);
}

/// Objects whose bytes were damaged (metadata kept) are detected, counted and
/// never served; the build rebuilds and is correct.
fn corrupt_objects_are_never_served(kind: Kind) {
    let server = started(kind);
    let a = machine(&server, "corrupt", &[]);
    let module = support::fixture_copy();
    let expected = a.go(module.path(), &["run", "./cmd/fixture"]);
    expected.assert_ok();
    // The objects themselves are under test here, not the pack (see
    // packs_serve_prefetch_and_damage_is_survived).
    server.delete(BUCKET, &server.pack_keys(BUCKET, "corrupt/"));
    let damaged = server.corrupt_all(BUCKET, "corrupt/");
    assert!(damaged > 10, "only {damaged} objects damaged");
    let intact = server.entry_keys(BUCKET, "corrupt/").len() - damaged;

    let b = a.new_machine();
    let run = b.go(module.path(), &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(
        run.stdout, expected.stdout,
        "a corrupt object changed the program"
    );
    let s = &run.stats;
    assert!(s.corrupt >= damaged as u64 / 2, "{damaged} damaged, {s:?}");
    // Only the empty outputs (left intact) may come from the bucket.
    assert!(
        s.remote_hits + s.prefetch_hits <= intact as u64,
        "{intact} intact objects, {s:?}"
    );
    assert_eq!(
        gocacher_lines(&run).len(),
        1,
        "one line for corruption:\n{}",
        run.stderr
    );
    // The machine that rebuilt the damaged entries replaced their objects.
    assert!(s.healed > 0, "nothing healed: {s:?}");
    assert_eq!(
        s.healed, s.corrupt,
        "every corrupt object it rebuilt: {s:?}"
    );
    assert_eq!(s.upload_errors, 0, "{s:?}");

    // A third machine, without prefetch (so only the objects themselves are
    // read), finds nothing corrupt and the same program.
    let c = machine(&server, "corrupt", &["--prefetch-concurrency", "0"]);
    let run = c.go(module.path(), &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(run.stdout, expected.stdout);
    let s = &run.stats;
    assert_eq!(s.corrupt, 0, "objects still corrupt after healing: {s:?}");
    assert!(s.remote_hits > 0, "{s:?}");
}

/// The server dies in the middle of a cold build: the build succeeds, and
/// takes about as long as without a bucket.
fn server_killed_mid_build(kind: Kind) {
    let module = support::fixture_copy();
    let started_local = Instant::now();
    GoEnv::new(Toolchain::Local)
        .go(module.path(), &["build", "./..."])
        .assert_ok();
    let local = started_local.elapsed();

    let mut server = started(kind);
    let a = machine(&server, "killed", &[]);
    let dir = module.path().to_path_buf();
    let start = Instant::now();
    let build = thread::spawn(move || a.go(&dir, &["build", "./..."]));
    thread::sleep(Duration::from_secs(2));
    server.kill();
    let run = build.join().unwrap();
    let took = start.elapsed();
    run.assert_ok();
    let s = &run.stats;
    assert_eq!(s.put_errors, 0, "{s:?}");
    assert!(
        s.remote_errors + s.upload_errors + s.uploads_dropped > 0,
        "the outage went unnoticed: {s:?}"
    );
    assert!(
        took < local + Duration::from_secs(30),
        "build took {took:?} with the bucket dying, {local:?} without one"
    );
}

/// Wrong credentials (MinIO checks them; LocalStack accepts any), a missing
/// bucket and an unreachable endpoint: the build succeeds and gocacher says
/// what is wrong in one line.
fn misconfigured_bucket_is_one_clear_line(kind: Kind) {
    let server = started(kind);
    let module = support::fixture_copy();
    let mut cases = vec![
        (
            GoEnv::new(Toolchain::Local)
                .with_flags(&["--remote", "s3://no-such-bucket/x"])
                .with_env(server.env()),
            "does not exist",
        ),
        (
            GoEnv::new(Toolchain::Local)
                .with_flags(&[
                    "--remote",
                    &format!("s3://{BUCKET}/x"),
                    "--s3-endpoint",
                    "http://127.0.0.1:9",
                ])
                .with_env(server.env()),
            "failures in a row",
        ),
    ];
    if kind == Kind::Minio {
        cases.push((
            GoEnv::new(Toolchain::Local)
                .with_flags(&["--remote", &format!("s3://{BUCKET}/x")])
                .with_env(server.env_with_secret("not-the-secret")),
            "credentials were refused",
        ));
    }
    for (env, phrase) in cases {
        let start = Instant::now();
        let run = env.go(module.path(), &["build", "./internal/..."]);
        run.assert_ok();
        let lines = gocacher_lines(&run);
        assert_eq!(
            lines.len(),
            1,
            "expected one line with {phrase:?}:\n{}",
            run.stderr
        );
        assert!(lines[0].contains(phrase), "{:?} lacks {phrase:?}", lines[0]);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "took {:?}",
            start.elapsed()
        );
        assert!(
            run.stats.puts > 0 && run.stats.put_errors == 0,
            "{:?}",
            run.stats
        );
    }
}

/// --read-only reads the bucket and never writes it.
fn read_only_uploads_nothing(kind: Kind) {
    let server = started(kind);
    let module = support::fixture_copy();
    let ro = machine(&server, "ro", &["--read-only"]);
    let run = ro.go(module.path(), &["build", "./..."]);
    run.assert_ok();
    assert!(run.stats.puts > 0);
    assert_eq!(run.stats.uploads, 0, "{:?}", run.stats);
    assert!(
        server.keys(BUCKET, "ro/").is_empty(),
        "read-only wrote objects"
    );

    // Filled by a writer, read by a read-only machine.
    let writer = machine(&server, "ro", &[]);
    writer
        .go(module.path(), &["build", "./internal/..."])
        .assert_ok();
    let objects = server.keys(BUCKET, "ro/").len();
    let reader = ro.new_machine();
    let run = reader.go(module.path(), &["build", "./..."]);
    run.assert_ok();
    assert!(
        run.stats.remote_hits + run.stats.prefetch_hits > 0,
        "{:?}",
        run.stats
    );
    assert_eq!(
        server.keys(BUCKET, "ro/").len(),
        objects,
        "read-only wrote objects"
    );
}

/// Two machines build the same actions at the same moment into one bucket;
/// a third then finds everything.
fn two_machines_write_at_once(kind: Kind) {
    let server = started(kind);
    let module = support::fixture_copy();
    let a = machine(&server, "race", &[]);
    let b = a.new_machine();
    let runs: Vec<_> = [a.clone(), b]
        .into_iter()
        .map(|m| {
            let dir = module.path().to_path_buf();
            thread::spawn(move || m.go(&dir, &["build", "./..."]))
        })
        .collect();
    for r in runs {
        let run = r.join().unwrap();
        run.assert_ok();
        assert_eq!(
            run.stats.upload_errors + run.stats.put_errors,
            0,
            "{:?}",
            run.stats
        );
    }
    let c = a.new_machine();
    let run = c.go(module.path(), &["build", "./..."]);
    run.assert_ok();
    run.assert_warm();
    let s = &run.stats;
    assert_eq!(s.remote_hits + s.prefetch_hits, s.hits, "{s:?}");
}

/// `gocacher check` walks every step against a good bucket and stops with
/// the reason at the first failing step of a bad one.
fn check_command_reports_each_step(kind: Kind) {
    let server = started(kind);
    let check = |bucket: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gocacher"))
            .args(["check", "--remote", &format!("s3://{bucket}/probe")])
            .envs(server.env())
            .output()
            .unwrap()
    };
    let good = check(BUCKET);
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    for step in ["credentials", "bucket", "write", "read", "delete"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(step) && l.contains(" ok ") && l.contains(" ms")),
            "no ok line with latency for {step}:\n{out}"
        );
    }
    assert!(
        server.keys(BUCKET, "probe/").is_empty(),
        "the probe object was left behind"
    );

    let bad = check("no-such-bucket");
    let out = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("bucket") && l.contains("FAILED")),
        "{out}"
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.starts_with("gocacher: bucket:"), "{err}");
}

/// `gocacher check` with no credentials anywhere says in one line what to
/// set, without the SDK's debug dump; `--verbose` never shows an endpoint's
/// password.
fn no_credentials_and_endpoint_secrets(kind: Kind) {
    let server = started(kind);
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gocacher"))
        .args(["check", "--remote", &format!("s3://{BUCKET}/probe")])
        .envs(server.env())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("HOME", home.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("gocacher: credentials:"), "{err}");
    assert!(lines[0].contains("AWS_ACCESS_KEY_ID"), "{err}");
    for dump in ["ProviderError", "{", "source:"] {
        assert!(!lines[0].contains(dump), "debug dump in {err}");
    }

    // An endpoint with user:password in it is never printed as such.
    let endpoint = server
        .env()
        .into_iter()
        .find(|(k, _)| k == "AWS_ENDPOINT_URL_S3")
        .unwrap()
        .1;
    let with_secret = endpoint.replacen("://", "://someone:hunter2@", 1);
    let env = machine(
        &server,
        "secret",
        &["--verbose", "--s3-endpoint", &with_secret],
    );
    let module = support::fixture_copy();
    let run = env.go(module.path(), &["build", "./internal/mathx"]);
    run.assert_ok();
    assert!(run.stderr.contains("***@"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

macro_rules! on_both_servers {
    ($($scenario:ident),* $(,)?) => {
        mod minio {
            $(#[test] fn $scenario() { super::$scenario(super::Kind::Minio) })*
        }
        mod localstack {
            $(#[test] fn $scenario() { super::$scenario(super::Kind::LocalStack) })*
        }
    };
}

// The scenarios whose S3 calls differ between servers (listing, ranges,
// conditional puts, errors and their codes) run on both.
on_both_servers!(
    cold_fills_bucket_then_fresh_machine_hits,
    corrupt_objects_are_never_served,
    misconfigured_bucket_is_one_clear_line,
    read_only_uploads_nothing,
    check_command_reports_each_step,
    second_build_in_scope_is_prefetched,
    packs_serve_prefetch_and_damage_is_survived,
    warm_disks_read_only_the_table,
    no_credentials_and_endpoint_secrets,
);

// A server killed or cut off, writers racing and manifests damaged test
// what gocacher does when the server fails, with the same calls as the
// scenarios above: on MinIO.
mod minio_faults {
    #[test]
    fn server_killed_mid_build() {
        super::server_killed_mid_build(super::Kind::Minio)
    }
    #[test]
    fn two_machines_write_at_once() {
        super::two_machines_write_at_once(super::Kind::Minio)
    }
    #[test]
    fn broken_manifests_leave_builds_correct() {
        super::broken_manifests_leave_builds_correct(super::Kind::Minio)
    }
    #[test]
    fn bucket_outage_during_prefetch() {
        super::bucket_outage_during_prefetch(super::Kind::Minio)
    }
}

// Signing and --also-read: on MinIO (the S3 metadata and prefixes they use
// are the same calls the scenarios above run on both servers).
mod minio_trust {
    #[test]
    fn only_trusted_writers_feed_a_build() {
        super::only_trusted_writers_feed_a_build(super::Kind::Minio)
    }
    #[test]
    fn swapped_signed_objects_are_refused() {
        super::swapped_signed_objects_are_refused(super::Kind::Minio)
    }
    #[test]
    fn forged_pack_is_replaced_by_the_next_trusted_run() {
        super::forged_pack_is_replaced_by_the_next_trusted_run(super::Kind::Minio)
    }
    #[test]
    fn pull_requests_read_main_and_write_their_own_prefix() {
        super::pull_requests_read_main_and_write_their_own_prefix(super::Kind::Minio)
    }
    #[test]
    fn either_of_two_trusted_keys() {
        super::either_of_two_trusted_keys(super::Kind::Minio)
    }
    #[test]
    fn signed_pack_under_another_scope_is_refused() {
        super::signed_pack_under_another_scope_is_refused(super::Kind::Minio)
    }
    #[test]
    fn also_read_falls_through_bad_copies() {
        super::also_read_falls_through_bad_copies(super::Kind::Minio)
    }
}
