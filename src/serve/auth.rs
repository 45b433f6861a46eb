//! Who may read and write what on `gocacher serve`.
//!
//! Off unless `--token-file` or `--jwt-issuer` is given; then every request
//! needs `Authorization: Bearer <token>` (401 otherwise), and the token's
//! session decides:
//!
//! - every session reads the global namespace and its own;
//! - a session writes only its own namespace, or the global one if it is a
//!   global writer (a static token for namespace `global` with `write`, or a
//!   JWT matching every `--global-jwt-claim`);
//! - a read-only session writes nothing (403).
//!
//! Static tokens come from `--token-file`: one `TOKEN NAMESPACE read|write`
//! per line. JWTs (gocached's exchange): `POST /auth/exchange-token` with
//! `{"jwt": "..."}` checks the token's signature against its issuer's JWKS
//! (found through OIDC discovery, cached, fetched again for an unknown key
//! ID at most once a minute), its audience, expiry and `--jwt-claim`s, and
//! answers a session token. The algorithm a token is checked with comes from
//! the issuer's key, never from the token: a token whose header names
//! another is refused (see [`super::jwks::pinned_algorithm`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::{find, pinned_algorithm, unverified_issuer, Discovery, IssuerKeys};
use crate::config::serve::{AuthConfig, Claim};

/// The namespace every session reads.
pub const GLOBAL: &str = "global";

/// How long an exchanged session lasts.
const SESSION_TTL: Duration = Duration::from_secs(6 * 3600);

/// A JWKS is fetched again for an unknown key ID at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(60);

/// What a session may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The namespace it writes (and reads besides the global one).
    pub namespace: String,
    pub write: bool,
}

impl Grant {
    pub fn is_global(&self) -> bool {
        self.namespace == GLOBAL
    }
}

/// A session's counters (`GET /session/stats`).
#[derive(Default)]
pub struct SessionStats {
    pub gets: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub puts: AtomicU64,
    pub refused: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl SessionStats {
    pub fn json(&self) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "gets": n(&self.gets),
            "hits": n(&self.hits),
            "misses": n(&self.misses),
            "puts": n(&self.puts),
            "refused": n(&self.refused),
            "bytes_in": n(&self.bytes_in),
            "bytes_out": n(&self.bytes_out),
        })
    }
}

#[derive(Clone)]
pub struct Session {
    pub grant: Grant,
    pub stats: Arc<SessionStats>,
}

pub struct Auth {
    cfg: AuthConfig,
    /// Static tokens: never expire, never evicted.
    tokens: HashMap<String, Session>,
    /// Sessions made by exchanges, for [`SESSION_TTL`] each and at most
    /// `--max-sessions` of them: when full, the least recently used one is
    /// dropped, and its client (on a 401) exchanges its identity token again.
    sessions: moka::sync::Cache<String, Session>,
    jwks: tokio::sync::Mutex<HashMap<String, IssuerKeys>>,
    client: reqwest::Client,
    /// Tokens refused (shared with the metrics).
    pub failures: prometheus_client::metrics::counter::Counter,
}

/// Why an exchange was refused (the reply's body says it).
#[derive(Debug)]
pub struct Unauthorized(pub String);

impl Auth {
    pub fn new(
        cfg: AuthConfig,
        failures: prometheus_client::metrics::counter::Counter,
    ) -> Result<Auth> {
        let mut tokens = HashMap::new();
        if let Some(path) = &cfg.token_file {
            for (token, grant) in read_token_file(path)? {
                tokens.insert(
                    token,
                    Session {
                        grant,
                        stats: Arc::default(),
                    },
                );
            }
        }
        // Least recently used out first: a new session is always admitted
        // (TinyLFU, moka's default, may refuse one seen only once).
        let sessions = moka::sync::Cache::builder()
            .max_capacity(cfg.max_sessions)
            .time_to_live(SESSION_TTL)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("HTTP client for OIDC discovery")?;
        Ok(Auth {
            cfg,
            tokens,
            sessions,
            jwks: tokio::sync::Mutex::new(HashMap::new()),
            client,
            failures,
        })
    }

