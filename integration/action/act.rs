//! Runs workflows under nektos/act (pinned, installed by
//! `integration/tools/install-act.sh`), a GitHub Actions runner written
//! independently of this project, with `-P ubuntu-latest=-self-hosted`: the
//! job's steps run on this machine. `uses: OWNER/gocacher@VERSION` is mapped
//! to a copy of this repository with `--local-repository`, and act handles
//! `actions/checkout` of the local repository itself.
//!
//! A [`Machine`] is one runner: act keeps its workspace, `RUNNER_TEMP` and
//! tool cache under the machine's HOME, so a new machine is a new runner and
//! the same machine a self-hosted one that keeps its disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `uses:` of the action in the workflows the tests run (the docs' own).
pub const ACTION: &str = "OWNER/gocacher@v0.2.0";
/// The release that `ACTION`'s ref names.
pub const VERSION: &str = "v0.2.0";
/// What `runner_target` in action/lib.sh names for Linux/X64.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The repository the workflows run in.
pub const REPOSITORY: &str = "acme/widgets";

/// The act binary, which .ci/run installs; a missing one fails the test
/// (it is a dependency of the suite, not an optional extra).
fn act_bin() -> PathBuf {
    let tools = std::env::var_os("GOCACHER_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/gocacher-tools")
        });
    let bin = tools.join("bin/act");
    assert!(
        bin.exists(),
        "{} is missing: run `bash integration/tools/install-act.sh` (as .ci/run does)",
        bin.display()
    );
    bin
}

/// A copy of this repository's tracked files (as GitHub checks the action
/// out), made once per test process.
fn action_source() -> &'static Path {
    static SOURCE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let out = Command::new("git")
                .args([
                    "ls-files",
                    "-z",
                    "--cached",
                    "--others",
                    "--exclude-standard",
                ])
                .current_dir(root)
                .output()
                .unwrap();
            assert!(out.status.success(), "git ls-files in {}", root.display());
            for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                let name = std::str::from_utf8(name).unwrap();
                let from = root.join(name);
                if !from.is_file() {
                    continue;
                }
                let to = dir.path().join(name);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&from, &to).unwrap();
            }
            dir
        })
        .path()
}

/// One job to run: a workflow and the event it runs for.
pub struct Job {
    /// The workflow file's text.
    pub workflow: String,
    pub event: String,
    /// The event payload (`-e`): `repository` (and `ref` for a push or
    /// manual run, the default branch) are added when it lacks them.
    pub payload: serde_json::Value,
    pub secrets: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    /// Environment for the job (`--env`).
    pub env: Vec<(String, String)>,
    /// Whether cargo is on the runner's PATH.
    pub cargo: bool,
    pub actor: String,
}

impl Job {
    pub fn new(workflow: &str, event: &str) -> Job {
        Job {
            workflow: workflow.to_string(),
            event: event.to_string(),
            payload: serde_json::json!({}),
            secrets: Vec::new(),
            vars: Vec::new(),
            env: Vec::new(),
            cargo: false,
            actor: "alice".to_string(),
        }
    }

