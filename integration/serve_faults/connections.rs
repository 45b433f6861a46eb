//! A thousand idle connections and a hundred slow uploads at once, with
//! a real build through the server meanwhile.

use super::*;

#[test]
fn idle_connections_and_slow_uploads() {
    let started = Instant::now();
    let store = tempfile::tempdir().unwrap();
    let maddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = Serve::start(
        &store.path().join("store"),
        &[
            "--idle-timeout",
            "6s",
            "--max-connections",
            "1500",
            "--body-timeout",
            "3s",
            "--max-pending-writes",
            "200",
            "--metrics-listen",
            &maddr.to_string(),
        ],
        vec![],
    );
    let answered = |text: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("gocacher_serve_hits_total ")
                    || l.starts_with("gocacher_serve_misses_total ")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    let addr = server.addr();
    let base_fds = server.fds();
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let opened = Instant::now();
    // 100 uploads of 1 MiB that send a byte every 300 ms.
    let slow: Vec<TcpStream> = (0..100)
        .map(|i| {
            let data = bytes(1000 + i, 16);
            let mut c = TcpStream::connect(addr).unwrap();
            let head = format!(
                "PUT /{}/{} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                hex_id(format!("slow {i}").as_bytes()),
                hex_id(&data),
                1 << 20
            );
            c.write_all(head.as_bytes()).unwrap();
            c
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let socks: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for mut s in &socks {
                    let _ = s.write(b"x");
                }
                thread::sleep(Duration::from_millis(300));
            }
        })
    };
    // The server's fds, sampled while a real build goes through it.
    let peak_fds = Arc::new(Mutex::new(0usize));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (pid, peak, on) = (server.pid(), peak_fds.clone(), sampling.clone());
        thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                let n = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                let mut p = peak.lock().unwrap();
                *p = (*p).max(n);
                drop(p);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    thread::sleep(Duration::from_millis(500));
    let held = server.fds();
    let module = support::fixture_copy();
    let machine = through(&server.url());
    let build_start = Instant::now();
    let run = machine.go(module.path(), &["build", "./..."]);
    let build_took = build_start.elapsed();
    run.assert_ok();
    let lookups = answered(&metrics_text(maddr));
    // Every slow upload was cut (408 once its body deadline passed), none
    // hangs: the server closed each one.
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reply = Vec::new();
        let r = s.read_to_end(&mut reply);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "a slow upload still open: {r:?}"
        );
    }
    let text = metrics_text(maddr);
    let cut: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gocacher_serve_refused_total{code=\"408\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(cut, 100, "slow uploads cut with 408:\n{text}");
    // The idle connections are closed by --idle-timeout.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 64];
        let n = c.read(&mut b);
        assert!(
            matches!(n, Ok(0))
                || n.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "an idle connection {:?} after it opened: {n:?}",
            opened.elapsed()
        );
    }
    let closed_after = opened.elapsed();
    thread::sleep(Duration::from_millis(500));
    let after = server.fds();
    assert!(
        after < base_fds + 50,
        "{after} fds after the idle connections were closed (started with {base_fds})"
    );
    // A second machine is served what the first one put (the writes the
    // slow uploads held went through once they were cut).
    let warm = machine.new_machine().go(module.path(), &["build", "./..."]);
    warm.assert_ok();
    assert!(
        run.stats.uploads > 0 && run.stats.upload_errors == 0,
        "the build's uploads during the attack: {:?}",
        run.stats
    );
    assert!(lookups > 50, "{lookups} lookups answered during the build");
    assert!(
        warm.stats.remote_hits + warm.stats.prefetch_hits > 0,
        "{:?}",
        warm.stats
    );
    // Beyond --max-connections, connections wait in the listen queue; the
    // server holds no more than its cap.
    let flood: Vec<TcpStream> = (0..1700)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    thread::sleep(Duration::from_secs(1));
    let capped = server.fds();
    drop(flood);
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = (*peak_fds.lock().unwrap()).max(capped);
    assert!(peak <= 1500 + 64, "{peak} fds for --max-connections 1500");
    assert!(
        server.log().contains("--max-connections"),
        "{}",
        server.log()
    );
    let rss = server.peak_rss_mib();
    assert!(rss < 256.0, "peak RSS {rss:.0} MiB");
    println!(
        "fds: {base_fds} at start, {held} with 1,100 held, peak {peak}, {capped} with 1,700 more offered, {after} after the idle timeout; build {build_took:?} ({:?}); idle closed by {closed_after:?}; peak RSS {rss:.0} MiB; warm {:?}",
        run.stats, warm.stats
    );
    row(
        "1,000 idle connections and 100 uploads trickling a byte per 300 ms, then 1,700 more connections (--idle-timeout 6s, --body-timeout 3s, --max-connections 1500)",
        &format!(
            "a real build through the server meanwhile ok ({:.0} s, every upload kept), a second machine served them; all 100 slow uploads cut with 408; idle ones closed; fds peak {peak} ≤ cap + 64, back to {after}",
            build_took.as_secs_f64()
        ),
        started.elapsed(),
        rss,
    );
}
