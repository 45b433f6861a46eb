//! Command-line flags (each with a `GOCACHER_*` environment mirror) and their
//! validation into one typed [`Config`]. Every bad value is caught here, at
//! start, with a one-line reason: cmd/go shows our stderr to the user.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::disk::TRIM_MIN_AGE;
use crate::remote::http::{HttpSettings, Identity};
use crate::remote::s3::S3Settings;
use crate::remote::RemoteOptions;
use crate::remote::StoreSettings;

mod args;
mod parse;
pub mod serve;
mod serve_modproxy;

pub use args::{Args, Command};
use parse::normalize_args;
pub use parse::parse_size;
pub use serve::ServeConfig;

/// More prefetch downloads at once buy nothing and cost memory.
const MAX_PREFETCH_CONCURRENCY: usize = 256;

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
    pub serve: Option<ServeConfig>,
    /// `--gateway-addr-port` was given (ignored; said with --verbose).
    pub gateway_port_ignored: bool,
}

impl Args {
    /// Parses argv, accepting go-cacher's single-dash long flags.
    pub fn parse_from_env() -> Args {
        Args::parse_from(normalize_args(std::env::args_os()))
    }

    pub fn validate(self) -> Result<Config> {
        let mut keys = self.keys()?;
        let mut serve = match &self.command {
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
        if let Some(sc) = serve.as_mut() {
            if !also_read.is_empty() {
                bail!("serve does not read --also-read locations: give --also-read to the gocacher clients");
            }
            match sc.modproxy.as_mut() {
                // The keys sign and check kept module files only.
                Some(mp) => mp.keys = std::sync::Arc::new(std::mem::take(&mut keys)),
                None if signing => bail!("serve signs and checks only the module files of --modproxy: give --sign-key and --trust-key to the gocacher clients for build-cache entries"),
                None => {}
            }
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
            miss_ttl: crate::remote::MISS_TTL,
            keys: std::sync::Arc::new(keys),
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

#[cfg(test)]
mod tests;
