//! Soak: many go commands at once on one cache dir and one bucket, round
//! after round, with a forced trim racing them each round. The suite runs a
//! short soak (`GOCACHER_SOAK_ROUNDS`, default 2); `integration/soak.sh`
//! runs the full one (30 rounds).
//!
//! Each round: every file in the cache dir is made 3 days old (as if the
//! machine had sat idle), one fixture source changes (so some actions are
//! new), then 8 go commands and a `gocacher trim --max-size 5MB` start at
//! once. Asserted: no go command fails or prints a wrong program output,
//! every put is accounted for in its stats (uploaded, known to the bucket,
//! dropped or failed), no temp file is left, and peak RSS stays flat.

mod support;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use support::s3server::{Kind, S3Server};
use support::{GoEnv, Toolchain};

const BUCKET: &str = "gocacher-soak";
const AT_ONCE: usize = 8;

fn rounds() -> usize {
    std::env::var("GOCACHER_SOAK_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("GOCACHER_SOAK_ROUNDS is a number"))
        .unwrap_or(2)
}

/// Sets every file's mtime under `dir` to `age` ago.
fn age_all(dir: &std::path::Path, age: Duration) {
    let when = SystemTime::now() - age;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            age_all(&p, age);
        } else if let Ok(f) = std::fs::File::options().write(true).open(&p) {
            let _ = f.set_modified(when);
        }
    }
}

fn edit_source(dir: &std::path::Path, round: usize) {
    let path = dir.join("internal/textx/textx.go");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\nvar soakRound{round} = {round}\n"));
    std::fs::write(&path, text).unwrap();
}

#[test]
fn many_go_commands_and_trims_on_one_cache_dir() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let remote = format!("s3://{BUCKET}/soak");
    let base = GoEnv::new(Toolchain::Local)
        .with_flags(&["--remote", &remote])
        .with_env(server.env())
        .without_transcript();
    let module = support::fixture_copy();
    let dir = module.path().to_path_buf();
    let expected = base.go(&dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();
    let commands: [&[&str]; 4] = [
        &["build", "./..."],
        &["vet", "./..."],
        &["test", "./..."],
        &["run", "./cmd/fixture"],
    ];
    let mut rss_by_round = Vec::new();
    for round in 0..rounds() {
        let started = Instant::now();
        age_all(base.cache_dir(), Duration::from_secs(3 * 86400));
        edit_source(&dir, round);
        let cache_dir = base.cache_dir().to_path_buf();
        let trim = thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_gocacher"))
                .args([
                    "trim",
                    "--max-size",
                    "5MB",
                    "--trim-age",
                    "1d",
                    "--cache-dir",
                ])
                .arg(&cache_dir)
                .output()
                .unwrap()
        });
        let runs: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let (env, dir) = (base.fresh_gocache(), dir.clone());
                let args = commands[i % commands.len()];
                thread::spawn(move || env.go(&dir, args))
            })
            .collect();
        let mut peak = 0;
        for r in runs {
            let run = r.join().unwrap();
            run.assert_ok();
            let s = &run.stats;
            if run.args[0] == "run" {
                assert_eq!(run.stdout, expected.stdout, "round {round}");
            }
            assert_eq!(
                s.puts - s.put_errors,
                s.uploads + s.uploads_skipped + s.uploads_dropped + s.upload_errors,
                "round {round} {:?}: a put unaccounted for: {s:?}",
                run.args
            );
            assert_eq!(s.get_errors + s.put_errors + s.corrupt, 0, "{s:?}");
            peak = peak.max(s.peak_rss_bytes);
        }
        let trimmed = trim.join().unwrap();
        assert!(
            trimmed.status.success(),
            "{}",
            String::from_utf8_lossy(&trimmed.stderr)
        );
        support::assert_no_temp_files(base.cache_dir());
        println!(
            "round {round}: {:.1} s, peak RSS {:.1} MB; {}",
            started.elapsed().as_secs_f64(),
            peak as f64 / 1e6,
            String::from_utf8_lossy(&trimmed.stdout).trim()
        );
        rss_by_round.push(peak);
    }
    let first = rss_by_round[0];
    let last = *rss_by_round.last().unwrap();
    assert!(
        last <= first + first / 2,
        "peak RSS grew from {first} to {last} bytes: {rss_by_round:?}"
    );
}
