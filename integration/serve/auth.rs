//! Auth end to end: identity tokens exchanged for sessions, a JWT checked
//! with its key's own algorithm, and namespaces that keep pull requests
//! apart from main.

use super::*;

/// POSTs an identity token to /auth/exchange-token: the status and the
/// access token when there is one.
fn exchange(addr: SocketAddr, body: &str) -> (u16, Option<String>) {
    let head = format!(
        "POST /auth/exchange-token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, reply) = request(addr, &head, body.as_bytes());
    let token = reply
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| v["access_token"].as_str().map(str::to_owned));
    (status, token)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn put_as(addr: SocketAddr, token: &str, action: &str, data: &[u8]) -> u16 {
    let head = format!(
        "PUT /{action}/{} HTTP/1.1\r\nHost: t\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
        hex_id(data),
        bearer(token),
        data.len()
    );
    request(addr, &head, data).0
}

fn get_as(addr: SocketAddr, token: &str, action: &str) -> u16 {
    request(
        addr,
        &get_head(&format!("/action/{action}"), &bearer(token)),
        b"",
    )
    .0
}

/// The algorithm a JWT is checked with is the issuer's key's (its JWK's
/// `alg`), not the token header's: a token signed with the issuer's RSA key
/// (JWK alg RS256) under PS256 or RS512 is refused, and counted.
#[test]
fn a_jwt_is_checked_with_its_keys_algorithm() {
    let issuer = support::seedserver::Issuer::start();
    let metrics = SocketAddr::from(([127, 0, 0, 1], support::s3server::free_port()));
    let metrics_flag = metrics.to_string();
    let server = SeedServer::start_with(
        Seed::Serve,
        &[
            "--jwt-issuer",
            &issuer.url,
            "--jwt-claim",
            "repository=test/repo",
            "--namespace-claim",
            "ref",
            "--metrics-listen",
            &metrics_flag,
        ],
    );
    let addr = server.addr();
    let failures = || {
        let (status, text) = request(metrics, &get_head("/metrics", ""), b"");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| {
                l.strip_prefix("gocacher_serve_auth_failures_total")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no auth failures counter in\n{text}"))
    };
    let jwt = |alg: &str| {
        format!(
            "{{\"jwt\": \"{}\"}}",
            issuer.mint(&format!(
                "alg={alg}&repository=test/repo&ref=refs/pull/9/merge"
            ))
        )
    };
    // The RSA key's own algorithm: a session.
    let (status, token) = exchange(addr, &jwt("RS256"));
    assert_eq!(status, 200, "{}", server.log());
    assert_eq!(get_as(addr, &token.unwrap(), &hex_id(b"x")), 404);
    let before = failures();
    // The same key, the same claims, another algorithm in the header.
    for alg in ["PS256", "RS512"] {
        let (status, token) = exchange(addr, &jwt(alg));
        assert_eq!(
            (status, token.is_some()),
            (401, false),
            "a token signed under {alg} with an RS256 key was taken\n{}",
            server.log()
        );
    }
    assert_eq!(failures(), before + 2, "each refused token is counted");
}

#[test]
fn namespaces_keep_pull_requests_apart() {
    let issuer = support::seedserver::Issuer::start();
    let server = SeedServer::start_with(
        Seed::Serve,
        &[
            "--jwt-issuer",
            &issuer.url,
            "--jwt-claim",
            "repository=test/repo",
            "--global-jwt-claim",
            "ref=refs/heads/main",
            "--namespace-claim",
            "ref",
            "-v",
        ],
    );
    let addr = server.addr();
    let jwt = |q: &str| format!("{{\"jwt\": \"{}\"}}", issuer.mint(q));
    let (status, main) = exchange(addr, &jwt("repository=test/repo&ref=refs/heads/main"));
    assert_eq!(status, 200, "{}", server.log());
    let main = main.unwrap();
    let pr1 = exchange(addr, &jwt("repository=test/repo&ref=refs/pull/1/merge"))
        .1
        .unwrap();
    let pr2 = exchange(addr, &jwt("repository=test/repo&ref=refs/pull/2/merge"))
        .1
        .unwrap();

    // Refused: garbage, another repository, another audience, expired.
    assert_eq!(exchange(addr, "{not json").0, 400);
    assert_eq!(exchange(addr, "{\"jwt\": \"a.b.c\"}").0, 401);
    assert_eq!(
        exchange(addr, &jwt("repository=other/repo&ref=refs/heads/main")).0,
        401
    );
    assert_eq!(
        exchange(
            addr,
            &jwt("aud=someone-else&repository=test/repo&ref=refs/heads/main")
        )
        .0,
        401
    );
    assert_eq!(
        exchange(
            addr,
            &jwt("exp=-600&repository=test/repo&ref=refs/heads/main")
        )
        .0,
        401
    );
    // No token, or a made-up one: 401 for every endpoint.
    let action = hex_id(b"pr action");
    assert_eq!(
        request(addr, &get_head(&format!("/action/{action}"), ""), b"").0,
        401
    );
    assert_eq!(
        get_as(addr, "0123456789abcdef0123456789abcdef", &action),
        401
    );

    // What a pull request writes, only that pull request reads.
    assert_eq!(put_as(addr, &pr1, &action, b"built in PR 1"), 204);
    assert_eq!(get_as(addr, &pr1, &action), 200);
    assert_eq!(get_as(addr, &pr2, &action), 404, "PR 2 sees PR 1's entry");
    assert_eq!(get_as(addr, &main, &action), 404, "main sees PR 1's entry");

    // What main writes, every pull request reads.
    let shared = hex_id(b"main action");
    assert_eq!(put_as(addr, &main, &shared, b"built on main"), 204);
    assert_eq!(get_as(addr, &pr1, &shared), 200);
    assert_eq!(get_as(addr, &pr2, &shared), 200);

    // A pull request's session counts its own requests.
    let (status, reply) = request(addr, &get_head("/session/stats", &bearer(&pr1)), b"");
    assert_eq!(status, 200);
    let body: serde_json::Value =
        serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["namespace"], "refs/pull/1/merge", "{body}");
    assert_eq!(
        (body["puts"].as_u64(), body["hits"].as_u64()),
        (Some(1), Some(2)),
        "{body}"
    );

    // The same through real go commands: main's build fills the global
    // namespace; a pull request's machine reads all of it and writes only
    // its own, which main's next machine does not see.
    let module = support::fixture_copy();
    let dir = module.path();
    let token_file = |name: &str, q: &str| {
        let p = module.path().join(name);
        std::fs::write(&p, issuer.mint(q)).unwrap();
        p.display().to_string()
    };
    let main_file = token_file("main.jwt", "repository=test/repo&ref=refs/heads/main");
    let pr_file = token_file("pr.jwt", "repository=test/repo&ref=refs/pull/3/merge");
    let through = |file: &str| {
        GoEnv::new(Toolchain::Local).with_flags(&[
            "--cache-server",
            &server.url(),
            "--oidc-token-file",
            file,
        ])
    };
    let run = through(&main_file).go(dir, &["build", "./..."]);
    run.assert_ok();
    assert!(
        run.stats.uploads > 0 && run.stats.upload_errors == 0,
        "{:?}\n{}",
        run.stats,
        run.stderr
    );
    let pr = through(&pr_file);
    let run = pr.go(dir, &["build", "./..."]);
    run.assert_ok();
    run.assert_warm();
    assert_eq!(run.stats.remote_errors, 0, "{:?}", run.stats);
    std::fs::write(
        dir.join("pr_only.go"),
        "package fixture\n\nfunc PROnly() int { return 3 }\n",
    )
    .unwrap();
    let run = pr.go(dir, &["build", "./..."]);
    run.assert_ok();
    assert!(run.stats.uploads > 0, "{:?}", run.stats);
    let run = through(&main_file).go(dir, &["build", "./..."]);
    run.assert_ok();
    assert!(
        run.stats.misses > 0,
        "main's machine was served the pull request's entries: {:?}",
        run.stats
    );
}
