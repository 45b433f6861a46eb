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
//! - `POST /auth/exchange-token` and `GET /session/stats` (see [`super::auth`]).
//!
//! IDs must be 64 lower-case hex digits (400 otherwise). A PUT body is
//! hashed while it is written and kept only if it matches its output ID and
//! length (400); too large is 413, too slow 408, too many writes at once 503
//! with `Retry-After`.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::auth::{Grant, Refused, Session, SessionStats, GLOBAL};
use super::named::{get_named, put_named};
use super::Shared;
use crate::disk::{now_nanos, PutError};
use crate::remote::UploadJob;
use crate::wire::Id;

/// Outputs in this size range are sent lz4-compressed to a client that
/// accepts it, when that saves a tenth or more. Smaller ones gain nothing;
/// larger ones are streamed as they are (compressing them would hold them
/// in memory).
const LZ4_MIN: u64 = 512;
const LZ4_MAX: u64 = 8 << 20;

/// Outputs up to this size are read whole for a reply, on the request's
/// thread; larger ones are streamed from disk in chunks of [`CHUNK`].
const READ_WHOLE: u64 = 256 << 10;
const CHUNK: usize = 256 << 10;

/// Outputs up to this size may be read whole for a reply, while all such
/// reads in flight hold at most [`WHOLE_BUDGET`] bytes; larger ones, or
/// any beyond the budget, are streamed.
const WHOLE_MAX: u64 = 4 << 20;
/// Bytes of whole reads in flight at once (in [`WHOLE_UNIT`]s).
pub(crate) const WHOLE_BUDGET: u64 = 16 << 20;
pub(crate) const WHOLE_UNIT: u64 = 64 << 10;

/// Outputs up to this size are lz4-compressed on the request's thread
/// (quicker than a hop to the blocking pool and back); larger ones on the
/// blocking pool.
const INLINE_LZ4: u64 = 64 << 10;

/// A body may take `--body-timeout` plus one second per this many bytes.
const BODY_RATE: u64 = 256 << 10;

pub(crate) type Shared_ = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/action/{id}", get(get_action))
        .route("/output/{id}", get(get_output))
        .route("/gocacher/v1/info", get(info))
        .route("/auth/exchange-token", post(exchange))
        .route("/session/stats", get(session_stats))
        .route("/gocacher/v1/{kind}/{name}", get(get_named).put(put_named))
        .route("/{action}/{output}", put(put_entry))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            super::metrics::observe,
        ))
        .with_state(shared)
}

pub(crate) fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

pub(crate) fn refused(s: &Shared, status: StatusCode, msg: impl Into<String>) -> Response {
    s.metrics
        .refused
        .get_or_create(&super::metrics::CodeLabels {
            code: status.as_u16(),
        })
        .inc();
    let msg = msg.into();
    if s.cfg.verbose {
        eprintln!("gocacher serve: refused ({}): {msg}", status.as_u16());
    }
    text(status, msg)
}

pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Response {
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

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
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

/// Who is asking. Without auth, anyone, with a global writer's grant.
pub(crate) struct Caller(Option<Session>);

impl Caller {
    pub(crate) fn grant(&self) -> Grant {
        match &self.0 {
            Some(s) => s.grant.clone(),
            None => Grant {
                namespace: GLOBAL.to_string(),
                write: true,
            },
        }
    }

    /// Counts on the session's stats (`GET /session/stats`).
    pub(crate) fn count(
        &self,
        counter: impl Fn(&SessionStats) -> &std::sync::atomic::AtomicU64,
        n: u64,
    ) {
        if let Some(s) = &self.0 {
            counter(&s.stats).fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Handlers take the caller as an argument; without a valid token (when
/// auth is on) the request ends here with 401.
impl axum::extract::FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Arc<Shared>,
    ) -> Result<Caller, Response> {
        caller(s, &parts.headers).map_err(|r| *r)
    }
}

/// The caller of a request: its Bearer token's session, or 401 when auth
/// is on and the token is missing, unknown or expired.
fn caller(s: &Shared, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let Some(auth) = &s.auth else {
        return Ok(Caller(None));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match token.and_then(|t| auth.session(t.trim())) {
        Some(session) => Ok(Caller(Some(session))),
        None => {
            auth.failures.inc();
            let mut r = refused(
                s,
                StatusCode::UNAUTHORIZED,
                "a valid Bearer token is needed",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(Box::new(r))
        }
    }
}

/// gocached's exchange: `{"jwt": ...}` in, a session token out.
async fn exchange(State(s): Shared_, body: Body) -> Response {
    #[derive(serde::Deserialize)]
    struct Request {
        jwt: String,
    }
    let Some(auth) = &s.auth else {
        return text(StatusCode::NOT_FOUND, "this server has no auth");
    };
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return refused(
            &s,
            StatusCode::BAD_REQUEST,
            "the request body is unreadable or over 64 KiB",
        );
    };
    let Ok(req) = serde_json::from_slice::<Request>(&bytes) else {
        return refused(&s, StatusCode::BAD_REQUEST, "expected {\"jwt\": \"...\"}");
    };
    match auth.exchange(&req.jwt).await {
        Ok((token, ttl, grant)) => {
            let scope = if grant.is_global() {
                "global:write".to_string()
            } else {
                format!("global:read {}:write", grant.namespace)
            };
            axum::Json(serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl.as_secs(),
                "scope": scope,
            }))
            .into_response()
        }
        Err(Refused(why)) => refused(&s, StatusCode::UNAUTHORIZED, why),
    }
}

/// The caller's session: its namespace, whether it writes, its counters.
async fn session_stats(State(s): Shared_, who: Caller) -> Response {
    if s.auth.is_none() {
        return text(
            StatusCode::NOT_FOUND,
            "this server has no auth, so no sessions",
        );
    }
    let Some(session) = &who.0 else {
        return text(StatusCode::NOT_FOUND, "no session");
    };
    let mut v = session.stats.json();
    v["namespace"] = session.grant.namespace.clone().into();
    v["write"] = session.grant.write.into();
    axum::Json(v).into_response()
}

async fn get_action(
    State(s): Shared_,
    who: Caller,
    UrlPath(id): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(action) = parse_id(&id) else {
        return refused(&s, StatusCode::BAD_REQUEST, BAD_ID);
    };
    who.count(|c| &c.gets, 1);
    let stores = match s.reading(&who.grant()) {
        Ok(d) => d,
        Err(e) => return internal("opening a namespace", e),
    };
    // On this thread, not the blocking pool: an entry is one small file
    // read and a stat, in the page cache, and under load (16 builds on two
    // cores) every hand-off to another thread waits for the scheduler.
    let local = (|| -> io::Result<_> {
        for d in stores {
            if let Some(e) = d.get(&action)? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    })();
    let local = match local {
        Ok(found) => found,
        Err(e) => return internal("reading the store", e),
    };
    // A local miss is looked up in the bucket, verified and stored here.
    let found = match (local, &s.remote) {
        (Some(e), _) => Some(e),
        (None, Some(b)) => b.fetch(action).await,
        (None, None) => None,
    };
    let Some(entry) = found else {
        s.metrics.misses.inc_by(1);
        who.count(|c| &c.misses, 1);
        return text(StatusCode::NOT_FOUND, "miss");
    };
    s.metrics.hits.inc_by(1);
    who.count(|c| &c.hits, 1);
    who.count(|c| &c.bytes_out, entry.size);
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
    who: Caller,
    UrlPath(id): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(output_id) = parse_id(&id) else {
        return refused(&s, StatusCode::BAD_REQUEST, BAD_ID);
    };
    let stores = match s.reading(&who.grant()) {
        Ok(d) => d,
        Err(e) => return internal("opening a namespace", e),
    };
    for d in stores {
        let path = d.output_path(&output_id);
        match std::fs::metadata(&path) {
            Ok(m) => {
                who.count(|c| &c.bytes_out, m.len());
                return output(&s, &path, m.len(), &method, &headers).await;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return internal("reading the store", e),
        }
    }
    text(StatusCode::NOT_FOUND, "no such output")
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
    // Compression holds the output and its frame in memory: a few at a
    // time, and the rest go out as they are, so memory stays bounded
    // whatever the number of clients. Outputs are named by their hash, so
    // a frame made for one reply is right for every later one.
    if accepts_lz4(headers) && (LZ4_MIN..=LZ4_MAX).contains(&size) {
        let frame = match s.frames.get(path).await {
            Some(f) => Some(f),
            None => match s.compressing.try_acquire() {
                Err(_) => None,
                Ok(_permit) => {
                    let p = path.to_owned();
                    let compressed = if size <= INLINE_LZ4 {
                        compress(&p)
                    } else {
                        blocking(move || compress(&p)).await.and_then(|r| r)
                    };
                    match compressed {
                        Ok((raw_len, frame)) => {
                            let f = if (frame.len() as u64) < raw_len - raw_len / 10 {
                                Frame::Lz4(raw_len, Bytes::from(frame))
                            } else {
                                Frame::Raw
                            };
                            s.frames.insert(path.to_owned(), f.clone()).await;
                            Some(f)
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return text(StatusCode::NOT_FOUND, "evicted")
                        }
                        Err(e) => return internal("reading an output", e),
                    }
                }
            },
        };
        if let Some(Frame::Lz4(raw_len, frame)) = frame {
            s.metrics.bytes_out.inc_by(frame.len() as u64);
            return (
                StatusCode::OK,
                [octets, (header::CONTENT_ENCODING, "lz4")],
                [("x-uncompressed-length", raw_len.to_string())],
                frame,
            )
                .into_response();
        }
    }
    // A small output is read in one go; a larger one is streamed in
    // chunks big enough that each blocking read moves a lot, and small
    // enough that memory stays flat whatever the object size.
    let body = if size <= READ_WHOLE {
        // On this thread, as the entry was.
        match whole_body(std::fs::read(path), size) {
            Ok(body) => body,
            Err(refused) => return refused,
        }
    } else if let Some(_whole) = whole_read(s, size) {
        // Up to a few MiB, one read on the blocking pool and one write to
        // the socket beat a stream of chunks, each its own hand-off; the
        // bytes held are bounded by [`WHOLE_BUDGET`].
        let p = path.to_owned();
        match whole_body(
            blocking(move || std::fs::read(p)).await.and_then(|r| r),
            size,
        ) {
            Ok(body) => body,
            Err(refused) => return refused,
        }
    } else {
        match tokio::fs::File::open(path).await {
            Ok(f) => Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, CHUNK)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return text(StatusCode::NOT_FOUND, "evicted")
            }
            Err(e) => return internal("reading an output", e),
        }
    };
    s.metrics.bytes_out.inc_by(size);
    (
        StatusCode::OK,
        [octets],
        [(header::CONTENT_LENGTH, size.to_string())],
        body,
    )
        .into_response()
}

/// An output read whole as a reply's body, or the reply for why not (once
/// per request: not worth boxing).
#[allow(clippy::result_large_err)]
fn whole_body(read: io::Result<Vec<u8>>, size: u64) -> Result<Body, Response> {
    match read {
        Ok(bytes) if bytes.len() as u64 == size => Ok(Body::from(bytes)),
        Ok(_) => Err(internal("reading an output", "it changed size while read")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(text(StatusCode::NOT_FOUND, "evicted"))
        }
        Err(e) => Err(internal("reading an output", e)),
    }
}

/// A share of [`WHOLE_BUDGET`] for reading an output of `size` whole, if
/// it is small enough and the budget has room; `None`: stream it.
fn whole_read(s: &Shared, size: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
    if size > WHOLE_MAX {
        return None;
    }
    let units = size.div_ceil(WHOLE_UNIT) as u32;
    s.whole_reads.try_acquire_many(units).ok()
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

/// How an output goes to a client that accepts lz4.
#[derive(Clone)]
pub(crate) enum Frame {
    /// Its length and its bytes as one lz4 frame.
    Lz4(u64, Bytes),
    /// Compression does not pay: sent as it is.
    Raw,
}

impl Frame {
    /// Its share of the frame cache, in bytes.
    pub(crate) fn weight(&self) -> u32 {
        let held = match self {
            Frame::Lz4(_, b) => b.len(),
            Frame::Raw => 0,
        };
        u32::try_from(held + 128).unwrap_or(u32::MAX)
    }
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
pub(crate) struct Cut(pub(crate) StatusCode, pub(crate) String);

/// Streams a request body of `len` bytes to `sink` on a blocking thread,
/// within the body deadline. The sink's result, or why the body was cut.
pub(crate) async fn pump_body<T: Send + 'static>(
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
                s.metrics.bytes_in.inc_by(chunk.len() as u64);
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
pub(crate) fn body_length(s: &Shared, headers: &HeaderMap) -> Result<u64, Box<Response>> {
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

pub(crate) fn busy(s: &Shared) -> Response {
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
    who: Caller,
    UrlPath((a, o)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (Some(action), Some(output_id)) = (parse_id(&a), parse_id(&o)) else {
        return refused(&s, StatusCode::BAD_REQUEST, BAD_ID);
    };
    let grant = who.grant();
    if !grant.write {
        who.count(|c| &c.refused, 1);
        return refused(&s, StatusCode::FORBIDDEN, "this token may only read");
    }
    let len = match body_length(&s, &headers) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let Ok(_permit) = s.writes.clone().try_acquire_owned() else {
        return busy(&s);
    };
    let disk = match s.space(&grant.namespace) {
        Ok(d) => d,
        Err(e) => return internal("opening a namespace", e),
    };
    let target = disk.clone();
    let written = pump_body(&s, body, len, move |next| {
        disk.write_output(&output_id, len, next)?;
        disk.write_action(&action, &output_id, len, now_nanos())
    })
    .await;
    match written {
        Ok(Ok(())) => {
            s.stored(len);
            // With a bucket behind the store, a PUT is acknowledged once the
            // bucket has it: another server (or this one's replacement)
            // serves it from there.
            // Only the global namespace lives in the bucket.
            if let (Some(b), true) = (&s.remote, grant.is_global()) {
                let job = UploadJob {
                    action,
                    output: output_id,
                    size: len,
                    put_time_nanos: now_nanos(),
                    path: target.output_path(&output_id),
                };
                if !b.put_entry(job).await {
                    return refused(
                        &s,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the bucket did not take it",
                    );
                }
            }
            s.metrics.puts.inc_by(1);
            who.count(|c| &c.puts, 1);
            who.count(|c| &c.bytes_in, len);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(PutError::Io { source, .. })) if disk_full(&source) => store_full(&s),
        Ok(Err(e @ PutError::Io { .. })) => internal("writing the store", e),
        Ok(Err(e)) => refused(&s, StatusCode::BAD_REQUEST, e.to_string()),
        Err(Cut(code, msg)) => refused(&s, code, msg),
    }
}

fn disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded
}

/// When the store's disk was last said to be full (seconds since the epoch).
static FULL_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// 507 for a PUT the store had no room for (its temp file is gone; nothing
/// was kept); a line at most once a minute while that lasts.
pub(crate) fn store_full(s: &Shared) -> Response {
    let now = (now_nanos() / 1_000_000_000) as u64;
    let last = FULL_LOGGED.load(Ordering::Relaxed);
    if now >= last + 60
        && FULL_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        eprintln!(
            "gocacher serve: the store's disk {} is full: uploads get 507 and are not kept until space frees (reads go on)",
            s.disk.root().display()
        );
    }
    let mut r = refused(
        s,
        StatusCode::INSUFFICIENT_STORAGE,
        "the server's disk is full: nothing was kept",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}
