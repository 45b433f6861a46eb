//! A client of the seed project's cache servers: `gocached` and the older
//! `go-cacher-server`, told apart by their replies as the seed's client does.
//!
//! - `GET /action/<actionID>` with `Want-Object: 1` and
//!   `Accept-Encoding: lz4`: gocached answers 200 `application/octet-stream`
//!   with `Go-Output-Id` and the bytes (lz4 frames with
//!   `X-Uncompressed-Length` when it compressed them); go-cacher-server
//!   answers JSON `{"outputID","size"}`, and the bytes come from
//!   `GET /output/<outputID>`. 404 is a miss.
//! - `PUT /<actionID>/<outputID>` with the raw output; 204 is success.
//! - With an identity token, `POST /auth/exchange-token` `{"jwt"}` gives the
//!   Bearer token, exchanged again once when the server forgets it (401):
//!   `auth.rs`.
//!
//! Neither seed server keeps named objects, so there is no prefetch through
//! them; `gocacher serve` does ([`named`]).

mod auth;
mod named;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::remote::format::{Encoding, ObjectMeta};
use crate::remote::s3::redact_url;
use crate::remote::store::{
    Body, FailureKind, Fetched, Profile, PutOutcome, Ranged, RemoteError, Source, Store,
};
use crate::wire::Id;

pub use auth::{Identity, DEFAULT_AUDIENCE};

/// JSON replies read here (action values, tokens) are small; more is wrong.
const JSON_LIMIT: usize = 64 << 10;

/// Where the server is and how to authenticate (validated flags).
#[derive(Clone)]
pub struct HttpSettings {
    /// `http://` or `https://`, scheme and authority (no trailing '/').
    pub base: String,
    /// A static Bearer token (`--access-token`).
    pub access_token: Option<String>,
    /// Where an identity token to exchange comes from.
    pub identity: Option<Identity>,
}

/// Never shows the token.
impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("base", &redact_url(&self.base))
            .field("access_token", &self.access_token.as_ref().map(|_| "***"))
            .field("identity", &self.identity)
            .finish()
    }
}

pub struct HttpStore {
    client: Client,
    base: String,
    identity: Option<Identity>,
    /// The Bearer token in use, and how many exchanges made it (so that
    /// requests failing at once trigger one exchange, not one each).
    token: tokio::sync::Mutex<(Option<String>, u64)>,
}

#[derive(Deserialize)]
struct ActionValue {
    #[serde(rename = "outputID")]
    output_id: String,
    size: u64,
}

impl HttpStore {
    /// A client of the server `s` names, and what it is: whether it keeps
    /// named objects is not known until [`HttpStore::probe`] asks, so the
    /// profile says it does not.
    pub fn new(s: &HttpSettings) -> Result<(HttpStore, Profile), RemoteError> {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("gocacher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteError::new(FailureKind::Other, format!("HTTP client: {e}")))?;
        let profile = Profile {
            describe: format!("cache server {}", redact_url(&s.base)),
            credentials_hint: "check --access-token, or the identity token given by --oidc-token-file or GitHub Actions",
            takes_encoded: false,
            keeps_named: false,
            prefix: String::new(),
            entries_at: "/action/".into(),
        };
        let store = HttpStore {
            client,
            base: s.base.trim_end_matches('/').to_string(),
            identity: s.identity.clone(),
            token: tokio::sync::Mutex::new((s.access_token.clone(), 0)),
        };
        Ok((store, profile))
    }

    /// Reads an output by ID (go-cacher-server's second hop).
    async fn get_output(&self, meta: ObjectMeta) -> Result<Fetched, RemoteError> {
        if meta.size == 0 {
            return Ok(Fetched::Found {
                meta: Some(meta),
                body: Body::empty(),
                wire_len: 0,
            });
        }
        let url = format!("{}/output/{}", self.base, meta.output_id.to_hex());
        let resp = self
            .send("GET /output/", |c| {
                Ok(c.get(&url).header("Accept-Encoding", "lz4"))
            })
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(Fetched::Missing),
            s => return Err(status_error("GET /output/", s)),
        }
        let encoding = if is_lz4(&resp) {
            Encoding::Lz4
        } else {
            Encoding::Identity
        };
        Ok(Fetched::Found {
            // The size is the action's: a body that disagrees is caught by
            // the verification, as any wrong byte is.
            meta: Some(ObjectMeta { encoding, ..meta }),
            wire_len: resp.content_length().unwrap_or(0),
            body: Body::Http(resp),
        })
    }
}

/// The uncompressed size and encoding a body announces; `None` when an lz4
/// body has no readable `X-Uncompressed-Length` or a plain one no length.
fn body_form(resp: &Response) -> Option<(u64, Encoding)> {
    if is_lz4(resp) {
        let size = resp.headers().get("X-Uncompressed-Length")?.to_str().ok()?;
        return Some((size.trim().parse().ok()?, Encoding::Lz4));
    }
    Some((resp.content_length()?, Encoding::Identity))
}

