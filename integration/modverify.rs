//! modverify against real data: a module's `.zip`, `.mod` and checksum
//! database lookup fetched from the machine's module proxy (the first entry
//! of `go env GOPROXY`, its sumdb proxied under `<proxy>/sumdb/<name>/`),
//! with the go command's own go.sum lines as the oracle.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use gocacher::modverify::{self, Error, Expected, File, Limits, Lookup, Tile, VerifierKey};

/// A small module with a go.mod of its own.
const MODULE: &str = "rsc.io/quote";
const VERSION: &str = "v1.5.2";

struct Fixture {
    key: VerifierKey,
    zip: Vec<u8>,
    go_mod: Vec<u8>,
    lookup: Vec<u8>,
    tiles: HashMap<Tile, Vec<u8>>,
    /// `Sum` and `GoModSum` of `go mod download -json`.
    go_sum: String,
    go_mod_sum: String,
    /// The zip the go command itself downloaded.
    go_zip: PathBuf,
    _modcache: tempfile::TempDir,
}

fn go_env(names: &[&str]) -> Vec<String> {
    let out = Command::new("go")
        .arg("env")
        .args(names)
        .output()
        .expect("running go env");
    assert!(
        out.status.success(),
        "go env failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let goproxy = go_env(&["GOPROXY"]).remove(0);
        let proxy = goproxy
            .split([',', '|'])
            .next()
            .filter(|p| p.starts_with("http"))
            .unwrap_or_else(|| {
                panic!(
                    "these tests need a module proxy as GOPROXY's first entry; it is {goproxy:?}"
                )
            })
            .trim_end_matches('/')
            .to_owned();
        let key = modverify::go_env_key().expect("the checksum database's key");

        // The oracle: what the go command downloads and writes to go.sum.
        let modcache = tempfile::tempdir().unwrap();
        let out = Command::new("go")
            .args(["mod", "download", "-json", &format!("{MODULE}@{VERSION}")])
            .current_dir(modcache.path())
            .env("GOMODCACHE", modcache.path().join("mod"))
            .env(
                "GOFLAGS",
                format!("{} -modcacherw", go_env(&["GOFLAGS"]).remove(0)),
            )
            .output()
            .expect("running go mod download");
        assert!(
            out.status.success(),
            "go mod download: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let field = |k: &str| {
            json[k]
                .as_str()
                .unwrap_or_else(|| panic!("no {k} in {json}"))
                .to_owned()
        };

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (zip, go_mod, lookup, tiles) = rt.block_on(async {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            let get = |url: String| {
                let http = http.clone();
                async move {
                    let resp = http
                        .get(&url)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
                    let status = resp.status();
                    let body = resp
                        .bytes()
                        .await
                        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
                    (status.is_success(), body.to_vec(), url)
                }
            };
            let must = |(ok, body, url): (bool, Vec<u8>, String)| {
                assert!(ok, "GET {url}: {}", String::from_utf8_lossy(&body));
                body
            };
            let zip = must(get(format!("{proxy}/{MODULE}/@v/{VERSION}.zip")).await);
            let go_mod = must(get(format!("{proxy}/{MODULE}/@v/{VERSION}.mod")).await);
            let db = format!("{proxy}/sumdb/{}", key.name());
            let lookup = must(get(format!("{db}/lookup/{MODULE}@{VERSION}")).await);
            let parsed = Lookup::parse(MODULE, VERSION, &lookup, &key).expect("the real lookup");
            eprintln!(
                "{MODULE}@{VERSION} is record {} of a signed tree of {}; the proof reads {} tiles",
                parsed.id(),
                parsed.tree().size,
                parsed.tiles_needed().len()
            );
            let mut tiles = HashMap::new();
            for tile in parsed.tiles_needed() {
                let (ok, body, _) = get(format!("{db}/{}", tile.path())).await;
                let body = if ok {
                    body
                } else {
                    must(get(format!("{db}/{}", tile.full().path())).await)
                };
                tiles.insert(tile, body);
            }
            (zip, go_mod, lookup, tiles)
        });
        Fixture {
            key,
            zip,
            go_mod,
            lookup,
            tiles,
            go_sum: field("Sum"),
            go_mod_sum: field("GoModSum"),
            go_zip: PathBuf::from(field("Zip")),
            _modcache: modcache,
        }
    })
}

fn expected(f: &Fixture) -> Expected {
    Lookup::parse(MODULE, VERSION, &f.lookup, &f.key)
        .unwrap()
        .prove(&f.tiles)
        .unwrap()
}

