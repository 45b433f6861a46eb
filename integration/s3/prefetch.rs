//! The bucket scenarios of build manifests and prefetch (run on both servers
//! by the macro in `s3.rs`).

use std::thread;
use std::time::{Duration, Instant};

use super::support;
use super::support::s3server::Kind;
use super::{gocacher_lines, machine, started, BUCKET};

/// The second go command in a scope finds the first one's manifest and is
/// served from prefetched entries; a pull request's scope falls back to its
/// base branch's manifest.
pub fn second_build_in_scope_is_prefetched(kind: Kind) {
    let server = started(kind);
    let module = support::fixture_copy();
    let dir = module.path();
    // Default scope: the same directory, platform and subcommand.
    let a = machine(&server, "pf", &[]);
    let cold = a.go(dir, &["build", "./..."]);
    cold.assert_ok();
    assert_eq!(cold.stats.prefetched, 0, "{:?}", cold.stats);
    assert_eq!(
        server.manifest_keys(BUCKET, "pf/").len(),
        1,
        "one manifest for the scope"
    );

    let b = a.new_machine();
    let run = b.go(dir, &["build", "./..."]);
    run.assert_ok();
    run.assert_warm();
    let s = &run.stats;
    assert!(s.prefetched > 0, "{s:?}");
    assert!(
        s.prefetch_hits * 2 >= s.hits,
        "most hits should be prefetched: {s:?}"
    );
    assert_eq!(s.prefetch_hits + s.remote_hits, s.hits, "{s:?}");
    assert!(
        s.prefetch_unused_bytes * 10 <= s.bytes_read,
        "over 10% of prefetched bytes unused: {s:?}"
    );
    assert_eq!(s.corrupt + s.remote_errors, 0, "{s:?}");

    // The same again with prefetch off: every hit is fetched on demand.
    let off = a.new_machine().with_flags(&[
        "--remote",
        "s3://gocacher-test/pf",
        "--prefetch-concurrency",
        "0",
    ]);
    let run = off.go(dir, &["build", "./..."]);
    run.assert_ok();
    assert_eq!(
        run.stats.prefetched + run.stats.prefetch_hits,
        0,
        "{:?}",
        run.stats
    );
    assert_eq!(run.stats.remote_hits, run.stats.hits, "{:?}", run.stats);

    // Named scopes: a pull request with nothing of its own yet falls back
    // to main's manifest, then writes its own.
    let main = machine(&server, "named", &["--scope", "main"]);
    main.go(dir, &["build", "./..."]).assert_ok();
    let pr = machine(
        &server,
        "named",
        &["--scope", "pr-7", "--scope-fallback", "none,main"],
    );
    let run = pr.go(dir, &["build", "./..."]);
    run.assert_ok();
    run.assert_warm();
    assert!(run.stats.prefetch_hits > 0, "{:?}", run.stats);
    assert_eq!(server.manifest_keys(BUCKET, "named/").len(), 2);
}

