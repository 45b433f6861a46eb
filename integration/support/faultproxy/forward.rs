//! What the proxy does with one request: it asks the rules for the
//! request's fault, then forwards the request, answers it itself, or fails
//! it.
//!
//! Bodies are read whole in both directions. A whole response is what lets
//! `Fault::CutBody` cut it at half, and an upstream that dies before a
//! whole response then looks to the client like the server itself dying:
//! its connection is reset. The suite's objects are small enough for this.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderName};
use hyper::{Method, Request, Response, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};

use super::rules::{Control, Fault};

/// A response body, whole or sent over time by a task of its own.
pub(super) type Body = BoxBody<Bytes, io::Error>;

/// How long an unreachable upstream may take to refuse a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a cut body waits, once its half is out, before it fails: hyper
/// flushes what it holds while the body waits, and a body that failed at
/// once could take its half down unsent.
const FLUSH_GRACE: Duration = Duration::from_millis(50);

/// Headers about one hop's connection, which the proxy's own connections
/// replace. `Expect` goes too: hyper answers `100-continue` itself when the
/// proxy reads the body.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "expect",
];

/// What one client connection's requests share.
pub(super) struct Conn {
    pub(super) upstream: SocketAddr,
    pub(super) control: Arc<Control>,
    /// A second handle on the client's socket, which hyper owns, through
    /// which `Fault::Reset` sets SO_LINGER 0: the socket's last close then
    /// sends a reset instead of a FIN.
    pub(super) socket: socket2::Socket,
}

impl Conn {
    /// Arms the reset and returns the error that makes hyper drop the
    /// connection unanswered.
    fn reset(&self) -> io::Error {
        let _ = self.socket.set_linger(Some(Duration::ZERO));
        io::Error::other("reset by the fault proxy")
    }
}

/// Serves one request. An error makes hyper close the connection without
/// an answer.
pub(super) async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> io::Result<Response<Body>> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let fault = conn.control.decide(req.method().as_str(), target);
    let is_head = req.method() == Method::HEAD;
    let mut pace = match fault {
        Fault::Bandwidth { bytes_per_sec } => Some(Pace::new(bytes_per_sec)),
        _ => None,
    };
    let (parts, body) = req.into_parts();
    let body = read_body(body, pace.as_mut()).await?;

    match fault {
        Fault::Status { code, s3_code } => return Ok(s3_error(code, s3_code)),
        Fault::Reset => return Err(conn.reset()),
        // Never resolves: hyper drops it when the client goes, the
        // runtime when the proxy does.
        Fault::Stall => std::future::pending::<()>().await,
        Fault::Latency(d) => sleep(d).await,
        Fault::HugeBody { bytes } => return Ok(huge_body(conn.control.clone(), bytes, is_head)),
        Fault::Pass | Fault::CutBody | Fault::Bandwidth { .. } | Fault::TrickleBody { .. } => {}
    }

    let Ok(response) = forward(conn.upstream, Request::from_parts(parts, body)).await else {
        return Err(conn.reset());
    };
    let (mut head, body) = response.into_parts();
    for name in HOP_BY_HOP {
        head.headers.remove(name);
    }
    let body = match (fault, pace) {
        (Fault::CutBody, _) if body.is_empty() => {
            return Err(io::Error::other("cut by the fault proxy"));
        }
        (Fault::CutBody, _) => {
            head.headers
                .insert(header::CONTENT_LENGTH, body.len().into());
            cut(body)
        }
        (Fault::TrickleBody { bytes_per_sec }, _) => paced(body, Pace::new(bytes_per_sec)),
        (_, Some(mut pace)) => {
            // The head at the pace too, its size near enough.
            let lines = head.headers.iter();
            let head_len: usize = lines.map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
            pace.wait(head_len + 16).await;
            paced(body, pace)
        }
        _ => whole(body),
    };
    Ok(Response::from_parts(head, body))
}

