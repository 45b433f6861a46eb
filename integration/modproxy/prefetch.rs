//! `serve --modproxy --modproxy-prefetch go.sum`: the files a go.sum names
//! are on the new server's disk, copied from the bucket, before go asks;
//! what the bucket lacks is left to go's requests, and then comes from the
//! upstream.

use super::*;

/// Waits for the prefetch's closing log line, and returns it.
fn prefetch_done(server: &SeedServer) -> String {
    let start = Instant::now();
    loop {
        if let Some(l) = server.log().lines().find(|l| l.contains("prefetch done")) {
            return l.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the prefetch never ended:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_prefetching_server_holds_the_go_sums_files_before_go_asks() {
    let Warmed {
        minio,
        up: _up,
        a,
        module,
    } = warmed();
    let remote = TEAM;
    let in_bucket = wait_for_bucket(&minio, "team", &a);

    // B: an empty disk, the graph's go.sum and one more naming a version
    // nobody fetched yet (the prefetch reads names, not hashes), an
    // upstream that counts what it is asked.
    let extra = tempfile::tempdir().unwrap();
    let extra_sum = extra.path().join("go.sum");
    std::fs::write(
        &extra_sum,
        "github.com/BurntSushi/toml v1.5.0 h1:unread=\n\
         github.com/BurntSushi/toml v1.5.0/go.mod h1:unread=\n",
    )
    .unwrap();
    let b_up = Forwarder::start(&machine_proxy());
    let sum = module.path().join("go.sum");
    let (metrics_addr, metrics) = metrics_flag();
    let mut flags = remote.to_vec();
    flags.extend(["--modproxy-prefetch", sum.to_str().unwrap()]);
    flags.extend(["--modproxy-prefetch", extra_sum.to_str().unwrap()]);
    flags.extend(metrics.iter().map(String::as_str));
    let b = start_server(&b_up.url(), &flags, minio.env());
    let done = prefetch_done(&b);

    // Before any request: every .mod, .info and .zip A kept is on B's disk,
    // with its sidecar, and the upstream was asked nothing.
    let on_b = files_under(&b.store_dir().join("mod"));
    let kept: BTreeSet<&String> = in_bucket
        .iter()
        .filter(|k| k.contains("/@v/") && !k.ends_with("/list"))
        .collect();
    let missing: Vec<_> = kept.iter().filter(|k| !on_b.contains(**k)).collect();
    assert!(
        missing.is_empty(),
        "not prefetched: {missing:?}\n{}",
        b.log()
    );
    assert!(on_b.contains(TOML_ZIP), "{on_b:#?}");
    assert!(b_up.counts().is_empty(), "{:?}", b_up.counts());
    let zips = kept.iter().filter(|k| k.ends_with(".zip")).count();
    assert!(
        done.contains(" not in the bucket") && !done.contains(" 0 copied"),
        "{done}"
    );
    assert!(zips >= 4, "{kept:#?}");

    // go through B: nothing immutable from the upstream.
    Machine::new(&goproxy(&b)).download_and_build(module.path());
    let m = scrape(&metrics_addr);
    assert_eq!(
        metric(
            &m,
            "gocacher_serve_modproxy_upstream_fetches{kind=\"immutable\"}"
        ),
        0,
        "{m}"
    );

    // What the bucket lacked was skipped by the prefetch, not remembered as
    // failed: go gets it from the upstream through B.
    let fresh = empty_module();
    Machine::new(&goproxy(&b)).ok(
        fresh.path(),
        &["mod", "download", "github.com/BurntSushi/toml@v1.5.0"],
    );
    let asked = b_up.counts();
    assert_eq!(
        asked.get("github.com/!burnt!sushi/toml/@v/v1.5.0.zip"),
        Some(&1),
        "{asked:?}"
    );
}
