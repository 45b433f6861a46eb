//! One replica of the fleet: `gocacher serve --remote` on its own port,
//! store and log, started, SIGKILLed, SIGTERMed and started again.

use super::*;

/// One `gocacher serve --remote` replica, with its store, its log and its
/// ports kept across restarts.
pub(super) struct Replica {
    pub(super) name: String,
    pub(super) port: u16,
    pub(super) metrics_port: u16,
    pub(super) root: tempfile::TempDir,
    pub(super) env: Vec<(String, String)>,
    pub(super) child: Option<Child>,
}

impl Replica {
    pub(super) fn new(name: &str, env: Vec<(String, String)>) -> Replica {
        Replica {
            name: name.to_string(),
            port: free_port(),
            metrics_port: free_port(),
            root: tempfile::tempdir().unwrap(),
            env,
            child: None,
        }
    }

    pub(super) fn store(&self) -> PathBuf {
        self.root.path().join("store")
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the replica and waits until it accepts connections.
    pub(super) fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gocacher"))
            .arg("serve")
            .arg("--dir")
            .arg(self.store())
            .arg("--listen")
            .arg(local(self.port).to_string())
            .arg("--metrics-listen")
            .arg(local(self.metrics_port).to_string())
            .args(["--remote", &format!("s3://{BUCKET}/fleet")])
            .args(["--drain", DRAIN])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start gocacher serve");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(local(self.port)).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("replica {} exited ({st}):\n{}", self.name, self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "replica {} not listening after 60 s:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: its /readyz answers 503 at once, and it serves on for its
    /// `--drain` before it stops.
    pub(super) fn signal_term(&self) {
        let c = self.child.as_ref().expect("replica running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
    }

    /// Whether the process is still running.
    pub(super) fn running(&mut self) -> bool {
        let c = self.child.as_mut().expect("replica started");
        c.try_wait().unwrap().is_none()
    }

    /// Its exit after [`Replica::signal_term`] (in-flight requests finish
    /// first).
    pub(super) fn wait_exit(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("replica running");
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "replica {} still running 30 s after SIGTERM:\n{}",
                    self.name,
                    tail(&self.log(), 50)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A counter from the replica's /metrics (0 when it is not there).
    pub(super) fn counter(&self, name: &str) -> u64 {
        let (status, text) = http_get(local(self.metrics_port), "/metrics")
            .unwrap_or_else(|| panic!("replica {}'s metrics port does not answer", self.name));
        assert_eq!(status, 200, "{text}");
        text.lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|rest| rest.trim().parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!(
                "--- replica {} log ({}), last lines:\n{}",
                self.name,
                self.log_path().display(),
                tail(&self.log(), 40)
            );
        }
    }
}
