//! `gocacher serve --modproxy`, end to end: the real `go` command fetches
//! a real module graph (integration/modproxy/graph) through the server,
//! whose upstream is the machine's own module proxy (the first entry of
//! `go env GOPROXY`, never named here) behind a counting forwarder the test
//! can stop; the bucket is a real MinIO.

mod support;

#[path = "modproxy/forwarder.rs"]
mod forwarder;
#[path = "modproxy/layout.rs"]
mod layout;
#[path = "modproxy/prefetch.rs"]
mod prefetch;
#[path = "modproxy/stored.rs"]
mod stored;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use forwarder::{machine_proxy, Forwarder};
use layout::sum_files;
use support::s3server::{Kind, S3Server};
use support::seedserver::{Seed, SeedServer};

/// A private copy of the graph module; without its go.sum when `sums` is
/// false, so that go verifies every module through the checksum database.
fn graph(sums: bool) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/modproxy/graph");
    let dst = tempfile::tempdir().unwrap();
    support::copy_dir(&src, dst.path());
    if !sums {
        std::fs::remove_file(dst.path().join("go.sum")).unwrap();
    }
    dst
}

/// The graph's go.sum lines, as committed.
fn committed_sums() -> BTreeSet<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/modproxy/graph/go.sum");
    lines(&std::fs::read_to_string(p).unwrap())
}

fn lines(s: &str) -> BTreeSet<String> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// One machine's go: a GOPATH of its own (so its own module cache and its
/// own checksum database state, `GOPATH/pkg/sumdb`), GOPROXY the server's
/// `/mod` and nothing after it (so a failure is never hidden by a
/// fall-through to the network), GOSUMDB as the machine has it.
struct Machine {
    home: tempfile::TempDir,
    goproxy: String,
    toolchain: String,
}

impl Machine {
    fn new(goproxy: &str) -> Machine {
        Machine {
            home: tempfile::tempdir().unwrap(),
            goproxy: goproxy.to_string(),
            toolchain: "local".to_string(),
        }
    }

    fn gopath(&self) -> PathBuf {
        self.home.path().join("gopath")
    }

    fn modcache(&self) -> PathBuf {
        self.gopath().join("pkg/mod")
    }

