//! The seed project's cache servers, started for a test on 127.0.0.1: the
//! real `gocached` and `go-cacher-server` binaries that `.ci/run` installs
//! (pinned) into `$GOCACHER_TOOLS_DIR/bin`, and the test OIDC issuer in
//! `integration/oidc` that gocached's JWT auth is pointed at.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::s3server::{free_port, tool_bin};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Seed {
    Gocached,
    GoCacherServer,
    /// Not the seed's: `gocacher serve`, started the same way.
    Serve,
}

pub struct SeedServer {
    pub kind: Seed,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl SeedServer {
    pub fn start(kind: Seed) -> SeedServer {
        SeedServer::start_with(kind, &[])
    }

    /// Starts the server with extra arguments (e.g. gocached's JWT flags).
    pub fn start_with(kind: Seed, args: &[&str]) -> SeedServer {
        SeedServer::start_with_env(kind, args, Vec::new())
    }

    /// Starts the server with extra arguments and environment (e.g. the
    /// AWS_* settings of `gocacher serve --remote`).
    pub fn start_with_env(kind: Seed, args: &[&str], env: Vec<(String, String)>) -> SeedServer {
        let mut s = SeedServer {
            kind,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let (name, mut cmd) = match self.kind {
            Seed::Gocached => (
                "gocached",
                seed_command("gocached", "GOCACHER_GOCACHED_BIN"),
            ),
            Seed::GoCacherServer => (
                "go-cacher-server",
                seed_command("go-cacher-server", "GOCACHER_GO_CACHER_SERVER_BIN"),
            ),
            Seed::Serve => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_gocacher"));
                c.args(["serve", "--dir"]);
                ("gocacher serve", c)
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = cmd
            .arg(self.dir.path().join("store"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(self.addr()).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{name} exited ({status}) before it listened:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name} not listening after 60s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Where the server keeps its objects.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store: it
    /// keeps its objects and forgets its sessions.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

/// A seed server's command, up to its store directory flag.
fn seed_command(name: &str, var: &str) -> Command {
    let mut c = Command::new(tool_bin(var, name, "install-seed.sh"));
    c.arg("--cache-dir");
    c
}

impl SeedServer {
    /// Sends SIGTERM and waits for the server to exit; its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().unwrap()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and returns at once.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }

    /// Waits up to `limit` for the server to exit: its status, or `None`
    /// while it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            let c = self.child.as_mut().expect("server running");
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SeedServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test OIDC issuer (integration/oidc), built with the go on PATH.
pub struct Issuer {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Issuer {
    pub fn start() -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/oidc");
        let bin = dir.path().join("oidc");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&src)
            .env("GOFLAGS", "-mod=mod")
            .output()
            .expect("run go build");
        assert!(
            out.status.success(),
            "building the test OIDC issuer failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url_file = dir.path().join("url");
        let child = Command::new(&bin)
            .args(["-listen", "127.0.0.1:0", "-url-file"])
            .arg(&url_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the test OIDC issuer");
        let start = Instant::now();
        let url = loop {
            if let Ok(u) = std::fs::read_to_string(&url_file) {
                break u.trim().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the test OIDC issuer did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Issuer {
            url,
            child,
            _dir: dir,
        }
    }

    /// A signed identity token; `query` as the issuer's /mint takes it
    /// (aud, exp seconds, sub, extra claims).
    pub fn mint(&self, query: &str) -> String {
        let url = format!("{}/mint?{query}", self.url);
        let got = super::s3server::runtime().block_on(async {
            let resp = reqwest::get(&url).await?.error_for_status()?;
            resp.text().await
        });
        got.unwrap_or_else(|e| panic!("minting a token at {url}: {e}"))
            .trim()
            .to_string()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
