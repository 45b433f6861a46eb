//! A small fault-injecting HTTP/1.1 reverse proxy for the suite, put between
//! gocacher and an S3 server: it forwards requests unchanged unless a rule
//! says to fail them (an S3 error status, a TCP reset, a stall, a response
//! cut short, a slow link or added latency).
//!
//! Each client connection is served by its own thread, request after request
//! (keep-alive). Every request goes upstream on a new connection with
//! `Connection: close`, so the upstream's response ends where it closes.
//! `Expect: 100-continue` is answered by the proxy itself and not forwarded.
//! Request bodies may have a Content-Length (what aws-sdk-s3 sends, also for
//! its aws-chunked uploads) or `Transfer-Encoding: chunked`, forwarded raw.
//! When the upstream cannot be reached, or fails before a whole response,
//! the client connection is reset, as if the server itself had died.
//!
//! Dropping the proxy stops it: it shuts every open socket down and joins
//! every thread it started.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What to do with a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Forward it unchanged.
    Pass,
    /// Answer it with this status and an S3 XML error body with this code,
    /// without forwarding it; the connection stays open.
    Status { code: u16, s3_code: &'static str },
    /// Read it, then reset the client connection (SO_LINGER 0) unanswered.
    Reset,
    /// Read it and never answer; the connection stays open until the client
    /// closes it or the proxy is dropped.
    Stall,
    /// Forward it, then send the response head and about half of the body
    /// (half of the head when there is no body) and close the connection.
    CutBody,
    /// Forward it, reading the request body and writing the response at
    /// this rate.
    Bandwidth { bytes_per_sec: u64 },
    /// Wait this long, then forward it.
    Latency(Duration),
    /// Forward it, send the response head at once, then the body at this
    /// rate (a body that trickles after prompt headers).
    TrickleBody { bytes_per_sec: u64 },
    /// Answer it without forwarding with a `200 OK` and a body of this many
    /// zero bytes, whatever the request asked for (a server that ignores
    /// `Range`); stops when the client hangs up. See `Counts::huge_sent`.
    HugeBody { bytes: u64 },
}

impl Fault {
    /// The name `Counts::by_fault` counts this fault under.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::Status { .. } => "status",
            Fault::Reset => "reset",
            Fault::Stall => "stall",
            Fault::CutBody => "cut_body",
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::Latency(_) => "latency",
            Fault::TrickleBody { .. } => "trickle_body",
            Fault::HugeBody { .. } => "huge_body",
        }
    }
}

/// Which requests get a fault. A request matches when its method equals
/// `method` (if set) and its target (path and query) contains
/// `path_contains` (if set). Of the matching requests, the 1st, then every
/// `every`-th after it (1 + every, 1 + 2 * every, ...) get the fault; the
/// others pass. `every` 0 is taken as 1.
#[derive(Clone, Debug)]
pub struct Rule {
    pub fault: Fault,
    pub method: Option<&'static str>,
    pub path_contains: Option<String>,
    pub every: u32,
}

impl Rule {
    /// The fault for every request.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            fault,
            method: None,
            path_contains: None,
            every: 1,
        }
    }

    /// Only for requests with this method ("GET", "PUT", "HEAD", ...).
    pub fn method(self, method: &'static str) -> Rule {
        Rule {
            method: Some(method),
            ..self
        }
    }

    /// Only for requests whose path and query contain `s`.
    pub fn path(self, s: &str) -> Rule {
        Rule {
            path_contains: Some(s.to_string()),
            ..self
        }
    }

    /// Only for every `n`-th matching request (the first included).
    pub fn every(self, n: u32) -> Rule {
        Rule { every: n, ..self }
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| target.contains(p))
    }
}

/// What the proxy has seen since it started (or `reset_counts`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Requests read (whole heads), faulted or not.
    pub requests: u64,
    /// Requests by method.
    pub by_method: BTreeMap<String, u64>,
    /// Requests that got a fault other than `Pass`.
    pub injected: u64,
    /// Those by `Fault::kind`.
    pub by_fault: BTreeMap<&'static str, u64>,
    /// Those by method.
    pub injected_by_method: BTreeMap<String, u64>,
    /// Body bytes `Fault::HugeBody` answers wrote to their clients.
    pub huge_sent: u64,
    /// `Fault::HugeBody` answers that ended (sent whole, or the client hung
    /// up).
    pub huge_ended: u64,
}

impl Counts {
    pub fn method(&self, method: &str) -> u64 {
        self.by_method.get(method).copied().unwrap_or(0)
    }

