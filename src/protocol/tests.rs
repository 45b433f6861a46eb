//! Protocol tests over in-memory pipes: the real loop, driven the way cmd/go
//! drives it (request line, blank line, body line), against the real disk
//! cacher or a fake handler where timing must be controlled.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};

use super::*;
use crate::cacher::{Cacher, CloseOptions};
use crate::disk::DiskCache;

/// One gocacher session over in-memory pipes.
struct Run {
    to_child: Option<DuplexStream>,
    from_child: Lines<BufReader<DuplexStream>>,
    done: tokio::task::JoinHandle<io::Result<()>>,
}

impl Run {
    fn start<H: Handler>(handler: Arc<H>) -> Run {
        let (to_child, child_in) = tokio::io::duplex(64 * 1024);
        let (child_out, from_child) = tokio::io::duplex(64 * 1024);
        let done = tokio::spawn(serve(child_in, child_out, handler));
        Run {
            to_child: Some(to_child),
            from_child: BufReader::new(from_child).lines(),
            done,
        }
    }

    async fn send_raw(&mut self, text: &str) {
        let w = self.to_child.as_mut().expect("input open");
        w.write_all(text.as_bytes()).await.unwrap();
    }

    /// A request as cmd/go writes it: the JSON, a newline, an empty line.
    async fn send(&mut self, req: Value) {
        self.send_raw(&format!("{req}\n\n")).await;
    }

    async fn put(&mut self, id: i64, action: [u8; 32], body: &[u8]) {
        let output: [u8; 32] = Sha256::digest(body).into();
        self.put_claiming(id, action, output, body).await;
    }

    async fn put_claiming(&mut self, id: i64, action: [u8; 32], output: [u8; 32], body: &[u8]) {
        let mut req =
            json!({"ID": id, "Command": "put", "ActionID": b64(&action), "OutputID": b64(&output)});
        if !body.is_empty() {
            req["BodySize"] = json!(body.len());
        }
        self.send(req).await;
        if !body.is_empty() {
            self.send_raw(&format!("\"{}\"\n", B64.encode(body))).await;
        }
    }

    async fn get(&mut self, id: i64, action: [u8; 32]) {
        self.send(json!({"ID": id, "Command": "get", "ActionID": b64(&action)}))
            .await;
    }

    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.from_child.next_line())
            .await
            .expect("response within 30 s")
            .unwrap()
            .expect("a response line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
    }

    /// Receives `n` responses, keyed by ID.
    async fn recv_n(&mut self, n: usize) -> HashMap<i64, Value> {
        let mut out = HashMap::new();
        for _ in 0..n {
            let v = self.recv().await;
            out.insert(v["ID"].as_i64().unwrap(), v);
        }
        out
    }

    /// Sends close, checks the reply and that the loop ends cleanly.
    async fn close(mut self, id: i64) {
        self.send(json!({"ID": id, "Command": "close"})).await;
        let v = self.recv().await;
        assert_eq!(v, json!({"ID": id}));
        self.finish().await;
    }

    async fn finish(mut self) {
        self.to_child = None;
        self.done.await.unwrap().unwrap();
        assert!(
            self.from_child.next_line().await.unwrap().is_none(),
            "output ends"
        );
    }
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn disk_session() -> (Run, Arc<Cacher>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cacher = Arc::new(Cacher::new(
        DiskCache::open(dir.path()).unwrap(),
        CloseOptions::default(),
    ));
    (Run::start(cacher.clone()), cacher, dir)
}

async fn expect_capabilities(s: &mut Run) {
    assert_eq!(
        s.recv().await,
        json!({"ID": 0, "KnownCommands": ["get", "put", "close"]})
    );
}

