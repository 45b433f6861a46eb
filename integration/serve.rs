//! `gocacher serve`, end to end: the real `go` with the seed's own
//! `go-cacher` (installed pinned) and with gocacher as its GOCACHEPROG, both
//! pointed at a `gocacher serve` the test starts on 127.0.0.1; and raw HTTP
//! requests for what a client should never be able to do to the store.

mod support;

#[path = "serve/frames.rs"]
mod frames;
#[path = "serve/health.rs"]
mod health;
#[path = "serve/named.rs"]
mod named;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::s3server::{tool_bin, Kind, S3Server};
use support::seedserver::{Seed, SeedServer};
use support::{GoEnv, Toolchain};

const STEPS: [&[&str]; 3] = [
    &["build", "./..."],
    &["test", "./..."],
    &["run", "./cmd/fixture"],
];

fn plain_output(module: &Path) -> String {
    let run = GoEnv::new(Toolchain::Local).go(module, &["run", "./cmd/fixture"]);
    run.assert_ok();
    run.stdout
}

/// The seed's `go-cacher` on a machine of its own, against `url`.
fn seed_machine(url: &str) -> GoEnv {
    let env = GoEnv::new(Toolchain::Local);
    let bin = tool_bin("GOCACHER_GO_CACHER_BIN", "go-cacher", "install-seed.sh");
    let prog = format!(
        "{} --cache-server {url} --cache-dir {}",
        bin.display(),
        env.cache_dir().display()
    );
    env.with_program(&prog)
}

#[test]
fn the_seeds_go_cacher_fills_and_reads_gocacher_serve() {
    let server = SeedServer::start(Seed::Serve);
    let module = support::fixture_copy();
    let dir = module.path();
    let expected = plain_output(dir);
    for args in STEPS {
        seed_machine(&server.url()).go(dir, args).assert_ok();
    }
    for args in STEPS {
        // A second, empty machine for each step: what it gets is the server's.
        let run = seed_machine(&server.url()).go(dir, args);
        run.assert_ok();
        assert!(
            run.lost.is_empty() && run.never_stored_misses <= 3,
            "{args:?}: every stored entry a hit: lost {:?}, {} other misses\n{}",
            run.lost,
            run.never_stored_misses,
            server.log()
        );
        if args[0] == "run" {
            assert_eq!(run.stdout, expected);
        }
    }
    support::assert_store_whole(&server.store_dir());
}

#[test]
fn gocacher_prefetches_through_gocacher_serve() {
    let server = SeedServer::start(Seed::Serve);
    let module = support::fixture_copy();
    let dir = module.path();
    let expected = plain_output(dir);
    let a = GoEnv::new(Toolchain::Local).with_flags(&["--cache-server", &server.url()]);
    for args in STEPS {
        let run = a.go(dir, args);
        run.assert_ok();
        let s = &run.stats;
        assert_eq!(
            s.upload_errors + s.uploads_dropped + s.remote_errors + s.corrupt,
            0,
            "{args:?}: {s:?}\n{}",
            run.stderr
        );
    }
    for args in STEPS {
        let run = a.new_machine().go(dir, args);
        run.assert_ok();
        run.assert_warm();
        let s = &run.stats;
        // Every hit is the server's; most came from the manifest and pack the
        // first machine wrote at close (the rest cmd/go asked for before the
        // pack had them).
        assert_eq!(s.remote_hits + s.prefetch_hits, s.hits, "{args:?}: {s:?}");
        assert!(
            s.prefetch_hits * 2 >= s.hits && s.pack_prefetched > 0,
            "{args:?}: hits from the prefetch: {s:?}"
        );
        assert_eq!(s.remote_errors + s.corrupt, 0, "{args:?}: {s:?}");
        if args[0] == "run" {
            assert_eq!(run.stdout, expected);
        }
    }
}

