//! What the bucket's failures do, with no restart: a long-running
//! `gocacher serve --remote` rides out a credentials outage and denied
//! writes and uses its bucket again once they pass (its /metrics saying so
//! all along); the breaker sends one probe to a black-holed endpoint after
//! its cooldown, not one per waiting lookup; and a go command whose
//! credentials may not delete skips the corrupt object it cannot replace,
//! not every upload after it. Real MinIO, real `mc`, the real `go`.
//!
//! The breaker's probe and the writer that may not delete are in
//! `bucket_policy/probes.rs`.
//!
//! Each serve test prints a row (fault, what is asserted, the server's peak
//! RSS, wall time) and appends it to `bucket-policy-table.md` in cargo's
//! test temp dir.

#[path = "bucket_policy/probes.rs"]
mod probes;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use support::s3server::{free_port, runtime, Kind, S3Server};
use support::seedserver::{Seed, SeedServer};
use support::{GoEnv, Toolchain};

const BUCKET: &str = "policy";

/// One HTTP/1.1 exchange on a fresh connection: the status and the reply.
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
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

fn hex_id(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An entry named `name`: its action ID and bytes.
fn entry(name: &str) -> (String, Vec<u8>) {
    let data = format!("the output of {name} ").repeat(50).into_bytes();
    (hex_id(format!("action {name}").as_bytes()), data)
}

fn put(addr: SocketAddr, name: &str) -> u16 {
    let (action, data) = entry(name);
    let head = format!(
        "PUT /{action}/{} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        hex_id(&data),
        data.len()
    );
    request(addr, &head, &data).0
}

fn get(addr: SocketAddr, name: &str) -> u16 {
    let (action, _) = entry(name);
    let head = format!("GET /action/{action} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    request(addr, &head, b"").0
}

/// A metric's value: the sample whose name and labels start with `series`.
fn metric(metrics: SocketAddr, series: &str) -> Option<f64> {
    let (status, text) = request(
        metrics,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 200);
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The bucket's state in /metrics: in use, writes go through.
fn state(metrics: SocketAddr) -> (f64, f64) {
    let (in_use, writes) = seen_state(metrics).expect("bucket_in_use and bucket_writes");
    (in_use, writes)
}

fn seen_state(metrics: SocketAddr) -> Option<(f64, f64)> {
    Some((
        metric(metrics, "gocacher_serve_bucket_in_use ")?,
        metric(metrics, "gocacher_serve_bucket_writes ")?,
    ))
}

fn errors(metrics: SocketAddr, kind: &str) -> f64 {
    metric(
        metrics,
        &format!("gocacher_serve_bucket_errors_total{{kind=\"{kind}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Waits up to `limit` for `ok`, trying every half second.
fn until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Peak RSS of a process, in MB (VmHWM).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

/// Prints a table row and appends it to `bucket-policy-table.md` in cargo's
/// test temp dir, where it survives the harness's output capture.
fn row(fault: &str, asserted: &str, server: &SeedServer, started: Instant) {
    let line = format!(
        "| {fault} | {asserted} | {:.0} MB | {:.0} s |",
        peak_rss_mb(server.pid()),
        started.elapsed().as_secs_f64()
    );
    println!("{line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bucket-policy-table.md");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn value<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    &env.iter().find(|(k, _)| k == key).unwrap().1
}

/// A container-credentials endpoint (what ECS and EKS Pod Identity give a
/// task, at `AWS_CONTAINER_CREDENTIALS_FULL_URI`): each request gets new
/// MinIO session credentials from STS AssumeRole, announced to expire in
/// 20 s so that the SDK comes back for more every few seconds. While
/// `failing`, it answers 500.
struct CredentialsEndpoint {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

impl CredentialsEndpoint {
    fn start(minio: &S3Server, key: &str, secret: &str) -> CredentialsEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let (f, s, r) = (failing.clone(), served.clone(), refused.clone());
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::Config::builder()
                .behavior_version_latest()
                .endpoint_url(&minio.endpoint)
                .region(aws_sdk_sts::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_sts::config::Credentials::new(
                    key, secret, None, None, "test",
                ))
                .build(),
        );
        thread::spawn(move || {
            let rt = runtime();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if f.load(Ordering::Relaxed) {
                    r.fetch_add(1, Ordering::Relaxed);
                    let _ = conn.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
                let assumed = rt
                    .block_on(
                        sts.assume_role()
                            .role_arn("arn:minio:iam:::role/gocacher-test")
                            .role_session_name("gocacher-serve")
                            .duration_seconds(900)
                            .send(),
                    )
                    .expect("MinIO STS AssumeRole");
                let c = assumed.credentials().expect("credentials");
                let expires = SystemTime::now() + Duration::from_secs(20);
                let body = serde_json::json!({
                    "AccessKeyId": c.access_key_id(),
                    "SecretAccessKey": c.secret_access_key(),
                    "Token": c.session_token(),
                    "Expiration": humantime::format_rfc3339_seconds(expires).to_string(),
                })
                .to_string();
                s.fetch_add(1, Ordering::Relaxed);
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        CredentialsEndpoint {
            addr,
            failing,
            served,
            refused,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/credentials", self.addr)
    }
}

/// A server's environment with no keys of its own: the credentials come
/// from `creds`.
fn container_env(minio: &S3Server, creds: &CredentialsEndpoint) -> Vec<(String, String)> {
    [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", creds.url()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL_S3", minio.endpoint.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/nonexistent".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `gocacher serve --remote s3://BUCKET/serve` with metrics; the metrics
/// address.
fn serve(env: Vec<(String, String)>) -> (SeedServer, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = SeedServer::start_with_env(
        Seed::Serve,
        &[
            "--remote",
            &format!("s3://{BUCKET}/serve"),
            "--metrics-listen",
            &metrics.to_string(),
        ],
        env,
    );
    (server, metrics)
}

/// The key of entry `name` under the servers' prefix.
fn in_bucket(minio: &S3Server, name: &str) -> bool {
    let (action, _) = entry(name);
    minio
        .entry_keys(BUCKET, "serve/")
        .iter()
        .any(|k| k.ends_with(&action) || k.contains(&format!("/{action}")))
}

#[test]
fn serve_rides_out_a_credentials_outage() {
    let started = Instant::now();
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket(BUCKET);
    let (_, user) = minio.user_with(BUCKET, &["s3:GetObject", "s3:PutObject"]);
    let creds = CredentialsEndpoint::start(
        &minio,
        value(&user, "AWS_ACCESS_KEY_ID"),
        value(&user, "AWS_SECRET_ACCESS_KEY"),
    );
    let (server, metrics) = serve(container_env(&minio, &creds));
    // Another writer on the same bucket, with keys of its own.
    let other = SeedServer::start_with_env(
        Seed::Serve,
        &["--remote", &format!("s3://{BUCKET}/serve")],
        minio.env(),
    );

    assert_eq!(put(server.addr(), "before"), 204, "{}", server.log());
    assert!(in_bucket(&minio, "before"));
    assert!(creds.served.load(Ordering::Relaxed) > 0);
    let healthy = seen_state(metrics);

    // The endpoint fails for 45 s. The server keeps answering from its store;
    // once its session credentials lapse it takes the bucket out of use.
    creds.failing.store(true, Ordering::Relaxed);
    let outage = Instant::now();
    let mut out_of_use = None;
    let mut i = 0;
    while outage.elapsed() < Duration::from_secs(45) {
        assert_eq!(get(server.addr(), "before"), 200, "{}", server.log());
        i += 1;
        assert_eq!(get(server.addr(), &format!("nobody's {i}")), 404);
        if out_of_use.is_none() && seen_state(metrics) == Some((0.0, 0.0)) {
            out_of_use = Some(outage.elapsed());
        }
        thread::sleep(Duration::from_millis(500));
    }
    assert!(creds.refused.load(Ordering::Relaxed) > 0);
    // A PUT meanwhile is kept here and acknowledged (the seed's go-cacher
    // fails a build on a PUT error); the bucket gets it once it answers.
    assert_eq!(put(server.addr(), "during"), 204, "{}", server.log());
    assert_eq!(get(server.addr(), "during"), 200);
    assert!(!in_bucket(&minio, "during"));
    creds.failing.store(false, Ordering::Relaxed);

    // Afterwards: what another writer puts in the bucket is served, and what
    // clients put through this server reaches the bucket.
    assert_eq!(put(other.addr(), "elsewhere"), 204, "{}", other.log());
    let back = Instant::now();
    assert!(
        until(Duration::from_secs(70), || get(server.addr(), "elsewhere")
            == 200),
        "the bucket was never used again:\n{}",
        server.log()
    );
    let back = back.elapsed();
    assert!(
        until(Duration::from_secs(30), || in_bucket(&minio, "during")),
        "the PUT kept during the outage never reached the bucket:\n{}",
        server.log()
    );
    assert_eq!(put(server.addr(), "after"), 204, "{}", server.log());
    assert!(in_bucket(&minio, "after"));
    let out_of_use = out_of_use.unwrap_or_else(|| {
        panic!(
            "/metrics never showed the bucket out of use during the outage:\n{}",
            server.log()
        )
    });
    assert_eq!(healthy, Some((1.0, 1.0)));
    assert!(errors(metrics, "credentials") > 0.0, "{}", server.log());
    assert_eq!(state(metrics), (1.0, 1.0));

    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("credentials refused") || l.contains("answering again"))
        .collect();
    assert!(
        lines.len() >= 2
            && lines[0].contains("credentials refused")
            && lines[0].contains("serving from the local store only")
            && lines
                .last()
                .unwrap()
                .contains("answering again; using it for reads and writes"),
        "{log}"
    );
    assert!(
        !log.contains("Continuing with the local cache only"),
        "{log}"
    );
    println!(
        "out of use {:.0} s into the outage; used again {:.0} s after it",
        out_of_use.as_secs_f64(),
        back.as_secs_f64()
    );
    row(
        "credentials endpoint (container, STS session credentials) answers 500 for 45 s",
        "store hits served throughout; bucket_in_use and bucket_writes 0 during, 1 after; errors{kind=credentials}; a PUT during it acknowledged and uploaded after it; another writer's entry served and a new PUT in the bucket afterwards; no restart",
        &server,
        started,
    );
}

#[test]
fn serve_resumes_writes_once_the_policy_allows_them() {
    let started = Instant::now();
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket(BUCKET);
    let (user, env) = minio.user_with(BUCKET, &["s3:GetObject"]);
    let (server, metrics) = serve(env);
    let other = SeedServer::start_with_env(
        Seed::Serve,
        &["--remote", &format!("s3://{BUCKET}/serve")],
        minio.env(),
    );

    // Denied: the PUT is kept here and acknowledged, not in the bucket yet;
    // reads go on.
    assert_eq!(put(server.addr(), "denied"), 204, "{}", server.log());
    assert_eq!(get(server.addr(), "denied"), 200);
    assert!(!in_bucket(&minio, "denied"));
    let while_denied = seen_state(metrics);
    assert_eq!(put(other.addr(), "read"), 204);
    assert_eq!(get(server.addr(), "read"), 200, "{}", server.log());

    // Allowed again: the kept PUT reaches the bucket within a retry (30 s),
    // no restart; new ones go straight through.
    minio.set_actions(&user, BUCKET, &["s3:GetObject", "s3:PutObject"]);
    let allowed = Instant::now();
    assert!(
        until(Duration::from_secs(60), || in_bucket(&minio, "denied")),
        "writes never resumed:\n{}",
        server.log()
    );
    assert_eq!(put(server.addr(), "allowed"), 204, "{}", server.log());
    println!(
        "writes resumed {:.0} s after the policy allowed them",
        allowed.elapsed().as_secs_f64()
    );
    assert!(in_bucket(&minio, "allowed"));
    assert_eq!(while_denied, Some((1.0, 0.0)));
    assert!(errors(metrics, "write_denied") > 0.0);
    assert_eq!(state(metrics), (1.0, 1.0));
    let log = server.log();
    let denied = log.lines().filter(|l| l.contains("writes denied")).count();
    assert_eq!(denied, 1, "one line per change of state:\n{log}");
    assert!(log.contains("retrying writes in 30 s"), "{log}");
    assert!(log.contains("writes go through again"), "{log}");
    row(
        "bucket policy denies PutObject, then allows it (mc admin policy)",
        "PUTs kept locally and acknowledged while denied, reads go on; bucket_writes 0 then 1, errors{kind=write_denied}; the kept PUT reaches the bucket within one retry; no restart",
        &server,
        started,
    );
}
