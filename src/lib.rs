//! gocacher: a `GOCACHEPROG` helper for Go's build cache.
//!
//! cmd/go starts gocacher as a child process and talks to it over stdin and
//! stdout (see `../shared/PROTOCOL.md` in the project tree). Modules:
//!
//! - [`wire`]: the protocol's JSON types, exactly as cmd/go encodes them.
//! - [`protocol`]: the request loop. [`protocol::serve`] takes a reader, a
//!   writer and a [`protocol::Handler`], answers out of order, and streams put
//!   bodies. It knows nothing about storage.
//! - [`disk`]: the local disk tier, laid out like Go's own cache; atomic
//!   writes, mtime refresh on hits, daily trimming.
//! - [`remote`]: the S3 tier: object format, client, lazy verified
//!   downloads, the upload queue, the moka index, the circuit breaker, and
//!   build manifests with the prefetch they feed.
//! - [`cacher`]: the handler that joins the tiers and counts everything.
//! - [`stats`]: atomic counters, the `--stats-file` JSON and the close line.
//! - [`github`]: whether a GitHub Actions job may write the bucket.
//! - [`summary`]: the GitHub Actions job summary row.
//! - [`mtimes`]: `gocacher fix-mtimes`, stable mtimes for tracked files.
//! - [`config`]: flags, their `GOCACHER_*` mirrors, and validation.
//! - [`check`]: `gocacher check`, the bucket diagnostics.
//! - [`scope`]: which build manifest a go command reads and writes.
//! - [`serve`]: `gocacher serve`, the cache server.
//!
//! The binary (`src/main.rs`) parses flags, opens the cache, runs
//! [`protocol::serve`] on stdin/stdout, and trims after the close reply.

pub mod cacher;
pub mod check;
pub mod config;
pub mod disk;
pub mod github;
pub mod mtimes;
pub mod protocol;
pub mod remote;
pub mod scope;
pub mod serve;
pub mod stats;
pub mod summary;
pub mod trust;
pub mod wire;
