//! The flags as clap parses them, before validation: the global ones and
//! the subcommands.

use std::path::PathBuf;

use clap::Parser;

use super::serve::ServeArgs;
use crate::remote::http::DEFAULT_AUDIENCE;

/// Flags as typed by the user, before validation.
#[derive(Debug, Parser)]
#[command(
    name = "gocacher",
    version,
    about = "A GOCACHEPROG helper: Go's build cache on local disk, shared through S3.",
    long_about = "A GOCACHEPROG helper: Go's build cache on local disk, shared through S3.\n\n\
        Use it as: GOCACHEPROG=gocacher go build ./...\n\
        Single-dash long flags (-cache-dir) are accepted too, as in go-cacher."
)]
pub struct Args {
    /// Directory of the local cache (the mirror that serves every DiskPath).
    /// Default: the user cache directory + /gocacher (e.g. ~/.cache/gocacher).
    #[arg(long, env = "GOCACHER_CACHE_DIR", value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,

    /// Log the cache dir at start and a stats line at close, on stderr.
    #[arg(long, short = 'v', env = "GOCACHER_VERBOSE", global = true)]
    pub verbose: bool,

    /// Write the stats as JSON to this file at close.
    #[arg(long, env = "GOCACHER_STATS_FILE", value_name = "PATH")]
    pub stats_file: Option<PathBuf>,

    /// Do not append this go command's row to the GitHub Actions job summary
    /// (the file GITHUB_STEP_SUMMARY names), which gocacher does by default
    /// when that variable is set.
    #[arg(long, env = "GOCACHER_NO_JOB_SUMMARY")]
    pub no_job_summary: bool,

