//! Fuzzing the request stream: any bytes on stdin, fed to the real loop in
//! pipe-sized pieces, must leave it answering in valid JSON lines, calling
//! `close` once, handing every put a body that adds up or ends in an error,
//! and ending at end of input, without a panic or a hang.
//!
//! Inputs: arbitrary bytes, mutations of the real request streams in
//! `fuzz/corpus/request/`, and streams built from plausible pieces (gets,
//! puts with body lines, close, field soup), mutated a little. `fuzz/run.sh`
//! runs this for longer; `fuzz/README.md` says more.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::*;

// Shared with the other fuzz module, which compiles its own copy: neither
// can reach into the other (both are private to their parents).
#[allow(clippy::duplicate_mod)]
#[path = "../../fuzz/support.rs"]
mod support;

use support::{apply, corpus, fuzz, interesting_u64, mutated, mutation, Input};

/// A session that has not ended by then hangs: real ones take milliseconds.
const HANG: Duration = Duration::from_secs(5);

/// A handler that keeps nothing and checks what the loop hands it.
#[derive(Default)]
struct Fake {
    closes: AtomicUsize,
    /// Broken promises of the loop, reported by the test.
    wrong: Mutex<Vec<String>>,
}

impl Fake {
    fn wrong(&self, what: String) {
        self.wrong.lock().unwrap().push(what);
    }
}

impl Handler for Fake {
    /// The action ID's first byte picks the answer: a miss or a hit, at once
    /// or after a yield (so that gets also run as tasks).
    async fn get(&self, action_id: Id) -> Option<Hit> {
        let b = action_id.0[0];
        if b & 2 != 0 {
            tokio::task::yield_now().await;
        }
        (b & 1 != 0).then(|| Hit {
            output_id: Id(Sha256::digest(action_id.0).into()),
            size: u64::from_le_bytes(action_id.0[1..9].try_into().unwrap()),
            put_time_nanos: i64::from_le_bytes(action_id.0[9..17].try_into().unwrap()),
            // Quotes, a newline and a backslash: the reply must escape them.
            disk_path: PathBuf::from(format!("/fuzz/\"{action_id:?}\"\n\\")),
        })
    }

    /// Reads the body to its end, unless the action ID says to give up at
    /// once (as a full disk would); fails the put on an error chunk.
    async fn put(&self, put: Put, mut body: PutBody) -> anyhow::Result<PathBuf> {
        if body.size() != put.size {
            self.wrong(format!("body of {} bytes for {put:?}", body.size()));
        }
        if put.action_id.0[0] % 5 == 4 {
            anyhow::bail!("gave up on the body");
        }
        let read = tokio::task::spawn_blocking(move || {
            let mut got = 0u64;
            while let Some(chunk) = body.blocking_next() {
                match chunk {
                    Ok(bytes) => got += bytes.len() as u64,
                    Err(err) => {
                        let more = body.blocking_next().is_some();
                        return Err((err, more));
                    }
                }
            }
            Ok(got)
        })
        .await
        .expect("body reader");
        match read {
            Ok(got) if got == put.size => Ok(PathBuf::from("/fuzz/put")),
            Ok(got) => {
                self.wrong(format!("{got} body bytes and no error for {put:?}"));
                anyhow::bail!("short body")
            }
            Err((err, more)) => {
                if more {
                    self.wrong(format!("a chunk after the error {err} for {put:?}"));
                }
                Err(err.into())
            }
        }
    }

