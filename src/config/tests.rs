//! Flag parsing and validation: defaults, Go-style flags, every bad value.

use super::*;

fn args(list: &[&str]) -> Result<Config> {
    let argv = std::iter::once("gocacher")
        .chain(list.iter().copied())
        .map(Into::into);
    Args::try_parse_from(normalize_args(argv))?.validate()
}

#[test]
fn sizes() {
    assert_eq!(parse_size("0").unwrap(), 0);
    assert_eq!(parse_size("10k").unwrap(), 10_000);
    assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_size("1.5 GB").unwrap(), 1_500_000_000);
    // The forms the docs show.
    assert_eq!(parse_size("50GiB").unwrap(), 50 << 30);
    assert_eq!(parse_size("300MB").unwrap(), 300_000_000);
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size(" 4096 ").unwrap(), 4096);
    assert_eq!(parse_size("64kib").unwrap(), 64 << 10);
    assert!(parse_size("").is_err());
    assert!(parse_size("-5MB").is_err());
    assert!(parse_size("ten").is_err());
    assert!(parse_size("5 parsecs").is_err());
}

#[test]
fn single_dash_flags_like_go_cacher() {
    let c = args(&["-cache-dir=/tmp/x", "-verbose"]).unwrap();
    assert_eq!(c.cache_dir, PathBuf::from("/tmp/x"));
    assert!(c.verbose);
}

#[test]
fn defaults() {
    let c = args(&["--cache-dir", "/tmp/y"]).unwrap();
    assert_eq!(c.trim_age, Duration::from_secs(5 * 86400));
    assert_eq!(c.max_size, None);
    assert!(!c.verbose);
}

