//! `gocacher serve`'s metrics, in Prometheus' text format on
//! `--metrics-listen` (never on the build-facing port), and its request log
//! with `--verbose`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of a fixed set ([`method_label`]): a client can send any token
    /// as its method.
    pub method: String,
    /// The route (`/action/{id}`), not the URL: a bounded set.
    pub endpoint: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// One of [`crate::remote::FAILURE_KINDS`].
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram>,
    pub hits: Counter,
    pub misses: Counter,
    pub puts: Counter,
    pub refused: Family<CodeLabels, Counter>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub evicted_files: Counter,
    pub evicted_bytes: Counter,
    pub store_bytes: Gauge,
    pub sessions: Gauge,
    pub auth_failures: Counter,
    /// With `--remote` (see [`Metrics::register_bucket`]).
    pub bucket_errors: Family<KindLabels, Counter>,
    pub bucket_in_use: Gauge,
    pub bucket_writes: Gauge,
    /// With `--modproxy` (see [`Metrics::register_modproxy`]).
    pub modproxy_upstream_fetches: Family<KindLabels, Gauge>,
    pub modproxy_from_bucket: Gauge,
    pub modproxy_fallbacks: Gauge,
    pub modproxy_checks: Family<KindLabels, Gauge>,
    pub modproxy_refused: Family<KindLabels, Gauge>,
    pub modproxy_stored_zips: Family<KindLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("gocacher_serve");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to ~13 s.
            Histogram::new(exponential_buckets(0.0001, 4.0, 9))
        });
        let m = Metrics {
            requests,
            latency,
            hits: Counter::default(),
            misses: Counter::default(),
            puts: Counter::default(),
            refused: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            evicted_files: Counter::default(),
            evicted_bytes: Counter::default(),
            store_bytes: Gauge::default(),
            sessions: Gauge::default(),
            auth_failures: Counter::default(),
            bucket_errors: Family::default(),
            bucket_in_use: Gauge::default(),
            bucket_writes: Gauge::default(),
            modproxy_upstream_fetches: Family::default(),
            modproxy_from_bucket: Gauge::default(),
            modproxy_fallbacks: Gauge::default(),
            modproxy_checks: Family::default(),
            modproxy_refused: Family::default(),
            modproxy_stored_zips: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response headers, by route",
            m.latency.clone(),
        );
        registry.register(
            "hits",
            "Action lookups answered from the store",
            m.hits.clone(),
        );
        registry.register(
            "misses",
            "Action lookups not in the store",
            m.misses.clone(),
        );
        registry.register("puts", "Entries stored", m.puts.clone());
        registry.register("refused", "Requests refused, by status", m.refused.clone());
        registry.register(
            "bytes_in",
            "Body bytes received in PUTs",
            m.bytes_in.clone(),
        );
        registry.register("bytes_out", "Body bytes sent", m.bytes_out.clone());
        registry.register(
            "evicted_files",
            "Files removed by eviction",
            m.evicted_files.clone(),
        );
        registry.register(
            "evicted_bytes",
            "Bytes removed by eviction",
            m.evicted_bytes.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes in the store (entries and named objects, every namespace) at the last trim",
            m.store_bytes.clone(),
        );
        registry.register(
            "sessions",
            "Sessions (static tokens and exchanged)",
            m.sessions.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests and exchanges refused for their token",
            m.auth_failures.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Adds the bucket's metrics (`--remote`).
    pub fn register_bucket(&mut self) {
        self.registry.register(
            "bucket_errors",
            "Failed bucket calls, by kind of failure",
            self.bucket_errors.clone(),
        );
        self.registry.register(
            "bucket_in_use",
            "1 while the bucket is used for reads; 0 while it is out of use after failures, until a retry succeeds",
            self.bucket_in_use.clone(),
        );
        self.registry.register(
            "bucket_writes",
            "1 while PUTs are written to the bucket; 0 while it is out of use or its writes are denied",
            self.bucket_writes.clone(),
        );
    }

    /// Adds the module proxy's counts since start (`--modproxy`).
    pub fn register_modproxy(&mut self) {
        self.registry.register(
            "modproxy_upstream_fetches",
            "Requests the module proxy sent its upstream since start, by kind (immutable: kept files; mutable: lists, latest, lookups; tile: checksum database tiles fetched to check downloads)",
            self.modproxy_upstream_fetches.clone(),
        );
        self.registry.register(
            "modproxy_from_bucket",
            "Module proxy files copied from the bucket to the server's disk since start",
            self.modproxy_from_bucket.clone(),
        );
        self.registry.register(
            "modproxy_fallbacks",
            "Mutable module proxy answers made from what is kept while the upstream failed, since start",
            self.modproxy_fallbacks.clone(),
        );
        self.registry.register(
            "modproxy_checks",
            "Module .zip and .mod files fetched from the upstream since start, by their checksum database check (proven, unverified: not covered by the database, mismatch: refused, failed: not checkable, refused)",
            self.modproxy_checks.clone(),
        );
        self.registry.register(
            "modproxy_refused",
            "Kept module files refused since start, by where (bucket, disk): not matching their sidecar, or their sidecar malformed or not signed by a trusted key; never served",
            self.modproxy_refused.clone(),
        );
        self.registry.register(
            "modproxy_stored_zips",
            "With --modproxy-stored-zips, stored copies of module zips made since start (made), and zips sent deflated since no stored copy could be made (fallback)",
            self.modproxy_stored_zips.clone(),
        );
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
