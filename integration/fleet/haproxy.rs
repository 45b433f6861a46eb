//! Debian's HAProxy in front of the fleet's replicas. Its configuration
//! (written by `HaProxy::config`), and why:
//!
//! - `option httpchk GET <HEALTH_PATH>`, `http-check expect status 200`,
//!   `inter 500ms fall 2 rise 2`: a replica that stops answering is out of
//!   the rotation within about a second, and one that starts is in after
//!   two good checks. HAProxy starts every server as up; a single failed
//!   check then takes it out, so a replica declared before it runs (the
//!   fourth here) gets no traffic until it answers.
//! - `retry-on conn-failure empty-response response-timeout`, `retries 3`,
//!   `option redispatch 1`: a request to a replica that was just killed
//!   (connection refused, or a connection closed with no response) is sent
//!   again to another replica, on every retry. Every request of the cache
//!   API is safe to repeat: GETs read, and a PUT stores a content-addressed
//!   entry. HAProxy only retries a request it still holds whole in its
//!   buffer (16 KiB by default), so a large upload cut by a killed replica
//!   fails back to the client, which goes on without it.
//! - `balance leastconn`: a replica that just joined, with no connections,
//!   gets the next requests.
//! - `timeout connect 1s` (a replica is local; a slow connect is a dead
//!   one), `timeout server 15s` (longer than a replica's bucket fetch of a
//!   large output), `timeout client 60s` and `timeout http-keep-alive 10s`
//!   (clients keep their connections between requests).
//! - A stats frontend on a port of its own (`/stats;csv`): the test reads
//!   each replica's state (UP/DOWN) and its response and retry counters.
//!
//! HAProxy runs in the foreground (`-db`) as the test's child, its log (one
//! line a request, `option httplog`) goes to a file printed on failure.
//! Install it with `apt-get install -y haproxy` (.ci/run does).

use super::*;

/// One server's row of HAProxy's stats.
#[derive(Clone, Debug, Default)]
pub(super) struct ServerStats {
    pub(super) status: String,
    /// HTTP responses it gave (every class).
    pub(super) responses: u64,
    /// Requests HAProxy sent again after a failure on it, and sent to
    /// another server.
    pub(super) retries: u64,
    pub(super) redispatches: u64,
    /// Failed connections, and responses that failed (e.g. none at all).
    pub(super) conn_errors: u64,
    pub(super) resp_errors: u64,
    /// 5xx responses (on the backend row: what clients were answered).
    pub(super) server_errors: u64,
}

pub(super) struct HaProxy {
    dir: tempfile::TempDir,
    port: u16,
    stats_port: u16,
    child: Option<Child>,
}

impl HaProxy {
    pub(super) fn config(port: u16, stats_port: u16, servers: &[(&str, u16)]) -> String {
        let mut cfg = format!(
            "global
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 1s
    timeout client 60s
    timeout server 15s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 10s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend cache
    bind 127.0.0.1:{port}
    default_backend replicas

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend replicas
    balance leastconn
    option httpchk GET {HEALTH_PATH}
    http-check expect status 200
    default-server check inter 500ms fastinter 500ms downinter 500ms fall 2 rise 2
"
        );
        for (name, port) in servers {
            cfg.push_str(&format!("    server {name} 127.0.0.1:{port}\n"));
        }
        cfg
    }

    pub(super) fn start(servers: &[(&str, u16)]) -> HaProxy {
        assert!(
            Path::new(HAPROXY).exists(),
            "HAProxy is not installed at {HAPROXY}: run `apt-get update && apt-get install -y haproxy` (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (port, stats_port) = (free_port(), free_port());
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, HaProxy::config(port, stats_port, servers)).unwrap();
        let check = Command::new(HAPROXY)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "HAProxy refuses the test's config:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let mut h = HaProxy {
            dir,
            port,
            stats_port,
            child: Some(child),
        };
        let start = Instant::now();
        while http_get(local(stats_port), "/stats;csv").is_none() {
            if let Some(st) = h.child.as_mut().unwrap().try_wait().unwrap() {
                h.child = None;
                panic!("HAProxy exited ({st}):\n{}", h.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "HAProxy's stats port does not answer after 20 s:\n{}",
                h.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        h
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}", local(self.port))
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The backend's servers by name, and the backend itself as "BACKEND".
    pub(super) fn stats(&self) -> HashMap<String, ServerStats> {
        let (status, csv) =
            http_get(local(self.stats_port), "/stats;csv").expect("HAProxy's stats port answers");
        assert_eq!(status, 200, "{csv}");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no {name} in HAProxy's stats: {header:?}"))
        };
        let (px, sv, st) = (col("pxname"), col("svname"), col("status"));
        let hrsp: Vec<usize> = ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx"]
            .iter()
            .chain(&["hrsp_other"])
            .map(|n| col(n))
            .collect();
        let (wretr, wredis, econ, eresp, h5) = (
            col("wretr"),
            col("wredis"),
            col("econ"),
            col("eresp"),
            col("hrsp_5xx"),
        );
        let mut out = HashMap::new();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < header.len() || f[px] != "replicas" {
                continue;
            }
            let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            out.insert(
                f[sv].to_string(),
                ServerStats {
                    status: f[st].to_string(),
                    responses: hrsp.iter().map(|&i| n(i)).sum(),
                    retries: n(wretr),
                    redispatches: n(wredis),
                    conn_errors: n(econ),
                    resp_errors: n(eresp),
                    server_errors: n(h5),
                },
            );
        }
        out
    }

    /// Waits until HAProxy's checks have `server` up (or down).
    pub(super) fn wait_for(&self, server: &str, up: bool) {
        let start = Instant::now();
        loop {
            let status = self
                .stats()
                .get(server)
                .map(|s| s.status.clone())
                .unwrap_or_default();
            if (up && status == "UP") || (!up && status.starts_with("DOWN")) {
                return;
            }
            assert!(
                start.elapsed() < CHECK_LIMIT,
                "HAProxy has {server} {status:?}, not {}, after {CHECK_LIMIT:?}",
                if up { "UP" } else { "DOWN" }
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Responses the backend gave so far, over all its servers.
    pub(super) fn responses(&self) -> u64 {
        self.stats()
            .get("BACKEND")
            .map(|s| s.responses)
            .unwrap_or(0)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- HAProxy log ({}), last lines:\n{}",
                self.log_path().display(),
                tail(&self.log(), 60)
            );
        }
    }
}