fn is_lz4(resp: &Response) -> bool {
    resp.headers()
        .get("Content-Encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"lz4"))
}

/// A transport failure (refused, reset, timed out, TLS).
fn network(what: &str, e: &reqwest::Error) -> RemoteError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    RemoteError::new(FailureKind::Unavailable, format!("{what}: {msg}"))
}

/// A PUT's body, with its Content-Length.
fn with_body(req: RequestBuilder, body: Source<'_>) -> Result<RequestBuilder, RemoteError> {
    let req = req.header("Content-Length", body.len().to_string());
    Ok(match body {
        Source::Memory(b) => req.body(b.clone()),
        Source::File(path, _) => {
            let f = std::fs::File::open(path).map_err(|e| {
                RemoteError::new(
                    FailureKind::Other,
                    format!("reading {}: {e}", path.display()),
                )
            })?;
            req.body(tokio::fs::File::from_std(f))
        }
    })
}

/// A status that is not the answer, as a failure of its kind.
fn status_error(what: &str, s: StatusCode) -> RemoteError {
    let kind = match s.as_u16() {
        401 => FailureKind::Credentials,
        403 => FailureKind::AccessDenied,
        408 | 429 | 500.. => FailureKind::Unavailable,
        _ => FailureKind::Other,
    };
    RemoteError::new(kind, format!("{what}: HTTP {}", s.as_u16()))
}

/// Reads a small JSON reply.
async fn json<T: serde::de::DeserializeOwned>(
    what: &str,
    resp: Response,
) -> Result<T, RemoteError> {
    if resp.content_length().unwrap_or(0) > JSON_LIMIT as u64 {
        return Err(RemoteError::new(
            FailureKind::Other,
            format!("{what}: reply too long"),
        ));
    }
    let body = Body::Http(resp).collect(what, JSON_LIMIT).await?;
    serde_json::from_slice(&body)
        .map_err(|e| RemoteError::new(FailureKind::Other, format!("{what}: unreadable reply: {e}")))
}

/// An entry whose metadata cannot be read (counted as corrupt).
fn unreadable() -> Fetched {
    Fetched::Found {
        meta: None,
        body: Body::empty(),
        wire_len: 0,
    }
}

#[async_trait]
impl Store for HttpStore {
    async fn get(&self, action: &Id) -> Result<Fetched, RemoteError> {
        let url = format!("{}/action/{}", self.base, action.to_hex());
        let resp = self
            .send("GET /action/", |c| {
                Ok(c.get(&url)
                    .header("Want-Object", "1")
                    .header("Accept-Encoding", "lz4"))
            })
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(Fetched::Missing),
            s => return Err(status_error("GET /action/", s)),
        }
        let content_type = resp
            .headers()
            .get("Content-Type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if content_type.starts_with("application/json") {
            // go-cacher-server: the action's value, then the output.
            let av: ActionValue = match json("GET /action/", resp).await {
                Ok(av) => av,
                // An unreadable reply is a corrupt entry, as for S3.
                Err(e) if e.kind == FailureKind::Other => return Ok(unreadable()),
                Err(e) => return Err(e),
            };
            let Some(output_id) = Id::from_hex(&av.output_id) else {
                return Ok(unreadable());
            };
            return self
                .get_output(ObjectMeta {
                    output_id,
                    size: av.size,
                    put_time_nanos: crate::wire::now_nanos(),
                    encoding: Encoding::Identity,
                    signature: None,
                })
                .await;
        }
        let output = resp
            .headers()
            .get("Go-Output-Id")
            .and_then(|v| v.to_str().ok())
            .and_then(Id::from_hex);
        let meta = match (content_type.as_str(), output, body_form(&resp)) {
            ("application/octet-stream", Some(output_id), Some((size, encoding))) => {
                Some(ObjectMeta {
                    output_id,
                    size,
                    put_time_nanos: crate::wire::now_nanos(),
                    encoding,
                    signature: None,
                })
            }
            _ => None,
        };
        Ok(Fetched::Found {
            meta,
            wire_len: resp.content_length().unwrap_or(0),
            body: Body::Http(resp),
        })
    }

    async fn put(
        &self,
        action: &Id,
        meta: &ObjectMeta,
        body: Source<'_>,
    ) -> Result<PutOutcome, RemoteError> {
        let url = format!(
            "{}/{}/{}",
            self.base,
            action.to_hex(),
            meta.output_id.to_hex()
        );
        let resp = self.send("PUT", |c| with_body(c.put(&url), body)).await?;
        match resp.status() {
            s if s.is_success() => Ok(PutOutcome::Created),
            s => Err(status_error("PUT", s)),
        }
    }

    async fn delete(&self, _action: &Id) -> Result<(), RemoteError> {
        // The seed's servers have no delete; a PUT replaces an entry.
        Ok(())
    }

    async fn get_named(&self, key: &str) -> Result<Fetched, RemoteError> {
        self.named_get(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<Ranged, RemoteError> {
        self.named_range(key, start, end, if_match).await
    }

    async fn put_named(&self, key: &str, body: Source<'_>) -> Result<(), RemoteError> {
        self.named_put(key, body).await
    }
}
