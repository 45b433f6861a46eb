//! A fault-injecting HTTP/1.1 reverse proxy for the suite, put between
//! gocacher and an S3 server or a cache server: it forwards requests
//! unchanged unless a rule says to fail them (an S3 error status, a reset,
//! a stall, a response cut short, a slow link, added latency or a huge
//! body).
//!
//! It works on HTTP requests, which hyper parses, rather than on TCP
//! streams as toxiproxy does, because the fault tests pick the requests to
//! fail by method and path, count requests by method, and have some
//! requests answered by the proxy itself (an S3 error, an oversized body).
//!
//! `rules` holds what a test sets and reads; `forward` what happens to one
//! request; this file runs the proxy. Each request goes upstream on a
//! connection of its own; client connections are kept alive.

mod forward;
mod rules;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub use rules::{Counts, Fault, Rule};

use forward::Conn;
use rules::Control;

/// A running proxy. It runs on a tokio runtime of its own, in a thread of
/// its own, so that synchronous tests and tests inside a runtime can both
/// use it. Dropping it stops that runtime, which closes every connection
/// (stalled ones too), and waits for the thread.
pub struct FaultProxy {
    addr: SocketAddr,
    control: Arc<Control>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        // Bound here, so that the address is known and taken on return.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let control = Arc::new(Control::default());
        let (stop, stopped) = oneshot::channel();
        let ctl = control.clone();
        let thread = std::thread::Builder::new()
            .name("faultproxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fault proxy's runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept(listener, upstream, ctl) => {}
                    }
                });
                // Dropping the runtime drops every connection's task.
            })
            .expect("start the fault proxy's thread");
        FaultProxy {
            addr,
            control,
            stop: Some(stop),
            thread: Some(thread),
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
        self.control.set(rules);
    }

    /// No rules: everything passes.
    pub fn clear(&self) {
        self.set(Vec::new());
    }

    pub fn counts(&self) -> Counts {
        self.control.counts()
    }

    pub fn reset_counts(&self) {
        self.control.reset_counts();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, control: Arc<Control>) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, upstream, control.clone()));
        }
    }
}

/// Serves one client connection, request after request.
async fn serve(stream: TcpStream, upstream: SocketAddr, control: Arc<Control>) {
    let _ = stream.set_nodelay(true);
    let Ok(socket) = socket2::SockRef::from(&stream).try_clone() else {
        return;
    };
    let conn = Arc::new(Conn {
        upstream,
        control,
        socket,
    });
    let service = service_fn(move |req| forward::handle(conn.clone(), req));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
