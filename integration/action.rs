//! The GitHub Action (`action.yml`), run step by step as a runner would:
//! its `run:` steps in bash with `GITHUB_ENV`, `GITHUB_OUTPUT`,
//! `GITHUB_STEP_SUMMARY` and `GITHUB_EVENT_PATH` files and the `GITHUB_*` and
//! `RUNNER_*` variables, its `${{ }}` expressions evaluated, then the job's
//! next step (a real `go test`) with the environment the action exported,
//! against a real MinIO. The release binary comes from a release directory
//! served on 127.0.0.1, checked against its SHA256SUMS as on GitHub.
//!
//! Also `gocacher fix-mtimes`: a repository cloned twice into one path gets
//! its test results from the cache the second time only with it.

#[path = "action/runner.rs"]
mod runner;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use runner::{Release, Runner, TARGET, VERSION};
use support::s3server::{Kind, S3Server};
use support::{GoEnv, Stats, Toolchain};

const BUCKET: &str = "gocacher-action";

fn git(dir: &Path, args: &[&str]) {
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

/// The summary's table rows (after the header and rule).
fn summary_rows(summary: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = summary.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == gocacher::summary::HEADER)
        .unwrap_or_else(|| panic!("no gocacher table in the summary:\n{summary}"));
    lines[start + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The row says what the stats file says.
fn assert_row_matches(row: &[String], s: &Stats) {
    let want = [
        "go test ./...".to_string(),
        s.gets.to_string(),
        s.hits.to_string(),
        s.misses.to_string(),
        s.remote_hits.to_string(),
        s.prefetch_hits.to_string(),
        s.puts.to_string(),
        s.uploads.to_string(),
        s.uploads_dropped.to_string(),
        format!("{:.1}", s.bytes_downloaded as f64 / 1e6),
        format!("{:.1}", s.bytes_uploaded as f64 / 1e6),
        (s.get_errors + s.put_errors + s.remote_errors + s.upload_errors).to_string(),
    ];
    assert_eq!(row, want, "summary row against the stats file {s:?}");
}

/// A push job fills the bucket through the action; a fork's pull request
/// job on a new runner reads it (its tests come back `(cached)`, thanks to
/// the fix-mtimes step), writes nothing, and each job's summary holds its
/// go command's numbers.
#[test]
fn push_writes_fork_pull_request_only_reads() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let release = Release::serve(false);
    let repo = repository_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fixture"));
    // Every job checks out to the same path, as on GitHub's runners.
    let work = tempfile::tempdir().unwrap();
    let checkout_path = work.path().join("widgets");
    let aws: Vec<(String, String)> = server
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_ENDPOINT_URL_S3")
        .collect();
    let remote = format!("s3://{BUCKET}/ci");
    let with = [
        ("remote", remote.as_str()),
        ("endpoint", server.endpoint.as_str()),
        ("region", "us-east-1"),
        ("version", VERSION),
        ("working-directory", checkout_path.to_str().unwrap()),
    ];
    let release_url = [("GOCACHER_RELEASE_URL", release.url.as_str())];

    // The push job.
    checkout(repo.path(), &checkout_path);
    let push = Runner::new(
        "push",
        serde_json::json!({"ref": "refs/heads/main", "repository": {"full_name": "acme/widgets"}}),
        "alice",
    );
    let run = push.run_action(&with, &release_url);
    let bin = push
        .root
        .path()
        .join(format!("tool-cache/gocacher/{VERSION}/{TARGET}/gocacher"));
    assert_eq!(
        run.env["GOCACHEPROG"],
        bin.display().to_string(),
        "{}",
        run.log
    );
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(&bin).unwrap())),
        release.binary_sha256
    );
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "false", "{}", run.log);
    assert_eq!(run.env["GOCACHER_REMOTE"], remote);
    assert_eq!(run.env["GOCACHER_S3_ENDPOINT"], server.endpoint);
    assert_eq!(run.outputs["configure"]["read-only"], "false");
    assert!(
        run.log
            .contains("this job writes the bucket (a push event in acme/widgets)"),
        "{}",
        run.log
    );
    assert!(run.log.contains("fix-mtimes"), "{}", run.log);
    assert!(!run.log.contains("::warning"), "{}", run.log);
    let go = push.go(&run, &checkout_path, &["test", "./..."], &aws);
    assert!(go.stats.puts > 0 && go.stats.uploads > 0, "{:?}", go.stats);
    let written = server.keys(BUCKET, "ci/");
    assert!(!server.entry_keys(BUCKET, "ci/").is_empty());
    let rows = summary_rows(&push.summary());
    assert_eq!(rows.len(), 1, "{}", push.summary());
    assert_row_matches(&rows[0], &go.stats);

    // The fork's pull request, on a new runner (empty disk, empty GOCACHE).
    checkout(repo.path(), &checkout_path);
    let fork = Runner::new(
        "pull_request",
        serde_json::json!({"pull_request": {
            "head": {"repo": {"full_name": "mallory/widgets"}},
            "base": {"repo": {"full_name": "acme/widgets"}}}}),
        "mallory",
    );
    let run = fork.run_action(&with, &release_url);
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "true", "{}", run.log);
    assert_eq!(run.outputs["configure"]["read-only"], "true");
    assert!(
        run.log
            .contains("read-only in this job (a pull request from the fork mallory/widgets)"),
        "{}",
        run.log
    );
    let go = fork.go(&run, &checkout_path, &["test", "./..."], &aws);
    let s = &go.stats;
    assert_eq!(s.uploads, 0, "{s:?}");
    assert!(s.remote_hits + s.prefetch_hits > 0, "{s:?}");
    assert_eq!(s.hits, s.remote_hits + s.prefetch_hits, "{s:?}");
    assert_eq!(
        server.keys(BUCKET, "ci/"),
        written,
        "the fork's job wrote to the bucket"
    );
    // Test results that read testdata come from the push job's run.
    assert!(
        go.stdout
            .contains("example.com/fixture/internal/textx\t(cached)"),
        "{}",
        go.stdout
    );
    let rows = summary_rows(&fork.summary());
    assert_eq!(rows.len(), 1, "{}", fork.summary());
    assert_row_matches(&rows[0], s);
}

