//! GitHub Actions: whether a job may write the shared cache.
//!
//! `gocacher github-read-only` (used by the action's `read-only: auto`)
//! prints `true` or `false`, a tab and the reason. A job writes only when
//! the code it builds was put there by someone with write access to the
//! repository: pushes, schedules, manual runs, merge queues, releases and
//! pull requests whose branch lives in the repository itself. Everything
//! else reads only: pull requests from forks, Dependabot's pull requests
//! (treated by GitHub as a fork's), and events that may build code nobody
//! trusted yet (`pull_request_target`, `workflow_run`, `issue_comment`, ...).
//! When the event cannot be read, the answer is read-only.

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

/// Events that carry a pull request whose head is checked out.
const PULL_REQUEST_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
];

#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub read_only: bool,
    pub reason: String,
}

fn read_only(reason: String) -> Decision {
    Decision {
        read_only: true,
        reason,
    }
}

fn writes(reason: String) -> Decision {
    Decision {
        read_only: false,
        ..read_only(reason)
    }
}

/// The decision for an event: its name, its payload (the file
/// GITHUB_EVENT_PATH names, when readable), the repository running the
/// workflow and the actor.
pub fn decide(event_name: &str, event: Option<&Value>, repository: &str, actor: &str) -> Decision {
    if TRUSTED_EVENTS.contains(&event_name) {
        return writes(format!("a {event_name} event in {repository}"));
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
    writes(format!("a pull request from a branch of {base}"))
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
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pr(head: &str, base: &str) -> Value {
        json!({"pull_request": {"head": {"repo": {"full_name": head}}, "base": {"repo": {"full_name": base}}}})
    }

    #[test]
    fn decisions() {
        let d = |name: &str, ev: Option<Value>, actor: &str| {
            decide(name, ev.as_ref(), "acme/widgets", actor).read_only
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
        assert_eq!(
            decide(
                "pull_request",
                Some(&pr("mallory/w", "acme/widgets")),
                "acme/widgets",
                "m"
            )
            .reason,
            "a pull request from the fork mallory/w"
        );
    }
}
