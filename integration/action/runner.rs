//! A GitHub Actions runner, as far as the action's test needs one: a
//! runner machine (its temp dir, tool cache, home and the job's files), the
//! composite action's steps run from `action.yml` with its `${{ }}`
//! expressions evaluated, `GITHUB_ENV` and `GITHUB_OUTPUT` read back, the
//! job's next step, and a release served on 127.0.0.1 as GitHub serves
//! release assets.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::support::Stats;

/// The release the served directory holds.
pub const VERSION: &str = "v9.9.9";
/// What `runner_target` in action/lib.sh names for Linux/X64.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

#[derive(Deserialize)]
struct Action {
    inputs: BTreeMap<String, Input>,
    runs: Runs,
}

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    default: Option<String>,
}

#[derive(Deserialize)]
struct Runs {
    using: String,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    id: Option<String>,
    #[serde(rename = "if")]
    cond: Option<String>,
    run: Option<String>,
    uses: Option<String>,
    shell: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// What a run of the action left behind.
pub struct ActionRun {
    /// Every line the steps printed (annotations included).
    pub log: String,
    /// GITHUB_ENV as the job's later steps see it.
    pub env: BTreeMap<String, String>,
    /// Each step's outputs, by step id.
    pub outputs: BTreeMap<String, BTreeMap<String, String>>,
}

/// One runner machine: its temp dir, tool cache, home and the job's files.
pub struct Runner {
    pub root: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Runner {
    /// A fresh runner for an event (`payload` becomes GITHUB_EVENT_PATH).
    pub fn new(event: &str, payload: serde_json::Value, actor: &str) -> Runner {
        let root = tempfile::tempdir().unwrap();
        let p = |n: &str| root.path().join(n);
        for d in ["temp", "tool-cache", "home", "gocache"] {
            std::fs::create_dir_all(p(d)).unwrap();
        }
        std::fs::write(p("event.json"), payload.to_string()).unwrap();
        std::fs::write(p("env"), "").unwrap();
        std::fs::write(p("summary.md"), "").unwrap();
        let s = |x: &str| x.to_string();
        let path = |n: &str| p(n).display().to_string();
        let vars = vec![
            (s("GITHUB_ACTIONS"), s("true")),
            (s("CI"), s("true")),
            (s("GITHUB_EVENT_NAME"), s(event)),
            (s("GITHUB_EVENT_PATH"), path("event.json")),
            (s("GITHUB_REPOSITORY"), s("acme/widgets")),
            (s("GITHUB_ACTOR"), s(actor)),
            (s("GITHUB_WORKFLOW"), s("CI")),
            (s("GITHUB_JOB"), s("test")),
            (
                s("GITHUB_REF"),
                s(if event == "push" {
                    "refs/heads/main"
                } else {
                    "refs/pull/7/merge"
                }),
            ),
            (s("GITHUB_ENV"), path("env")),
            (s("GITHUB_STEP_SUMMARY"), path("summary.md")),
            (s("RUNNER_OS"), s("Linux")),
            (s("RUNNER_ARCH"), s("X64")),
            (s("RUNNER_TEMP"), path("temp")),
            (s("RUNNER_TOOL_CACHE"), path("tool-cache")),
            // A new machine: gocacher's default cache dir is under HOME.
            (s("HOME"), path("home")),
            (s("PATH"), std::env::var("PATH").unwrap()),
        ];
        let vars = if event == "pull_request" {
            let mut v = vars;
            v.push((s("GITHUB_BASE_REF"), s("main")));
            v.push((s("GITHUB_HEAD_REF"), s("feature")));
            v
        } else {
            vars
        };
        Runner { root, vars }
    }

    /// The runner's next job, for another event: the tool cache, home and
    /// GOCACHE stay (a self-hosted runner's disk); RUNNER_TEMP, GITHUB_ENV
    /// and the summary start empty, as the runner makes them for each job.
    pub fn next_job(&mut self, event: &str, payload: serde_json::Value, actor: &str) {
        let root = self.root.path();
        std::fs::remove_dir_all(root.join("temp")).unwrap();
        std::fs::create_dir_all(root.join("temp")).unwrap();
        std::fs::write(root.join("event.json"), payload.to_string()).unwrap();
        std::fs::write(root.join("env"), "").unwrap();
        std::fs::write(root.join("summary.md"), "").unwrap();
        for (k, v) in &mut self.vars {
            match k.as_str() {
                "GITHUB_EVENT_NAME" => *v = event.to_string(),
                "GITHUB_ACTOR" => *v = actor.to_string(),
                _ => {}
            }
        }
    }

    pub fn summary(&self) -> String {
        std::fs::read_to_string(self.root.path().join("summary.md")).unwrap()
    }

    /// Runs the action's steps with these inputs (`with:`), as the runner
    /// does for a composite action.
    pub fn run_action(&self, with: &[(&str, &str)], extra: &[(&str, &str)]) -> ActionRun {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let action: Action =
            serde_norway::from_str(&std::fs::read_to_string(repo.join("action.yml")).unwrap())
                .expect("action.yml parses");
        assert_eq!(action.runs.using, "composite");
        let mut inputs: BTreeMap<String, String> = action
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.default.clone().unwrap_or_default()))
            .collect();
        for (k, v) in with {
            assert!(inputs.contains_key(*k), "action.yml has no input {k}");
            inputs.insert(k.to_string(), v.to_string());
        }
        let mut outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut log = String::new();
        for (i, step) in action.runs.steps.iter().enumerate() {
            let ctx = Ctx {
                inputs: &inputs,
                outputs: &outputs,
            };
            if let Some(cond) = &step.cond {
                if !truthy(&ctx.eval(cond)) {
                    continue;
                }
            }
            // A nested action (actions/cache, say) would bring state from
            // other jobs that this emulation does not model.
            assert!(step.uses.is_none(), "cannot emulate {:?}", step.uses);
            let run = step.run.as_ref().expect("a step with run or uses");
            assert_eq!(step.shell.as_deref(), Some("bash"));
            let output_file = self.root.path().join(format!("output-{i}"));
            std::fs::write(&output_file, "").unwrap();
            let script = self.root.path().join(format!("step-{i}.sh"));
            std::fs::write(&script, ctx.interpolate(run)).unwrap();
            let mut cmd = Command::new("bash");
            cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
                .arg(&script)
                .env_clear()
                .envs(self.vars.iter().map(|(k, v)| (k, v)))
                .envs(read_env_file(&self.root.path().join("env")))
                .env("GITHUB_ACTION_PATH", repo)
                .env("GITHUB_OUTPUT", &output_file)
                .envs(extra.iter().copied());
            for (k, v) in &step.env {
                cmd.env(k, ctx.interpolate(v));
            }
            let out = cmd.output().unwrap();
            log += &String::from_utf8_lossy(&out.stdout);
            log += &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "step {i} failed:\n{log}");
            if let Some(id) = &step.id {
                outputs.insert(id.clone(), read_env_file(&output_file));
            }
        }
        ActionRun {
            log,
            env: read_env_file(&self.root.path().join("env")),
            outputs,
        }
    }

    /// The job's next step: `go ARGS` in `dir` with the runner's variables,
    /// what the action exported, and the AWS credentials (as
    /// aws-actions/configure-aws-credentials would export them).
    pub fn go(
        &self,
        action: &ActionRun,
        dir: &Path,
        args: &[&str],
        aws: &[(String, String)],
    ) -> GoStep {
        let stats = self.root.path().join("stats.json");
        let _ = std::fs::remove_file(&stats);
        let mut cmd = Command::new("go");
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .envs(&action.env)
            .envs(aws.iter().map(|(k, v)| (k, v)))
            .env("GOCACHE", self.root.path().join("gocache"))
            .env("GOCACHER_STATS_FILE", &stats)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "");
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "go {args:?} failed:\n{stdout}\n{stderr}"
        );
        let stats: Stats = serde_json::from_slice(
            &std::fs::read(&stats).expect("gocacher ran and wrote its stats file"),
        )
        .unwrap();
        GoStep { stdout, stats }
    }
}

