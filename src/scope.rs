//! Scopes: which build manifest a go command reads and writes.
//!
//! A scope names one kind of go command in one place: the same repository,
//! CI job and branch, the same target platform and the same go subcommand
//! (`go build` and `go test` use different entries). The rules, also in
//! README.md:
//!
//! - `--scope NAME` names it outright (fallbacks only from `--scope-fallback`).
//! - In GitHub Actions: `github:REPO:WORKFLOW:JOB:REF`, where REF is
//!   `GITHUB_REF` (`refs/pull/N/merge` for a pull request); a pull request
//!   falls back to its base branch, `refs/heads/GITHUB_BASE_REF`.
//! - In GitLab CI: `gitlab:PROJECT:JOB:REF` with `CI_COMMIT_REF_NAME`;
//!   falls back to the merge request's target branch, then the default branch.
//! - Elsewhere: `dir:CWD`, the go command's working directory.
//!
//! Each derived name ends with `:GOOS-GOARCH:go SUBCOMMAND`.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub name: String,
    pub fallbacks: Vec<String>,
}

impl Scope {
    /// The scope from flags, else derived from this process's surroundings.
    pub fn resolve(flag: Option<String>, fallback_flag: Option<String>) -> Scope {
        let fallbacks = fallback_flag.map(|f| {
            f.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        });
        match flag.filter(|s| !s.trim().is_empty()) {
            Some(name) => Scope {
                name,
                fallbacks: fallbacks.unwrap_or_default(),
            },
            None => {
                let cwd = std::env::current_dir().unwrap_or_default();
                let mut s = derive(
                    |k| std::env::var(k).ok().filter(|v| !v.is_empty()),
                    &cwd,
                    parent_go_subcommand().as_deref(),
                );
                if let Some(f) = fallbacks {
                    s.fallbacks = f;
                }
                s
            }
        }
    }
}

/// The default scope from the environment, working directory and go
/// subcommand.
pub fn derive(env: impl Fn(&str) -> Option<String>, cwd: &Path, subcommand: Option<&str>) -> Scope {
    let goos = env("GOOS").unwrap_or_else(|| {
        match std::env::consts::OS {
            "macos" => "darwin",
            os => os,
        }
        .to_string()
    });
    let goarch = env("GOARCH").unwrap_or_else(|| {
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            arch => arch,
        }
        .to_string()
    });
    let tail = match subcommand {
        Some(sub) => format!(":{goos}-{goarch}:go {sub}"),
        None => format!(":{goos}-{goarch}:go"),
    };
    let var = |k: &str| env(k).unwrap_or_default();
    if env("GITHUB_ACTIONS").as_deref() == Some("true") {
        let base = format!(
            "github:{}:{}:{}",
            var("GITHUB_REPOSITORY"),
            var("GITHUB_WORKFLOW"),
            var("GITHUB_JOB")
        );
        let name = format!("{base}:{}{tail}", var("GITHUB_REF"));
        let fallbacks = env("GITHUB_BASE_REF")
            .map(|b| format!("{base}:refs/heads/{b}{tail}"))
            .into_iter()
            .filter(|f| *f != name)
            .collect();
        return Scope { name, fallbacks };
    }
    if env("GITLAB_CI").as_deref() == Some("true") {
        let base = format!("gitlab:{}:{}", var("CI_PROJECT_PATH"), var("CI_JOB_NAME"));
        let name = format!("{base}:{}{tail}", var("CI_COMMIT_REF_NAME"));
        let mut fallbacks: Vec<String> = Vec::new();
        for branch in [
            env("CI_MERGE_REQUEST_TARGET_BRANCH_NAME"),
            env("CI_DEFAULT_BRANCH"),
        ]
        .into_iter()
        .flatten()
        {
            let f = format!("{base}:{branch}{tail}");
            if f != name && !fallbacks.contains(&f) {
                fallbacks.push(f);
            }
        }
        return Scope { name, fallbacks };
    }
    Scope {
        name: format!("dir:{}{tail}", cwd.display()),
        fallbacks: Vec::new(),
    }
}

/// The subcommand of the go command that started us (`build`, `test`, ...).
pub fn parent_go_subcommand() -> Option<String> {
    go_subcommand(parent_go_args()?)
}

/// The arguments (after the program) of the go command that started us: the
/// nearest ancestor, within a few levels (wrappers such as `time` or a shell
/// may sit between), whose program is named `go`. Linux reads `/proc`;
/// other Unix systems ask `ps`; Windows has no cheap way and gets `None`
/// (the scope then names no subcommand). Looked up once per process: the
/// scope at start and the job summary at close both ask.
pub fn parent_go_args() -> Option<&'static [String]> {
    static ARGS: std::sync::OnceLock<Option<Vec<String>>> = std::sync::OnceLock::new();
    ARGS.get_or_init(find_parent_go_args).as_deref()
}