/// A damaged manifest, a manifest whose objects are gone, and one whose
/// objects are corrupt: each build is correct, and the first is one line.
pub fn broken_manifests_leave_builds_correct(kind: Kind) {
    let server = started(kind);
    let module = support::fixture_copy();
    let dir = module.path();
    let a = machine(&server, "broken", &["--scope", "s"]);
    let expected = a.go(dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();
    let manifests = server.manifest_keys(BUCKET, "broken/");
    assert_eq!(manifests.len(), 1);

    // Garbage where the manifest was: no prefetch, lazy gets, one line.
    server.put_raw(BUCKET, &manifests[0], b"not a manifest".to_vec());
    let run = a.new_machine().go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(run.stdout, expected.stdout);
    assert_eq!(run.stats.prefetched, 0, "{:?}", run.stats);
    assert!(run.stats.remote_hits > 0, "{:?}", run.stats);
    let lines = gocacher_lines(&run);
    assert!(
        lines.len() == 1 && lines[0].contains("manifest") && lines[0].contains("unreadable"),
        "expected one line about the manifest:\n{}",
        run.stderr
    );
    // That run replaced it with a good one.
    let run = a.new_machine().go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert!(run.stats.prefetched > 0, "{:?}", run.stats);
    assert!(gocacher_lines(&run).is_empty(), "{}", run.stderr);

    // Corrupt objects behind a good manifest (and no pack): never served.
    server.delete(BUCKET, &server.pack_keys(BUCKET, "broken/"));
    let damaged = server.corrupt_all(BUCKET, "broken/");
    assert!(damaged > 10);
    let run = a.new_machine().go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(
        run.stdout, expected.stdout,
        "a corrupt object changed the program"
    );
    assert!(run.stats.corrupt > 0, "{:?}", run.stats);

    // Objects and pack gone, manifest kept: the build rebuilds what is
    // missing.
    server.delete(BUCKET, &server.entry_keys(BUCKET, "broken/"));
    server.delete(BUCKET, &server.pack_keys(BUCKET, "broken/"));
    let run = a.new_machine().go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(run.stdout, expected.stdout);
    let s = &run.stats;
    assert_eq!(s.prefetched + s.hits, 0, "{s:?}");
    assert!(s.puts > 0 && s.put_errors == 0, "{s:?}");
}

/// A scope's first go command writes its pack; the next, on an empty
/// machine, is served from it (one GET for most entries) and rewrites it
/// without the entries cmd/go only put; the one after leaves it as is. A
/// pack with a damaged body, a truncated one and garbage in its place each
/// leave the build correct: what the pack cannot deliver comes one by one,
/// and the run writes a good pack again.
pub fn packs_serve_prefetch_and_damage_is_survived(kind: Kind) {
    let server = started(kind);
    let module = support::fixture_copy();
    let dir = module.path();
    let a = machine(&server, "packs", &["--scope", "s"]);
    let expected = a.go(dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();
    assert_eq!(expected.stats.packs_written, 1, "{:?}", expected.stats);
    let packs = server.pack_keys(BUCKET, "packs/");
    assert_eq!(packs.len(), 1, "one pack for the scope");
    let cold_pack = server.get_raw(BUCKET, &packs[0]);

    for warm in 1..=2 {
        let run = a.new_machine().go(dir, &["run", "./cmd/fixture"]);
        run.assert_ok();
        assert_eq!(run.stdout, expected.stdout);
        let s = &run.stats;
        assert!(
            s.pack_prefetched * 10 >= s.hits * 9,
            "warm run {warm}: nine in ten hits should come from the pack: {s:?}"
        );
        assert_eq!(s.prefetch_hits + s.remote_hits, s.hits, "{s:?}");
        // Only the gets that came before the pack's table arrived (how
        // many depends on timing) are downloaded on their own.
        assert!(s.remote_hits * 10 <= s.hits, "{s:?}");
        assert_eq!(s.corrupt + s.remote_errors, 0, "{s:?}");
        assert_eq!(
            s.packs_written,
            (warm == 1) as u64,
            "warm run {warm}: {s:?}"
        );
        assert!(gocacher_lines(&run).is_empty(), "{}", run.stderr);
    }
    let good = server.get_raw(BUCKET, &packs[0]);
    assert!(
        good.len() < cold_pack.len(),
        "put-only entries should be gone"
    );

    // One body damaged (a byte near the end), the pack cut in half, and
    // garbage: each run is correct, says so in one line, and rewrites it.
    let mut flipped = good.clone();
    let at = flipped.len() - 40;
    flipped[at] ^= 0x5A;
    let cut = good[..good.len() / 2].to_vec();
    for (what, bad) in [
        ("flipped", flipped),
        ("cut", cut),
        ("garbage", b"not a pack".to_vec()),
    ] {
        server.put_raw(BUCKET, &packs[0], bad);
        let run = a.new_machine().go(dir, &["run", "./cmd/fixture"]);
        run.assert_ok();
        assert_eq!(run.stdout, expected.stdout, "{what}");
        let s = &run.stats;
        assert!(s.corrupt >= 1, "{what}: {s:?}");
        assert_eq!(s.remote_errors, 0, "{what}: {s:?}");
        assert_eq!(s.prefetch_hits + s.remote_hits, s.hits, "{what}: {s:?}");
        assert!(
            s.prefetched * 10 >= s.hits * 9,
            "{what}: what the pack lacks should still be prefetched: {s:?}"
        );
        assert_eq!(s.packs_written, 1, "{what}: {s:?}");
        let lines = gocacher_lines(&run);
        assert!(
            lines.len() == 1 && lines[0].contains("pack"),
            "{what}: expected one line about the pack:\n{}",
            run.stderr
        );
        let now = server.get_raw(BUCKET, &packs[0]);
        assert!(
            now.starts_with(b"gocacher-pack 2\n") && now.len() * 2 > good.len(),
            "{what}: not rewritten"
        );
    }
    // The last rewrite serves the next machine as the first pack did.
    let last = a.new_machine();
    let run = last.go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    let s = &run.stats;
    assert!(s.pack_prefetched * 10 >= s.hits * 9, "{s:?}");
    assert_eq!(s.packs_written + s.corrupt, 0, "{s:?}");

    // Pack entries get no -a file each: one index file lists them, and a
    // later go command on that machine, with no bucket at all, hits them.
    let action_files = files_under(last.cache_dir())
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("-a"))
        .count() as u64;
    assert!(
        action_files <= s.remote_hits + s.puts,
        "{action_files} -a files for {s:?}"
    );
    let indexes = files_under(&last.cache_dir().join("ix"));
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    let local = last
        .fresh_gocache()
        .with_flags(&[])
        .go(dir, &["run", "./cmd/fixture"]);
    local.assert_ok();
    assert_eq!(local.stdout, expected.stdout);
    let l = &local.stats;
    assert!(
        l.hits >= s.hits && l.misses <= s.misses,
        "{l:?} after {s:?}"
    );
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The bucket goes away while the prefetch runs: the build still succeeds,
/// with the right output, in about the time of a cold build.
pub fn bucket_outage_during_prefetch(kind: Kind) {
    let module = support::fixture_copy();
    let mut server = started(kind);
    let a = machine(&server, "outage", &["--scope", "s"]);
    let expected = a.go(module.path(), &["run", "./cmd/fixture"]);
    expected.assert_ok();

    let b = a.new_machine();
    let dir = module.path().to_path_buf();
    let start = Instant::now();
    let build = thread::spawn(move || b.go(&dir, &["run", "./cmd/fixture"]));
    thread::sleep(Duration::from_millis(150));
    server.kill();
    let run = build.join().unwrap();
    run.assert_ok();
    assert_eq!(run.stdout, expected.stdout);
    assert_eq!(
        run.stats.put_errors + run.stats.get_errors,
        0,
        "{:?}",
        run.stats
    );
    assert!(
        start.elapsed() < Duration::from_secs(90),
        "took {:?}",
        start.elapsed()
    );
}

/// A machine whose disk already holds a scope's entries pays nothing for
/// the bucket: it reads the manifest and the pack's table, not the pack. A
/// disk that lacks a few entries downloads those alone; one that lacks most
/// of the pack streams the rest of it.
pub fn warm_disks_read_only_the_table(kind: Kind) {
    let server = started(kind);
    let module = support::fixture_copy();
    let dir = module.path();
    let a = machine(&server, "warm", &["--scope", "w"]);
    let expected = a.go(dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();
    // A second machine settles the scope (its manifest and pack then list
    // what a warm run uses) and keeps its disk.
    let b = a.new_machine();
    let settle = b.go(dir, &["run", "./cmd/fixture"]);
    settle.assert_ok();
    assert!(settle.stats.pack_prefetched > 0, "{:?}", settle.stats);
    let full_pack = server.get_raw(BUCKET, &server.pack_keys(BUCKET, "warm/")[0]);

    let warm = b.fresh_gocache().go(dir, &["run", "./cmd/fixture"]);
    warm.assert_ok();
    assert_eq!(warm.stdout, expected.stdout);
    let s = &warm.stats;
    assert_eq!(s.prefetched + s.pack_prefetched + s.remote_hits, 0, "{s:?}");
    assert_eq!(s.corrupt + s.remote_errors + s.packs_written, 0, "{s:?}");
    assert!(
        s.bytes_downloaded < 1 << 20 && s.bytes_downloaded * 4 < full_pack.len() as u64,
        "a warm disk downloaded {} bytes (the pack is {})",
        s.bytes_downloaded,
        full_pack.len()
    );
    assert!(gocacher_lines(&warm).is_empty(), "{}", warm.stderr);

    // Two outputs the warm run was served gone: those come back on their
    // own, not with the pack.
    let served = served_paths(&b);
    assert!(served.len() > 10, "{served:?}");
    for p in served.iter().take(2) {
        std::fs::remove_file(p).unwrap();
    }
    let few = b.fresh_gocache().go(dir, &["run", "./cmd/fixture"]);
    few.assert_ok();
    assert_eq!(few.stdout, expected.stdout);
    let s = &few.stats;
    assert_eq!(s.pack_prefetched, 0, "{s:?}");
    assert!(s.prefetched + s.remote_hits >= 2, "{s:?}");
    assert!(s.misses <= warm.stats.misses, "{s:?}");
    assert!(s.bytes_downloaded * 4 < full_pack.len() as u64, "{s:?}");

    // Every output over 1,000 bytes gone: the rest of the pack streams in.
    for p in &served {
        let _ = std::fs::remove_file(p);
    }
    let most = b.fresh_gocache().go(dir, &["run", "./cmd/fixture"]);
    most.assert_ok();
    assert_eq!(most.stdout, expected.stdout);
    let s = &most.stats;
    assert!(
        s.pack_prefetched * 10 >= served.len() as u64 * 9,
        "{} outputs gone: {s:?}",
        served.len()
    );
    assert_eq!(s.corrupt + s.remote_errors, 0, "{s:?}");
    assert!(gocacher_lines(&most).is_empty(), "{}", most.stderr);
}

/// The DiskPaths of hits over 1,000 bytes in the last go command's protocol
/// transcript on `machine`, smallest first.
fn served_paths(machine: &support::GoEnv) -> Vec<std::path::PathBuf> {
    let newest = files_under(machine.root())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("out.log-")
        })
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .expect("a protocol transcript");
    let mut hits: Vec<(u64, std::path::PathBuf)> = std::fs::read_to_string(newest)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let size = v.get("Size")?.as_u64()?;
            let path = v.get("DiskPath")?.as_str()?;
            (size > 1000).then(|| (size, path.into()))
        })
        .collect();
    hits.sort();
    hits.dedup();
    hits.into_iter().map(|(_, p)| p).collect()
}
