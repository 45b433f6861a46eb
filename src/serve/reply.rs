//! An output as a reply's body, read whole within a shared budget or
//! streamed from disk; for a client that accepts lz4, its frame, kept on
//! disk beside it (made when it is stored, or by its first reply).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::http::{blocking, internal, text};
use super::shared::Shared;

/// Outputs in this size range are sent lz4-compressed to a client that
/// accepts it, when that saves a tenth or more. Smaller ones gain nothing;
/// larger ones are streamed as they are (compressing them would hold them
/// in memory).
const LZ4_MIN: u64 = 512;
const LZ4_MAX: u64 = 8 << 20;

/// Files up to this size are read on the request's thread (page-cache
/// reads, quicker than a hop to the blocking pool and back); larger ones
/// on the blocking pool.
const READ_INLINE: u64 = 256 << 10;
/// Files over this size, or over the budget's room, are streamed in chunks
/// of [`CHUNK`].
const WHOLE_MAX: u64 = 4 << 20;
const CHUNK: usize = 256 << 10;
/// Files up to this size are read whole without the budget: the heap
/// holds them, and malloc reuses their memory.
const SMALL: u64 = 32 << 10;

/// Whole reads held by replies, from the read until the reply is sent,
/// are counted in these units against `--reply-memory`.
pub(crate) const WHOLE_UNIT: u64 = 64 << 10;

/// Outputs up to this size are lz4-compressed on the request's thread;
/// larger ones on the blocking pool.
const INLINE_LZ4: u64 = 64 << 10;
/// A frame's block: the most of a file compressed at once.
const BLOCK: usize = 64 << 10;

/// An output file as the response body: its lz4 frame when asked for and
/// it pays, else the file as it is.
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
    if accepts_lz4(headers) && (LZ4_MIN..=LZ4_MAX).contains(&size) {
        if let Some((frame_len, body)) = frame(s, path, size).await {
            s.metrics.bytes_out.inc_by(frame_len);
            return (
                StatusCode::OK,
                [octets, (header::CONTENT_ENCODING, "lz4")],
                [
                    (header::CONTENT_LENGTH, frame_len.to_string()),
                    (
                        header::HeaderName::from_static("x-uncompressed-length"),
                        size.to_string(),
                    ),
                ],
                body,
            )
                .into_response();
        }
    }
    let body = match file_body(s, path, size).await {
        Ok(body) => body,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return text(StatusCode::NOT_FOUND, "evicted")
        }
        Err(e) => return internal("reading an output", e),
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

/// Where an output's lz4 frame is kept: beside it, `<hex>-z` for
/// `<hex>-d`. An empty file there says compressing it does not pay. Frames
/// are trimmed like any file of the store; one missing is made again.
fn frame_path(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.strip_suffix("-d").unwrap_or(&name);
    output.with_file_name(format!("{stem}-z"))
}

/// The output's lz4 frame, its length and body; `None`: send it as it is
/// (compressing does not pay, or every compression slot is busy, or the
/// frame could not be read).
async fn frame(s: &Shared, path: &Path, size: u64) -> Option<(u64, Body)> {
    let fpath = frame_path(path);
    match std::fs::metadata(&fpath) {
        Ok(m) if m.len() == 0 => None,
        Ok(m) => file_body(s, &fpath, m.len())
            .await
            .ok()
            .map(|b| (m.len(), b)),
        Err(_) => {
            // Not made yet (or trimmed): made here, as at PUT. The frame is
            // sent from memory, and its compression slot is held until it
            // is, so frames in memory stay bounded whatever the clients.
            let permit = s.compressing.clone().try_acquire_owned().ok()?;
            let frame = if size <= INLINE_LZ4 {
                keep_frame(path, &fpath)
            } else {
                let (p, f) = (path.to_owned(), fpath);
                blocking(move || keep_frame(&p, &f)).await.ok()?
            }?;
            let len = frame.len() as u64;
            Some((len, Body::from(Bytes::from_owner(Slotted(frame, permit)))))
        }
    }
}

/// After a PUT: the output's lz4 frame made and kept, in the background,
/// if a compression slot is free (else its first reply makes it).
pub(crate) fn frame_after_put(s: &Arc<Shared>, path: PathBuf, size: u64) {
    if !(LZ4_MIN..=LZ4_MAX).contains(&size) {
        return;
    }
    let fpath = frame_path(&path);
    if std::fs::symlink_metadata(&fpath).is_ok() {
        return;
    }
    let Ok(permit) = s.compressing.clone().try_acquire_owned() else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        keep_frame(&path, &fpath);
        drop(permit);
    });
}

