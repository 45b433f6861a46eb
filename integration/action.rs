//! The GitHub Action (`action.yml`) on a real runner: workflows run under
//! nektos/act (see `action/act.rs`) on this machine, against a real MinIO,
//! with the release served on 127.0.0.1 and checked against its
//! SHA256SUMS as on GitHub. The workflows are the README's and
//! docs/CI.md's own, read from those files; a test that changes one (an
//! input, the events it runs on) says so.
//!
//! Also `gocacher fix-mtimes` on its own: a repository cloned twice into
//! one path gets its test results from the cache the second time only with
//! it.

#[path = "action/act.rs"]
mod act;
// Shared with the modproxy tests, which use all of it.
#[allow(dead_code)]
#[path = "modproxy/forwarder.rs"]
mod forwarder;
#[path = "modproxy/layout.rs"]
mod layout;
#[path = "action/release.rs"]
mod release;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use act::{with_input, Job, JobRun, Machine, TARGET, VERSION};
use forwarder::{machine_proxy, Forwarder};
use layout::sum_files;
use release::Release;
use support::s3server::{Kind, S3Server};
use support::{GoEnv, Toolchain};

const BUCKET: &str = "gocacher-action";

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A git repository holding `src`'s files in one commit.
fn repository_of(src: &Path) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    support::copy_dir(src, repo.path());
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "fixture"]);
    repo
}

/// The fixture module (integration/fixture) as the repository the
/// workflows run in.
fn widgets() -> tempfile::TempDir {
    repository_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fixture"))
}

/// The `n`th workflow (a ```yaml block with `jobs:`) in `doc`.
fn doc_workflow(doc: &str, n: usize) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
    let blocks: Vec<&str> = text
        .split("```yaml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .filter(|b| b.contains("\njobs:"))
        .collect();
    blocks
        .get(n)
        .unwrap_or_else(|| panic!("{doc} has {} workflows, not {}", blocks.len(), n + 1))
        .to_string()
}

/// A fresh shallow clone (as actions/checkout makes) of `repo` at `path`,
/// replacing what was there.
fn checkout(repo: &Path, path: &Path) {
    let _ = std::fs::remove_dir_all(path);
    let url = format!("file://{}", repo.display());
    git(
        path.parent().unwrap(),
        &["clone", "-q", "--depth", "1", &url, path.to_str().unwrap()],
    );
}

/// One summary row: the go command and its numbers by column.
struct Row {
    command: String,
    gets: u64,
    hits: u64,
    remote_hits: u64,
    prefetch_hits: u64,
    uploads: u64,
    errors: u64,
}

/// The rows of the gocacher tables in a job's step summaries (act prints
/// each step's summary in its log, as GitHub shows it on the run's page).
fn summary_rows(summary: &str) -> Vec<Row> {
    let lines: Vec<&str> = summary.lines().collect();
    let mut rows = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] != gocacher::summary::HEADER {
            i += 1;
            continue;
        }
        i += 2;
        while i < lines.len() && lines[i].starts_with('|') {
            let c: Vec<String> = lines[i]
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect();
            let n = |k: usize| c[k].parse::<u64>().unwrap();
            rows.push(Row {
                command: c[0].clone(),
                gets: n(1),
                hits: n(2),
                remote_hits: n(4),
                prefetch_hits: n(5),
                uploads: n(7),
                errors: n(11),
            });
            i += 1;
        }
    }
    rows
}

