//! Go's module downloads through the action's module proxy, from the
//! bucket: no module tarball, no trip upstream on a new runner.

use super::*;

/// `workflow` without its `actions/setup-go` step: the runner's own go is
/// the one the jobs use (act would fetch setup-go from GitHub).
fn without_setup_go(workflow: &str) -> String {
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in workflow.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(i) = skipping {
            if indent > i {
                continue;
            }
            skipping = None;
        }
        if line.trim_start().starts_with("- uses: actions/setup-go") {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert_ne!(out, workflow, "the workflow has no actions/setup-go step");
    out
}

/// The `.mod` and `.zip` keys under `prefix` that the graph module's
/// committed go.sum names (upper case escaped, as the GOPROXY layout has
/// it).
fn graph_module_keys(prefix: &str) -> BTreeSet<String> {
    let sums = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/modproxy/graph/go.sum"),
    )
    .unwrap();
    sum_files(sums.lines())
        .into_iter()
        .map(|f| format!("{prefix}{f}"))
        .collect()
}

/// Requests the forwarder passed on, in all.
fn forwarded(up: &Forwarder) -> usize {
    up.counts().values().sum()
}

/// go leaves its module cache read-only; the machine's HOME (which holds
/// it) can then be removed.
fn modcache_writable(machine: &Machine) {
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(machine.home.path())
        .status();
}

/// docs/CI.md's modules workflow (without its actions/setup-go step) on a
/// real module graph (integration/modproxy/graph), the job's GOPROXY a
/// counting forwarder to the machine's module proxy: a read-only job
/// fetches through the proxy and writes nothing to the bucket's mod/; a
/// writing push copies every module to it; a new runner (an empty module
/// cache) then gets every module from the bucket, with not one request
/// reaching the forwarder, by the proxy or by go falling through; and a
/// job whose proxy cannot start (a bad setting in its environment) keeps
/// its GOPROXY and builds.
#[test]
fn modules_come_from_the_bucket_through_the_proxy() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let release = Release::serve(false);
    let up = Forwarder::start(&machine_proxy());
    let repo =
        repository_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/modproxy/graph"));
    let workflow = without_setup_go(&doc_workflow("docs/CI.md", 1));
    // The read-only job only downloads: nothing of its build would be
    // written anyway.
    let builds = "      - run: go build ./...\n      - run: go test ./...\n";
    assert!(workflow.contains(builds), "{workflow}");
    let download_only = with_input(&workflow.replace(builds, ""), "read-only", "true");
    let creds = ci_user(&server);
    let job = |wf: &str| {
        released(bucket_job(Job::new(wf, "push"), &server, &creds), &release)
            .env("GOPROXY", &up.url())
    };
    let proxy_log = |run: &JobRun| -> String {
        std::fs::read_to_string(run.kept(&run.env["GOCACHER_MODULES_LOG"])).unwrap_or_default()
    };
    let through_proxy = |run: &JobRun| {
        let goproxy = &run.env["GOPROXY"];
        assert!(
            goproxy.starts_with("http://127.0.0.1:")
                && goproxy.ends_with(&format!("/mod|{}", up.url())),
            "GOPROXY={goproxy}\n{}",
            run.log
        );
        assert_eq!(
            run.env["GOCACHER_MODULES_URL"],
            goproxy.split('|').next().unwrap()
        );
    };
    let want = graph_module_keys("main/mod/");

    // Read-only: fetched through the proxy, nothing written to mod/.
    let machine = Machine::new();
    let run = machine.run(repo.path(), &job(&download_only));
    modcache_writable(&machine);
    assert_ok(&run);
    through_proxy(&run);
    assert!(
        run.log
            .contains("reads modules from the bucket and writes none to it"),
        "{}",
        run.log
    );
    let log = proxy_log(&run);
    assert!(
        log.contains("fetching github.com/!burnt!sushi/toml/@v/v1.6.0.zip from the upstream"),
        "{log}\n{}",
        run.log
    );
    assert!(forwarded(&up) > 0);
    std::thread::sleep(Duration::from_secs(1));
    let written = server.keys(BUCKET, "main/mod/");
    assert!(
        written.is_empty(),
        "a read-only job wrote {written:?}\n{log}"
    );

    // A push writes: every module the build used reaches the bucket.
    let machine = Machine::new();
    let run = machine.run(repo.path(), &job(&workflow));
    modcache_writable(&machine);
    assert_ok(&run);
    through_proxy(&run);
    assert!(
        run.log
            .contains("reads modules from the bucket and copies those it fetches to it"),
        "{}",
        run.log
    );
    let start = std::time::Instant::now();
    loop {
        let keys: BTreeSet<String> = server.keys(BUCKET, "main/mod/").into_iter().collect();
        if want.is_subset(&keys) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the bucket lacks {:?}\n{}",
            want.difference(&keys).collect::<Vec<_>>(),
            proxy_log(&run)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A new runner: every module from the bucket, nothing upstream.
    let before = up.counts();
    let machine = Machine::new();
    let run = machine.run(repo.path(), &job(&workflow));
    modcache_writable(&machine);
    assert_ok(&run);
    through_proxy(&run);
    let log = proxy_log(&run);
    let after = up.counts();
    assert_eq!(
        before, after,
        "requests reached the upstream (or go fell through to it)\n{log}"
    );
    assert!(!log.contains("modproxy: fetching "), "{log}");
    assert!(log.contains("v1.6.0.zip"), "{log}");
    // The workspace's go.sum was copied from the bucket before go asked.
    let done = log
        .lines()
        .find(|l| l.contains("prefetch done"))
        .unwrap_or_else(|| panic!("no prefetch:\n{log}"));
    assert!(!done.contains(": 0 copied from the bucket"), "{done}");

    // A proxy that cannot start: GOPROXY as it was, and the build passes.
    let machine = Machine::new();
    let run = machine.run(
        repo.path(),
        &job(&workflow).env("GOCACHER_MODPROXY_MAX_ZIP", "lots"),
    );
    modcache_writable(&machine);
    assert_ok(&run);
    assert!(
        run.log
            .contains("the module proxy did not start (it exited)")
            && run.log.contains("--modproxy-max-zip"),
        "{}",
        run.log
    );
    assert_eq!(run.env["GOPROXY"], up.url(), "{}", run.log);
    assert!(!run.env.contains_key("GOCACHER_MODULES_URL"));
    let rows = summary_rows(&run.log);
    assert!(
        rows.iter().any(|r| r.command == "go build ./..."),
        "{}",
        run.log
    );
}
