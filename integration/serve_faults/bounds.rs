//! What bounds the server's memory by its flags rather than by its
//! clients: request methods in the metrics, exchanged sessions, and
//! namespaces that only read.

use super::*;

#[test]
fn odd_request_methods_leave_the_metrics_bounded() {
    let store = tempfile::tempdir().unwrap();
    let maddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = Serve::start(
        &store.path().join("store"),
        &["--metrics-listen", &maddr.to_string()],
        vec![],
    );
    let action = hex_id(b"any action");
    for i in 0..300 {
        let head =
            format!("XM{i}Q /action/{action} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let reply = request(server.addr(), &head, b"");
        assert!(reply.is_some(), "no reply to method XM{i}Q");
    }
    assert_eq!(
        get(server.addr(), &format!("/action/{action}"), "")
            .unwrap()
            .0,
        404
    );
    let text = metrics_text(maddr);
    let series = text
        .lines()
        .filter(|l| l.starts_with("gocacher_serve_requests_total{"))
        .count();
    assert!(
        !text.contains("XM"),
        "a client's method became a label:\n{text}"
    );
    assert!(series <= 10, "{series} request series:\n{text}");
    assert!(text.contains("method=\"other\""), "{text}");
}

#[test]
fn exchanged_sessions_are_bounded_by_max_sessions() {
    let issuer = support::seedserver::Issuer::start();
    let store = tempfile::tempdir().unwrap();
    let maddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = Serve::start(
        &store.path().join("store"),
        &[
            "--jwt-issuer",
            &issuer.url,
            "--jwt-claim",
            "repository=test/repo",
            "--namespace-claim",
            "ref",
            "--max-sessions",
            "50",
            "--metrics-listen",
            &maddr.to_string(),
        ],
        vec![],
    );
    let jwt = issuer.mint("repository=test/repo&ref=refs/pull/1/merge");
    let body = format!("{{\"jwt\": \"{jwt}\"}}");
    let head = format!(
        "POST /auth/exchange-token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut tokens = Vec::new();
    let started = Instant::now();
    for _ in 0..300 {
        let (status, reply) = request(server.addr(), &head, body.as_bytes()).unwrap();
        assert_eq!(status, 200, "{}", server.log());
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        tokens.push(v["access_token"].as_str().unwrap().to_string());
    }
    let took = started.elapsed();
    let text = metrics_text(maddr);
    let sessions: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gocacher_serve_sessions "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sessions gauge:\n{text}"));
    println!("300 exchanges in {took:?}; {sessions} sessions kept");
    assert!(
        (1..=50).contains(&sessions),
        "{sessions} sessions for --max-sessions 50"
    );
    let stats = |t: &str| {
        get(
            server.addr(),
            "/session/stats",
            &format!("Authorization: Bearer {t}\r\n"),
        )
        .unwrap()
        .0
    };
    // The newest session works; the oldest was dropped (its client would
    // exchange again on this 401).
    assert_eq!(stats(tokens.last().unwrap()), 200);
    assert_eq!(stats(&tokens[0]), 401);
}

#[test]
fn a_namespace_that_only_reads_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "ro-token-0123456789 pr/9 read\nrw-token-0123456789 pr/10 write\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    let server = Serve::start(&store, &["--token-file", tokens.to_str().unwrap()], vec![]);
    let addr = server.addr();
    let auth = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let data = b"built in pull request 10";
    let (action, output) = (hex_id(b"pr 10 action"), hex_id(data));
    for t in ["ro-token-0123456789", "rw-token-0123456789"] {
        for path in [
            format!("/action/{action}"),
            format!("/output/{output}"),
            "/gocacher/v1/manifests/0123456789abcdef0123456789abcdef".to_string(),
            "/gocacher/v1/packs/0123456789abcdef0123456789abcdef".to_string(),
        ] {
            assert_eq!(get(addr, &path, &auth(t)).unwrap().0, 404, "{path}");
        }
    }
    assert!(
        !store.join("ns").exists(),
        "reads made namespace stores: {:?}",
        std::fs::read_dir(store.join("ns")).map(|d| d.count())
    );
    // The first write makes the namespace's store, and its reads find it.
    let put_path = format!("/{action}/{output}");
    assert_eq!(
        put(addr, &put_path, &auth("rw-token-0123456789"), data),
        Some(204)
    );
    assert!(store.join("ns").is_dir());
    let (status, body) = get(
        addr,
        &format!("/action/{action}"),
        &format!("{}Want-Object: 1\r\n", auth("rw-token-0123456789")),
    )
    .unwrap();
    assert_eq!((status, body.as_slice()), (200, &data[..]));
    assert_eq!(
        get(
            addr,
            &format!("/action/{action}"),
            &auth("ro-token-0123456789")
        )
        .unwrap()
        .0,
        404
    );
}
