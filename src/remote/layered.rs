//! `--also-read`: read-only fallback locations behind the store a go
//! command writes. A lookup that misses the store tries each location in
//! order, and so does one whose copy is corrupt or untrusted (the remote tier
//! verifies each and asks the next, see [`Store::get_in`]). Manifests and
//! packs are read from them too (the same names under their prefixes), from
//! the first location that has one: one that is refused is not looked for
//! further (the prefetch then takes a fallback scope's manifest, or each
//! entry on its own, and a writer replaces its own at close). Nothing is ever
//! written, replaced or removed there.
//!
//! This is how a pull request writes only its own prefix and still reads
//! everything the default branch stored.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::format::ObjectMeta;
use super::s3::S3Store;
use super::store::{Fetched, PutOutcome, Ranged, RemoteError, Source, Store};
use crate::wire::Id;

pub struct Layered {
    primary: S3Store,
    also: Vec<S3Store>,
    /// Which location answered for a named object (0: the primary, i + 1:
    /// `also[i]`), so the ranged reads of a pack go where its head came from.
    answered: Mutex<HashMap<String, usize>>,
}

impl Layered {
    pub fn new(primary: S3Store, also: Vec<S3Store>) -> Layered {
        Layered {
            primary,
            also,
            answered: Mutex::default(),
        }
    }

    fn layer(&self, i: usize) -> &S3Store {
        if i == 0 {
            &self.primary
        } else {
            &self.also[i - 1]
        }
    }

    /// The primary's name of a named object, as location `i` names it.
    fn key_in(&self, i: usize, key: &str) -> String {
        if i == 0 {
            return key.to_string();
        }
        let rel = strip_prefix(self.primary.prefix(), key);
        let prefix = self.also[i - 1].prefix();
        if prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{prefix}/{rel}")
        }
    }
}

fn strip_prefix<'a>(prefix: &str, key: &'a str) -> &'a str {
    if prefix.is_empty() {
        return key;
    }
    key.strip_prefix(prefix)
        .and_then(|k| k.strip_prefix('/'))
        .unwrap_or(key)
}

#[async_trait]
impl Store for Layered {
    fn describe(&self) -> &str {
        self.primary.describe()
    }

    fn key(&self, action: &Id) -> String {
        self.primary.key(action)
    }

    fn credentials_hint(&self) -> &'static str {
        self.primary.credentials_hint()
    }

    fn takes_encoded(&self) -> bool {
        true
    }

    async fn get(&self, action: &Id) -> Result<Fetched, RemoteError> {
        for i in 0..=self.also.len() {
            match self.layer(i).get(action).await? {
                Fetched::Missing => continue,
                found => return Ok(found),
            }
        }
        Ok(Fetched::Missing)
    }

    fn locations(&self) -> usize {
        1 + self.also.len()
    }

    async fn get_in(&self, action: &Id, location: usize) -> Result<Fetched, RemoteError> {
        self.layer(location).get(action).await
    }

    fn key_in(&self, action: &Id, location: usize) -> String {
        if location == 0 {
            return self.primary.key(action);
        }
        let layer = self.layer(location);
        format!("{} (--also-read, {})", layer.key(action), layer.describe())
    }

    async fn put(
        &self,
        action: &Id,
        meta: &ObjectMeta,
        body: Source<'_>,
    ) -> Result<PutOutcome, RemoteError> {
        self.primary.put(action, meta, body).await
    }

    async fn remove(&self, action: &Id) -> Result<(), RemoteError> {
        self.primary.remove(action).await
    }

    fn keeps_named(&self) -> bool {
        true
    }

    fn manifest_key(&self, scope: &str) -> String {
        self.primary.manifest_key(scope)
    }

    fn pack_key(&self, scope: &str) -> String {
        self.primary.pack_key(scope)
    }

    async fn get_named(&self, key: &str) -> Result<Fetched, RemoteError> {
        for i in 0..=self.also.len() {
            match self.layer(i).get_named(&self.key_in(i, key)).await? {
                Fetched::Missing => continue,
                found => {
                    self.answered.lock().unwrap().insert(key.to_string(), i);
                    return Ok(found);
                }
            }
        }
        Ok(Fetched::Missing)
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<Ranged, RemoteError> {
        // Where the head came from, if known: only there.
        let known = self.answered.lock().unwrap().get(key).copied();
        let layers = known.map_or(0..=self.also.len(), |i| i..=i);
        for i in layers {
            match self
                .layer(i)
                .get_range(&self.key_in(i, key), start, end, if_match)
                .await?
            {
                Ranged::Missing => continue,
                found => {
                    self.answered.lock().unwrap().insert(key.to_string(), i);
                    return Ok(found);
                }
            }
        }
        Ok(Ranged::Missing)
    }

    async fn put_named(&self, key: &str, body: Source<'_>) -> Result<(), RemoteError> {
        self.answered.lock().unwrap().remove(key);
        self.primary.put_named(key, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::strip_prefix;

    #[test]
    fn keys_move_between_prefixes() {
        assert_eq!(
            strip_prefix("pr/7", "pr/7/gocacher/v1/packs/ab"),
            "gocacher/v1/packs/ab"
        );
        assert_eq!(
            strip_prefix("", "gocacher/v1/packs/ab"),
            "gocacher/v1/packs/ab"
        );
    }
}
