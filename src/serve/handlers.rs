//! The requests `gocacher serve` answers.
//!
//! - `GET`/`HEAD /action/<actionID>`: with `Want-Object: 1`, the output
//!   (`Go-Output-Id`, `Content-Length`; lz4 with `Content-Encoding: lz4` and
//!   `X-Uncompressed-Length` when the request accepts it and it pays), as
//!   gocached; without it, JSON `{"outputID","size"}`, as go-cacher-server.
//! - `GET /output/<outputID>`: an output's bytes.
//! - `PUT /<actionID>/<outputID>` with `Content-Length`: 204 once stored.
//! - `GET`/`PUT /gocacher/v1/<manifests|packs>/<hash>`: named objects, with
//!   `Range`, `If-Match` and `ETag` as prefetch needs them.
//! - `GET /gocacher/v1/info`: says this server keeps named objects.
//!
//! IDs must be 64 lower-case hex digits (400 otherwise). A PUT body is
//! hashed while it is written and kept only if it matches its output ID and
//! length (400); too large is 413, too slow 408, too many writes at once 503
//! with `Retry-After`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Shared;
use crate::disk::{now_nanos, PutError};
use crate::wire::Id;

/// The kinds of named object, each a directory under `<store>/named`.
pub(crate) const NAMED_KINDS: [&str; 2] = ["manifests", "packs"];

/// Outputs in this size range are sent lz4-compressed to a client that
/// accepts it, when that saves a tenth or more. Smaller ones gain nothing;
/// larger ones are streamed as they are (compressing them would hold them
/// in memory).
const LZ4_MIN: u64 = 512;
const LZ4_MAX: u64 = 8 << 20;

/// A body may take `--body-timeout` plus one second per this many bytes.
const BODY_RATE: u64 = 256 << 10;

type Shared_ = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/action/{id}", get(get_action))
        .route("/output/{id}", get(get_output))
        .route("/gocacher/v1/info", get(info))
        .route("/gocacher/v1/{kind}/{name}", get(get_named).put(put_named))
        .route("/{action}/{output}", put(put_entry))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

fn refused(s: &Shared, status: StatusCode, msg: impl Into<String>) -> Response {
    s.counters.refused.fetch_add(1, Ordering::Relaxed);
    let msg = msg.into();
    if s.cfg.verbose {
        eprintln!("gocacher serve: {} {msg}", status.as_u16());
    }
    text(status, msg)
}

fn internal(what: &str, e: impl std::fmt::Display) -> Response {
    eprintln!("gocacher serve: {what}: {e}");
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} failed"))
}

/// An ID as the API spells it: exactly 64 lower-case hex digits.
fn parse_id(s: &str) -> Option<Id> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Id::from_hex(s)
}

const BAD_ID: &str = "IDs are 64 lower-case hex digits";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

async fn info() -> Response {
    axum::Json(serde_json::json!({
        "server": "gocacher",
        "version": env!("CARGO_PKG_VERSION"),
        "named": true,
    }))
    .into_response()
}

async fn get_action(
    State(s): Shared_,
    UrlPath(id): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(action) = parse_id(&id) else {
        return refused(&s, StatusCode::BAD_REQUEST, BAD_ID);
    };
    let disk = s.disk.clone();
    let entry = match blocking(move || disk.get(&action)).await.and_then(|r| r) {
        Ok(Some(e)) => e,
        Ok(None) => {
            s.counters.misses.fetch_add(1, Ordering::Relaxed);
            return text(StatusCode::NOT_FOUND, "miss");
        }
        Err(e) => return internal("reading the store", e),
    };
    s.counters.hits.fetch_add(1, Ordering::Relaxed);
    if headers.get("want-object").is_none() {
        return axum::Json(serde_json::json!({
            "outputID": entry.output_id.to_hex(),
            "size": entry.size,
        }))
        .into_response();
    }
    let mut resp = output(&s, &entry.disk_path, entry.size, &method, &headers).await;
    if let Ok(v) = HeaderValue::from_str(&entry.output_id.to_hex()) {
        resp.headers_mut().insert("go-output-id", v);
    }
    resp
}

async fn get_output(
    State(s): Shared_,
    UrlPath(id): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(output_id) = parse_id(&id) else {
        return refused(&s, StatusCode::BAD_REQUEST, BAD_ID);
    };
    let path = s.disk.output_path(&output_id);
    let size = match tokio::fs::metadata(&path).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return text(StatusCode::NOT_FOUND, "no such output")
        }
        Err(e) => return internal("reading the store", e),
    };
    output(&s, &path, size, &method, &headers).await
}

