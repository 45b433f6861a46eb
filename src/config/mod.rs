//! Command-line flags (each with a `GOCACHER_*` environment mirror) and their
//! validation into one typed [`Config`]. Every bad value is caught here, at
//! start, with a one-line reason: cmd/go shows our stderr to the user.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::disk::TRIM_MIN_AGE;
use crate::remote::http::{HttpSettings, Identity, DEFAULT_AUDIENCE};
use crate::remote::s3::S3Settings;
use crate::remote::RemoteOptions;

/// More prefetch downloads at once buy nothing and cost memory.
const MAX_PREFETCH_CONCURRENCY: usize = 256;

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
    /// trusts its own key (as if given to --trust-key).
    #[arg(long, env = "GOCACHER_SIGN_KEY_FILE", value_name = "FILE")]
    pub sign_key: Option<PathBuf>,

    /// The signing key itself (64 hex digits), for CI secrets; instead of
    /// --sign-key. Never printed.
    #[arg(
        long,
        env = "GOCACHER_SIGN_KEY",
        value_name = "KEY",
        hide = true,
        hide_env_values = true
    )]
    pub sign_key_value: Option<String>,

    /// Use only bucket entries, manifests and packs signed by this public
    /// key (64 hex digits, or a file holding them, such as PATH.pub from
    /// keygen). Repeatable, for key rotation; GOCACHER_TRUST_KEYS takes a
    /// comma-separated list. Without it every writer is trusted. Without
    /// --sign-key too, nothing is uploaded (as with --read-only).
    #[arg(
        long = "trust-key",
        env = "GOCACHER_TRUST_KEYS",
        value_name = "KEY",
        value_delimiter = ','
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
    Serve(Box<crate::serve::ServeArgs>),
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

/// Which store the remote tier uses.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    S3(S3Settings),
    Http(HttpSettings),
}

/// The remote tier's settings.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub store: StoreSettings,
    pub opts: RemoteOptions,
    pub drain: Duration,
    /// `--scope` and `--scope-fallback` as given (resolved at start).
    pub scope: Option<String>,
    pub scope_fallback: Option<String>,
    pub prefetch_concurrency: usize,
    /// `--also-read` locations: bucket and prefix each.
    pub also_read: Vec<(String, String)>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub cache_dir: PathBuf,
    pub verbose: bool,
    pub stats_file: Option<PathBuf>,
    /// The GitHub Actions job summary file to append a row to.
    pub job_summary: Option<PathBuf>,
    pub trim_age: Duration,
    pub max_size: Option<u64>,
    pub remote: Option<RemoteConfig>,
    pub command: Option<Command>,
    /// `gocacher serve`'s settings, when that is the command.
    pub serve: Option<crate::serve::ServeConfig>,
    /// `--gateway-addr-port` was given (ignored; said with --verbose).
    pub gateway_port_ignored: bool,
}

impl Args {
    /// Parses argv, accepting go-cacher's single-dash long flags.
    pub fn parse_from_env() -> Args {
        Args::parse_from(normalize_args(std::env::args_os()))
    }