/// A release archive that does not match its SHA256SUMS is never
/// installed; without cargo to build the source instead, the job goes on
/// without gocacher (no GOCACHEPROG) and says why.
#[test]
fn tampered_release_is_refused() {
    let release = Release::serve(true);
    let runner = Runner::new(
        "push",
        serde_json::json!({"ref": "refs/heads/main"}),
        "alice",
    );
    let path = format!(
        "/usr/bin:/bin:{}",
        runner.root.path().join("nothing").display()
    );
    let run = runner.run_action(
        &[("version", VERSION), ("remote", "s3://b/p")],
        &[
            ("GOCACHER_RELEASE_URL", release.url.as_str()),
            ("PATH", path.as_str()),
        ],
    );
    assert!(
        run.log.contains("does not match its SHA256SUMS entry"),
        "{}",
        run.log
    );
    assert!(run.log.contains("no cargo on this runner"), "{}", run.log);
    assert!(!run.env.contains_key("GOCACHEPROG"), "{:?}", run.env);
    assert!(!runner
        .root
        .path()
        .join(format!("tool-cache/gocacher/{VERSION}/{TARGET}/gocacher"))
        .exists());
    assert_eq!(run.outputs["configure"]["read-only"], "true");
}

/// `read-only: auto` for the events a workflow may run on.
#[test]
fn read_only_follows_the_event() {
    let release = Release::serve(false);
    let pr = |head: &str| {
        serde_json::json!({"pull_request": {
            "head": {"repo": {"full_name": head}},
            "base": {"repo": {"full_name": "acme/widgets"}}}})
    };
    for (event, payload, actor, input, want) in [
        ("push", serde_json::json!({}), "alice", "auto", "false"),
        ("schedule", serde_json::json!({}), "alice", "auto", "false"),
        ("pull_request", pr("acme/widgets"), "alice", "auto", "false"),
        (
            "pull_request",
            pr("mallory/widgets"),
            "mallory",
            "auto",
            "true",
        ),
        (
            "pull_request",
            pr("acme/widgets"),
            "dependabot[bot]",
            "auto",
            "true",
        ),
        (
            "pull_request_target",
            pr("mallory/widgets"),
            "mallory",
            "auto",
            "true",
        ),
        (
            "workflow_run",
            serde_json::json!({}),
            "alice",
            "auto",
            "true",
        ),
        (
            "issue_comment",
            serde_json::json!({}),
            "mallory",
            "auto",
            "true",
        ),
        ("push", serde_json::json!({}), "alice", "true", "true"),
        (
            "pull_request",
            pr("mallory/widgets"),
            "mallory",
            "false",
            "false",
        ),
    ] {
        let runner = Runner::new(event, payload, actor);
        let run = runner.run_action(
            &[
                ("version", VERSION),
                ("read-only", input),
                ("fix-mtimes", "false"),
                ("sign-key", &"ab".repeat(32)),
            ],
            &[("GOCACHER_RELEASE_URL", release.url.as_str())],
        );
        assert_eq!(
            run.env["GOCACHER_READ_ONLY"], want,
            "{event} by {actor}, read-only: {input}\n{}",
            run.log
        );
        // The signing key reaches only writers that build reviewed code,
        // as a file, never as a variable of later steps.
        assert_eq!(
            run.env.contains_key("GOCACHER_SIGN_KEY_FILE"),
            want == "false" && event != "pull_request",
            "{event} by {actor}, read-only: {input}\n{}",
            run.log
        );
        assert!(!run.env.values().any(|v| v.contains(&"ab".repeat(32))));
    }
}

