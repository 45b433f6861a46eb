//! gocacher: a `GOCACHEPROG` helper for Go's build cache.
//!
//! cmd/go starts gocacher as a child process and talks to it over stdin and
//! stdout (see `../shared/PROTOCOL.md` in the project tree): `get` asks
//! whether an action's output is cached and where it is on disk, `put`
//! hands one over to keep, `close` ends the session. The same binary also
//! runs `gocacher serve`, a cache server other machines share.
//!
//! # Where a get goes
//!
//! 1. [`protocol`] reads the request line off stdin (the binary's `stdio`
//!    module wires up the pipes) and calls [`protocol::Handler::get`].
//! 2. [`cacher::Cacher`], the handler, asks [`disk`] first: a local hit is
//!    answered at once with the file's path.
//! 3. On a local miss it asks [`remote`], the remote tier (an S3 bucket or
//!    an HTTP cache server). The remote tier fetches the entry from its
//!    store, checks every byte (hash, size, and signature under
//!    `--trust-key`, see [`trust`]), hands it to its sink (the disk tier,
//!    through [`local::Sink`]: the remote tier never names the disk) and
//!    returns the entry with its disk path. Anything that goes wrong there
//!    is a miss for cmd/go, counted in [`stats`].
//! 4. [`protocol`] writes the reply; a put takes the same path down, and
//!    its upload to the remote tier runs in the background.
//!
//! # Modules
//!
//! - [`wire`]: the protocol's JSON types, exactly as cmd/go encodes them.
//! - [`protocol`]: the request loop. [`protocol::serve`] takes a reader, a
//!   writer and a [`protocol::Handler`], answers out of order, and streams
//!   put bodies. It knows nothing about storage.
//! - [`cacher`]: the handler that joins the tiers and counts everything;
//!   on the first local miss it sets the remote tier up
//!   ([`remote::connect`] builds the store from the flags).
//! - [`local`]: what the tiers share about the local cache: [`local::Entry`]
//!   (a hit), [`local::PutError`], and [`local::Sink`], the trait the disk
//!   tier implements and the remote tier writes into.
//! - [`disk`]: the local disk tier, laid out like Go's own cache: atomic
//!   writes, mtime refresh on hits, index files for whole packs, the
//!   overflow dir for a full or read-only cache dir, and daily trimming.
//! - [`remote`]: the remote tier. [`remote::store::Store`] is what every
//!   store provides, transport only: get, put and delete an entry by its
//!   action ID, read (whole or a range) and write a named object (manifests
//!   and packs) by key. What a store is, for messages and for what the tier
//!   may ask of it, is a [`remote::store::Profile`] its constructor returns.
//!   Stores: [`remote::s3`] (S3-compatible buckets), [`remote::http`]
//!   (gocached, go-cacher-server and `gocacher serve`; `auth.rs` the token
//!   exchange). [`remote::locations`] holds the store a go command writes
//!   and its `--also-read` fallbacks with their profiles, names objects, and
//!   asks the next location after a miss or a refused copy. Around it: the
//!   object format, verified downloads, the upload queue, the in-memory
//!   index of what the store holds, the circuit breaker, what a failure
//!   does ([`remote::FailurePolicy`] in `remote/policy.rs`, with a go
//!   command's [`remote::OneShot`]; serve brings its own), the calls serve
//!   passes through (`remote/served.rs`), and the build manifests and
//!   packs with the prefetch they feed.
//! - [`trust`]: signed entries, `--sign-key` and `--trust-key`, and
//!   `gocacher keygen`.
//! - [`scope`]: which build manifest a go command reads and writes.
//! - [`stats`]: atomic counters, the `--stats-file` JSON and the close line.
//! - [`config`]: flags, their `GOCACHER_*` mirrors, and validation into
//!   one [`config::Config`]: `args.rs` holds the flags as clap parses them,
//!   `serve.rs` those of `gocacher serve`, `parse.rs` the syntax of sizes
//!   and of go-cacher's single-dash flags. It depends on no other module
//!   of the server; [`serve`] takes its settings from here.
//! - [`github`]: whether a GitHub Actions job may write the bucket.
//! - [`summary`]: the GitHub Actions job summary row.
//! - [`check`]: `gocacher check`, the bucket diagnostics.
//! - [`mtimes`]: `gocacher fix-mtimes`, stable mtimes for tracked files.
//! - [`modverify`]: a module's `.zip` and `.mod` checked against the Go
//!   checksum database before the module proxy keeps them: `h1:` hashes as
//!   go.sum has them, lookups whose tree head's signature is checked
//!   against `GOSUMDB`'s key, and the proof from the log's tiles that the
//!   record is in that tree.
//! - [`serve`]: `gocacher serve`, the cache server: its HTTP API, auth,
//!   metrics and TLS, on the same disk layout as [`disk`], optionally
//!   backed by a bucket. `mod.rs` starts and stops it; `shared.rs` is the
//!   state every request shares (settings, stores, namespaces);
//!   `handlers.rs` the endpoints, `health.rs` `/healthz`, `/readyz` and
//!   SIGTERM's drain, `named.rs` those of manifests and packs,
//!   `reply.rs` how an output is sent (whole or streamed, lz4), `http.rs`
//!   the plumbing they all use (plain replies, the caller, request bodies,
//!   the request log); `auth.rs` sessions, token files and the JWT
//!   exchange, `jwks.rs` an issuer's keys and the algorithm they pin;
//!   `bucket.rs` the bucket behind the store, `pauses.rs` what a failure
//!   of it does (nothing is given up for good), `evict.rs` trimming,
//!   `metrics.rs`, `listen.rs` (connection limits) and `tls.rs`;
//!   `modproxy/` the Go module proxy of `--modproxy` (GOPROXY and the
//!   checksum database under `/mod/`, kept on disk and in the bucket).
//!
//! The binary (`src/main.rs`) parses flags, opens the cache, runs
//! [`protocol::serve`] on stdin/stdout, and trims after the close reply.
//!
//! # Adding a store
//!
//! Implement [`remote::store::Store`]'s six methods in a new file under
//! `src/remote/` (`s3.rs` and `http/` are the models), and give it a
//! constructor that returns the store with its [`remote::store::Profile`]:
//! how to describe it in messages (never a secret), what to say when it
//! refuses credentials, whether it takes gocacher's encoded entries or raw
//! outputs, whether it keeps named objects (no prefetch without them), the
//! prefix named objects' keys start with, and what an entry is called in
//! messages. Add its flags in `src/config/args.rs` (validated into its
//! settings in `src/config/mod.rs`), and a [`remote::StoreSettings`]
//! variant with its arm in `src/remote/connect.rs`, which builds every
//! store and wraps it in a [`remote::locations::Locations`]. The remote
//! tier above the store (verification, uploads, prefetch) needs no
//! change.

pub mod cacher;
pub mod check;
pub mod config;
pub mod disk;
pub mod github;
pub mod local;
pub mod modverify;
pub mod mtimes;
pub mod protocol;
pub mod remote;
pub mod scope;
pub mod serve;
pub mod stats;
pub mod summary;
pub mod trust;
pub mod wire;
