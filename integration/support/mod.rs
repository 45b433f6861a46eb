#![allow(dead_code)] // each test binary uses its own part of these helpers

//! Helpers for the end-to-end suite: a go command with gocacher as its
//! GOCACHEPROG, its captured output, and the stats gocacher wrote at close.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod certs;
pub mod faultproxy;
pub mod s3server;
pub mod seedserver;

use serde_json::Value;

/// No single go command in this suite should take longer; one that does is
/// hung (say, waiting forever for GOCACHEPROG) and fails the test.
const GO_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug)]
pub enum Toolchain {
    /// The go on PATH.
    Local,
    /// Downloaded through the module proxy on first use (as are the next).
    Go1_24_0,
    Go1_25_0,
    Go1_27_3,
}

impl Toolchain {
    fn env(self) -> &'static str {
        match self {
            Toolchain::Local => "local",
            Toolchain::Go1_24_0 => "go1.24.0",
            Toolchain::Go1_25_0 => "go1.25.0",
            Toolchain::Go1_27_3 => "go1.27.3",
        }
    }
}

/// The stats JSON gocacher writes with --stats-file, read back with the
/// library's own type so the two cannot drift apart.
pub use gocacher::stats::Snapshot as Stats;

/// One go command's result.
#[derive(Debug)]
pub struct GoRun {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub stats: Stats,
    /// Action IDs of gets answered "miss" although an earlier go command on
    /// this cache dir had put them: gocacher lost or failed to serve them.
    pub lost: Vec<String>,
    /// Gets answered "miss" for keys nobody ever stored. cmd/go makes a few of
    /// these on every build (e.g. it looks a link marker up under one key and
    /// stores it under another), with its own cache just the same.
    pub never_stored_misses: usize,
    /// Gets in the protocol transcript, whatever their answer.
    pub gets: usize,
    /// Gets answered with an error (cmd/go takes those as misses).
    pub get_errors: usize,
}

impl GoRun {
    /// A warm run: every key gocacher was given is served; the only misses are
    /// the few keys cmd/go looks up but never stores (see `GoRun::lost`).
    pub fn assert_warm(&self) {
        let run = self;
        let s = &run.stats;
        assert!(s.gets > 0, "{:?}: no gets", run.args);
        assert!(
            run.lost.is_empty(),
            "{:?}: stored keys missed: {:?}",
            run.args,
            run.lost
        );
        assert_eq!(
            s.misses as usize, run.never_stored_misses,
            "{:?}: {s:?}",
            run.args
        );
        assert!(
            s.hits * 20 >= s.gets * 19,
            "{:?}: under 95% hits: {s:?}",
            run.args
        );
        assert_eq!(s.hits + s.misses, s.gets, "{:?}: {s:?}", run.args);
        assert_eq!(s.get_errors, 0, "{:?}: {s:?}", run.args);
    }