    /// Remove local entries unused for longer than this (at most one trim a
    /// day, after close). At least 1 day. Units: s, m, h, d.
    #[arg(
        long,
        env = "GOCACHER_TRIM_AGE",
        value_name = "DURATION",
        default_value = "5d",
        global = true
    )]
    pub trim_age: String,

    /// Keep the local cache under this size when trimming, least recently used
    /// first (never entries used within the last day). E.g. 10GiB, 500MB. 0 or
    /// unset: no cap.
    #[arg(long, env = "GOCACHER_MAX_SIZE", value_name = "SIZE", global = true)]
    pub max_size: Option<String>,

    /// Share the cache through this bucket: s3://BUCKET[/PREFIX]. Endpoint,
    /// region and credentials come from the standard AWS chain (AWS_* env,
    /// profiles, SSO, web identity, instance metadata).
    #[arg(long, env = "GOCACHER_REMOTE", value_name = "URL", global = true)]
    pub remote: Option<String>,

    /// Share the cache through a seed-compatible cache server instead of a
    /// bucket: gocached, go-cacher-server or `gocacher serve`, as
    /// http://HOST:PORT or https://... (go-cacher's flag).
    #[arg(long, env = "GOCACHER_CACHE_SERVER", value_name = "URL", global = true)]
    pub cache_server: Option<String>,

    /// Bearer token for --cache-server (go-cacher's flag). Never printed.
    #[arg(
        long,
        env = "GOCACHER_ACCESS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub access_token: Option<String>,

    /// A file holding an OIDC identity token (JWT) to exchange at
    /// --cache-server's /auth/exchange-token for a Bearer token. In GitHub
    /// Actions (with `permissions: id-token: write`) gocacher asks for one
    /// itself when the server wants it.
    #[arg(
        long,
        env = "GOCACHER_OIDC_TOKEN_FILE",
        value_name = "FILE",
        global = true
    )]
    pub oidc_token_file: Option<PathBuf>,

    /// The audience of the identity token gocacher asks GitHub Actions for.
    #[arg(
        long,
        env = "GOCACHER_OIDC_AUDIENCE",
        value_name = "AUD",
        default_value = DEFAULT_AUDIENCE,
        global = true
    )]
    pub oidc_audience: String,

    /// Accepted so that go-cacher command lines keep working; ignored.
    #[arg(long, value_name = "PORT", hide = true, global = true)]
    pub gateway_addr_port: Option<String>,

    /// S3 endpoint URL (MinIO, R2, GCS, LocalStack); default: the AWS chain's
    /// (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), else AWS.
    #[arg(long, env = "GOCACHER_S3_ENDPOINT", value_name = "URL", global = true)]
    pub s3_endpoint: Option<String>,

    /// S3 region; default: the AWS chain's, else us-east-1.
    #[arg(long, env = "GOCACHER_S3_REGION", value_name = "REGION", global = true)]
    pub s3_region: Option<String>,

    /// Use virtual-hosted-style URLs with a custom endpoint (default there:
    /// path-style, as MinIO and LocalStack expect).
    #[arg(long, env = "GOCACHER_S3_VIRTUAL_HOSTED", global = true)]
    pub s3_virtual_hosted: bool,

    /// Send unsigned requests (a public bucket). Implies --read-only.
    #[arg(long, env = "GOCACHER_ANONYMOUS", global = true)]
    pub anonymous: bool,

    /// Read from the bucket, never upload.
    #[arg(long, env = "GOCACHER_READ_ONLY", global = true)]
    pub read_only: bool,

    /// Bound on one bucket lookup: to the response, and between chunks of
    /// its body. A slower bucket counts as failing.
    #[arg(
        long,
        env = "GOCACHER_REMOTE_TIMEOUT",
        value_name = "DURATION",
        default_value = "3s",
        global = true
    )]
    pub remote_timeout: String,

    /// Bound on one upload (plus 1s per 8 MiB of object).
    #[arg(
        long,
        env = "GOCACHER_UPLOAD_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub upload_timeout: String,

    /// The most close waits for the bucket, in all: queued uploads, then the
    /// manifest and pack writes. Not at all once the bucket stopped answering.
    #[arg(
        long,
        env = "GOCACHER_UPLOAD_DRAIN_TIMEOUT",
        value_name = "DURATION",
        default_value = "20s"
    )]
    pub upload_drain_timeout: String,

    /// Uploads in flight at once.
    #[arg(
        long,
        env = "GOCACHER_UPLOAD_WORKERS",
        value_name = "N",
        default_value_t = 8
    )]
    pub upload_workers: usize,

    /// Uploads that may wait; more are dropped (and counted), never waited for.
    #[arg(
        long,
        env = "GOCACHER_UPLOAD_QUEUE",
        value_name = "N",
        default_value_t = 2048
    )]
    pub upload_queue: usize,

    /// The build manifest scope this go command reads and writes (see
    /// README: Prefetch). Default: derived from GitHub Actions or GitLab CI
    /// variables, else the working directory, plus the target platform and
    /// the go subcommand.
    #[arg(long, env = "GOCACHER_SCOPE", value_name = "NAME")]
    pub scope: Option<String>,

    /// Scopes whose manifest to prefetch from when the scope has none yet,
    /// comma-separated, first found wins (e.g. the base branch's scope).
    #[arg(long, env = "GOCACHER_SCOPE_FALLBACK", value_name = "NAMES")]
    pub scope_fallback: Option<String>,

    /// Prefetch downloads in flight at once; 0 turns prefetch off (the
    /// manifest is still written).
    #[arg(
        long,
        env = "GOCACHER_PREFETCH_CONCURRENCY",
        value_name = "N",
        default_value_t = 64
    )]
    pub prefetch_concurrency: usize,

    /// Sign every entry, manifest and pack this writer uploads with the
    /// ed25519 key in FILE (from `gocacher keygen`). The writer then also
    /// trusts its own key (as if given to --trust-key). With serve
    /// --modproxy: the kept module files' sidecars.
    #[arg(
        long,
        env = "GOCACHER_SIGN_KEY_FILE",
        value_name = "FILE",
        global = true
    )]
    pub sign_key: Option<PathBuf>,

    /// The signing key itself (64 hex digits), for CI secrets; instead of
    /// --sign-key. Never printed.
    #[arg(
        long,
        env = "GOCACHER_SIGN_KEY",
        value_name = "KEY",
        hide = true,
        hide_env_values = true,
        global = true
    )]
    pub sign_key_value: Option<String>,

    /// Use only bucket entries, manifests and packs signed by this public
    /// key (64 hex digits, or a file holding them, such as PATH.pub from
    /// keygen). Repeatable, for key rotation; GOCACHER_TRUST_KEYS takes a
    /// comma-separated list. Without it every writer is trusted. Without
    /// --sign-key too, nothing is uploaded (as with --read-only). With
    /// serve --modproxy: module files from the bucket.
    #[arg(
        long = "trust-key",
        env = "GOCACHER_TRUST_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        global = true
    )]
    pub trust_keys: Vec<String>,

    /// A read-only fallback location, s3://BUCKET[/PREFIX]: lookups that
    /// miss --remote try it, and manifests and packs are read from it;
    /// nothing is ever written there. Repeatable, tried in order;
    /// GOCACHER_ALSO_READ takes a comma-separated list.
    #[arg(
        long = "also-read",
        env = "GOCACHER_ALSO_READ",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub also_read: Vec<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Check the bucket given by --remote: credentials, bucket, write, read
    /// and delete of a probe object, with the latency of each. Exits non-zero
    /// with the reason when a step fails.
    Check,
    /// Trim the cache dir now, whatever the daily stamp says: entries unused
    /// for --trim-age, then the oldest until it fits --max-size. Entries used
    /// in the last day are always kept. Safe while go commands use the dir.
    Trim,
    /// Run a cache server for a team or a fleet, speaking both of the seed's
    /// APIs (gocached and go-cacher-server) plus the manifests and packs a
    /// gocacher client prefetches from. --max-size caps its store (default
    /// 50GiB).
    Serve(Box<ServeArgs>),
    /// Make an ed25519 key pair for signed entries: the private key at PATH
    /// (mode 0600), the public key at PATH.pub and on stdout. Never
    /// overwrites a file.
    Keygen {
        /// Where to write the private key.
        path: PathBuf,
    },
    /// Give every file git tracks under DIR an mtime picked by its contents
    /// (its blob ID), so `go test` results that read files stay cached across
    /// fresh checkouts (Go's test cache keys on the mtimes of files a test
    /// opens). Files with local changes are left alone.
    FixMtimes {
        /// The work tree, or a directory in it (default: the current one).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// For the GitHub Action: whether this job should only read the bucket
    /// (a fork's pull request, an untrusted event) and which key input it
    /// may sign with. Prints true or false, a tab, sign-key,
    /// pull-request-sign-key or none, a tab and the reason.
    #[command(hide = true)]
    GithubReadOnly,
}