fn find_parent_go_args() -> Option<Vec<String>> {
    #[cfg(unix)]
    {
        let mut pid = std::os::unix::process::parent_id();
        for _ in 0..4 {
            if pid <= 1 {
                return None;
            }
            let (args, ppid) = process_args(pid)?;
            let is_go = args
                .first()
                .and_then(|a| Path::new(a).file_name())
                .is_some_and(|n| n == "go");
            if is_go {
                return Some(args[1..].to_vec());
            }
            pid = ppid;
        }
        None
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// A process's arguments and its parent's pid.
#[cfg(target_os = "linux")]
fn process_args(pid: u32) -> Option<(Vec<String>, u32)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some((args, ppid))
}

#[cfg(all(unix, not(target_os = "linux")))]
fn process_args(pid: u32) -> Option<(Vec<String>, u32)> {
    ps_args(pid)
}

/// A process's arguments and parent pid from `ps` (macOS and the BSDs have
/// no `/proc`). `ps` joins the arguments with spaces, so one holding a space
/// comes back split; the program name and the subcommand never do.
#[cfg(unix)]
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn ps_args(pid: u32) -> Option<(Vec<String>, u32)> {
    let out = std::process::Command::new("ps")
        .args(["-ww", "-o", "ppid=", "-o", "args=", "-p", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let ppid = words.next()?.parse().ok()?;
    Some((words.map(String::from).collect(), ppid))
}

/// The first word of a go command line that is not a flag (`-C DIR` is the
/// one flag cmd/go takes before its subcommand).
fn go_subcommand(args: &[String]) -> Option<String> {
    split_subcommand(args).map(|(sub, _)| sub.to_string())
}

/// A go command line's subcommand and the arguments after it.
pub fn split_subcommand(args: &[String]) -> Option<(&str, &[String])> {
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-C" => i += 2,
            a if a.starts_with('-') => i += 1,
            a => return Some((a, &args[i + 1..])),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[cfg(target_os = "linux")]
    #[test]
    fn ps_agrees_with_proc() {
        let me = std::process::id();
        let (ps, ps_ppid) = ps_args(me).expect("ps answers");
        let (proc, proc_ppid) = process_args(me).unwrap();
        assert_eq!(ps_ppid, proc_ppid);
        assert_eq!(ps.first(), proc.first());
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn github_pull_request_falls_back_to_base_branch() {
        let e = env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/widgets"),
            ("GITHUB_WORKFLOW", "CI"),
            ("GITHUB_JOB", "test"),
            ("GITHUB_REF", "refs/pull/42/merge"),
            ("GITHUB_BASE_REF", "main"),
            ("GOOS", "linux"),
            ("GOARCH", "arm64"),
        ]);
        let s = derive(e, Path::new("/w"), Some("test"));
        assert_eq!(
            s.name,
            "github:acme/widgets:CI:test:refs/pull/42/merge:linux-arm64:go test"
        );
        assert_eq!(
            s.fallbacks,
            ["github:acme/widgets:CI:test:refs/heads/main:linux-arm64:go test"]
        );
    }

    #[test]
    fn github_push_has_no_fallback() {
        let e = env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/widgets"),
            ("GITHUB_WORKFLOW", "CI"),
            ("GITHUB_JOB", "build"),
            ("GITHUB_REF", "refs/heads/main"),
            ("GOOS", "linux"),
            ("GOARCH", "amd64"),
        ]);
        let s = derive(e, Path::new("/w"), Some("build"));
        assert!(
            s.name.ends_with(":refs/heads/main:linux-amd64:go build"),
            "{}",
            s.name
        );
        assert!(s.fallbacks.is_empty());
    }

    #[test]
    fn gitlab_merge_request() {
        let e = env(&[
            ("GITLAB_CI", "true"),
            ("CI_PROJECT_PATH", "g/p"),
            ("CI_JOB_NAME", "unit"),
            ("CI_COMMIT_REF_NAME", "feature"),
            ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
            ("CI_DEFAULT_BRANCH", "main"),
            ("GOOS", "linux"),
            ("GOARCH", "amd64"),
        ]);
        let s = derive(e, Path::new("/w"), None);
        assert_eq!(s.name, "gitlab:g/p:unit:feature:linux-amd64:go");
        assert_eq!(s.fallbacks, ["gitlab:g/p:unit:main:linux-amd64:go"]);
    }

    #[test]
    fn elsewhere_the_working_directory() {
        let s = derive(
            env(&[("GOOS", "darwin"), ("GOARCH", "arm64")]),
            Path::new("/src/app"),
            Some("vet"),
        );
        assert_eq!(s.name, "dir:/src/app:darwin-arm64:go vet");
        assert!(s.fallbacks.is_empty());
    }

    #[test]
    fn flags_win() {
        let s = Scope::resolve(Some("nightly".into()), Some("main, release ,".into()));
        assert_eq!(s.name, "nightly");
        assert_eq!(s.fallbacks, ["main", "release"]);
    }

    #[test]
    fn subcommand_skips_flags() {
        let a = |v: &[&str]| go_subcommand(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["-C", "dir", "test", "./..."]).as_deref(), Some("test"));
        assert_eq!(a(&["build", "-o", "x"]).as_deref(), Some("build"));
        assert_eq!(a(&["-x"]), None);
    }
}
