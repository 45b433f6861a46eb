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
//! - With `--modproxy`, `GET /mod/...`: the module proxy ([`super::modproxy`]).
//! - `GET /healthz` and `GET /readyz`, for load balancers, outside these
//!   routes' auth and metrics ([`super::health`]).
//!
//! IDs must be 64 lower-case hex digits (400 otherwise). A PUT body is
//! hashed while it is written and kept only if it matches its output ID and
//! length (400); too large is 413, too slow 408, too many writes at once 503
//! with `Retry-After`.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use super::auth::Unauthorized;
use super::http::{
    body_length, busy, internal, observe, pump_body, refused, store_full, text, Caller, Cut,
    SharedState,
};
use super::named::{get_named, put_named};
use super::reply::{frame_after_put, output};
use super::shared::Shared;
use crate::local::PutError;
use crate::remote::UploadJob;
use crate::wire::now_nanos;
use crate::wire::Id;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut routes = Router::new();
    if shared.modproxy.is_some() {
        routes = routes.route("/mod/{*path}", get(super::modproxy::serve_mod));
    }
    routes
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
            observe,
        ))
        .with_state(shared)
}

/// An ID as the API spells it: exactly 64 lower-case hex digits.
fn parse_id(s: &str) -> Option<Id> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Id::from_hex(s)
}

const BAD_ID: &str = "IDs are 64 lower-case hex digits";

async fn info() -> Response {
    axum::Json(serde_json::json!({
        "server": "gocacher",
        "version": env!("CARGO_PKG_VERSION"),
        "named": true,
    }))
    .into_response()
}

/// gocached's exchange: `{"jwt": ...}` in, a session token out.
async fn exchange(State(s): SharedState, body: Body) -> Response {
    #[derive(serde::Deserialize)]
    struct Exchange {
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
    let Ok(req) = serde_json::from_slice::<Exchange>(&bytes) else {
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
        Err(Unauthorized(why)) => refused(&s, StatusCode::UNAUTHORIZED, why),
    }
}

/// The caller's session: its namespace, whether it writes, its counters.
async fn session_stats(State(s): SharedState, who: Caller) -> Response {
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
    State(s): SharedState,
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
    State(s): SharedState,
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

async fn put_entry(
    State(s): SharedState,
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
            frame_after_put(&s, target.output_path(&output_id), len);
            // With a bucket behind the store, a PUT is acknowledged once the
            // bucket has it (another server, or this one's replacement,
            // serves it from there), or, when the bucket does not take it,
            // once it waits for the bucket in the store (see bucket.rs).
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

/// `GET /metrics` on the metrics port.
pub async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    if let Some(a) = &s.auth {
        s.metrics.sessions.set(a.sessions() as i64);
    }
    if let Some(b) = &s.remote {
        b.export(&s.metrics);
    }
    if let Some(mp) = &s.modproxy {
        mp.export(&s.metrics);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
