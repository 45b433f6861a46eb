//! Manifests and packs on a real `gocacher serve`: streamed whole or by
//! range with memory that does not grow with the object or the readers,
//! trimmed with the entries under one `--max-size`, and sent whole to a
//! reader even when trim removes them mid-reply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use super::support::s3server::free_port;
use super::support::seedserver::{Seed, SeedServer};
use super::{get_head, hex_id, request};

const MB: usize = 1_000_000;

/// `len` pseudo-random bytes, the same for the same seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A named object's name for `i`: 32 lower-case hex digits.
fn name(i: u64) -> String {
    hex_id(format!("named object {i}").as_bytes())[..32].to_string()
}

fn auth(token: Option<&str>) -> String {
    token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"))
}

/// PUTs a named object; the status.
fn put_named(addr: SocketAddr, token: Option<&str>, kind: &str, name: &str, data: &[u8]) -> u16 {
    let head = format!(
        "PUT /gocacher/v1/{kind}/{name} HTTP/1.1\r\nHost: t\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
        auth(token),
        data.len()
    );
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    for chunk in data.chunks(1 << 20) {
        c.write_all(chunk).unwrap();
    }
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP reply to a PUT: {reply:?}"))
}

/// A GET of a named object, its head read and its body still to come.
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: BufReader<TcpStream>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn content_length(&self) -> u64 {
        self.header("content-length")
            .unwrap_or_else(|| panic!("no Content-Length: {:?}", self.headers))
            .parse()
            .unwrap()
    }

    /// Reads the body and checks it is `want`, byte for byte, as it comes
    /// (nothing is held but a chunk). `Err`: where it stopped or differed.
    fn check_body(&mut self, want: &[u8]) -> Result<(), String> {
        let len = self.content_length();
        if len != want.len() as u64 {
            return Err(format!("Content-Length {len}, expected {}", want.len()));
        }
        let mut buf = vec![0u8; 256 << 10];
        let mut at = 0usize;
        while at < want.len() {
            let n = match self.body.read(&mut buf) {
                Ok(0) => return Err(format!("the body ended at {at} of {}", want.len())),
                Ok(n) => n.min(want.len() - at),
                Err(e) => return Err(format!("the body failed at {at}: {e}")),
            };
            if buf[..n] != want[at..at + n] {
                return Err(format!("the body differs within bytes {at}..{}", at + n));
            }
            at += n;
        }
        Ok(())
    }
}