/// An output file as the response body: lz4 when asked for and it pays,
/// else streamed as it is.
async fn output(
    s: &Shared,
    path: &Path,
    size: u64,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let octets = (header::CONTENT_TYPE, "application/octet-stream");
    if method == Method::HEAD {
        return (
            StatusCode::OK,
            [octets],
            [(header::CONTENT_LENGTH, size.to_string())],
            (),
        )
            .into_response();
    }
    if accepts_lz4(headers) && (LZ4_MIN..=LZ4_MAX).contains(&size) {
        let p = path.to_owned();
        match blocking(move || compress(&p)).await.and_then(|r| r) {
            Ok((raw_len, frame)) if (frame.len() as u64) < raw_len - raw_len / 10 => {
                s.counters
                    .bytes_out
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                return (
                    StatusCode::OK,
                    [octets, (header::CONTENT_ENCODING, "lz4")],
                    [("x-uncompressed-length", raw_len.to_string())],
                    frame,
                )
                    .into_response();
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return text(StatusCode::NOT_FOUND, "evicted")
            }
            Err(e) => return internal("reading an output", e),
        }
    }
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return text(StatusCode::NOT_FOUND, "evicted")
        }
        Err(e) => return internal("reading an output", e),
    };
    s.counters.bytes_out.fetch_add(size, Ordering::Relaxed);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (
        StatusCode::OK,
        [octets],
        [(header::CONTENT_LENGTH, size.to_string())],
        body,
    )
        .into_response()
}

fn accepts_lz4(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            e.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("lz4")
        })
}

/// A file's length and its bytes as one lz4 frame.
fn compress(path: &Path) -> io::Result<(u64, Vec<u8>)> {
    let raw = std::fs::read(path)?;
    let mut enc = lz4::EncoderBuilder::new()
        .checksum(lz4::ContentChecksum::ChecksumEnabled)
        .build(Vec::with_capacity(raw.len() / 2))?;
    io::Write::write_all(&mut enc, &raw)?;
    let (frame, done) = enc.finish();
    done?;
    Ok((raw.len() as u64, frame))
}

/// What ended a request body early.
struct Cut(StatusCode, String);

/// Streams a request body of `len` bytes to `sink` on a blocking thread,
/// within the body deadline. The sink's result, or why the body was cut.
async fn pump_body<T: Send + 'static>(
    s: &Shared,
    body: Body,
    len: u64,
    sink: impl FnOnce(&mut dyn FnMut() -> Option<io::Result<Bytes>>) -> T + Send + 'static,
) -> Result<T, Cut> {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let writer = tokio::task::spawn_blocking(move || sink(&mut || rx.blocking_recv()));
    let deadline = Instant::now() + s.cfg.body_timeout + Duration::from_secs(len / BODY_RATE);
    let mut stream = body.into_data_stream();
    let mut cut = None;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                s.counters
                    .bytes_in
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if tx.send(Ok(chunk)).await.is_err() {
                    break; // the writer stopped (too long a body); it says why
                }
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                cut = Some(Cut(
                    StatusCode::BAD_REQUEST,
                    format!("the body stopped: {e}"),
                ));
                break;
            }
            Err(_) => {
                cut = Some(Cut(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the body of {len} bytes did not arrive in time"),
                ));
                break;
            }
        }
    }
    if let Some(Cut(_, msg)) = &cut {
        let _ = tx.send(Err(io::Error::other(msg.clone()))).await;
    }
    drop(tx);
    let written = writer.await;
    if let Some(c) = cut {
        return Err(c);
    }
    written.map_err(|e| Cut(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The announced body length, within `--max-object-size`.
fn body_length(s: &Shared, headers: &HeaderMap) -> Result<u64, Box<Response>> {
    let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Err(Box::new(refused(
            s,
            StatusCode::LENGTH_REQUIRED,
            "a PUT needs a Content-Length",
        )));
    };
    if len > s.cfg.max_object_size {
        return Err(Box::new(refused(
            s,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{len} bytes is over the limit of {}", s.cfg.max_object_size),
        )));
    }
    Ok(len)
}

fn busy(s: &Shared) -> Response {
    let mut r = refused(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "too many uploads at once",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn put_entry(
    State(s): Shared_,
    UrlPath((a, o)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (Some(action), Some(output_id)) = (parse_id(&a), parse_id(&o)) else {
        return refused(&s, StatusCode::BAD_REQUEST, BAD_ID);
    };
    let len = match body_length(&s, &headers) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let Ok(_permit) = s.writes.clone().try_acquire_owned() else {
        return busy(&s);
    };
    let disk = s.disk.clone();
    let written = pump_body(&s, body, len, move |next| {
        disk.write_output(&output_id, len, next)?;
        disk.write_action(&action, &output_id, len, now_nanos())
    })
    .await;
    match written {
        Ok(Ok(())) => {
            s.counters.puts.fetch_add(1, Ordering::Relaxed);
            s.stored(len);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e @ PutError::Io { .. })) => internal("writing the store", e),
        Ok(Err(e)) => refused(&s, StatusCode::BAD_REQUEST, e.to_string()),
        Err(Cut(code, msg)) => refused(&s, code, msg),
    }
}

/// The file of a named object, if `kind` and `name` are well formed.
fn named_path(s: &Shared, kind: &str, name: &str) -> Option<PathBuf> {
    let ok = NAMED_KINDS.contains(&kind)
        && name.len() == 32
        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| s.named.join(kind).join(name))
}

/// A named object's ETag: its length and modification time, which change
/// with every replacement.
fn etag(m: &std::fs::Metadata) -> String {
    let nanos = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{nanos:x}\"", m.len())
}

/// `bytes=START-[END]`.
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    (end.is_none_or(|e| e >= start)).then_some((start, end))
}