#[test]
fn remote_flags() {
    let c = args(&["--remote", "s3://bkt/ci/main/", "--anonymous"]).unwrap();
    let r = c.remote.unwrap();
    let StoreSettings::S3(s3) = &r.store else {
        panic!("not S3: {:?}", r.store)
    };
    assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("bkt", "ci/main"));
    assert!(r.opts.read_only, "--anonymous implies read-only");
    let c = args(&["check", "--remote", "s3://b"]).unwrap();
    assert_eq!(c.command, Some(Command::Check));
    let e = args(&["check"]).unwrap_err().to_string();
    assert!(e.contains("--remote"), "{e}");
    let e = args(&["--remote", "gs://b"]).unwrap_err().to_string();
    assert!(e.contains("s3://BUCKET"), "{e}");
    let e = args(&["--remote", "s3://b", "--s3-endpoint", "localhost:9000"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("http://"), "{e}");
    let e = args(&["--upload-drain-timeout", "forever"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--upload-drain-timeout"), "{e}");
}

#[test]
fn cache_server_flags_like_go_cacher() {
    let c = args(&[
        "-cache-server=http://127.0.0.1:31364/",
        "-access-token",
        "s3cr3t",
        "-gateway-addr-port=0",
    ])
    .unwrap();
    assert!(c.gateway_port_ignored);
    let StoreSettings::Http(h) = c.remote.unwrap().store else {
        panic!("not HTTP")
    };
    assert_eq!(h.base, "http://127.0.0.1:31364");
    assert_eq!(h.access_token.as_deref(), Some("s3cr3t"));
    assert!(!format!("{h:?}").contains("s3cr3t"), "{h:?}");
    let e = args(&["--cache-server", "http://h:1", "--remote", "s3://b"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("two remotes"), "{e}");
    let e = args(&["--cache-server", "ftp://u:pw@h"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("http://HOST") && !e.contains("pw"), "{e}");
    let e = args(&["check", "--cache-server", "http://h:1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--remote"), "{e}");
}

#[test]
fn signing_trust_and_also_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let public = crate::trust::keygen(&key).unwrap();
    let other = "ab".repeat(32);
    let k = key.to_str().unwrap();
    let c = args(&[
        "--remote",
        "s3://b/pr/1",
        "--sign-key",
        k,
        "--trust-key",
        &other,
        "--also-read",
        "s3://b/main",
        "--also-read",
        "s3://c",
    ])
    .unwrap();
    let r = c.remote.unwrap();
    assert_eq!(
        r.also_read,
        [("b".into(), "main".into()), ("c".into(), String::new())]
    );
    let keys = &r.opts.keys;
    assert_eq!(keys.signer.as_ref().unwrap().public_hex(), public);
    assert_eq!(
        keys.trust.as_ref().unwrap().len(),
        2,
        "the given key and its own"
    );
    // A signer alone trusts itself; nothing given: every writer trusted.
    let c = args(&["--remote", "s3://b", "--sign-key", k]).unwrap();
    assert_eq!(c.remote.unwrap().opts.keys.trust.as_ref().unwrap().len(), 1);
    let c = args(&["--remote", "s3://b"]).unwrap();
    assert!(c.remote.unwrap().opts.keys.trust.is_none());
    // Trusting without signing: read-only.
    let c = args(&["--remote", "s3://b", "--trust-key", &other]).unwrap();
    assert!(c.remote.unwrap().opts.read_only);
    // The public key file works as a trust key.
    let pubfile = format!("{k}.pub");
    assert!(args(&["--remote", "s3://b", "--trust-key", &pubfile]).is_ok());
    for (bad, why) in [
        (
            vec!["--remote", "s3://b", "--trust-key", "nope"],
            "neither 64 hex digits",
        ),
        (
            vec!["--remote", "s3://b", "--sign-key", "/no/such/key"],
            "reading the signing key",
        ),
        (
            vec!["--remote", "s3://b", "--also-read", "gs://x"],
            "--also-read",
        ),
        (vec!["--trust-key", &other], "need --remote"),
        (
            vec!["--cache-server", "http://h:1", "--trust-key", &other],
            "need --remote",
        ),
        (
            vec!["--trust-key", &other, "serve"],
            "serve signs and checks only the module files",
        ),
    ] {
        let e = args(&bad).unwrap_err();
        assert!(format!("{e:#}").contains(why), "{bad:?}: {e:#}");
    }
    // serve --modproxy: the keys sign and check module files only; the
    // build-cache side neither signs nor turns read-only.
    let c = args(&[
        "--remote",
        "s3://b",
        "--trust-key",
        &other,
        "serve",
        "--modproxy",
        "--upstream",
        "http://127.0.0.1:9",
    ])
    .unwrap();
    let mp = c.serve.unwrap().modproxy.unwrap();
    assert_eq!(mp.keys.trust.as_ref().unwrap().len(), 1);
    let r = c.remote.unwrap();
    assert!(r.opts.keys.trust.is_none() && !r.opts.read_only);
    // The signing key is never in the config's debug output.
    let secret = std::fs::read_to_string(&key).unwrap();
    let c = args(&["--remote", "s3://b", "--sign-key", k]).unwrap();
    assert!(!format!("{c:?}").contains(secret.trim()));
}

#[test]
fn bad_values_fail_with_reason() {
    let e = args(&["--trim-age", "1h"]).unwrap_err().to_string();
    assert!(e.contains("1-day minimum"), "{e}");
    let e = args(&["--trim-age", "soon"]).unwrap_err().to_string();
    assert!(e.contains("--trim-age"), "{e}");
    let e = args(&["--max-size", "lots"]).unwrap_err().to_string();
    assert!(e.contains("--max-size"), "{e}");
    assert!(args(&["--no-such-flag"]).is_err());
}

#[test]
fn serve_flags() {
    let c = args(&["serve", "-dir=/tmp/s", "--max-size", "2GB", "-v"]).unwrap();
    let sc = c.serve.unwrap();
    assert_eq!(sc.listen.to_string(), "127.0.0.1:31364");
    assert_eq!(sc.dir, PathBuf::from("/tmp/s"));
    assert_eq!(sc.max_size, 2_000_000_000);
    assert_eq!(sc.max_age, Duration::from_secs(60 * 86400));
    assert_eq!(sc.max_object_size, 1 << 30);
    assert!(sc.verbose);
    let sc = args(&["serve"]).unwrap().serve.unwrap();
    assert_eq!(sc.max_size, 50 << 30);
    let e = args(&["serve", "--listen", "everywhere"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--listen"), "{e}");
    let e = args(&["serve", "--max-object-size", "big"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--max-object-size"), "{e}");
    let e = args(&["serve", "--cache-server", "http://h:1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--remote"), "{e}");
    let c = args(&["serve", "--remote", "s3://b/p"]).unwrap();
    assert!(matches!(c.remote.unwrap().store, StoreSettings::S3(_)));
    let e = args(&[
        "serve",
        "--jwt-issuer",
        "https://token.actions.githubusercontent.com",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("--jwt-claim"), "{e}");
    let e = args(&["serve", "--jwt-issuer", "https://i", "--jwt-claim", "repo"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("CLAIM=VALUE"), "{e}");
    let sc = args(&[
        "serve",
        "--jwt-issuer",
        "https://i/",
        "--jwt-claim",
        "repository=o/r",
    ])
    .unwrap()
    .serve
    .unwrap();
    assert!(sc.auth.enabled());
    assert_eq!(sc.auth.issuers, ["https://i"]);
    assert!(args(&["--cache-dir", "/tmp/y"]).unwrap().serve.is_none());
    let e = args(&["serve", "--modproxy-stored-zips"]).unwrap_err();
    assert!(format!("{e:#}").contains("required"), "{e:#}");
    let sc = args(&["serve", "--modproxy", "--modproxy-stored-zips"]).unwrap();
    assert!(sc.serve.unwrap().modproxy.unwrap().stored_zips);
}