    pub fn fault(&self, kind: &str) -> u64 {
        self.by_fault.get(kind).copied().unwrap_or(0)
    }

    pub fn injected_for(&self, method: &str) -> u64 {
        self.injected_by_method.get(method).copied().unwrap_or(0)
    }
}

struct RuleState {
    rule: Rule,
    matched: u64,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    rules: Mutex<Vec<RuleState>>,
    counts: Mutex<Counts>,
    /// Clones of every open socket (client and upstream), shut down on drop.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            rules: Mutex::default(),
            counts: Mutex::default(),
            sockets: Mutex::default(),
            next_socket: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("faultproxy-accept".into())
            .spawn(move || accept_loop(listener, sh))
            .unwrap();
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// "http://127.0.0.1:PORT", for AWS_ENDPOINT_URL_S3.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the rules. The first rule a request matches decides; a
    /// request that matches none passes.
    pub fn set(&self, rules: Vec<Rule>) {
        *self.shared.rules.lock().unwrap() = rules
            .into_iter()
            .map(|rule| RuleState { rule, matched: 0 })
            .collect();
    }

    /// No rules: everything passes.
    pub fn clear(&self) {
        self.set(Vec::new());
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().unwrap().clone()
    }

    pub fn reset_counts(&self) {
        *self.shared.counts.lock().unwrap() = Counts::default();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        let conns = self
            .accept
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        // Registration checks `stop` under this lock, so no socket can be
        // added after this sweep without being shut down at once.
        for s in self.shared.sockets.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in conns {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) -> Vec<JoinHandle<()>> {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        threads.retain(|t| !t.is_finished());
        let sh = shared.clone();
        if let Ok(t) = std::thread::Builder::new()
            .name("faultproxy-conn".into())
            .spawn(move || serve(stream, &sh))
        {
            threads.push(t);
        }
    }
    threads
}

/// A socket registered with the proxy (so drop can shut it down), with the
/// bytes read past what has been consumed.
struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    shared: &'a Shared,
    id: u64,
}

impl<'a> Conn<'a> {
    fn new(stream: TcpStream, shared: &'a Shared) -> io::Result<Conn<'a>> {
        let _ = stream.set_nodelay(true);
        let id = shared.next_socket.fetch_add(1, Ordering::Relaxed);
        let clone = stream.try_clone()?;
        let mut sockets = shared.sockets.lock().unwrap();
        if shared.stop.load(Ordering::SeqCst) {
            let _ = clone.shutdown(Shutdown::Both);
        }
        sockets.insert(id, clone);
        drop(sockets);
        Ok(Conn {
            stream,
            buf: Vec::new(),
            shared,
            id,
        })
    }

    fn fill(&mut self, max: usize) -> io::Result<usize> {
        let mut chunk = vec![0; max.clamp(1, 64 * 1024)];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads up to the blank line ending a head. None at a clean EOF before
    /// any byte of it.
    fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut searched: usize = 0;
        loop {
            if let Some(i) = find(&self.buf[searched.saturating_sub(3)..], b"\r\n\r\n") {
                let end = searched.saturating_sub(3) + i + 4;
                return Ok(Some(self.buf.drain(..end).collect()));
            }
            searched = self.buf.len();
            if searched > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
            }
            if self.fill(64 * 1024)? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Exactly `n` more bytes, paced if `pace` is given.
    fn read_exact(&mut self, n: usize, mut pace: Option<&mut Pace>) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(64 << 20));
        while out.len() < n {
            if self.buf.is_empty() {
                let want = pace.as_ref().map_or(64 * 1024, |p| p.slice);
                if self.fill(want.min(n - out.len()))? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            let take = self.buf.len().min(n - out.len());
            let take = pace.as_ref().map_or(take, |p| take.min(p.slice));
            out.extend(self.buf.drain(..take));
            if let Some(p) = pace.as_deref_mut() {
                p.wait(take, self.shared)?;
            }
        }
        Ok(out)
    }

    /// One CRLF-terminated line, the CRLF included.
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return Ok(self.buf.drain(..i + 2).collect());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill(64 * 1024)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// A chunked body, raw: the chunks, the last chunk and any trailers.
    fn read_chunked(&mut self, mut pace: Option<&mut Pace>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line = self.read_line()?;
            let size = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| {
                    let hex = l.trim_end().split(';').next()?.trim();
                    usize::from_str_radix(hex, 16).ok()
                })
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            out.extend_from_slice(&line);
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let line = self.read_line()?;
                    out.extend_from_slice(&line);
                    if line == b"\r\n" {
                        return Ok(out);
                    }
                }
            }
            out.extend(self.read_exact(size + 2, pace.as_deref_mut())?);
        }
    }

    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill(64 * 1024)? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    fn write(&mut self, data: &[u8], pace: Option<&mut Pace>) -> io::Result<()> {
        match pace {
            None => self.stream.write_all(data),
            Some(p) => {
                for piece in data.chunks(p.slice) {
                    self.stream.write_all(piece)?;
                    p.wait(piece.len(), self.shared)?;
                }
                Ok(())
            }
        }
    }

    /// Closes with a TCP RST instead of a FIN.
    fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket fd and a properly sized linger struct.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        // Both fds (ours and the registered clone) must close for the RST.
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.shared.sockets.lock().unwrap().remove(&self.id);
    }
}