/// The request's body, read at the pace if there is one. Trailers are
/// dropped: nothing in the suite sends any.
async fn read_body(mut body: Incoming, mut pace: Option<&mut Pace>) -> io::Result<Bytes> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(io::Error::other)?.into_data() {
            out.extend_from_slice(&data);
            if let Some(pace) = pace.as_deref_mut() {
                pace.wait(data.len()).await;
            }
        }
    }
    Ok(out.into())
}

/// Sends the request upstream on a connection of its own and reads the
/// whole response.
async fn forward(
    upstream: SocketAddr,
    mut req: Request<Bytes>,
) -> Result<Response<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await??;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    for name in HOP_BY_HOP {
        req.headers_mut().remove(name);
    }
    *req.version_mut() = Version::HTTP_11;
    let response = sender.send_request(req.map(Full::new)).await?;
    let (head, body) = response.into_parts();
    Ok(Response::from_parts(head, body.collect().await?.to_bytes()))
}

fn whole(body: Bytes) -> Body {
    Full::new(body).map_err(|never| match never {}).boxed()
}

/// A body whose frames `produce` sends, on a task of its own, for bodies
/// that take their time. The task sees a send fail once hyper drops the
/// body (the client went away).
fn produced<F, Fut>(produce: F) -> Body
where
    F: FnOnce(mpsc::Sender<io::Result<Frame<Bytes>>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(1);
    tokio::spawn(produce(tx));
    StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))).boxed()
}

/// `body` sent a slice at a time at `pace`.
fn paced(body: Bytes, mut pace: Pace) -> Body {
    produced(move |tx| async move {
        let mut at = 0;
        while at < body.len() {
            let n = pace.slice.min(body.len() - at);
            if tx
                .send(Ok(Frame::data(body.slice(at..at + n))))
                .await
                .is_err()
            {
                return;
            }
            at += n;
            pace.wait(n).await;
        }
    })
}

/// The first half of `body`, then a failure, which makes hyper close the
/// connection with the rest of the announced length unsent.
fn cut(body: Bytes) -> Body {
    produced(move |tx| async move {
        let half = body.slice(..body.len() / 2);
        if tx.send(Ok(Frame::data(half))).await.is_ok() {
            sleep(FLUSH_GRACE).await;
            let _ = tx
                .send(Err(io::Error::other("cut by the fault proxy")))
                .await;
        }
    })
}

/// `Fault::HugeBody`: a 200 announcing `bytes` zero bytes, sent until they
/// are all out or the client hangs up, counted as they go.
fn huge_body(control: Arc<Control>, bytes: u64, is_head: bool) -> Response<Body> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut left = if is_head { 0 } else { bytes };
    let body = produced(move |tx| async move {
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            let block = Frame::data(Bytes::from_static(&ZEROS[..n]));
            if tx.send(Ok(block)).await.is_err() {
                break;
            }
            left -= n as u64;
            control.huge_sent(n as u64);
        }
        control.huge_ended();
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, bytes)
        .header(header::ETAG, "\"faultproxy\"")
        .header(header::CONNECTION, "close")
        .body(body)
        .expect("a valid response head")
}

/// An S3 error answer, as a server that refuses the request would send.
fn s3_error(code: u16, s3_code: &str) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code><Message>injected</Message></Error>"
    );
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/xml")
        .header(HeaderName::from_static("x-amz-request-id"), "faultproxy")
        .body(whole(xml.into()))
        .expect("a valid status")
}

/// Paces a transfer to a rate: each slice is due when the bytes before it
/// would have taken that long at the rate, counted from the start.
struct Pace {
    rate: u64,
    /// A fiftieth of a second's worth, so that the flow looks steady.
    slice: usize,
    start: Instant,
    done: u64,
}

impl Pace {
    fn new(bytes_per_sec: u64) -> Pace {
        let rate = bytes_per_sec.max(1);
        Pace {
            rate,
            slice: (rate / 50).clamp(1, 16 * 1024) as usize,
            start: Instant::now(),
            done: 0,
        }
    }

    /// Counts `n` more bytes and waits until they are due.
    async fn wait(&mut self, n: usize) {
        self.done += n as u64;
        sleep_until(self.start + Duration::from_secs_f64(self.done as f64 / self.rate as f64))
            .await;
    }
}