/// A MinIO user for the workflows, with the docs' MinIO policy (get, put
/// and delete on the bucket's objects). Not the root user, whose name act
/// would mask wherever it appears in the log.
fn ci_user(server: &S3Server) -> Vec<(String, String)> {
    server
        .user_with(BUCKET, &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
        .1
}

/// `creds` (of [`ci_user`]) and the bucket as the workflows' secrets and
/// variables.
fn bucket_job(job: Job, server: &S3Server, creds: &[(String, String)]) -> Job {
    let env = creds;
    let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    job.secret("GOCACHE_ACCESS_KEY_ID", &get("AWS_ACCESS_KEY_ID"))
        .secret("GOCACHE_SECRET_ACCESS_KEY", &get("AWS_SECRET_ACCESS_KEY"))
        .var("GOCACHE_BUCKET", BUCKET)
        .var("GOCACHE_ENDPOINT", &server.endpoint)
        .var("GOCACHE_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

fn released(job: Job, release: &Release) -> Job {
    job.env("GOCACHER_RELEASE_URL", &release.url)
}

fn assert_ok(run: &JobRun) {
    assert!(run.ok, "the job failed:\n{}", run.log);
}

fn fork_payload(event_number: u64) -> serde_json::Value {
    serde_json::json!({"number": event_number, "pull_request": {
        "number": event_number,
        "head": {"ref": "feature", "repo": {"full_name": "mallory/widgets"}},
        "base": {"ref": "main", "repo": {"full_name": "acme/widgets"}}}})
}

fn branch_payload(event_number: u64) -> serde_json::Value {
    serde_json::json!({"number": event_number, "pull_request": {
        "number": event_number,
        "head": {"ref": "feature", "repo": {"full_name": "acme/widgets"}},
        "base": {"ref": "main", "repo": {"full_name": "acme/widgets"}}}})
}

/// The README's workflow on a push fills the bucket (the release checked,
/// every go step through the bucket, one summary row per go command); the
/// same push on a new runner gets at least 99% of its gets from the bucket,
/// and the test that reads testdata is `(cached)` thanks to fix-mtimes,
/// which it is not with `fix-mtimes: false`; a fork's pull request (no
/// secrets) only reads, writes nothing and says why.
#[test]
fn readme_workflow_push_new_runner_and_fork() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let release = Release::serve(false);
    let repo = widgets();
    let workflow = doc_workflow("README.md", 0);
    let creds = ci_user(&server);
    let push = || {
        released(
            bucket_job(Job::new(&workflow, "push"), &server, &creds),
            &release,
        )
    };

    // The push job.
    let machine = Machine::new();
    let run = machine.run(repo.path(), &push());
    assert_ok(&run);
    assert!(
        run.log.contains(&format!(
            "installed gocacher {VERSION} ({TARGET}, archive sha256"
        )),
        "{}",
        run.log
    );
    // The binary this job runs is its own, in its RUNNER_TEMP.
    let bin = run.kept(&run.env["GOCACHEPROG"]);
    assert_eq!(sha256_file(&bin), release.binary_sha256);
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "false");
    assert!(
        run.log
            .contains("this job writes the bucket (a push event in acme/widgets)"),
        "{}",
        run.log
    );
    assert!(!run.log.contains("::warning"), "{}", run.log);
    let rows = summary_rows(&run.log);
    let commands: Vec<&str> = rows.iter().map(|r| r.command.as_str()).collect();
    assert_eq!(
        commands,
        ["go build ./...", "go vet ./...", "go test ./..."],
        "{}",
        run.log
    );
    assert!(rows.iter().all(|r| r.errors == 0), "{}", run.log);
    assert!(
        rows.iter().map(|r| r.uploads).sum::<u64>() > 0,
        "{}",
        run.log
    );
    assert!(!server.entry_keys(BUCKET, "main/").is_empty());

    // The same push on a new runner: from the bucket, tests cached.
    let run = Machine::new().run(repo.path(), &push());
    assert_ok(&run);
    let rows = summary_rows(&run.log);
    assert_eq!(rows.len(), 3, "{}", run.log);
    let gets: u64 = rows.iter().map(|r| r.gets).sum();
    let hits: u64 = rows.iter().map(|r| r.hits).sum();
    let from_bucket: u64 = rows.iter().map(|r| r.remote_hits + r.prefetch_hits).sum();
    eprintln!("second run: {hits} of {gets} gets hit, {from_bucket} from the bucket or the pack");
    // A new runner starts with an empty disk: every hit is an object the
    // job fetched from the bucket, on its first get or ahead of it.
    assert!(
        hits * 100 >= gets * 99 && from_bucket > 0,
        "{hits} hits, {from_bucket} from the bucket, of {gets} gets:\n{}",
        run.log
    );
    assert!(run.log.contains("set the mtime of"), "{}", run.log);

    // fix-mtimes: false leaves the checkout's mtimes alone. (Whether a test
    // that reads testdata is then `(cached)` cannot be shown under act: it
    // gives every job a new random workspace path, and Go keys such a
    // result on the absolute paths of the files the test opened. GitHub's
    // runners check out to the same path in every job;
    // `fix_mtimes_keeps_test_results_across_clones` below shows the
    // difference there.)
    let job = released(
        bucket_job(
            Job::new(&with_input(&workflow, "fix-mtimes", "false"), "push"),
            &server,
            &creds,
        ),
        &release,
    );
    let run = Machine::new().run(repo.path(), &job);
    assert_ok(&run);
    assert!(!run.log.contains("set the mtime of"), "{}", run.log);

    // A fork's pull request: no secrets reach it, as on GitHub.
    let written = server.keys(BUCKET, "");
    let job = released(
        Job::new(&workflow, "pull_request")
            .payload(fork_payload(7))
            .actor("mallory")
            .var("GOCACHE_BUCKET", BUCKET)
            .var("GOCACHE_ENDPOINT", &server.endpoint)
            .var("GOCACHE_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true"),
        &release,
    );
    let run = Machine::new().run(repo.path(), &job);
    assert_ok(&run);
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "true");
    assert!(
        run.log
            .contains("read-only in this job (a pull request from the fork mallory/widgets)"),
        "{}",
        run.log
    );
    assert_eq!(summary_rows(&run.log).len(), 3, "{}", run.log);
    let now = server.keys(BUCKET, "");
    let new: Vec<&String> = now.iter().filter(|k| !written.contains(k)).collect();
    assert!(
        new.is_empty(),
        "the fork's job wrote to the bucket: {new:?}"
    );
    assert!(
        !run.env.contains_key("GOCACHER_SIGN_KEY_FILE"),
        "{:?}",
        run.env
    );
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_symlink() {
            continue;
        }
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).contains(needle))
            .unwrap_or(false)
        {
            found.push(path);
        }
    }
    found
}

