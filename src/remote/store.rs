//! What the remote tier needs of a store, whatever it is: an S3 bucket
//! ([`super::s3::S3Store`]), a seed-compatible cache server
//! ([`super::http::HttpStore`]), or memory ([`super::memory::MemoryStore`],
//! for tests of the tier itself).
//!
//! A store fetches an action's entry as a stream with its output ID and
//! size, stores one unless it is there already, deletes one, and (if it
//! keeps them) reads and writes the named objects that manifests and packs
//! live in. That is all [`Store`] is: transport. What a store is (for
//! messages) and what it can do is a plain [`Profile`] its constructor
//! returns beside it. A store does not verify anything and never touches the
//! local disk: the remote tier checks every byte and hands verified entries
//! to the disk tier.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::format::ObjectMeta;
use crate::wire::Id;

/// How a failed call failed, for the caller's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Wrong, missing or expired credentials: nothing will work this run.
    Credentials,
    /// The bucket does not exist: nothing will work this run.
    NoBucket,
    /// The credentials work but may not do this (read or write).
    AccessDenied,
    /// The endpoint could not be reached, timed out, or answered 5xx.
    Unavailable,
    /// Anything else the server said no to.
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub kind: FailureKind,
    pub message: String,
}

impl RemoteError {
    pub fn timeout(after: Duration) -> RemoteError {
        RemoteError {
            kind: FailureKind::Unavailable,
            message: format!("no answer within {after:?}"),
        }
    }

    pub fn new(kind: FailureKind, message: impl Into<String>) -> RemoteError {
        RemoteError {
            kind,
            message: message.into(),
        }
    }
}

/// A body still on the wire, read chunk by chunk.
pub enum Body {
    S3(ByteStream),
    Http(reqwest::Response),
    /// Chunks in memory; an `Err` chunk is a network failure at that point.
    Chunks(VecDeque<Result<Bytes, String>>),
}

impl Body {
    pub fn from_bytes(b: impl Into<Bytes>) -> Body {
        Body::Chunks(VecDeque::from([Ok(b.into())]))
    }

    pub fn empty() -> Body {
        Body::Chunks(VecDeque::new())
    }

    /// The next chunk; `None` at the end. An error is a network failure.
    pub async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            Body::S3(s) => s.next().await.map(|r| r.map_err(|e| e.to_string())),
            Body::Http(r) => r.chunk().await.map_err(|e| e.to_string()).transpose(),
            Body::Chunks(c) => c.pop_front(),
        }
    }

    /// Reads the whole body of object `key` into memory, up to `limit`
    /// bytes: a longer body is dropped unread past that (a server may send
    /// more than it announced, or ignore a `Range`), and is an error.
    pub async fn collect(mut self, key: &str, limit: usize) -> Result<Vec<u8>, RemoteError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await {
            match chunk {
                Ok(c) if c.len() > limit - out.len() => {
                    return Err(RemoteError::new(
                        FailureKind::Other,
                        format!("reading {key}: longer than the {limit} bytes asked for; dropped"),
                    ))
                }
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => {
                    return Err(RemoteError::new(
                        FailureKind::Unavailable,
                        format!("reading {key}: {e}"),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// A lookup's result. `Found` carries the body still on the wire.
// One per lookup, moved once: the size of `Found` (a signature is 64 bytes)
// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Fetched {
    Missing,
    Found {
        /// `None`: the metadata is missing or unreadable (a corrupt object).
        meta: Option<ObjectMeta>,
        body: Body,
        /// Bytes the body will take on the wire.
        wire_len: u64,
    },
}

/// A ranged read's result.
pub enum Ranged {
    Missing,
    /// The object is no longer the one `if_match` named.
    Changed,
    /// The range starts at or past the object's end.
    Past,
    Found {
        body: Body,
        /// The object's ETag, to ask for the rest of the same object.
        etag: Option<String>,
        /// The whole object's length.
        total: Option<u64>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// An object was there already: same key, and so the same output
    /// (cmd/go's action IDs determine their outputs).
    AlreadyThere,
}

/// Bytes to store.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    Memory(&'a Bytes),
    /// A file that nobody rewrites while it is sent, and its length.
    File(&'a Path, u64),
}

impl Source<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Source::Memory(b) => b.len() as u64,
            Source::File(_, len) => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body in memory (for stores that keep objects in memory).
    pub fn read_all(&self) -> std::io::Result<Bytes> {
        match self {
            Source::Memory(b) => Ok((*b).clone()),
            Source::File(p, _) => std::fs::read(p).map(Bytes::from),
        }
    }
}

/// What a store is, as the layer above needs to know it: for messages, and
/// for what it may ask of the store. Made by the store's constructor, held
/// beside the store (see [`super::locations::Locations`]), so that the
/// [`Store`] trait itself is only transport.
#[derive(Debug, Clone)]
pub struct Profile {
    /// For messages: where the store is, never a secret.
    pub describe: String,
    /// What to tell the user when the store refuses the credentials.
    pub credentials_hint: &'static str,
    /// Whether entries are stored as gocacher encodes them (zstd frames with
    /// metadata), or as the raw output bytes (the seed's servers, which
    /// compress on their own and check bodies against output IDs).
    pub takes_encoded: bool,
    /// Whether the store keeps named objects (manifests and packs); without
    /// them there is no prefetch.
    pub keeps_named: bool,
    /// The prefix named objects' keys start with (`PREFIX` of
    /// `s3://BUCKET/PREFIX`; empty for none).
    pub prefix: String,
    /// For messages: what an entry's object is called, up to its action ID
    /// in hex.
    pub entries_at: String,
}

/// Moving bytes to and from one store. Entries are addressed by their
/// action ID, since the seed's servers address them so (`GET /action/<id>`,
/// `PUT /<id>/<output>`) and a bucket keeps them under a name of its own;
/// named objects (manifests, packs) by the key the layer above gives them.
/// What the store is and what it keeps is its [`Profile`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Looks an action's entry up.
    async fn get(&self, action: &Id) -> Result<Fetched, RemoteError>;

    /// Stores an action's entry unless one is there already.
    async fn put(
        &self,
        action: &Id,
        meta: &ObjectMeta,
        body: Source<'_>,
    ) -> Result<PutOutcome, RemoteError>;

    /// Removes an action's entry, so that a corrupt one can be replaced.
    async fn delete(&self, action: &Id) -> Result<(), RemoteError>;

    /// Reads a named object.
    async fn get_named(&self, key: &str) -> Result<Fetched, RemoteError>;

    /// Bytes `start..=end` of a named object (`end`: `None` for the rest of
    /// it), only while its ETag is `if_match` when one is given.
    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<Ranged, RemoteError>;

    /// Writes a named object, replacing what is there.
    async fn put_named(&self, key: &str, body: Source<'_>) -> Result<(), RemoteError>;
}
