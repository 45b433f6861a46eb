//! `--modproxy-stored-zips`: go downloads zips whose files are stored, and
//! verifies them against go.sum, while the server's disk and the bucket
//! keep the upstream's deflated bytes; the bucket keeps the stored copies
//! too, zstd-compressed, for the next server to take rather than make.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::layout::sum_files;
use super::support::s3server::{Kind, S3Server};
use super::{
    committed_sums, goproxy, graph, http_get, metric, metrics_flag, scrape, start_server,
    wait_for_bucket, Forwarder, Machine, SeedServer, TOML_ZIP,
};

/// Each entry of a zip: its name, compression method, and content.
fn entries(zip: &[u8]) -> Vec<(String, zip::CompressionMethod, Vec<u8>)> {
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    (0..a.len())
        .map(|i| {
            let mut e = a.by_index(i).unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            (e.name().unwrap().into_owned(), e.compression(), body)
        })
        .collect()
}

/// The sha256 a sidecar records.
fn sidecar_sha256(text: &[u8]) -> String {
    let text = String::from_utf8(text.to_vec()).unwrap();
    let line = text.lines().find(|l| l.starts_with("sha256 ")).unwrap();
    line["sha256 ".len()..].to_string()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn stored_place(rel: &str) -> String {
    let (module, file) = rel.rsplit_once("/@v/").unwrap();
    format!("{module}/@v/.stored-{file}")
}

/// The bucket's key of the stored copy of `rel`, under `team/`.
fn stored_key(rel: &str) -> String {
    format!("team/mod/{}.zst", stored_place(rel))
}

/// The zips a go.sum of the graph names.
fn graph_zips() -> BTreeSet<String> {
    sum_files(committed_sums().iter().map(String::as_str))
        .into_iter()
        .filter(|f| f.ends_with(".zip"))
        .collect()
}

/// Waits until the bucket holds the stored copy of each of `zips`
/// (uploaded in the background), then returns them unpacked, by zip.
fn stored_in_bucket(
    minio: &S3Server,
    zips: &BTreeSet<String>,
    server: &SeedServer,
) -> Vec<(String, Vec<u8>)> {
    let start = Instant::now();
    loop {
        let keys: BTreeSet<String> = minio.keys("mods", "team/mod/").into_iter().collect();
        if zips.iter().all(|z| keys.contains(&stored_key(z))) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "stored copies missing from the bucket\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    zips.iter()
        .map(|z| {
            let packed = minio.get_raw("mods", &stored_key(z));
            (z.clone(), zstd::decode_all(&packed[..]).unwrap())
        })
        .collect()
}

#[test]
fn stored_zips_are_sent_and_the_kept_zips_stay_as_fetched() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let up = Forwarder::start(&super::machine_proxy());
    let (addr, mflags) = metrics_flag();
    let mut flags = vec!["--remote", "s3://mods/team", "--modproxy-stored-zips"];
    flags.extend(mflags.iter().map(String::as_str));
    let server = start_server(&up.url(), &flags, minio.env());
    // go.sum holds every hash: go checks each zip it downloads against it.
    let module = graph(true);
    let machine = Machine::new(&goproxy(&server));
    machine.download_and_build(module.path());

    let zips = graph_zips();
    assert!(zips.contains(TOML_ZIP), "{zips:#?}");
    let kept = server.store_dir().join("mod");
    wait_for_bucket(&minio, "team", &server);
    for rel in &zips {
        let got = std::fs::read(machine.modcache().join("cache/download").join(rel)).unwrap();
        let sent = entries(&got);
        assert!(
            sent.iter().all(|e| e.1 == zip::CompressionMethod::Stored),
            "{rel}: go got an entry not stored"
        );
        // The server's disk and the bucket hold the upstream's bytes, as
        // their sidecar records them; the same files, deflated.
        let on_disk = std::fs::read(kept.join(rel)).unwrap();
        let side = std::fs::read(kept.join(format!("{rel}hash"))).unwrap();
        assert_eq!(sha256(&on_disk), sidecar_sha256(&side), "{rel}");
        assert_eq!(minio.get_raw("mods", &format!("team/mod/{rel}")), on_disk);
        let fetched = entries(&on_disk);
        assert!(fetched
            .iter()
            .any(|e| e.1 == zip::CompressionMethod::Deflated));
        let names = |v: &[(String, _, Vec<u8>)]| -> Vec<(String, Vec<u8>)> {
            v.iter().map(|e| (e.0.clone(), e.2.clone())).collect()
        };
        assert!(names(&fetched) == names(&sent), "{rel}: other files");
        // The stored copy is beside it; the bucket has it as well.
        assert!(kept.join(stored_place(rel)).is_file(), "{rel}");
    }
    for (rel, copy) in stored_in_bucket(&minio, &zips, &server) {
        let on_disk = std::fs::read(kept.join(stored_place(&rel))).unwrap();
        assert!(
            copy == on_disk,
            "{rel}: the bucket's copy is not the disk's"
        );
    }
    let m = || scrape(&addr);
    let made = "gocacher_serve_modproxy_stored_zips{kind=\"made\"}";
    assert_eq!(metric(&m(), made), zips.len() as u64, "{}", server.log());

    // A second machine gets the copies already made.
    let again = Machine::new(&goproxy(&server));
    again.ok(graph(true).path(), &["mod", "download"]);
    assert_eq!(metric(&m(), made), zips.len() as u64);

    // A copy trimmed is taken from the bucket again; so is one whose zip
    // was trimmed (then fetched again, here from the bucket), never sent
    // stale.
    let copy = kept.join(stored_place(TOML_ZIP));
    for gone in [copy.clone(), kept.join(TOML_ZIP)] {
        std::fs::remove_file(&gone).unwrap();
        let (status, body) = http_get(&format!("{}/{TOML_ZIP}", goproxy(&server)));
        assert_eq!(status, 200, "{}", server.log());
        assert!(entries(&body)
            .iter()
            .all(|e| e.1 == zip::CompressionMethod::Stored));
        assert_eq!(body, std::fs::read(&copy).unwrap());
    }
    assert_eq!(metric(&m(), made), zips.len() as u64);
    let from_bucket = "gocacher_serve_modproxy_stored_zips{kind=\"from_bucket\"}";
    assert_eq!(metric(&m(), from_bucket), 2);
    let fallback = "gocacher_serve_modproxy_stored_zips{kind=\"fallback\"}";
    assert_eq!(metric(&m(), fallback), 0);
    assert!(Path::new(&kept.join(TOML_ZIP)).is_file());
}

#[test]
fn a_new_server_takes_stored_copies_from_the_bucket_and_refuses_a_changed_one() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("mods");
    let up = Forwarder::start(&super::machine_proxy());
    let flags = ["--remote", "s3://mods/team", "--modproxy-stored-zips"];
    let a = start_server(&up.url(), &flags, minio.env());
    Machine::new(&goproxy(&a)).download_and_build(graph(true).path());
    let zips = graph_zips();
    let copies = stored_in_bucket(&minio, &zips, &a);
    drop(a);

    // The bucket's copy of one zip replaced by a stored zip of other
    // files (one line added to one of them), packed the same way.
    let good = &copies.iter().find(|(z, _)| z == TOML_ZIP).unwrap().1;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (i, (name, _, body)) in entries(good).into_iter().enumerate() {
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        w.start_file(name, o).unwrap();
        std::io::Write::write_all(&mut w, &body).unwrap();
        if i == 0 {
            std::io::Write::write_all(&mut w, b"\n// changed\n").unwrap();
        }
    }
    let other = w.finish().unwrap().into_inner();
    let packed = zstd::encode_all(&other[..], 3).unwrap();
    minio.put_raw("mods", &stored_key(TOML_ZIP), packed);

    // Server B: an empty disk, the same bucket, an upstream nobody
    // answers on.
    let (addr, mflags) = metrics_flag();
    let mut b_flags = flags.to_vec();
    b_flags.extend(mflags.iter().map(String::as_str));
    let b = start_server("http://127.0.0.1:1", &b_flags, minio.env());
    let machine = Machine::new(&goproxy(&b));
    machine.download_and_build(graph(true).path());
    for (rel, copy) in &copies {
        let got = std::fs::read(machine.modcache().join("cache/download").join(rel)).unwrap();
        assert!(
            got == *copy,
            "{rel}: go got other bytes than the stored copy"
        );
    }
    let m = scrape(&addr);
    let kind = |k: &str| {
        metric(
            &m,
            &format!("gocacher_serve_modproxy_stored_zips{{kind=\"{k}\"}}"),
        )
    };
    let log = b.log();
    assert_eq!(
        (kind("from_bucket"), kind("made"), kind("fallback")),
        (zips.len() as u64 - 1, 1, 0),
        "{log}"
    );
    assert_eq!(
        metric(&m, "gocacher_serve_modproxy_refused{kind=\"bucket\"}"),
        1
    );
    assert!(
        log.contains("REFUSED the bucket's") && log.contains(&stored_key(TOML_ZIP)),
        "{log}"
    );
    // B took each good copy without its zip; only the refused one's zip
    // was fetched (from the bucket), to make the copy from.
    let kept = b.store_dir().join("mod");
    for rel in &zips {
        assert_eq!(kept.join(rel).exists(), rel == TOML_ZIP, "{rel}");
        assert!(kept.join(stored_place(rel)).is_file(), "{rel}");
    }
    // The copy B made is kept in the bucket in place of the changed one.
    let start = Instant::now();
    while zstd::decode_all(&minio.get_raw("mods", &stored_key(TOML_ZIP))[..]).unwrap() != *good {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", b.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(b);

    // Server C prefetches the go.sum's files: every zip comes as its
    // stored copy alone, before go asks, and no zip is fetched.
    let module = graph(true);
    let sum = module.path().join("go.sum");
    let (c_addr, c_mflags) = metrics_flag();
    let mut c_flags = flags.to_vec();
    c_flags.extend(["--modproxy-prefetch", sum.to_str().unwrap()]);
    c_flags.extend(c_mflags.iter().map(String::as_str));
    let c = start_server("http://127.0.0.1:1", &c_flags, minio.env());
    let start = Instant::now();
    while !c.log().contains("prefetch done") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", c.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = c.store_dir().join("mod");
    for rel in &zips {
        assert!(
            !kept.join(rel).exists(),
            "{rel}: the zip was fetched\n{}",
            c.log()
        );
        assert!(kept.join(stored_place(rel)).is_file(), "{rel}");
    }
    Machine::new(&goproxy(&c)).download_and_build(module.path());
    let m = scrape(&c_addr);
    let kind = |k: &str| {
        metric(
            &m,
            &format!("gocacher_serve_modproxy_stored_zips{{kind=\"{k}\"}}"),
        )
    };
    assert_eq!(
        (kind("from_bucket"), kind("made")),
        (zips.len() as u64, 0),
        "{}",
        c.log()
    );
}

#[test]
fn a_zip_too_large_stored_is_sent_as_kept() {
    // The zip fits under --modproxy-max-zip deflated, not stored.
    let up = Forwarder::start(&super::machine_proxy());
    let (addr, mflags) = metrics_flag();
    let mut flags = vec!["--modproxy-stored-zips", "--modproxy-max-zip", "600KB"];
    flags.extend(mflags.iter().map(String::as_str));
    let server = start_server(&up.url(), &flags, Vec::new());
    for _ in 0..2 {
        let (status, body) = http_get(&format!("{}/{TOML_ZIP}", goproxy(&server)));
        assert_eq!(status, 200, "{}", server.log());
        let kept = std::fs::read(server.store_dir().join("mod").join(TOML_ZIP)).unwrap();
        assert!(body == kept, "not the zip as kept");
    }
    let m = scrape(&addr);
    let kind = |k: &str| {
        metric(
            &m,
            &format!("gocacher_serve_modproxy_stored_zips{{kind=\"{k}\"}}"),
        )
    };
    assert_eq!((kind("made"), kind("fallback")), (0, 1));
    let log = server.log();
    assert!(
        log.contains("no stored copy of") && log.contains("over the limit of 600000"),
        "{log}"
    );
    let copy = server.store_dir().join("mod").join(stored_place(TOML_ZIP));
    assert!(!copy.exists());
}