/// Paces a transfer to `rate` bytes per second.
struct Pace {
    rate: u64,
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

    fn wait(&mut self, n: usize, shared: &Shared) -> io::Result<()> {
        self.done += n as u64;
        let due = self.start + Duration::from_secs_f64(self.done as f64 / self.rate as f64);
        nap(due.saturating_duration_since(Instant::now()), shared)
    }
}

/// Sleeps, cut short (as an error) when the proxy stops.
fn nap(d: Duration, shared: &Shared) -> io::Result<()> {
    let end = Instant::now() + d;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("proxy stopped"));
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A parsed head: its first line and its header lines, raw (no CRLF).
struct Head {
    first: String,
    lines: Vec<Vec<u8>>,
}

impl Head {
    fn parse(raw: &[u8]) -> io::Result<Head> {
        let raw = &raw[..raw.len() - 4];
        let mut lines = raw.split(|&b| b == b'\n').map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            l.to_vec()
        });
        let first = String::from_utf8(lines.next().unwrap_or_default())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad first line"))?;
        Ok(Head {
            first,
            lines: lines.collect(),
        })
    }

    fn name(line: &[u8]) -> &[u8] {
        let i = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        line[..i].trim_ascii()
    }

    fn get(&self, name: &str) -> Option<String> {
        self.lines.iter().find_map(|l| {
            if Head::name(l).eq_ignore_ascii_case(name.as_bytes()) {
                let i = l.iter().position(|&b| b == b':')?;
                Some(String::from_utf8_lossy(l[i + 1..].trim_ascii()).into_owned())
            } else {
                None
            }
        })
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        match self.get("content-length") {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length")),
        }
    }

    fn chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    /// The head with these headers left out and `extra` lines added.
    fn render(&self, omit: &[&str], extra: &[&str]) -> Vec<u8> {
        let mut out = self.first.as_bytes().to_vec();
        out.extend_from_slice(b"\r\n");
        for l in &self.lines {
            let n = Head::name(l);
            if !omit.iter().any(|d| n.eq_ignore_ascii_case(d.as_bytes())) {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
        }
        for e in extra {
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn decide(shared: &Shared, method: &str, target: &str) -> Fault {
    let fault = {
        let mut rules = shared.rules.lock().unwrap();
        match rules.iter_mut().find(|r| r.rule.matches(method, target)) {
            None => Fault::Pass,
            Some(r) => {
                let every = u64::from(r.rule.every.max(1));
                let n = r.matched;
                r.matched += 1;
                if n % every == 0 {
                    r.rule.fault.clone()
                } else {
                    Fault::Pass
                }
            }
        }
    };
    let mut c = shared.counts.lock().unwrap();
    c.requests += 1;
    *c.by_method.entry(method.to_string()).or_default() += 1;
    if fault != Fault::Pass {
        c.injected += 1;
        *c.by_fault.entry(fault.kind()).or_default() += 1;
        *c.injected_by_method.entry(method.to_string()).or_default() += 1;
    }
    fault
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(mut client) = Conn::new(stream, shared) else {
        return;
    };
    loop {
        match serve_one(&mut client, shared) {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) | Err(_) => return,
            Ok(Next::Reset) => return client.reset(),
            Ok(Next::Stall) => {
                // Hold the connection until the client closes it or the
                // proxy's drop shuts it down; drain whatever arrives.
                while matches!(client.fill(64 * 1024), Ok(n) if n > 0) {
                    client.buf.clear();
                }
                return;
            }
        }
    }
}

enum Next {
    KeepAlive,
    Close,
    Reset,
    Stall,
}

fn serve_one(client: &mut Conn, shared: &Shared) -> io::Result<Next> {
    let raw = match client.read_head() {
        Ok(Some(raw)) => raw,
        Ok(None) => return Ok(Next::Close),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let _ = client.write(error_response(400, "BadRequest", false).as_slice(), None);
            return Ok(Next::Close);
        }
        Err(e) => return Err(e),
    };
    let head = Head::parse(&raw)?;
    let mut parts = head.first.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or(""),
    );
    let client_close = version != "HTTP/1.1" || head.has_token("connection", "close");
    let fault = decide(shared, &method, &target);
    let mut pace = match fault {
        Fault::Bandwidth { bytes_per_sec } => Some(Pace::new(bytes_per_sec)),
        _ => None,
    };

    let expect = head.has_token("expect", "100-continue");
    let body = if head.chunked() {
        if expect {
            client.write(b"HTTP/1.1 100 Continue\r\n\r\n", None)?;
        }
        client.read_chunked(pace.as_mut())?
    } else {
        match head.content_length()? {
            Some(n) if n > 0 => {
                if expect {
                    client.write(b"HTTP/1.1 100 Continue\r\n\r\n", None)?;
                }
                client.read_exact(n, pace.as_mut())?
            }
            _ => Vec::new(),
        }
    };
    let is_head = method.eq_ignore_ascii_case("HEAD");

    match fault {
        Fault::Status { code, s3_code } => {
            client.write(&error_response(code, s3_code, is_head), None)?;
            return Ok(if client_close {
                Next::Close
            } else {
                Next::KeepAlive
            });
        }
        Fault::Reset => return Ok(Next::Reset),
        Fault::Stall => return Ok(Next::Stall),
        Fault::Latency(d) => nap(d, shared)?,
        Fault::HugeBody { bytes } => {
            huge_body(client, shared, bytes, is_head);
            return Ok(Next::Close);
        }
        Fault::Pass | Fault::CutBody | Fault::Bandwidth { .. } | Fault::TrickleBody { .. } => {}
    }

    // Forward on a fresh upstream connection that closes after the response.
    let Some((resp_head, resp_body)) = forward(shared, &head, &body, is_head) else {
        return Ok(Next::Reset);
    };
    let status: u16 = resp_head
        .first
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let no_body = is_head || (100..200).contains(&status) || status == 204 || status == 304;
    let framed = no_body
        || resp_head.chunked()
        || matches!(resp_head.content_length(), Ok(Some(n)) if n == resp_body.len());
    let keep = framed && !client_close;
    let out_head = if keep {
        resp_head.render(&["connection", "keep-alive"], &[])
    } else {
        resp_head.render(&["connection", "keep-alive"], &["Connection: close"])
    };

    if fault == Fault::CutBody {
        if resp_body.is_empty() {
            client.write(&out_head[..out_head.len() / 2], None)?;
        } else {
            client.write(&out_head, None)?;
            client.write(&resp_body[..resp_body.len() / 2], None)?;
        }
        return Ok(Next::Close);
    }
    client.write(&out_head, pace.as_mut())?;
    if let Fault::TrickleBody { bytes_per_sec } = fault {
        pace = Some(Pace::new(bytes_per_sec));
    }
    client.write(&resp_body, pace.as_mut())?;
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// `Fault::HugeBody`: a 200 with `bytes` zero bytes, written until they are
/// all out, the client hangs up or the proxy stops; counted as it goes.
fn huge_body(client: &mut Conn, shared: &Shared, bytes: u64, is_head: bool) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {bytes}\r\nETag: \"faultproxy\"\r\nConnection: close\r\n\r\n"
    );
    let block = vec![0u8; 64 * 1024];
    let mut left = if is_head { 0 } else { bytes };
    if client.write(head.as_bytes(), None).is_ok() {
        while left > 0 && !shared.stop.load(Ordering::SeqCst) {
            let n = left.min(block.len() as u64) as usize;
            if client.write(&block[..n], None).is_err() {
                break;
            }
            left -= n as u64;
            shared.counts.lock().unwrap().huge_sent += n as u64;
        }
    }
    shared.counts.lock().unwrap().huge_ended += 1;
}

