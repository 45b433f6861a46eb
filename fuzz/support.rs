//! What the fuzz targets share: the seed corpus, mutations of it, and a
//! runner that stores failures and prints how many cases a target ran.
//!
//! `src/protocol/fuzz.rs` and `src/remote/fuzz.rs` include this file with
//! `#[path]`, so each compiles its own copy; both use all of it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// Cases per target when `PROPTEST_CASES` is not set: the four targets run
/// in a few seconds of release-mode time, so the normal suite can afford it.
const DEFAULT_CASES: u32 = 2_000;

/// Bytes whose `Debug` is an escaped string, so a failing input in a report
/// reads as text where it is text.
#[derive(Clone, PartialEq)]
pub struct Input(pub Vec<u8>);

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// The seed files of `fuzz/corpus/<target>/`, in name order.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// One edit of an input. Positions are [`Index`]es, so they fit any length.
#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Copies `len` bytes from the first position to the second.
    Duplicate(Index, usize, Index),
    Truncate(Index),
    /// Overwrites 1, 2, 4 or 8 bytes with a little-endian number (binary
    /// formats: counts, lengths, sizes).
    Number(Index, usize, u64),
    /// Replaces the run of ASCII digits at or after a position (textual
    /// formats: JSON numbers).
    Digits(Index, &'static str),
}

/// Numbers at the edges of the formats' checks and of the integer types.
pub fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0,
            1,
            2,
            0x7f,
            0x80,
            0xff,
            0x100,
            0xffff,
            100_000,
            100_001,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            1 << 32,
            32 << 20,
            (32 << 20) + 1,
            2 << 30,
            (2 << 30) + 1,
            1 << 40,
            (1 << 40) + 1,
            i64::MAX as u64,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ]),
        1 => any::<u64>(),
    ]
}

/// Number texts at the edges of i64/u64 parsing, and non-integers.
const DIGITS: &[&str] = &[
    "0",
    "1",
    "-1",
    "-0",
    "21",
    "22",
    "23",
    "1e3",
    "1.5",
    "4611686018427387904",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "\"5\"",
    "null",
    "",
];

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let idx = any::<Index>;
    prop_oneof![
        (idx(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (idx(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (idx(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (idx(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (idx(), 1..128usize, idx()).prop_map(|(i, n, j)| Mutation::Duplicate(i, n, j)),
        idx().prop_map(Mutation::Truncate),
        (
            idx(),
            prop::sample::select(vec![1, 2, 4, 8]),
            interesting_u64()
        )
            .prop_map(|(i, w, v)| Mutation::Number(i, w, v)),
        (idx(), prop::sample::select(DIGITS)).prop_map(|(i, d)| Mutation::Digits(i, d)),
    ]
}

/// `input` with `mutations` applied in order.
pub fn apply(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        // Positions within the input; `at_or_end` may also be its end.
        let len = input.len();
        let at = |i: &Index| (len > 0).then(|| i.index(len));
        let at_or_end = |i: &Index| i.index(len + 1);
        match m {
            Mutation::Flip(i, bit) => {
                if let Some(p) = at(i) {
                    input[p] ^= 1 << bit;
                }
            }
            Mutation::Set(i, b) => {
                if let Some(p) = at(i) {
                    input[p] = *b;
                }
            }
            Mutation::Insert(i, bytes) => {
                let p = at_or_end(i);
                input.splice(p..p, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                if let Some(p) = at(i) {
                    input.drain(p..(p + n).min(len));
                }
            }
            Mutation::Duplicate(from, n, to) => {
                if let Some(p) = at(from) {
                    let piece = input[p..(p + n).min(len)].to_vec();
                    let q = at_or_end(to);
                    input.splice(q..q, piece);
                }
            }
            Mutation::Truncate(i) => input.truncate(at_or_end(i)),
            Mutation::Number(i, width, v) => {
                if let Some(p) = at(i) {
                    let end = (p + width).min(len);
                    input[p..end].copy_from_slice(&v.to_le_bytes()[..end - p]);
                }
            }
            Mutation::Digits(i, text) => {
                let Some(p) = at(i) else { continue };
                let Some(k) = input[p..].iter().position(u8::is_ascii_digit) else {
                    continue;
                };
                let mut start = p + k;
                let end = start
                    + input[start..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                // Take a minus sign along, so "-1" can become "5".
                if start > 0 && input[start - 1] == b'-' {
                    start -= 1;
                }
                input.splice(start..end, text.bytes());
            }
        }
    }
    input
}

/// One of `seeds`, with one to four mutations: more would leave little of
/// the seed's structure for the decoder to get past.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(), 1..5),
    )
        .prop_map(|(seed, muts)| apply(seed, &muts))
}

/// Runs `test` on cases drawn from `strategy`: [`DEFAULT_CASES`], or
/// `PROPTEST_CASES` when set. A failure is shrunk, its seed stored in
/// `fuzz/regressions/<target>.txt` (replayed first on every later run), and
/// reported by panicking with the smallest failing input.
///
/// `test` names how far each case got (say "rejected" or "decoded"); the
/// summary line counts them, to show the cases reach past the first check.
pub fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<&'static str, TestCaseError>,
) {
    let defaults = Config::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        defaults.cases
    } else {
        DEFAULT_CASES
    };
    let path = format!(
        "{}/fuzz/regressions/{target}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let config = Config {
        cases,
        // The persistence API wants a static path; one per target and run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(Box::leak(
            path.into_boxed_str(),
        )))),
        // Shrinking stops after a minute: the input found so far is
        // reported either way.
        max_shrink_time: 60_000,
        ..defaults
    };
    let outcomes = Mutex::new(BTreeMap::<&str, u64>::new());
    let start = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |value| {
        let outcome = test(value)?;
        *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
        Ok(())
    });
    let secs = start.elapsed().as_secs_f64();
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
    let outcomes: Vec<String> = outcomes
        .into_inner()
        .unwrap()
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "fuzz {target}: {cases} cases, 0 failures, {secs:.2} s ({})",
        outcomes.join(", ")
    );
}
