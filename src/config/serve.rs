//! `gocacher serve`'s own flags and their validation into a typed
//! [`ServeConfig`] (the server itself is `crate::serve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::parse::parse_size;
pub use super::serve_modproxy::check_upstream;

/// `gocacher serve`'s own flags (`--max-size` and `--verbose` are the
/// global ones).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Without auth (--token-file, --jwt-issuer),
    /// keep it on localhost or a private network: anyone who reaches it can
    /// read and write.
    #[arg(
        long,
        env = "GOCACHER_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:31364"
    )]
    pub listen: String,

    /// The server's store. Default: the user cache directory +
    /// /gocacher-serve (e.g. ~/.cache/gocacher-serve).
    #[arg(long, env = "GOCACHER_SERVE_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Evict entries unused for longer than this. Units: s, m, h, d.
    #[arg(
        long,
        env = "GOCACHER_MAX_AGE",
        value_name = "DURATION",
        default_value = "60d"
    )]
    pub max_age: String,

    /// Refuse bodies larger than this with 413.
    #[arg(
        long,
        env = "GOCACHER_MAX_OBJECT_SIZE",
        value_name = "SIZE",
        default_value = "1GiB"
    )]
    pub max_object_size: String,

    /// Uploads being written at once; more get 503 with Retry-After.
    #[arg(
        long,
        env = "GOCACHER_MAX_PENDING_WRITES",
        value_name = "N",
        default_value_t = 64
    )]
    pub max_pending_writes: usize,

    /// Outputs of up to 4 MiB are read whole into memory for their replies,
    /// this many bytes at once; replies beyond it are streamed from disk.
    /// Up to half as much again is kept in free read buffers for the next
    /// replies.
    #[arg(
        long,
        env = "GOCACHER_REPLY_MEMORY",
        value_name = "SIZE",
        default_value = "64MiB"
    )]
    pub reply_memory: String,

    /// How long a request body may take, plus one second per 256 KiB of it;
    /// a body that trickles longer is cut off with 408 and nothing is kept.
    #[arg(
        long,
        env = "GOCACHER_BODY_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s"
    )]
    pub body_timeout: String,

    /// Static Bearer tokens, one `TOKEN NAMESPACE read|write` per line
    /// (namespace `global`: the shared one). Turns auth on.
    #[arg(long, env = "GOCACHER_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Accept identity tokens (JWTs) from this OIDC issuer at
    /// /auth/exchange-token (repeatable; env: comma-separated). Turns auth
    /// on; needs at least one --jwt-claim.
    #[arg(
        long,
        env = "GOCACHER_JWT_ISSUERS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub jwt_issuer: Vec<String>,

    /// The audience identity tokens must have.
    #[arg(
        long,
        env = "GOCACHER_JWT_AUDIENCE",
        value_name = "AUD",
        default_value = "gocached"
    )]
    pub jwt_audience: String,

    /// A claim every identity token must have, as CLAIM=VALUE (repeatable;
    /// all must match), e.g. repository=org/repo.
    #[arg(
        long,
        env = "GOCACHER_JWT_CLAIMS",
        value_name = "CLAIM=VALUE",
        value_delimiter = ','
    )]
    pub jwt_claim: Vec<String>,

    /// Tokens with all of these claims write the global namespace, e.g.
    /// ref=refs/heads/main (repeatable). Others write only their own.
    #[arg(
        long,
        env = "GOCACHER_GLOBAL_JWT_CLAIMS",
        value_name = "CLAIM=VALUE",
        value_delimiter = ','
    )]
    pub global_jwt_claim: Vec<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (a port of its own,
    /// never the build-facing one).
    #[arg(long, env = "GOCACHER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// The claim whose value names a session's own namespace (with GitHub:
    /// `ref`, so that each pull request has its own).
    #[arg(
        long,
        env = "GOCACHER_NAMESPACE_CLAIM",
        value_name = "CLAIM",
        default_value = "sub"
    )]
    pub namespace_claim: String,

    /// Sessions made by /auth/exchange-token kept at once; beyond this the
    /// least recently used is dropped (its client exchanges again).
    #[arg(
        long,
        env = "GOCACHER_MAX_SESSIONS",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub max_sessions: u64,

    /// Connections open at once; more wait in the listen queue until one
    /// closes. Capped by the open-file limit.
    #[arg(
        long,
        env = "GOCACHER_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 4096
    )]
    pub max_connections: usize,

    /// A connection that sends no complete request header for this long
    /// (new, or idle between requests) is closed.
    #[arg(
        long,
        env = "GOCACHER_IDLE_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub idle_timeout: String,

    /// On SIGTERM, keep serving this long with /readyz answering 503, so a
    /// load balancer moves clients to other replicas first; 0s stops at
    /// once. A second SIGTERM or Ctrl-C ends the drain.
    #[arg(
        long,
        env = "GOCACHER_DRAIN",
        value_name = "DURATION",
        default_value = "5s"
    )]
    pub drain: String,

    /// Serve HTTPS with this PEM certificate chain (the server's first);
    /// needs --tls-key. Read at start: restart to rotate it.
    #[arg(
        long,
        env = "GOCACHER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "GOCACHER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Also serve Go modules under /mod/ (GOPROXY=http://HOST/mod), with
    /// the checksum database under /mod/sumdb/; what it fetches is kept in
    /// the store and, with --remote, in the bucket.
    #[arg(long, env = "GOCACHER_MODPROXY")]
    pub modproxy: bool,

    /// The module proxy --modproxy fetches from. Default: the first entry
    /// of `go env GOPROXY`.
    #[arg(
        long,
        env = "GOCACHER_MODPROXY_UPSTREAM",
        value_name = "URL",
        requires = "modproxy"
    )]
    pub upstream: Option<String>,

    /// The largest module zip --modproxy fetches (Go's own limit).
    #[arg(
        long,
        env = "GOCACHER_MODPROXY_MAX_ZIP",
        value_name = "SIZE",
        default_value = "500MiB"
    )]
    pub modproxy_max_zip: String,

    /// How long --modproxy reuses a mutable answer (a version list,
    /// @latest, a checksum-database lookup) before asking the upstream
    /// again.
    #[arg(
        long,
        env = "GOCACHER_MODPROXY_TTL",
        value_name = "DURATION",
        default_value = "60s"
    )]
    pub modproxy_ttl: String,

    /// A go.sum whose module files --modproxy copies from the bucket to
    /// disk as it starts, in the background (repeat for more); what the
    /// bucket lacks comes from the upstream when asked for.
    #[arg(long, value_name = "GO.SUM", requires = "modproxy")]
    pub modproxy_prefetch: Vec<PathBuf>,

    /// Serve module zips re-packed with their files stored, not deflated,
    /// so go unpacks them faster; the bucket and the server's disk keep the
    /// zips as fetched. The zips sent grow about four times: for a server
    /// on go's own machine.
    #[arg(long, env = "GOCACHER_MODPROXY_STORED_ZIPS", requires = "modproxy")]
    pub modproxy_stored_zips: bool,
}

