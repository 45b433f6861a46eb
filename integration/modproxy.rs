//! `gocacher serve --modproxy`, end to end: the real `go` command fetches
//! a real module graph (integration/modproxy/graph) through the server,
//! whose upstream is the machine's own module proxy (the first entry of
//! `go env GOPROXY`, never named here) behind a counting forwarder the test
//! can stop; the bucket is a real MinIO.
//!
//! Here: a fresh graph, a second server on the bucket, concurrent
//! downloads, a dead upstream. By concern beside it, in `modproxy/`:
//! `kept.rs` (what outlives a failure), `refusals.rs` (changed or unsigned
//! files), `stored.rs` (stored zips), `prefetch.rs` (a go.sum's modules
//! before go asks).

mod support;

#[path = "modproxy/forwarder.rs"]
mod forwarder;
#[path = "modproxy/kept.rs"]
mod kept;
#[path = "modproxy/layout.rs"]
mod layout;
#[path = "modproxy/prefetch.rs"]
mod prefetch;
#[path = "modproxy/refusals.rs"]
mod refusals;
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

impl Drop for Machine {
    fn drop(&mut self) {
        // A toolchain's files are read-only whatever GOFLAGS says.
        let _ = Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(self.home.path())
            .status();
    }
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

/// A module the tests of `refusals`, `stored` and `prefetch` fetch: its
/// files as the GOPROXY layout names them.
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