#[test]
fn hashes_equal_the_go_command_s_and_the_database_s() {
    let f = fixture();
    let e = expected(f);
    let zip = modverify::zip_h1(Cursor::new(&f.zip), &Limits::default()).unwrap();
    assert_eq!(zip, f.go_sum, "zip h1 vs go mod download's Sum");
    assert_eq!(e.zip.as_deref(), Some(f.go_sum.as_str()), "lookup vs Sum");
    let go_zip = modverify::zip_h1_file(&f.go_zip, &Limits::default()).unwrap();
    assert_eq!(go_zip, f.go_sum, "the go command's own zip");
    assert_eq!(
        modverify::mod_h1(&f.go_mod),
        f.go_mod_sum,
        "mod h1 vs GoModSum"
    );
    assert_eq!(
        e.mod_.as_deref(),
        Some(f.go_mod_sum.as_str()),
        "lookup vs GoModSum"
    );
    e.check(File::Zip, &zip).unwrap();
    e.check_mod(&f.go_mod).unwrap();
}

#[test]
fn a_changed_zip_is_refused() {
    let f = fixture();
    let e = expected(f);
    let check = |zip: &[u8]| -> Result<(), Error> {
        e.check(
            File::Zip,
            &modverify::zip_h1(Cursor::new(zip), &Limits::default())?,
        )
    };
    check(&f.zip).unwrap();

    // A byte of a file's compressed content: its CRC no longer holds.
    let mut changed = f.zip.clone();
    changed[f.zip.len() / 3] ^= 0x20;
    let err = check(&changed).unwrap_err();
    assert!(
        matches!(err, Error::BadZip(_) | Error::Mismatch { .. }),
        "{err}"
    );

    // A file renamed (in its local header and the central directory): the
    // zip is sound, its hash is not the database's.
    let from = b"quote.go";
    let mut renamed = f.zip.clone();
    let mut n = 0;
    for i in 0..renamed.len() - from.len() {
        if &renamed[i..i + from.len()] == from {
            renamed[i..i + from.len()].copy_from_slice(b"quotE.go");
            n += 1;
        }
    }
    assert!(n >= 2, "quote.go is not in the zip");
    let err = check(&renamed).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Mismatch { .. }), "{msg}");
    for part in [&format!("{MODULE}@{VERSION}"), ".zip", f.go_sum.as_str()] {
        assert!(msg.contains(part), "{msg:?} lacks {part}");
    }
}

#[test]
fn a_truncated_zip_is_refused() {
    let f = fixture();
    let e = expected(f);
    for keep in [f.zip.len() - 1, f.zip.len() - 30, f.zip.len() / 2] {
        let got = modverify::zip_h1(Cursor::new(&f.zip[..keep]), &Limits::default())
            .and_then(|h| e.check(File::Zip, &h));
        let err = got.expect_err("a truncated zip passed");
        assert!(
            matches!(err, Error::BadZip(_) | Error::Mismatch { .. }),
            "{err}"
        );
    }
}

#[test]
fn a_changed_mod_is_refused() {
    let f = fixture();
    let e = expected(f);
    let mut changed = f.go_mod.clone();
    changed.extend_from_slice(b"\n");
    let err = e.check_mod(&changed).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Mismatch {
                file: File::Mod,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&f.go_mod_sum), "{err}");
}

#[test]
fn a_lookup_with_a_forged_signature_is_refused() {
    let f = fixture();
    let text = String::from_utf8(f.lookup.clone()).unwrap();
    let sig_line = text.rfind("\n— ").expect("a signature line") + 1;
    let (_, sig) = text[sig_line..].trim_end().rsplit_once(' ').unwrap();
    // One base64 digit near the end, inside the signature proper: the key
    // hash at the front still names the database's key.
    let mut forged_sig = sig.as_bytes().to_vec();
    let at = forged_sig.len() - 4;
    forged_sig[at] = if forged_sig[at] == b'A' { b'B' } else { b'A' };
    let forged = text.replace(sig, std::str::from_utf8(&forged_sig).unwrap());
    let err = Lookup::parse(MODULE, VERSION, forged.as_bytes(), &f.key).unwrap_err();
    assert!(matches!(err, Error::Signature(_)), "{err}");
    assert!(err.to_string().contains("bad signature"), "{err}");
}

#[test]
fn a_lookup_with_a_changed_record_is_refused() {
    let f = fixture();
    let text = String::from_utf8(f.lookup.clone()).unwrap();
    // The signed tree head stays as it was; the record names another zip.
    let forged = text.replace(&f.go_sum, &modverify::mod_h1(b"not the module"));
    assert_ne!(forged, text);
    let lookup = Lookup::parse(MODULE, VERSION, forged.as_bytes(), &f.key).unwrap();
    let err = lookup.prove(&f.tiles).unwrap_err();
    assert!(matches!(err, Error::Proof(_)), "{err}");
}