    pub fn payload(mut self, p: serde_json::Value) -> Job {
        self.payload = p;
        self
    }
    pub fn secret(mut self, k: &str, v: &str) -> Job {
        self.secrets.push((k.into(), v.into()));
        self
    }
    pub fn var(mut self, k: &str, v: &str) -> Job {
        self.vars.push((k.into(), v.into()));
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Job {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn actor(mut self, a: &str) -> Job {
        self.actor = a.into();
        self
    }
    pub fn with_cargo(mut self) -> Job {
        self.cargo = true;
        self
    }
}

/// What a job left behind.
pub struct JobRun {
    pub ok: bool,
    /// act's log of the job: every step's output and annotations.
    pub log: String,
    /// The environment of the job's last step.
    pub env: BTreeMap<String, String>,
    /// A copy of `RUNNER_TEMP` at the job's end.
    pub runner_temp: PathBuf,
    _probe: tempfile::TempDir,
}

impl JobRun {
    /// Where the copy of `path`, a file in the job's RUNNER_TEMP, is.
    pub fn kept(&self, path: &str) -> PathBuf {
        let rel = Path::new(path)
            .strip_prefix(&self.env["RUNNER_TEMP"])
            .unwrap_or_else(|_| panic!("{path} is not under RUNNER_TEMP"));
        self.runner_temp.join(rel)
    }
}

/// The step the tests append to a job, after the workflow's own: it copies
/// what act deletes when the job ends (RUNNER_TEMP) and the environment of
/// the job's steps out for the test to read.
const PROBE_STEP: &str = r#"- name: test probe (added by the test harness)
  if: always()
  shell: bash
  run: |
    env -0 > "$ACT_PROBE_DIR/env"
    cp -a "$RUNNER_TEMP" "$ACT_PROBE_DIR/runner-temp"
"#;

/// `workflow` with `step` appended to its last job's steps, indented as
/// that job's steps are.
pub fn append_step(workflow: &str, step: &str) -> String {
    let indent = workflow
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("- "))
        .map(|l| l.len() - l.trim_start().len())
        .expect("the workflow has steps");
    let mut out = workflow.trim_end().to_string();
    out.push('\n');
    for line in step.lines() {
        out.push_str(&" ".repeat(indent));
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `workflow` with `input: value` added to the `with:` of its gocacher step.
pub fn with_input(workflow: &str, input: &str, value: &str) -> String {
    let lines: Vec<&str> = workflow.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(&format!("uses: {ACTION}")))
        .expect("the workflow uses the action");
    let with = (at + 1..lines.len())
        .find(|&i| lines[i].trim_start().starts_with("with:"))
        .expect("the gocacher step has with:");
    let indent = lines[with + 1].len() - lines[with + 1].trim_start().len();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.insert(with + 1, format!("{}{input}: {value}", " ".repeat(indent)));
    out.join("\n") + "\n"
}

/// How long one act run may take (`timeout`'s syntax).
const ACT_BOUND: &str = "600";

/// One runner machine (act's HOME).
pub struct Machine {
    pub home: tempfile::TempDir,
}

impl Drop for Machine {
    /// Stops what the machine's jobs left running (the module proxy the
    /// action starts outlives its job under act's host runner, where a
    /// GitHub runner stops it at the job's end).
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", "--"])
            .arg(self.home.path())
            .status();
    }
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    pub fn new() -> Machine {
        Machine {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// The runner's tool cache (`RUNNER_TOOL_CACHE`), kept between jobs.
    pub fn tool_cache(&self) -> PathBuf {
        self.home.path().join(".cache/act/tool_cache")
    }

    /// Runs `job` in a fresh clone of `repo` (a git repository; the
    /// workflow is written into the clone and committed there).
    pub fn run(&self, repo: &Path, job: &Job) -> JobRun {
        let probe = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let clone = work.path().join("widgets");
        crate::git(
            work.path(),
            &[
                "clone",
                "-q",
                &format!("file://{}", repo.display()),
                clone.to_str().unwrap(),
            ],
        );
        let github = format!("https://github.com/{REPOSITORY}");
        crate::git(&clone, &["remote", "set-url", "origin", &github]);
        let wf = clone.join(".github/workflows/ci.yml");
        std::fs::create_dir_all(wf.parent().unwrap()).unwrap();
        std::fs::write(&wf, append_step(&job.workflow, PROBE_STEP)).unwrap();
        crate::git(&clone, &["add", "."]);
        crate::git(&clone, &["commit", "-q", "-m", "workflow"]);
        // What every GitHub payload of these events holds, unless the
        // test says otherwise.
        let mut payload = job.payload.clone();
        let p = payload.as_object_mut().expect("the payload is an object");
        p.entry("repository").or_insert(serde_json::json!({
            "full_name": REPOSITORY, "default_branch": "main"}));
        if ["push", "workflow_dispatch"].contains(&job.event.as_str()) {
            p.entry("ref").or_insert("refs/heads/main".into());
        }
        let event = work.path().join("event.json");
        std::fs::write(&event, payload.to_string()).unwrap();

        let mut path: Vec<String> = vec![];
        let host_path = std::env::var("PATH").unwrap();
        for dir in host_path.split(':') {
            let has_cargo = Path::new(dir).join("cargo").exists();
            if job.cargo || !has_cargo {
                path.push(dir.to_string());
            }
        }
        // A job that hangs fails its test after ACT_BOUND instead of holding
        // the suite.
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "10", ACT_BOUND])
            .arg(act_bin())
            .current_dir(&clone)
            .env_clear()
            .env("PATH", path.join(":"))
            .env("HOME", self.home.path())
            .env("LANG", "C.UTF-8")
            .args([&job.event, "-W", ".github/workflows/ci.yml"])
            .args(["-P", "ubuntu-latest=-self-hosted"])
            .arg("--local-repository")
            .arg(format!("{ACTION}={}", action_source().display()))
            .arg("-e")
            .arg(&event)
            .args(["--actor", &job.actor])
            .args(["--defaultbranch", "main"])
            .args([
                "--env",
                &format!("ACT_PROBE_DIR={}", probe.path().display()),
            ]);
        // The Go environment of this machine (proxy, toolchain choice).
        for k in ["GOFLAGS", "GOTOOLCHAIN", "GOPROXY", "GONOSUMDB", "GOSUMDB"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        // Cargo's and rustup's homes, when cargo is on PATH.
        if job.cargo {
            for k in ["CARGO_HOME", "RUSTUP_HOME"] {
                let v = std::env::var(k).unwrap_or_else(|_| {
                    let home = std::env::var("HOME").unwrap();
                    format!("{home}/.{}", k.trim_end_matches("_HOME").to_lowercase())
                });
                cmd.env(k, v);
            }
        }
        for (k, v) in &job.env {
            cmd.args(["--env", &format!("{k}={v}")]);
        }
        for (k, v) in &job.secrets {
            cmd.args(["-s", &format!("{k}={v}")]);
        }
        for (k, v) in &job.vars {
            cmd.args(["--var", &format!("{k}={v}")]);
        }
        let out = cmd.output().unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |n: &str| std::fs::read(probe.path().join(n)).unwrap_or_default();
        let env: BTreeMap<String, String> = read("env")
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        JobRun {
            ok: out.status.success(),
            env,
            runner_temp: probe.path().join("runner-temp"),
            log,
            _probe: probe,
        }
    }
}
