//! Microbenchmarks of the protocol loop with the real disk tier, driven over
//! in-memory pipes the way cmd/go drives it: requests per second for hits
//! (one at a time, as cmd/go sends most gets), and puts of small and large
//! bodies. Run: `cargo bench --bench protocol`. They catch regressions in
//! the loop itself; end-to-end numbers come from bench/.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use gocacher::cacher::{Cacher, CloseOptions};
use gocacher::disk::DiskCache;
use gocacher::protocol::serve;

const HITS: usize = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn request(id: usize, cmd: &str, action: &[u8; 32], body: Option<&[u8]>) -> String {
    let mut req = format!(
        r#"{{"ID":{id},"Command":"{cmd}","ActionID":"{}""#,
        B64.encode(action)
    );
    if let Some(body) = body {
        let out: [u8; 32] = Sha256::digest(body).into();
        req += &format!(r#","OutputID":"{}""#, B64.encode(out));
        if !body.is_empty() {
            req += &format!(r#","BodySize":{}}}"#, body.len());
            return format!("{req}\n\n\"{}\"\n", B64.encode(body));
        }
    }
    req + "}\n\n"
}

fn action(i: usize) -> [u8; 32] {
    let mut a = [0u8; 32];
    a[..8].copy_from_slice(&(i as u64).to_le_bytes());
    a
}

/// One session: sends each request and waits for its answer before the
/// next, then closes.
async fn session(dir: &std::path::Path, requests: &[String]) {
    let cacher = Arc::new(Cacher::new(
        DiskCache::open(dir).unwrap(),
        CloseOptions::default(),
    ));
    let (mut to_child, child_in) = tokio::io::duplex(1 << 20);
    let (child_out, from_child) = tokio::io::duplex(1 << 20);
    let done = tokio::spawn(serve(child_in, child_out, cacher));
    let mut lines = BufReader::new(from_child).lines();
    lines.next_line().await.unwrap(); // capabilities
    for req in requests {
        to_child.write_all(req.as_bytes()).await.unwrap();
        let resp = lines.next_line().await.unwrap().unwrap();
        assert!(!resp.contains("\"Err\""), "{resp}");
    }
    to_child
        .write_all(format!("{{\"ID\":{},\"Command\":\"close\"}}\n", 1 << 40).as_bytes())
        .await
        .unwrap();
    lines.next_line().await.unwrap();
    drop(to_child);
    done.await.unwrap().unwrap();
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();

    // Fill the cache, then time sessions of gets that all hit.
    let puts: Vec<String> = (0..HITS)
        .map(|i| {
            request(
                i + 1,
                "put",
                &action(i),
                Some(format!("output {i}").as_bytes()),
            )
        })
        .collect();
    rt.block_on(session(dir.path(), &puts));
    let gets: Vec<String> = (0..HITS)
        .map(|i| request(i + 1, "get", &action(i), None))
        .collect();
    let mut g = c.benchmark_group("protocol");
    g.sample_size(10);
    g.throughput(Throughput::Elements(HITS as u64));
    g.bench_function("get_hit_x1000", |b| {
        b.iter(|| rt.block_on(session(dir.path(), &gets)))
    });

    // Puts of new 1 KiB bodies (a fresh action and output each time).
    let mut round = 0usize;
    g.throughput(Throughput::Elements(200));
    g.bench_function("put_1KiB_x200", |b| {
        b.iter(|| {
            round += 1;
            let reqs: Vec<String> = (0..200)
                .map(|i| {
                    let mut body = vec![0u8; 1024];
                    body[..16].copy_from_slice(&((round as u128) << 32 | i as u128).to_le_bytes());
                    request(i + 1, "put", &action(1 << 20 | round << 8 | i), Some(&body))
                })
                .collect();
            rt.block_on(session(dir.path(), &reqs))
        })
    });

    // One 16 MiB body per session.
    let big = 16usize << 20;
    g.throughput(Throughput::Bytes(big as u64));
    g.bench_function("put_16MiB", |b| {
        b.iter(|| {
            round += 1;
            let mut body = vec![7u8; big];
            body[..8].copy_from_slice(&(round as u64).to_le_bytes());
            let req = request(1, "put", &action(1 << 30 | round), Some(&body));
            rt.block_on(session(dir.path(), &[req]))
        })
    });
    g.finish();
}

criterion_group!(protocol, benches);
criterion_main!(protocol);
