//! Signed entries and read-only fallback locations (`--sign-key`,
//! `--trust-key`, `--also-read`), on a real bucket with the real `go`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::s3server::Kind;
use super::support::{self, GoEnv};
use super::{gocacher_lines, machine, started, BUCKET};

/// A key pair from `gocacher keygen`: the private key's path and the public
/// key's hex.
struct KeyPair {
    private: PathBuf,
    public: String,
}

fn keygen(dir: &Path, name: &str) -> KeyPair {
    let private = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_gocacher"))
        .arg("keygen")
        .arg(&private)
        .output()
        .expect("running gocacher keygen");
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64, "keygen printed {public:?}");
    let file = std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap();
    assert_eq!(file.trim(), public);
    KeyPair { private, public }
}

/// `env` as another machine with these flags on `prefix` of the bucket.
fn as_machine(env: &GoEnv, prefix: &str, flags: &[&str]) -> GoEnv {
    let remote = format!("s3://{BUCKET}/{prefix}");
    let mut all = vec!["--remote", remote.as_str()];
    all.extend_from_slice(flags);
    env.new_machine().with_flags(&all)
}

/// Files in a cache dir's `ix/` (pack indexes of prefetched entries).
fn index_files(cache_dir: &Path) -> usize {
    std::fs::read_dir(cache_dir.join("ix")).map_or(0, |d| d.count())
}