#[tokio::test]
async fn put_then_get_round_trip() {
    let (mut s, cacher, _dir) = disk_session();
    expect_capabilities(&mut s).await;
    let body = b"package archive bytes";
    s.put(1, [1; 32], body).await;
    let put = s.recv().await;
    let path = PathBuf::from(put["DiskPath"].as_str().unwrap());
    assert!(path.is_absolute() && path.extension().is_none(), "{path:?}");
    assert_eq!(std::fs::read(&path).unwrap(), body);

    s.get(2, [1; 32]).await;
    let hit = s.recv().await;
    assert_eq!(hit["ID"], 2);
    assert_eq!(hit["OutputID"], b64(&Sha256::digest(body)));
    assert_eq!(hit["Size"], body.len());
    assert_eq!(hit["DiskPath"], put["DiskPath"]);
    assert!(hit["Time"].as_str().unwrap().ends_with('Z'), "{hit}");
    assert!(hit.get("Miss").is_none());

    s.get(3, [9; 32]).await;
    assert_eq!(s.recv().await, json!({"ID": 3, "Miss": true}));
    s.close(4).await;
    let st = cacher.stats();
    assert_eq!((st.gets, st.hits, st.misses, st.puts), (2, 1, 1, 1));
    assert_eq!(st.bytes_written, body.len() as u64);
    assert_eq!(st.bytes_read, body.len() as u64);
}

/// A handler whose gets take as many milliseconds as the action ID's first byte.
struct Slow;

impl Handler for Slow {
    async fn get(&self, action_id: Id) -> Option<Hit> {
        tokio::time::sleep(Duration::from_millis(action_id.0[0] as u64)).await;
        None
    }
    async fn put(&self, _: Put, _: PutBody) -> anyhow::Result<PathBuf> {
        anyhow::bail!("read-only")
    }
    async fn close(&self) {}
}

#[tokio::test(start_paused = true)]
async fn pipelined_gets_are_answered_out_of_order() {
    let mut s = Run::start(Arc::new(Slow));
    expect_capabilities(&mut s).await;
    s.get(1, [30; 32]).await;
    s.get(2, [0; 32]).await;
    s.get(3, [10; 32]).await;
    let order: Vec<i64> = [s.recv().await, s.recv().await, s.recv().await]
        .iter()
        .map(|v| v["ID"].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![2, 3, 1]);
    s.close(4).await;
}

#[tokio::test]
async fn fifty_megabyte_body_streams_to_disk() {
    let (mut s, _cacher, _dir) = disk_session();
    expect_capabilities(&mut s).await;
    // Deterministic, incompressible-looking bytes.
    let mut body = vec![0u8; 50 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in body.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sum: [u8; 32] = Sha256::digest(&body).into();
    // Write from another task: the body is larger than the pipe, so the reader
    // must consume it while we send.
    let mut writer = s.to_child.take().unwrap();
    let sender = tokio::spawn(async move {
        let req = json!({"ID": 1, "Command": "put", "ActionID": b64(&[5; 32]), "OutputID": b64(&sum), "BodySize": body.len()});
        writer
            .write_all(format!("{req}\n\n\"").as_bytes())
            .await
            .unwrap();
        for part in body.chunks(3 * 1024 * 1024) {
            writer.write_all(B64.encode(part).as_bytes()).await.unwrap();
        }
        writer.write_all(b"\"\n").await.unwrap();
        writer
    });
    let put = s.recv().await;
    s.to_child = Some(sender.await.unwrap());
    let path = put["DiskPath"].as_str().unwrap_or_else(|| panic!("{put}"));
    let on_disk = std::fs::read(path).unwrap();
    assert_eq!(on_disk.len(), 50 << 20);
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&on_disk)), sum);
    s.close(2).await;
}

#[tokio::test]
async fn empty_body_is_stored_and_served() {
    let (mut s, _cacher, _dir) = disk_session();
    expect_capabilities(&mut s).await;
    s.put(1, [2; 32], b"").await;
    let put = s.recv().await;
    let path = put["DiskPath"].as_str().unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), 0);
    s.get(2, [2; 32]).await;
    let hit = s.recv().await;
    assert_eq!(hit["DiskPath"], put["DiskPath"]);
    assert_eq!(hit["OutputID"], b64(&Sha256::digest(b"")));
    assert!(
        hit.get("Size").is_none(),
        "Size 0 is omitted like Go: {hit}"
    );
    s.close(3).await;
}

