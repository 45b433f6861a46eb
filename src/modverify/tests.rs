use std::collections::HashMap;
use std::io::{Cursor, Write};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::*;

/// Hash1 spelled out from its definition, for the hashes to equal.
fn h1_of(files: &[(&str, &[u8])]) -> String {
    let mut files = files.to_vec();
    files.sort();
    let mut summary = String::new();
    for (name, data) in files {
        summary += &format!("{}  {name}\n", hex::encode(Sha256::digest(data)));
    }
    format!("h1:{}", STANDARD.encode(Sha256::digest(summary.as_bytes())))
}

fn make_zip(files: &[(&str, &[u8])], dirs: &[&str]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for d in dirs {
        w.add_directory(*d, opts).unwrap();
    }
    for (name, data) in files {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn replace(data: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= data.len() {
        if &data[i..i + from.len()] == from {
            data[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        i += 1;
    }
    assert!(n > 0, "nothing replaced");
}

const GO_MOD: &[u8] = b"module example.com/m\n\ngo 1.22\n";
const MAIN: &[u8] =
    b"package m\n\n// Hello says hello.\nfunc Hello() string { return \"hello, world\" }\n";

fn sample() -> Vec<u8> {
    make_zip(
        &[
            ("example.com/m@v1.0.0/z.go", MAIN),
            ("example.com/m@v1.0.0/go.mod", GO_MOD),
            ("example.com/m@v1.0.0/LICENSE", b"license text\n"),
        ],
        &[],
    )
}

#[test]
fn mod_h1_is_hash1_of_one_file_named_go_mod() {
    assert_eq!(mod_h1(GO_MOD), h1_of(&[("go.mod", GO_MOD)]));
    assert_ne!(mod_h1(GO_MOD), mod_h1(b"module example.com/m\n"));
}

#[test]
fn zip_h1_lists_entries_sorted_by_name() {
    let got = zip_h1(Cursor::new(sample()), &Limits::default()).unwrap();
    assert_eq!(
        got,
        h1_of(&[
            ("example.com/m@v1.0.0/go.mod", GO_MOD),
            ("example.com/m@v1.0.0/z.go", MAIN),
            ("example.com/m@v1.0.0/LICENSE", b"license text\n"),
        ])
    );
}

#[test]
fn zip_h1_lists_directory_entries_as_go_does() {
    let zip = make_zip(
        &[("example.com/m@v1.0.0/go.mod", GO_MOD)],
        &["example.com/m@v1.0.0/sub/"],
    );
    assert_eq!(
        zip_h1(Cursor::new(zip), &Limits::default()).unwrap(),
        h1_of(&[
            ("example.com/m@v1.0.0/go.mod", GO_MOD),
            ("example.com/m@v1.0.0/sub/", b"")
        ])
    );
}

#[test]
fn zip_h1_refuses_a_changed_byte() {
    let mut zip = sample();
    let good = zip_h1(Cursor::new(zip.clone()), &Limits::default()).unwrap();
    // A byte in the middle of the first entry's compressed data.
    zip[60] ^= 0x01;
    match zip_h1(Cursor::new(zip), &Limits::default()) {
        Err(Error::BadZip(msg)) => assert!(msg.contains("example.com/m@v1.0.0/"), "{msg}"),
        Ok(h) => panic!("a changed zip hashed, as {h} (was {good})"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn zip_h1_refuses_a_truncated_zip() {
    let zip = sample();
    for keep in [zip.len() - 1, zip.len() / 2, 10, 0] {
        let err = zip_h1(Cursor::new(zip[..keep].to_vec()), &Limits::default()).unwrap_err();
        assert!(matches!(err, Error::BadZip(_)), "{keep} bytes: {err}");
    }
}

#[test]
fn zip_h1_refuses_a_zip_over_the_limit() {
    let zip = sample();
    let limits = Limits {
        max_zip: zip.len() as u64 - 1,
    };
    let err = zip_h1(Cursor::new(zip.clone()), &limits).unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    let exact = Limits {
        max_zip: zip.len() as u64,
    };
    zip_h1(Cursor::new(zip), &exact).unwrap();
}

#[test]
fn zip_h1_refuses_names_with_newlines_and_duplicates() {
    let mut zip = make_zip(&[("example.com/m@v1.0.0/a_b", b"x")], &[]);
    replace(&mut zip, b"a_b", b"a\nb");
    let err = zip_h1(Cursor::new(zip), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("newline"), "{err}");

    let mut zip = make_zip(
        &[
            ("example.com/m@v1.0.0/a", b"x"),
            ("example.com/m@v1.0.0/b", b"y"),
        ],
        &[],
    );
    replace(&mut zip, b"v1.0.0/b", b"v1.0.0/a");
    let err = zip_h1(Cursor::new(zip), &Limits::default()).unwrap_err();
    assert!(
        err.to_string().contains("two entries have one name"),
        "{err}"
    );
}

#[test]
fn check_names_module_version_and_both_hashes() {
    let e = Expected {
        module: "example.com/m".into(),
        version: "v1.0.0".into(),
        zip: Some("h1:want".into()),
        mod_: None,
    };
    e.check(File::Zip, "h1:want").unwrap();
    let msg = e.check(File::Zip, "h1:got").unwrap_err().to_string();
    for part in ["example.com/m@v1.0.0", ".zip", "h1:want", "h1:got"] {
        assert!(msg.contains(part), "{msg:?} lacks {part}");
    }
    assert!(matches!(
        e.check(File::Mod, "h1:want"),
        Err(Error::NotInDatabase { .. })
    ));
}

// The signed note in golang.org/x/mod/sumdb/note's documentation.
const DOC_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const DOC_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
    then you don't know what your problem is.\n\
    \n\
    — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

#[test]
fn opens_go_s_documented_note() {
    let key = VerifierKey::parse(DOC_VKEY).unwrap();
    assert_eq!(key.name(), "PeterNeumann");
    let text = key.open(DOC_NOTE.as_bytes()).unwrap();
    assert!(text.starts_with(b"If you think") && text.ends_with(b"problem is.\n"));
}

#[test]
fn refuses_a_changed_note_or_signature() {
    let key = VerifierKey::parse(DOC_VKEY).unwrap();
    let changed = DOC_NOTE.replace("answer", "Answer");
    let err = key.open(changed.as_bytes()).unwrap_err();
    assert!(
        err.to_string()
            .contains("bad signature by PeterNeumann+c74f20a3"),
        "{err}"
    );
    let forged = DOC_NOTE.replace("RyyBwJnAM=", "RyyBwJnAA=");
    assert!(matches!(
        key.open(forged.as_bytes()),
        Err(Error::Signature(_))
    ));
    let other = DOC_NOTE.replace("— PeterNeumann", "— Someone");
    let err = key.open(other.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("not signed by"), "{err}");
}

#[test]
fn refuses_malformed_keys() {
    for bad in [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(
            matches!(VerifierKey::parse(bad), Err(Error::Key(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn tile_paths_are_go_s() {
    let t = Tile {
        level: 4,
        index: 1234067,
        width: 1,
    };
    assert_eq!(t.path(), "tile/8/4/x001/x234/067.p/1");
    assert_eq!(t.full().path(), "tile/8/4/x001/x234/067");
    let t = Tile {
        level: 0,
        index: 5,
        width: 256,
    };
    assert_eq!(t.path(), "tile/8/0/005");
}

/// A log of the given records, with every tile a database serves for it.
struct Log {
    records: Vec<Vec<u8>>,
    tiles: HashMap<Tile, Vec<u8>>,
    root: [u8; 32],
}

fn leaf(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// RFC 6962's tree hash, straight from the leaves.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = leaves.len().next_power_of_two() / 2;
    node(&mth(&leaves[..k]), &mth(&leaves[k..]))
}

impl Log {
    fn new(records: Vec<Vec<u8>>) -> Log {
        let mut levels = vec![records.iter().map(|r| leaf(r)).collect::<Vec<_>>()];
        while levels.last().unwrap().len() > 1 {
            let below = levels.last().unwrap();
            levels.push(below.chunks_exact(2).map(|p| node(&p[0], &p[1])).collect());
        }
        let mut tiles = HashMap::new();
        for (l, level) in levels.iter().enumerate().step_by(8) {
            for (t, chunk) in level.chunks(256).enumerate() {
                let tile = Tile {
                    level: l as u32 / 8,
                    index: t as u64,
                    width: chunk.len() as u64,
                };
                tiles.insert(tile, chunk.concat());
            }
        }
        let root = mth(&levels[0]);
        Log {
            records,
            tiles,
            root,
        }
    }

    fn tree(&self) -> Tree {
        let text = format!(
            "go.sum database tree\n{}\n{}\n",
            self.records.len(),
            STANDARD.encode(self.root)
        );
        Tree::parse(text.as_bytes()).unwrap()
    }
}

fn numbered(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                "example.com/m v1.0.{i} h1:{}\nexample.com/m v1.0.{i}/go.mod h1:{}\n",
                STANDARD.encode(Sha256::digest(format!("zip {i}"))),
                STANDARD.encode(Sha256::digest(format!("mod {i}"))),
            )
            .into_bytes()
        })
        .collect()
}

#[test]
fn proves_records_in_trees_of_many_shapes() {
    for n in [1usize, 2, 3, 7, 255, 256, 257, 513, 65536 + 300] {
        let log = Log::new(numbered(n));
        let tree = log.tree();
        for id in [0, n / 3, n / 2, n - 1] {
            let id64 = id as u64;
            let needed = tlog::tiles_needed(id64, &tree).unwrap();
            let given: HashMap<Tile, Vec<u8>> =
                needed.iter().map(|t| (*t, log.tiles[t].clone())).collect();
            tlog::prove(id64, &log.records[id], &tree, &given)
                .unwrap_or_else(|e| panic!("tree of {n}, record {id}: {e}"));
            // Another record in this leaf gives another root.
            let other = &log.records[(id + 1) % n];
            if n > 1 {
                let err = tlog::prove(id64, other, &tree, &given).unwrap_err();
                assert!(matches!(err, Error::Proof(_)), "{err}");
            }
            // So does a changed tile, each one the proof reads.
            for t in &needed {
                let mut bad = given.clone();
                bad.get_mut(t).unwrap().iter_mut().for_each(|b| *b ^= 1);
                assert!(
                    tlog::prove(id64, &log.records[id], &tree, &bad).is_err(),
                    "tree of {n}, record {id}, tile {}",
                    t.path()
                );
            }
        }
        assert!(tlog::tiles_needed(n as u64, &tree).is_err());
    }
}

/// A database's key pair, its verifier key and a lookup it would answer.
struct Db {
    pair: Ed25519KeyPair,
    vkey: String,
}

impl Db {
    fn new(name: &str) -> Db {
        let pair = Ed25519KeyPair::generate().unwrap();
        let mut raw = vec![1u8];
        raw.extend_from_slice(pair.public_key().as_ref());
        let mut h = Sha256::new();
        h.update(format!("{name}\n"));
        h.update(&raw);
        let hash = u32::from_be_bytes(h.finalize()[..4].try_into().unwrap());
        let vkey = format!("{name}+{hash:08x}+{}", STANDARD.encode(&raw));
        Db { pair, vkey }
    }

    fn lookup(&self, log: &Log, id: usize) -> Vec<u8> {
        let name = self.vkey.split('+').next().unwrap();
        let hash = u32::from_str_radix(self.vkey.split('+').nth(1).unwrap(), 16).unwrap();
        let text = format!(
            "go.sum database tree\n{}\n{}\n",
            log.records.len(),
            STANDARD.encode(log.root)
        );
        let mut sig = hash.to_be_bytes().to_vec();
        sig.extend_from_slice(self.pair.sign(text.as_bytes()).as_ref());
        let mut body = format!("{id}\n").into_bytes();
        body.extend_from_slice(&log.records[id]);
        body.extend_from_slice(b"\n");
        body.extend_from_slice(text.as_bytes());
        body.extend_from_slice(format!("\n— {name} {}\n", STANDARD.encode(sig)).as_bytes());
        body
    }
}

fn prove_all(lookup: &Lookup, log: &Log) -> Result<Expected, Error> {
    let tiles = lookup
        .tiles_needed()
        .into_iter()
        .map(|t| (t, log.tiles[&t].clone()))
        .collect();
    lookup.prove(&tiles)
}

#[test]
fn a_signed_proven_lookup_gives_the_record_s_hashes() {
    let db = Db::new("sum.example.com");
    let key = VerifierKey::parse(&db.vkey).unwrap();
    let log = Log::new(numbered(600));
    let body = db.lookup(&log, 321);
    let lookup = Lookup::parse("example.com/m", "v1.0.321", &body, &key).unwrap();
    assert_eq!(lookup.id(), 321);
    let expected = prove_all(&lookup, &log).unwrap();
    assert_eq!(
        expected.zip.as_deref(),
        Some(format!("h1:{}", STANDARD.encode(Sha256::digest("zip 321"))).as_str())
    );
    assert_eq!(
        expected.mod_.as_deref(),
        Some(format!("h1:{}", STANDARD.encode(Sha256::digest("mod 321"))).as_str())
    );

    // The lookup of another version is refused.
    assert!(Lookup::parse("example.com/m", "v1.0.3", &body, &key).is_err());
}

#[test]
fn refuses_a_lookup_with_a_forged_signature() {
    let db = Db::new("sum.example.com");
    let key = VerifierKey::parse(&db.vkey).unwrap();
    let log = Log::new(numbered(600));
    let mut body = db.lookup(&log, 7);
    // The last signature byte before "=\n" or "\n".
    let at = body.len() - 4;
    body[at] = if body[at] == b'A' { b'B' } else { b'A' };
    let err = Lookup::parse("example.com/m", "v1.0.7", &body, &key).unwrap_err();
    assert!(matches!(err, Error::Signature(_)), "{err}");
    assert!(err.to_string().contains("example.com/m@v1.0.7"), "{err}");

    // Signed by another database's key.
    let other = Db::new("sum.example.com");
    let err = Lookup::parse("example.com/m", "v1.0.7", &other.lookup(&log, 7), &key).unwrap_err();
    assert!(err.to_string().contains("not signed by"), "{err}");
}

#[test]
fn refuses_a_lookup_whose_record_is_not_in_the_signed_tree() {
    let db = Db::new("sum.example.com");
    let key = VerifierKey::parse(&db.vkey).unwrap();
    let log = Log::new(numbered(600));
    // A validly signed tree head with a record changed in front of it:
    // the signature holds, the proof does not.
    let body = db.lookup(&log, 40);
    let text = String::from_utf8(body).unwrap();
    let real = format!("h1:{}", STANDARD.encode(Sha256::digest("zip 40")));
    let forged = text.replace(&real, &mod_h1(b"not the module"));
    let lookup = Lookup::parse("example.com/m", "v1.0.40", forged.as_bytes(), &key).unwrap();
    let err = prove_all(&lookup, &log).unwrap_err();
    assert!(matches!(err, Error::Proof(_)), "{err}");
    assert!(err.to_string().contains("example.com/m@v1.0.40"), "{err}");
}
