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
//! another is refused (see [`pinned_algorithm`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

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

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

pub struct Auth {
    cfg: AuthConfig,
    /// Static tokens: never expire, never evicted.
    tokens: HashMap<String, Session>,
    /// Sessions made by exchanges, for [`SESSION_TTL`] each and at most
    /// `--max-sessions` of them: when full, the least recently used one is
    /// dropped, and its client (on a 401) exchanges its identity token again.
    sessions: moka::sync::Cache<String, Session>,
    jwks: tokio::sync::Mutex<HashMap<String, Keys>>,
    client: reqwest::Client,
    /// Tokens refused (shared with the metrics).
    pub failures: prometheus_client::metrics::counter::Counter,
}

/// Why an exchange was refused (the reply's body says it).
#[derive(Debug)]
pub struct Refused(pub String);

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

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
    pub async fn exchange(&self, jwt: &str) -> Result<(String, Duration, Grant), Refused> {
        let refuse = |why: String| {
            self.failures.inc();
            Refused(why)
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
                Keys {
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

fn find<'a>(set: &'a JwkSet, kid: Option<&str>) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(k) => set.find(k),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
}

/// The one algorithm tokens signed with `jwk` are checked with: the key's own
/// `alg` if it names one, else the usual one for its type and curve (RS256
/// for RSA, as OIDC's default). A token's header cannot choose another (an
/// RSA key's PS256 or RS512, say): what the issuer signs with is the
/// issuer's to say. Symmetric (`oct`) keys are refused: a secret published
/// in a JWKS is no secret.
fn pinned_algorithm(jwk: &Jwk) -> Result<Algorithm> {
    let from_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            ref c => bail!("the issuer's key is on curve {c:?}, which is not supported"),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            ref c => bail!("the issuer's key is on curve {c:?}, which is not supported"),
        },
        AlgorithmParameters::OctetKey(_) => {
            bail!("the issuer's key is symmetric (oct); a JWKS key must be public")
        }
    };
    let Some(named) = jwk.common.key_algorithm else {
        return Ok(from_type);
    };
    let alg: Algorithm = named
        .to_string()
        .parse()
        .map_err(|_| anyhow::anyhow!("the issuer's key is for {named}, not a JWT signature"))?;
    if alg.family() != from_type.family() {
        bail!("the issuer's key says {alg:?}, which does not fit its key type");
    }
    Ok(alg)
}

/// The `iss` claim before the signature is checked (to pick the keys).
fn unverified_issuer(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
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

    #[test]
    fn claims_parse() {
        assert_eq!(
            parse_claim("--jwt-claim", "ref=refs/heads/main").unwrap(),
            ("ref".into(), "refs/heads/main".into())
        );
        assert!(parse_claim("--jwt-claim", "novalue").is_err());
        assert!(parse_claim("--jwt-claim", "=x").is_err());
    }

    #[test]
    fn the_algorithm_comes_from_the_key() {
        let jwk = |v: Value| -> Jwk { serde_json::from_value(v).unwrap() };
        let rsa = |alg: Option<&str>| {
            let mut v = serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
            if let Some(a) = alg {
                v["alg"] = a.into();
            }
            jwk(v)
        };
        let ec =
            |crv: &str| jwk(serde_json::json!({"kty": "EC", "crv": crv, "x": "AA", "y": "AA"}));
        let pinned = |k: &Jwk| pinned_algorithm(k).map_err(|e| e.to_string());
        assert_eq!(pinned(&rsa(None)), Ok(Algorithm::RS256));
        assert_eq!(pinned(&rsa(Some("PS384"))), Ok(Algorithm::PS384));
        assert_eq!(pinned(&ec("P-256")), Ok(Algorithm::ES256));
        assert_eq!(pinned(&ec("P-384")), Ok(Algorithm::ES384));
        let ed = jwk(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}));
        assert_eq!(pinned(&ed), Ok(Algorithm::EdDSA));
        // A key whose alg does not fit its type, an encryption key, a
        // symmetric key, an unsupported curve: no algorithm at all.
        assert!(pinned(&rsa(Some("HS256")))
            .unwrap_err()
            .contains("does not fit"));
        assert!(pinned(&rsa(Some("RSA-OAEP"))).is_err());
        let oct = jwk(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"}));
        assert!(pinned(&oct).unwrap_err().contains("symmetric"));
        assert!(pinned(&ec("P-521")).is_err());
    }

    #[test]
    fn the_issuer_is_read_before_verification() {
        let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!(
            "{}.{}.sig",
            b("{\"alg\":\"ES256\"}"),
            b("{\"iss\":\"https://i\"}")
        );
        assert_eq!(unverified_issuer(&jwt).as_deref(), Some("https://i"));
        assert_eq!(unverified_issuer("garbage"), None);
    }
}
