//! Command-line flags (each with a `GOCACHER_*` environment mirror) and their
//! validation into one typed [`Config`]. Every bad value is caught here, at
//! start, with a one-line reason: cmd/go shows our stderr to the user.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::disk::TRIM_MIN_AGE;

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
    #[arg(long, env = "GOCACHER_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Log the cache dir at start and a stats line at close, on stderr.
    #[arg(long, short = 'v', env = "GOCACHER_VERBOSE")]
    pub verbose: bool,

    /// Write the stats as JSON to this file at close.
    #[arg(long, env = "GOCACHER_STATS_FILE", value_name = "PATH")]
    pub stats_file: Option<PathBuf>,

    /// Remove local entries unused for longer than this (at most one trim a
    /// day, after close). At least 1 day. Units: s, m, h, d.
    #[arg(
        long,
        env = "GOCACHER_TRIM_AGE",
        value_name = "DURATION",
        default_value = "5d"
    )]
    pub trim_age: String,

    /// Keep the local cache under this size when trimming, least recently used
    /// first (never entries used within the last day). E.g. 10GiB, 500MB. 0 or
    /// unset: no cap.
    #[arg(long, env = "GOCACHER_MAX_SIZE", value_name = "SIZE")]
    pub max_size: Option<String>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub cache_dir: PathBuf,
    pub verbose: bool,
    pub stats_file: Option<PathBuf>,
    pub trim_age: Duration,
    pub max_size: Option<u64>,
}

impl Args {
    /// Parses argv, accepting go-cacher's single-dash long flags.
    pub fn parse_from_env() -> Args {
        Args::parse_from(normalize_args(std::env::args_os()))
    }

    pub fn validate(self) -> Result<Config> {
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
        Ok(Config {
            cache_dir,
            verbose: self.verbose,
            stats_file: self.stats_file,
            trim_age,
            max_size,
        })
    }
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

/// Parses "123", "10k", "500MB", "10GiB" (decimal and binary units).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().context("no number")?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => bail!("unknown unit {other:?}"),
    };
    if !num.is_finite() || num < 0.0 {
        bail!("not a positive number");
    }
    Ok((num * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Config> {
        let argv = std::iter::once("gocacher")
            .chain(list.iter().copied())
            .map(Into::into);
        Args::try_parse_from(normalize_args(argv))?.validate()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("10k").unwrap(), 10_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5 GB").unwrap(), 1_500_000_000);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn single_dash_flags_like_go_cacher() {
        let c = args(&["-cache-dir=/tmp/x", "-verbose"]).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/tmp/x"));
        assert!(c.verbose);
    }

    #[test]
    fn defaults() {
        let c = args(&["--cache-dir", "/tmp/y"]).unwrap();
        assert_eq!(c.trim_age, Duration::from_secs(5 * 86400));
        assert_eq!(c.max_size, None);
        assert!(!c.verbose);
    }

    #[test]
    fn bad_values_fail_with_reason() {
        let e = args(&["--trim-age", "1h"]).unwrap_err().to_string();
        assert!(e.contains("1-day minimum"), "{e}");
        let e = args(&["--trim-age", "soon"]).unwrap_err().to_string();
        assert!(e.contains("--trim-age"), "{e}");
        let e = args(&["--max-size", "lots"]).unwrap_err().to_string();
        assert!(e.contains("--max-size"), "{e}");
        assert!(args(&["--no-such-flag"]).is_err());
    }
}