#[tokio::test]
async fn wrong_output_id_is_an_error_and_stores_nothing() {
    let (mut s, cacher, dir) = disk_session();
    expect_capabilities(&mut s).await;
    let claimed = [0xAB; 32];
    s.put_claiming(1, [3; 32], claimed, b"not what was claimed")
        .await;
    let put = s.recv().await;
    assert!(
        put["Err"].as_str().unwrap().contains("not the OutputID"),
        "{put}"
    );
    assert!(put.get("DiskPath").is_none());
    s.get(2, [3; 32]).await;
    assert_eq!(s.recv().await["Miss"], true);
    s.close(3).await;
    assert_eq!(cacher.stats().put_errors, 1);
    let disk = DiskCache::open(dir.path()).unwrap();
    assert!(!disk.output_path(&Id(claimed)).exists());
    assert_no_temp_files(dir.path());
}

fn assert_no_temp_files(root: &std::path::Path) {
    let left = DiskCache::open(root).unwrap().temp_files().unwrap();
    assert!(left.is_empty(), "left {left:?}");
}

#[tokio::test]
async fn object_id_only_requests_work() {
    let (mut s, _cacher, _dir) = disk_session();
    expect_capabilities(&mut s).await;
    let body = b"old protocol";
    let out: [u8; 32] = Sha256::digest(body).into();
    s.send(json!({"ID": 1, "Command": "put", "ActionID": b64(&[4; 32]), "ObjectID": b64(&out), "BodySize": body.len()})).await;
    s.send_raw(&format!("\"{}\"\n", B64.encode(body))).await;
    assert!(s.recv().await["DiskPath"].is_string());
    s.get(2, [4; 32]).await;
    assert_eq!(s.recv().await["OutputID"], b64(&out));
    s.close(3).await;
}

#[tokio::test]
async fn blank_lines_and_whitespace_are_skipped() {
    let (mut s, _cacher, _dir) = disk_session();
    expect_capabilities(&mut s).await;
    let body = b"xyz";
    let out: [u8; 32] = Sha256::digest(body).into();
    let req = json!({"ID": 1, "Command": "put", "ActionID": b64(&[6; 32]), "OutputID": b64(&out), "BodySize": 3});
    s.send_raw(&format!(
        "\n\n  \r\n{req}\n\n \n\t\"{}\"  \n\n\n",
        B64.encode(body)
    ))
    .await;
    assert!(s.recv().await["DiskPath"].is_string());
    s.send_raw("   \n").await;
    s.get(2, [6; 32]).await;
    assert_eq!(s.recv().await["Size"], 3);
    s.close(3).await;
}

#[tokio::test]
async fn malformed_json_is_reported_and_the_loop_goes_on() {
    let (mut s, _cacher, _dir) = disk_session();
    expect_capabilities(&mut s).await;
    s.send_raw("{this is not json\n\n").await;
    // Valid JSON with an ID but a bad field: the ID gets an Err.
    s.send_raw("{\"ID\":7,\"Command\":\"get\",\"ActionID\":\"AAAA\"}\n")
        .await;
    let v = s.recv().await;
    assert_eq!(v["ID"], 7);
    assert!(v["Err"].as_str().unwrap().contains("malformed"), "{v}");
    // A bad put that announces a body: the body line is skipped, not parsed.
    s.send_raw("{\"ID\":8,\"Command\":\"put\",\"ActionID\":7,\"BodySize\":3}\n\n\"eHl6\"\n")
        .await;
    assert_eq!(s.recv().await["ID"], 8);
    s.send(json!({"ID": 9, "Command": "frobnicate"})).await;
    assert!(s.recv().await["Err"]
        .as_str()
        .unwrap()
        .contains("unknown command"));
    s.get(10, [1; 32]).await;
    assert_eq!(s.recv().await, json!({"ID": 10, "Miss": true}));
    s.close(11).await;
}