    pub fn validate(self) -> Result<Config> {
        let keys = self.keys()?;
        let serve = match &self.command {
            Some(Command::Serve(args)) => {
                if self.cache_server.is_some() {
                    bail!("serve takes --remote s3://BUCKET[/PREFIX] to share its store, not --cache-server");
                }
                Some(args.validate(self.max_size.as_deref(), self.verbose)?)
            }
            _ => None,
        };
        let cache_dir = match self.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => bail!("--cache-dir is empty"),
            Some(dir) => dir,
            None => dirs::cache_dir()
                .context(
                    "no user cache directory (set $HOME or XDG_CACHE_HOME, or pass --cache-dir)",
                )?
                .join("gocacher"),
        };
        let trim_age = humantime::parse_duration(&self.trim_age).with_context(|| {
            format!(
                "--trim-age {:?}: not a duration like 5d or 36h",
                self.trim_age
            )
        })?;
        if trim_age < TRIM_MIN_AGE {
            bail!(
                "--trim-age {} is below the 1-day minimum (entries used within a day may still be in use)",
                self.trim_age
            );
        }
        let max_size = match self.max_size.as_deref() {
            None => None,
            Some(s) => match parse_size(s)
                .with_context(|| format!("--max-size {s:?}: not a size like 10GiB or 500MB"))?
            {
                0 => None,
                n => Some(n),
            },
        };
        let duration = |flag: &str, v: &str| {
            humantime::parse_duration(v)
                .with_context(|| format!("{flag} {v:?}: not a duration like 5s or 2m"))
        };
        let remote_timeout = duration("--remote-timeout", &self.remote_timeout)?;
        let upload_timeout = duration("--upload-timeout", &self.upload_timeout)?;
        let drain = duration("--upload-drain-timeout", &self.upload_drain_timeout)?;
        if remote_timeout.is_zero() || upload_timeout.is_zero() {
            bail!("--remote-timeout and --upload-timeout must be above zero");
        }
        if self.upload_workers == 0 {
            bail!("--upload-workers must be at least 1");
        }
        let signing = keys.signer.is_some() || keys.trust.is_some();
        let also_read = self
            .also_read
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .map(|u| {
                S3Settings::parse_url(u).map_err(|e| {
                    anyhow::anyhow!("--also-read: {}", e.to_string().replace("--remote ", ""))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if serve.is_some() && (signing || !also_read.is_empty()) {
            bail!("serve does not sign or check entries, nor read --also-read locations: give --sign-key, --trust-key and --also-read to the gocacher clients");
        }
        if (signing || !also_read.is_empty())
            && self.remote.as_deref().is_none_or(|r| r.is_empty())
            && self.command.is_none()
        {
            bail!("--sign-key, --trust-key and --also-read need --remote s3://BUCKET[/PREFIX] (signatures travel in S3 object metadata)");
        }
        let opts = RemoteOptions {
            timeout: remote_timeout,
            upload_timeout,
            upload_workers: self.upload_workers,
            upload_queue: self.upload_queue,
            // A reader that trusts keys but signs nothing uploads nothing:
            // neither it nor any reader like it would use what it wrote, and
            // its unsigned manifests would replace the signed ones.
            read_only: self.read_only
                || self.anonymous
                || (keys.trust.is_some() && keys.signer.is_none()),
            breaker_cooldown: crate::remote::breaker::COOLDOWN,
            spool: true,
            keys: std::sync::Arc::new(keys),
            policy: crate::remote::Policy::OneShot,
        };
        let server = self.cache_server.as_deref().filter(|s| !s.is_empty());
        let bucket = self.remote.as_deref().filter(|s| !s.is_empty());
        let store = match (bucket, server) {
            (Some(_), Some(_)) => bail!(
                "--remote and --cache-server name two remotes; give one (a bucket, or a cache server)"
            ),
            (None, None) => {
                if self.command == Some(Command::Check) {
                    bail!("check needs --remote s3://BUCKET[/PREFIX]");
                }
                None
            }
            (None, Some(url)) => {
                if self.command == Some(Command::Check) {
                    bail!("check works with --remote s3://BUCKET[/PREFIX], not --cache-server");
                }
                let redacted = crate::remote::s3::redact_url(url);
                let Some(rest) = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"))
                else {
                    bail!("--cache-server {redacted:?}: expected http://HOST[:PORT] or https://...");
                };
                if rest.trim_end_matches('/').is_empty() {
                    bail!("--cache-server {redacted:?}: no host");
                }
                let identity = match self.oidc_token_file {
                    Some(path) => Some(Identity::File(path)),
                    None if self.access_token.is_none() => actions_identity(&self.oidc_audience),
                    None => None,
                };
                Some(StoreSettings::Http(HttpSettings {
                    base: url.trim_end_matches('/').to_string(),
                    access_token: self.access_token.filter(|t| !t.is_empty()),
                    identity,
                }))
            }
            (Some(url), None) => {
                let (bucket, prefix) = S3Settings::parse_url(url)?;
                if let Some(ep) = &self.s3_endpoint {
                    if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                        bail!(
                            "--s3-endpoint {:?}: expected http://HOST[:PORT] or https://...",
                            crate::remote::s3::redact_url(ep)
                        );
                    }
                }
                Some(StoreSettings::S3(S3Settings {
                    bucket,
                    prefix,
                    endpoint: self.s3_endpoint,
                    region: self.s3_region,
                    virtual_hosted: self.s3_virtual_hosted,
                    anonymous: self.anonymous,
                }))
            }
        };
        let remote = store.map(|store| RemoteConfig {
            store,
            opts,
            drain,
            scope: self.scope,
            scope_fallback: self.scope_fallback,
            prefetch_concurrency: self.prefetch_concurrency.min(MAX_PREFETCH_CONCURRENCY),
            also_read,
        });
        Ok(Config {
            cache_dir,
            verbose: self.verbose,
            stats_file: self.stats_file,
            job_summary: if self.no_job_summary {
                None
            } else {
                std::env::var_os("GITHUB_STEP_SUMMARY")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            },
            trim_age,
            max_size,
            remote,
            command: self.command,
            serve,
            gateway_port_ignored: self.gateway_addr_port.is_some(),
        })
    }
}

impl Args {
    /// `--sign-key` (or `GOCACHER_SIGN_KEY`) and `--trust-key`, loaded.
    fn keys(&self) -> Result<crate::trust::Keys> {
        use crate::trust::{Signer, Trust};
        let signer = match (
            &self.sign_key,
            self.sign_key_value.as_deref().map(str::trim),
        ) {
            (Some(_), Some(v)) if !v.is_empty() => {
                bail!("--sign-key and GOCACHER_SIGN_KEY both name a signing key; give one")
            }
            (Some(path), _) => Some(Signer::from_file(path)?),
            (None, Some(v)) if !v.is_empty() => {
                Some(Signer::from_hex(v).context("GOCACHER_SIGN_KEY")?)
            }
            (None, _) => None,
        };
        let given: Vec<String> = self
            .trust_keys
            .iter()
            .filter(|k| !k.trim().is_empty())
            .cloned()
            .collect();
        let trust = if given.is_empty() {
            None
        } else {
            Some(Trust::parse(&given)?)
        };
        // A writer that signs trusts its own key: it never re-signs, in a
        // pack, an entry some other writer stored.
        let trust = match (trust, &signer) {
            (Some(t), Some(s)) => Some(t.with_signer(s)),
            (None, Some(s)) => Some(Trust::parse(&[s.public_hex()])?),
            (t, None) => t,
        };
        Ok(crate::trust::Keys { signer, trust })
    }
}

/// In GitHub Actions with `id-token: write`, where to ask for an identity
/// token (exchanged only if the cache server asks for authentication).
fn actions_identity(audience: &str) -> Option<Identity> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(Identity::Actions {
        url: var("ACTIONS_ID_TOKEN_REQUEST_URL")?,
        token: var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")?,
        audience: audience.to_string(),
    })
}

/// Rewrites `-flag` and `-flag=value` (Go's flag syntax, as go-cacher takes
/// them) to `--flag`, for flag names longer than one letter.
fn normalize_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some(s) if s.len() > 2 && s.starts_with('-') && !s.starts_with("--") => {
                let name = s[1..].split('=').next().unwrap_or("");
                if name.len() > 1 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    format!("-{s}").into()
                } else {
                    a
                }
            }
            _ => a,
        })
        .collect()
}

/// Parses "123", "10k", "500MB", "10GiB": decimal (k, MB, GB, TB) and
/// binary (KiB, MiB, GiB, TiB) units in any case, a space allowed before
/// the unit.
pub fn parse_size(s: &str) -> Result<u64> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests;