#[test]
fn gocacher_serve_speaks_https_to_both_clients() {
    let certs = support::certs::TestCerts::new();
    let (cert, key) = (certs.cert.to_str().unwrap(), certs.key.to_str().unwrap());

    // A key that is not the certificate's is a clear start-up error.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_gocacher"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
        ])
        .arg(&certs.ca)
        .arg("--dir")
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("--tls-key") && bad.stdout.is_empty(),
        "{bad:?}"
    );

    let server = SeedServer::start_with(Seed::Serve, &["--tls-cert", cert, "--tls-key", key]);
    let url = server.url().replace("http://", "https://");
    assert!(
        server.log().contains(&format!("listening on {url}")),
        "{}",
        server.log()
    );
    // Both clients trust the test's CA through SSL_CERT_FILE (rustls' and
    // Go's way of naming the roots on Linux).
    let trust = vec![("SSL_CERT_FILE".to_string(), certs.ca.display().to_string())];
    let module = support::fixture_copy();
    let dir = module.path();
    let expected = plain_output(dir);
    let a = GoEnv::new(Toolchain::Local)
        .with_flags(&["--cache-server", &url])
        .with_env(trust.clone());
    for args in STEPS {
        let run = a.go(dir, args);
        run.assert_ok();
        let s = &run.stats;
        assert_eq!(
            s.remote_errors + s.upload_errors,
            0,
            "{args:?}: {s:?}\n{}",
            run.stderr
        );
        assert!(s.uploads > 0 || args[0] == "run", "{args:?}: {s:?}");
    }

    // A plain-HTTP request to the TLS port gets no HTTP answer, and holds
    // the server up for no one.
    let mut plain = TcpStream::connect(server.addr()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(get_head("/gocacher/v1/info", "").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );

    let b = a.new_machine();
    let seed = seed_machine(&url).with_env(trust);
    for args in STEPS {
        // gocacher and the seed's go-cacher, each on an empty machine.
        let run = b.new_machine().go(dir, args);
        run.assert_ok();
        run.assert_warm();
        assert_eq!(run.stats.remote_errors, 0, "{args:?}: {:?}", run.stats);
        let run = seed.new_machine().go(dir, args);
        run.assert_ok();
        assert!(
            run.lost.is_empty() && run.never_stored_misses <= 3,
            "{args:?}: the seed's client over https: lost {:?}, {} other misses\n{}",
            run.lost,
            run.never_stored_misses,
            run.stderr
        );
        if args[0] == "run" {
            assert_eq!(run.stdout, expected);
        }
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the status and body.
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    read_reply(&mut c)
}

fn read_reply(c: &mut TcpStream) -> (u16, String) {
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP reply: {text:?}"));
    (status, text)
}

fn put_head(action: &str, output: &str, len: usize) -> String {
    format!(
        "PUT /{action}/{output} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

fn get_head(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n")
}

fn hex_id(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn bad_requests_are_refused_and_nothing_is_stored() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], support::s3server::free_port()));
    let metrics_flag = metrics.to_string();
    let server = SeedServer::start_with(
        Seed::Serve,
        &[
            "--max-object-size",
            "4KiB",
            "--body-timeout",
            "1s",
            "--metrics-listen",
            &metrics_flag,
            "-v",
        ],
    );
    let addr = server.addr();
    let data = b"the output of an action".to_vec();
    let (action, output) = (hex_id(b"some action"), hex_id(&data));

    // Malformed IDs: upper case, short, not hex.
    for path in [
        format!("/action/{}", action.to_uppercase()),
        format!("/action/{}", &action[..63]),
        "/action/zz".to_string(),
        format!("/output/{}x", &output[..63]),
    ] {
        let (status, reply) = request(addr, &get_head(&path, "Want-Object: 1\r\n"), b"");
        assert_eq!(status, 400, "GET {path}: {reply}");
    }
    let (status, _) = request(
        addr,
        &put_head(&action.to_uppercase(), &output, data.len()),
        &data,
    );
    assert_eq!(status, 400);

    // A body that does not hash to its output ID.
    let wrong = hex_id(b"something else");
    let (status, reply) = request(addr, &put_head(&action, &wrong, data.len()), &data);
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("hashes to"), "{reply}");

    // A body longer than its output's bytes: the announced length is the
    // data's plus one, and so is the body.
    let mut longer = data.clone();
    longer.push(b'!');
    let (status, reply) = request(addr, &put_head(&action, &output, longer.len()), &longer);
    assert_eq!(status, 400, "{reply}");

    // Over --max-object-size: refused before any byte is read.
    let (status, reply) = request(addr, &put_head(&action, &output, 5000), b"");
    assert_eq!(status, 413, "{reply}");

    // No Content-Length.
    let (status, _) = request(
        addr,
        &format!("PUT /{action}/{output} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"),
        b"5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status, 411);

    // A body that stops half way: the client goes away.
    {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(put_head(&action, &output, data.len()).as_bytes())
            .unwrap();
        c.write_all(&data[..data.len() / 2]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = read_reply(&mut c);
    }

    // A body that trickles past --body-timeout (1 s for a body this small).
    {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(put_head(&action, &output, data.len()).as_bytes())
            .unwrap();
        let started = Instant::now();
        c.write_all(&data[..4]).unwrap();
        let (status, reply) = read_reply(&mut c);
        assert_eq!(status, 408, "{reply}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    // A named object of an unknown kind, and a malformed name.
    let (status, _) = request(
        addr,
        &get_head("/gocacher/v1/secrets/0123456789abcdef0123456789abcdef", ""),
        b"",
    );
    assert_eq!(status, 400);
    let (status, _) = request(
        addr,
        &get_head("/gocacher/v1/manifests/..%2f..%2fetc", ""),
        b"",
    );
    assert_eq!(status, 400);

    // None of it left anything: not a partial file, not an entry.
    assert_eq!(
        support::files_in(&server.store_dir()),
        0,
        "{}",
        server.log()
    );
    support::assert_store_whole(&server.store_dir());
    let (status, _) = request(addr, &get_head(&format!("/action/{action}"), ""), b"");
    assert_eq!(status, 404);

    // And the same request done right is stored and served, both APIs.
    let (status, reply) = request(addr, &put_head(&action, &output, data.len()), &data);
    assert_eq!(status, 204, "{reply}");
    let (status, reply) = request(addr, &get_head(&format!("/action/{action}"), ""), b"");
    assert_eq!(status, 200);
    assert!(
        reply.contains(&format!("\"outputID\":\"{output}\"")),
        "{reply}"
    );
    let (status, reply) = request(
        addr,
        &get_head(&format!("/action/{action}"), "Want-Object: 1\r\n"),
        b"",
    );
    assert_eq!(status, 200);
    assert!(reply
        .to_ascii_lowercase()
        .contains(&format!("go-output-id: {output}")));
    assert!(reply.ends_with("the output of an action"), "{reply}");

    // The metrics say what happened, on their own port only.
    assert_eq!(request(addr, &get_head("/metrics", ""), b"").0, 404);
    let (status, text) = request(metrics, &get_head("/metrics", ""), b"");
    assert_eq!(status, 200, "{text}");
    let value = |line: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    assert!(value("gocacher_serve_refused_total{code=\"400\"}") >= 8);
    for code in [408, 411, 413] {
        assert_eq!(
            value(&format!("gocacher_serve_refused_total{{code=\"{code}\"}}")),
            1,
            "{code}"
        );
    }
    assert_eq!(value("gocacher_serve_puts_total"), 1);
    assert_eq!(value("gocacher_serve_hits_total"), 2);
    assert!(
        text.contains("gocacher_serve_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(text.contains("endpoint=\"/{action}/{output}\""), "{text}");
}

/// `size` pseudo-random bytes (incompressible), the next ones each call.
fn noise(state: &mut u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|_| {
            *state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*state >> 33) as u8
        })
        .collect()
}

/// Puts `n` objects of `size` random bytes; their (action, output) IDs.
fn put_random(addr: SocketAddr, n: usize, size: usize, seed: u64) -> Vec<(String, String)> {
    let mut state = seed;
    let mut ids = Vec::new();
    for i in 0..n {
        let data = noise(&mut state, size);
        let action = hex_id(format!("action {seed} {i}").as_bytes());
        let output = hex_id(&data);
        let (status, reply) = request(addr, &put_head(&action, &output, size), &data);
        assert_eq!(status, 204, "{reply}");
        ids.push((action, output));
    }
    ids
}

fn store_bytes(store: &Path) -> u64 {
    std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().len() == 2 && d.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.metadata().unwrap().len())
        .sum()
}