/// docs/CI.md's fleet workflow: a push to main signs with `sign-key`; a
/// pull request from a branch of the repository, with both keys set, runs
/// in its own prefix, reads main's through `also-read`, signs with the
/// pull-request key alone, and the main key reaches neither the disk nor
/// any step's environment.
#[test]
fn fleet_workflow_keeps_the_signing_key_from_pull_requests() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let release = Release::serve(false);
    let repo = widgets();
    let creds = ci_user(&server);
    let workflow = doc_workflow("docs/CI.md", 0);
    let keys = tempfile::tempdir().unwrap();
    let keygen = |name: &str| -> (String, String) {
        let path = keys.path().join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_gocacher"))
            .arg("keygen")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let private = std::fs::read_to_string(&path).unwrap().trim().to_string();
        let public = std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string();
        (private, public)
    };
    let (main_key, main_pub) = keygen("main-key");
    let (pr_key, pr_pub) = keygen("pr-key");
    let job = |event: &str| {
        released(
            bucket_job(Job::new(&workflow, event), &server, &creds),
            &release,
        )
        .secret("GOCACHER_SIGN_KEY", &main_key)
        .secret("GOCACHER_PR_SIGN_KEY", &pr_key)
        .var("GOCACHER_PUBLIC_KEY", &main_pub)
        .var("GOCACHER_PR_PUBLIC_KEY", &pr_pub)
    };

    let push = Machine::new();
    let run = push.run(repo.path(), &job("push"));
    assert_ok(&run);
    assert!(
        run.log
            .contains("this job signs what it writes with the sign-key input's key"),
        "{}",
        run.log
    );
    let rows = summary_rows(&run.log);
    assert!(
        rows.iter().map(|r| r.uploads).sum::<u64>() > 0,
        "{}",
        run.log
    );
    assert!(!server.entry_keys(BUCKET, "main/").is_empty());

    let pr = Machine::new();
    let run = pr.run(
        repo.path(),
        &job("pull_request").payload(branch_payload(7)).actor("bob"),
    );
    assert_ok(&run);
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "false");
    assert_eq!(run.env["GOCACHER_REMOTE"], format!("s3://{BUCKET}/pr/7"));
    assert!(
        run.log
            .contains("this job signs what it writes with the pull-request-sign-key input's key"),
        "{}",
        run.log
    );
    let rows = summary_rows(&run.log);
    let from_main: u64 = rows.iter().map(|r| r.remote_hits + r.prefetch_hits).sum();
    assert!(from_main > 0, "{}", run.log);
    let key_file = PathBuf::from(&run.env["GOCACHER_SIGN_KEY_FILE"]);
    let temp = &run.runner_temp;
    let copied = temp.join(key_file.file_name().unwrap());
    assert_eq!(std::fs::read_to_string(copied).unwrap().trim(), pr_key);
    for (what, found) in [
        ("RUNNER_TEMP", files_holding(temp, &main_key)),
        (
            "the runner's disk",
            files_holding(pr.home.path(), &main_key),
        ),
    ] {
        assert!(found.is_empty(), "the main key is in {what}: {found:?}");
    }
    assert!(
        !run.env
            .values()
            .any(|v| v.contains(&main_key) || v.contains(&pr_key)),
        "a signing key is in the steps' environment"
    );
    assert!(!run.log.contains(&main_key), "the log shows the main key");
    assert!(!server.entry_keys(BUCKET, "pr/7/").is_empty());
}

