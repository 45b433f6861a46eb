//! GitHub Actions: whether a job may write the shared cache, and with
//! which signing key.
//!
//! `gocacher github-read-only` (used by the action's configure step)
//! prints `true` or `false`, a tab, the key input the job may sign with
//! ([`Key::input`]), a tab and the reason. A job writes only when
//! the code it builds was put there by someone with write access to the
//! repository: pushes, schedules, manual runs, merge queues, releases and
//! pull requests whose branch lives in the repository itself. Everything
//! else reads only: pull requests from forks, Dependabot's pull requests
//! (treated by GitHub as a fork's), and events that may build code nobody
//! trusted yet (`pull_request_target`, `workflow_run`, `issue_comment`, ...).
//! When the event cannot be read, the answer is read-only.
//!
//! The same command says which signing key a writing job may hold. Writing
//! and signing are different trusts: a job that writes feeds readers that
//! do not check signatures, while a signature makes an entry good for
//! every reader that trusts the key. The private key is readable by every
//! later step of a job that holds it (a dependency's `init()` under `go
//! test` included), so the action's `sign-key` reaches only the events that
//! build reviewed code ([`SIGNING_EVENTS`]: pushes and manual runs on the
//! default branch, schedules, merge queues, releases).
//! A pull request from a branch of the repository (a Renovate bump, a bot's
//! branch) runs code nobody has reviewed yet: it may write, and signs only
//! with a key of its own (`pull-request-sign-key`), which only pull-request
//! readers trust.

use serde_json::Value;

/// Events started only by people or automation with write access, building
/// the repository's own refs.
const TRUSTED_EVENTS: &[&str] = &[
    "push",
    "schedule",
    "workflow_dispatch",
    "merge_group",
    "release",
    "repository_dispatch",
    "create",
];

/// The trusted events whose jobs get the `sign-key` input's key (pushes
/// and manual runs only on the default branch: see [`BRANCH_EVENTS`]).
const SIGNING_EVENTS: &[&str] = &[
    "push",
    "schedule",
    "workflow_dispatch",
    "merge_group",
    "release",
];

/// Signing events that anyone with write access can start on any branch
/// (a push of an unreviewed branch, a manual run of one): they get
/// `sign-key` only when their ref is the repository's default branch.
const BRANCH_EVENTS: &[&str] = &["push", "workflow_dispatch"];

/// Events that carry a pull request whose head is checked out.
const PULL_REQUEST_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
];

/// Which of the action's key inputs a job may sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `sign-key`: trusted by every reader.
    Main,
    /// `pull-request-sign-key`: trusted by pull-request readers only.
    PullRequest,
    /// No key: whatever the job writes is unsigned.
    None,
}