pub struct GoStep {
    pub stdout: String,
    pub stats: Stats,
}

/// The `${{ }}` expressions action.yml uses: contexts, `'literals'`, `==`
/// and `||`. Anything else fails the test, so action.yml stays within
/// what this emulation checks.
struct Ctx<'a> {
    inputs: &'a BTreeMap<String, String>,
    outputs: &'a BTreeMap<String, BTreeMap<String, String>>,
}

impl Ctx<'_> {
    fn interpolate(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${{") {
            out += &rest[..start];
            let end = rest[start..].find("}}").expect("unclosed ${{") + start;
            out += &self.eval(&rest[start + 3..end]);
            rest = &rest[end + 2..];
        }
        out + rest
    }

    fn eval(&self, expr: &str) -> String {
        let expr = expr.trim();
        let expr = expr
            .strip_prefix("${{")
            .and_then(|e| e.strip_suffix("}}"))
            .unwrap_or(expr)
            .trim();
        if expr.contains("||") {
            return expr
                .split("||")
                .map(|e| self.eval(e))
                .find(|v| truthy(v))
                .unwrap_or_default();
        }
        if let Some((a, b)) = expr.split_once("==") {
            return (self.eval(a) == self.eval(b)).to_string();
        }
        if let Some(lit) = expr.strip_prefix('\'').and_then(|e| e.strip_suffix('\'')) {
            return lit.to_string();
        }
        let parts: Vec<&str> = expr.split('.').collect();
        match parts.as_slice() {
            ["inputs", name] => self.inputs.get(*name).cloned().expect("a declared input"),
            ["steps", id, "outputs", name] => self
                .outputs
                .get(*id)
                .and_then(|o| o.get(*name))
                .cloned()
                .unwrap_or_default(),
            ["github", "action_repository"] => "acme/gocacher".into(),
            ["github", "action_ref"] => "main".into(),
            ["runner", "os"] => "Linux".into(),
            ["runner", "arch"] => "X64".into(),
            _ => panic!("action.yml uses an expression this emulation does not know: {expr}"),
        }
    }
}

