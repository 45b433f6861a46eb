//! The GOCACHEPROG protocol loop: reads requests, dispatches them to a
//! [`Handler`], and writes responses in whatever order they complete.
//!
//! The loop owns only protocol mechanics. Gets run as concurrent tasks (cmd/go
//! pipelines many at once); a put's body is streamed to its handler while the
//! loop reads it, because the body line sits between two requests and must be
//! consumed before the next request can be parsed. Nothing here touches disk.

mod body;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::wire::{self, Id, Request, Response};

pub use body::PutBody;

/// Longest request line we accept. Real requests are under 300 bytes; the cap
/// keeps a runaway line (say, a body sent without its request) from growing a
/// buffer without bound. PutBody lines are streamed and have no such cap.
const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Read buffer for stdin. Large enough that a big body arrives in few syscalls,
/// small enough to stay well inside the memory budget.
const READ_BUFFER: usize = 128 * 1024;

/// A get hit, as the handler reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub output_id: Id,
    pub size: u64,
    /// When the entry was first put, in nanoseconds since the Unix epoch.
    pub put_time_nanos: i64,
    /// Absolute path of a file holding exactly the output's bytes.
    pub disk_path: PathBuf,
}

/// A put's metadata; the bytes arrive separately as a [`PutBody`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Put {
    pub action_id: Id,
    pub output_id: Id,
    pub size: u64,
}

/// What the protocol loop needs from a cache. A miss is a value (`None`), not
/// an error: a handler decides which of its failures cmd/go should see.
pub trait Handler: Send + Sync + 'static {
    fn get(&self, action_id: Id) -> impl Future<Output = Option<Hit>> + Send;

    /// Stores the body and returns the path of a file holding it. The file must
    /// be complete when this returns: cmd/go may read it at once.
    fn put(&self, put: Put, body: PutBody) -> impl Future<Output = anyhow::Result<PathBuf>> + Send;

    /// Called once, after every get and put has been answered, before the
    /// close reply (or at end of input). Drains background work.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// Serves one cmd/go session: capabilities first, then requests until `close`
/// or end of input. Returns once every response has been written.
pub async fn serve<R, W, H>(reader: R, writer: W, handler: Arc<H>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let (tx, rx) = mpsc::unbounded_channel();
    // The capability message must be first; it cannot fail to queue.
    let _ = tx.send(Response::capabilities());
    let writer_task = tokio::spawn(write_responses(writer, rx));

    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut tasks = JoinSet::new();
    let mut line = Vec::with_capacity(1024);
    let mut closed = false;
    loop {
        // Reap finished tasks so the set does not grow with the session.
        while tasks.try_join_next().is_some() {}

        line.clear();
        if reader.buffer().is_empty() {
            // About to wait for cmd/go: let the writer send what is answered
            // first (on a one-thread runtime it runs only when we yield).
            tokio::task::yield_now().await;
        }
        match read_request_line(&mut reader, &mut line).await? {
            LineRead::Eof => break,
            LineRead::TooLong => {
                complain(format_args!(
                    "request line longer than {MAX_REQUEST_LINE} bytes; skipped"
                ));
                continue;
            }
            LineRead::Line => {}
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_slice(text) {
            Ok(req) => req,
            Err(err) => {
                reject_malformed(text, &err, &tx, &mut reader).await?;
                continue;
            }
        };
        match req.command.as_str() {
            "get" => {
                let Some(action_id) = req.action_id else {
                    let _ = tx.send(Response::error(req.id, "get without ActionID"));
                    continue;
                };
                let (h, tx) = (handler.clone(), tx.clone());
                let mut answer = Box::pin(async move {
                    let resp = match guarded(h.get(action_id)).await {
                        Err(panic) => Response::error(req.id, panic),
                        Ok(Some(hit)) => Response {
                            id: req.id,
                            output_id: Some(hit.output_id),
                            size: hit.size as i64,
                            time: Some(wire::rfc3339(hit.put_time_nanos)),
                            disk_path: hit.disk_path.to_string_lossy().into_owned(),
                            ..Default::default()
                        },
                        Ok(None) => Response::miss(req.id),
                    };
                    let _ = tx.send(resp);
                });
                // A local hit or miss is ready on the first poll: answer it
                // here, without a task. Only gets that must wait (say, on the
                // network) become tasks.
                if poll_once(answer.as_mut()).await.is_pending() {
                    tasks.spawn(answer);
                }
            }
            "put" => {
                let size = req.body_size;
                let put = match (req.action_id, req.output_id(), u64::try_from(size)) {
                    (Some(action_id), Some(output_id), Ok(size)) => Put {
                        action_id,
                        output_id,
                        size,
                    },
                    _ => {
                        let _ = tx.send(Response::error(
                            req.id,
                            "put needs ActionID, OutputID and a non-negative BodySize",
                        ));
                        if size > 0 {
                            body::read(&mut reader, size as u64, None).await?;
                        }
                        continue;
                    }
                };
                let (body, sender) = PutBody::channel(put.size);
                let (h, tx) = (handler.clone(), tx.clone());
                tasks.spawn(async move {
                    let resp = match guarded(h.put(put, body)).await {
                        Ok(Ok(path)) => Response {
                            id: req.id,
                            disk_path: path.to_string_lossy().into_owned(),
                            ..Default::default()
                        },
                        Ok(Err(err)) => Response::error(req.id, format!("{err:#}")),
                        Err(panic) => Response::error(req.id, panic),
                    };
                    let _ = tx.send(resp);
                });
                if put.size > 0 {
                    body::read(&mut reader, put.size, sender).await?;
                }
            }
            "close" => {
                while tasks.join_next().await.is_some() {}
                // A close that panics still gets its reply: cmd/go waits for it.
                let _ = guarded(handler.close()).await;
                closed = true;
                let _ = tx.send(Response {
                    id: req.id,
                    ..Default::default()
                });
                break;
            }
            other => {
                let _ = tx.send(Response::error(
                    req.id,
                    format!("unknown command {other:?}"),
                ));
                if req.body_size > 0 {
                    body::read(&mut reader, req.body_size as u64, None).await?;
                }
            }
        }
    }
    if !closed {
        // cmd/go went away without "close": finish what is in flight anyway,
        // so puts already acknowledged still reach every tier.
        while tasks.join_next().await.is_some() {}
        let _ = guarded(handler.close()).await;
    }
    drop(tx);
    writer_task.await.map_err(io::Error::other)?
}

/// Runs a handler call, turning a panic into an error message (already
/// printed on stderr) so that the request still gets a reply: a request left
/// unanswered would hang cmd/go.
async fn guarded<F: Future>(fut: F) -> Result<F::Output, String> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                complain(format_args!(
                    "internal error (panic): {what}; the request fails, the session goes on"
                ));
                Poll::Ready(Err(format!("gocacher internal error: {what}")))
            }
        }
    })
    .await
}

