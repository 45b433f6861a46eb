//! The HTTP plumbing every handler shares: plain-text replies and refusals,
//! who the caller is, request bodies streamed to disk within their deadline,
//! and the request log and metrics around each request.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::auth::{Grant, Session, SessionStats, GLOBAL};
use super::metrics::{CodeLabels, EndpointLabels, RequestLabels};
use super::shared::Shared;
use crate::wire::now_nanos;

/// A body may take `--body-timeout` plus one second per this many bytes.
const BODY_RATE: u64 = 256 << 10;

pub(crate) type SharedState = State<Arc<Shared>>;

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
        .get_or_create(&CodeLabels {
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

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Who is asking. Without auth, anyone, with a global writer's grant.
pub(crate) struct Caller(pub(crate) Option<Session>);

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

/// Counts and times every request; logs it with `--verbose` as
/// `STATUS METHOD PATH MILLISECONDS`.
pub async fn observe(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |m| m.as_str())
        .to_string();
    let method = method_label(req.method()).to_string();
    let path = s.cfg.verbose.then(|| req.uri().path().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let code = resp.status().as_u16();
    s.metrics
        .latency
        .get_or_create(&EndpointLabels {
            endpoint: endpoint.clone(),
        })
        .observe(took.as_secs_f64());
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            endpoint,
            code,
        })
        .inc();
    if let Some(path) = path {
        eprintln!(
            "gocacher serve: {code} {method} {path} {:.1}ms",
            took.as_secs_f64() * 1000.0
        );
    }
    resp
}

/// A request method as the metrics name it: the standard ones by their
/// names, any other as `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}
