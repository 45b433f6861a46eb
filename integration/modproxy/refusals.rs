//! What a server refuses to serve: a zip or a `.mod` changed in the
//! bucket or by the upstream, a sidecar without a signature under
//! `--trust-key`; and a `--read-only` server, which writes nothing.

use super::*;

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
