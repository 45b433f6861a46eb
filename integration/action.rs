//! The GitHub Action (`action.yml`) on a real runner: workflows run under
//! nektos/act (see `action/act.rs`) on this machine, against a real MinIO,
//! with the release served on 127.0.0.1 and checked against its
//! SHA256SUMS as on GitHub. The workflows are the README's and
//! docs/CI.md's own, read from those files; a test that changes one (an
//! input, the events it runs on) says so.
//!
//! Here: the README's and the fleet's workflows, and what each event may
//! do. By concern beside it: `action/trust.rs` (where gocacher comes from,
//! and what is never run), `action/modules.rs` (modules from the bucket),
//! `action/fix_mtimes.rs` (`gocacher fix-mtimes` on its own).

#[path = "action/act.rs"]
mod act;
#[path = "action/fix_mtimes.rs"]
mod fix_mtimes;
#[path = "action/modules.rs"]
mod modules;
#[path = "action/trust.rs"]
mod trust;
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
    // `fix_mtimes_keeps_test_results_across_clones` (action/fix_mtimes.rs) shows the
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

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
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