#[test]
fn the_store_is_kept_under_max_size_least_recently_used_first() {
    let cap: u64 = 2_000_000;
    let server = SeedServer::start_with(Seed::Serve, &["--max-size", "2MB"]);
    let addr = server.addr();
    // Twice the cap, in 100 KB objects; each tenth of the cap written wakes
    // a trim. Spread over time so that mtimes (the LRU order) differ.
    let mut ids = Vec::new();
    for round in 0..8 {
        ids.extend(put_random(addr, 5, 100_000, round));
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let size = store_bytes(&server.store_dir());
        if size <= cap + cap / 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store still {size} bytes, cap {cap}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The most recent entries are still there.
    for (action, output) in &ids[ids.len() - 5..] {
        let (status, reply) = request(addr, &get_head(&format!("/action/{action}"), ""), b"");
        assert_eq!(status, 200, "recent entry evicted: {reply}");
        assert!(reply.contains(output.as_str()));
    }
    support::assert_store_whole(&server.store_dir());
}

#[test]
fn a_killed_server_loses_nothing_it_acknowledged() {
    // No drain: no balancer to wait for.
    let mut server = SeedServer::start_with(Seed::Serve, &["--drain", "0s"]);
    let addr = server.addr();
    // Writers keep putting while the server is killed under them.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..10_000u64 {
                    let data = format!("writer {w} object {i} ").repeat(2000).into_bytes();
                    let action = hex_id(format!("kill action {w} {i}").as_bytes());
                    let output = hex_id(&data);
                    let Ok(mut c) = TcpStream::connect(addr) else {
                        break;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    if c.write_all(put_head(&action, &output, data.len()).as_bytes())
                        .is_err()
                        || c.write_all(&data).is_err()
                    {
                        break;
                    }
                    let mut reply = Vec::new();
                    let _ = c.read_to_end(&mut reply);
                    if !reply.starts_with(b"HTTP/1.1 204") {
                        break;
                    }
                    acked.push((action, output));
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill(); // SIGKILL, mid-PUT
    let acked: Vec<(String, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acked.len() > 20,
        "only {} puts before the kill",
        acked.len()
    );
    // Whatever was being written is not visible, and nothing is partial.
    let store = server.store_dir();
    for shard in std::fs::read_dir(&store).unwrap().flatten() {
        if shard.file_name().len() == 2 {
            for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
                let fname = f.file_name().to_string_lossy().to_string();
                if let Some(id) = fname.strip_suffix("-d") {
                    let bytes = std::fs::read(f.path()).unwrap();
                    assert_eq!(hex_id(&bytes), id, "partial output {fname}");
                }
            }
        }
    }
    server.restart();
    for (action, output) in &acked {
        let (status, reply) = request(addr, &get_head(&format!("/action/{action}"), ""), b"");
        assert_eq!(
            status, 200,
            "acknowledged {action} lost after the kill: {reply}"
        );
        assert!(reply.contains(output.as_str()));
    }
    // A clean shutdown (SIGTERM) ends the server with success.
    assert!(server.terminate().success());
}

#[test]
fn two_servers_on_one_bucket_serve_each_others_entries() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket("team");
    let flags = ["--remote", "s3://team/serve", "-v"];
    let a = SeedServer::start_with_env(Seed::Serve, &flags, minio.env());
    let b = SeedServer::start_with_env(Seed::Serve, &flags, minio.env());
    let module = support::fixture_copy();
    let dir = module.path();
    let expected = plain_output(dir);
    let through = |url: &str| GoEnv::new(Toolchain::Local).with_flags(&["--cache-server", url]);
    let writer = through(&a.url());
    for args in STEPS {
        let run = writer.go(dir, args);
        run.assert_ok();
        assert_eq!(
            run.stats.upload_errors + run.stats.remote_errors,
            0,
            "{:?}",
            run.stats
        );
    }
    // Every acknowledged PUT is in the bucket, and so are the manifests and
    // packs the first machine wrote at close.
    assert!(!minio.entry_keys("team", "serve").is_empty());
    assert!(!minio.pack_keys("team", "serve").is_empty(), "{}", a.log());
    // Server b stored nothing itself: what it serves comes from the bucket.
    for args in STEPS {
        let run = through(&b.url()).go(dir, args);
        run.assert_ok();
        run.assert_warm();
        let s = &run.stats;
        assert_eq!(s.remote_hits + s.prefetch_hits, s.hits, "{args:?}: {s:?}");
        assert!(
            s.prefetch_hits > 0 && s.pack_prefetched > 0,
            "{args:?}: {s:?}\n{}",
            b.log()
        );
        assert_eq!(
            s.remote_errors + s.corrupt,
            0,
            "{args:?}: {s:?}\n{}",
            b.log()
        );
        if args[0] == "run" {
            assert_eq!(run.stdout, expected);
        }
    }
    support::assert_store_whole(&b.store_dir());
}

