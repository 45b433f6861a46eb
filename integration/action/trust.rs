//! Where the action's gocacher comes from, and what it never runs: a
//! release archive that does not match its SHA256SUMS, a binary planted in
//! the tool cache or in a cargo build of the source.

use super::*;

/// A release archive that does not match its SHA256SUMS is never used;
/// with no cargo to build the source instead, the job goes on without the
/// cache, with a warning, and its go commands pass.
#[test]
fn tampered_release_without_cargo_goes_on_without_the_cache() {
    let release = Release::serve(true);
    let repo = widgets();
    let job = released(
        Job::new(&doc_workflow("README.md", 0), "push")
            .var("GOCACHE_BUCKET", BUCKET)
            .var("GOCACHE_ENDPOINT", "http://127.0.0.1:9")
            .var("GOCACHE_REGION", "us-east-1"),
        &release,
    );
    let machine = Machine::new();
    let run = machine.run(repo.path(), &job);
    assert_ok(&run);
    assert!(
        run.log.contains("does not match its SHA256SUMS entry"),
        "{}",
        run.log
    );
    assert!(run.log.contains("no cargo on this runner"), "{}", run.log);
    assert!(!run.env.contains_key("GOCACHEPROG"), "{:?}", run.env);
    assert!(summary_rows(&run.log).is_empty(), "{}", run.log);
    assert!(
        run.log.contains("ok  \texample.com/fixture/internal/textx"),
        "{}",
        run.log
    );
    assert!(files_holding(&machine.tool_cache(), "gocacher").is_empty());
}

/// The target dir for the action's source builds under act: beside this
/// suite's own, kept between runs, at opt-level 0 (a test needs a working
/// binary, not a fast one).
fn source_build_env(job: Job) -> Job {
    let exe = Path::new(env!("CARGO_BIN_EXE_gocacher"));
    let target = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("action-source");
    job.with_cargo()
        .env("CARGO_TARGET_DIR", target.to_str().unwrap())
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
}

/// A stand-in executable a job's untrusted code plants where a gocacher
/// was: if anything runs it, `marker` says so.
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
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_symlink() {
            continue;
        }
        if path.is_dir() {
            n += plant_everywhere(&path, marker);
        } else if path.file_name().unwrap() == "gocacher" {
            std::fs::write(&path, planted(marker)).unwrap();
            n += 1;
        }
    }
    n
}

/// `version: source` with cargo on the runner: an untrusted
/// `pull_request_target` job builds the action's source with the real
/// cargo and plants a binary wherever gocacher lies on the runner's disk;
/// the next push job on the same runner builds its own, never runs the
/// planted one, and its go commands use it.
#[test]
fn source_build_is_per_job() {
    let server = S3Server::start(Kind::Minio);
    server.create_bucket(BUCKET);
    let repo = widgets();
    let creds = ci_user(&server);
    let workflow = with_input(&doc_workflow("README.md", 0), "version", "source");
    let untrusted = format!(
        "{}\n",
        workflow.replace("  pull_request:\n", "  pull_request_target:\n")
    );
    let machine = Machine::new();
    let marker = machine.home.path().join("planted-ran");

    let run = machine.run(
        repo.path(),
        &source_build_env(bucket_job(
            Job::new(&untrusted, "pull_request_target")
                .payload(fork_payload(9))
                .actor("mallory"),
            &server,
            &creds,
        )),
    );
    assert_ok(&run);
    assert!(
        run.log.contains("built gocacher from source"),
        "{}",
        run.log
    );
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "true");
    // What the job's code could reach: the runner's disk, after the job.
    let planted_files = plant_everywhere(machine.home.path(), &marker);

    let run = machine.run(
        repo.path(),
        &source_build_env(bucket_job(Job::new(&workflow, "push"), &server, &creds)),
    );
    assert_ok(&run);
    assert!(
        !marker.exists(),
        "the push job ran a planted binary:\n{}",
        run.log
    );
    assert!(
        run.log.contains("built gocacher from source"),
        "{}",
        run.log
    );
    assert_eq!(run.env["GOCACHER_READ_ONLY"], "false");
    assert!(
        run.env["GOCACHEPROG"].starts_with(&run.env["RUNNER_TEMP"]),
        "{:?}",
        run.env
    );
    let rows = summary_rows(&run.log);
    assert_eq!(rows.len(), 3, "{}", run.log);
    assert!(
        rows.iter().map(|r| r.uploads).sum::<u64>() > 0,
        "{}",
        run.log
    );
    eprintln!("planted {planted_files} files after the untrusted job");
}

/// On a self-hosted runner (one machine, its tool cache kept), a later job
/// never runs what an earlier one left: an archive replaced in the tool
/// cache is refused with a warning and downloaded again; with the release
/// out of reach as well, the job goes on without the cache.
#[test]
fn tampered_tool_cache_is_refused() {
    let release = Release::serve(false);
    let repo = widgets();
    let workflow = action_only(&["push"], &[]);
    let machine = Machine::new();
    let marker = machine.home.path().join("planted-ran");
    let job = released(Job::new(&workflow, "push"), &release);
    let run = machine.run(repo.path(), &job);
    assert_ok(&run);
    let dir = machine
        .tool_cache()
        .join(format!("gocacher/{VERSION}/{TARGET}"));
    let archive = dir.join(format!("gocacher-{TARGET}.tar.gz"));
    assert!(archive.exists(), "{}", run.log);
    assert_eq!(
        sha256_file(&run.kept(&run.env["GOCACHEPROG"])),
        release.binary_sha256
    );

    // The kept archive replaced by one holding a planted gocacher.
    let stage = machine.home.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("gocacher"), planted(&marker)).unwrap();
    let tar = |archive: &Path| {
        let st = Command::new("tar")
            .arg("-czf")
            .arg(archive)
            .arg("-C")
            .arg(&stage)
            .arg("gocacher")
            .status()
            .unwrap();
        assert!(st.success());
    };
    tar(&archive);
    let run = machine.run(repo.path(), &job);
    assert_ok(&run);
    assert!(
        run.log.contains("the archive kept in")
            && run.log.contains("does not match its SHA256SUMS entry"),
        "{}",
        run.log
    );
    assert_eq!(
        sha256_file(&run.kept(&run.env["GOCACHEPROG"])),
        release.binary_sha256
    );
    assert!(!marker.exists(), "the planted binary ran");

    // Planted again, and the release out of reach: as a failed download.
    tar(&archive);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let run = machine.run(
        repo.path(),
        &Job::new(&workflow, "push").env("GOCACHER_RELEASE_URL", &dead),
    );
    assert_ok(&run);
    assert!(run.log.contains("no cargo on this runner"), "{}", run.log);
    assert!(!run.env.contains_key("GOCACHEPROG"), "{}", run.log);
    assert!(!marker.exists(), "the planted binary ran");
}
