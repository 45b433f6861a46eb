//! `gocacher serve`, end to end: the real `go` with the seed's own
//! `go-cacher` (installed pinned) and with gocacher as its GOCACHEPROG, both
//! pointed at a `gocacher serve` the test starts on 127.0.0.1; and raw HTTP
//! requests for what a client should never be able to do to the store.
//!
//! By concern beside it, in `serve/`: `store.rs` (size cap, SIGKILL, two
//! servers on one bucket), `auth.rs` (tokens and namespaces), `frames.rs`
//! (lz4 replies), `health.rs` (`/healthz`, `/readyz`, the drain),
//! `named.rs` (manifests and packs).

mod support;

#[path = "serve/auth.rs"]
mod auth;
#[path = "serve/frames.rs"]
mod frames;
#[path = "serve/health.rs"]
mod health;
#[path = "serve/named.rs"]
mod named;
#[path = "serve/store.rs"]
mod store;

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
