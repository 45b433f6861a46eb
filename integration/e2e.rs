//! End-to-end: the real `go` command runs gocacher as its GOCACHEPROG on the
//! fixture module (integration/fixture) and on the standard library.
//!
//! Every go command gets a fresh GOCACHE unless a test says otherwise, so a
//! warm run's hits can only come from gocacher's own cache dir.

mod support;

use std::collections::BTreeMap;
use std::thread;

use support::{GoEnv, Toolchain};

/// Cold then warm through one cache dir: build, test, vet and run the fixture.
fn cold_then_warm(toolchain: Toolchain) {
    let env = GoEnv::new(toolchain);
    let module = support::fixture_copy();
    let dir = module.path();
    let steps: [&[&str]; 4] = [
        &["build", "./..."],
        &["test", "./..."],
        &["vet", "./..."],
        &["run", "./cmd/fixture"],
    ];

    let mut cold_out = BTreeMap::new();
    for args in steps {
        let run = env.go(dir, args);
        run.assert_ok();
        assert!(
            run.stats.puts > 0 || args[0] == "vet",
            "{args:?} stored nothing: {:?}",
            run.stats
        );
        assert_eq!(run.stats.put_errors, 0, "{args:?}: {:?}", run.stats);
        cold_out.insert(args[0], run.stdout.clone());
    }
    assert!(
        cold_out["test"].contains("ok  \texample.com/fixture/cgox"),
        "{}",
        cold_out["test"]
    );
    assert!(
        !cold_out["test"].contains("(cached)"),
        "cold test was cached: {}",
        cold_out["test"]
    );
    assert!(
        cold_out["run"].contains("cgo add=42"),
        "{}",
        cold_out["run"]
    );

    for args in steps {
        let run = env.fresh_gocache().go(dir, args);
        run.assert_ok();
        run.assert_warm();
        match args[0] {
            "test" => {
                for line in run.stdout.lines().filter(|l| l.starts_with("ok")) {
                    assert!(line.ends_with("(cached)"), "warm test ran again: {line}");
                }
            }
            "build" | "vet" | "run" => assert_eq!(run.stdout, cold_out[args[0]], "{args:?}"),
            _ => unreachable!(),
        }
    }
}

#[test]
fn fixture_cold_then_warm_on_machine_go() {
    cold_then_warm(Toolchain::Local);
}

#[test]
fn fixture_cold_then_warm_on_go_1_24_0() {
    cold_then_warm(Toolchain::Go1_24_0);
}

#[test]
fn fixture_cold_then_warm_on_go_1_25_0() {
    cold_then_warm(Toolchain::Go1_25_0);
}

#[test]
fn fixture_cold_then_warm_on_go_1_27_3() {
    cold_then_warm(Toolchain::Go1_27_3);
}

#[test]
fn two_go_commands_at_once_share_one_cache_dir() {
    let env = GoEnv::new(Toolchain::Local);
    let module = support::fixture_copy();
    let dir = module.path().to_path_buf();
    // Same actions from two processes at once, each with its own gocacher.
    let runs: Vec<_> = [["build", "./..."], ["test", "./..."], ["build", "./..."]]
        .into_iter()
        .map(|args| {
            let env = env.fresh_gocache();
            let dir = dir.clone();
            thread::spawn(move || env.go(&dir, &args))
        })
        .collect();
    for r in runs {
        let run = r.join().unwrap();
        run.assert_ok();
        assert_eq!(
            run.stats.put_errors + run.stats.get_errors,
            0,
            "{:?}",
            run.stats
        );
    }
    let warm = env.fresh_gocache().go(&dir, &["test", "./..."]);
    warm.assert_ok();
    warm.assert_warm();
    assert!(warm.stdout.contains("(cached)"), "{}", warm.stdout);
    support::assert_no_temp_files(env.cache_dir());
}

#[test]
fn go_build_std_cold_then_warm() {
    let env = GoEnv::new(Toolchain::Local);
    let work = tempfile::tempdir().unwrap();
    let cold = env.go(work.path(), &["build", "std"]);
    cold.assert_ok();
    assert!(cold.stats.puts > 500, "{:?}", cold.stats);
    assert_eq!(cold.stats.put_errors, 0);
    let warm = env.fresh_gocache().go(work.path(), &["build", "std"]);
    warm.assert_ok();
    assert!(warm.stats.gets > 500, "{:?}", warm.stats);
    // The standard library has no cgo link markers: every get hits.
    assert_eq!(warm.stats.misses, 0, "{:?}", warm.stats);
    assert_eq!(warm.stats.hits, warm.stats.gets);
    assert_eq!(
        warm.stats.puts, 0,
        "a warm build rebuilt something: {:?}",
        warm.stats
    );
}

