//! From settings to the locations a tier reads and writes: the one place
//! that names each kind of store. A new store gets a [`StoreSettings`]
//! variant and an arm in [`connect`].

use std::time::Duration;

use super::http::{HttpSettings, HttpStore};
use super::locations::Locations;
use super::s3::{S3Settings, S3Store};
use super::store::Store;

/// Bound on setting up a store: the AWS configuration chain may look at
/// profiles, SSO caches or instance metadata before the first request, and
/// a cache server answers one probe. Every get that misses locally waits
/// for this once.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

/// Which store the remote tier uses.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    S3(S3Settings),
    Http(HttpSettings),
}

/// Sets up the store `settings` name, with the `--also-read` locations
/// (bucket, prefix) behind it. `None`, said on stderr, when it cannot be
/// set up: the go command goes on with the local cache only.
pub async fn connect(
    settings: &StoreSettings,
    also_read: &[(String, String)],
    verbose: bool,
) -> Option<Locations> {
    match settings {
        StoreSettings::S3(s3) => {
            match tokio::time::timeout(CONNECT_BOUND, S3Store::connect(s3)).await {
                Ok((store, profile)) => {
                    let also = also_read
                        .iter()
                        .map(|(bucket, prefix)| {
                            let (also, profile) = store.relocated(bucket, prefix);
                            (Box::new(also) as Box<dyn Store>, profile)
                        })
                        .collect();
                    Some(Locations::new(Box::new(store), profile, also))
                }
                Err(_) => {
                    eprintln!(
                    "gocacher: setting up the S3 client (region, credentials) took over {}s; continuing with the local cache only",
                    CONNECT_BOUND.as_secs()
                );
                    None
                }
            }
        }
        StoreSettings::Http(h) => match HttpStore::new(h) {
            Ok((store, mut profile)) => {
                // gocacher serve keeps manifests and packs; the seed's
                // servers do not (one request to know).
                profile.keeps_named = tokio::time::timeout(CONNECT_BOUND, store.probe())
                    .await
                    .unwrap_or(false);
                if verbose && !profile.keeps_named {
                    eprintln!("gocacher: {}: no prefetch (the server keeps no manifests or packs; gocacher serve does)", profile.describe);
                }
                Some(Locations::one(Box::new(store), profile))
            }
            Err(e) => {
                eprintln!("gocacher: {e}; continuing with the local cache only");
                None
            }
        },
    }
}
