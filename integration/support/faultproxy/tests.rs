//! The proxy against a small upstream that answers every request with its
//! own method, target and body, driven by a client on a plain socket, so
//! that resets, cut bodies and stalls show as the socket errors they are.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::*;

/// An upstream whose answer's body is "METHOD TARGET|BODY", with an
/// `x-expect` header saying whether the request had an `Expect`.
fn upstream() -> SocketAddr {
    async fn echo(req: Request<Incoming>) -> hyper::Result<Response<Full<Bytes>>> {
        let line = format!("{} {}|", req.method(), req.uri());
        let expect = req.headers().contains_key("expect").to_string();
        let body = req.into_body().collect().await?.to_bytes();
        let mut resp = Response::new(Full::new([line.as_bytes(), &body].concat().into()));
        resp.headers_mut()
            .insert("x-expect", expect.parse().unwrap());
        Ok(resp)
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let conn =
                    http1::Builder::new().serve_connection(TokioIo::new(s), service_fn(echo));
                tokio::spawn(conn);
            }
        });
    });
    addr
}

/// One keep-alive connection to the proxy.
struct Client(BufReader<TcpStream>);

/// A response: status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn connect(p: &FaultProxy) -> Client {
        let s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client(BufReader::new(s))
    }

    /// Sends `req` and reads one Content-Length response (its head only
    /// for a HEAD request), skipping `100 Continue`.
    fn request(&mut self, req: &[u8]) -> io::Result<Answer> {
        self.0.get_mut().write_all(req)?;
        self.read(req.starts_with(b"HEAD "))
    }

    fn read(&mut self, is_head: bool) -> io::Result<Answer> {
        let mut line = String::new();
        if self.0.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.0.read_line(&mut line)?;
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        if status == 100 {
            return self.read(is_head);
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if !is_head {
            let len = answer
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            answer.body.resize(len, 0);
            self.0.read_exact(&mut answer.body)?;
        }
        Ok(answer)
    }
}

fn text(a: &Answer) -> &str {
    std::str::from_utf8(&a.body).unwrap()
}

#[test]
fn faultproxy_passes_faults_and_stops() {
    let p = FaultProxy::start(upstream());
    let mut c = Client::connect(&p);

    // Keep-alive pass-through of several requests on one connection, with
    // Content-Length, chunked and 100-continue bodies.
    let a = c
        .request(b"GET /b/k?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!((a.status, text(&a)), (200, "GET /b/k?x=1|"));
    let a = c
        .request(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    assert_eq!(text(&a), "PUT /b/k|hello");
    let chunked = b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
    assert_eq!(text(&c.request(chunked).unwrap()), "PUT /c|abc");
    let a = c
        .request(
            b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
        )
        .unwrap();
    assert_eq!(
        (text(&a), a.header("x-expect")),
        ("PUT /e|ok", Some("false"))
    );
    // A HEAD answer keeps the length of the body it stands for.
    let a = c.request(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!((a.status, a.header("content-length")), (200, Some("8")));

    // Status on every other matching PUT; other requests pass.
    p.set(vec![Rule::new(Fault::Status {
        code: 503,
        s3_code: "SlowDown",
    })
    .method("PUT")
    .every(2)]);
    let put = b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx";
    let a = c.request(put).unwrap();
    assert_eq!(a.status, 503);
    assert!(text(&a).contains("<Code>SlowDown</Code>"), "{}", text(&a));
    assert_eq!(c.request(put).unwrap().status, 200);
    assert_eq!(c.request(put).unwrap().status, 503);
    let get = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(c.request(get).unwrap().status, 200);
    p.set(vec![Rule::new(Fault::Status {
        code: 404,
        s3_code: "NoSuchKey",
    })
    .path("/gone")]);
    let a = c
        .request(b"HEAD /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(a.status, 404);
    assert_eq!(c.request(get).unwrap().status, 200);
    let counts = p.counts();
    assert_eq!(counts.requests, 11, "{counts:?}");
    let put_counts = (counts.method("PUT"), counts.injected_for("PUT"));
    assert_eq!(put_counts, (6, 2), "{counts:?}");
    assert_eq!(
        (counts.injected, counts.fault("status")),
        (3, 3),
        "{counts:?}"
    );

    // Reset: the client sees ECONNRESET.
    p.set(vec![Rule::new(Fault::Reset)]);
    let err = c.request(get).err().expect("an answer to a reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");

    // CutBody: a short body, then EOF; without a body, EOF before the head.
    p.set(vec![Rule::new(Fault::CutBody)]);
    let mut c = Client::connect(&p);
    let err = c.request(b"GET /cut-me-in-half HTTP/1.1\r\nHost: x\r\n\r\n");
    let err = err.err().expect("a whole cut body");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    let mut c = Client::connect(&p);
    let err = c.request(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n");
    let err = err.err().expect("a whole cut head");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");

    // Latency and Bandwidth delay but deliver.
    p.set(vec![Rule::new(Fault::Latency(Duration::from_millis(300)))]);
    let mut c = Client::connect(&p);
    let t = Instant::now();
    assert_eq!(c.request(get).unwrap().status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    p.set(vec![Rule::new(Fault::Bandwidth {
        bytes_per_sec: 1000,
    })]);
    let t = Instant::now();
    let big = format!(
        "PUT /bw HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{}",
        "z".repeat(200)
    );
    let a = c.request(big.as_bytes()).unwrap();
    assert_eq!((a.status, a.body.len()), (200, 208));
    // 200 bytes in, a head and 208 out at 1000 B/s.
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );

    // A huge body, counted as it goes, ends when the client hangs up.
    p.set(vec![Rule::new(Fault::HugeBody { bytes: 1 << 30 })]);
    let mut c = Client::connect(&p);
    c.0.get_mut().write_all(get).unwrap();
    let mut first = vec![0; 1 << 20];
    c.0.read_exact(&mut first).unwrap();
    drop(c);
    let until = Instant::now() + Duration::from_secs(10);
    while p.counts().huge_ended == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let counts = p.counts();
    assert_eq!(counts.huge_ended, 1, "{counts:?}");
    assert!(
        counts.huge_sent >= 1 << 20 && counts.huge_sent < 1 << 28,
        "{counts:?}"
    );

    // An unreachable upstream resets the client.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p2 = FaultProxy::start(dead);
    let err = Client::connect(&p2)
        .request(get)
        .err()
        .expect("an answer from nowhere");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    drop(p2);

    // Stall: no answer; dropping the proxy ends the stall (EOF) and
    // returns promptly.
    p.set(vec![Rule::new(Fault::Stall)]);
    let mut stalled = Client::connect(&p);
    let s = stalled.0.get_ref();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = stalled.request(get).err().expect("an answer to a stall");
    let timed_out = [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut];
    assert!(timed_out.contains(&err.kind()), "{err}");
    let _idle = Client::connect(&p);
    let t = Instant::now();
    drop(p);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let s = stalled.0.get_mut();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(s.read(&mut [0; 16]).unwrap(), 0);
}