/// A release archive that does not match its SHA256SUMS is never used;
/// with no cargo to build the source instead, the job goes on without the
/// cache, with a warning, and its go commands pass.
#[test]
fn tampered_release_without_cargo_goes_on_without_the_cache() {
    let release = Release::serve(true);
    let repo = widgets();
    let job = released(
        Job::new(&doc_workflow("README.md", 0), "push")
            .var("GOCACHE_BUCKET", BUCKET)
            .var("GOCACHE_ENDPOINT", "http://127.0.0.1:9")
            .var("GOCACHE_REGION", "us-east-1"),
        &release,
    );
    let machine = Machine::new();
    let run = machine.run(repo.path(), &job);
    assert_ok(&run);
    assert!(
        run.log.contains("does not match its SHA256SUMS entry"),
        "{}",
        run.log
    );
    assert!(run.log.contains("no cargo on this runner"), "{}", run.log);
    assert!(!run.env.contains_key("GOCACHEPROG"), "{:?}", run.env);
    assert!(summary_rows(&run.log).is_empty(), "{}", run.log);
    assert!(
        run.log.contains("ok  \texample.com/fixture/internal/textx"),
        "{}",
        run.log
    );
    assert!(files_holding(&machine.tool_cache(), "gocacher").is_empty());
}

/// The target dir for the action's source builds under act: beside this
/// suite's own, kept between runs, at opt-level 0 (a test needs a working
/// binary, not a fast one).
fn source_build_env(job: Job) -> Job {
    let exe = Path::new(env!("CARGO_BIN_EXE_gocacher"));
    let target = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("action-source");
    job.with_cargo()
        .env("CARGO_TARGET_DIR", target.to_str().unwrap())
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
}

/// A stand-in executable a job's untrusted code plants where a gocacher
/// was: if anything runs it, `marker` says so.
fn planted(marker: &Path) -> String {
    format!(
        "#!/bin/sh\necho \"ran $0 $*\" >> '{}'\necho 'gocacher 0.0.0'\n",
        marker.display()
    )
}

/// Replaces every file named `gocacher` under `dir` with the planted
/// executable; returns how many it replaced.
fn plant_everywhere(dir: &Path, marker: &Path) -> usize {
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_symlink() {
            continue;
        }
        if path.is_dir() {
            n += plant_everywhere(&path, marker);
        } else if path.file_name().unwrap() == "gocacher" {
            std::fs::write(&path, planted(marker)).unwrap();
            n += 1;
        }
    }
    n
}

/// `version: source` with cargo on the runner: an untrusted
/// `pull_request_target` job builds the action's source with the real
/// cargo and plants a binary wherever gocacher lies on the runner's disk;
/// the next push job on the same runner builds its own, never runs the
/// planted one, and its go commands use it.
#[test]
fn source_build_is_per_job() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let repo = widgets();
    let creds = ci_user(&server);
    let workflow = with_input(&doc_workflow("README.md", 0), "version", "source");
    let untrusted = format!(
        "{}\n",
        workflow.replace("  pull_request:\n", "  pull_request_target:\n")
    );
    let machine = Machine::new();
    let marker = machine.home.path().join("planted-ran");

    let run = machine.run(
        repo.path(),
        &source_build_env(bucket_job(
            Job::new(&untrusted, "pull_request_target")
                .payload(fork_payload(9))
                .actor("mallory"),
            &server,
            &creds,
        )),
    );
    assert_ok(&run);
    assert!(
        run.log.contains("built gocacher from source"),
        "{}",
        run.log
    );
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "true");
    // What the job's code could reach: the runner's disk, after the job.
    let planted_files = plant_everywhere(machine.home.path(), &marker);

    let run = machine.run(
        repo.path(),
        &source_build_env(bucket_job(Job::new(&workflow, "push"), &server, &creds)),
    );
    assert_ok(&run);
    assert!(
        !marker.exists(),
        "the push job ran a planted binary:\n{}",
        run.log
    );
    assert!(
        run.log.contains("built gocacher from source"),
        "{}",
        run.log
    );
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "false");
    assert!(
        run.env["GOCACHEPROG"].starts_with(&run.env["RUNNER_TEMP"]),
        "{:?}",
        run.env
    );
    let rows = summary_rows(&run.log);
    assert_eq!(rows.len(), 3, "{}", run.log);
    assert!(
        rows.iter().map(|r| r.uploads).sum::<u64>() > 0,
        "{}",
        run.log
    );
    eprintln!("planted {planted_files} files after the untrusted job");
}

