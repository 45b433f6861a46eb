//! The server's store: kept under `--max-size` least recently used first,
//! nothing acknowledged lost to SIGKILL, and two servers on one bucket
//! serving each other's entries.

use super::*;

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
