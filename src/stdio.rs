//! stdin and stdout for the protocol.
//!
//! cmd/go connects us through pipes. Tokio's `stdin()`/`stdout()` do each read
//! and write on a blocking-pool thread, which adds two thread hand-offs to
//! every request's round trip. For pipes we register the descriptors with the
//! reactor instead (non-blocking, epoll), so a request is read, answered and
//! written on one thread. Anything else (a file, a terminal) falls back to
//! tokio's portable versions.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// Must be called inside the runtime (the pipes register with its reactor).
pub fn open() -> (Reader, Writer) {
    (reader(), writer())
}

#[cfg(unix)]
fn reader() -> Reader {
    use tokio::net::unix::pipe;
    match dup_fifo(&std::io::stdin()).map(pipe::Receiver::from_file) {
        Some(Ok(rx)) => Box::pin(rx),
        _ => Box::pin(tokio::io::stdin()),
    }
}

#[cfg(unix)]
fn writer() -> Writer {
    use tokio::net::unix::pipe;
    match dup_fifo(&std::io::stdout()).map(pipe::Sender::from_file) {
        Some(Ok(tx)) => Box::pin(tx),
        _ => Box::pin(tokio::io::stdout()),
    }
}

/// A duplicate of `fd` if it is a pipe. Working on a duplicate leaves the
/// original descriptor open whatever happens to the copy.
#[cfg(unix)]
fn dup_fifo(fd: &impl std::os::fd::AsFd) -> Option<std::fs::File> {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(fd.as_fd().try_clone_to_owned().ok()?);
    file.metadata().ok()?.file_type().is_fifo().then_some(file)
}

#[cfg(not(unix))]
fn reader() -> Reader {
    Box::pin(tokio::io::stdin())
}

#[cfg(not(unix))]
fn writer() -> Writer {
    Box::pin(tokio::io::stdout())
}