impl Key {
    /// The action input that holds this key, or `none`.
    pub fn input(self) -> &'static str {
        match self {
            Key::Main => "sign-key",
            Key::PullRequest => "pull-request-sign-key",
            Key::None => "none",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub read_only: bool,
    /// The key the job may sign with when it writes.
    pub key: Key,
    pub reason: String,
}

fn read_only(reason: String) -> Decision {
    Decision {
        read_only: true,
        key: Key::None,
        reason,
    }
}

fn writes(key: Key, reason: String) -> Decision {
    Decision {
        read_only: false,
        key,
        reason,
    }
}

/// The decision for an event: its name, its payload (the file
/// GITHUB_EVENT_PATH names, when readable), the repository running the
/// workflow, the actor and the ref the job runs on (GITHUB_REF).
pub fn decide(
    event_name: &str,
    event: Option<&Value>,
    repository: &str,
    actor: &str,
    git_ref: &str,
) -> Decision {
    if TRUSTED_EVENTS.contains(&event_name) {
        let reason = format!("a {event_name} event in {repository}");
        if !SIGNING_EVENTS.contains(&event_name) {
            return writes(Key::None, reason);
        }
        if BRANCH_EVENTS.contains(&event_name) {
            let default = event
                .and_then(|e| e.pointer("/repository/default_branch"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if default.is_empty() {
                return writes(
                    Key::None,
                    format!("{reason}, whose payload names no default branch"),
                );
            }
            if git_ref != format!("refs/heads/{default}") {
                return writes(
                    Key::None,
                    format!("{reason} on {git_ref}, not the default branch {default}"),
                );
            }
        }
        return writes(Key::Main, reason);
    }
    if !PULL_REQUEST_EVENTS.contains(&event_name) {
        if event_name.is_empty() {
            return read_only("GITHUB_EVENT_NAME is not set".into());
        }
        return read_only(format!("a {event_name} event may build untrusted code"));
    }
    let Some(pr) = event.and_then(|e| e.get("pull_request")) else {
        return read_only(format!("the {event_name} event's payload is unreadable"));
    };
    let name = |v: &Value| {
        v.pointer("/repo/full_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let head = pr.get("head").map(name).unwrap_or_default();
    let base = pr
        .get("base")
        .map(name)
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| repository.to_string());
    if head.is_empty() {
        return read_only("a pull request whose head repository is gone".into());
    }
    if !head.eq_ignore_ascii_case(&base) {
        return read_only(format!("a pull request from the fork {head}"));
    }
    if actor == "dependabot[bot]" {
        return read_only("a pull request by Dependabot".into());
    }
    writes(
        Key::PullRequest,
        format!("a pull request from a branch of {base}"),
    )
}

/// The decision for this process's GitHub Actions environment.
pub fn decide_from_env() -> Decision {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let event = std::env::var_os("GITHUB_EVENT_PATH")
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    decide(
        &var("GITHUB_EVENT_NAME"),
        event.as_ref(),
        &var("GITHUB_REPOSITORY"),
        &var("GITHUB_ACTOR"),
        &var("GITHUB_REF"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAIN: &str = "refs/heads/main";

    fn repo(default_branch: &str) -> Value {
        json!({"repository": {"default_branch": default_branch}})
    }

    fn pr(head: &str, base: &str) -> Value {
        json!({"pull_request": {"head": {"repo": {"full_name": head}}, "base": {"repo": {"full_name": base}}}})
    }

    #[test]
    fn decisions() {
        let d = |name: &str, ev: Option<Value>, actor: &str| {
            decide(name, ev.as_ref(), "acme/widgets", actor, MAIN).read_only
        };
        assert!(!d("push", None, "alice"));
        assert!(!d("schedule", None, "alice"));
        assert!(!d("merge_group", None, "alice"));
        assert!(!d(
            "pull_request",
            Some(pr("acme/widgets", "acme/widgets")),
            "alice"
        ));
        assert!(!d(
            "pull_request",
            Some(pr("Acme/Widgets", "acme/widgets")),
            "alice"
        ));
        assert!(d(
            "pull_request",
            Some(pr("mallory/widgets", "acme/widgets")),
            "mallory"
        ));
        assert!(d(
            "pull_request",
            Some(pr("acme/widgets", "acme/widgets")),
            "dependabot[bot]"
        ));
        assert!(d("pull_request", None, "alice"));
        assert!(d(
            "pull_request",
            Some(json!({"pull_request": {"head": {"repo": null}}})),
            "a"
        ));
        assert!(d(
            "pull_request_target",
            Some(pr("acme/widgets", "acme/widgets")),
            "alice"
        ));
        assert!(d("workflow_run", None, "alice"));
        assert!(d("issue_comment", None, "alice"));
        assert!(d("", None, "alice"));
        let key = |name: &str, ev: Option<Value>, actor: &str| {
            decide(name, ev.as_ref(), "acme/widgets", actor, MAIN).key
        };
        for event in [
            "push",
            "schedule",
            "workflow_dispatch",
            "merge_group",
            "release",
        ] {
            assert_eq!(
                key(event, Some(repo("main")), "alice"),
                Key::Main,
                "{event}"
            );
        }
        // Pushes and manual runs sign only on the default branch.
        for event in ["push", "workflow_dispatch"] {
            let on =
                |r: &str, ev: Option<Value>| decide(event, ev.as_ref(), "acme/widgets", "a", r);
            assert_eq!(on("refs/heads/feature", Some(repo("main"))).key, Key::None);
            assert_eq!(on(MAIN, Some(repo("trunk"))).key, Key::None);
            assert_eq!(on(MAIN, None).key, Key::None);
            assert_eq!(on("refs/tags/main", Some(repo("main"))).key, Key::None);
            assert!(!on("refs/heads/feature", Some(repo("main"))).read_only);
            assert_eq!(
                on("refs/heads/feature", Some(repo("main"))).reason,
                format!("a {event} event in acme/widgets on refs/heads/feature, not the default branch main")
            );
        }
        for event in [
            "repository_dispatch",
            "create",
            "pull_request_target",
            "workflow_run",
        ] {
            assert_eq!(key(event, None, "alice"), Key::None, "{event}");
        }
        let same = Some(pr("acme/widgets", "acme/widgets"));
        assert_eq!(key("pull_request", same.clone(), "alice"), Key::PullRequest);
        assert_eq!(key("pull_request", same, "dependabot[bot]"), Key::None);
        assert_eq!(
            key("pull_request", Some(pr("mallory/w", "acme/widgets")), "m"),
            Key::None
        );
        assert_eq!(
            decide(
                "pull_request",
                Some(&pr("mallory/w", "acme/widgets")),
                "acme/widgets",
                "m",
                MAIN
            )
            .reason,
            "a pull request from the fork mallory/w"
        );
    }
}
