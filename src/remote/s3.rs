//! The S3 client: one GET per remote lookup, one conditional PUT per store.
//!
//! Endpoint, region and credentials come from the standard AWS chain
//! (environment, profile, SSO, web identity, instance metadata) through
//! aws-config; flags only override. Every call here is bounded in time by the
//! caller's timeout, and every failure is classified so the caller can decide
//! between "miss", "back off" and "stop using the bucket".

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_types::error::display::DisplayErrorContext;

use super::format::{entries_at, object_key, ObjectMeta};
use crate::wire::Id;

/// Where the bucket is and how to reach it (validated flags).
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix without leading or trailing '/'; may be empty.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub virtual_hosted: bool,
    pub anonymous: bool,
}

impl S3Settings {
    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| anyhow::anyhow!("--remote {url:?}: expected s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!("--remote {url:?}: no bucket name");
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

use super::store::{Body, Profile, Source, Store};
pub use super::store::{FailureKind, Fetched, PutOutcome, Ranged, RemoteError};

pub struct S3Store {
    /// For writes (puts, deletes).
    client: Client,
    /// For reads (gets, heads).
    reader: Client,
    /// The chain's provider, kept for `gocacher check` (None: anonymous).
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    bucket: String,
    prefix: String,
    /// For messages: "bucket B at ENDPOINT".
    describe: String,
}

impl S3Store {
    /// A client for the bucket `s` names, and what it is.
    pub async fn connect(s: &S3Settings) -> (S3Store, Profile) {
        let env_endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .ok()
            .filter(|v| !v.is_empty());
        let endpoint = s.endpoint.clone().or(env_endpoint);
        let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()));
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &s.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        } else if endpoint.is_some() && !env_region && std::env::var_os("AWS_PROFILE").is_none() {
            // S3-compatible servers ignore the region; naming one here keeps
            // the region chain from asking instance metadata (a second or
            // more off EC2) before the first lookup.
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
        if s.anonymous {
            loader = loader.no_credentials();
        }
        if let Some(ep) = &s.endpoint {
            loader = loader.endpoint_url(ep.clone());
        }
        let sdk = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            // Path-style is what MinIO, LocalStack and most S3-compatible
            // servers expect; AWS itself takes either.
            .force_path_style(endpoint.is_some() && !s.virtual_hosted)
            // We verify every object by its sha256; the SDK's extra CRC
            // trailers only narrow which servers work (GCS interop, old MinIO).
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            );
        if sdk.region().is_none() {
            // S3-compatible servers ignore the region, but the signer needs one.
            conf = conf.region(aws_config::Region::new("us-east-1"));
        }
        let describe = match &endpoint {
            Some(ep) => format!("bucket {} at {}", s.bucket, redact_url(ep)),
            None => format!("bucket {}", s.bucket),
        };
        // Lookups are not retried: a failed one is a miss, which cmd/go
        // turns into a compile at once, while a retry first sleeps a backoff
        // with cmd/go waiting. Writes are in the background; one retry there
        // saves an upload.
        let reader = conf
            .clone()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
        let store = S3Store {
            credentials: sdk.credentials_provider(),
            reader: Client::from_conf(reader.build()),
            client: Client::from_conf(conf.build()),
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
            describe,
        };
        let profile = store.profile();
        (store, profile)
    }

    fn profile(&self) -> Profile {
        Profile {
            describe: self.describe.clone(),
            credentials_hint: "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
            takes_encoded: true,
            keeps_named: true,
            prefix: self.prefix.clone(),
            entries_at: entries_at(&self.prefix),
        }
    }

    /// The same client and credentials for another bucket or prefix (an
    /// `--also-read` location).
    pub fn relocated(&self, bucket: &str, prefix: &str) -> (S3Store, Profile) {
        let shown = if prefix.is_empty() {
            bucket.to_string()
        } else {
            format!("{bucket}/{prefix}")
        };
        let store = S3Store {
            client: self.client.clone(),
            reader: self.reader.clone(),
            credentials: self.credentials.clone(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            describe: self.describe.replacen(
                &format!("bucket {}", self.bucket),
                &format!("bucket {shown}"),
                1,
            ),
        };
        let profile = store.profile();
        (store, profile)
    }

    /// Reads an object.
    pub async fn get_object(&self, key: &str) -> Result<Fetched, RemoteError> {
        let resp = self
            .reader
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match resp {
            Ok(out) => Ok(Fetched::Found {
                meta: out.metadata().and_then(ObjectMeta::from_metadata),
                wire_len: out.content_length().unwrap_or(0).max(0) as u64,
                body: Body::S3(out.body),
            }),
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(Fetched::Missing),
            Err(e) => Err(classify(e)),
        }
    }

    /// Stores an object unless one is there already.
    pub async fn put_object(
        &self,
        key: &str,
        meta: Option<&ObjectMeta>,
        body: ByteStream,
    ) -> Result<PutOutcome, RemoteError> {
        let resp = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .set_metadata(meta.map(ObjectMeta::to_metadata))
            .body(body)
            .send()
            .await;
        match resp {
            Ok(_) => Ok(PutOutcome::Created),
            Err(SdkError::ServiceError(e))
                if e.raw().status().as_u16() == 412
                    || e.err().code() == Some("PreconditionFailed") =>
            {
                Ok(PutOutcome::AlreadyThere)
            }
            Err(e) => Err(classify(e)),
        }
    }

    pub async fn delete_object(&self, key: &str) -> Result<(), RemoteError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn head_bucket(&self) -> Result<(), RemoteError> {
        self.reader
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn credentials_source(&self) -> Result<String, RemoteError> {
        use aws_credential_types::provider::ProvideCredentials;
        let Some(provider) = &self.credentials else {
            return Ok("anonymous (unsigned requests)".into());
        };
        match provider.provide_credentials().await {
            Ok(c) => Ok(format!(
                "access key {}…",
                &c.access_key_id()[..c.access_key_id().len().min(4)]
            )),
            Err(e) => Err(RemoteError {
                kind: FailureKind::Credentials,
                message: format!(
                    "no usable credentials ({}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or pass --anonymous for a public bucket",
                    one_line(&e)
                ),
            }),
        }
    }
}

/// The whole object's length a `Content-Range` names (`bytes 0-99/1234`,
/// or `bytes */1234` when the range missed); `None` when it names none.
fn content_range_len(v: &str) -> Option<u64> {
    use headers::Header;
    let v = headers::HeaderValue::from_str(v).ok()?;
    headers::ContentRange::decode(&mut std::iter::once(&v))
        .ok()?
        .bytes_len()
}

async fn byte_stream(body: Source<'_>) -> Result<ByteStream, RemoteError> {
    match body {
        Source::Memory(b) => Ok(ByteStream::from(b.clone())),
        Source::File(path, _) => ByteStream::from_path(path).await.map_err(|e| {
            RemoteError::new(
                FailureKind::Other,
                format!("reading {}: {e}", path.display()),
            )
        }),
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    async fn get(&self, action: &Id) -> Result<Fetched, RemoteError> {
        self.get_object(&object_key(&self.prefix, action)).await
    }

    async fn put(
        &self,
        action: &Id,
        meta: &ObjectMeta,
        body: Source<'_>,
    ) -> Result<PutOutcome, RemoteError> {
        let body = byte_stream(body).await?;
        self.put_object(&object_key(&self.prefix, action), Some(meta), body)
            .await
    }

    async fn delete(&self, action: &Id) -> Result<(), RemoteError> {
        self.delete_object(&object_key(&self.prefix, action)).await
    }

    async fn get_named(&self, key: &str) -> Result<Fetched, RemoteError> {
        self.get_object(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<Ranged, RemoteError> {
        let range = match end {
            Some(end) => format!("bytes={start}-{end}"),
            None => format!("bytes={start}-"),
        };
        let resp = self
            .reader
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range)
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await;
        match resp {
            Ok(out) => Ok(Ranged::Found {
                etag: out.e_tag().map(str::to_owned),
                total: out
                    .content_range()
                    .and_then(content_range_len)
                    .or_else(|| out.content_length().map(|l| l.max(0) as u64)),
                body: Body::S3(out.body),
            }),
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(Ranged::Missing),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 412 => {
                Ok(Ranged::Changed)
            }
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 416 => Ok(Ranged::Past),
            Err(e) => Err(classify(e)),
        }
    }

    async fn put_named(&self, key: &str, body: Source<'_>) -> Result<(), RemoteError> {
        let body = byte_stream(body).await?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

/// The first line of an error's message chain, without the SDK's debug
/// dump (`ProviderError { ... }`, response headers and bodies).
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let mut text = parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    for cut in [" {", " (", "\n"] {
        if let Some(i) = text.find(cut) {
            text.truncate(i);
        }
    }
    text
}

/// A URL fit for messages: any `user:password@` it carries becomes `***@`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Sorts an SDK error into a [`FailureKind`] with a one-line message.
pub fn classify<E>(err: SdkError<E, HttpResponse>) -> RemoteError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(se) = &err {
        let code = se.err().code().unwrap_or("").to_string();
        let msg = se.err().message().unwrap_or("").to_string();
        let kind = match code.as_str() {
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired" => FailureKind::Credentials,
            "NoSuchBucket" => FailureKind::NoBucket,
            "AccessDenied" | "AllAccessDisabled" => FailureKind::AccessDenied,
            "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" => {
                FailureKind::Unavailable
            }
            _ => FailureKind::Other,
        };
        let status = se.raw().status().as_u16();
        // Bodiless answers (HEAD) carry only a status.
        if matches!(code.as_str(), "" | "NotFound" | "Forbidden") {
            let (kind, what) = match status {
                404 => (FailureKind::NoBucket, "not found"),
                403 => (
                    FailureKind::Credentials,
                    "forbidden: credentials refused or access denied",
                ),
                s if s >= 500 => (FailureKind::Unavailable, "server error"),
                _ => (FailureKind::Other, "refused"),
            };
            return RemoteError {
                kind,
                message: format!("HTTP {status}: {what}"),
            };
        }
        let message = match (code.is_empty(), msg.is_empty()) {
            (true, _) => format!("{err}"),
            (false, true) => code,
            (false, false) => format!("{code}: {msg}"),
        };
        return RemoteError { kind, message };
    }
    let mut text = format!("{}", DisplayErrorContext(&err));
    // Keep the readable chain; drop the Debug dump the SDK appends.
    for tail in [
        " (DispatchFailure",
        " (TimeoutError",
        " (ResponseError",
        " (ConstructionFailure",
    ] {
        if let Some(i) = text.find(tail) {
            text.truncate(i);
        }
    }
    let kind = if text.contains("credentials") || text.contains("identity") {
        FailureKind::Credentials
    } else {
        FailureKind::Unavailable
    };
    RemoteError {
        kind,
        message: text,
    }
}

#[cfg(test)]
mod tests {
    use super::{content_range_len, redact_url};

    #[test]
    fn content_range_gives_the_whole_length() {
        assert_eq!(content_range_len("bytes 0-99/1234"), Some(1234));
        assert_eq!(content_range_len("bytes */1234"), Some(1234));
        assert_eq!(content_range_len("bytes 0-99/*"), None);
        assert_eq!(content_range_len("bytes 9-0/1234"), None);
        assert_eq!(content_range_len("items 0-9/10"), None);
    }

    #[test]
    fn endpoint_passwords_are_not_shown() {
        assert_eq!(
            redact_url("https://ak:sekrit@minio.example:9000/x"),
            "https://***@minio.example:9000/x"
        );
        assert_eq!(redact_url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(redact_url("http://h/p@q"), "http://h/p@q");
    }
}
