//! A store in memory, for unit tests of the remote tier: what it holds, and
//! knobs for the trouble a real store gives (failures, a slow answer,
//! writes denied, a body that does not match its output ID).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::format::ObjectMeta;
use super::store::{
    Body, FailureKind, Fetched, Profile, PutOutcome, Ranged, RemoteError, Source, Store,
};
use crate::wire::Id;

/// Clones share one store: a test keeps one to turn the knobs of the one
/// the remote tier owns.
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Held>);

impl std::ops::Deref for MemoryStore {
    type Target = Held;
    fn deref(&self) -> &Held {
        &self.0
    }
}

#[derive(Default)]
pub struct Held {
    pub entries: Mutex<HashMap<Id, (ObjectMeta, Bytes)>>,
    pub named: Mutex<HashMap<String, Bytes>>,
    /// Lookups asked, and uploads that reached the store.
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    /// Every call waits this long first.
    pub delay: Mutex<Duration>,
    /// Calls fail (unavailable) while this is set.
    pub down: AtomicBool,
    /// Puts are refused as access denied (a read-only credential).
    pub deny_writes: AtomicBool,
    /// Deletes are refused as access denied (no s3:DeleteObject).
    pub deny_deletes: AtomicBool,
    /// Every call fails as refused credentials while this is set.
    pub refuse_credentials: AtomicBool,
}

impl MemoryStore {
    /// What the store is, as a constructor of a real store would say.
    pub fn profile(&self) -> Profile {
        Profile {
            describe: "memory store".into(),
            credentials_hint: "none",
            takes_encoded: true,
            keeps_named: true,
            prefix: String::new(),
            entries_at: String::new(),
        }
    }
}

impl Held {
    /// Holds `data` for `action`, as an upload would (raw bytes).
    pub fn insert(&self, action: Id, meta: ObjectMeta, data: Bytes) {
        self.entries.lock().unwrap().insert(action, (meta, data));
    }

    async fn call(&self) -> Result<(), RemoteError> {
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.down.load(Ordering::Relaxed) {
            return Err(RemoteError::new(FailureKind::Unavailable, "down"));
        }
        if self.refuse_credentials.load(Ordering::Relaxed) {
            return Err(RemoteError::new(FailureKind::Credentials, "ExpiredToken"));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, action: &Id) -> Result<Fetched, RemoteError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.call().await?;
        Ok(match self.entries.lock().unwrap().get(action) {
            None => Fetched::Missing,
            Some((meta, data)) => Fetched::Found {
                meta: Some(*meta),
                wire_len: data.len() as u64,
                body: Body::from_bytes(data.clone()),
            },
        })
    }

    async fn put(
        &self,
        action: &Id,
        meta: &ObjectMeta,
        body: Source<'_>,
    ) -> Result<PutOutcome, RemoteError> {
        self.call().await?;
        if self.deny_writes.load(Ordering::Relaxed) {
            return Err(RemoteError::new(FailureKind::AccessDenied, "denied"));
        }
        self.puts.fetch_add(1, Ordering::Relaxed);
        let data = body
            .read_all()
            .map_err(|e| RemoteError::new(FailureKind::Other, e.to_string()))?;
        let mut entries = self.entries.lock().unwrap();
        if entries.contains_key(action) {
            return Ok(PutOutcome::AlreadyThere);
        }
        entries.insert(*action, (*meta, data));
        Ok(PutOutcome::Created)
    }

    async fn delete(&self, action: &Id) -> Result<(), RemoteError> {
        self.call().await?;
        if self.deny_deletes.load(Ordering::Relaxed) {
            return Err(RemoteError::new(FailureKind::AccessDenied, "denied"));
        }
        self.entries.lock().unwrap().remove(action);
        Ok(())
    }

    async fn get_named(&self, key: &str) -> Result<Fetched, RemoteError> {
        self.call().await?;
        Ok(match self.named.lock().unwrap().get(key) {
            None => Fetched::Missing,
            Some(data) => Fetched::Found {
                meta: None,
                wire_len: data.len() as u64,
                body: Body::from_bytes(data.clone()),
            },
        })
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
        _if_match: Option<&str>,
    ) -> Result<Ranged, RemoteError> {
        self.call().await?;
        let named = self.named.lock().unwrap();
        let Some(data) = named.get(key) else {
            return Ok(Ranged::Missing);
        };
        let total = data.len() as u64;
        if start >= total {
            return Ok(Ranged::Past);
        }
        let end = end.map_or(total, |e| (e + 1).min(total));
        Ok(Ranged::Found {
            body: Body::from_bytes(data.slice(start as usize..end as usize)),
            etag: Some("\"memory\"".into()),
            total: Some(total),
        })
    }

    async fn put_named(&self, key: &str, body: Source<'_>) -> Result<(), RemoteError> {
        self.call().await?;
        let data = body
            .read_all()
            .map_err(|e| RemoteError::new(FailureKind::Other, e.to_string()))?;
        self.named.lock().unwrap().insert(key.to_string(), data);
        Ok(())
    }
}
