//! What is kept when things fail: mutable answers (lists, `@latest`, the
//! checksum database's lookups) from the bucket, a server killed mid-zip,
//! and a toolchain served from the bucket.

use super::*;

impl Machine {
    /// The checksum database's latest tree size this machine has seen.
    fn tree_size(&self) -> u64 {
        let dir = self.gopath().join("pkg/sumdb");
        let latest = files_under(&dir)
            .into_iter()
            .find(|f| f.ends_with("/latest"))
            .unwrap_or_else(|| panic!("no latest under {}", dir.display()));
        tree_size(&std::fs::read_to_string(dir.join(latest)).unwrap())
    }
}

/// The tree size in a signed tree head (a `latest` file, or a lookup
/// answer, which ends with one).
fn tree_size(note: &str) -> u64 {
    let lines: Vec<&str> = note.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.ends_with("database tree"))
        .unwrap_or_else(|| panic!("no tree head in {note:?}"));
    lines[i + 1].parse().unwrap()
}

#[test]
fn a_new_server_with_a_dead_upstream_answers_lists_latest_and_lookups_from_the_bucket() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let remote = ["--remote", "s3://mods/team"];
    let up = Forwarder::start(&machine_proxy());
    let a = start_server(&up.url(), &remote, minio.env());

    // Machine 1, through server A: the graph without go.sum (every module
    // looked up in the checksum database), and toml's list of versions.
    let m1 = Machine::new(&goproxy(&a));
    let module = graph(false);
    m1.ok(module.path(), &["mod", "download"]);
    let listed = m1.ok(
        module.path(),
        &["list", "-m", "-versions", "github.com/BurntSushi/toml"],
    );
    assert!(listed.contains(" v1.6.0"), "{listed}");
    // Machine 1's tree head: the newest the lookups it made carried.
    let newer_size = m1.tree_size();

    // The bucket has the list, the lookups and the tiles, full and partial,
    // in the GOPROXY layout.
    let keys = wait_for_bucket(&minio, "team", &a);
    assert!(
        keys.contains("github.com/!burnt!sushi/toml/@v/list"),
        "{keys:#?}"
    );
    let lookups: Vec<&String> = keys.iter().filter(|k| k.contains("/lookup/")).collect();
    assert!(
        lookups
            .iter()
            .any(|k| k.ends_with("/github.com/!burnt!sushi/toml@v1.6.0")),
        "{keys:#?}"
    );
    assert!(keys.iter().any(|k| k.contains(".p/")), "{keys:#?}");
    let kept_sizes: BTreeSet<u64> = lookups
        .iter()
        .map(|k| {
            let body = minio.get_raw("mods", &format!("team/mod/{k}"));
            tree_size(&String::from_utf8(body).unwrap())
        })
        .collect();
    eprintln!("tree sizes: kept lookups {kept_sizes:?}, machine 1 at {newer_size}");
    // The upstream's lookups carry the tree heads of when it fetched them,
    // so some kept ones are older than machine 1's.
    assert!(
        kept_sizes.iter().any(|&n| n < newer_size),
        "every kept lookup has machine 1's tree head: {kept_sizes:?}"
    );

    // Server B: an empty disk, the same bucket, an upstream nobody
    // answers on.
    let metrics_port = support::s3server::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut b_flags = remote.to_vec();
    b_flags.extend(["--metrics-listen", &metrics_addr]);
    let b = start_server("http://127.0.0.1:1", &b_flags, minio.env());

    // Machine 2, new: the list, @latest, and the graph verified against
    // the checksum database (no go.sum), all from the bucket.
    let m2 = Machine::new(&goproxy(&b));
    let fresh = empty_module();
    let listed = m2.ok(
        fresh.path(),
        &["list", "-m", "-versions", "github.com/BurntSushi/toml"],
    );
    assert_eq!(
        listed.trim(),
        "github.com/BurntSushi/toml v1.6.0",
        "{}",
        b.log()
    );
    let got = m2.go(fresh.path(), &["get", "github.com/BurntSushi/toml@latest"]);
    assert!(got.status.success(), "{got:?}\n{}", b.log());
    let sums = std::fs::read_to_string(fresh.path().join("go.sum")).unwrap();
    assert!(
        sums.contains("github.com/BurntSushi/toml v1.6.0 h1:"),
        "{sums}"
    );
    // go asks `@latest` only of a module without tagged versions: ask it.
    let rt = support::s3server::runtime();
    let latest = rt.block_on(async {
        let url = format!("{}/github.com/!burnt!sushi/toml/@latest", goproxy(&b));
        let resp = reqwest::get(url).await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    assert_eq!(latest.0, 200, "{latest:?}");
    assert!(
        latest.1.contains("\"Version\"") && latest.1.contains("\"v1.6.0\""),
        "{latest:?}"
    );
    let module = graph(false);
    m2.ok(module.path(), &["mod", "download"]);
    let written = lines(&std::fs::read_to_string(module.path().join("go.sum")).unwrap());
    assert!(written.is_subset(&committed_sums()), "{written:#?}");

    // Machine 3 starts from machine 1's checksum database state, a newer
    // tree head than most kept lookups carry: go checks that each older
    // tree is a prefix of its newer one, with kept tiles, and accepts it.
    let m3 = Machine::new(&goproxy(&b));
    support::copy_dir(
        &m1.gopath().join("pkg/sumdb"),
        &m3.gopath().join("pkg/sumdb"),
    );
    assert_eq!(m3.tree_size(), newer_size);
    let module = graph(false);
    m3.ok(module.path(), &["mod", "download"]);
    let written = lines(&std::fs::read_to_string(module.path().join("go.sum")).unwrap());
    assert!(written.is_subset(&committed_sums()), "{written:#?}");

    let m = scrape(&metrics_addr);
    assert!(metric(&m, "gocacher_serve_modproxy_fallbacks") > 0, "{m}");
    assert!(
        b.log().contains("answering from what is kept"),
        "{}",
        b.log()
    );

    // A partial hash tile nobody asked for yet, narrower than one kept:
    // B cuts it from the wider one (the log only appends).
    let now: BTreeSet<String> = minio
        .keys("mods", "team/mod/")
        .into_iter()
        .map(|k| k.trim_start_matches("team/mod/").to_string())
        .collect();
    let on_b = files_under(&b.store_dir().join("mod"));
    let (wide, narrow) = keys
        .iter()
        .filter(|k| !k.contains("/data/"))
        .filter_map(|k| {
            let (base, w) = k.rsplit_once(".p/")?;
            let w: usize = w.parse().ok()?;
            let free = (1..w).find(|n| {
                let p = format!("{base}.p/{n}");
                !now.contains(&p) && !on_b.contains(&p)
            })?;
            Some((k.clone(), format!("{base}.p/{free}")))
        })
        .next()
        .unwrap_or_else(|| panic!("no partial hash tile to cut from: {keys:#?}"));
    let (status, body) = http_get(&format!("{}/{narrow}", goproxy(&b)));
    assert_eq!(
        status,
        200,
        "{narrow}: {}\n{}",
        String::from_utf8_lossy(&body),
        b.log()
    );
    let kept = minio.get_raw("mods", &format!("team/mod/{wide}"));
    let width: usize = narrow.rsplit_once(".p/").unwrap().1.parse().unwrap();
    assert_eq!(
        body,
        kept[..width * 32],
        "{narrow} is not the start of {wide}"
    );
}

#[test]
fn a_server_killed_mid_zip_leaves_nothing_partial() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let remote = ["--remote", "s3://mods/team"];
    // About 2 MB, sent at 256 KB/s.
    let zip = "golang.org/x/sys/@v/v0.42.0.zip";
    let up = Forwarder::trickling(&machine_proxy(), 256 << 10);
    let mut server = start_server(&up.url(), &remote, minio.env());
    let url = format!("{}/{zip}", goproxy(&server));
    let client = std::thread::spawn(move || {
        let rt = support::s3server::runtime();
        rt.block_on(async { reqwest::get(url).await?.bytes().await })
    });

    // Once half a megabyte is on disk, kill -9.
    let dir = server.store_dir().join("mod/golang.org/x/sys/@v");
    let temps = |dir: &Path| -> Vec<(String, u64)> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                    .map(|e| {
                        let n = e.metadata().map(|m| m.len()).unwrap_or(0);
                        (e.file_name().to_string_lossy().into_owned(), n)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let start = Instant::now();
    while !temps(&dir).iter().any(|(_, n)| *n >= 512 << 10) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no zip under way in {}: {:?}\n{}",
            dir.display(),
            files_under(&server.store_dir().join("mod")),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    assert!(
        client.join().unwrap().is_err(),
        "the client got a whole zip"
    );
    let left = temps(&dir);
    assert!(!left.is_empty(), "the temp file is gone before the restart");
    assert!(!dir.join("v0.42.0.zip").exists());

    // Restarted on the same disk and bucket: nothing temp or partial on
    // disk, nothing of the zip in the bucket.
    server.restart();
    let start = Instant::now();
    while !temps(&dir).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "temp files left after the restart: {:?}\n{}",
            temps(&dir),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let on_disk = files_under(&server.store_dir().join("mod"));
    assert!(
        !on_disk
            .iter()
            .any(|f| f.ends_with(".zip") || f.contains(".tmp-")),
        "{on_disk:#?}"
    );
    let in_bucket = minio.keys("mods", "team/mod/");
    assert!(
        !in_bucket
            .iter()
            .any(|k| k.ends_with(".zip") || k.contains(".tmp-")),
        "{in_bucket:#?}"
    );

    // A fresh download succeeds, and the zip is fetched again, whole.
    let m = Machine::new(&goproxy(&server));
    let json = m.ok(
        empty_module().path(),
        &["mod", "download", "-json", "golang.org/x/sys@v0.42.0"],
    );
    assert!(json.contains("\"Sum\": \"h1:"), "{json}");
    assert_eq!(up.counts().get(zip), Some(&2), "{:#?}", up.counts());
    let kept = std::fs::read(dir.join("v0.42.0.zip")).unwrap();
    let downloaded = std::fs::read(m.gopath().join("pkg/mod/cache/download").join(zip)).unwrap();
    assert_eq!(kept.len(), downloaded.len());
    assert!(kept == downloaded);
    let start = Instant::now();
    let key = format!("team/mod/{zip}");
    while !minio.keys("mods", "team/mod/").contains(&key) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(minio.get_raw("mods", &key) == kept);
}

#[test]
fn a_toolchain_is_served_from_the_bucket_the_second_time() {
    let started = Instant::now();
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let remote = ["--remote", "s3://mods/team"];
    let up = Forwarder::start(&machine_proxy());
    let env = |k: &str| {
        let out = Command::new("go").args(["env", k]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let zip = format!(
        "golang.org/toolchain/@v/v0.0.1-go1.27.3.{}-{}.zip",
        env("GOOS"),
        env("GOARCH")
    );
    let version = |server: &SeedServer| {
        let mut m = Machine::new(&goproxy(server));
        m.toolchain = "go1.27.3".to_string();
        let out = m.ok(m.home.path(), &["version"]);
        assert!(out.starts_with("go version go1.27.3 "), "{out}");
    };

    let a = start_server(&up.url(), &remote, minio.env());
    version(&a);
    assert_eq!(up.counts().get(&zip), Some(&1), "{:#?}", up.counts());
    let keys = wait_for_bucket(&minio, "team", &a);
    assert!(keys.contains(&zip), "{keys:#?}");

    // A second server, an empty disk, the same bucket: a new machine's
    // toolchain comes from the bucket, not the upstream.
    let metrics_port = support::s3server::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut b_flags = remote.to_vec();
    b_flags.extend(["--metrics-listen", &metrics_addr]);
    let b = start_server(&up.url(), &b_flags, minio.env());
    version(&b);
    assert_eq!(up.counts().get(&zip), Some(&1), "{:#?}", up.counts());
    assert!(b.store_dir().join("mod").join(&zip).is_file());
    let m = scrape(&metrics_addr);
    assert!(
        metric(&m, "gocacher_serve_modproxy_from_bucket") >= 1,
        "{m}"
    );
    eprintln!("the toolchain test took {:?}", started.elapsed());
}