    fn go(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("go");
        cmd.args(args)
            .current_dir(dir)
            .env("GOPROXY", &self.goproxy)
            .env("GOPATH", self.gopath())
            .env("GOMODCACHE", self.modcache())
            // -modcacherw: the temp dir can be removed afterwards.
            .env("GOFLAGS", "-mod=mod -modcacherw")
            .env("GOTOOLCHAIN", &self.toolchain)
            .env_remove("GOCACHEPROG")
            .env_remove("GOENV")
            .env_remove("GONOSUMDB")
            .env_remove("GONOPROXY")
            .env_remove("GOPRIVATE")
            .env_remove("GOSUMDB")
            .env_remove("GOINSECURE");
        cmd.output().expect("run go")
    }

    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.go(dir, args);
        assert!(
            out.status.success(),
            "go {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `go mod download`, `go build` and the program's output.
    fn download_and_build(&self, dir: &Path) {
        self.ok(dir, &["mod", "download"]);
        let bin = dir.join("modgraph.bin");
        self.ok(dir, &["build", "-o", bin.to_str().unwrap(), "."]);
        let out = Command::new(&bin).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello modproxy\n");
    }
}

fn start_server(upstream: &str, extra: &[&str], env: Vec<(String, String)>) -> SeedServer {
    let mut args = vec!["--modproxy", "--upstream", upstream, "-v"];
    args.extend_from_slice(extra);
    SeedServer::start_with_env(Seed::Serve, &args, env)
}

fn goproxy(server: &SeedServer) -> String {
    format!("{}/mod", server.url())
}

/// Files under `dir`, relative to it, without temp files.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

fn scrape(addr: &str) -> String {
    let rt = support::s3server::runtime();
    rt.block_on(async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

#[test]
fn a_fresh_modcache_downloads_and_verifies_a_real_graph_through_the_proxy() {
    let up = Forwarder::start(&machine_proxy());
    let server = start_server(&up.url(), &[], Vec::new());
    let module = graph(false);
    let dir = module.path();
    let machine = Machine::new(&goproxy(&server));
    machine.download_and_build(dir);

    // go wrote go.sum from the checksum database, reached through the
    // server (GOSUMDB unchanged): the same hashes as committed.
    let written = lines(&std::fs::read_to_string(dir.join("go.sum")).unwrap());
    let committed = committed_sums();
    assert!(
        !written.is_empty() && written.is_subset(&committed),
        "{written:#?}"
    );
    let counts = up.counts();
    assert!(
        counts
            .keys()
            .any(|p| p.starts_with("sumdb/") && p.contains("/lookup/")),
        "no checksum database lookup went through the server: {counts:#?}"
    );

    // Everything go fetched is on the server's disk, in the GOPROXY
    // layout (upper case escaped), with the sumdb's full tiles.
    let kept = files_under(&server.store_dir().join("mod"));
    let want = sum_files(written.iter().map(String::as_str));
    let missing: Vec<_> = want.difference(&kept).collect();
    assert!(missing.is_empty(), "not kept: {missing:?}\nkept: {kept:#?}");
    assert!(kept.contains("github.com/!burnt!sushi/toml/@v/v1.6.0.info"));
    assert!(kept
        .iter()
        .any(|f| f.starts_with("sumdb/") && f.contains("/tile/")));
    assert!(!kept.iter().any(|f| f.contains("/.tmp-")), "{kept:#?}");

    // Bad input is a clear 400 or 404, and never reaches the upstream.
    let before = up.counts().values().sum::<usize>();
    let rt = support::s3server::runtime();
    for (path, code) in [
        ("/mod/github.com/..%2F..%2Fetc/@v/list", 400),
        ("/mod/github.com/BurntSushi/toml/@v/list", 400),
        ("/mod/github.com/!burnt!sushi/toml/@v/master.zip", 404),
        ("/mod/sumdb/sum.example/tile/8/0/%2e%2e/000", 400),
        ("/mod/nothing", 404),
    ] {
        let resp = rt
            .block_on(reqwest::get(format!("{}{path}", server.url())))
            .unwrap();
        assert_eq!(resp.status().as_u16(), code, "{path}");
        let body = rt.block_on(resp.text()).unwrap();
        assert!(body.len() > 10, "{path}: {body:?}");
    }
    assert_eq!(up.counts().values().sum::<usize>(), before);
}

/// A bucket warmed by server A: MinIO with bucket `mods`, A on
/// `s3://mods/team` in front of the machine's upstream (through a counting
/// forwarder), and the graph, go.sum kept, downloaded and built through A.
struct Warmed {
    minio: S3Server,
    up: Forwarder,
    a: SeedServer,
    module: tempfile::TempDir,
}

const TEAM: [&str; 2] = ["--remote", "s3://mods/team"];

fn warmed() -> Warmed {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let up = Forwarder::start(&machine_proxy());
    let a = start_server(&up.url(), &TEAM, minio.env());
    let module = graph(true);
    Machine::new(&goproxy(&a)).download_and_build(module.path());
    Warmed {
        minio,
        up,
        a,
        module,
    }
}

#[test]
fn a_second_server_serves_the_graph_from_the_bucket_with_a_dead_upstream() {
    let Warmed {
        minio, up: _up, a, ..
    } = warmed();
    let remote = TEAM;

    // Server A copies what it kept to the bucket in the background: wait
    // until the bucket holds every module file A has.
    let on_a: BTreeSet<String> = files_under(&a.store_dir().join("mod"))
        .into_iter()
        .filter(|f| f.contains("/@v/"))
        .collect();
    let want: BTreeSet<String> = on_a
        .iter()
        .filter(|f| f.ends_with(".mod") || f.ends_with(".zip"))
        .cloned()
        .collect();
    assert!(
        want.contains("github.com/!burnt!sushi/toml/@v/v1.6.0.zip"),
        "{on_a:#?}"
    );
    let start = Instant::now();
    loop {
        let keys: BTreeSet<String> = minio
            .keys("mods", "team/mod/")
            .into_iter()
            .map(|k| k.trim_start_matches("team/mod/").to_string())
            .collect();
        if on_a.is_subset(&keys) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the bucket lacks {:?}\n{}",
            on_a.difference(&keys).collect::<Vec<_>>(),
            a.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Server B: an empty disk, the same bucket, an upstream nobody
    // answers on. go.sum holds every hash, so go asks no checksum
    // database (GOSUMDB stays unchanged) and GOPROXY names only B: no
    // other network is reached.
    let metrics_port = support::s3server::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut b_flags = remote.to_vec();
    b_flags.extend(["--metrics-listen", &metrics_addr]);
    let b = start_server("http://127.0.0.1:1", &b_flags, minio.env());
    let module = graph(true);
    Machine::new(&goproxy(&b)).download_and_build(module.path());
    let on_b = files_under(&b.store_dir().join("mod"));
    assert!(want.is_subset(&on_b), "{on_b:#?}\n{}", b.log());
    let m = scrape(&metrics_addr);
    assert!(metric(&m, "gocacher_serve_modproxy_from_bucket") >= want.len() as u64);

    // The bucket's mod/ is itself a module proxy: synced to disk, it
    // serves the graph as GOPROXY=file://.
    let synced = tempfile::tempdir().unwrap();
    for key in minio.keys("mods", "team/mod/") {
        let to = synced.path().join(key.trim_start_matches("team/mod/"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(&to, minio.get_raw("mods", &key)).unwrap();
    }
    let file_proxy = format!("file://{}", synced.path().display());
    let module = graph(true);
    Machine::new(&file_proxy).download_and_build(module.path());
}

#[test]
fn eight_concurrent_downloads_make_one_upstream_fetch_per_file() {
    let up = Forwarder::start(&machine_proxy());
    let metrics_port = support::s3server::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = start_server(&up.url(), &["--metrics-listen", &metrics_addr], Vec::new());
    let url = goproxy(&server);
    let module = graph(true);
    let dir: PathBuf = module.path().to_path_buf();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let (url, dir) = (url.clone(), dir.clone());
            std::thread::spawn(move || {
                let m = Machine::new(&url);
                m.ok(&dir, &["mod", "download"]);
            })
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
    let counts = up.counts();
    let immutable: Vec<_> = counts
        .iter()
        .filter(|(p, _)| p.ends_with(".info") || p.ends_with(".mod") || p.ends_with(".zip"))
        .collect();
    assert!(
        counts.contains_key("github.com/!burnt!sushi/toml/@v/v1.6.0.zip"),
        "{counts:#?}"
    );
    let twice: Vec<_> = immutable.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "fetched more than once: {twice:?}");
    let m = scrape(&metrics_addr);
    assert_eq!(
        metric(
            &m,
            "gocacher_serve_modproxy_upstream_fetches{kind=\"immutable\"}"
        ),
        immutable.len() as u64
    );
}

#[test]
fn when_the_upstream_goes_down_what_is_kept_is_still_served() {
    let mut up = Forwarder::start(&machine_proxy());
    let upstream = up.url();
    let server = start_server(&upstream, &["--modproxy-ttl", "1s"], Vec::new());
    let url = goproxy(&server);
    let module = graph(true);
    let dir = module.path();
    Machine::new(&url).download_and_build(dir);
    // The list of versions, while the upstream answers.
    let versions = |m: &Machine| {
        m.go(
            dir,
            &["list", "-m", "-versions", "github.com/BurntSushi/toml"],
        )
    };
    let listed = versions(&Machine::new(&url));
    assert!(listed.status.success(), "{listed:?}");

    up.stop();
    // A fresh machine still gets the whole graph, and builds.
    let m = Machine::new(&url);
    m.download_and_build(dir);
    // Once the list the server reused has expired, it is made from the
    // versions kept.
    std::thread::sleep(Duration::from_millis(1500));
    let listed = versions(&m);
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && out.trim() == "github.com/BurntSushi/toml v1.6.0",
        "{listed:?}"
    );
    assert!(
        server.log().contains("answering from what is kept"),
        "{}",
        server.log()
    );
    // A version never fetched fails, and the error names the upstream.
    let never = m.go(
        dir,
        &["mod", "download", "github.com/BurntSushi/toml@v1.5.0"],
    );
    let err = String::from_utf8_lossy(&never.stderr);
    assert!(!never.status.success(), "{never:?}");
    assert!(
        err.contains("502") && err.contains(&upstream),
        "the error names the upstream {upstream}:\n{err}"
    );
    assert!(server.log().contains("did not answer"), "{}", server.log());
}

#[test]
fn the_upstream_defaults_to_the_first_goproxy_entry_and_direct_is_refused() {
    let store = tempfile::tempdir().unwrap();
    for goproxy in ["direct", "off,https://proxy.invalid"] {
        let out = Command::new(env!("CARGO_BIN_EXE_gocacher"))
            .args(["serve", "--modproxy", "--listen", "127.0.0.1:0", "--dir"])
            .arg(store.path())
            .env("GOPROXY", goproxy)
            .env_remove("GOCACHER_MODPROXY_UPSTREAM")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("give --upstream URL"),
            "GOPROXY={goproxy:?}: {out:?}"
        );
    }
    let env = vec![(
        "GOPROXY".to_string(),
        "http://127.0.0.1:9/first|https://proxy.invalid,direct".to_string(),
    )];
    let server = SeedServer::start_with_env(Seed::Serve, &["--modproxy"], env);
    assert!(
        server
            .log()
            .contains("fetching from http://127.0.0.1:9/first;"),
        "{}",
        server.log()
    );
}

// ---------------------------------------------------------------------
// What is kept when things fail: mutable answers from the bucket, a
// server killed mid-zip, and a toolchain served from the bucket.
// ---------------------------------------------------------------------

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

impl Drop for Machine {
    fn drop(&mut self) {
        // A toolchain's files are read-only whatever GOFLAGS says.
        let _ = Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(self.home.path())
            .status();
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

/// Waits until the bucket holds every file kept on `server`'s disk (it
/// copies them in the background; stored copies of zips stay on disk); the
/// bucket's keys under `prefix/mod/`.
fn wait_for_bucket(minio: &S3Server, prefix: &str, server: &SeedServer) -> BTreeSet<String> {
    let on_disk: BTreeSet<String> = files_under(&server.store_dir().join("mod"))
        .into_iter()
        .filter(|f| !f.contains("/.tmp-") && !f.contains("/.stored-"))
        .collect();
    let start = Instant::now();
    loop {
        let keys: BTreeSet<String> = minio
            .keys("mods", &format!("{prefix}/mod/"))
            .into_iter()
            .map(|k| k[prefix.len() + 5..].to_string())
            .collect();
        if on_disk.is_subset(&keys) {
            return keys;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the bucket lacks {:?}\n{}",
            on_disk.difference(&keys).collect::<Vec<_>>(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fresh module that requires nothing yet.
fn empty_module() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("go.mod"),
        "module example.com/fresh\n\ngo 1.25.0\n",
    )
    .unwrap();
    dir
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

/// A module every test below fetches: its files as the GOPROXY layout
/// names them.
const TOML_ZIP: &str = "github.com/!burnt!sushi/toml/@v/v1.6.0.zip";
const TOML_MOD: &str = "github.com/!burnt!sushi/toml/@v/v1.6.0.mod";

/// A GET's status and body.
fn http_get(url: &str) -> (u16, Vec<u8>) {
    let rt = support::s3server::runtime();
    rt.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    })
}

/// Waits until `ready` holds of the bucket (the server copies what it
/// keeps in the background).
fn wait_for(what: &str, server: &SeedServer, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the bucket never had {what}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metrics_flag() -> (String, [String; 2]) {
    let addr = format!("127.0.0.1:{}", support::s3server::free_port());
    (addr.clone(), ["--metrics-listen".to_string(), addr])
}

#[test]
fn a_zip_changed_in_the_bucket_is_refused() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let remote = ["--remote", "s3://mods/team"];
    let up = Forwarder::start(&machine_proxy());
    let a = start_server(&up.url(), &remote, minio.env());
    let (status, good) = http_get(&format!("{}/{TOML_ZIP}", goproxy(&a)));
    assert_eq!(status, 200, "{}", a.log());
    let key = format!("team/mod/{TOML_ZIP}");
    let keys = || minio.keys("mods", "team/mod/");
    wait_for("the zip and its sidecar", &a, || {
        let k = keys();
        k.contains(&key) && k.contains(&format!("{key}hash"))
    });
    let sidecar = String::from_utf8(minio.get_raw("mods", &format!("{key}hash"))).unwrap();
    assert!(
        sidecar.contains("\nh1 h1:") && !sidecar.contains("\nsumdb -"),
        "proven against the checksum database: {sidecar}"
    );

    // One byte of the bucket's copy changed.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    minio.put_raw("mods", &key, bad);

    // Server B, an empty disk and the same bucket, refuses it, counts it,
    // and gets the zip from the upstream again: go gets the right bytes.
    let (addr, mflags) = metrics_flag();
    let mut flags: Vec<&str> = remote.to_vec();
    flags.extend(mflags.iter().map(String::as_str));
    let b = start_server(&up.url(), &flags, minio.env());
    let module = graph(true);
    let m = Machine::new(&goproxy(&b));
    m.ok(
        module.path(),
        &["mod", "download", "github.com/BurntSushi/toml"],
    );
    let got = std::fs::read(m.modcache().join("cache/download").join(TOML_ZIP)).unwrap();
    assert!(got == good, "go got other bytes than the upstream's");
    assert_eq!(
        metric(
            &scrape(&addr),
            "gocacher_serve_modproxy_refused{kind=\"bucket\"}"
        ),
        1
    );
    assert!(
        b.log().contains("REFUSED the bucket's") && b.log().contains("fetching it again"),
        "{}",
        b.log()
    );
    assert_eq!(up.counts().get(TOML_ZIP), Some(&2), "{:?}", up.counts());
    // The good copy is kept in the bucket again.
    wait_for("the good zip again", &b, || {
        minio.get_raw("mods", &key) == good
    });

    // Cut short, with no upstream: server C answers 502, never the bytes,
    // and go fails cleanly.
    minio.put_raw("mods", &key, good[..good.len() / 2].to_vec());
    let c = start_server("http://127.0.0.1:1", &remote, minio.env());
    let (status, body) = http_get(&format!("{}/{TOML_ZIP}", goproxy(&c)));
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let m = Machine::new(&goproxy(&c));
    let out = m.go(
        module.path(),
        &["mod", "download", "github.com/BurntSushi/toml"],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("502"),
        "{out:?}"
    );
    assert!(!m.modcache().join("cache/download").join(TOML_ZIP).exists());
    assert!(!c.store_dir().join("mod").join(TOML_ZIP).exists());
    assert!(c.log().contains("REFUSED the bucket's"), "{}", c.log());
}

#[test]
fn a_mod_changed_by_the_upstream_is_refused() {
    let up = Forwarder::start(&machine_proxy());
    up.alter(TOML_MOD, |body| {
        let mut b = body.to_vec();
        b.extend_from_slice(b"// changed on the way\n");
        b
    });
    let (addr, mflags) = metrics_flag();
    let flags: Vec<&str> = mflags.iter().map(String::as_str).collect();
    let server = start_server(&up.url(), &flags, Vec::new());
    let (status, body) = http_get(&format!("{}/{TOML_MOD}", goproxy(&server)));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("github.com/BurntSushi/toml@v1.6.0") && text.matches("h1:").count() == 2,
        "the reply names the module, the version and both hashes: {text}"
    );
    assert!(!server.store_dir().join("mod").join(TOML_MOD).exists());
    assert!(server.log().contains("REFUSED"), "{}", server.log());

    // The version's zip is proven by the lookup made for its .mod.
    let (status, _) = http_get(&format!("{}/{TOML_ZIP}", goproxy(&server)));
    assert_eq!(status, 200, "{}", server.log());
    let m = scrape(&addr);
    let checks = |kind: &str| {
        metric(
            &m,
            &format!("gocacher_serve_modproxy_checks{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!((checks("mismatch"), checks("proven")), (1, 1), "{m}");
    assert!(
        metric(
            &m,
            "gocacher_serve_modproxy_upstream_fetches{kind=\"tile\"}"
        ) >= 1
    );
    let lookups: usize = up
        .counts()
        .iter()
        .filter(|(p, _)| p.contains("/lookup/"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(lookups, 1, "{:?}", up.counts());
}

#[test]
fn an_unsigned_sidecar_is_refused_under_trust_key() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let remote = ["--remote", "s3://mods/team"];
    let up = Forwarder::start(&machine_proxy());
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("k");
    let made = Command::new(env!("CARGO_BIN_EXE_gocacher"))
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let (key, public) = (key.display().to_string(), format!("{}.pub", key.display()));
    let side = format!("team/mod/{TOML_ZIP}hash");

    // Server A, without keys, keeps the zip with an unsigned sidecar.
    let a = start_server(&up.url(), &remote, minio.env());
    let (status, good) = http_get(&format!("{}/{TOML_ZIP}", goproxy(&a)));
    assert_eq!(status, 200, "{}", a.log());
    wait_for("the sidecar", &a, || {
        minio.keys("mods", "team/mod/").contains(&side)
    });

    // Server B signs, so trusts its own key only: A's copy is absent to
    // it, fetched from the upstream again, and kept signed.
    let (addr, mflags) = metrics_flag();
    let mut flags: Vec<&str> = remote.to_vec();
    flags.extend(["--sign-key", &key]);
    flags.extend(mflags.iter().map(String::as_str));
    let b = start_server(&up.url(), &flags, minio.env());
    let (status, got) = http_get(&format!("{}/{TOML_ZIP}", goproxy(&b)));
    assert!(status == 200 && got == good, "{}", b.log());
    assert_eq!(up.counts().get(TOML_ZIP), Some(&2), "{:?}", up.counts());
    assert_eq!(
        metric(
            &scrape(&addr),
            "gocacher_serve_modproxy_refused{kind=\"bucket\"}"
        ),
        1
    );
    assert!(
        b.log().contains("not signed by a --trust-key key"),
        "{}",
        b.log()
    );
    wait_for("a signed sidecar", &b, || {
        String::from_utf8_lossy(&minio.get_raw("mods", &side)).contains("\nsig ")
    });

    // Server C trusts B's key and has no upstream: it serves B's copy.
    let c = start_server(
        "http://127.0.0.1:1",
        &["--remote", "s3://mods/team", "--trust-key", &public],
        minio.env(),
    );
    let (status, got) = http_get(&format!("{}/{TOML_ZIP}", goproxy(&c)));
    assert!(status == 200 && got == good, "{}", c.log());
}

#[test]
fn a_read_only_server_reads_the_bucket_and_writes_nothing_to_it() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let up = Forwarder::start(&machine_proxy());
    let server = start_server(
        &up.url(),
        &["--remote", "s3://mods/team", "--read-only"],
        minio.env(),
    );
    assert!(
        server
            .log()
            .contains("(--read-only: read from, never written to;"),
        "{}",
        server.log()
    );
    let module = graph(true);
    Machine::new(&goproxy(&server)).download_and_build(module.path());
    let kept = files_under(&server.store_dir().join("mod"));
    assert!(
        kept.contains("github.com/!burnt!sushi/toml/@v/v1.6.0.zip"),
        "{kept:#?}"
    );
    // Copies to the bucket start as soon as a file is kept: a writing
    // server has them there well within this.
    std::thread::sleep(Duration::from_secs(2));
    let written = minio.keys("mods", "");
    assert!(written.is_empty(), "{written:?}\n{}", server.log());
    assert!(!server.log().contains("not copied"), "{}", server.log());
}