/// A trusted writer signs a cold build; a reader trusting its key on an
/// empty cache dir is served everything from the bucket (pack included).
/// Writers it does not trust (unsigned, another key) fill another prefix:
/// nothing of theirs is served or kept, and the build is still right.
pub fn only_trusted_writers_feed_a_build(kind: Kind) {
    let server = started(kind);
    let keys = tempfile::tempdir().unwrap();
    let (main_key, other_key) = (keygen(keys.path(), "main"), keygen(keys.path(), "other"));
    let module = support::fixture_copy();
    let dir = module.path();
    let sign = main_key.private.to_str().unwrap();

    let writer = machine(&server, "signed", &["--sign-key", sign, "--scope", "s"]);
    let expected = writer.go(dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();
    let s = &expected.stats;
    assert!(s.uploads > 0 && s.packs_written == 1, "{s:?}");
    assert_eq!(s.untrusted, 0, "{s:?}");

    let reader = as_machine(
        &writer,
        "signed",
        &["--trust-key", &main_key.public, "--scope", "s"],
    );
    let run = reader.go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    run.assert_warm();
    assert_eq!(run.stdout, expected.stdout);
    let s = &run.stats;
    assert_eq!(s.untrusted + s.corrupt + s.remote_errors, 0, "{s:?}");
    assert!(s.pack_prefetched > 0, "the signed pack was used: {s:?}");
    assert_eq!(
        s.prefetch_hits + s.remote_hits,
        s.hits,
        "every hit from the bucket: {s:?}"
    );
    assert!(gocacher_lines(&run).is_empty(), "{}", run.stderr);

    // The same build by an unsigned writer and one with another key, in
    // another prefix, manifests and packs included.
    let unsigned = machine(&server, "forged", &["--scope", "s"]);
    unsigned.go(dir, &["run", "./cmd/fixture"]).assert_ok();
    let theirs = machine(
        &server,
        "forged",
        &[
            "--sign-key",
            other_key.private.to_str().unwrap(),
            "--scope",
            "t",
        ],
    );
    theirs.go(dir, &["run", "./cmd/fixture"]).assert_ok();
    assert_eq!(server.pack_keys(BUCKET, "forged/").len(), 2);
    for scope in ["s", "t"] {
        let reader = as_machine(
            &unsigned,
            "forged",
            &["--trust-key", &main_key.public, "--scope", scope],
        );
        let run = reader.go(dir, &["run", "./cmd/fixture"]);
        run.assert_ok();
        assert_eq!(run.stdout, expected.stdout, "scope {scope}");
        let s = &run.stats;
        assert!(s.untrusted > 0, "scope {scope}: {s:?}");
        assert_eq!(
            s.remote_hits + s.prefetched + s.pack_prefetched + s.prefetch_hits,
            0,
            "scope {scope}: an untrusted entry was used: {s:?}"
        );
        assert_eq!(
            index_files(reader.cache_dir()),
            0,
            "scope {scope}: ix/ holds untrusted entries"
        );
        let lines = gocacher_lines(&run);
        assert!(
            lines.len() == 1 && lines[0].contains("untrusted"),
            "expected one line about untrusted objects:\n{}",
            run.stderr
        );
    }
}

/// Signed objects' bodies and metadata moved between keys in the bucket
/// (each key then holds another action's genuine, signed output, with a
/// matching sha256): none is served, because the signature binds the action
/// ID.
pub fn swapped_signed_objects_are_refused(kind: Kind) {
    let server = started(kind);
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "k");
    let module = support::fixture_copy();
    let dir = module.path();
    let writer = machine(
        &server,
        "swap",
        &["--sign-key", key.private.to_str().unwrap(), "--scope", "s"],
    );
    let expected = writer.go(dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();
    let mut entries = server.entry_keys(BUCKET, "swap/");
    entries.sort();
    assert!(entries.len() > 10);
    server.rotate(BUCKET, &entries);
    let swapped = entries.len();
    // Each entry one by one (no prefetch from the signed pack, which still
    // holds the right bodies).
    let reader = as_machine(
        &writer,
        "swap",
        &[
            "--trust-key",
            &key.public,
            "--scope",
            "s",
            "--prefetch-concurrency",
            "0",
        ],
    );
    let run = reader.go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(
        run.stdout, expected.stdout,
        "a swapped object changed the program"
    );
    let s = &run.stats;
    assert!(s.untrusted > 0 && s.untrusted <= swapped as u64, "{s:?}");
    assert_eq!(s.remote_hits, 0, "a swapped object was served: {s:?}");
}

/// A forged (unsigned) manifest and pack under the trusted scope's names:
/// not used, and the next trusted writer replaces them.
pub fn forged_pack_is_replaced_by_the_next_trusted_run(kind: Kind) {
    let server = started(kind);
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "k");
    let module = support::fixture_copy();
    let dir = module.path();
    let sign = key.private.to_str().unwrap();
    let writer = machine(&server, "main", &["--sign-key", sign, "--scope", "main"]);
    let expected = writer.go(dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();

    // An unsigned writer with the same scope in its own prefix; its pack
    // and manifest are then copied over main's.
    let forger = machine(&server, "forger", &["--scope", "main"]);
    forger.go(dir, &["run", "./cmd/fixture"]).assert_ok();
    for (from, to) in [
        (
            server.pack_keys(BUCKET, "forger/"),
            server.pack_keys(BUCKET, "main/"),
        ),
        (
            server.manifest_keys(BUCKET, "forger/"),
            server.manifest_keys(BUCKET, "main/"),
        ),
    ] {
        assert_eq!((from.len(), to.len()), (1, 1));
        assert_eq!(
            from[0].strip_prefix("forger/"),
            to[0].strip_prefix("main/"),
            "same scope, same name"
        );
        server.put_raw(BUCKET, &to[0], server.get_raw(BUCKET, &from[0]));
    }

    let trusted = ["--trust-key", key.public.as_str(), "--scope", "main"];
    let run = as_machine(&writer, "main", &trusted).go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(run.stdout, expected.stdout);
    let s = &run.stats;
    assert!(s.untrusted > 0, "{s:?}");
    assert_eq!(
        s.prefetched + s.pack_prefetched,
        0,
        "the forged manifest or pack was used: {s:?}"
    );
    assert!(
        s.remote_hits > 0,
        "the signed objects are still served one by one: {s:?}"
    );

    // A trusted writer on a new machine rewrites both, signed.
    let run = as_machine(&writer, "main", &["--sign-key", sign, "--scope", "main"])
        .go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(run.stats.packs_written, 1, "{:?}", run.stats);
    let run = as_machine(&writer, "main", &trusted).go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    run.assert_warm();
    let s = &run.stats;
    assert_eq!(s.untrusted, 0, "{s:?}");
    assert!(s.pack_prefetched > 0, "{s:?}");
}

/// `--also-read`: a pull request writes only its own prefix yet reads
/// main's entries, manifest and pack; main never sees the pull request's.
pub fn pull_requests_read_main_and_write_their_own_prefix(kind: Kind) {
    let server = started(kind);
    let module = support::fixture_copy();
    let dir = module.path();
    let main = machine(&server, "main", &["--scope", "main"]);
    main.go(dir, &["build", "./..."]).assert_ok();
    let main_keys = server.keys(BUCKET, "main/");
    assert!(!main_keys.is_empty());

    let also = format!("s3://{BUCKET}/main");
    let pr = [
        "--also-read",
        also.as_str(),
        "--scope",
        "pr-7",
        "--scope-fallback",
        "main",
    ];
    let run = as_machine(&main, "pr/7", &pr).go(dir, &["build", "./..."]);
    run.assert_ok();
    run.assert_warm();
    let s = &run.stats;
    assert!(
        s.pack_prefetched > 0,
        "main's pack, read through --also-read: {s:?}"
    );
    assert_eq!(s.remote_errors, 0, "{s:?}");

    // The pull request changes a package: its new entries go to its own
    // prefix only.
    std::fs::write(
        dir.join("internal/mathx/extra.go"),
        "package mathx\n\n// Twice doubles n.\nfunc Twice(n int) int { return 2 * n }\n",
    )
    .unwrap();
    let run = as_machine(&main, "pr/7", &pr).go(dir, &["build", "./..."]);
    run.assert_ok();
    assert!(run.stats.uploads > 0, "{:?}", run.stats);
    assert_eq!(
        server.keys(BUCKET, "main/"),
        main_keys,
        "the pull request wrote main's prefix"
    );
    assert!(!server.entry_keys(BUCKET, "pr/7/").is_empty());
    assert_eq!(server.manifest_keys(BUCKET, "pr/7/").len(), 1);

    // Main, building the same change on an empty machine, finds none of
    // the pull request's entries: it compiles and uploads them itself.
    let run = as_machine(&main, "main", &["--scope", "main"]).go(dir, &["build", "./..."]);
    run.assert_ok();
    let s = &run.stats;
    assert!(s.remote_misses > 0 && s.uploads > 0, "{s:?}");
}

/// Key rotation: entries signed by either of two trusted keys are used
/// (`GOCACHER_TRUST_KEYS`, comma-separated); with only one of them trusted,
/// the other's are not.
pub fn either_of_two_trusted_keys(kind: Kind) {
    let server = started(kind);
    let keys = tempfile::tempdir().unwrap();
    let (old, new) = (keygen(keys.path(), "old"), keygen(keys.path(), "new"));
    let module = support::fixture_copy();
    let dir = module.path();
    let a = machine(
        &server,
        "rot",
        &["--sign-key", old.private.to_str().unwrap(), "--scope", "b"],
    );
    a.go(dir, &["build", "./..."]).assert_ok();
    let b = as_machine(
        &a,
        "rot",
        &["--sign-key", new.private.to_str().unwrap(), "--scope", "t"],
    );
    b.go(dir, &["test", "./internal/..."]).assert_ok();

    let mut env = server.env();
    env.push((
        "GOCACHER_TRUST_KEYS".into(),
        format!("{},{}", old.public, new.public),
    ));
    let both = as_machine(&a, "rot", &[]).with_env(env);
    for (args, scope) in [
        (&["build", "./..."][..], "b"),
        (&["test", "./internal/..."], "t"),
    ] {
        let run = both
            .with_flags(&["--remote", &format!("s3://{BUCKET}/rot"), "--scope", scope])
            .go(dir, args);
        run.assert_ok();
        run.assert_warm();
        assert_eq!(run.stats.untrusted, 0, "{args:?}: {:?}", run.stats);
    }
    let only_old = as_machine(&a, "rot", &["--trust-key", &old.public, "--scope", "t"]);
    let run = only_old.go(dir, &["test", "./internal/..."]);
    run.assert_ok();
    assert!(run.stats.untrusted > 0, "{:?}", run.stats);
}

/// The pack key of `scope` under `prefix` (as gocacher names it: the first
/// 16 bytes of sha256(scope) in hex).
fn pack_key(prefix: &str, scope: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(scope.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}/gocacher/v1/packs/{hash}")
}

/// A genuine signed pack copied under another scope's pack key: the trusted
/// signature names the scope it was written for, so a trusting reader in
/// the other scope does not use it (it counts it as untrusted) and gets the
/// entries one by one; its build is right.
pub fn signed_pack_under_another_scope_is_refused(kind: Kind) {
    let server = started(kind);
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "k");
    let module = support::fixture_copy();
    let dir = module.path();
    let sign = key.private.to_str().unwrap();
    let a = machine(&server, "moved", &["--sign-key", sign, "--scope", "a"]);
    let expected = a.go(dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();
    assert_eq!(expected.stats.packs_written, 1, "{:?}", expected.stats);
    // Scope b's own signed manifest and pack, from another machine.
    let b = as_machine(&a, "moved", &["--sign-key", sign, "--scope", "b"]);
    let run = b.go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    assert_eq!(run.stats.packs_written, 1, "{:?}", run.stats);
    let (from, to) = (pack_key("moved", "a"), pack_key("moved", "b"));
    let mut packs = server.pack_keys(BUCKET, "moved/");
    packs.sort();
    let mut want = vec![from.clone(), to.clone()];
    want.sort();
    assert_eq!(packs, want);
    server.put_raw(BUCKET, &to, server.get_raw(BUCKET, &from));

    let reader = as_machine(&a, "moved", &["--trust-key", &key.public, "--scope", "b"]);
    let run = reader.go(dir, &["run", "./cmd/fixture"]);
    run.assert_ok();
    run.assert_warm();
    assert_eq!(run.stdout, expected.stdout);
    let s = &run.stats;
    assert!(s.untrusted > 0, "scope a's pack was trusted as b's: {s:?}");
    assert_eq!(s.pack_prefetched, 0, "scope a's pack was used: {s:?}");
    assert!(
        s.prefetched + s.remote_hits > 0,
        "the signed entries still come one by one: {s:?}"
    );
}

/// Copies every cache entry (body and metadata) under `from` to `to` (both
/// prefixes without the slash), through `edit`; returns how many.
fn copy_entries(
    server: &support::s3server::S3Server,
    from: &str,
    to: &str,
    edit: impl Fn(&mut std::collections::HashMap<String, String>, &mut Vec<u8>),
) -> usize {
    let rt = support::s3server::runtime();
    let client = server.client();
    let keys = server.entry_keys(BUCKET, &format!("{from}/"));
    for key in &keys {
        let out = rt
            .block_on(client.get_object().bucket(BUCKET).key(key).send())
            .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
        let mut meta = out.metadata().cloned().unwrap_or_default();
        let mut body = rt
            .block_on(out.body.collect())
            .unwrap()
            .into_bytes()
            .to_vec();
        edit(&mut meta, &mut body);
        let dest = format!("{to}/{}", key.strip_prefix(&format!("{from}/")).unwrap());
        rt.block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key(&dest)
                .set_metadata(Some(meta))
                .body(body.into())
                .send(),
        )
        .unwrap_or_else(|e| panic!("put {dest}: {e:?}"));
    }
    keys.len()
}

