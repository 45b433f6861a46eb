//! Manifests and packs on `gocacher serve`: `GET`/`PUT
//! /gocacher/v1/<manifests|packs>/<hash>`, whole or by `Range` while the
//! `ETag` is `If-Match` (docs/FORMAT.md, "Cache server"). Each namespace
//! keeps its own under `<root>/named/`; a read looks in the caller's
//! namespace first, then the global one. With a bucket behind the server,
//! the global namespace's live in the bucket, read and written straight
//! through, so that every server sharing it sees the newest.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::bucket::Bucket;
use super::http::{
    blocking, body_length, busy, internal, pump_body, refused, text, Caller, Cut, SharedState,
};
use super::shared::Shared;
use crate::remote::store::{Body as StoreBody, Fetched, Ranged, Source};

/// The kinds of named object, each a directory under `<root>/named`.
pub(crate) const NAMED_KINDS: [&str; 2] = ["manifests", "packs"];

/// Their directories under a store's root, which trim walks with the
/// entries' shards.
pub(crate) const NAMED_DIRS: [&str; 2] = ["named/manifests", "named/packs"];

/// Whether `kind` and `name` are those of a named object.
fn well_formed(kind: &str, name: &str) -> bool {
    NAMED_KINDS.contains(&kind)
        && name.len() == 32
        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The file of a named object in a store.
fn named_path(store: &Path, kind: &str, name: &str) -> PathBuf {
    store.join("named").join(kind).join(name)
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

/// What a [`read_local`] found: the object's ETag and length, and what to
/// send of it.
struct Named {
    tag: String,
    total: u64,
    send: Part,
}

/// The part of a named object a reply carries.
enum Part {
    /// It is no longer the object `If-Match` named.
    Changed,
    /// The range starts past its end.
    Past,
    /// A small object's bytes, read whole.
    Bytes(Vec<u8>),
    /// `len` bytes of the opened file, from `start`, where it is at.
    File {
        file: std::fs::File,
        start: u64,
        len: u64,
    },
}

pub(crate) async fn get_named(
    State(s): SharedState,
    who: Caller,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !well_formed(&kind, &name) {
        return refused(
            &s,
            StatusCode::BAD_REQUEST,
            "no such kind of named object, or a malformed name",
        );
    }
    let grant = who.grant();
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
    // The caller's namespace first, then the global one.
    let own = match s.written_space(&grant.namespace) {
        Ok(d) => d.filter(|_| !grant.is_global()),
        Err(e) => return internal("opening a namespace", e),
    };
    if let Some(store) = own {
        let path = named_path(store.root(), &kind, &name);
        let if_match_c = if_match.clone();
        match blocking(move || read_local(&path, range, if_match_c)).await {
            Ok(Ok(None)) => {}
            read => return respond(&s, read, range),
        }
    }
    if let Some(b) = s.remote.as_ref().filter(|b| b.remote.may_read()) {
        let key = b.named_key(&kind, &name);
        return from_bucket(&s, b, &key, range, if_match.as_deref()).await;
    }
    let path = named_path(s.disk.root(), &kind, &name);
    let read = blocking(move || read_local(&path, range, if_match)).await;
    respond(&s, read, range)
}

/// Opens a named object's file and says what of it to send. The open file
/// is what is sent: a replacement renamed over it, or a trim that unlinks
/// it, meanwhile changes neither the bytes nor their ETag (nothing ever
/// rewrites a named object in place). `None`: there is none.
fn read_local(
    path: &Path,
    range: Option<(u64, Option<u64>)>,
    if_match: Option<String>,
) -> io::Result<Option<Named>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let m = file.metadata()?;
    let tag = etag(&m);
    let total = m.len();
    mark_used(&file, &m);
    let named = |send| {
        Ok(Some(Named {
            tag: tag.clone(),
            total,
            send,
        }))
    };
    if if_match.as_deref().is_some_and(|want| want != tag) {
        return named(Part::Changed);
    }
    let (start, len) = match range {
        None => (0, total),
        Some((start, _)) if start >= total => return named(Part::Past),
        Some((start, end)) => (start, end.map_or(total, |e| e.min(total - 1) + 1) - start),
    };
    io::Seek::seek(&mut file, io::SeekFrom::Start(start))?;
    if len <= READ_WHOLE {
        let mut buf = Vec::with_capacity(len as usize);
        (&mut file).take(len).read_to_end(&mut buf)?;
        if buf.len() as u64 != len {
            return Err(io::Error::other("the object is shorter than it was"));
        }
        return named(Part::Bytes(buf));
    }
    named(Part::File { file, start, len })
}

/// Records a read of a named object for trim (least recently used first)
/// in its access time, at most once per [`USE_REFRESH`]: its modification
/// time is its ETag, which a read must not change.
fn mark_used(file: &std::fs::File, m: &std::fs::Metadata) {
    let now = std::time::SystemTime::now();
    let used = crate::disk::last_used(m);
    if now.duration_since(used).unwrap_or_default() > USE_REFRESH {
        let _ = file.set_times(std::fs::FileTimes::new().set_accessed(now));
    }
}

/// How stale a named object's last use may get before a read refreshes it.
const USE_REFRESH: std::time::Duration = std::time::Duration::from_secs(3600);

/// Objects (or ranges) up to this size are read whole on the blocking
/// thread that opens them; larger ones are streamed in chunks of
/// [`CHUNK`], so that memory stays flat whatever the object size and the
/// number of readers.
const READ_WHOLE: u64 = 64 << 10;
const CHUNK: usize = 256 << 10;

/// The reply for a [`read_local`].
fn respond(
    s: &Shared,
    read: io::Result<io::Result<Option<Named>>>,
    range: Option<(u64, Option<u64>)>,
) -> Response {
    let Named { tag, total, send } = match read.and_then(|r| r) {
        Ok(Some(r)) => r,
        Ok(None) => return text(StatusCode::NOT_FOUND, "no such object"),
        Err(e) => return internal("reading a named object", e),
    };
    let (start, len, body) = match send {
        Part::Changed => return text(StatusCode::PRECONDITION_FAILED, "the object changed"),
        Part::Past => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{total}"))],
            )
                .into_response()
        }
        Part::Bytes(b) => (range.map_or(0, |r| r.0), b.len() as u64, Body::from(b)),
        Part::File { file, start, len } => {
            let part = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
            let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(part, CHUNK));
            (start, len, body)
        }
    };
    s.metrics.bytes_out.inc_by(len);
    let common = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::ETAG, tag),
        (header::CONTENT_LENGTH, len.to_string()),
    ];
    match range {
        None => (StatusCode::OK, common, body).into_response(),
        Some(_) => (
            StatusCode::PARTIAL_CONTENT,
            common,
            [(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{total}", start + len - 1),
            )],
            body,
        )
            .into_response(),
    }
}

