//! The module proxy `--modproxy` fetches from: `--upstream`, or the first
//! entry of `go env GOPROXY`. Immutable answers are streamed into a temp
//! file (bounded by `--modproxy-max-zip`); mutable ones are read into
//! memory, bounded by [`MAX_SMALL`].

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;

/// The most a mutable answer (a list, a lookup, a partial tile) may hold.
pub(crate) const MAX_SMALL: usize = 4 << 20;

/// How long an upstream may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upstream may leave a reply without a byte.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a mutable answer may take as a whole.
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What an upstream answered, other than the bytes asked for.
#[derive(Debug, Clone)]
pub(crate) enum UpstreamError {
    /// 404 or 410: it has no such thing (its text, for the client).
    NotFound(String),
    /// It could not be reached, failed, or sent something unusable.
    Failed(String),
    /// Not asked: a prefetch (`prefetch.rs`) found the file neither on
    /// disk nor in the bucket, and leaves it to a request.
    Skipped,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::NotFound(t) | UpstreamError::Failed(t) => f.write_str(t),
            UpstreamError::Skipped => f.write_str("not kept, and not asked of the upstream"),
        }
    }
}

pub(crate) struct Upstream {
    /// Its URL, without a trailing `/`: for requests only.
    base: String,
    /// The same with any user name and password replaced by `***`: for
    /// messages and logs.
    pub(crate) shown: String,
    client: reqwest::Client,
}

/// `url` with any user name and password replaced by `***`.
fn without_secret(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_password(None);
            let _ = u.set_username("***");
            u.to_string().trim_end_matches('/').to_string()
        }
        _ => url.to_string(),
    }
}

impl Upstream {
    pub(crate) fn new(base: String) -> Result<Upstream> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("gocacher/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("HTTP client for the module proxy upstream")?;
        let shown = without_secret(&base);
        Ok(Upstream {
            base,
            shown,
            client,
        })
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }

    async fn get(&self, rel: &str) -> Result<reqwest::Response, UpstreamError> {
        let url = self.url(rel);
        let resp = self.client.get(&url).send().await.map_err(|e| {
            UpstreamError::Failed(format!(
                "the upstream {} did not answer for {rel}: {}",
                self.shown,
                one_line(&e.without_url())
            ))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // Its own words, for the client: bounded, one line.
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(500).collect();
        let said = format!(
            "the upstream {} answered {} for {rel}{}{text}",
            self.shown,
            status.as_u16(),
            if text.is_empty() { "" } else { ": " }
        );
        if status.as_u16() == 404 || status.as_u16() == 410 {
            Err(UpstreamError::NotFound(said))
        } else {
            Err(UpstreamError::Failed(said))
        }
    }

    /// A mutable answer, whole.
    pub(crate) async fn small(&self, rel: &str) -> Result<Bytes, UpstreamError> {
        let read = async {
            let mut resp = self.get(rel).await?;
            let mut out = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| self.cut(rel, e))? {
                if out.len() + chunk.len() > MAX_SMALL {
                    return Err(UpstreamError::Failed(format!(
                        "the upstream {}'s answer for {rel} is over {MAX_SMALL} bytes",
                        self.shown
                    )));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(out))
        };
        tokio::time::timeout(SMALL_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Failed(format!(
                    "the upstream {} took over {SMALL_TIMEOUT:?} for {rel}",
                    self.shown
                )))
            })
    }

    /// Streams an immutable answer into `file` (a temp file), up to
    /// `limit` bytes; its length.
    pub(crate) async fn to_file(
        &self,
        rel: &str,
        file: &mut std::fs::File,
        limit: u64,
    ) -> Result<u64, UpstreamError> {
        let mut resp = self.get(rel).await?;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(self.too_large(rel, limit));
        }
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.cut(rel, e))? {
            n += chunk.len() as u64;
            if n > limit {
                return Err(self.too_large(rel, limit));
            }
            // Small writes into the page cache: not worth a blocking thread.
            file.write_all(&chunk).map_err(|e| {
                UpstreamError::Failed(format!("keeping {rel} from the upstream: {e}"))
            })?;
        }
        Ok(n)
    }

    fn cut(&self, rel: &str, e: reqwest::Error) -> UpstreamError {
        UpstreamError::Failed(format!(
            "the upstream {} broke off its answer for {rel}: {}",
            self.shown,
            one_line(&e.without_url())
        ))
    }

    fn too_large(&self, rel: &str, limit: u64) -> UpstreamError {
        UpstreamError::Failed(format!(
            "the upstream {}'s answer for {rel} is over --modproxy-max-zip ({limit} bytes); not fetched",
            self.shown
        ))
    }
}

/// An error and its causes on one line.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !parts.iter().any(|p| p.contains(&s_text)) {
            parts.push(s_text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The first entry of `go env GOPROXY`, which `--upstream` defaults to.
pub(crate) fn from_go_env() -> Result<String> {
    let out = std::process::Command::new("go")
        .args(["env", "GOPROXY"])
        .stdin(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => bail!(
            "--modproxy: `go env GOPROXY` failed ({}): {}; give --upstream URL (a module proxy)",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => bail!(
            "--modproxy: cannot run `go env GOPROXY` ({e}): give --upstream URL (a module proxy)"
        ),
    };
    first_proxy(&String::from_utf8_lossy(&out.stdout))
}

/// The first entry of a GOPROXY list, which must be a proxy's URL.
pub(crate) fn first_proxy(goproxy: &str) -> Result<String> {
    let first = goproxy.trim().split([',', '|']).next().unwrap_or("").trim();
    match first {
        "" | "direct" | "off" => bail!(
            "--modproxy: the first entry of `go env GOPROXY` is {:?}, not a module proxy: give --upstream URL",
            first
        ),
        url => crate::config::serve::check_upstream("the first entry of `go env GOPROXY`", url)
            .map_err(|e| anyhow::anyhow!("--modproxy: {e}: give --upstream URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::{first_proxy, without_secret};

    #[test]
    fn messages_never_show_the_upstreams_password() {
        assert_eq!(
            without_secret("https://me:hunter2@proxy.example/go"),
            "https://***@proxy.example/go"
        );
        assert_eq!(
            without_secret("https://token@proxy.example"),
            "https://***@proxy.example"
        );
        assert_eq!(
            without_secret("http://127.0.0.1:9/mod"),
            "http://127.0.0.1:9/mod"
        );
    }

    #[test]
    fn the_first_goproxy_entry_is_the_upstream() {
        assert_eq!(
            first_proxy("http://127.0.0.1:9/mod|https://proxy.example,direct\n").unwrap(),
            "http://127.0.0.1:9/mod"
        );
        for bad in [
            "direct",
            "off",
            "",
            "off,https://proxy.example",
            "file:///srv/mods",
        ] {
            let e = first_proxy(bad).unwrap_err().to_string();
            assert!(e.contains("--upstream"), "{bad}: {e}");
        }
    }
}