#[test]
fn verbose_prints_the_summary_line_and_quiet_prints_nothing() {
    let env = GoEnv::new(Toolchain::Local);
    let module = support::fixture_copy();
    let quiet = env.go(module.path(), &["build", "./internal/..."]);
    quiet.assert_ok();
    assert_eq!(
        quiet.stderr, "",
        "gocacher must be silent without --verbose"
    );
    let loud = env
        .fresh_gocache()
        .with_flags(&["--verbose"])
        .go(module.path(), &["build", "./internal/..."]);
    loud.assert_ok();
    let s = &loud.stats;
    let line = format!(
        "gocacher: closing; {} gets ({} hits, {} misses, {} errors); {} puts ({} errors)",
        s.gets, s.hits, s.misses, s.get_errors, s.puts, s.put_errors
    );
    assert!(
        loud.stderr.contains(&line),
        "{:?} lacks {line:?}",
        loud.stderr
    );
}

#[test]
fn bad_flag_fails_the_start_with_one_line_reason() {
    // No transcript here: the tee in front of gocacher would keep cmd/go's
    // stdin open after gocacher exits, and cmd/go would wait forever.
    let env = GoEnv::new(Toolchain::Local)
        .with_flags(&["--trim-age", "1h"])
        .without_transcript()
        .without_stats();
    let module = support::fixture_copy();
    let run = env.go(module.path(), &["build", "./internal/mathx"]);
    assert!(
        !run.status.success(),
        "go should fail when GOCACHEPROG cannot start"
    );
    let ours: Vec<_> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("gocacher:"))
        .collect();
    assert_eq!(ours.len(), 1, "{}", run.stderr);
    assert!(ours[0].contains("1-day minimum"), "{}", ours[0]);
}

fn gocacher_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("gocacher:"))
        .collect()
}

/// Runs a command that must succeed (mount, umount), with its output on
/// failure: a test that needs a mount fails, never skips, without one.
fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed (these tests run as root, as CI does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts when dropped, so a failing test leaves no mount behind.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Appends a line to a fixture source file, so the next build compiles (and
/// puts) something new.
fn touch_source(dir: &std::path::Path, n: usize) {
    let path = dir.join("internal/mathx/mathx.go");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\nvar edited{n} = {n}\n"));
    std::fs::write(&path, text).unwrap();
}

/// A warm cache dir mounted read-only: hits are served, the build succeeds,
/// puts are answered with errors and counted, and gocacher says so once.
#[test]
fn read_only_cache_dir_serves_hits() {
    let env = GoEnv::new(Toolchain::Local);
    let module = support::fixture_copy();
    let dir = module.path();
    env.go(dir, &["build", "./..."]).assert_ok();
    let cache = env.cache_dir().to_path_buf();
    let mount = cache.to_str().unwrap();
    sh(&["mount", "--bind", mount, mount]);
    let _guard = Mounted(cache.clone());
    sh(&["mount", "-o", "remount,ro,bind", mount]);

    let warm = env.fresh_gocache().go(dir, &["build", "./..."]);
    warm.assert_ok();
    warm.assert_warm();
    touch_source(dir, 1);
    let edited = env.fresh_gocache().go(dir, &["build", "./..."]);
    edited.assert_ok();
    let s = &edited.stats;
    assert!(s.hits > 0, "{s:?}");
    // cmd/go fails `go build ./...` on a put error, so puts are served
    // from a temp dir instead, and counted.
    assert!(s.puts > 0 && s.puts_not_kept == s.puts, "{s:?}");
    assert_eq!(s.put_errors, 0, "{s:?}");
    let lines = gocacher_lines(&edited.stderr);
    assert_eq!(lines.len(), 1, "{}", edited.stderr);
    assert!(lines[0].contains("cannot be written"), "{}", lines[0]);
}

/// A cache dir on a 5 MB filesystem fills up during a cold build: the build
/// succeeds, failed puts are counted, one line says why, no temp file is
/// left, and the next build still succeeds and uses what was stored.
#[test]
fn full_cache_dir_never_fails_the_build() {
    let env = GoEnv::new(Toolchain::Local);
    let small = env.root().join("small");
    std::fs::create_dir_all(&small).unwrap();
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=5m",
        "tmpfs",
        small.to_str().unwrap(),
    ]);
    let _guard = Mounted(small.clone());
    let env = env.with_cache_dir(&small.join("cache"));
    let module = support::fixture_copy();
    let dir = module.path();
    for args in [&["build", "./..."][..], &["test", "./..."]] {
        let run = env.fresh_gocache().go(dir, args);
        run.assert_ok();
        let s = &run.stats;
        assert!(
            s.puts_not_kept > 0,
            "{args:?}: the disk never filled: {s:?}"
        );
        assert_eq!(s.put_errors, 0, "{args:?}: {s:?}");
        let lines = gocacher_lines(&run.stderr);
        assert_eq!(lines.len(), 1, "{args:?}:\n{}", run.stderr);
        assert!(
            lines[0].contains("full") || lines[0].contains("No space left"),
            "{}",
            lines[0]
        );
        support::assert_no_temp_files(env.cache_dir());
    }
    let again = env.fresh_gocache().go(dir, &["build", "./..."]);
    again.assert_ok();
    assert!(again.stats.hits > 0, "{:?}", again.stats);
}
