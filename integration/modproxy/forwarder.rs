//! A counting forwarder put between `gocacher serve --modproxy` and the
//! machine's module proxy: it forwards each GET to the same path under the
//! real upstream and counts requests by path, so a test sees exactly what
//! the server asked its upstream, and can stop it to take the upstream
//! down, or make it change the body of one path (a lying upstream). It
//! runs on a tokio runtime of its own, in a thread of its own;
//! stopping it drops that runtime, which closes every connection.
//! Bodies are streamed through as they come; [`Forwarder::trickling`]
//! slows `.zip` bodies down, so that a test can act while one is under way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

struct Inner {
    upstream: String,
    client: reqwest::Client,
    counts: Mutex<HashMap<String, usize>>,
    /// Paths whose body is changed on the way, and how.
    alter: Mutex<HashMap<String, Alter>>,
    /// Bytes a second at which `.zip` bodies are sent, if slowed down.
    zip_rate: Option<usize>,
}

type Alter = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

pub struct Forwarder {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts forwarding from a free 127.0.0.1 port to `upstream`.
    pub fn start(upstream: &str) -> Forwarder {
        Forwarder::start_with(upstream, None)
    }

    /// Like [`Forwarder::start`], but sends `.zip` bodies at about
    /// `bytes_per_sec`.
    pub fn trickling(upstream: &str, bytes_per_sec: usize) -> Forwarder {
        Forwarder::start_with(upstream, Some(bytes_per_sec))
    }

    fn start_with(upstream: &str, zip_rate: Option<usize>) -> Forwarder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            counts: Mutex::default(),
            alter: Mutex::default(),
            zip_rate,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = inner.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(forward).with_state(state);
                tokio::select! {
                    _ = axum::serve(l, app) => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        Forwarder {
            addr,
            inner,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests forwarded so far, by path (without the leading `/`).
    pub fn counts(&self) -> HashMap<String, usize> {
        self.inner.counts.lock().unwrap().clone()
    }

    /// From now on, the body of `path` (without the leading `/`) is
    /// `change(body)`.
    pub fn alter(&self, path: &str, change: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) {
        let change: Alter = Arc::new(change);
        self.inner
            .alter
            .lock()
            .unwrap()
            .insert(path.to_string(), change);
    }

    /// Stops forwarding: the port refuses connections from now on.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn forward(State(f): State<Arc<Inner>>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/').to_string();
    *f.counts.lock().unwrap().entry(path.clone()).or_default() += 1;
    let got = f.client.get(format!("{}/{path}", f.upstream)).send().await;
    let resp = match got {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let change = f.alter.lock().unwrap().get(&path).cloned();
    if let Some(change) = change.filter(|_| status.is_success()) {
        // A changed body is whole: read it, change it, send it.
        return match resp.bytes().await {
            Ok(b) => (status, change(&b)).into_response(),
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
    }
    let rate = f.zip_rate.filter(|_| path.ends_with(".zip"));
    let body = futures_util::stream::unfold(
        (Box::pin(resp.bytes_stream()), bytes::Bytes::new()),
        move |(mut from, mut pending)| async move {
            if pending.is_empty() {
                pending = match futures_util::StreamExt::next(&mut from).await? {
                    Ok(b) => b,
                    Err(e) => return Some((Err(std::io::Error::other(e)), (from, pending))),
                };
            }
            let Some(rate) = rate else {
                return Some((Ok(pending), (from, bytes::Bytes::new())));
            };
            // A tenth of a second's worth at a time.
            let piece = pending.split_to((rate / 10).max(1).min(pending.len()));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Some((Ok(piece), (from, pending)))
        },
    );
    (status, axum::body::Body::from_stream(body)).into_response()
}

/// The machine's module proxy: the first entry of `go env GOPROXY`.
pub fn machine_proxy() -> String {
    let out = std::process::Command::new("go")
        .args(["env", "GOPROXY"])
        .output()
        .expect("go is on PATH");
    let list = String::from_utf8(out.stdout).unwrap();
    let first = list.trim().split([',', '|']).next().unwrap().to_string();
    assert!(
        first.starts_with("http"),
        "the machine's GOPROXY starts with {first:?}, not a module proxy"
    );
    first
}
