//! Put bodies: a JSON string of standard base64 on the line after the request.
//!
//! The body is decoded while it is read, in bounded chunks handed to the put's
//! handler through a small channel, so a body of any size costs a few hundred
//! KiB of memory and the handler hashes and writes while we decode.

use std::io;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use super::Chunk;

/// Base64 characters decoded per chunk (a multiple of 4): 192 KiB of text
/// becomes 144 KiB of bytes. Bigger chunks mean fewer channel hops; smaller
/// ones less memory. With [`CHANNEL_DEPTH`] this bounds a put to ~1 MiB.
const CHUNK_CHARS: usize = 192 * 1024;

/// Decoded chunks that may wait for the handler. Two lets decoding and
/// writing overlap; more would only hold memory.
const CHANNEL_DEPTH: usize = 2;

/// The decoded bytes of one put, as its handler receives them.
#[derive(Debug)]
pub struct PutBody {
    size: u64,
    rx: Option<mpsc::Receiver<Chunk>>,
}

impl PutBody {
    /// A body of `size` bytes and the sender that feeds it (none when empty).
    pub(super) fn channel(size: u64) -> (PutBody, Option<mpsc::Sender<Chunk>>) {
        if size == 0 {
            return (PutBody { size, rx: None }, None);
        }
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        (PutBody { size, rx: Some(rx) }, Some(tx))
    }

    /// The size cmd/go announced. The chunks add up to exactly this, or the
    /// last chunk is an error.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk, from a blocking thread (e.g. inside `spawn_blocking`).
    pub fn blocking_next(&mut self) -> Option<Chunk> {
        self.rx.as_mut()?.blocking_recv()
    }
}

/// Reads one body line of `size` decoded bytes, sending chunks to `tx` (or
/// discarding them when `None`). A malformed or short body is reported to the
/// handler as an error chunk; the rest of its line is still consumed so the
/// next request parses. Only an I/O error on the reader is returned.
pub(super) async fn read<R: AsyncBufRead + Unpin>(
    r: &mut R,
    size: u64,
    tx: Option<mpsc::Sender<Chunk>>,
) -> io::Result<()> {
    let mut sink = Feed { tx, failed: false };
    // Skip the blank line cmd/go writes after each request, and any spaces.
    loop {
        let buf = r.fill_buf().await?;
        let Some(&b) = buf.first() else {
            sink.fail("input ended before the body").await;
            return Ok(());
        };
        if b.is_ascii_whitespace() {
            r.consume(1);
            continue;
        }
        if b != b'"' {
            sink.fail("body is not a JSON string").await;
            return skip_line(r).await;
        }
        r.consume(1);
        break;
    }

    let mut text: Vec<u8> =
        Vec::with_capacity(CHUNK_CHARS.min((size as usize).saturating_mul(4) / 3 + 8));
    let mut decoded: u64 = 0;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            sink.fail("input ended inside the body").await;
            return Ok(());
        }
        let (take, end) = match memchr::memchr2(b'"', b'\n', buf) {
            Some(i) => (i, Some(buf[i])),
            None => (buf.len(), None),
        };
        let mut consumed = 0;
        while consumed < take {
            let room = CHUNK_CHARS - text.len();
            let n = room.min(take - consumed);
            text.extend_from_slice(&buf[consumed..consumed + n]);
            consumed += n;
            if text.len() == CHUNK_CHARS {
                flush(&mut text, &mut decoded, size, &mut sink).await;
            }
        }
        r.consume(take);
        match end {
            None => continue,
            Some(b'"') => {
                r.consume(1);
                flush(&mut text, &mut decoded, size, &mut sink).await;
                if decoded != size {
                    sink.fail(format!("body has {decoded} bytes, BodySize says {size}"))
                        .await;
                }
                return skip_line(r).await;
            }
            Some(_) => {
                // A newline before the closing quote: the string was cut off.
                r.consume(1);
                sink.fail("body line ended without its closing quote").await;
                return Ok(());
            }
        }
    }
}

/// Decodes the text gathered so far and passes it on.
async fn flush(text: &mut Vec<u8>, decoded: &mut u64, size: u64, sink: &mut Feed) {
    if text.is_empty() || sink.failed {
        text.clear();
        return;
    }
    match B64.decode(&text[..]) {
        Ok(bytes) => {
            *decoded += bytes.len() as u64;
            if *decoded > size {
                sink.fail(format!("body is longer than BodySize {size}"))
                    .await;
            } else {
                sink.send(Bytes::from(bytes)).await;
            }
        }
        Err(err) => sink.fail(format!("body is not valid base64: {err}")).await,
    }
    text.clear();
}

/// Consumes the rest of the current line (trailing spaces after the quote).
async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<()> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = memchr::memchr(b'\n', buf) {
            r.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        r.consume(n);
    }
}

/// Where decoded chunks go. Once a body has failed, later chunks are dropped:
/// the handler has been told and will discard what it wrote.
struct Feed {
    tx: Option<mpsc::Sender<Chunk>>,
    failed: bool,
}

impl Feed {
    async fn send(&mut self, bytes: Bytes) {
        if let Some(tx) = &self.tx {
            // A closed channel means the handler gave up (say, disk full); we
            // keep reading so the stream stays in step.
            if tx.send(Ok(bytes)).await.is_err() {
                self.tx = None;
            }
        }
    }

    async fn fail(&mut self, why: impl Into<String>) {
        if self.failed {
            return;
        }
        self.failed = true;
        let why = why.into();
        eprintln!("gocacher: bad put body: {why}");
        if let Some(tx) = self.tx.take() {
            let _ = tx
                .send(Err(io::Error::new(io::ErrorKind::InvalidData, why)))
                .await;
        }
    }
}