/// `--also-read` past a bad copy: the first location holds a damaged object
/// for every action (or, for a reader with --trust-key, an unsigned one),
/// the second the good one. Every get is a hit, from the second location.
pub fn also_read_falls_through_bad_copies(kind: Kind) {
    let server = started(kind);
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "k");
    let module = support::fixture_copy();
    let dir = module.path();
    let sign = key.private.to_str().unwrap();
    let main = machine(&server, "main", &["--sign-key", sign, "--scope", "main"]);
    let expected = main.go(dir, &["run", "./cmd/fixture"]);
    expected.assert_ok();
    let n = copy_entries(&server, "main", "damaged", |_, body| {
        if let Some(last) = body.last_mut() {
            *last ^= 0x5A;
        } else {
            body.push(0);
        }
    });
    assert!(n > 10, "{n} entries");
    copy_entries(&server, "main", "unsigned", |meta, _| {
        assert!(meta.remove("gocacher-signature").is_some(), "{meta:?}");
    });

    let also = format!("s3://{BUCKET}/main");
    for (prefix, trust) in [("damaged", None), ("unsigned", Some(key.public.as_str()))] {
        let mut flags = vec![
            "--also-read",
            also.as_str(),
            "--read-only",
            "--prefetch-concurrency",
            "0",
            "--scope",
            "pr",
        ];
        if let Some(k) = trust {
            flags.extend(["--trust-key", k]);
        }
        // Each reader on its own (a machine of its own record of puts: the
        // other reader's are not uploaded, being read-only).
        let run = machine(&server, prefix, &flags).go(dir, &["run", "./cmd/fixture"]);
        run.assert_ok();
        run.assert_warm();
        assert_eq!(run.stdout, expected.stdout, "{prefix}");
        let s = &run.stats;
        assert_eq!(
            s.remote_hits, s.hits,
            "{prefix}: every hit from the bucket: {s:?}"
        );
        let refused = if trust.is_some() {
            s.untrusted
        } else {
            s.corrupt
        };
        assert!(refused > 0, "{prefix}: no bad copy met: {s:?}");
        let lines = gocacher_lines(&run);
        assert!(
            lines.len() == 1 && lines[0].contains("the next --also-read location is asked"),
            "{prefix}: expected one line saying the next location is asked:\n{}",
            run.stderr
        );
    }
}
