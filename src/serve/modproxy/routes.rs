//! `GET /mod/...`: the handler, and how each answer goes out. Kept files
//! are streamed from disk; a client never waits on anything but the one
//! fetch of what it asked for.
//!
//! Statuses: 200 with the answer; 400 for a malformed path or version;
//! 404 (or the upstream's 410) for what neither this server nor the
//! upstream has, with the upstream's words; 502 when the upstream failed
//! and nothing kept answers, naming the upstream. Go reads 404 and 410 as
//! "not here" and falls through to the next GOPROXY entry after `,`; after
//! `|` it falls through on any error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::path::{self, Ask, Ext, SumdbKind};
use super::upstream::UpstreamError;
use super::ModProxy;
use crate::serve::http::{refused, text, Caller, SharedState};
use crate::serve::shared::Shared;

/// Files up to this size are read whole for a reply; larger ones are
/// streamed in chunks of [`CHUNK`].
const READ_WHOLE: u64 = 64 << 10;
const CHUNK: usize = 256 << 10;

/// `GET /mod/{*path}`. Every valid token reads: the proxy writes only what
/// it fetched itself.
pub(crate) async fn serve_mod(State(s): SharedState, who: Caller, uri: Uri) -> Response {
    let Some(mp) = s.modproxy.clone() else {
        return text(
            StatusCode::NOT_FOUND,
            "this server has no module proxy (--modproxy)",
        );
    };
    let raw = uri.path().strip_prefix("/mod/").unwrap_or("");
    let ask = match path::parse(raw) {
        Ok(a) => a,
        Err(r) if r.not_found => return refused(&s, StatusCode::NOT_FOUND, r.why),
        Err(r) => return refused(&s, StatusCode::BAD_REQUEST, r.why),
    };
    who.count(|c| &c.gets, 1);
    let resp = match ask.kept_at() {
        Some(rel) => immutable(&s, &mp, &ask, &rel).await,
        None => mutable(&s, &mp, &ask).await,
    };
    if resp.status().is_success() {
        if let Some(n) = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            who.count(|c| &c.bytes_out, n);
            s.metrics.bytes_out.inc_by(n);
        }
    }
    resp
}

fn content_type(ask: &Ask) -> &'static str {
    match ask {
        Ask::Version { ext, .. } => ext.content_type(),
        Ask::Latest { .. } => Ext::Info.content_type(),
        Ask::List { .. } => "text/plain; charset=utf-8",
        Ask::Sumdb {
            kind: SumdbKind::Tile,
            ..
        } => "application/octet-stream",
        Ask::Sumdb { rest, .. } if rest.starts_with("tile/") => "application/octet-stream",
        Ask::Sumdb { .. } => "text/plain; charset=utf-8",
    }
}

async fn immutable(s: &Shared, mp: &Arc<ModProxy>, ask: &Ask, rel: &str) -> Response {
    // A zip's stored copy from the bucket, with no need of the zip.
    if let Ask::Version { ext: Ext::Zip, .. } = ask {
        if let Some((f, len)) = mp.stored_alone(rel).await {
            return send_file(tokio::fs::File::from_std(f), len, content_type(ask)).await;
        }
    }
    // Three times at most: a file trimmed between its lookup and its
    // opening is fetched again, and one changed since it was last checked
    // is checked again.
    for _ in 0..3 {
        let len = match mp.kept(ask, rel).await {
            Ok(n) => n,
            Err(e) => return upstream_failed(s, &e),
        };
        match std::fs::File::open(mp.keep.path(rel)) {
            Ok(f) if !mp.keep.unchanged(rel, &f) => mp.forget(rel).await,
            Ok(f) => {
                mp.keep.mark_used(rel, &f);
                let (f, len) = match ask {
                    Ask::Version { ext: Ext::Zip, .. } => mp.zip_to_send(rel, f, len).await,
                    _ => (f, len),
                };
                return send_file(tokio::fs::File::from_std(f), len, content_type(ask)).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => mp.forget(rel).await,
            Err(e) => return crate::serve::http::internal("reading a kept module file", e),
        }
    }
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{rel} was removed from the server's disk while being sent; try again"),
    )
}

async fn send_file(mut f: tokio::fs::File, len: u64, content_type: &'static str) -> Response {
    let body = if len <= READ_WHOLE {
        let mut buf = Vec::with_capacity(len as usize);
        if let Err(e) = tokio::io::AsyncReadExt::read_to_end(&mut f, &mut buf).await {
            return crate::serve::http::internal("reading a kept module file", e);
        }
        if buf.len() as u64 != len {
            return crate::serve::http::internal(
                "reading a kept module file",
                "its length changed",
            );
        }
        Body::from(buf)
    } else {
        let part = tokio::io::AsyncReadExt::take(f, len);
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(part, CHUNK))
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response()
}

async fn mutable(s: &Shared, mp: &ModProxy, ask: &Ask) -> Response {
    let got = mp.fresh(ask).await;
    let body: Bytes = match got {
        Ok(b) => b,
        Err(e) => {
            let kept = match &*e {
                UpstreamError::NotFound(_) => None,
                _ => mp.fallback(ask).await,
            };
            match kept {
                Some(kept) => {
                    eprintln!("gocacher serve: modproxy: {e}; answering from what is kept");
                    kept
                }
                None => return upstream_failed(s, &e),
            }
        }
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type(ask).to_string()),
            (header::CONTENT_LENGTH, body.len().to_string()),
        ],
        body,
    )
        .into_response()
}

fn upstream_failed(s: &Shared, e: &UpstreamError) -> Response {
    match e {
        UpstreamError::NotFound(why) => text(StatusCode::NOT_FOUND, why.clone()),
        why => {
            if s.cfg.verbose {
                eprintln!("gocacher serve: modproxy: {why}; answering 502");
            }
            text(
                StatusCode::BAD_GATEWAY,
                format!("gocacher serve --modproxy: not kept here, and {why}"),
            )
        }
    }
}
