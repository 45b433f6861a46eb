//! Real S3 servers for the suite: MinIO and LocalStack, each started on a
//! free 127.0.0.1 port with its own data dir, and killed when dropped.
//! Install them first with integration/tools/install-minio.sh and
//! localstack/install.sh (.ci/run does); a missing server fails the test.
//! `S3Server::read_only_user` also needs mc (integration/tools/install-mc.sh).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Minio,
    LocalStack,
}

pub struct S3Server {
    pub kind: Kind,
    pub endpoint: String,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    key: &'static str,
    secret: &'static str,
}

pub fn tools_dir() -> PathBuf {
    match std::env::var_os("GOCACHER_TOOLS_DIR") {
        Some(d) => PathBuf::from(d),
        None => dirs::home_dir()
            .expect("$HOME")
            .join(".cache/gocacher-tools"),
    }
}

/// A tool binary: $VAR if set, else $GOCACHER_TOOLS_DIR/bin/NAME, which must
/// exist (`install` is the script that puts it there).
pub fn tool_bin(var: &str, name: &str, install: &str) -> PathBuf {
    let bin = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join("bin").join(name));
    assert!(
        bin.exists(),
        "{name} is not installed at {}: run integration/tools/{install}",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The environment for a gocacher reaching `endpoint` with these keys.
fn env_for(key: &str, secret: &str, endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_S3", endpoint),
        // Never look for instance metadata (a non-loopback address).
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl S3Server {
    pub fn start(kind: Kind) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (key, secret) = match kind {
            Kind::Minio => ("gocacher", "gocacher-secret"),
            Kind::LocalStack => ("test", "test"),
        };
        let mut server = S3Server {
            kind,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child: None,
            dir,
            key,
            secret,
        };
        server.spawn();
        server
    }

    /// Starts the server process on this server's port and data dir, and
    /// waits until it answers.
    fn spawn(&mut self) {
        let (port, dir) = (self.port, self.dir.path());
        // Appended to, so the log of a restarted server keeps the first run's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let mut cmd = match self.kind {
            Kind::Minio => {
                let mut c =
                    Command::new(tool_bin("GOCACHER_MINIO_BIN", "minio", "install-minio.sh"));
                c.args(["server", "--quiet", "--address"])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--certs-dir")
                    .arg(dir.join("certs"))
                    .arg(dir.join("data"))
                    .env("MINIO_BROWSER", "off")
                    .env("MINIO_ROOT_USER", self.key)
                    .env("MINIO_ROOT_PASSWORD", self.secret);
                c
            }
            Kind::LocalStack => {
                let venv = tools_dir().join("localstack-venv/bin/python");
                assert!(
                    venv.exists(),
                    "LocalStack is not installed ({} missing): run localstack/install.sh",
                    venv.display()
                );
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("localstack/start.sh");
                let mut c = Command::new("bash");
                c.arg(script).arg(port.to_string()).arg(dir.join("ls"));
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the S3 server");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(90));
    }

    /// Kills the server (if running) and starts it again on the same port
    /// and data dir. MinIO keeps its buckets and objects; LocalStack runs
    /// without persistence, so after a restart it has none.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's address, e.g. as a `FaultProxy` upstream.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        let client = self.client();
        let rt = runtime();
        loop {
            if rt.block_on(client.list_buckets().send()).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{:?} exited ({status}) before it was ready:\n{}",
                    self.kind,
                    self.log_tail()
                );
            }
            if start.elapsed() > limit {
                panic!(
                    "{:?} not ready after {limit:?}:\n{}",
                    self.kind,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The environment a gocacher needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with_secret(self.secret)
    }

    pub fn env_with_secret(&self, secret: &str) -> Vec<(String, String)> {
        env_for(self.key, secret, &self.endpoint)
    }

    /// The environment for a gocacher that reaches this server through
    /// `url` (say, a `FaultProxy`'s) instead of directly.
    pub fn env_with_endpoint(&self, url: &str) -> Vec<(String, String)> {
        env_for(self.key, self.secret, url)
    }

    pub fn client(&self) -> Client {
        let creds = aws_sdk_s3::config::Credentials::new(self.key, self.secret, None, None, "test");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        Client::from_conf(conf)
    }

    pub fn create_bucket(&self, name: &str) {
        runtime()
            .block_on(self.client().create_bucket().bucket(name).send())
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    }

    /// Deletes every object in the bucket (aborting unfinished multipart
    /// uploads too), then the bucket.
    pub fn delete_bucket(&self, name: &str) {
        let rt = runtime();
        let client = self.client();
        loop {
            let out = rt
                .block_on(client.list_multipart_uploads().bucket(name).send())
                .unwrap_or_else(|e| panic!("list uploads in {name}: {e:?}"));
            let uploads = out.uploads();
            for u in uploads {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                rt.block_on(
                    client
                        .abort_multipart_upload()
                        .bucket(name)
                        .key(key)
                        .upload_id(id)
                        .send(),
                )
                .unwrap_or_else(|e| panic!("abort upload of {key}: {e:?}"));
            }
            if uploads.is_empty() || out.is_truncated() != Some(true) {
                break;
            }
        }
        // Writers may still be adding objects (a build in flight): empty
        // the bucket and delete it until no object slips in between.
        for attempt in 0.. {
            self.delete(name, &self.keys(name, ""));
            match rt.block_on(client.delete_bucket().bucket(name).send()) {
                Ok(_) => break,
                Err(e) if attempt < 50 => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("delete bucket {name}: {e:?}"),
            }
        }
    }

    /// Environment like `env()`'s, for a new MinIO user that may only read
    /// `bucket` (s3:GetObject, s3:ListBucket, s3:GetBucketLocation): its
    /// puts fail with AccessDenied. Uses mc, with its config in this
    /// server's own dir (never ~/.mc).
    pub fn read_only_user(&self, bucket: &str) -> Vec<(String, String)> {
        assert_eq!(
            self.kind,
            Kind::Minio,
            "read_only_user needs MinIO's admin API: LocalStack has no IAM users here"
        );
        static USERS: AtomicUsize = AtomicUsize::new(0);
        let n = USERS.fetch_add(1, Ordering::Relaxed);
        let (user, secret) = (format!("readonly{n}"), format!("readonly{n}-secret"));
        let policy_name = format!("readonly{n}-{bucket}");
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
                    "Resource": [format!("arn:aws:s3:::{bucket}")],
                },
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": [format!("arn:aws:s3:::{bucket}/*")],
                },
            ],
        });
        let policy_file = self.dir.path().join(format!("{policy_name}.json"));
        std::fs::write(&policy_file, policy.to_string()).unwrap();
        let policy_file = policy_file.to_str().unwrap();
        let alias = "gocacher";
        self.mc(&["alias", "set", alias, &self.endpoint, self.key, self.secret]);
        self.mc(&["admin", "user", "add", alias, &user, &secret]);
        self.mc(&[
            "admin",
            "policy",
            "create",
            alias,
            &policy_name,
            policy_file,
        ]);
        self.mc(&[
            "admin",
            "policy",
            "attach",
            alias,
            &policy_name,
            "--user",
            &user,
        ]);
        env_for(&user, &secret, &self.endpoint)
    }

    /// Environment like `env()`'s, for a new MinIO user that may do `actions`
    /// (e.g. "s3:GetObject") on `bucket`'s objects, and list it; its user
    /// name is the first of the pair.
    pub fn user_with(&self, bucket: &str, actions: &[&str]) -> (String, Vec<(String, String)>) {
        static USERS: AtomicUsize = AtomicUsize::new(0);
        let n = USERS.fetch_add(1, Ordering::Relaxed);
        let (user, secret) = (format!("user{n}"), format!("user{n}-secret"));
        let alias = "gocacher";
        self.mc(&["alias", "set", alias, &self.endpoint, self.key, self.secret]);
        self.mc(&["admin", "user", "add", alias, &user, &secret]);
        self.set_actions(&user, bucket, actions);
        (user.clone(), env_for(&user, &secret, &self.endpoint))
    }

    /// Replaces what `user` (of [`S3Server::user_with`]) may do on `bucket`'s
    /// objects with `actions`.
    pub fn set_actions(&self, user: &str, bucket: &str, actions: &[&str]) {
        static POLICIES: AtomicUsize = AtomicUsize::new(0);
        let n = POLICIES.fetch_add(1, Ordering::Relaxed);
        let name = format!("{user}-p{n}");
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
                    "Resource": [format!("arn:aws:s3:::{bucket}")],
                },
                {
                    "Effect": "Allow",
                    "Action": actions,
                    "Resource": [format!("arn:aws:s3:::{bucket}/*")],
                },
            ],
        });
        let file = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&file, policy.to_string()).unwrap();
        let alias = "gocacher";
        self.mc(&[
            "admin",
            "policy",
            "create",
            alias,
            &name,
            file.to_str().unwrap(),
        ]);
        // Drop the user's policies first (none for a new user).
        let bin = tool_bin("GOCACHER_MC_BIN", "mc", "install-mc.sh");
        let info = Command::new(bin)
            .args(["--no-color", "--json", "admin", "user", "info", alias, user])
            .env("MC_CONFIG_DIR", self.dir.path().join("mc"))
            .output()
            .expect("run mc");
        let info: serde_json::Value =
            serde_json::from_slice(&info.stdout).unwrap_or(serde_json::Value::Null);
        if let Some(old) = info["policyName"].as_str().filter(|p| !p.is_empty()) {
            for p in old.split(',') {
                self.mc(&["admin", "policy", "detach", alias, p, "--user", user]);
            }
        }
        self.mc(&["admin", "policy", "attach", alias, &name, "--user", user]);
    }

    /// Runs mc with this server's private config dir; panics on failure.
    fn mc(&self, args: &[&str]) {
        let bin = tool_bin("GOCACHER_MC_BIN", "mc", "install-mc.sh");
        let out = Command::new(bin)
            .args(["--no-color", "--quiet"])
            .args(args)
            .env("MC_CONFIG_DIR", self.dir.path().join("mc"))
            .stdin(Stdio::null())
            .output()
            .expect("run mc");
        assert!(
            out.status.success(),
            "mc {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Keys under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let rt = runtime();
        let client = self.client();
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = rt
                .block_on(
                    client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(prefix)
                        .set_continuation_token(token)
                        .send(),
                )
                .unwrap();
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            token = out.next_continuation_token().map(String::from);
            if token.is_none() {
                return keys;
            }
        }
    }

    /// Cache entries (not build manifests or packs) under `prefix`.
    pub fn entry_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = self.keys(bucket, prefix);
        keys.retain(|k| !k.contains("/manifests/") && !k.contains("/packs/"));
        keys
    }

    /// Packs under `prefix`.
    pub fn pack_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = self.keys(bucket, prefix);
        keys.retain(|k| k.contains("/packs/"));
        keys
    }

    /// An object's bytes.
    pub fn get_raw(&self, bucket: &str, key: &str) -> Vec<u8> {
        let rt = runtime();
        let out = rt
            .block_on(self.client().get_object().bucket(bucket).key(key).send())
            .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
        rt.block_on(out.body.collect())
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    /// Build manifests under `prefix`.
    pub fn manifest_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = self.keys(bucket, prefix);
        keys.retain(|k| k.contains("/manifests/"));
        keys
    }

    pub fn put_raw(&self, bucket: &str, key: &str, body: Vec<u8>) {
        runtime()
            .block_on(
                self.client()
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body))
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    pub fn delete(&self, bucket: &str, keys: &[String]) {
        let rt = runtime();
        let client = self.client();
        for key in keys {
            rt.block_on(client.delete_object().bucket(bucket).key(key).send())
                .unwrap_or_else(|e| panic!("delete {key}: {e:?}"));
        }
    }

    /// Rewrites every cache entry under `prefix` (not the manifests or packs) with
    /// damaged bytes and the same metadata: one in two has a byte flipped,
    /// the others are cut in half. Returns how many were damaged.
    pub fn corrupt_all(&self, bucket: &str, prefix: &str) -> usize {
        let rt = runtime();
        let client = self.client();
        let keys = self.entry_keys(bucket, prefix);
        let mut damaged = 0;
        for (i, key) in keys.iter().enumerate() {
            let out = rt
                .block_on(client.get_object().bucket(bucket).key(key).send())
                .unwrap();
            let meta: HashMap<String, String> = out.metadata().cloned().unwrap_or_default();
            let mut body = rt
                .block_on(out.body.collect())
                .unwrap()
                .into_bytes()
                .to_vec();
            if body.is_empty() {
                continue; // nothing to damage in an empty output
            }
            if i % 2 == 0 {
                let mid = body.len() / 2;
                body[mid] ^= 0x5A;
            } else {
                body.truncate(body.len() / 2);
            }
            rt.block_on(
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .set_metadata(Some(meta))
                    .body(ByteStream::from(body))
                    .send(),
            )
            .unwrap();
            damaged += 1;
        }
        damaged
    }

    /// Moves each object's body and metadata to the next key of `keys` (the
    /// last one's to the first): every key then holds another entry's
    /// genuine object, sha256 and all.
    pub fn rotate(&self, bucket: &str, keys: &[String]) {
        let rt = runtime();
        let client = self.client();
        let objects: Vec<(HashMap<String, String>, Vec<u8>)> = keys
            .iter()
            .map(|key| {
                let out = rt
                    .block_on(client.get_object().bucket(bucket).key(key).send())
                    .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
                let meta = out.metadata().cloned().unwrap_or_default();
                let body = rt
                    .block_on(out.body.collect())
                    .unwrap()
                    .into_bytes()
                    .to_vec();
                (meta, body)
            })
            .collect();
        for (i, (meta, body)) in objects.into_iter().enumerate() {
            let key = &keys[(i + 1) % keys.len()];
            rt.block_on(
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .set_metadata(Some(meta))
                    .body(ByteStream::from(body))
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