/// POSTs an identity token to /auth/exchange-token: the status and the
/// access token when there is one.
fn exchange(addr: SocketAddr, body: &str) -> (u16, Option<String>) {
    let head = format!(
        "POST /auth/exchange-token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, reply) = request(addr, &head, body.as_bytes());
    let token = reply
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| v["access_token"].as_str().map(str::to_owned));
    (status, token)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn put_as(addr: SocketAddr, token: &str, action: &str, data: &[u8]) -> u16 {
    let head = format!(
        "PUT /{action}/{} HTTP/1.1\r\nHost: t\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
        hex_id(data),
        bearer(token),
        data.len()
    );
    request(addr, &head, data).0
}

fn get_as(addr: SocketAddr, token: &str, action: &str) -> u16 {
    request(
        addr,
        &get_head(&format!("/action/{action}"), &bearer(token)),
        b"",
    )
    .0
}

/// The algorithm a JWT is checked with is the issuer's key's (its JWK's
/// `alg`), not the token header's: a token signed with the issuer's RSA key
/// (JWK alg RS256) under PS256 or RS512 is refused, and counted.
#[test]
fn a_jwt_is_checked_with_its_keys_algorithm() {
    let issuer = support::seedserver::Issuer::start();
    let metrics = SocketAddr::from(([127, 0, 0, 1], support::s3server::free_port()));
    let metrics_flag = metrics.to_string();
    let server = SeedServer::start_with(
        Seed::Serve,
        &[
            "--jwt-issuer",
            &issuer.url,
            "--jwt-claim",
            "repository=test/repo",
            "--namespace-claim",
            "ref",
            "--metrics-listen",
            &metrics_flag,
        ],
    );
    let addr = server.addr();
    let failures = || {
        let (status, text) = request(metrics, &get_head("/metrics", ""), b"");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| {
                l.strip_prefix("gocacher_serve_auth_failures_total")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no auth failures counter in\n{text}"))
    };
    let jwt = |alg: &str| {
        format!(
            "{{\"jwt\": \"{}\"}}",
            issuer.mint(&format!(
                "alg={alg}&repository=test/repo&ref=refs/pull/9/merge"
            ))
        )
    };
    // The RSA key's own algorithm: a session.
    let (status, token) = exchange(addr, &jwt("RS256"));
    assert_eq!(status, 200, "{}", server.log());
    assert_eq!(get_as(addr, &token.unwrap(), &hex_id(b"x")), 404);
    let before = failures();
    // The same key, the same claims, another algorithm in the header.
    for alg in ["PS256", "RS512"] {
        let (status, token) = exchange(addr, &jwt(alg));
        assert_eq!(
            (status, token.is_some()),
            (401, false),
            "a token signed under {alg} with an RS256 key was taken\n{}",
            server.log()
        );
    }
    assert_eq!(failures(), before + 2, "each refused token is counted");
}

#[test]
fn namespaces_keep_pull_requests_apart() {
    let issuer = support::seedserver::Issuer::start();
    let server = SeedServer::start_with(
        Seed::Serve,
        &[
            "--jwt-issuer",
            &issuer.url,
            "--jwt-claim",
            "repository=test/repo",
            "--global-jwt-claim",
            "ref=refs/heads/main",
            "--namespace-claim",
            "ref",
            "-v",
        ],
    );
    let addr = server.addr();
    let jwt = |q: &str| format!("{{\"jwt\": \"{}\"}}", issuer.mint(q));
    let (status, main) = exchange(addr, &jwt("repository=test/repo&ref=refs/heads/main"));
    assert_eq!(status, 200, "{}", server.log());
    let main = main.unwrap();
    let pr1 = exchange(addr, &jwt("repository=test/repo&ref=refs/pull/1/merge"))
        .1
        .unwrap();
    let pr2 = exchange(addr, &jwt("repository=test/repo&ref=refs/pull/2/merge"))
        .1
        .unwrap();

    // Refused: garbage, another repository, another audience, expired.
    assert_eq!(exchange(addr, "{not json").0, 400);
    assert_eq!(exchange(addr, "{\"jwt\": \"a.b.c\"}").0, 401);
    assert_eq!(
        exchange(addr, &jwt("repository=other/repo&ref=refs/heads/main")).0,
        401
    );
    assert_eq!(
        exchange(
            addr,
            &jwt("aud=someone-else&repository=test/repo&ref=refs/heads/main")
        )
        .0,
        401
    );
    assert_eq!(
        exchange(
            addr,
            &jwt("exp=-600&repository=test/repo&ref=refs/heads/main")
        )
        .0,
        401
    );
    // No token, or a made-up one: 401 for every endpoint.
    let action = hex_id(b"pr action");
    assert_eq!(
        request(addr, &get_head(&format!("/action/{action}"), ""), b"").0,
        401
    );
    assert_eq!(
        get_as(addr, "0123456789abcdef0123456789abcdef", &action),
        401
    );

    // What a pull request writes, only that pull request reads.
    assert_eq!(put_as(addr, &pr1, &action, b"built in PR 1"), 204);
    assert_eq!(get_as(addr, &pr1, &action), 200);
    assert_eq!(get_as(addr, &pr2, &action), 404, "PR 2 sees PR 1's entry");
    assert_eq!(get_as(addr, &main, &action), 404, "main sees PR 1's entry");

    // What main writes, every pull request reads.
    let shared = hex_id(b"main action");
    assert_eq!(put_as(addr, &main, &shared, b"built on main"), 204);
    assert_eq!(get_as(addr, &pr1, &shared), 200);
    assert_eq!(get_as(addr, &pr2, &shared), 200);

    // A pull request's session counts its own requests.
    let (status, reply) = request(addr, &get_head("/session/stats", &bearer(&pr1)), b"");
    assert_eq!(status, 200);
    let body: serde_json::Value =
        serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["namespace"], "refs/pull/1/merge", "{body}");
    assert_eq!(
        (body["puts"].as_u64(), body["hits"].as_u64()),
        (Some(1), Some(2)),
        "{body}"
    );

    // The same through real go commands: main's build fills the global
    // namespace; a pull request's machine reads all of it and writes only
    // its own, which main's next machine does not see.
    let module = support::fixture_copy();
    let dir = module.path();
    let token_file = |name: &str, q: &str| {
        let p = module.path().join(name);
        std::fs::write(&p, issuer.mint(q)).unwrap();
        p.display().to_string()
    };
    let main_file = token_file("main.jwt", "repository=test/repo&ref=refs/heads/main");
    let pr_file = token_file("pr.jwt", "repository=test/repo&ref=refs/pull/3/merge");
    let through = |file: &str| {
        GoEnv::new(Toolchain::Local).with_flags(&[
            "--cache-server",
            &server.url(),
            "--oidc-token-file",
            file,
        ])
    };
    let run = through(&main_file).go(dir, &["build", "./..."]);
    run.assert_ok();
    assert!(
        run.stats.uploads > 0 && run.stats.upload_errors == 0,
        "{:?}\n{}",
        run.stats,
        run.stderr
    );
    let pr = through(&pr_file);
    let run = pr.go(dir, &["build", "./..."]);
    run.assert_ok();
    run.assert_warm();
    assert_eq!(run.stats.remote_errors, 0, "{:?}", run.stats);
    std::fs::write(
        dir.join("pr_only.go"),
        "package fixture\n\nfunc PROnly() int { return 3 }\n",
    )
    .unwrap();
    let run = pr.go(dir, &["build", "./..."]);
    run.assert_ok();
    assert!(run.stats.uploads > 0, "{:?}", run.stats);
    let run = through(&main_file).go(dir, &["build", "./..."]);
    run.assert_ok();
    assert!(
        run.stats.misses > 0,
        "main's machine was served the pull request's entries: {:?}",
        run.stats
    );
}