/// A named object's ETag, length, and the bytes asked for (`None`: it is no
/// longer the object `If-Match` named).
type Named = (String, u64, Option<Vec<u8>>);

async fn get_named(
    State(s): Shared_,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(path) = named_path(&s, &kind, &name) else {
        return refused(
            &s,
            StatusCode::BAD_REQUEST,
            "no such kind of named object, or a malformed name",
        );
    };
    let range = match headers
        .get(header::RANGE)
        .map(|v| v.to_str().ok().and_then(parse_range))
    {
        None => None,
        Some(Some(r)) => Some(r),
        Some(None) => {
            return refused(
                &s,
                StatusCode::RANGE_NOT_SATISFIABLE,
                "a Range must be bytes=START-[END]",
            )
        }
    };
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The open file is what is read: a replacement renamed over it meanwhile
    // does not change these bytes or their ETag.
    let read = blocking(move || -> io::Result<Option<Named>> {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        let tag = etag(&m);
        let total = m.len();
        if if_match.as_deref().is_some_and(|want| want != tag) {
            return Ok(Some((tag, total, None)));
        }
        let (start, end) = match range {
            None => (0, total.saturating_sub(1)),
            Some((start, _)) if start >= total => return Ok(Some((tag, total, Some(Vec::new())))),
            Some((start, end)) => (start, end.map_or(total - 1, |e| e.min(total - 1))),
        };
        let mut buf = Vec::with_capacity((end + 1 - start) as usize);
        io::Seek::seek(&mut f, io::SeekFrom::Start(start))?;
        f.take(end + 1 - start).read_to_end(&mut buf)?;
        Ok(Some((tag, total, Some(buf))))
    })
    .await
    .and_then(|r| r);
    let (tag, total, bytes) = match read {
        Ok(Some(r)) => r,
        Ok(None) => return text(StatusCode::NOT_FOUND, "no such object"),
        Err(e) => return internal("reading a named object", e),
    };
    let Some(bytes) = bytes else {
        return text(StatusCode::PRECONDITION_FAILED, "the object changed");
    };
    s.counters
        .bytes_out
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let common = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::ETAG, tag),
    ];
    match range {
        None => (StatusCode::OK, common, bytes).into_response(),
        Some((start, _)) if start >= total => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response(),
        Some((start, _)) => {
            let end = start + bytes.len() as u64 - 1;
            (
                StatusCode::PARTIAL_CONTENT,
                common,
                [(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{total}"),
                )],
                bytes,
            )
                .into_response()
        }
    }
}

async fn put_named(
    State(s): Shared_,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(path) = named_path(&s, &kind, &name) else {
        return refused(
            &s,
            StatusCode::BAD_REQUEST,
            "no such kind of named object, or a malformed name",
        );
    };
    let len = match body_length(&s, &headers) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let Ok(_permit) = s.writes.clone().try_acquire_owned() else {
        return busy(&s);
    };
    let disk = s.disk.clone();
    let written = pump_body(&s, body, len, move |next| -> io::Result<()> {
        let (mut scratch, mut file) = disk.scratch_beside(&path)?;
        let mut n = 0u64;
        while let Some(chunk) = next() {
            let chunk = chunk?;
            n += chunk.len() as u64;
            if n > len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("body longer than its Content-Length {len}"),
                ));
            }
            io::Write::write_all(&mut file, &chunk)?;
        }
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("body has {n} bytes, not its Content-Length {len}"),
            ));
        }
        drop(file);
        scratch.commit_to(&path)
    })
    .await;
    match written {
        Ok(Ok(())) => {
            s.stored(len);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            refused(&s, StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e)) => internal("writing a named object", e),
        Err(Cut(code, msg)) => refused(&s, code, msg),
    }
}