/// Polls a future once, in the caller's task.
async fn poll_once<F: Future + Unpin>(mut fut: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx))).await
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Reads one line (without limit on what follows it) into `buf`, capped at
/// [`MAX_REQUEST_LINE`]; an over-long line is consumed and reported.
async fn read_request_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<LineRead> {
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if too_long {
                LineRead::TooLong
            } else if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (used, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + used > MAX_REQUEST_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..used]);
            }
        }
        r.consume(used);
        if done {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// Reports a line that is not a valid request. If the line still shows an ID,
/// that request gets an `Err` reply so cmd/go is not left waiting; if it shows
/// a body size, the body line is skipped so the stream stays in step.
async fn reject_malformed<R: AsyncBufRead + Unpin>(
    text: &[u8],
    err: &serde_json::Error,
    tx: &mpsc::UnboundedSender<Response>,
    reader: &mut R,
) -> io::Result<()> {
    let shown = String::from_utf8_lossy(&text[..text.len().min(200)]);
    complain(format_args!("malformed request ({err}): {shown}"));
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(text)
    else {
        return Ok(());
    };
    if let Some(id) = obj.get("ID").and_then(|v| v.as_i64()) {
        let _ = tx.send(Response::error(id, format!("malformed request: {err}")));
    }
    if let Some(size) = obj.get("BodySize").and_then(|v| v.as_u64()) {
        if size > 0 {
            body::read(reader, size, None).await?;
        }
    }
    Ok(())
}

/// Protocol trouble is always worth a line on stderr: it means cmd/go and we
/// disagree, which no flag should hide.
fn complain(msg: std::fmt::Arguments<'_>) {
    eprintln!("gocacher: {msg}");
}

/// Serialises responses as they complete. Batches whatever is ready into one
/// write and flushes when the queue runs dry, so a burst of hits costs few
/// syscalls and no response waits behind an unflushed buffer.
async fn write_responses<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Response>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(8 * 1024);
    while let Some(resp) = rx.recv().await {
        encode(&mut buf, &resp);
        while let Ok(resp) = rx.try_recv() {
            encode(&mut buf, &resp);
            if buf.len() > 64 * 1024 {
                break;
            }
        }
        writer.write_all(&buf).await?;
        writer.flush().await?;
        buf.clear();
    }
    writer.shutdown().await
}

fn encode(buf: &mut Vec<u8>, resp: &Response) {
    // Serialising these plain structs into a Vec cannot fail.
    serde_json::to_writer(&mut *buf, resp).expect("response serialises");
    buf.push(b'\n');
}

/// A chunk of decoded body bytes, or the reason the body was unusable.
pub type Chunk = io::Result<Bytes>;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