/// A stand-in executable a job's untrusted code plants where the action
/// keeps gocacher: if anything runs it, `marker` says so.
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
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += plant_everywhere(&path, marker);
        } else if path.file_name().unwrap() == "gocacher" {
            std::fs::write(&path, planted(marker)).unwrap();
            n += 1;
        }
    }
    n
}

fn sha256_file(path: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
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

/// On a self-hosted runner, a later job never runs a tool-cache binary it
/// did not check against the release's SHA256SUMS in that job: a binary an
/// earlier job replaced is refused with a warning and the release's put
/// back; an archive replaced as well is refused and downloaded again; and
/// with the release out of reach the job goes on as after a failed
/// download (no cargo here: without GOCACHEPROG), never running the
/// planted file.
#[test]
fn tampered_tool_cache_is_refused() {
    let release = Release::serve(false);
    let mut runner = Runner::new("push", serde_json::json!({}), "alice");
    let marker = runner.root.path().join("planted-ran");
    let with = [("version", VERSION), ("fix-mtimes", "false")];
    let url = [("GOCACHER_RELEASE_URL", release.url.as_str())];
    let dir = runner
        .root
        .path()
        .join(format!("tool-cache/gocacher/{VERSION}/{TARGET}"));
    let bin = dir.join("gocacher");
    let run = runner.run_action(&with, &url);
    assert_eq!(
        run.env["GOCACHEPROG"],
        bin.display().to_string(),
        "{}",
        run.log
    );

    // The binary replaced.
    std::fs::write(&bin, planted(&marker)).unwrap();
    runner.next_job("push", serde_json::json!({}), "alice");
    let run = runner.run_action(&with, &url);
    assert!(!marker.exists(), "the planted binary ran:\n{}", run.log);
    assert_eq!(sha256_file(&run.env["GOCACHEPROG"]), release.binary_sha256);
    assert!(
        run.log.contains("is not the one in the release's archive")
            && run.log.contains("refusing it"),
        "{}",
        run.log
    );

    // The kept archive and the binary replaced.
    let archive = dir.join(format!("gocacher-{TARGET}.tar.gz"));
    assert!(archive.exists());
    let stage = runner.root.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("gocacher"), planted(&marker)).unwrap();
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&stage)
        .arg("gocacher")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(&bin, planted(&marker)).unwrap();
    runner.next_job("push", serde_json::json!({}), "alice");
    let run = runner.run_action(&with, &url);
    assert!(
        run.log.contains("the archive kept in")
            && run.log.contains("does not match its SHA256SUMS entry"),
        "{}",
        run.log
    );
    assert_eq!(sha256_file(&run.env["GOCACHEPROG"]), release.binary_sha256);
    assert!(!marker.exists(), "the planted binary ran");

    // Planted again, and the release out of reach: as a failed download.
    std::fs::write(&bin, planted(&marker)).unwrap();
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&stage)
        .arg("gocacher")
        .status()
        .unwrap();
    assert!(st.success());
    runner.next_job("push", serde_json::json!({}), "alice");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let path = format!(
        "/usr/bin:/bin:{}",
        runner.root.path().join("nothing").display()
    );
    let run = runner.run_action(
        &with,
        &[
            ("GOCACHER_RELEASE_URL", dead.as_str()),
            ("PATH", path.as_str()),
        ],
    );
    assert!(run.log.contains("::warning"), "{}", run.log);
    assert!(run.log.contains("no cargo on this runner"), "{}", run.log);
    assert!(
        !run.env.contains_key("GOCACHEPROG"),
        "{:?}\n{}",
        run.env,
        run.log
    );
    assert_eq!(run.outputs["configure"]["read-only"], "true");
    assert!(!marker.exists(), "the planted binary ran");
}