pub(crate) async fn put_named(
    State(s): SharedState,
    who: Caller,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !well_formed(&kind, &name) {
        return refused(
            &s,
            StatusCode::BAD_REQUEST,
            "no such kind of named object, or a malformed name",
        );
    }
    let grant = who.grant();
    if !grant.write {
        return refused(&s, StatusCode::FORBIDDEN, "this token may only read");
    }
    let disk = match s.space(&grant.namespace) {
        Ok(d) => d,
        Err(e) => return internal("opening a namespace", e),
    };
    let path = named_path(disk.root(), &kind, &name);
    let len = match body_length(&s, &headers) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let Ok(_permit) = s.writes.clone().try_acquire_owned() else {
        return busy(&s);
    };
    let written = pump_body(&s, body, len, move |next| -> io::Result<PathBuf> {
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
        scratch.commit_to(&path)?;
        Ok(path)
    })
    .await;
    match written {
        Ok(Ok(path)) => {
            s.stored(len);
            if let (Some(b), true) = (&s.remote, grant.is_global()) {
                let key = b.named_key(&kind, &name);
                if let Err(e) = b.remote.write_named(&key, Source::File(&path, len)).await {
                    return refused(
                        &s,
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the bucket did not take it: {e}"),
                    );
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            refused(&s, StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e)) => internal("writing a named object", e),
        Err(Cut(code, msg)) => refused(&s, code, msg),
    }
}

/// A named object straight from the bucket (`--remote`): the bucket, not
/// this server's disk, holds the newest manifest and pack of a scope when
/// several servers share it.
async fn from_bucket(
    s: &Shared,
    b: &Bucket,
    key: &str,
    range: Option<(u64, Option<u64>)>,
    if_match: Option<&str>,
) -> Response {
    let octets = (header::CONTENT_TYPE, "application/octet-stream".to_string());
    let bad_gateway = |e: &dyn std::fmt::Display| {
        eprintln!("gocacher serve: reading {key} from the bucket: {e}");
        text(StatusCode::BAD_GATEWAY, "the bucket did not answer")
    };
    let Some((start, end)) = range else {
        return match b.remote.read_named(key).await {
            Ok(Fetched::Missing) => text(StatusCode::NOT_FOUND, "no such object"),
            Ok(Fetched::Found { body, wire_len, .. }) => {
                s.metrics.bytes_out.inc_by(wire_len);
                (
                    StatusCode::OK,
                    [octets, (header::CONTENT_LENGTH, wire_len.to_string())],
                    stream(body),
                )
                    .into_response()
            }
            Err(e) => bad_gateway(&e),
        };
    };
    match b.remote.read_range(key, start, end, if_match).await {
        Ok(Ranged::Missing) => text(StatusCode::NOT_FOUND, "no such object"),
        Ok(Ranged::Changed) => text(StatusCode::PRECONDITION_FAILED, "the object changed"),
        Ok(Ranged::Past) => text(StatusCode::RANGE_NOT_SATISFIABLE, "past the end"),
        Ok(Ranged::Found { body, etag, total }) => {
            let Some(total) = total else {
                return bad_gateway(&"no object length in the reply");
            };
            let last = end.map_or(total.saturating_sub(1), |e| e.min(total.saturating_sub(1)));
            let mut resp = (
                StatusCode::PARTIAL_CONTENT,
                [
                    octets,
                    (
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{last}/{total}"),
                    ),
                    (header::CONTENT_LENGTH, (last + 1 - start).to_string()),
                ],
                stream(body),
            )
                .into_response();
            if let Some(v) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
        Err(e) => bad_gateway(&e),
    }
}

/// A store's body as a response body.
fn stream(body: StoreBody) -> Body {
    Body::from_stream(futures_util::stream::unfold(body, |mut b| async move {
        b.next().await.map(|r| (r.map_err(io::Error::other), b))
    }))
}
