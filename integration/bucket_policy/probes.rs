//! The breaker sends one probe to a black-holed bucket after its
//! cooldown, not one per waiting lookup; and a go command whose credentials
//! may not delete skips the corrupt object it cannot replace, not every
//! upload after it.

use super::*;

/// A bucket endpoint that accepts connections and reads requests but never
/// answers; it counts the requests.
struct BlackHole {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let counted = counted.clone();
                thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        // Request heads end with a blank line.
                        while let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            counted.fetch_add(1, Ordering::Relaxed);
                            seen.drain(..i + 4);
                        }
                    }
                });
            }
        });
        BlackHole { addr, requests }
    }
}

/// Lookups of `names` at once; each must be a miss.
fn lookups(addr: SocketAddr, names: impl Iterator<Item = String>) {
    let all: Vec<_> = names
        .map(|n| thread::spawn(move || get(addr, &n)))
        .collect();
    for l in all {
        assert_eq!(l.join().unwrap(), 404);
    }
}

#[test]
fn after_the_cooldown_one_probe_goes_to_a_black_holed_bucket() {
    let started = Instant::now();
    let hole = BlackHole::start();
    let env = [
        ("AWS_ACCESS_KEY_ID", "hole".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "hole-secret".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL_S3", format!("http://{}", hole.addr)),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/nonexistent".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (server, metrics) = serve(env);
    // Lookups time out (3 s) until the breaker opens.
    lookups(server.addr(), (0..8).map(|i| format!("first {i}")));
    assert!(hole.requests.load(Ordering::Relaxed) >= 3);
    let before = hole.requests.load(Ordering::Relaxed);
    // Past the 30 s cooldown, many lookups at once: one of them (or the
    // server's own retry) probes; the others are misses without a request
    // while it waits, and after it fails the breaker is open again.
    thread::sleep(Duration::from_secs(32));
    lookups(server.addr(), (0..30).map(|i| format!("second {i}")));
    thread::sleep(Duration::from_secs(4));
    let probes = hole.requests.load(Ordering::Relaxed) - before;
    assert_eq!(probes, 1, "requests after the cooldown\n{}", server.log());
    assert_eq!(state(metrics), (0.0, 0.0));
    assert!(errors(metrics, "unavailable") >= 4.0);
    row(
        "bucket endpoint black-holed (accepts, never answers); 30 lookups at once after the cooldown",
        "one request reaches the endpoint after the cooldown, not one per lookup; every lookup a miss; bucket_in_use 0",
        &server,
        started,
    );
}

#[test]
fn a_writer_that_may_not_delete_skips_the_object_it_cannot_heal() {
    let minio = S3Server::start(Kind::Minio);
    minio.create_bucket(BUCKET);
    let module = support::fixture_copy();
    let remote = format!("s3://{BUCKET}/heal");
    let filler = GoEnv::new(Toolchain::Local)
        .with_flags(&["--remote", &remote])
        .with_env(minio.env());
    filler.go(module.path(), &["build", "./..."]).assert_ok();
    let entries = minio.entry_keys(BUCKET, "heal/");
    assert!(entries.len() > 12, "{entries:?}");
    // A few damaged objects stay; the rest of the bucket (manifests and
    // packs too) is emptied, so the next build uploads most entries again.
    let mut gone: Vec<String> = entries[8..].to_vec();
    gone.extend(minio.manifest_keys(BUCKET, "heal/"));
    gone.extend(minio.pack_keys(BUCKET, "heal/"));
    minio.delete(BUCKET, &gone);
    let damaged = minio.corrupt_all(BUCKET, "heal/");
    assert!(damaged > 0);

    let (_, env) = minio.user_with(BUCKET, &["s3:GetObject", "s3:PutObject"]);
    let writer = GoEnv::new(Toolchain::Local)
        .with_flags(&["--remote", &remote])
        .with_env(env);
    let run = writer.go(module.path(), &["build", "./..."]);
    run.assert_ok();
    let s = &run.stats;
    assert!(s.corrupt > 0, "{s:?}");
    assert!(
        s.upload_errors > 0 && s.upload_errors <= s.corrupt,
        "one failed heal per corrupt object: {s:?}"
    );
    // Every other entry is in the bucket again, and the close wrote the
    // manifest (a read-only run would not).
    let after = minio.entry_keys(BUCKET, "heal/");
    let back = entries[8..].iter().filter(|k| after.contains(k)).count();
    assert_eq!(back, entries.len() - 8, "{s:?}\n{}", run.stderr);
    assert!(!minio.manifest_keys(BUCKET, "heal/").is_empty());
    assert!(!run.stderr.contains("read-only"), "{}", run.stderr);
    assert_eq!(s.uploads_dropped, 0, "{s:?}\n{}", run.stderr);
    assert!(
        run.stderr.contains("deleting it to replace it was denied"),
        "{}",
        run.stderr
    );
}
