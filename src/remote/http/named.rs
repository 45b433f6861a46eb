//! Named objects (manifests and packs) through `gocacher serve`, which the
//! seed's servers do not keep: `GET /gocacher/v1/info` says whether a
//! server has them; `GET`/`PUT /<key>` read (whole, or a `Range` while the
//! `ETag` is `If-Match`) and replace them (docs/FORMAT.md, "Cache server").

use headers::{ContentRange, HeaderMapExt};
use reqwest::StatusCode;
use serde::Deserialize;

use super::{json, status_error, HttpStore};
use crate::remote::store::{Body, Fetched, Ranged, RemoteError, Source};

#[derive(Deserialize)]
struct Info {
    server: String,
    #[serde(default)]
    named: bool,
}

impl HttpStore {
    /// Asks the server whether it keeps named objects (for
    /// [`Profile::keeps_named`](crate::remote::store::Profile)); any failure
    /// (the seed's servers answer 404) means it does not.
    pub async fn probe(&self) -> bool {
        let url = format!("{}/gocacher/v1/info", self.base);
        let Ok(resp) = self
            .send("GET /gocacher/v1/info", |c| Ok(c.get(&url)))
            .await
        else {
            return false;
        };
        if resp.status() != StatusCode::OK {
            return false;
        }
        match json::<Info>("GET /gocacher/v1/info", resp).await {
            Ok(info) => info.server == "gocacher" && info.named,
            Err(_) => false,
        }
    }

    fn named_url(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    pub(super) async fn named_get(&self, key: &str) -> Result<Fetched, RemoteError> {
        let url = self.named_url(key);
        let resp = self.send("GET", |c| Ok(c.get(&url))).await?;
        match resp.status() {
            StatusCode::OK => Ok(Fetched::Found {
                meta: None,
                wire_len: resp.content_length().unwrap_or(0),
                body: Body::Http(resp),
            }),
            StatusCode::NOT_FOUND => Ok(Fetched::Missing),
            s => Err(status_error(key, s)),
        }
    }

    pub(super) async fn named_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<Ranged, RemoteError> {
        let url = self.named_url(key);
        let range = match end {
            Some(end) => format!("bytes={start}-{end}"),
            None => format!("bytes={start}-"),
        };
        let resp = self
            .send("GET", |c| {
                let req = c.get(&url).header("Range", &range);
                Ok(match if_match {
                    Some(tag) => req.header("If-Match", tag),
                    None => req,
                })
            })
            .await?;
        match resp.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                let etag = resp
                    .headers()
                    .get("ETag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let total = match resp.status() {
                    StatusCode::PARTIAL_CONTENT => resp
                        .headers()
                        .typed_get::<ContentRange>()
                        .and_then(|r| r.bytes_len()),
                    _ => resp.content_length(),
                };
                Ok(Ranged::Found {
                    body: Body::Http(resp),
                    etag,
                    total,
                })
            }
            StatusCode::NOT_FOUND => Ok(Ranged::Missing),
            StatusCode::PRECONDITION_FAILED => Ok(Ranged::Changed),
            StatusCode::RANGE_NOT_SATISFIABLE => Ok(Ranged::Past),
            s => Err(status_error(key, s)),
        }
    }

    pub(super) async fn named_put(&self, key: &str, body: Source<'_>) -> Result<(), RemoteError> {
        let url = self.named_url(key);
        let resp = self
            .send("PUT", |c| super::with_body(c.put(&url), body))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            s => Err(status_error(key, s)),
        }
    }
}
