//! An output as a reply's body: read whole within a shared budget, or
//! streamed from disk; lz4-compressed for a client that accepts it when
//! that pays, with recent frames kept in [`Shared::frames`].

use std::io;
use std::path::Path;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::http::{blocking, internal, text};
use super::shared::{Frame, Shared};

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

/// An output file as the response body: lz4 when asked for and it pays,
/// else streamed as it is.
pub(crate) async fn output(
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
