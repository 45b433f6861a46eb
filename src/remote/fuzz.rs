//! Fuzzing what gocacher reads back from the bucket: manifests, packs and
//! object metadata come from storage anyone with write access may have
//! damaged, so each decoder must turn any input into a value or an error,
//! without a panic, a hang or an allocation a length field asked for.
//!
//! Inputs: arbitrary bytes, mutations of the real objects in
//! `fuzz/corpus/{manifest,pack,meta}/`, and mutations behind the outer
//! checks (inside the zstd frame, under a fixed-up checksum), where a
//! mutated object would otherwise be refused at the first step.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sha2::{Digest, Sha256};

use super::format::{ObjectMeta, META_ENCODING, META_OUTPUT_ID, META_PUT_TIME, META_SIZE};
use super::manifest::{self, Manifest};
use super::pack::{self, Decoder};

// Shared with the other fuzz module, which compiles its own copy: neither
// can reach into the other (both are private to their parents).
#[allow(clippy::duplicate_mod)]
#[path = "../../fuzz/support.rs"]
mod support;

use support::{apply, corpus, fuzz, interesting_u64, mutated, mutation, Input};

/// Decompressed form of every seed (the seeds are zstd frames).
fn raw_seeds(target: &str) -> Vec<Vec<u8>> {
    corpus(target)
        .iter()
        .map(|s| zstd::decode_all(&s[..]).expect("seed is zstd"))
        .collect()
}

#[test]
fn manifest() {
    let compress = |raw: Vec<u8>| zstd::bulk::compress(&raw, 1).expect("zstd");
    let strategy = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(compress),
        2 => mutated(corpus("manifest")),
        4 => mutated(raw_seeds("manifest")).prop_map(compress),
        3 => built_manifest().prop_map(compress),
    ]
    .prop_map(Input);
    fuzz("manifest", strategy, |Input(body)| {
        let m = match Manifest::decode(&body, None) {
            Ok(m) => m,
            Err(manifest::Refused::Damaged(e)) if e.starts_with("not zstd") => {
                return Ok("not zstd")
            }
            Err(manifest::Refused::Damaged(e)) if e.contains("header") => return Ok("bad header"),
            Err(manifest::Refused::Damaged(_)) => return Ok("bad contents"),
            Err(manifest::Refused::Untrusted) => {
                return Err(TestCaseError::fail("untrusted without --trust-key"))
            }
        };
        prop_assert!(m.entries.len() <= manifest::MAX_ENTRIES);
        prop_assert!(m.entries.iter().all(|e| e.size <= 1 << 40));
        let outcome = if m.entries.is_empty() {
            "decoded, no entries"
        } else {
            "decoded, entries"
        };
        prop_assert_eq!(Manifest::decode(&m.encode(None), None), Ok(m));
        Ok(outcome)
    });
}

/// A decompressed manifest from fields at the checks' edges: counts off by
/// one, sizes around the limit, signatures too short or too long.
fn built_manifest() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        any::<[u8; 64]>(),
        prop_oneof![3 => 0..1u64 << 20, 1 => interesting_u64()],
        any::<[u64; 2]>(),
        any::<u8>(),
    );
    (
        interesting_u64(),
        any::<[u8; 16]>(),
        prop::collection::vec(record, 0..6),
        prop_oneof![4 => Just(0i64), 1 => -1..=1i64, 1 => Just(100_001i64)],
        prop_oneof![4 => Just(64usize), 1 => 60..68usize, 1 => 0..3usize],
    )
        .prop_map(|(generation, scope, records, count_off, sig_len)| {
            let mut raw = b"gocacher-manifest 2\n".to_vec();
            raw.extend_from_slice(&generation.to_le_bytes());
            raw.extend_from_slice(&scope);
            let count = (records.len() as i64 + count_off) as u32;
            raw.extend_from_slice(&count.to_le_bytes());
            for (ids, size, [last_gen, last_used], flags) in records {
                raw.extend_from_slice(&ids);
                raw.extend_from_slice(&size.to_le_bytes());
                raw.extend_from_slice(&last_gen.to_le_bytes());
                raw.extend_from_slice(&last_used.to_le_bytes());
                raw.push(flags);
            }
            raw.extend(std::iter::repeat_n(0u8, sig_len));
            raw
        })
}

/// The checksum offset of a pack whose count field says `n`, if any.
fn table_end(pack: &[u8]) -> Option<usize> {
    let magic = b"gocacher-pack 2\n".len();
    let n = u32::from_le_bytes(pack.get(magic..magic + 4)?.try_into().unwrap()) as usize;
    let end = magic + 4 + n.checked_mul(89)?;
    (n <= manifest::MAX_ENTRIES && pack.len() >= end + 32 + 64).then_some(end)
}