/// A `cargo` for the runner's PATH that stands for `cargo install --root R`
/// of the action's source: it puts the gocacher this test suite built at
/// R/bin/gocacher and counts its runs in `count`.
fn cargo_stand_in(dir: &Path, count: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!(
        "#!/bin/sh\nroot=\nwhile [ $# -gt 0 ]; do [ \"$1\" = --root ] && root=$2; shift; done\n\
         mkdir -p \"$root/bin\" && cp '{}' \"$root/bin/gocacher\" && echo built >> '{}'\n",
        env!("CARGO_BIN_EXE_gocacher"),
        count.display()
    );
    let cargo = dir.join("cargo");
    std::fs::write(&cargo, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `pull_request_target` job (untrusted: its later steps may run a
/// fork's code) that builds the action's source leaves nothing a later job
/// runs: its code replaces every gocacher file on the runner's disk, and
/// the next push job on the same runner builds its own and never runs the
/// planted one. The action has no nested action (actions/cache) through
/// which such a job could save a build for the default branch's scope.
#[test]
fn untrusted_job_plants_no_binary() {
    let mut runner = Runner::new(
        "pull_request_target",
        serde_json::json!({"pull_request": {
            "head": {"repo": {"full_name": "mallory/widgets"}},
            "base": {"repo": {"full_name": "acme/widgets"}}}}),
        "mallory",
    );
    let marker = runner.root.path().join("planted-ran");
    let count = runner.root.path().join("cargo-runs");
    let bin_dir = runner.root.path().join("cargo-bin");
    cargo_stand_in(&bin_dir, &count);
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let with = [("version", "source"), ("fix-mtimes", "false")];
    let extra = [("PATH", path.as_str())];
    let run = runner.run_action(&with, &extra);
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "true", "{}", run.log);
    assert!(
        run.log.contains("built gocacher from source"),
        "{}",
        run.log
    );
    assert!(plant_everywhere(runner.root.path(), &marker) > 0);

    runner.next_job("push", serde_json::json!({}), "alice");
    let run = runner.run_action(&with, &extra);
    assert!(
        !marker.exists(),
        "the push job ran the planted binary:\n{}",
        run.log
    );
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "false", "{}", run.log);
    assert_eq!(
        sha256_file(&run.env["GOCACHEPROG"]),
        sha256_file(env!("CARGO_BIN_EXE_gocacher"))
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        2,
        "the push job built its own"
    );
    let action =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("action.yml")).unwrap();
    assert!(
        !action
            .lines()
            .any(|l| l.trim_start().starts_with("uses:") || l.trim_start().starts_with("- uses:")),
        "action.yml runs a nested action"
    );
}

