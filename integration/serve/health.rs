//! What a load balancer sees of a real `gocacher serve`: `/healthz` and
//! `/readyz` without a token and outside the metrics, `/readyz` following
//! the store (remounted read-only under it) and the bucket (a MinIO stopped
//! and started again), and SIGTERM's drain.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::support::s3server::{free_port, Kind, S3Server};
use super::support::seedserver::{Seed, SeedServer};
use super::{get_head, hex_id, put_head, request};

const TOKEN: &str = "health-token-0123456789";

/// One GET on a fresh connection: status and body, or `None` when nothing
/// answers.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    c.write_all(get_head(path, "").as_bytes()).ok()?;
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).ok()?;
    let text = String::from_utf8_lossy(&reply).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.trim().to_string()))
}

/// Asks `path` every 100 ms until it answers `want`; its body then.
fn wait_for(server: &SeedServer, path: &str, want: u16, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let got = get(server.addr(), path);
        if let Some((code, body)) = &got {
            if *code == want {
                return body.clone();
            }
        }
        assert!(
            start.elapsed() < limit,
            "{path} not {want} after {limit:?} (last {got:?}):\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A directory bind-mounted read-only onto itself, writable again when
/// dropped (chmod does not stop root; a read-only mount does).
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> ReadOnly {
        let run = |args: &[&str]| {
            let out = Command::new("mount").args(args).arg(dir).output().unwrap();
            assert!(
                out.status.success(),
                "mount {args:?} {} (the test needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["--bind", dir.to_str().unwrap()]);
        let ro = ReadOnly(dir.to_path_buf());
        run(&["-o", "remount,bind,ro"]);
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn healthz_and_readyz_need_no_token_and_readyz_follows_the_store() {
    let tokens = tempfile::tempdir().unwrap();
    let file = tokens.path().join("tokens");
    std::fs::write(&file, format!("{TOKEN} global write\n")).unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = SeedServer::start_with(
        Seed::Serve,
        &[
            "--token-file",
            file.to_str().unwrap(),
            "--metrics-listen",
            &metrics.to_string(),
        ],
    );
    let addr = server.addr();
    let action = format!("/action/{}", hex_id(b"health"));
    // The cache wants a token; the health routes do not.
    assert_eq!(request(addr, &get_head(&action, ""), b"").0, 401);
    assert_eq!(get(addr, "/healthz"), Some((200, "ok".into())));
    assert_eq!(get(addr, "/readyz"), Some((200, "ready".into())));

    let ro = ReadOnly::mount(&server.store_dir());
    let why = wait_for(&server, "/readyz", 503, Duration::from_secs(10));
    assert!(why.contains("cannot be written"), "{why}");
    assert_eq!(get(addr, "/healthz"), Some((200, "ok".into())));
    // Reads go on meanwhile.
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(request(addr, &get_head(&action, &bearer), b"").0, 404);
    drop(ro);
    assert_eq!(
        wait_for(&server, "/readyz", 200, Duration::from_secs(10)),
        "ready"
    );
    assert!(
        server
            .log()
            .contains("/readyz answers 503 until a write succeeds"),
        "{}",
        server.log()
    );

    // Dozens of health checks later, the metrics count only the cache's
    // requests.
    let (code, text) = request(metrics, &get_head("/metrics", ""), b"");
    assert_eq!(code, 200);
    assert!(text.contains("endpoint=\"/action/{id}\""), "{text}");
    assert!(
        !text.contains("healthz") && !text.contains("readyz"),
        "health checks counted as requests:\n{text}"
    );
}

#[test]
fn readyz_follows_the_bucket() {
    const BUCKET: &str = "health";
    let mut minio = S3Server::start(Kind::Minio);
    minio.create_bucket(BUCKET);
    let server = SeedServer::start_with_env(
        Seed::Serve,
        &["--remote", &format!("s3://{BUCKET}/r")],
        minio.env(),
    );
    // The bucket is read as the server starts.
    wait_for(&server, "/readyz", 200, Duration::from_secs(10));

    // Nothing asks the server anything; its watch finds the bucket gone.
    minio.kill();
    let gone = Instant::now();
    let why = wait_for(&server, "/readyz", 503, Duration::from_secs(60));
    println!(
        "/readyz 503 {:?} after MinIO stopped: {why}",
        gone.elapsed()
    );
    assert!(why.contains("bucket health at"), "{why}");
    assert_eq!(get(server.addr(), "/healthz"), Some((200, "ok".into())));

    minio.restart();
    let back = Instant::now();
    wait_for(&server, "/readyz", 200, Duration::from_secs(90));
    println!("/readyz 200 {:?} after MinIO came back", back.elapsed());
}

#[test]
fn sigterm_drains_then_stops() {
    let mut server = SeedServer::start_with(Seed::Serve, &["--drain", "3s"]);
    let addr = server.addr();
    let put = |n: u32| {
        let data = format!("drained {n} ").repeat(100).into_bytes();
        let action = hex_id(format!("drain {n}").as_bytes());
        let head = put_head(&action, &hex_id(&data), data.len());
        assert_eq!(request(addr, &head, &data).0, 204);
        (action, data)
    };
    let (action, data) = put(1);
    assert_eq!(get(addr, "/readyz"), Some((200, "ready".into())));

    let term = Instant::now();
    server.signal(libc::SIGTERM);
    let why = wait_for(&server, "/readyz", 503, Duration::from_secs(2));
    assert_eq!(why, "shutting down");
    // Everything else is served as before while the balancer drains.
    let (code, reply) = request(
        addr,
        &get_head(&format!("/action/{action}"), "Want-Object: 1\r\n"),
        b"",
    );
    assert_eq!(code, 200, "{reply}");
    assert!(reply.ends_with(std::str::from_utf8(&data).unwrap()));
    put(2);
    assert!(term.elapsed() < Duration::from_secs(3), "too slow to tell");

    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("still running 20 s after SIGTERM with --drain 3s");
    assert!(status.success(), "{status}");
    let took = term.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "stopped {took:?} after SIGTERM, before the drain was over"
    );
    assert!(
        server.log().contains("serving for 3s more"),
        "{}",
        server.log()
    );

    // A second SIGTERM ends a long drain.
    let mut long = SeedServer::start_with(Seed::Serve, &["--drain", "10m"]);
    long.signal(libc::SIGTERM);
    wait_for(&long, "/readyz", 503, Duration::from_secs(2));
    long.signal(libc::SIGTERM);
    let status = long
        .wait_exit(Duration::from_secs(10))
        .expect("still draining 10 s after a second SIGTERM");
    assert!(status.success(), "{status}");
    assert!(long.log().contains("second SIGTERM"), "{}", long.log());
}