#[tokio::test]
async fn truncated_or_bad_base64_fails_only_that_put() {
    let (mut s, _cacher, dir) = disk_session();
    expect_capabilities(&mut s).await;
    let out: [u8; 32] = Sha256::digest([0u8; 10]).into();
    let req = |id: i64| json!({"ID": id, "Command": "put", "ActionID": b64(&[8; 32]), "OutputID": b64(&out), "BodySize": 10});
    // Too short for BodySize.
    s.send(req(1)).await;
    s.send_raw("\"AAAA\"\n").await;
    // Not base64 at all.
    s.send(req(2)).await;
    s.send_raw("\"!!!!****\"\n").await;
    // Cut off: the line ends before the closing quote.
    s.send(req(3)).await;
    s.send_raw("\"AAAAAAAA\n").await;
    let got = s.recv_n(3).await;
    for id in 1..=3 {
        assert!(got[&id]["Err"].is_string(), "{id}: {}", got[&id]);
    }
    s.get(4, [8; 32]).await;
    assert_eq!(s.recv().await["Miss"], true);
    s.close(5).await;
    assert_no_temp_files(dir.path());
}

#[tokio::test]
async fn input_ending_inside_a_body_fails_the_put_and_ends_cleanly() {
    let (mut s, cacher, _dir) = disk_session();
    expect_capabilities(&mut s).await;
    let out: [u8; 32] = Sha256::digest([0u8; 30]).into();
    s.send(json!({"ID": 1, "Command": "put", "ActionID": b64(&[8; 32]), "OutputID": b64(&out), "BodySize": 30}))
        .await;
    s.send_raw("\"AAAAAAAA").await;
    s.to_child = None;
    assert!(s.recv().await["Err"].is_string());
    s.finish().await;
    assert_eq!(cacher.stats().put_errors, 1);
}

#[tokio::test]
async fn eof_before_close_finishes_pending_work() {
    let (mut s, _cacher, dir) = disk_session();
    expect_capabilities(&mut s).await;
    s.put(1, [7; 32], b"kept").await;
    s.to_child = None;
    assert!(s.recv().await["DiskPath"].is_string());
    s.finish().await;
    let disk = DiskCache::open(dir.path()).unwrap();
    assert!(disk.get(&Id([7; 32])).unwrap().is_some());
}

/// A handler that panics on gets whose action ID starts with 1 (at once) or
/// 2 (after waiting, so in a task), on every put, and at close.
struct Panicky;

impl Handler for Panicky {
    async fn get(&self, action_id: Id) -> Option<Hit> {
        match action_id.0[0] {
            1 => panic!("get panicked at once"),
            2 => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                panic!("get panicked in a task")
            }
            _ => None,
        }
    }
    async fn put(&self, _: Put, _: PutBody) -> anyhow::Result<PathBuf> {
        panic!("put panicked")
    }
    async fn close(&self) {
        panic!("close panicked")
    }
}

#[tokio::test]
async fn a_panic_becomes_an_error_reply_and_the_session_goes_on() {
    let mut s = Run::start(Arc::new(Panicky));
    expect_capabilities(&mut s).await;
    s.get(1, [1; 32]).await;
    s.get(2, [2; 32]).await;
    s.put(3, [3; 32], b"some body bytes").await;
    s.get(4, [4; 32]).await;
    let got = s.recv_n(4).await;
    for id in [1, 2, 3] {
        let err = got[&id]["Err"].as_str().unwrap_or_default();
        assert!(err.contains("panicked"), "request {id}: {}", got[&id]);
    }
    assert_eq!(got[&4], json!({"ID": 4, "Miss": true}));
    // The close reply comes even though close itself panics.
    s.close(5).await;
}