/// The signing key reaches only jobs that build reviewed code: a push,
/// schedule, manual, merge-queue or release job gets `sign-key` as a file;
/// a pull request from a branch of the repository (it writes) gets no file
/// holding it anywhere under RUNNER_TEMP and no GOCACHER_SIGN_KEY*
/// variable, and signs only with `pull-request-sign-key` when given one.
#[test]
fn signing_key_only_for_reviewed_code() {
    let release = Release::serve(false);
    let main_key = "ab".repeat(32);
    let pr_key = "cd".repeat(32);
    let same_repo = serde_json::json!({"pull_request": {
        "head": {"repo": {"full_name": "acme/widgets"}},
        "base": {"repo": {"full_name": "acme/widgets"}}}});
    let url = [("GOCACHER_RELEASE_URL", release.url.as_str())];
    let key_vars = |run: &runner::ActionRun| -> Vec<String> {
        run.env
            .keys()
            .filter(|k| k.starts_with("GOCACHER_SIGN_KEY"))
            .cloned()
            .collect()
    };
    let temp = |r: &Runner| r.root.path().join("temp");

    // A same-repository pull request with only the main key: it writes,
    // unsigned, and the key is nowhere it can read.
    let runner = Runner::new("pull_request", same_repo.clone(), "renovate[bot]");
    let run = runner.run_action(
        &[
            ("version", VERSION),
            ("fix-mtimes", "false"),
            ("sign-key", &main_key),
        ],
        &url,
    );
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "false", "{}", run.log);
    assert_eq!(key_vars(&run), Vec::<String>::new(), "{}", run.log);
    assert_eq!(
        files_holding(&temp(&runner), &main_key),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(
        run.log.contains("no signing key in a pull_request job")
            && run.log.contains("what this job writes is unsigned"),
        "{}",
        run.log
    );

    for event in [
        "push",
        "schedule",
        "workflow_dispatch",
        "merge_group",
        "release",
    ] {
        let runner = Runner::new(event, serde_json::json!({}), "alice");
        let run = runner.run_action(
            &[
                ("version", VERSION),
                ("fix-mtimes", "false"),
                ("sign-key", &main_key),
                ("pull-request-sign-key", &pr_key),
            ],
            &url,
        );
        let file = &run.env["GOCACHER_SIGN_KEY_FILE"];
        assert_eq!(
            std::fs::read_to_string(file).unwrap().trim(),
            main_key,
            "{event}"
        );
        assert_eq!(
            files_holding(&temp(&runner), &pr_key),
            Vec::<std::path::PathBuf>::new()
        );
        assert!(run
            .log
            .contains("signs what it writes with the sign-key input's key"));
    }

    // With a pull-request key: that key alone.
    let runner = Runner::new("pull_request", same_repo, "alice");
    let run = runner.run_action(
        &[
            ("version", VERSION),
            ("fix-mtimes", "false"),
            ("sign-key", &main_key),
            ("pull-request-sign-key", &pr_key),
            ("trust-key", &"ef".repeat(32)),
        ],
        &url,
    );
    let file = &run.env["GOCACHER_SIGN_KEY_FILE"];
    assert_eq!(std::fs::read_to_string(file).unwrap().trim(), pr_key);
    assert_eq!(
        files_holding(&temp(&runner), &main_key),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(key_vars(&run), vec!["GOCACHER_SIGN_KEY_FILE".to_string()]);

    // Untrusted events and forks get neither key.
    for (event, payload) in [
        ("pull_request_target", serde_json::json!({})),
        ("workflow_run", serde_json::json!({})),
        (
            "pull_request",
            serde_json::json!({"pull_request": {
                "head": {"repo": {"full_name": "mallory/widgets"}},
                "base": {"repo": {"full_name": "acme/widgets"}}}}),
        ),
    ] {
        let runner = Runner::new(event, payload, "mallory");
        let run = runner.run_action(
            &[
                ("version", VERSION),
                ("fix-mtimes", "false"),
                ("read-only", "false"),
                ("sign-key", &main_key),
                ("pull-request-sign-key", &pr_key),
            ],
            &url,
        );
        assert_eq!(key_vars(&run), Vec::<String>::new(), "{event}\n{}", run.log);
        assert_eq!(
            files_holding(&temp(&runner), &main_key),
            Vec::<std::path::PathBuf>::new()
        );
        assert_eq!(
            files_holding(&temp(&runner), &pr_key),
            Vec::<std::path::PathBuf>::new()
        );
    }
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