/// Sends a GET of `path` with `extra` headers and reads the reply's head.
fn get(addr: SocketAddr, path: &str, extra: &str) -> Reply {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(get_head(path, extra).as_bytes()).unwrap();
    let mut body = BufReader::new(c);
    let mut line = String::new();
    body.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP reply: {line:?}"));
    let mut headers = HashMap::new();
    loop {
        line.clear();
        body.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn pack_path(kind: &str, name: &str) -> String {
    format!("/gocacher/v1/{kind}/{name}")
}

/// The server's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kb * 1024
}

/// Every byte under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            total += bytes_under(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}

#[test]
fn named_objects_stream_whole_and_ranged_in_bounded_memory() {
    const CAP: u64 = 64 << 20;
    let server = SeedServer::start(Seed::Serve);
    let addr = server.addr();
    let pack = std::sync::Arc::new(pattern(1, 200 * MB));
    let p = name(1);
    assert_eq!(put_named(addr, None, "packs", &p, &pack), 204);
    // A manifest small enough to be read whole.
    let manifest = pattern(2, 10_000);
    let m = name(2);
    assert_eq!(put_named(addr, None, "manifests", &m, &manifest), 204);

    let whole = get(addr, &pack_path("packs", &p), "");
    assert_eq!(whole.status, 200);
    let tag = whole.header("etag").expect("an ETag").to_string();
    drop(whole);

    // Readers at once: whole, ranged (closed, open-ended, past the end),
    // and ranged while the ETag is If-Match.
    let len = pack.len() as u64;
    let asks: Vec<(String, u64, u64)> = vec![
        (String::new(), 0, len),
        (String::new(), 0, len),
        (String::new(), 0, len),
        (String::new(), 0, len),
        ("Range: bytes=1000-150000999\r\n".into(), 1000, 150_001_000),
        ("Range: bytes=50000000-\r\n".into(), 50_000_000, len),
        (
            format!("Range: bytes=123456-{}\r\n", len + 10_000),
            123_456,
            len,
        ),
        (
            format!("Range: bytes=7-99999999\r\nIf-Match: {tag}\r\n"),
            7,
            100_000_000,
        ),
    ];
    let readers: Vec<_> = asks
        .into_iter()
        .map(|(extra, start, end)| {
            let pack = pack.clone();
            let path = pack_path("packs", &p);
            std::thread::spawn(move || {
                let mut r = get(addr, &path, &extra);
                let ranged = !extra.is_empty();
                assert_eq!(r.status, if ranged { 206 } else { 200 }, "{extra}");
                if ranged {
                    assert_eq!(
                        r.header("content-range"),
                        Some(format!("bytes {start}-{}/{len}", end - 1).as_str()),
                        "{extra}"
                    );
                }
                r.check_body(&pack[start as usize..end as usize])
                    .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let peak = peak_rss(server.pid());
    eprintln!("peak RSS of gocacher serve: {} MB", peak >> 20);

    // The small one, whole and ranged; a stale ETag and a range past the
    // end are refused.
    let mut r = get(addr, &pack_path("manifests", &m), "");
    assert_eq!(r.status, 200);
    r.check_body(&manifest).unwrap();
    let mut r = get(
        addr,
        &pack_path("manifests", &m),
        "Range: bytes=100-199\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/10000"));
    r.check_body(&manifest[100..200]).unwrap();
    let r = get(
        addr,
        &pack_path("packs", &p),
        "Range: bytes=0-9\r\nIf-Match: \"0-0\"\r\n",
    );
    assert_eq!(r.status, 412);
    let r = get(
        addr,
        &pack_path("packs", &p),
        &format!("Range: bytes={len}-\r\n"),
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    assert_eq!(get(addr, &pack_path("packs", &name(3)), "").status, 404);

    assert!(
        peak < CAP,
        "peak RSS {} MB with 8 readers of a 200 MB pack (cap {} MB)",
        peak >> 20,
        CAP >> 20
    );
}

#[test]
fn named_objects_are_trimmed_with_entries_under_one_max_size() {
    const CAP: u64 = 30 * MB as u64;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let (global, pr) = ("global-writer-token-0001", "pull-request-token-0001");
    std::fs::write(
        &tokens,
        format!("{global} global write\n{pr} refs/pull/1/merge write\n"),
    )
    .unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = SeedServer::start_with(
        Seed::Serve,
        &[
            "--max-size",
            "30MB",
            "--token-file",
            tokens.to_str().unwrap(),
            "--metrics-listen",
            &metrics.to_string(),
            "-v",
        ],
    );
    let addr = server.addr();
    // Entries first (the oldest), then 80 MB of packs, every other one in
    // the pull request's namespace; apart in time, so that the order of
    // use is clear.
    let entries = {
        let put_as = |action: &str, data: &[u8]| {
            let head = format!(
                "PUT /{action}/{} HTTP/1.1\r\nHost: t\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
                hex_id(data),
                auth(Some(global)),
                data.len()
            );
            request(addr, &head, data).0
        };
        (0..4u64)
            .map(|i| {
                let data = pattern(100 + i, MB);
                let action = hex_id(format!("trim entry {i}").as_bytes());
                assert_eq!(put_as(&action, &data), 204);
                action
            })
            .collect::<Vec<_>>()
    };
    std::thread::sleep(Duration::from_millis(50));
    let packs: Vec<(String, Option<&str>, u64)> = (0..16u64)
        .map(|i| {
            let token = if i % 2 == 0 { global } else { pr };
            let n = name(1000 + i);
            assert_eq!(
                put_named(addr, Some(token), "packs", &n, &pattern(1000 + i, 5 * MB)),
                204,
                "{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(30));
            (n, Some(token), 1000 + i)
        })
        .collect();

    // The cap holds, over entries and named objects in every namespace.
    let store = server.store_dir();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let size = bytes_under(&store);
        if size <= CAP {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store is still {size} bytes, over --max-size {CAP}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The newest packs, global and the namespace's, are kept and served.
    for (n, token, seed) in &packs[packs.len() - 4..] {
        let mut r = get(addr, &pack_path("packs", n), &auth(*token));
        assert_eq!(r.status, 200, "a recent pack was trimmed\n{}", server.log());
        r.check_body(&pattern(*seed, 5 * MB)).unwrap();
    }
    // The oldest go first, entries and packs alike.
    let (n, token, _) = &packs[0];
    assert_eq!(get(addr, &pack_path("packs", n), &auth(*token)).status, 404);
    for action in &entries {
        let (status, _) = request(
            addr,
            &get_head(&format!("/action/{action}"), &auth(Some(global))),
            b"",
        );
        assert_eq!(status, 404, "an old entry outlived newer packs");
    }
    // The store's size metric counts the named objects.
    let (_, text) = request(metrics, &get_head("/metrics", ""), b"");
    let stored: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("gocacher_serve_store_bytes")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no store_bytes in\n{text}"));
    assert!(
        stored >= 4 * 5 * MB as u64 && stored <= CAP,
        "store_bytes {stored}\n{text}"
    );
}

#[test]
fn a_pack_trimmed_or_replaced_while_read_is_sent_whole() {
    let server = SeedServer::start_with(Seed::Serve, &["--max-size", "40MB", "-v"]);
    let addr = server.addr();
    let old = pattern(7, 30 * MB);
    let p = name(7);
    assert_eq!(put_named(addr, None, "packs", &p, &old), 204);
    // A reader takes the head and the first bytes, then waits.
    let mut reader = get(addr, &pack_path("packs", &p), "");
    assert_eq!(reader.status, 200);
    let mut first = vec![0u8; MB];
    reader.body.read_exact(&mut first).unwrap();
    assert_eq!(first, old[..MB]);

    // Newer packs push it out: trim removes it under the reader.
    for i in 0..3u64 {
        assert_eq!(
            put_named(
                addr,
                None,
                "packs",
                &name(20 + i),
                &pattern(20 + i, 10 * MB)
            ),
            204
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    let file = server.store_dir().join("named/packs").join(&p);
    let deadline = Instant::now() + Duration::from_secs(30);
    while file.exists() {
        assert!(
            Instant::now() < deadline,
            "the oldest pack was never trimmed\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(addr, &pack_path("packs", &p), "").status, 404);
    // The reader still gets every byte of what it started.
    let mut rest = Vec::new();
    reader.body.read_to_end(&mut rest).unwrap();
    assert!(
        rest == old[MB..],
        "the reply of a trimmed pack was corrupted"
    );

    // A replacement renamed over a pack mid-reply changes neither the
    // reply's bytes nor its ETag; the next reader gets the new one.
    let q = name(21);
    let before = pattern(21, 10 * MB);
    let mut reader = get(addr, &pack_path("packs", &q), "");
    assert_eq!(reader.status, 200);
    let before_tag = reader.header("etag").unwrap().to_string();
    reader.body.read_exact(&mut first).unwrap();
    let after = pattern(99, 10 * MB);
    assert_eq!(put_named(addr, None, "packs", &q, &after), 204);
    let mut rest = Vec::new();
    reader.body.read_to_end(&mut rest).unwrap();
    assert!(
        first == before[..MB] && rest == before[MB..],
        "a reply mixed two versions of a pack"
    );
    let mut r = get(addr, &pack_path("packs", &q), "");
    assert_ne!(r.header("etag"), Some(before_tag.as_str()));
    r.check_body(&after).unwrap();
    // Its old ETag no longer matches.
    let r = get(
        addr,
        &pack_path("packs", &q),
        &format!("Range: bytes=0-9\r\nIf-Match: {before_tag}\r\n"),
    );
    assert_eq!(r.status, 412);
}