/// A workflow of the action alone, on `events`, for the cases that need
/// no go command.
fn action_only(events: &[&str], with: &[(&str, &str)]) -> String {
    let mut w = format!(
        "name: CI\non: [{}]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: {}\n        with:\n          fix-mtimes: false\n",
        events.join(", "),
        act::ACTION
    );
    for (k, v) in with {
        w.push_str(&format!("          {k}: {v}\n"));
    }
    w
}

/// `read-only: auto` for the events a workflow may run on, and where the
/// signing key goes: a file in RUNNER_TEMP for the jobs that write
/// reviewed code, nothing anywhere for the rest.
#[test]
fn read_only_and_signing_follow_the_event() {
    let release = Release::serve(false);
    let repo = widgets();
    let key = "ab".repeat(32);
    let pr = |head: &str| {
        serde_json::json!({"number": 3, "pull_request": {"number": 3,
            "head": {"ref": "feature", "repo": {"full_name": head}},
            "base": {"ref": "main", "repo": {"full_name": "acme/widgets"}}}})
    };
    let none = serde_json::json!({});
    let feature = serde_json::json!({"ref": "refs/heads/feature",
        "repository": {"default_branch": "main"}});
    let (fork, branch) = (pr("mallory/widgets"), pr("acme/widgets"));
    // (event, payload, actor, read-only input, GOCACHER_READ_ONLY, signs)
    #[rustfmt::skip]
    let cases = [
        ("push", &none, "alice", "auto", "false", true),
        ("schedule", &none, "alice", "auto", "false", true),
        ("workflow_dispatch", &none, "alice", "auto", "false", true),
        // A push or manual run on another branch writes, unsigned.
        ("push", &feature, "alice", "auto", "false", false),
        ("workflow_dispatch", &feature, "alice", "auto", "false", false),
        ("pull_request", &branch, "alice", "auto", "false", false),
        ("pull_request", &fork, "mallory", "auto", "true", false),
        ("pull_request", &branch, "dependabot[bot]", "auto", "true", false),
        ("pull_request_target", &fork, "mallory", "auto", "true", false),
        ("workflow_run", &none, "alice", "auto", "true", false),
        ("issue_comment", &none, "mallory", "auto", "true", false),
        ("push", &none, "alice", "true", "true", false),
        ("pull_request", &fork, "mallory", "false", "false", false),
    ];
    let events: Vec<&str> = {
        let mut e: Vec<&str> = cases.iter().map(|c| c.0).collect();
        e.sort();
        e.dedup();
        e
    };
    for (event, payload, actor, input, want, signs) in cases {
        let workflow = action_only(
            &events,
            &[
                ("read-only", input),
                ("sign-key", "${{ secrets.GOCACHER_SIGN_KEY }}"),
            ],
        );
        let job = released(Job::new(&workflow, event), &release)
            .payload(payload.clone())
            .actor(actor)
            .secret("GOCACHER_SIGN_KEY", &key);
        let machine = Machine::new();
        let run = machine.run(repo.path(), &job);
        let what = format!("{event} by {actor}, read-only: {input}");
        assert_ok(&run);
        assert_eq!(run.env["GOCACHER_READ_ONLY"], want, "{what}\n{}", run.log);
        assert_eq!(
            run.env.contains_key("GOCACHER_SIGN_KEY_FILE"),
            signs,
            "{what}\n{}",
            run.log
        );
        let found = files_holding(&run.runner_temp, &key);
        assert_eq!(found.len(), usize::from(signs), "{what}: {found:?}");
        assert!(
            files_holding(machine.home.path(), &key).is_empty(),
            "{what}"
        );
        assert!(!run.env.values().any(|v| v.contains(&key)), "{what}");
    }
}