/// `pack` with its table checksum made right again after a mutation, so the
/// mutation reaches the record checks and the bodies.
fn fix_checksum(mut pack: Vec<u8>) -> Vec<u8> {
    if let Some(end) = table_end(&pack) {
        let sum = Sha256::digest(&pack[16..end]);
        pack[end..end + 32].copy_from_slice(&sum);
    }
    pack
}

/// A table of records with sizes, stored lengths and encodings at the
/// checks' edges, checksummed right, followed by some bytes.
fn built_pack() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        any::<[u8; 64]>(),
        interesting_u64(),
        any::<i64>(),
        prop_oneof![
            2 => Just(None),
            1 => interesting_u64().prop_map(Some),
            1 => (-2..1100i64).prop_map(|d| Some(d as u64)),
        ],
        prop::sample::select(vec![0u8, 1, 1, 2, 255]),
    );
    (
        prop::collection::vec(record, 0..6),
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(records, tail)| {
            let mut table = Vec::new();
            for (ids, size, put_time, stored, encoding) in &records {
                // Unless told otherwise, stored is what the size implies.
                let stored = match stored {
                    Some(s) if *s < 1100 => size.wrapping_add(*s),
                    Some(s) => *s,
                    None => *size,
                };
                table.extend_from_slice(ids);
                table.extend_from_slice(&size.to_le_bytes());
                table.extend_from_slice(&put_time.to_le_bytes());
                table.extend_from_slice(&stored.to_le_bytes());
                table.push(*encoding);
            }
            let mut out = b"gocacher-pack 2\n".to_vec();
            out.extend_from_slice(&(records.len() as u32).to_le_bytes());
            out.extend_from_slice(&table);
            out.extend_from_slice(&[0; 32 + 64]);
            out.extend_from_slice(&tail);
            fix_checksum(out)
        })
}

#[test]
fn pack() {
    let magic_then = |tail: Vec<u8>| [&b"gocacher-pack 2\n"[..], &tail].concat();
    let strategy = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(magic_then),
        2 => mutated(corpus("pack")),
        4 => mutated(corpus("pack")).prop_map(fix_checksum),
        2 => (built_pack(), prop::collection::vec(mutation(), 0..2))
            .prop_map(|(p, muts)| fix_checksum(apply(p, &muts))),
    ]
    .prop_map(Input);
    fuzz("pack", strategy, |Input(bytes)| {
        let mut src = &bytes[..];
        let table = match pack::read_table(&mut src, None, "") {
            Ok(table) => table,
            Err(pack::ReadError::Corrupt(e)) if e.contains("header") => return Ok("bad header"),
            Err(pack::ReadError::Corrupt(e)) if e.contains("checksum") => {
                return Ok("bad checksum")
            }
            Err(pack::ReadError::Corrupt(e)) if e == "truncated" => return Ok("truncated"),
            Err(pack::ReadError::Corrupt(_)) => return Ok("bad record"),
            Err(e) => return Err(TestCaseError::fail(format!("not corrupt: {e}"))),
        };
        prop_assert!(table.len() <= manifest::MAX_ENTRIES);
        let mut total = 0u64;
        for s in &table {
            total += s.item.size;
            prop_assert!(s.item.size <= pack::MAX_ENTRY_BYTES, "{s:?}");
            // read_body allocates `stored` bytes before reading them.
            let max_frame = pack::MAX_ENTRY_BYTES + pack::MAX_ENTRY_BYTES / 128 + 1024;
            prop_assert!(s.stored <= max_frame, "{s:?}");
            prop_assert!(s.zstd || s.stored == s.item.size, "{s:?}");
        }
        prop_assert!(total <= pack::MAX_PACK_BYTES);

        let mut decoder = Decoder::new().expect("zstd decoder");
        let mut frame = Vec::new();
        let mut outcome = "table";
        for (i, s) in table.iter().enumerate() {
            if i % 4 == 3 {
                if pack::skip(&mut src, s).is_err() {
                    break;
                }
                continue;
            }
            if pack::read_body(&mut src, s, &mut frame).is_err() {
                break;
            }
            prop_assert_eq!(frame.len() as u64, s.stored);
            if let Ok(body) = decoder.decode(s, &frame) {
                prop_assert_eq!(body.len() as u64, s.item.size, "{:?}", s);
                outcome = "table and bodies";
            }
        }
        Ok(outcome)
    });
}