/// The store's size cap when `--max-size` is not given (gocached's default).
const DEFAULT_MAX_SIZE: u64 = 50 << 30;

/// Validated settings of `gocacher serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    pub max_size: u64,
    pub max_age: Duration,
    pub max_object_size: u64,
    pub max_pending_writes: usize,
    /// `--reply-memory`: bytes of outputs read whole for replies at once.
    pub reply_memory: u64,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// `--drain`: how long SIGTERM keeps serving with `/readyz` at 503.
    pub drain: Duration,
    pub verbose: bool,
    pub auth: AuthConfig,
    pub metrics_listen: Option<SocketAddr>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--modproxy` and its settings.
    pub modproxy: Option<ModProxyConfig>,
}

/// Settings of `--modproxy`.
#[derive(Debug, Clone)]
pub struct ModProxyConfig {
    /// `--upstream` without its trailing `/`; `None`: the first entry of
    /// `go env GOPROXY`, looked up when the server starts.
    pub upstream: Option<String>,
    /// `--modproxy-max-zip`.
    pub max_zip: u64,
    /// `--modproxy-ttl`: how long a mutable answer is reused.
    pub ttl: Duration,
    /// `--modproxy-prefetch`: go.sum files whose modules are copied from
    /// the bucket at start.
    pub prefetch: Vec<PathBuf>,
    /// `--sign-key` and `--trust-key`: they sign and check the sidecars of
    /// kept module files (the build-cache side of serve does neither).
    pub keys: std::sync::Arc<crate::trust::Keys>,
    /// `--modproxy-stored-zips`: zips are served with their files stored.
    pub stored_zips: bool,
}

impl ServeArgs {
    pub fn validate(&self, max_size: Option<&str>, verbose: bool) -> Result<ServeConfig> {
        let listen = self.listen.parse().with_context(|| {
            format!(
                "--listen {:?}: not an address like 127.0.0.1:31364",
                self.listen
            )
        })?;
        let dir = match &self.dir {
            Some(d) if d.as_os_str().is_empty() => bail!("--dir is empty"),
            Some(d) => d.clone(),
            None => dirs::cache_dir()
                .context("no user cache directory (set $HOME or XDG_CACHE_HOME, or pass --dir)")?
                .join("gocacher-serve"),
        };
        let max_size = match max_size {
            None => DEFAULT_MAX_SIZE,
            Some(s) => match parse_size(s)
                .with_context(|| format!("--max-size {s:?}: not a size like 50GiB"))?
            {
                0 => u64::MAX,
                n => n,
            },
        };
        let duration = |flag: &str, v: &str| {
            humantime::parse_duration(v)
                .with_context(|| format!("{flag} {v:?}: not a duration like 60d or 10s"))
        };
        let max_object_size = parse_size(&self.max_object_size).with_context(|| {
            format!(
                "--max-object-size {:?}: not a size like 1GiB",
                self.max_object_size
            )
        })?;
        if self.max_pending_writes == 0 {
            bail!("--max-pending-writes must be at least 1");
        }
        let reply_memory = parse_size(&self.reply_memory).with_context(|| {
            format!(
                "--reply-memory {:?}: not a size like 64MiB (0: every reply streams)",
                self.reply_memory
            )
        })?;
        let claims = |flag: &str, v: &[String]| -> Result<Vec<Claim>> {
            v.iter().map(|c| parse_claim(flag, c)).collect()
        };
        let auth = AuthConfig {
            token_file: self.token_file.clone(),
            issuers: self
                .jwt_issuer
                .iter()
                .map(|i| i.trim_end_matches('/').to_string())
                .filter(|i| !i.is_empty())
                .collect(),
            audience: self.jwt_audience.clone(),
            claims: claims("--jwt-claim", &self.jwt_claim)?,
            global_claims: claims("--global-jwt-claim", &self.global_jwt_claim)?,
            namespace_claim: self.namespace_claim.clone(),
            max_sessions: self.max_sessions,
        };
        if self.max_sessions == 0 {
            bail!("--max-sessions must be at least 1");
        }
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        let idle_timeout = duration("--idle-timeout", &self.idle_timeout)?;
        if idle_timeout.is_zero() {
            bail!("--idle-timeout must be more than 0s");
        }
        if !auth.issuers.is_empty() && auth.claims.is_empty() {
            bail!("--jwt-issuer needs at least one --jwt-claim (say, repository=ORG/REPO): without one, any token the issuer signs for anyone would do");
        }
        if let Some(i) = auth
            .issuers
            .iter()
            .find(|i| !i.starts_with("https://") && !i.starts_with("http://"))
        {
            bail!("--jwt-issuer {i:?}: expected an https:// (or http://) URL");
        }
        let modproxy = self.modproxy_config()?;
        Ok(ServeConfig {
            modproxy,
            listen,
            dir,
            max_size,
            max_age: duration("--max-age", &self.max_age)?,
            max_object_size,
            max_pending_writes: self.max_pending_writes,
            reply_memory,
            body_timeout: duration("--body-timeout", &self.body_timeout)?,
            max_connections: self.max_connections,
            idle_timeout,
            drain: duration("--drain", &self.drain)?,
            verbose,
            auth,
            metrics_listen: match &self.metrics_listen {
                None => None,
                Some(a) => Some(a.parse().with_context(|| {
                    format!("--metrics-listen {a:?}: not an address like 127.0.0.1:9100")
                })?),
            },
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                (None, None) => None,
                _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
            },
        })
    }
}

/// A claim that must have this string value.
pub type Claim = (String, String);

/// Auth settings (validated flags).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub token_file: Option<std::path::PathBuf>,
    pub issuers: Vec<String>,
    pub audience: String,
    pub claims: Vec<Claim>,
    pub global_claims: Vec<Claim>,
    pub namespace_claim: String,
    /// Exchanged sessions kept at once (`--max-sessions`).
    pub max_sessions: u64,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.token_file.is_some() || !self.issuers.is_empty()
    }
}

/// `k=v`, for `--jwt-claim` and `--global-jwt-claim`.
pub fn parse_claim(flag: &str, s: &str) -> Result<Claim> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} {s:?}: expected CLAIM=VALUE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_parse() {
        assert_eq!(
            parse_claim("--jwt-claim", "ref=refs/heads/main").unwrap(),
            ("ref".into(), "refs/heads/main".into())
        );
        assert!(parse_claim("--jwt-claim", "novalue").is_err());
        assert!(parse_claim("--jwt-claim", "=x").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn validate(args: &[&str]) -> Result<ServeConfig> {
        use clap::Parser;
        let cli = Cli::try_parse_from(["serve", "--dir", "/nonexistent"].iter().chain(args))?;
        cli.serve.validate(None, false)
    }

    #[test]
    fn reply_memory_is_a_size() {
        assert_eq!(validate(&[]).unwrap().reply_memory, 64 << 20);
        let got = validate(&["--reply-memory", "8MiB"]).unwrap();
        assert_eq!(got.reply_memory, 8 << 20);
        assert_eq!(validate(&["--reply-memory", "0"]).unwrap().reply_memory, 0);
        let err = validate(&["--reply-memory", "lots"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("--reply-memory \"lots\": not a size like 64MiB"),
            "{err:#}"
        );
    }
}