/// Sends the request upstream and reads the whole response. None when the
/// upstream is unreachable or fails before a whole response.
fn forward(shared: &Shared, head: &Head, body: &[u8], is_head: bool) -> Option<(Head, Vec<u8>)> {
    let stream = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(10)).ok()?;
    let mut up = Conn::new(stream, shared).ok()?;
    let mut req = head.render(
        &["connection", "keep-alive", "proxy-connection", "expect"],
        &["Connection: close"],
    );
    req.extend_from_slice(body);
    up.write(&req, None).ok()?;
    loop {
        let raw = up.read_head().ok()??;
        let resp = Head::parse(&raw).ok()?;
        let status: u16 = resp.first.split(' ').nth(1)?.parse().ok()?;
        if (100..200).contains(&status) && status != 101 {
            continue; // an interim response: not for the client
        }
        if is_head || status == 204 || status == 304 {
            return Some((resp, Vec::new()));
        }
        let body = if resp.chunked() {
            up.read_chunked(None).ok()?
        } else {
            match resp.content_length().ok()? {
                Some(n) => up.read_exact(n, None).ok()?,
                None => up.read_to_end().ok()?,
            }
        };
        return Some((resp, body));
    }
}

fn error_response(code: u16, s3_code: &str, is_head: bool) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code><Message>injected</Message></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: faultproxy\r\n\r\n",
        reason(code),
        body.len()
    )
    .into_bytes();
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    //! Against a tiny std upstream that answers every request with its own
    //! method, target and body, then closes.

    use super::*;

    fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let shared = Shared {
                        upstream: addr,
                        stop: AtomicBool::new(false),
                        rules: Mutex::default(),
                        counts: Mutex::default(),
                        sockets: Mutex::default(),
                        next_socket: AtomicU64::new(0),
                    };
                    let mut c = Conn::new(s, &shared).unwrap();
                    let Ok(Some(raw)) = c.read_head() else { return };
                    let head = Head::parse(&raw).unwrap();
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&raw).into_owned());
                    let body = if head.chunked() {
                        c.read_chunked(None).unwrap()
                    } else {
                        let n = head.content_length().unwrap().unwrap_or(0);
                        c.read_exact(n, None).unwrap()
                    };
                    let mut out = head.first.clone().into_bytes();
                    out.push(b'|');
                    out.extend_from_slice(&body);
                    let is_head = head.first.starts_with("HEAD ");
                    let mut resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        out.len()
                    )
                    .into_bytes();
                    if !is_head {
                        resp.extend_from_slice(&out);
                    }
                    let _ = c.stream.write_all(&resp);
                });
            }
        });
        (addr, heads)
    }

    /// Sends one request on `s` and reads one Content-Length response:
    /// (status, body), or the io error.
    fn request(s: &mut TcpStream, req: &[u8], is_head: bool) -> io::Result<(u16, Vec<u8>)> {
        s.write_all(req)?;
        // Only for Conn's bookkeeping (not peer_addr: after a reset that
        // fails with ENOTCONN).
        let shared = Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], 9)),
            stop: AtomicBool::new(false),
            rules: Mutex::default(),
            counts: Mutex::default(),
            sockets: Mutex::default(),
            next_socket: AtomicU64::new(0),
        };
        let mut c = Conn::new(s.try_clone()?, &shared)?;
        let raw = c.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let head = Head::parse(&raw)?;
        let status = head.first.split(' ').nth(1).unwrap().parse().unwrap();
        let n = if is_head {
            0
        } else {
            head.content_length()?.unwrap_or(0)
        };
        let body = c.read_exact(n, None)?;
        assert!(c.buf.is_empty(), "extra bytes after the response");
        Ok((status, body))
    }

    fn connect(p: &FaultProxy) -> TcpStream {
        let s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    #[test]
    fn faultproxy_passes_faults_and_stops() {
        let (up, heads) = upstream();
        let p = FaultProxy::start(up);
        let mut s = connect(&p);

        // Keep-alive pass-through of several requests on one connection,
        // with Content-Length, chunked and 100-continue bodies.
        let (st, body) =
            request(&mut s, b"GET /b/k?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", false).unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"GET /b/k?x=1 HTTP/1.1|"[..]));
        let (st, body) = request(
            &mut s,
            b"PUT /b/k HTTP/1.1\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            false,
        )
        .unwrap();
        assert_eq!(
            (st, body.as_slice()),
            (200, &b"PUT /b/k HTTP/1.1|hello"[..])
        );
        let (st, body) = request(
            &mut s,
            b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(st, 200);
        assert_eq!(body, b"PUT /c HTTP/1.1|3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n");
        s.write_all(b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .unwrap();
        let mut cont = [0; 25];
        s.read_exact(&mut cont).unwrap();
        assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
        let (st, body) = request(&mut s, b"ok", false).unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"PUT /e HTTP/1.1|ok"[..]));
        let (st, body) = request(&mut s, b"HEAD /h HTTP/1.1\r\n\r\n", true).unwrap();
        assert_eq!((st, body.len()), (200, 0));
        {
            let heads = heads.lock().unwrap();
            assert!(heads.iter().all(|h| h.contains("Connection: close\r\n")));
            assert!(heads.iter().all(|h| !h.contains("keep-alive")));
            assert!(
                !heads[3].to_ascii_lowercase().contains("expect"),
                "{}",
                heads[3]
            );
        }

        // Status on every other matching PUT; other requests pass.
        p.set(vec![Rule::new(Fault::Status {
            code: 503,
            s3_code: "SlowDown",
        })
        .method("PUT")
        .every(2)]);
        let put = b"PUT /b/k HTTP/1.1\r\nContent-Length: 1\r\n\r\nx";
        let (st, body) = request(&mut s, put, false).unwrap();
        assert_eq!(st, 503);
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("<Code>SlowDown</Code>"));
        assert_eq!(request(&mut s, put, false).unwrap().0, 200);
        assert_eq!(request(&mut s, put, false).unwrap().0, 503);
        assert_eq!(
            request(&mut s, b"GET /x HTTP/1.1\r\n\r\n", false)
                .unwrap()
                .0,
            200
        );
        let (st, body) = request(&mut s, b"HEAD /b/k HTTP/1.1\r\n\r\n", true).unwrap();
        assert_eq!((st, body.len()), (200, 0));
        p.set(vec![Rule::new(Fault::Status {
            code: 404,
            s3_code: "NoSuchKey",
        })
        .path("/gone")]);
        let (st, body) = request(&mut s, b"HEAD /gone HTTP/1.1\r\n\r\n", true).unwrap();
        assert_eq!((st, body.len()), (404, 0));
        assert_eq!(
            request(&mut s, b"GET /x HTTP/1.1\r\n\r\n", false)
                .unwrap()
                .0,
            200
        );
        let c = p.counts();
        assert_eq!(c.requests, 12, "{c:?}");
        assert_eq!((c.method("PUT"), c.injected_for("PUT")), (6, 2), "{c:?}");
        assert_eq!((c.injected, c.fault("status")), (3, 3), "{c:?}");

        // Reset: the client sees ECONNRESET.
        p.set(vec![Rule::new(Fault::Reset)]);
        let err = request(&mut s, b"GET /r HTTP/1.1\r\n\r\n", false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");

        // CutBody: a short body, then EOF.
        p.set(vec![Rule::new(Fault::CutBody)]);
        let mut s = connect(&p);
        let err = request(&mut s, b"GET /cut-me-in-half HTTP/1.1\r\n\r\n", false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");

        // Latency and Bandwidth delay but deliver.
        p.set(vec![Rule::new(Fault::Latency(Duration::from_millis(300)))]);
        let mut s = connect(&p);
        let t = Instant::now();
        assert_eq!(
            request(&mut s, b"GET /l HTTP/1.1\r\n\r\n", false)
                .unwrap()
                .0,
            200
        );
        assert!(t.elapsed() >= Duration::from_millis(300));
        p.set(vec![Rule::new(Fault::Bandwidth {
            bytes_per_sec: 1000,
        })]);
        let t = Instant::now();
        let big = format!(
            "PUT /bw HTTP/1.1\r\nContent-Length: 200\r\n\r\n{}",
            "z".repeat(200)
        );
        let (st, body) = request(&mut s, big.as_bytes(), false).unwrap();
        assert_eq!((st, body.len()), (200, 217));
        // 200 bytes in, ~280 out at 1000 B/s.
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );

        // An unreachable upstream resets the client.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let p2 = FaultProxy::start(dead);
        let mut s2 = connect(&p2);
        let err = request(&mut s2, b"GET / HTTP/1.1\r\n\r\n", false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        drop(p2);

        // Stall: no answer; dropping the proxy ends the stall (EOF) and
        // returns promptly, its threads joined.
        p.set(vec![Rule::new(Fault::Stall)]);
        let mut stalled = connect(&p);
        stalled
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let err = request(&mut stalled, b"GET /s HTTP/1.1\r\n\r\n", false).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        let _idle = connect(&p);
        let t = Instant::now();
        drop(p);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        stalled
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(stalled.read(&mut [0; 16]).unwrap(), 0);
    }
}
