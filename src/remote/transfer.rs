//! Moving bytes between the bucket and the local mirror.
//!
//! Downloads stream: chunks from the network go through a small channel to a
//! blocking thread that decompresses, hashes and writes a temp file, renamed
//! into place only when its sha256 matches the output ID. Nothing unverified
//! is ever visible at a DiskPath.

use std::io::{self, Read};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::format::{Encoding, ObjectMeta};
use super::store::{Body, FailureKind, Fetched, RemoteError};
use super::{Known, Remote};
use crate::local::PutError;
use crate::stats::Stats;
use crate::wire::Id;

/// Decompressed bytes per chunk handed to the disk writer. Under malloc's
/// mmap threshold (see main.rs), so chunk buffers are reused from the heap
/// instead of being mapped, faulted in and unmapped each time (larger chunks
/// cost a remote-warm build more system CPU).
const CHUNK: usize = 32 * 1024;

/// Why a download gave no entry (already counted and reported).
#[derive(Debug)]
pub struct Failed;

/// Downloads an action's entry from the first of the store's locations
/// (`--also-read`) that has a good copy: a corrupt or untrusted object in one
/// is counted and reported, and the next location is asked.
pub(super) async fn download(r: &Remote, action: Id) -> Result<Known, Failed> {
    let locations = r.store.locations();
    let mut refused = false;
    for index in 0..locations {
        let at = At {
            index,
            last: index + 1 == locations,
        };
        match download_from(r, action, at).await? {
            Known::Missing => {}
            Known::Corrupt => refused = true,
            found @ Known::Present(_) => return Ok(found),
        }
    }
    Ok(if refused {
        Known::Corrupt
    } else {
        Known::Missing
    })
}

/// Which of the store's locations a download reads.
#[derive(Clone, Copy)]
struct At {
    index: usize,
    /// No location after this one.
    last: bool,
}

impl At {
    /// What happens after an object here is refused, for the report.
    fn then(self) -> &'static str {
        if self.last {
            ""
        } else {
            "; the next --also-read location is asked"
        }
    }
}

async fn download_from(r: &Remote, action: Id, at: At) -> Result<Known, Failed> {
    let timeout = r.opts.timeout;
    let fetched = match tokio::time::timeout(timeout, r.store.get_in(&action, at.index)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(fail(r, &e)),
        Err(_) => return Err(fail(r, &RemoteError::timeout(timeout))),
    };
    let (meta, body, wire_len) = match fetched {
        Fetched::Missing => {
            r.answered();
            return Ok(Known::Missing);
        }
        Fetched::Found {
            meta,
            body,
            wire_len,
        } => (meta, body, wire_len),
    };
    r.answered();
    let Some(meta) = meta else {
        return Ok(corrupt(
            r,
            &action,
            at,
            "object metadata missing or unreadable",
        ));
    };
    if let Some(trust) = &r.opts.keys.trust {
        let signed = meta.signature.as_ref();
        if !trust.entry(
            &action,
            &meta.output_id,
            meta.size,
            meta.put_time_nanos,
            signed,
        ) {
            return Ok(untrusted(r, &action, at, signed.is_some()));
        }
    }
    let body_len = if wire_len > 0 { wire_len } else { meta.size };
    if (1..=INLINE_MAX).contains(&wire_len) && meta.size <= INLINE_OUTPUT_MAX {
        let deadline = Deadline::for_body(timeout, body_len);
        return small(r, action, at, meta, body, wire_len, deadline).await;
    }

    let Ok(_writing) = r.writers.acquire().await else {
        return Err(Failed);
    };
    // The body's time starts once a writer is free: the wait for one is
    // bounded by the downloads holding them, each by its own deadline.
    let deadline = Deadline::for_body(timeout, body_len);
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
    let local = r.local.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), PutError> {
        let source = ChannelReader::new(rx);
        let mut reader: Box<dyn Read> = match meta.encoding {
            Encoding::Identity => Box::new(source),
            Encoding::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(source).map_err(PutError::Body)?)
            }
            Encoding::Lz4 => Box::new(lz4::Decoder::new(source).map_err(PutError::Body)?),
        };
        local.write_output(&meta.output_id, meta.size, &mut chunks(&mut reader))?;
        local.write_action(&action, &meta.output_id, meta.size, meta.put_time_nanos)
    });

    let network_error = pump(r, body, tx, Some(deadline)).await;
    let written = writer.await;
    if let Some(e) = network_error {
        return Err(fail(r, &e));
    }
    match written {
        Ok(Ok(())) => Ok(Known::Present(meta.output_id)),
        Ok(Err(err)) if err.is_disk() => {
            // The get is counted as a miss by the cacher; the line says why.
            r.report("disk", format_args!("writing a downloaded object: {err}"));
            Err(Failed)
        }
        Ok(Err(err)) => Ok(corrupt(r, &action, at, &err.to_string())),
        Err(join) => Ok(corrupt(r, &action, at, &join.to_string())),
    }
}