    async fn close(&self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Stdin as a pipe delivers it: at most `step` bytes per read, and, when
/// `stall`, every other read not ready yet.
struct Pipe {
    data: Vec<u8>,
    pos: usize,
    step: usize,
    stall: bool,
    stalled: bool,
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.stall && !me.stalled {
            me.stalled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        me.stalled = false;
        let n = me.step.min(buf.remaining()).min(me.data.len() - me.pos);
        buf.put_slice(&me.data[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// One fuzz case: the stream and how the pipe cuts it.
#[derive(Debug, Clone)]
struct Case {
    input: Input,
    step: usize,
    stall: bool,
}

/// Runs a session over `case`; checks what came out and what the handler saw.
async fn session(case: Case) -> Result<&'static str, TestCaseError> {
    let handler = Arc::new(Fake::default());
    let pipe = Pipe {
        data: case.input.0,
        pos: 0,
        step: case.step,
        stall: case.stall,
        stalled: false,
    };
    let (out, mut from_loop) = tokio::io::duplex(64 * 1024);
    let collect = tokio::spawn(async move {
        let mut text = Vec::new();
        from_loop.read_to_end(&mut text).await.map(|_| text)
    });
    let served = serve(pipe, out, handler.clone()).await;
    let text = collect.await.expect("collector").expect("output");
    prop_assert!(served.is_ok(), "serve failed: {served:?}");

    prop_assert!(text.ends_with(b"\n"), "output does not end a line");
    let lines: Vec<&[u8]> = text[..text.len() - 1].split(|&b| b == b'\n').collect();
    let first: serde_json::Value = serde_json::from_slice(lines[0])
        .map_err(|e| TestCaseError::fail(format!("first line: {e}")))?;
    prop_assert_eq!(
        first,
        serde_json::json!({"ID": 0, "KnownCommands": ["get", "put", "close"]})
    );
    // The case is named by the most a reply shows it got to.
    let mut outcome = "no reply";
    for line in &lines[1..] {
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            TestCaseError::fail(format!("bad JSON line {:?}: {e}", line.escape_ascii()))
        })?;
        prop_assert!(v["ID"].is_i64(), "no ID in {v}");
        let reply = if v["DiskPath"] == "/fuzz/put" {
            "put stored"
        } else if v.get("OutputID").is_some() {
            "get hit"
        } else if v.get("Miss").is_some() {
            "get miss"
        } else if v.get("Err").is_some() {
            "error reply"
        } else {
            "close reply"
        };
        let rank = |r: &str| REPLIES.iter().position(|&x| x == r);
        if rank(reply) > rank(outcome) {
            outcome = reply;
        }
    }
    prop_assert_eq!(handler.closes.load(Ordering::SeqCst), 1, "close calls");
    let wrong = handler.wrong.lock().unwrap().clone();
    prop_assert!(wrong.is_empty(), "handler saw: {wrong:?}");
    Ok(outcome)
}

/// Case outcomes, from least to most reached.
const REPLIES: [&str; 6] = [
    "no reply",
    "close reply",
    "error reply",
    "get miss",
    "get hit",
    "put stored",
];

#[test]
fn request() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let strategy = (
        prop_oneof![
            1 => prop::collection::vec(any::<u8>(), 0..512),
            2 => mutated(corpus("request")),
            4 => (
                prop::collection::vec(piece(), 0..12),
                prop::collection::vec(mutation(), 0..3),
            )
                .prop_map(|(pieces, muts)| apply(pieces.concat(), &muts)),
        ],
        prop_oneof![1..8usize, 8..512usize, Just(READ_BUFFER)],
        any::<bool>(),
    )
        .prop_map(|(input, step, stall)| Case {
            input: Input(input),
            step,
            stall,
        });
    fuzz("request", strategy, |case| {
        rt.block_on(async {
            tokio::time::timeout(HANG, session(case))
                .await
                .map_err(|_| TestCaseError::fail(format!("no end within {HANG:?}")))?
        })
    });
}

/// A piece of a request stream.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => get(),
        4 => put(),
        1 => (id_value(), end()).prop_map(|(id, end)| {
            format!(r#"{{"ID":{id},"Command":"close"}}{end}"#).into_bytes()
        }),
        3 => soup(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::sample::select(vec!["\n", "\n\n", "  \t\n", "\r\n", " "])
            .prop_map(|s| s.as_bytes().to_vec()),
        // Just over the request line cap, sometimes cut short of its newline.
        1 => (any::<bool>(), any::<u8>()).prop_map(|(newline, b)| {
            let mut line = vec![b'{'; MAX_REQUEST_LINE + 1 + usize::from(b)];
            if newline {
                line.push(b'\n');
            }
            line
        }),
    ]
}

/// What follows a request line: cmd/go writes a blank line.
fn end() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just("\n\n"),
        1 => Just("\n"),
        1 => Just("\r\n\r\n"),
        1 => Just("  \n \n"),
        1 => Just(""),
    ]
}

