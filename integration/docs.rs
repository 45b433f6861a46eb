//! The docs against the program and against themselves: the flag reference
//! in docs/CONFIGURATION.md is the binary's own `--help` text, and every
//! relative link in README.md, SECURITY.md and docs/ reaches a file (and,
//! with an anchor, one of its headings).
//!
//! `GOCACHER_BLESS=1 cargo test --release --test docs` rewrites the flag
//! reference from `--help` when a flag changes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The file that holds the generated flag reference.
const REFERENCE: &str = "docs/CONFIGURATION.md";
const BEGIN: &str = "<!-- BEGIN flag reference: generated from `gocacher --help` by integration/docs.rs; GOCACHER_BLESS=1 cargo test --release --test docs rewrites it -->";
const END: &str = "<!-- END flag reference -->";
/// Help is wrapped to this width whatever terminal the test runs in.
const COLUMNS: &str = "100";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `gocacher ARGS --help` as a user sees it on a 100-column terminal without
/// colours, with no `GOCACHER_*` variable set (clap would show their values).
fn help(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gocacher"));
    cmd.args(args)
        .arg("--help")
        .env("COLUMNS", COLUMNS)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GOCACHER_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "gocacher {args:?} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Trailing spaces are the terminal's business, not the reference's.
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The visible subcommands, as the top-level help lists them.
fn subcommands(top: &str) -> Vec<String> {
    let list = top
        .split("\nCommands:\n")
        .nth(1)
        .expect("gocacher --help lists no commands");
    list.lines()
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The generated section: each command's help in a fenced block of its own.
fn reference() -> String {
    let top = help(&[]);
    let mut out = format!("{BEGIN}\n\n### `gocacher`\n\n```text\n{top}\n```\n");
    let subs = subcommands(&top);
    assert!(
        ["check", "trim", "serve", "keygen", "fix-mtimes"]
            .iter()
            .all(|s| subs.iter().any(|t| t == s)),
        "subcommands read from --help: {subs:?}"
    );
    for sub in subs {
        let text = help(&[&sub]);
        out.push_str(&format!("\n### `gocacher {sub}`\n\n```text\n{text}\n```\n"));
    }
    out.push('\n');
    out.push_str(END);
    out
}

#[test]
fn flag_reference_matches_help() {
    let path = root().join(REFERENCE);
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{REFERENCE} has no line {BEGIN}"));
    let end = doc[start..]
        .find(END)
        .map(|i| start + i + END.len())
        .unwrap_or_else(|| panic!("{REFERENCE} has no line {END} after the BEGIN line"));
    let want = reference();
    let have = &doc[start..end];
    if have == want {
        return;
    }
    if std::env::var_os("GOCACHER_BLESS").is_some_and(|v| v == "1") {
        let blessed = format!("{}{want}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, blessed).unwrap();
        eprintln!("rewrote the flag reference in {REFERENCE}");
        return;
    }
    let (line, old, new) = have
        .lines()
        .zip(want.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, a.to_string(), b.to_string()))
        .unwrap_or_else(|| {
            let n = have.lines().count().min(want.lines().count());
            (
                n,
                have.lines().nth(n).unwrap_or("(end)").to_string(),
                want.lines().nth(n).unwrap_or("(end)").to_string(),
            )
        });
    panic!(
        "{REFERENCE}'s flag reference differs from `gocacher --help`, first at line {} of the \
         section:\n  docs: {old}\n  help: {new}\nGOCACHER_BLESS=1 cargo test --release --test docs \
         rewrites it.",
        line + 1
    );
}

/// The docs whose links are checked: README.md, SECURITY.md and docs/*.md.
fn docs(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("SECURITY.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// The lines of a markdown file outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens; a repeated heading gets -1, -2, ...
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for line in prose(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = seen.iter().filter(|(base, _)| *base == slug).count();
        let unique = match repeats {
            0 => slug.clone(),
            n => format!("{slug}-{n}"),
        };
        seen.push((slug, unique));
    }
    seen.into_iter().map(|(_, anchor)| anchor).collect()
}

/// The targets of inline links `[text](target)` outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        // Inline code may show link syntax without being a link.
        let line: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("");
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(close) = rest.find(')') else { break };
            let target = rest[..close].split_whitespace().next().unwrap_or("");
            out.push(target.to_string());
            rest = &rest[close..];
        }
    }
    out
}

/// Every relative link in `files` that leads nowhere, as "file: target (why)".
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut broken = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for target in link_targets(&text) {
            if target.is_empty()
                || target.contains("://")
                || target.starts_with("mailto:")
                || target.starts_with('<')
            {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !dest.exists() {
                broken.push(format!("{name}: {target} (no such file)"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if dest.extension().is_none_or(|e| e != "md") {
                broken.push(format!(
                    "{name}: {target} (an anchor into a non-markdown file)"
                ));
                continue;
            }
            let headings = anchors(&std::fs::read_to_string(&dest).unwrap());
            if !headings.iter().any(|h| h == anchor) {
                broken.push(format!("{name}: {target} (no heading with that anchor)"));
            }
        }
    }
    broken
}

#[test]
fn relative_links_resolve() {
    let files = docs(root());
    assert!(files.len() >= 5, "{files:?}");
    let broken = broken_links(root(), &files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The checker itself finds a missing file and a missing heading, and
/// accepts GitHub's anchors for headings with code, punctuation and repeats.
#[test]
fn link_check_catches_broken_links() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    let page = dir.path().join("docs/PAGE.md");
    std::fs::write(
        &page,
        "# Page\n\n## Cache servers under load (`--server-load`)\n\n## Keys\n\n### Keys\n\n\
         ```sh\n# not a heading\n[a](missing-in-code.md)\n```\n\n\
         [ok](#cache-servers-under-load---server-load) [ok](#keys-1) [ok](../README.md#top)\n\
         `[code](missing-in-inline-code.md)` [ok](https://example.com/x.md)\n",
    )
    .unwrap();
    let readme = dir.path().join("README.md");
    std::fs::write(
        &readme,
        "# Top\n\n[ok](docs/PAGE.md#keys) [bad](docs/GONE.md) [bad](docs/PAGE.md#no-such) \
         [bad](#not-a-heading)\n",
    )
    .unwrap();
    let broken = broken_links(dir.path(), &[readme, page]);
    assert_eq!(
        broken,
        [
            "README.md: docs/GONE.md (no such file)",
            "README.md: docs/PAGE.md#no-such (no heading with that anchor)",
            "README.md: #not-a-heading (no heading with that anchor)",
        ]
    );
}