/// Metadata values a damaged or foreign object could carry, near the
/// valid ones.
fn meta_value(key: &'static str) -> BoxedStrategy<String> {
    match key {
        META_OUTPUT_ID => prop_oneof![
            4 => any::<[u8; 32]>().prop_map(hex::encode),
            1 => any::<[u8; 32]>().prop_map(|b| hex::encode(b).to_uppercase()),
            1 => any::<[u8; 32]>().prop_map(|b| format!("  {}\t", hex::encode(b))),
            1 => any::<[u8; 32]>().prop_map(|b| format!("0x{}", hex::encode(b))),
            1 => prop::collection::vec(any::<u8>(), 30..34).prop_map(hex::encode),
            1 => any::<[u8; 32]>().prop_map(|b| hex::encode(b)[1..].to_string()),
            1 => "[0-9a-fA-FgG \u{e9}]{62,66}",
        ]
        .boxed(),
        META_SIZE | META_PUT_TIME => prop_oneof![
            3 => any::<u64>().prop_map(|n| n.to_string()),
            3 => any::<i64>().prop_map(|n| n.to_string()),
            3 => prop::sample::select(vec![
                "0", "+5", "-1", "-0", " 5 ", "5 ", "05", "1e3", "0x10", "", " ", "٣",
                "18446744073709551615", "18446744073709551616",
                "9223372036854775807", "9223372036854775808",
                "-9223372036854775808", "-9223372036854775809", "1_000", "5\u{0}",
            ])
            .prop_map(String::from),
            1 => ".{0,24}",
        ]
        .boxed(),
        _ => prop_oneof![
            4 => prop::sample::select(vec![
                "identity", "zstd", " zstd ", "ZSTD", "Identity", "gzip", "", "zstd\u{0}",
                "br", "identity,zstd",
            ])
            .prop_map(String::from),
            1 => ".{0,16}",
        ]
        .boxed(),
    }
}

/// One edit of a metadata map.
#[derive(Debug, Clone)]
enum Edit {
    Remove(&'static str),
    Set(&'static str, String),
    /// A key that is not ours (or ours in another case).
    Other(String, String),
}

const KEYS: [&str; 4] = [META_OUTPUT_ID, META_SIZE, META_PUT_TIME, META_ENCODING];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => prop::sample::select(KEYS.to_vec()).prop_map(Edit::Remove),
        4 => prop::sample::select(KEYS.to_vec())
            .prop_flat_map(|k| meta_value(k).prop_map(move |v| Edit::Set(k, v))),
        1 => (
            prop_oneof![
                Just("Gocacher-Size".to_string()),
                Just("gocacher-output-id ".to_string()),
                "[a-z-]{0,24}",
            ],
            ".{0,32}",
        )
            .prop_map(|(k, v)| Edit::Other(k, v)),
    ]
}

fn seed_maps() -> Vec<HashMap<String, String>> {
    corpus("meta")
        .iter()
        .map(|s| serde_json::from_slice(s).expect("seed is a JSON object of strings"))
        .collect()
}

#[test]
fn meta() {
    let arbitrary = prop::collection::hash_map(
        prop_oneof![
            prop::sample::select(KEYS.to_vec()).prop_map(String::from),
            ".{0,16}"
        ],
        ".{0,70}",
        0..6,
    );
    let edited = (
        prop::sample::select(seed_maps()),
        prop::collection::vec(edit(), 0..5),
    )
        .prop_map(|(mut m, edits)| {
            for e in edits {
                match e {
                    Edit::Remove(k) => {
                        m.remove(k);
                    }
                    Edit::Set(k, v) => {
                        m.insert(k.to_string(), v);
                    }
                    Edit::Other(k, v) => {
                        m.insert(k, v);
                    }
                }
            }
            m
        });
    let strategy = prop_oneof![1 => arbitrary, 4 => edited];
    fuzz("meta", strategy, |m| {
        let Some(meta) = ObjectMeta::from_metadata(&m) else {
            return Ok("refused");
        };
        prop_assert_eq!(ObjectMeta::from_metadata(&meta.to_metadata()), Some(meta));
        // What was accepted is what the map said, up to case and spaces.
        let said = |k: &str| m[k].trim().to_string();
        prop_assert_eq!(meta.output_id.to_hex(), said(META_OUTPUT_ID).to_lowercase());
        prop_assert_eq!(Ok(meta.size), said(META_SIZE).parse::<u64>());
        prop_assert_eq!(meta.encoding.as_str(), said(META_ENCODING));
        Ok("accepted")
    });
}