fn id_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (1..20i64).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => interesting_u64().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec![
            "0", "-1", "1.5", "1e2", "\"7\"", "null", "9223372036854775808", "[]",
        ])
        .prop_map(String::from),
    ]
}

/// A 32-byte ID as cmd/go sends it, or something near it.
fn id32_value() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => any::<[u8; 32]>().prop_map(|b| format!("\"{}\"", B64.encode(b))),
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| format!("\"{}\"", B64.encode(b))),
        1 => any::<[u8; 32]>()
            .prop_map(|b| format!("\"{}\"", B64.encode(b).trim_end_matches('='))),
        // Valid base64 behind JSON escapes: "\/" and "\u0041".
        1 => Just(r#""\/\/\/\/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=""#.to_string()),
        1 => Just(r#""\u0041AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=""#.to_string()),
        1 => "\"[A-Za-z0-9+/=!-]{0,48}\"",
        1 => prop::sample::select(vec!["null", "42", "[1,2]", "{}", "\"\""])
            .prop_map(String::from),
    ]
}

fn size_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0..64i64).prop_map(|n| n.to_string()),
        1 => (-5..0i64).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec![
            "4611686018427387904",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "1e9",
            "1.0",
            "\"5\"",
            "null",
        ])
        .prop_map(String::from),
    ]
}