    pub fn assert_ok(&self) {
        assert!(
            self.status.success(),
            "go {:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// A gocacher cache dir plus the environment for go commands that use it.
#[derive(Clone)]
pub struct GoEnv {
    root: Arc<tempfile::TempDir>,
    cache_dir: PathBuf,
    gocache: PathBuf,
    toolchain: Toolchain,
    flags: Vec<String>,
    /// Every action ID put through this cache dir so far, from the protocol
    /// transcripts of earlier go commands.
    stored: Arc<Mutex<HashSet<String>>>,
    /// Record the protocol with tee (on unless a test turns it off).
    transcript: bool,
    /// Extra environment for go (and so gocacher), e.g. AWS_* settings.
    env: Vec<(String, String)>,
    /// Fail the test when gocacher writes no stats file (on unless a test
    /// kills gocacher on purpose).
    need_stats: bool,
    /// Another GOCACHEPROG in gocacher's place (the seed's go-cacher).
    program: Option<String>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn next_seq() -> usize {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

impl GoEnv {
    pub fn new(toolchain: Toolchain) -> GoEnv {
        let root = Arc::new(tempfile::tempdir().expect("temp dir"));
        let cache_dir = root.path().join("gocacher");
        let env = GoEnv {
            gocache: PathBuf::new(),
            root,
            cache_dir,
            toolchain,
            flags: Vec::new(),
            stored: Arc::default(),
            transcript: true,
            env: Vec::new(),
            need_stats: true,
            program: None,
        };
        env.fresh_gocache()
    }

    /// The same gocacher cache dir with a new, empty GOCACHE: Go's own cache
    /// can then serve nothing, so every hit is gocacher's.
    pub fn fresh_gocache(&self) -> GoEnv {
        let gocache = self.root.path().join(format!("gocache-{}", next_seq()));
        std::fs::create_dir_all(&gocache).unwrap();
        GoEnv {
            gocache,
            ..self.clone()
        }
    }

    pub fn with_flags(&self, flags: &[&str]) -> GoEnv {
        GoEnv {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ..self.clone()
        }
    }

    pub fn with_env(&self, env: Vec<(String, String)>) -> GoEnv {
        GoEnv {
            env,
            ..self.clone()
        }
    }

    /// Another machine: a new, empty cache dir and GOCACHE, the same flags
    /// and environment (so the same bucket), and the shared record of what
    /// was stored, so its misses of keys other machines put count as lost.
    pub fn new_machine(&self) -> GoEnv {
        let cache_dir = self.root.path().join(format!("gocacher-{}", next_seq()));
        GoEnv {
            cache_dir,
            ..self.clone()
        }
        .fresh_gocache()
    }

    pub fn without_transcript(&self) -> GoEnv {
        GoEnv {
            transcript: false,
            ..self.clone()
        }
    }

    /// For go commands whose gocacher a test kills: no stats file is fine.
    /// The same machine running another GOCACHEPROG (a command line) in
    /// gocacher's place; it writes no stats, the transcript still counts.
    pub fn with_program(&self, program: &str) -> GoEnv {
        GoEnv {
            program: Some(program.to_string()),
            need_stats: false,
            ..self.clone()
        }
    }

    pub fn without_stats(&self) -> GoEnv {
        GoEnv {
            need_stats: false,
            ..self.clone()
        }
    }

    /// The same machine with its cache dir somewhere else (say, a small
    /// filesystem mounted for the test).
    pub fn with_cache_dir(&self, dir: &Path) -> GoEnv {
        GoEnv {
            cache_dir: dir.to_path_buf(),
            ..self.clone()
        }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The directory holding this machine's cache dirs, stats files and
    /// transcripts.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Runs `go ARGS` in `dir` and collects its output and gocacher's stats.
    pub fn go(&self, dir: &Path, args: &[&str]) -> GoRun {
        let seq = next_seq();
        let file = |name: &str| self.root.path().join(format!("{name}-{seq}"));
        let (stats_file, input, output) = (file("stats.json"), file("in.log"), file("out.log"));
        // tee records the protocol both ways, so the test can tell which
        // misses were for keys gocacher had been given.
        let gocacher = match &self.program {
            Some(p) => p.clone(),
            None => format!(
                "{} --cache-dir {} --stats-file {} {}",
                env!("CARGO_BIN_EXE_gocacher"),
                self.cache_dir.display(),
                stats_file.display(),
                self.flags.join(" "),
            ),
        };
        let prog = if self.transcript {
            format!(
                "sh -c 'tee {} | {gocacher} | tee {}'",
                input.display(),
                output.display()
            )
        } else {
            gocacher
        };
        let mut cmd = Command::new("go");
        cmd.args(args)
            .current_dir(dir)
            .env("GOCACHE", &self.gocache)
            .env("GOCACHEPROG", prog.trim())
            .env("GOTOOLCHAIN", self.toolchain.env())
            .env("CGO_ENABLED", "1")
            .env("GOFLAGS", "")
            .env_remove("GOEXPERIMENT")
            .env_remove("GOENV")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let (status, stdout, stderr) = run_with_timeout(cmd, GO_TIMEOUT);
        // No stats file means gocacher never reached close (it did not
        // start, crashed, or was killed): "== 0" on its counters would then
        // pass for nothing. Only runs that expect that may go without.
        let stats = match std::fs::read(&stats_file) {
            Ok(b) => serde_json::from_slice(&b).expect("stats file is valid JSON"),
            Err(_) if !self.need_stats => Stats::default(),
            Err(e) => panic!(
                "go {args:?}: gocacher wrote no stats file ({e}): it never reached close\n--- stderr\n{stderr}"
            ),
        };
        let (gets, puts, get_errors) = transcript(&input, &output);
        let n_gets = gets.len();
        let mut stored = self.stored.lock().unwrap();
        let mut lost = Vec::new();
        let mut never_stored_misses = 0;
        for (action, miss) in gets {
            if miss && stored.contains(&action) {
                lost.push(action);
            } else if miss {
                never_stored_misses += 1;
            }
        }
        stored.extend(puts);
        GoRun {
            args: args.iter().map(|s| s.to_string()).collect(),
            status,
            stdout,
            stderr,
            stats,
            lost,
            never_stored_misses,
            gets: n_gets,
            get_errors,
        }
    }
}

/// Reads a protocol transcript: each get's action ID with whether it missed,
/// the action IDs of successful puts, and the number of gets answered with
/// an error.
fn transcript(input: &Path, output: &Path) -> (Vec<(String, bool)>, Vec<String>, usize) {
    let lines = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.is_object())
            .collect()
    };
    let responses: HashMap<i64, Value> = lines(output)
        .into_iter()
        .filter_map(|v| Some((v["ID"].as_i64()?, v)))
        .collect();
    let (mut gets, mut puts, mut get_errors) = (Vec::new(), Vec::new(), 0);
    for req in lines(input) {
        let (Some(id), Some(action)) = (req["ID"].as_i64(), req["ActionID"].as_str()) else {
            continue;
        };
        let Some(resp) = responses.get(&id) else {
            continue;
        };
        match req["Command"].as_str() {
            Some("get") => {
                if resp["Err"].as_str().is_some_and(|e| !e.is_empty()) {
                    get_errors += 1;
                }
                gets.push((action.to_string(), resp["Miss"] == true));
            }
            Some("put") if resp["Err"].is_null() => puts.push(action.to_string()),
            _ => {}
        }
    }
    (gets, puts, get_errors)
}

fn run_with_timeout(mut cmd: Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("go is on PATH");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s).unwrap_or_default()
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).map(|_| s).unwrap_or_default()
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out_t.join().unwrap(), err_t.join().unwrap())
}

/// A private copy of the fixture module.
pub fn fixture_copy() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fixture");
    let dst = tempfile::tempdir().unwrap();
    copy_dir(&src, dst.path());
    dst
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// Every file in a server's store is whole: an output whose bytes hash to
/// its name, an action line, or an output's lz4 frame (empty where
/// compressing does not pay) that decodes to the output; and no writer left
/// a temp file.
pub fn assert_store_whole(store: &Path) {
    assert_no_temp_files(store);
    assert_entries_whole(store);
}

/// [`assert_store_whole`], temp files aside.
pub fn assert_entries_whole(store: &Path) {
    use sha2::Digest;
    let hash = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    for shard in std::fs::read_dir(store).unwrap().flatten() {
        let name = shard.file_name().to_string_lossy().to_string();
        if name.len() != 2 || !shard.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let fname = f.file_name().to_string_lossy().to_string();
            if fname.starts_with(".tmp") {
                continue;
            }
            let data = std::fs::read(f.path()).unwrap();
            if let Some(id) = fname.strip_suffix("-d") {
                assert_eq!(hash(&data), id, "{fname}: partial or wrong bytes");
            } else if let Some(id) = fname.strip_suffix("-z") {
                if !data.is_empty() {
                    assert_eq!(hash(&unlz4(&data)), id, "{fname}: a frame of other bytes");
                }
            } else {
                assert!(fname.ends_with("-a"), "stray file {fname}");
                assert!(data.ends_with(b"\n"), "{fname}: partial action line");
            }
        }
    }
}

/// An lz4 frame's bytes.
pub fn unlz4(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut lz4::Decoder::new(frame).unwrap(), &mut out).unwrap();
    out
}

/// Files in a store's shard directories: entries' and frames.
pub fn files_in(store: &Path) -> usize {
    std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().len() == 2 && d.path().is_dir())
        .map(|d| std::fs::read_dir(d.path()).unwrap().count())
        .sum()
}

/// No writer left a temp file behind. One may be in flight (a server
/// writes lz4 frames in the background), so a temp file must outlast two
/// seconds to count as left behind.
pub fn assert_no_temp_files(cache_dir: &Path) {
    let disk = gocacher::disk::DiskCache::open(cache_dir).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let left = disk.temp_files().unwrap();
        if left.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "left {left:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
