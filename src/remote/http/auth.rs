//! Authenticating to a cache server: a static Bearer token
//! (`--access-token`), or an identity token (a JWT from a file or from
//! GitHub Actions) exchanged at `POST /auth/exchange-token` for one, and
//! exchanged again once when the server forgets it (a 401).

use std::path::PathBuf;

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use super::{json, network, status_error, HttpStore};
use crate::remote::store::{FailureKind, RemoteError};

/// The audience gocached requires of identity tokens.
pub const DEFAULT_AUDIENCE: &str = "gocached";

/// Where the JWT for the exchange comes from.
#[derive(Clone)]
pub enum Identity {
    /// A file holding the token (re-read at each exchange: CI systems
    /// refresh it).
    File(PathBuf),
    /// GitHub Actions: `ACTIONS_ID_TOKEN_REQUEST_URL` with its bearer token.
    Actions {
        url: String,
        token: String,
        audience: String,
    },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::File(p) => write!(f, "File({})", p.display()),
            Identity::Actions { audience, .. } => write!(f, "Actions(audience {audience})"),
        }
    }
}

#[derive(Deserialize)]
struct Exchanged {
    access_token: String,
}

#[derive(Deserialize)]
struct ActionsToken {
    value: String,
}

impl HttpStore {
    /// Sends a request with the Bearer token; on a 401 with an identity to
    /// exchange, exchanges it once (unless another request just did) and
    /// sends the request again.
    pub(super) async fn send(
        &self,
        what: &str,
        make: impl Fn(&Client) -> Result<RequestBuilder, RemoteError>,
    ) -> Result<Response, RemoteError> {
        let (mut token, generation) = {
            let mut t = self.token.lock().await;
            // A token file is given for this server: exchange it at once.
            // GitHub Actions' token is asked for only if the server wants
            // one (a 401), as most servers do not.
            if t.0.is_none() && matches!(self.identity, Some(Identity::File(_))) {
                t.0 = Some(self.exchange().await?);
                t.1 += 1;
            }
            t.clone()
        };
        let mut retried = false;
        loop {
            let mut req = make(&self.client)?;
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| network(what, &e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || self.identity.is_none() || retried {
                return Ok(resp);
            }
            // gocached keeps sessions in memory: a restart forgets them.
            retried = true;
            let mut t = self.token.lock().await;
            if t.1 == generation {
                t.0 = Some(self.exchange().await?);
                t.1 += 1;
            }
            token = t.0.clone();
        }
    }

    /// Exchanges the identity token for an access token.
    async fn exchange(&self) -> Result<String, RemoteError> {
        let jwt = match &self.identity {
            None => {
                return Err(RemoteError::new(
                    FailureKind::Credentials,
                    "no identity token",
                ))
            }
            Some(Identity::File(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    RemoteError::new(
                        FailureKind::Credentials,
                        format!("reading the identity token {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_string(),
            Some(Identity::Actions {
                url,
                token,
                audience,
            }) => {
                let mut url = reqwest::Url::parse(url).map_err(|e| {
                    RemoteError::new(
                        FailureKind::Credentials,
                        format!("ACTIONS_ID_TOKEN_REQUEST_URL: {e}"),
                    )
                })?;
                url.query_pairs_mut().append_pair("audience", audience);
                let resp = self
                    .client
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(|e| network("the GitHub Actions identity token", &e))?;
                if !resp.status().is_success() {
                    return Err(RemoteError::new(
                        FailureKind::Credentials,
                        format!(
                            "GitHub Actions refused an identity token (HTTP {}); does the job have `permissions: id-token: write`?",
                            resp.status().as_u16()
                        ),
                    ));
                }
                json::<ActionsToken>("the GitHub Actions identity token", resp)
                    .await?
                    .value
            }
        };
        let resp = self
            .client
            .post(format!("{}/auth/exchange-token", self.base))
            .json(&serde_json::json!({ "jwt": jwt }))
            .send()
            .await
            .map_err(|e| network("the token exchange", &e))?;
        match resp.status() {
            s if s.is_success() => Ok(json::<Exchanged>("the token exchange", resp)
                .await?
                .access_token),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
                Err(RemoteError::new(
                    FailureKind::Credentials,
                    format!(
                        "the token exchange was refused (HTTP {}): the identity token is expired, for another audience, or its claims do not match the server's",
                        resp.status().as_u16()
                    ),
                ))
            }
            s => Err(status_error("the token exchange", s)),
        }
    }
}