    /// Static tokens and live exchanged sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.run_pending_tasks();
        self.tokens.len() + self.sessions.entry_count() as usize
    }

    /// The session of a Bearer token, if it is one and has not expired.
    pub fn session(&self, token: &str) -> Option<Session> {
        match self.tokens.get(token) {
            Some(s) => Some(s.clone()),
            None => self.sessions.get(token),
        }
    }

    /// Checks an identity token and opens a session for it: the session
    /// token, its lifetime and its grant.
    pub async fn exchange(&self, jwt: &str) -> Result<(String, Duration, Grant), Unauthorized> {
        let refuse = |why: String| {
            self.failures.inc();
            Unauthorized(why)
        };
        let header =
            jsonwebtoken::decode_header(jwt).map_err(|e| refuse(format!("not a JWT: {e}")))?;
        let iss = unverified_issuer(jwt).ok_or_else(|| refuse("the JWT has no issuer".into()))?;
        if !self.cfg.issuers.contains(&iss) {
            return Err(refuse(format!("issuer {iss:?} is not trusted")));
        }
        let (key, alg) = self
            .key(&iss, header.kid.as_deref())
            .await
            .map_err(|e| refuse(format!("no key for the JWT: {e:#}")))?;
        if header.alg != alg {
            return Err(refuse(format!(
                "the JWT's header says {:?}, but the issuer's key is for {alg:?}",
                header.alg
            )));
        }
        let mut v = Validation::new(alg);
        // Clocks disagree a little; an hour-old token is still refused.
        v.leeway = 30;
        v.set_audience(&[&self.cfg.audience]);
        v.set_issuer(&[&iss]);
        v.set_required_spec_claims(&["exp", "aud", "iss"]);
        let claims = jsonwebtoken::decode::<Value>(jwt, &key, &v)
            .map_err(|e| refuse(format!("the JWT is not valid: {e}")))?
            .claims;
        let has = |(k, want): &Claim| claims.get(k).and_then(Value::as_str) == Some(want.as_str());
        if let Some(c) = self.cfg.claims.iter().find(|c| !has(c)) {
            return Err(refuse(format!(
                "the JWT's claim {:?} is not {:?}",
                c.0, c.1
            )));
        }
        let global = !self.cfg.global_claims.is_empty() && self.cfg.global_claims.iter().all(has);
        let namespace = if global {
            GLOBAL.to_string()
        } else {
            match claims
                .get(&self.cfg.namespace_claim)
                .and_then(Value::as_str)
            {
                Some(ns) if !ns.is_empty() && ns != GLOBAL => ns.to_string(),
                _ => {
                    return Err(refuse(format!(
                        "the JWT has no usable {:?} claim for its namespace",
                        self.cfg.namespace_claim
                    )))
                }
            }
        };
        let grant = Grant {
            namespace,
            write: true,
        };
        let token = new_token();
        self.sessions.insert(
            token.clone(),
            Session {
                grant: grant.clone(),
                stats: Arc::default(),
            },
        );
        Ok((token, SESSION_TTL, grant))
    }

    /// The issuer's key for `kid`, from its JWKS (fetched through
    /// discovery; again when the key is unknown, at most once a minute), and
    /// the one algorithm a token signed with it may use.
    async fn key(&self, iss: &str, kid: Option<&str>) -> Result<(DecodingKey, Algorithm)> {
        let mut cache = self.jwks.lock().await;
        let stale = match cache.get(iss) {
            None => true,
            Some(k) => find(&k.set, kid).is_none() && k.fetched.elapsed() > JWKS_REFETCH,
        };
        if stale {
            let set = self.fetch_jwks(iss).await?;
            cache.insert(
                iss.to_string(),
                IssuerKeys {
                    set,
                    fetched: Instant::now(),
                },
            );
        }
        let keys = &cache[iss];
        let jwk = find(&keys.set, kid).context("no key with the JWT's key ID")?;
        let alg = pinned_algorithm(jwk)?;
        let key = DecodingKey::from_jwk(jwk).context("unusable key in the issuer's JWKS")?;
        Ok((key, alg))
    }

    async fn fetch_jwks(&self, iss: &str) -> Result<JwkSet> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            iss.trim_end_matches('/')
        );
        let d: Discovery = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("OIDC discovery at {url}"))?
            .json()
            .await
            .with_context(|| format!("OIDC discovery at {url}"))?;
        self.client
            .get(&d.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("JWKS at {}", d.jwks_uri))?
            .json()
            .await
            .with_context(|| format!("JWKS at {}", d.jwks_uri))
    }
}

/// A session token: 32 random bytes in hex.
fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source");
    hex::encode(b)
}

/// `TOKEN NAMESPACE read|write` per line; `#` starts a comment.
fn read_token_file(path: &Path) -> Result<Vec<(String, Grant)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--token-file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (token, namespace, mode) = match fields[..] {
            [t, ns, m] => (t, ns, m),
            _ => bail!(
                "--token-file {} line {}: expected TOKEN NAMESPACE read|write",
                path.display(),
                i + 1
            ),
        };
        let write = match mode {
            "read" => false,
            "write" => true,
            _ => bail!(
                "--token-file {} line {}: the mode is read or write, not {mode:?}",
                path.display(),
                i + 1
            ),
        };
        if token.len() < 16 {
            bail!(
                "--token-file {} line {}: a token needs at least 16 characters",
                path.display(),
                i + 1
            );
        }
        out.push((
            token.to_string(),
            Grant {
                namespace: namespace.to_string(),
                write,
            },
        ));
    }
    if out.is_empty() {
        bail!("--token-file {}: no tokens", path.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "# team\nmain-token-0123456789 global write\npr-token-0123456789 pr/7 write # a PR\nro-token-0123456789 global read\n").unwrap();
        let t = read_token_file(&p).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[1].1,
            Grant {
                namespace: "pr/7".into(),
                write: true
            }
        );
        assert!(!t[2].1.write);
        std::fs::write(&p, "short global write\n").unwrap();
        assert!(read_token_file(&p)
            .unwrap_err()
            .to_string()
            .contains("16 characters"));
        std::fs::write(&p, "tok-0123456789abcdef global admin\n").unwrap();
        assert!(read_token_file(&p)
            .unwrap_err()
            .to_string()
            .contains("read or write"));
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(read_token_file(&p).is_err());
    }
}
