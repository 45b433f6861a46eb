//! `gocacher fix-mtimes` on its own: a repository cloned twice into one
//! path gets its test results from the cache the second time only with it.

use super::*;

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