fn truthy(v: &str) -> bool {
    !v.is_empty() && v != "false" && v != "0"
}

/// A GITHUB_ENV or GITHUB_OUTPUT file: `NAME=value` lines and
/// `NAME<<DELIMITER` blocks.
fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut map = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            map.insert(name.to_string(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            map.insert(name.to_string(), value.to_string());
        }
    }
    map
}

/// A release directory (`VERSION/ARCHIVE` and `VERSION/SHA256SUMS`) served
/// over HTTP on 127.0.0.1, as GitHub serves release assets. With
/// `tamper`, the archive differs from what SHA256SUMS lists.
pub struct Release {
    /// Kept so the served files live as long as the server.
    _dir: tempfile::TempDir,
    pub url: String,
    pub binary_sha256: String,
}

impl Release {
    pub fn serve(tamper: bool) -> Release {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage/gocacher");
        std::fs::create_dir_all(&stage).unwrap();
        let bin = std::fs::read(env!("CARGO_BIN_EXE_gocacher")).unwrap();
        std::fs::write(stage.join("gocacher"), &bin).unwrap();
        let rel = dir.path().join(VERSION);
        std::fs::create_dir_all(&rel).unwrap();
        let archive = format!("gocacher-{TARGET}.tar.gz");
        let st = Command::new("tar")
            .arg("-czf")
            .arg(rel.join(&archive))
            .arg("-C")
            .arg(dir.path().join("stage"))
            .arg("gocacher")
            .status()
            .unwrap();
        assert!(st.success());
        let sum = hex::encode(Sha256::digest(std::fs::read(rel.join(&archive)).unwrap()));
        std::fs::write(
            rel.join("SHA256SUMS"),
            format!(
                "{sum}  {archive}\n{}  gocacher-aarch64-apple-darwin.tar.gz\n",
                "0".repeat(64)
            ),
        )
        .unwrap();
        if tamper {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(rel.join(&archive))
                .unwrap();
            f.write_all(b"tampered").unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let file = root.join(path.trim_start_matches('/'));
                let reply = match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = conn.write_all(&reply);
            }
        });
        Release {
            _dir: dir,
            url,
            binary_sha256: hex::encode(Sha256::digest(&bin)),
        }
    }
}