/// On a self-hosted runner (one machine, its tool cache kept), a later job
/// never runs what an earlier one left: an archive replaced in the tool
/// cache is refused with a warning and downloaded again; with the release
/// out of reach as well, the job goes on without the cache.
#[test]
fn tampered_tool_cache_is_refused() {
    let release = Release::serve(false);
    let repo = widgets();
    let workflow = action_only(&["push"], &[]);
    let machine = Machine::new();
    let marker = machine.home.path().join("planted-ran");
    let job = released(Job::new(&workflow, "push"), &release);
    let run = machine.run(repo.path(), &job);
    assert_ok(&run);
    let dir = machine
        .tool_cache()
        .join(format!("gocacher/{VERSION}/{TARGET}"));
    let archive = dir.join(format!("gocacher-{TARGET}.tar.gz"));
    assert!(archive.exists(), "{}", run.log);
    assert_eq!(
        sha256_file(&run.kept(&run.env["GOCACHEPROG"])),
        release.binary_sha256
    );

    // The kept archive replaced by one holding a planted gocacher.
    let stage = machine.home.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("gocacher"), planted(&marker)).unwrap();
    let tar = |archive: &Path| {
        let st = Command::new("tar")
            .arg("-czf")
            .arg(archive)
            .arg("-C")
            .arg(&stage)
            .arg("gocacher")
            .status()
            .unwrap();
        assert!(st.success());
    };
    tar(&archive);
    let run = machine.run(repo.path(), &job);
    assert_ok(&run);
    assert!(
        run.log.contains("the archive kept in")
            && run.log.contains("does not match its SHA256SUMS entry"),
        "{}",
        run.log
    );
    assert_eq!(
        sha256_file(&run.kept(&run.env["GOCACHEPROG"])),
        release.binary_sha256
    );
    assert!(!marker.exists(), "the planted binary ran");

    // Planted again, and the release out of reach: as a failed download.
    tar(&archive);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let run = machine.run(
        repo.path(),
        &Job::new(&workflow, "push").env("GOCACHER_RELEASE_URL", &dead),
    );
    assert_ok(&run);
    assert!(run.log.contains("no cargo on this runner"), "{}", run.log);
    assert!(!run.env.contains_key("GOCACHEPROG"), "{}", run.log);
    assert!(!marker.exists(), "the planted binary ran");
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A module whose test reads a testdata file.
fn testdata_module(dir: &Path) {
    std::fs::create_dir_all(dir.join("testdata")).unwrap();
    std::fs::write(dir.join("go.mod"), "module example.com/td\n\ngo 1.24\n").unwrap();
    std::fs::write(
        dir.join("td.go"),
        "package td\n\nimport \"os\"\n\n// Size is the size of a file.\nfunc Size(p string) (int, error) {\n\tb, err := os.ReadFile(p)\n\treturn len(b), err\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("td_test.go"),
        "package td\n\nimport \"testing\"\n\nfunc TestSize(t *testing.T) {\n\tn, err := Size(\"testdata/input.txt\")\n\tif err != nil || n != 6 {\n\t\tt.Fatal(n, err)\n\t}\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("testdata/input.txt"), "hello\n").unwrap();
}

/// Cloned twice into the same path, a repository's `go test` is
/// `(cached)` the second time with fix-mtimes and not without it.
#[test]
fn fix_mtimes_keeps_test_results_across_clones() {
    let src = tempfile::tempdir().unwrap();
    testdata_module(src.path());
    let repo = repository_of(src.path());
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("td");
    let pkg = "example.com/td\t(cached)";
    let fix = |dir: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_gocacher"))
            .arg("fix-mtimes")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Without: the second clone's files have new mtimes. Each go test runs
    // over 2 s after the clone, since cmd/go caches no result that read a
    // file modified within the last 2 s.
    let env = GoEnv::new(Toolchain::Local);
    checkout(repo.path(), &path);
    std::thread::sleep(Duration::from_millis(2100));
    let first = env.go(&path, &["test", "./..."]);
    first.assert_ok();
    assert!(!first.stdout.contains(pkg), "{}", first.stdout);
    let again = env.go(&path, &["test", "./..."]);
    assert!(
        again.stdout.contains(pkg),
        "the result is cacheable at all: {}",
        again.stdout
    );
    checkout(repo.path(), &path);
    std::thread::sleep(Duration::from_millis(2100));
    let reclone = env.go(&path, &["test", "./..."]);
    reclone.assert_ok();
    assert!(
        !reclone.stdout.contains(pkg),
        "cached without fix-mtimes: {}",
        reclone.stdout
    );

    // With: the same contents get the same mtimes.
    let env = GoEnv::new(Toolchain::Local);
    checkout(repo.path(), &path);
    let report = fix(&path);
    assert!(report.contains("set the mtime of 4 files"), "{report}");
    let first = env.go(&path, &["test", "./..."]);
    first.assert_ok();
    assert!(!first.stdout.contains(pkg), "{}", first.stdout);
    checkout(repo.path(), &path);
    fix(&path);
    let reclone = env.go(&path, &["test", "./..."]);
    reclone.assert_ok();
    assert!(
        reclone.stdout.contains(pkg),
        "not cached with fix-mtimes: {}",
        reclone.stdout
    );

    // A local edit keeps its own mtime, so it never passes for the
    // committed file; the test runs again.
    std::fs::write(path.join("testdata/input.txt"), "hullo\n").unwrap();
    let report = fix(&path);
    assert!(
        report.contains("left alone 1 with local changes"),
        "{report}"
    );
    std::thread::sleep(Duration::from_millis(2100));
    let edited = env.go(&path, &["test", "./..."]);
    edited.assert_ok();
    assert!(!edited.stdout.contains(pkg), "{}", edited.stdout);
}

/// Outside a git work tree, fix-mtimes fails with git's reason.
#[test]
fn fix_mtimes_outside_git_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gocacher"))
        .arg("fix-mtimes")
        .arg(dir.path())
        .env("GIT_CEILING_DIRECTORIES", dir.path().parent().unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a git work tree"), "{err}");
}

/// Every input the README's and docs/CI.md's YAML blocks give the action
/// (workflows and fragments alike) is one action.yml declares, so a
/// renamed input cannot leave a snippet behind.
#[test]
fn doc_snippets_use_declared_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let action: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("action.yml")).unwrap()).unwrap();
    let declared: Vec<String> = action["inputs"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut checked = 0;
    for doc in ["README.md", "docs/CI.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for block in text.split("```yaml\n").skip(1) {
            let block = &block[..block.find("```").unwrap()];
            let lines: Vec<&str> = block.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim() != "with:" {
                    continue;
                }
                // The gocacher step's `with:`, or a fragment that is one.
                let uses = lines[..i].iter().rev().find(|l| l.contains("uses:"));
                if uses.is_some_and(|u| !u.contains(act::ACTION)) {
                    continue;
                }
                let indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
                for l in &lines[i + 1..] {
                    if l.len() - l.trim_start().len() != indent || l.trim().is_empty() {
                        break;
                    }
                    let key = l.trim().split(':').next().unwrap();
                    assert!(
                        declared.iter().any(|d| d == key),
                        "{doc}: input {key} is not in action.yml"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 12, "only {checked} inputs found in the docs");
}

/// `workflow` without its `actions/setup-go` step: the runner's own go is
/// the one the jobs use (act would fetch setup-go from GitHub).
fn without_setup_go(workflow: &str) -> String {
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in workflow.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(i) = skipping {
            if indent > i {
                continue;
            }
            skipping = None;
        }
        if line.trim_start().starts_with("- uses: actions/setup-go") {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert_ne!(out, workflow, "the workflow has no actions/setup-go step");
    out
}

/// The `.mod` and `.zip` keys under `prefix` that the graph module's
/// committed go.sum names (upper case escaped, as the GOPROXY layout has
/// it).
fn graph_module_keys(prefix: &str) -> BTreeSet<String> {
    let sums = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/modproxy/graph/go.sum"),
    )
    .unwrap();
    sum_files(sums.lines())
        .into_iter()
        .map(|f| format!("{prefix}{f}"))
        .collect()
}

/// Requests the forwarder passed on, in all.
fn forwarded(up: &Forwarder) -> usize {
    up.counts().values().sum()
}

/// go leaves its module cache read-only; the machine's HOME (which holds
/// it) can then be removed.
fn modcache_writable(machine: &Machine) {
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(machine.home.path())
        .status();
}

/// docs/CI.md's modules workflow (without its actions/setup-go step) on a
/// real module graph (integration/modproxy/graph), the job's GOPROXY a
/// counting forwarder to the machine's module proxy: a read-only job
/// fetches through the proxy and writes nothing to the bucket's mod/; a
/// writing push copies every module to it; a new runner (an empty module
/// cache) then gets every module from the bucket, with not one request
/// reaching the forwarder, by the proxy or by go falling through; and a
/// job whose proxy cannot start (a bad setting in its environment) keeps
/// its GOPROXY and builds.
#[test]
fn modules_come_from_the_bucket_through_the_proxy() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let release = Release::serve(false);
    let up = Forwarder::start(&machine_proxy());
    let repo =
        repository_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/modproxy/graph"));
    let workflow = without_setup_go(&doc_workflow("docs/CI.md", 1));
    // The read-only job only downloads: nothing of its build would be
    // written anyway.
    let builds = "      - run: go build ./...\n      - run: go test ./...\n";
    assert!(workflow.contains(builds), "{workflow}");
    let download_only = with_input(&workflow.replace(builds, ""), "read-only", "true");
    let creds = ci_user(&server);
    let job = |wf: &str| {
        released(bucket_job(Job::new(wf, "push"), &server, &creds), &release)
            .env("GOPROXY", &up.url())
    };
    let proxy_log = |run: &JobRun| -> String {
        std::fs::read_to_string(run.kept(&run.env["GOCACHER_MODULES_LOG"])).unwrap_or_default()
    };
    let through_proxy = |run: &JobRun| {
        let goproxy = &run.env["GOPROXY"];
        assert!(
            goproxy.starts_with("http://127.0.0.1:")
                && goproxy.ends_with(&format!("/mod|{}", up.url())),
            "GOPROXY={goproxy}\n{}",
            run.log
        );
        assert_eq!(
            run.env["GOCACHER_MODULES_URL"],
            goproxy.split('|').next().unwrap()
        );
    };
    let want = graph_module_keys("main/mod/");

    // Read-only: fetched through the proxy, nothing written to mod/.
    let machine = Machine::new();
    let run = machine.run(repo.path(), &job(&download_only));
    modcache_writable(&machine);
    assert_ok(&run);
    through_proxy(&run);
    assert!(
        run.log
            .contains("reads modules from the bucket and writes none to it"),
        "{}",
        run.log
    );
    let log = proxy_log(&run);
    assert!(
        log.contains("fetching github.com/!burnt!sushi/toml/@v/v1.6.0.zip from the upstream"),
        "{log}\n{}",
        run.log
    );
    assert!(forwarded(&up) > 0);
    std::thread::sleep(Duration::from_secs(1));
    let written = server.keys(BUCKET, "main/mod/");
    assert!(
        written.is_empty(),
        "a read-only job wrote {written:?}\n{log}"
    );

    // A push writes: every module the build used reaches the bucket.
    let machine = Machine::new();
    let run = machine.run(repo.path(), &job(&workflow));
    modcache_writable(&machine);
    assert_ok(&run);
    through_proxy(&run);
    assert!(
        run.log
            .contains("reads modules from the bucket and copies those it fetches to it"),
        "{}",
        run.log
    );
    let start = std::time::Instant::now();
    loop {
        let keys: BTreeSet<String> = server.keys(BUCKET, "main/mod/").into_iter().collect();
        if want.is_subset(&keys) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the bucket lacks {:?}\n{}",
            want.difference(&keys).collect::<Vec<_>>(),
            proxy_log(&run)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A new runner: every module from the bucket, nothing upstream.
    let before = up.counts();
    let machine = Machine::new();
    let run = machine.run(repo.path(), &job(&workflow));
    modcache_writable(&machine);
    assert_ok(&run);
    through_proxy(&run);
    let log = proxy_log(&run);
    let after = up.counts();
    assert_eq!(
        before, after,
        "requests reached the upstream (or go fell through to it)\n{log}"
    );
    assert!(!log.contains("modproxy: fetching "), "{log}");
    assert!(log.contains("v1.6.0.zip"), "{log}");
    // The workspace's go.sum was copied from the bucket before go asked.
    let done = log
        .lines()
        .find(|l| l.contains("prefetch done"))
        .unwrap_or_else(|| panic!("no prefetch:\n{log}"));
    assert!(!done.contains(": 0 copied from the bucket"), "{done}");

    // A proxy that cannot start: GOPROXY as it was, and the build passes.
    let machine = Machine::new();
    let run = machine.run(
        repo.path(),
        &job(&workflow).env("GOCACHER_MODPROXY_MAX_ZIP", "lots"),
    );
    modcache_writable(&machine);
    assert_ok(&run);
    assert!(
        run.log
            .contains("the module proxy did not start (it exited)")
            && run.log.contains("--modproxy-max-zip"),
        "{}",
        run.log
    );
    assert_eq!(run.env["GOPROXY"], up.url(), "{}", run.log);
    assert!(!run.env.contains_key("GOCACHER_MODULES_URL"));
    let rows = summary_rows(&run.log);
    assert!(
        rows.iter().any(|r| r.command == "go build ./..."),
        "{}",
        run.log
    );
}
