//! `gocacher serve --modproxy`'s flags, checked.

use anyhow::{bail, Context, Result};

use super::parse::parse_size;
use super::serve::{ModProxyConfig, ServeArgs};

impl ServeArgs {
    pub(super) fn modproxy_config(&self) -> Result<Option<ModProxyConfig>> {
        if !self.modproxy {
            if self.upstream.is_some() {
                bail!("--upstream is the module proxy of --modproxy: give --modproxy too");
            }
            return Ok(None);
        }
        let max_zip = parse_size(&self.modproxy_max_zip).with_context(|| {
            format!(
                "--modproxy-max-zip {:?}: not a size like 500MiB",
                self.modproxy_max_zip
            )
        })?;
        if max_zip == 0 {
            bail!("--modproxy-max-zip must be more than 0");
        }
        let upstream = match self.upstream.as_deref().map(str::trim) {
            None => None,
            Some(u) => Some(check_upstream("--upstream", u)?),
        };
        let ttl = humantime::parse_duration(&self.modproxy_ttl).with_context(|| {
            format!(
                "--modproxy-ttl {:?}: not a duration like 60s",
                self.modproxy_ttl
            )
        })?;
        if ttl.is_zero() {
            bail!("--modproxy-ttl must be more than 0s");
        }
        Ok(Some(ModProxyConfig {
            upstream,
            max_zip,
            ttl,
            prefetch: self.modproxy_prefetch.clone(),
            keys: Default::default(),
            stored_zips: self.modproxy_stored_zips,
        }))
    }
}

/// A module proxy's URL as `--modproxy` fetches from it: http(s), with a
/// host, without its trailing `/`.
pub fn check_upstream(what: &str, url: &str) -> Result<String> {
    let u = url.trim_end_matches('/');
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(u.to_string()),
        _ => bail!("{what} {url:?}: expected a module proxy's http:// or https:// URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_checked() {
        assert_eq!(
            check_upstream("--upstream", "http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            check_upstream("--upstream", "https://proxy.example/go").unwrap(),
            "https://proxy.example/go"
        );
        for bad in ["direct", "off", "file:///tmp/x", "http://", "https:///x"] {
            assert!(check_upstream("--upstream", bad).is_err(), "{bad}");
        }
    }
}
