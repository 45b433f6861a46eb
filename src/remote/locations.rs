//! The layer between the remote tier and its stores: the store a go command
//! writes, its `--also-read` fallbacks behind it, and what each of them is
//! ([`Profile`]). Naming, messages and capabilities are answered here from
//! the profiles; the stores only move bytes.
//!
//! A lookup asks a location ([`Locations::get_in`]): the remote tier
//! verifies each copy, and after a miss, a corrupt or an untrusted one asks
//! the next. Manifests and packs are read from the fallbacks too (the same
//! names under their prefixes), from the first location that has one: one
//! that is refused is not looked for further (the prefetch then takes a
//! fallback scope's manifest, or each entry on its own, and a writer
//! replaces its own at close). Nothing is ever written, replaced or removed
//! in a fallback.
//!
//! This is how a pull request writes only its own prefix and still reads
//! everything the default branch stored.

use std::collections::HashMap;
use std::sync::Mutex;

use super::format::ObjectMeta;
use super::store::{FailureKind, Fetched, Profile, PutOutcome, Ranged, RemoteError, Source, Store};
use crate::wire::Id;

pub struct Locations {
    /// The store written to first, then the `--also-read` fallbacks.
    stores: Vec<(Box<dyn Store>, Profile)>,
    /// With fallbacks: which location answered for a named object, so the
    /// ranged reads of a pack go where its head came from.
    answered: Mutex<HashMap<String, usize>>,
}

impl Locations {
    /// One store, no fallbacks.
    pub fn one(store: Box<dyn Store>, profile: Profile) -> Locations {
        Locations::new(store, profile, Vec::new())
    }

    /// A store and its read-only fallbacks, asked in order.
    pub fn new(
        store: Box<dyn Store>,
        profile: Profile,
        also: Vec<(Box<dyn Store>, Profile)>,
    ) -> Locations {
        let mut stores = vec![(store, profile)];
        stores.extend(also);
        Locations {
            stores,
            answered: Mutex::default(),
        }
    }

    /// What the store written to is.
    pub fn profile(&self) -> &Profile {
        &self.stores[0].1
    }

    fn primary(&self) -> &dyn Store {
        &*self.stores[0].0
    }

    /// For messages: where the store is, never a secret.
    pub fn describe(&self) -> &str {
        &self.profile().describe
    }

    /// What to tell the user when the store refuses the credentials.
    pub fn credentials_hint(&self) -> &'static str {
        self.profile().credentials_hint
    }

    /// See [`Profile::takes_encoded`].
    pub fn takes_encoded(&self) -> bool {
        self.profile().takes_encoded
    }

    /// See [`Profile::keeps_named`].
    pub fn keeps_named(&self) -> bool {
        self.profile().keeps_named
    }

    /// For messages: the name of an action's object.
    pub fn key(&self, action: &Id) -> String {
        entry_key(self.profile(), action)
    }

    /// The name of a scope's manifest.
    pub fn manifest_key(&self, scope: &str) -> String {
        super::manifest::key(&self.profile().prefix, scope)
    }

    /// The name of a scope's pack.
    pub fn pack_key(&self, scope: &str) -> String {
        super::pack::key(&self.profile().prefix, scope)
    }

    /// How many locations hold entries, asked in order.
    pub fn locations(&self) -> usize {
        self.stores.len()
    }

    /// Looks an action's entry up in location `location` only (0: the
    /// store written to).
    pub async fn get_in(&self, action: &Id, location: usize) -> Result<Fetched, RemoteError> {
        self.stores[location].0.get(action).await
    }

    /// For messages: the name of an action's object in `location`.
    pub fn key_in(&self, action: &Id, location: usize) -> String {
        let (_, profile) = &self.stores[location];
        if location == 0 {
            return entry_key(profile, action);
        }
        format!(
            "{} (--also-read, {})",
            entry_key(profile, action),
            profile.describe
        )
    }

    /// Stores an action's entry unless one is there already.
    pub async fn put(
        &self,
        action: &Id,
        meta: &ObjectMeta,
        body: Source<'_>,
    ) -> Result<PutOutcome, RemoteError> {
        self.primary().put(action, meta, body).await
    }

    /// Removes an action's entry, so that a corrupt one can be replaced.
    pub async fn remove(&self, action: &Id) -> Result<(), RemoteError> {
        self.primary().delete(action).await
    }

    /// The key of the named object `key` (as the store written to names
    /// it) in location `i`.
    fn key_at(&self, i: usize, key: &str) -> String {
        if i == 0 {
            return key.to_string();
        }
        let rel = strip_prefix(&self.profile().prefix, key);
        let prefix = &self.stores[i].1.prefix;
        if prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{prefix}/{rel}")
        }
    }

    fn remember(&self, key: &str, i: usize) {
        if self.stores.len() > 1 {
            self.answered.lock().unwrap().insert(key.to_string(), i);
        }
    }

    /// Reads a named object from the first location that has it.
    pub async fn get_named(&self, key: &str) -> Result<Fetched, RemoteError> {
        for (i, (store, _)) in self.stores.iter().enumerate() {
            match store.get_named(&self.key_at(i, key)).await? {
                Fetched::Missing => continue,
                found => {
                    self.remember(key, i);
                    return Ok(found);
                }
            }
        }
        Ok(Fetched::Missing)
    }

    /// Bytes `start..=end` of a named object (`end`: `None` for the rest of
    /// it), only while its ETag is `if_match` when one is given; from the
    /// location its head came from, if known.
    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<Ranged, RemoteError> {
        let known = if self.stores.len() > 1 {
            self.answered.lock().unwrap().get(key).copied()
        } else {
            None
        };
        let asked = known.map_or(0..self.stores.len(), |i| i..i + 1);
        for i in asked {
            match self.stores[i]
                .0
                .get_range(&self.key_at(i, key), start, end, if_match)
                .await?
            {
                Ranged::Missing => continue,
                found => {
                    self.remember(key, i);
                    return Ok(found);
                }
            }
        }
        Ok(Ranged::Missing)
    }

    /// Writes a named object to the store written to, replacing what is
    /// there.
    pub async fn put_named(&self, key: &str, body: Source<'_>) -> Result<(), RemoteError> {
        if self.stores.len() > 1 {
            self.answered.lock().unwrap().remove(key);
        }
        self.primary().put_named(key, body).await
    }
}

/// For messages: the name of an action's object in a store.
fn entry_key(profile: &Profile, action: &Id) -> String {
    format!("{}{}", profile.entries_at, action.to_hex())
}

/// Reads a whole small named object; `Ok(None)` when there is none. Objects
/// over `limit` bytes are refused unread.
pub async fn read_small(
    store: &Locations,
    key: &str,
    limit: usize,
) -> Result<Option<Vec<u8>>, RemoteError> {
    match store.get_named(key).await? {
        Fetched::Missing => Ok(None),
        Fetched::Found { wire_len, .. } if wire_len > limit as u64 => Err(RemoteError::new(
            FailureKind::Other,
            format!("{key}: {wire_len} bytes, over the {limit}-byte limit"),
        )),
        Fetched::Found { body, .. } => body.collect(key, limit).await.map(Some),
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