fn get() -> impl Strategy<Value = Vec<u8>> {
    (id_value(), prop::option::weighted(0.9, id32_value()), end()).prop_map(|(id, action, end)| {
        let action = action.map_or(String::new(), |a| format!(r#","ActionID":{a}"#));
        format!(r#"{{"ID":{id},"Command":"get"{action}}}{end}"#).into_bytes()
    })
}

/// How a put's body line is sent: right, or broken in one of the ways a
/// line can break.
#[derive(Debug, Clone)]
enum BodyLine {
    Right,
    Missing,
    NoClosingQuote,
    NoOpeningQuote,
    Unpadded,
    Junk(prop::sample::Index, u8),
    Cut(prop::sample::Index),
    Trailing(&'static str),
    Leading(&'static str),
    Escaped,
}

fn body_line() -> impl Strategy<Value = BodyLine> {
    prop_oneof![
        8 => Just(BodyLine::Right),
        1 => Just(BodyLine::Missing),
        1 => Just(BodyLine::NoClosingQuote),
        1 => Just(BodyLine::NoOpeningQuote),
        1 => Just(BodyLine::Unpadded),
        1 => (any::<prop::sample::Index>(), prop::sample::select(b" !=\\\"\n\xff-_".to_vec()))
            .prop_map(|(i, b)| BodyLine::Junk(i, b)),
        1 => any::<prop::sample::Index>().prop_map(BodyLine::Cut),
        1 => prop::sample::select(vec!["  ", " x", "\"", ",1"]).prop_map(BodyLine::Trailing),
        1 => prop::sample::select(vec!["", " ", "\n\n", "\t \n"]).prop_map(BodyLine::Leading),
        1 => Just(BodyLine::Escaped),
    ]
}

/// A put's BodySize: the body's length, a little off, or any value.
#[derive(Debug, Clone)]
enum Size {
    Exact,
    Off(i64),
    Text(String),
}

/// A put: its request line (BodySize mostly right, OutputID mostly the
/// body's sha256) and its body line.
fn put() -> impl Strategy<Value = Vec<u8>> {
    (
        id_value(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 0..96),
        prop_oneof![
            6 => Just(Size::Exact),
            1 => (-2..=2i64).prop_map(Size::Off),
            1 => size_value().prop_map(Size::Text),
        ],
        prop::option::weighted(0.2, id32_value()),
        prop::sample::select(vec!["OutputID", "ObjectID", "OutputID+ObjectID", "none"]),
        body_line(),
        end(),
    )
        .prop_map(
            |(id, action, body, size, output, output_field, line, end)| {
                let output =
                    output.unwrap_or_else(|| format!("\"{}\"", B64.encode(Sha256::digest(&body))));
                let ids = match output_field {
                    "OutputID+ObjectID" => format!(r#","OutputID":{output},"ObjectID":{output}"#),
                    "none" => String::new(),
                    field => format!(r#","{field}":{output}"#),
                };
                let size_field = match size {
                    // cmd/go omits a zero BodySize.
                    Size::Exact if body.is_empty() => String::new(),
                    Size::Exact => format!(r#","BodySize":{}"#, body.len()),
                    Size::Off(d) => format!(r#","BodySize":{}"#, body.len() as i64 + d),
                    Size::Text(t) => format!(r#","BodySize":{t}"#),
                };
                let mut out = format!(
                    r#"{{"ID":{id},"Command":"put","ActionID":"{}"{ids}{size_field}}}{end}"#,
                    B64.encode(action)
                )
                .into_bytes();
                out.extend(body_text(&body, &line));
                out
            },
        )
}

fn body_text(body: &[u8], line: &BodyLine) -> Vec<u8> {
    let b64 = B64.encode(body);
    let mut text = format!("\"{b64}\"\n").into_bytes();
    match line {
        BodyLine::Right => {}
        BodyLine::Missing => text.clear(),
        BodyLine::NoClosingQuote => text = format!("\"{b64}\n").into_bytes(),
        BodyLine::NoOpeningQuote => text = format!("{b64}\"\n").into_bytes(),
        BodyLine::Unpadded => text = format!("\"{}\"\n", b64.trim_end_matches('=')).into_bytes(),
        BodyLine::Junk(i, b) => {
            let p = 1 + i.index(b64.len() + 1);
            text.insert(p, *b);
        }
        BodyLine::Cut(i) => text.truncate(i.index(text.len())),
        BodyLine::Trailing(t) => text = format!("\"{b64}\"{t}\n").into_bytes(),
        BodyLine::Leading(l) => text = format!("{l}\"{b64}\"\n").into_bytes(),
        BodyLine::Escaped => text = format!("\"\\u0041{b64}\"\n").into_bytes(),
    }
    text
}

/// A request line of known and unknown fields with plausible and odd
/// values, duplicates included, in any order.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        id_value().prop_map(|v| format!(r#""ID":{v}"#)),
        prop::sample::select(vec![
            r#""get""#,
            r#""put""#,
            r#""close""#,
            r#""GET""#,
            r#""""#,
            r#""stat""#,
            "3",
            "null",
            r#""g\u0065t""#,
        ])
        .prop_map(|v| format!(r#""Command":{v}"#)),
        id32_value().prop_map(|v| format!(r#""ActionID":{v}"#)),
        id32_value().prop_map(|v| format!(r#""OutputID":{v}"#)),
        id32_value().prop_map(|v| format!(r#""ObjectID":{v}"#)),
        size_value().prop_map(|v| format!(r#""BodySize":{v}"#)),
        prop::sample::select(vec![
            r#""X":{"a":[1,2,{}]}"#,
            r#""":"""#,
            r#""id":1"#,
            r#""Miss":true"#,
        ])
        .prop_map(String::from),
    ];
    (
        prop::collection::vec(field, 0..7),
        prop::sample::select(vec!["", "", "", " junk", "}", ",", "\u{0}"]),
        end(),
    )
        .prop_map(|(fields, tail, end)| {
            // Duplicate keys are errors to serde, so the same field twice is
            // a malformed line; keep most lines to one of each.
            let mut seen = HashSet::new();
            let fields: Vec<String> = fields
                .into_iter()
                .enumerate()
                .filter(|(i, f)| {
                    seen.insert(f.split(':').next().unwrap_or("").to_string()) || i % 3 == 0
                })
                .map(|(_, f)| f)
                .collect();
            format!("{{{}}}{tail}{end}", fields.join(",")).into_bytes()
        })
}
