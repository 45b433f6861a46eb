//! The GitHub Actions job summary: when `GITHUB_STEP_SUMMARY` names a file,
//! each gocacher appends its go command's row to a markdown table there, so
//! a job shows what the cache did without a step of its own.
//!
//! The table's header is written once per file (GitHub gives each step a
//! file of its own). Several go commands of one step may close at once, so
//! the check for the header and the append happen under an exclusive lock
//! on the file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::stats::Snapshot;

/// The title line above the table, and the table's header.
const TITLE: &str = "### gocacher";
pub const HEADER: &str = "| go command | gets | hits | misses | remote hits | prefetch hits | puts | uploads | dropped uploads | MB down | MB up | errors |";
const RULE: &str = "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|";

/// At most this many package patterns are named in the command column.
const MAX_PATTERNS: usize = 3;

/// `errors` in the table: every request or transfer that failed (gets, puts,
/// bucket lookups and uploads). Corrupt and untrusted objects are not
/// errors: they are counted in the stats JSON.
pub fn errors(s: &Snapshot) -> u64 {
    s.get_errors + s.put_errors + s.remote_errors + s.upload_errors
}

/// One row of the table.
pub fn row(command: &str, s: &Snapshot) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} |",
        escape(command),
        s.gets,
        s.hits,
        s.misses,
        s.remote_hits,
        s.prefetch_hits,
        s.puts,
        s.uploads,
        s.uploads_dropped,
        s.bytes_downloaded as f64 / 1e6,
        s.bytes_uploaded as f64 / 1e6,
        errors(s)
    )
}

/// Adds the row of the go command that started this process, named from its
/// command line. A go command that asked nothing of the cache (go env, go
/// list -m) would only add an empty row, so it adds none.
pub fn add_row(path: &Path, s: &Snapshot) -> std::io::Result<()> {
    if s.gets + s.puts == 0 {
        return Ok(());
    }
    append(path, &describe(crate::scope::parent_go_args()), s)
}

/// Appends this go command's row to the summary file, with the table's
/// header first when the file does not have it yet.
pub fn append(path: &Path, command: &str, s: &Snapshot) -> std::io::Result<()> {
    let mut f = File::options()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    f.lock()?;
    let mut text = String::new();
    f.seek(SeekFrom::Start(0))?;
    // A summary file someone else wrote may not be UTF-8; then it has no
    // header of ours either.
    let has_header = match f.read_to_string(&mut text) {
        Ok(_) => text.lines().any(|l| l == HEADER),
        Err(_) => false,
    };
    let mut out = String::new();
    if !has_header {
        if !text.is_empty() && !text.ends_with("\n\n") {
            out.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
        }
        out.push_str(&format!("{TITLE}\n\n{HEADER}\n{RULE}\n"));
    }
    out.push_str(&row(command, s));
    out.push('\n');
    // One write: with O_APPEND it lands whole at the end.
    f.write_all(out.as_bytes())
}

/// The go command as the summary names it: `go` and its subcommand, then
/// the package patterns. Flags and their values are left out: they may hold
/// secrets (`-ldflags=-X main.token=...`) and the summary of a public
/// repository's job is public.
pub fn describe(go_args: Option<&[String]>) -> String {
    let Some((sub, rest)) = go_args.and_then(crate::scope::split_subcommand) else {
        return "go".to_string();
    };
    let patterns: Vec<&str> = rest
        .iter()
        .map(String::as_str)
        .filter(|a| looks_like_pattern(a))
        .collect();
    let mut words = vec!["go", sub];
    words.extend(patterns.iter().take(MAX_PATTERNS));
    if patterns.len() > MAX_PATTERNS {
        words.push("…");
    }
    words.join(" ")
}

/// A package pattern or a .go file: `./...`, `../x`, `./cmd/tool`, `std`,
/// `all`, `cmd`, `main.go`, or an import path (`example.com/m/...`). A flag's
/// separate value (`-run TestX`) does not look like one, except for an
/// import-path-like value, which holds no secret worth hiding either.
fn looks_like_pattern(a: &str) -> bool {
    if a.starts_with('-') || a.contains('=') || a.contains(char::is_whitespace) {
        return false;
    }
    a.starts_with("./")
        || a.starts_with("../")
        || a == "."
        || a == ".."
        || matches!(a, "std" | "all" | "cmd")
        || a.ends_with(".go")
        || (a.contains('/') && a.split('/').next().is_some_and(|h| h.contains('.')))
}

/// Markdown table cells cannot hold `|` or line breaks.
fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn describe_keeps_subcommand_and_patterns_only() {
        assert_eq!(describe(Some(&args("test ./..."))), "go test ./...");
        assert_eq!(
            describe(Some(&args("-C sub test -run TestX -v ./a ./b/..."))),
            "go test ./a ./b/..."
        );
        assert_eq!(
            describe(Some(&args("build -ldflags=-X=main.token=s3cret ./cmd/x"))),
            "go build ./cmd/x"
        );
        assert_eq!(
            describe(Some(&args("build -ldflags -Xmain.token=s3cret std"))),
            "go build std"
        );
        assert_eq!(
            describe(Some(&args("vet ./a ./b ./c ./d"))),
            "go vet ./a ./b ./c …"
        );
        assert_eq!(
            describe(Some(&args("test example.com/m/..."))),
            "go test example.com/m/..."
        );
        assert_eq!(describe(None), "go");
    }

    #[test]
    fn header_once_then_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.md");
        std::fs::write(&path, "# My job\nsome text").unwrap();
        let s = Snapshot {
            gets: 10,
            hits: 7,
            misses: 3,
            remote_hits: 4,
            prefetch_hits: 2,
            puts: 3,
            uploads: 3,
            uploads_dropped: 1,
            bytes_downloaded: 2_500_000,
            bytes_uploaded: 1_000_000,
            remote_errors: 2,
            put_errors: 1,
            ..Default::default()
        };
        append(&path, "go test ./...", &s).unwrap();
        append(&path, "go vet | x", &s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(HEADER).count(), 1, "{text}");
        assert!(
            text.starts_with("# My job\nsome text\n\n### gocacher\n\n"),
            "{text}"
        );
        assert!(
            text.contains("| go test ./... | 10 | 7 | 3 | 4 | 2 | 3 | 3 | 1 | 2.5 | 1.0 | 3 |\n"),
            "{text}"
        );
        assert!(text.contains("\n| go vet \\| x | 10 |"), "{text}");
    }
}