/// Compresses an output and keeps its frame at `fpath` (an empty file if
/// it does not pay); the frame if it pays. A failure to keep it costs only
/// the next reply's compression, so it is not reported.
fn keep_frame(path: &Path, fpath: &Path) -> Option<Vec<u8>> {
    let frame = match start_pays(path).ok()? {
        true => {
            let (raw_len, frame) = compress(path).ok()?;
            ((frame.len() as u64) < raw_len - raw_len / 10).then_some(frame)
        }
        false => None,
    };
    let _ = crate::disk::write_file(fpath, frame.as_deref().unwrap_or_default());
    frame
}

/// A frame in memory as a body, holding its compression slot until sent.
struct Slotted(Vec<u8>, #[allow(dead_code)] OwnedSemaphorePermit);

impl AsRef<[u8]> for Slotted {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A file of `size` bytes as a body: read whole (small, or within the
/// budget) or streamed.
async fn file_body(s: &Shared, path: &Path, size: u64) -> io::Result<Body> {
    if size <= SMALL {
        return whole(std::fs::read(path)?, size).map(Body::from);
    }
    let Some(permit) = budget(s, size) else {
        let f = tokio::fs::File::open(path).await?;
        return Ok(Body::from_stream(
            tokio_util::io::ReaderStream::with_capacity(f, CHUNK),
        ));
    };
    let bytes = if size <= READ_INLINE {
        s.buffers.read(path, size, permit)?
    } else {
        let (pool, p) = (s.buffers.clone(), path.to_owned());
        blocking(move || pool.read(&p, size, permit)).await??
    };
    Ok(Body::from(bytes))
}

fn whole(bytes: Vec<u8>, size: u64) -> io::Result<Vec<u8>> {
    if bytes.len() as u64 == size {
        Ok(bytes)
    } else {
        Err(io::Error::other("it changed size while read"))
    }
}

/// A share of `--reply-memory` for a whole read of `size`, held until its
/// reply is sent; `None`: too large, or no room, so stream it.
fn budget(s: &Shared, size: u64) -> Option<OwnedSemaphorePermit> {
    if size > WHOLE_MAX {
        return None;
    }
    let units = super::buffers::Pool::held_bytes(size).div_ceil(WHOLE_UNIT) as u32;
    s.whole_reads.clone().try_acquire_many_owned(units).ok()
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

/// Whether the first block of a file larger than one block compresses by
/// a tenth or more. A file whose start does not (packed or random bytes)
/// is kept as it is without compressing the rest, which costs a reply
/// nothing: it is sent as it is.
fn start_pays(path: &Path) -> io::Result<bool> {
    let mut head = Vec::with_capacity(BLOCK + 1);
    std::fs::File::open(path)?
        .take(BLOCK as u64 + 1)
        .read_to_end(&mut head)?;
    if head.len() <= BLOCK {
        return Ok(true);
    }
    let packed = lz4::block::compress(&head[..BLOCK], None, false)?;
    Ok(packed.len() < BLOCK - BLOCK / 10)
}

/// A file's length and its bytes as one lz4 frame, of independent 64 KiB
/// blocks: Go's lz4 reader (the seed's client) decodes linked blocks far
/// more slowly, and allocates a buffer of the frame's block size.
fn compress(path: &Path) -> io::Result<(u64, Vec<u8>)> {
    let raw = std::fs::read(path)?;
    let mut enc = lz4::EncoderBuilder::new()
        .checksum(lz4::ContentChecksum::ChecksumEnabled)
        .block_mode(lz4::BlockMode::Independent)
        .block_size(lz4::BlockSize::Max64KB)
        .build(Vec::with_capacity(raw.len() / 2))?;
    io::Write::write_all(&mut enc, &raw)?;
    let (frame, done) = enc.finish();
    done?;
    Ok((raw.len() as u64, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes no compressor shrinks (xorshift).
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn unlz4(frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lz4::Decoder::new(frame)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_frame_is_kept_when_it_pays_and_a_file_starting_with_noise_is_not_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, Vec<u8>, bool); 4] = [
            ("text-d", b"package main // filler\n".repeat(4000), true),
            ("small-d", b"abcabcabc".repeat(1000), true),
            ("noise-d", noise(1 << 20), false),
            // Its start is noise: the rest, however compressible, is not
            // compressed.
            ("mixed-d", [noise(BLOCK), vec![0; 1 << 20]].concat(), false),
        ];
        for (name, body, pays) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, &body).unwrap();
            let fpath = frame_path(&path);
            let got = keep_frame(&path, &fpath);
            let kept = std::fs::read(&fpath).unwrap();
            assert_eq!(got.is_some(), pays, "{name}");
            if pays {
                assert_eq!(got.unwrap(), kept, "{name}");
                assert_eq!(unlz4(&kept), body, "{name}");
            } else {
                assert!(kept.is_empty(), "{name}: a frame kept");
            }
        }
    }
}