/// Objects up to this many bytes on the wire (and outputs up to
/// [`INLINE_OUTPUT_MAX`]) are read whole, then decoded, verified and written
/// on the spot: most of a build's entries are this small, and a blocking
/// thread with a channel per object costs more CPU than the object itself.
const INLINE_MAX: u64 = 64 << 10;
const INLINE_OUTPUT_MAX: u64 = 256 << 10;

/// [`download`] of a small object: whole into memory, then to disk.
async fn small(
    r: &Remote,
    action: Id,
    at: At,
    meta: ObjectMeta,
    mut body: Body,
    wire_len: u64,
    deadline: Deadline,
) -> Result<Known, Failed> {
    let mut wire = Vec::with_capacity(wire_len as usize);
    loop {
        match next_chunk(r, &mut body, Some(deadline)).await {
            Ok(Some(chunk)) => {
                wire.extend_from_slice(&chunk);
                if wire.len() as u64 > wire_len {
                    return Ok(corrupt(r, &action, at, "body longer than announced"));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(fail(r, &e)),
        }
    }
    // Decoded outputs are bounded in number as the streamed ones are.
    let Ok(_writing) = r.writers.acquire().await else {
        return Err(Failed);
    };
    let raw = match decode(&meta, wire) {
        Ok(raw) => raw,
        Err(e) => return Ok(corrupt(r, &action, at, &format!("undecodable body: {e}"))),
    };
    let written = r
        .local
        .write_output_bytes(&meta.output_id, &raw)
        .and_then(|_| {
            r.local
                .write_action(&action, &meta.output_id, meta.size, meta.put_time_nanos)
        });
    match written {
        Ok(()) => Ok(Known::Present(meta.output_id)),
        Err(err) if err.is_disk() => {
            r.report("disk", format_args!("writing a downloaded object: {err}"));
            Err(Failed)
        }
        Err(err) => Ok(corrupt(r, &action, at, &err.to_string())),
    }
}

/// A small object's output bytes, never more than its metadata's size plus
/// one (so that a wrong size is caught by the verification, unbounded
/// output by this bound).
fn decode(meta: &ObjectMeta, wire: Vec<u8>) -> io::Result<Vec<u8>> {
    let bound = meta.size + 1;
    let mut out = Vec::with_capacity(meta.size as usize);
    match meta.encoding {
        Encoding::Identity => return Ok(wire),
        Encoding::Zstd => {
            zstd::stream::read::Decoder::new(&wire[..])?
                .take(bound)
                .read_to_end(&mut out)?;
        }
        Encoding::Lz4 => {
            lz4::Decoder::new(&wire[..])?
                .take(bound)
                .read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

/// The slowest average rate a get's body may come at (bytes a second),
/// beyond one `--remote-timeout` it always has: cmd/go waits for every get,
/// so a body that trickles must end as a miss, not hold the build.
const MIN_BODY_RATE: u64 = 1 << 20;

/// When a get's body must have arrived by, and the bound that set it.
#[derive(Clone, Copy)]
pub(super) struct Deadline {
    at: Instant,
    bound: Duration,
}

impl Deadline {
    /// A body of `wire_len` bytes on the wire, starting now: `timeout` plus
    /// a second per [`MIN_BODY_RATE`] bytes.
    pub(super) fn for_body(timeout: Duration, wire_len: u64) -> Deadline {
        let bound = body_bound(timeout, wire_len);
        Deadline {
            at: Instant::now() + bound,
            bound,
        }
    }
}

/// How long a body of `wire_len` bytes may take (see [`Deadline`]).
pub(super) fn body_bound(timeout: Duration, wire_len: u64) -> Duration {
    timeout + Duration::from_secs_f64(wire_len as f64 / MIN_BODY_RATE as f64)
}

/// The next chunk of a body, counted in `bytes_downloaded`: within the
/// tier's timeout of the last one, and (when given) before the deadline.
/// `Ok(None)` is the body's end; `Err` a network error, or the timeout or
/// deadline passing.
async fn next_chunk(
    r: &Remote,
    body: &mut Body,
    deadline: Option<Deadline>,
) -> Result<Option<Bytes>, RemoteError> {
    let timeout = r.opts.timeout;
    let stall = Instant::now() + timeout;
    let until = deadline.map_or(stall, |d| d.at.min(stall));
    match tokio::time::timeout_at(until, body.next()).await {
        Ok(Some(Ok(chunk))) => {
            Stats::add(&r.stats.bytes_downloaded, chunk.len() as u64);
            Ok(Some(chunk))
        }
        Ok(Some(Err(e))) => Err(RemoteError::new(
            FailureKind::Unavailable,
            format!("reading object body: {e}"),
        )),
        Ok(None) => Ok(None),
        Err(_) => match deadline {
            Some(d) if d.at <= stall => Err(RemoteError::new(
                FailureKind::Unavailable,
                format!(
                    "the body did not arrive within {:?}; the download is dropped",
                    d.bound
                ),
            )),
            _ => Err(RemoteError::timeout(timeout)),
        },
    }
}

/// Feeds an object's body to a blocking reader; a stall longer than the
/// timeout between chunks ends it, and so does the `deadline` of a get. A
/// network error is sent down the channel too (so the reader stops on an
/// error, not at a seeming end) and returned.
pub(super) async fn pump(
    r: &Remote,
    mut body: Body,
    tx: mpsc::Sender<io::Result<Bytes>>,
    deadline: Option<Deadline>,
) -> Option<RemoteError> {
    let network_error = loop {
        match next_chunk(r, &mut body, deadline).await {
            Ok(Some(chunk)) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    break None; // the reader gave up; it says why
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    if let Some(e) = &network_error {
        let _ = tx.send(Err(io::Error::other(e.message.clone()))).await;
    }
    network_error
}

pub(super) fn fail(r: &Remote, e: &RemoteError) -> Failed {
    r.request_failed(e, false);
    Failed
}

/// Counts and reports a corrupt object; the index remembers it for a while,
/// so neither a prefetch nor a get downloads it again.
fn corrupt(r: &Remote, action: &Id, at: At, why: &str) -> Known {
    Stats::inc(&r.stats.corrupt);
    r.report(
        "corrupt",
        format_args!(
            "{}: object {} is corrupt ({why}); not used{} (further corrupt objects are only counted)",
            r.describe(),
            r.store.key_in(action, at.index),
            at.then()
        ),
    );
    Known::Corrupt
}

/// Counts and reports an object no trusted key signed for this action; the
/// index remembers it as it does a corrupt one, so it is not downloaded
/// again and a trusted writer's upload replaces it.
fn untrusted(r: &Remote, action: &Id, at: At, signed: bool) -> Known {
    let why = if signed {
        "its signature is not one of --trust-key's for this entry"
    } else {
        "it is not signed"
    };
    r.untrusted(format_args!(
        "object {} is untrusted ({why}){}",
        r.store.key_in(action, at.index),
        at.then()
    ));
    Known::Corrupt
}

/// A reader as the chunks the disk tier's writer takes.
pub(super) fn chunks(reader: &mut dyn Read) -> impl FnMut() -> Option<io::Result<Bytes>> + '_ {
    move || {
        let mut buf = vec![0u8; CHUNK];
        match read_full(reader, &mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Ok(Bytes::from(buf)))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Network chunks as a blocking `Read`, for the decompressor.
pub(super) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub(super) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
