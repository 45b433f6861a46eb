//! The remote tier against the in-memory store: verification, the index
//! (single-flight, known misses), the breaker, and the uploads (queue,
//! drain deadline, read-only switch).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::format::{Encoding, ObjectMeta};
use super::memory::MemoryStore;
use super::{upload_now, FailurePolicy, OneShot, Remote, RemoteOptions, UploadJob, Uploader};
use crate::disk::DiskCache;
use crate::stats::Stats;
use crate::wire::Id;

const COOLDOWN: Duration = Duration::from_millis(200);

struct Tier {
    remote: Arc<Remote>,
    store: MemoryStore,
    /// The sink the tier writes into, as the tests look at it.
    disk: Arc<DiskCache>,
    _dir: tempfile::TempDir,
}

fn opts() -> RemoteOptions {
    RemoteOptions {
        timeout: Duration::from_millis(500),
        upload_timeout: Duration::from_secs(5),
        upload_workers: 2,
        upload_queue: 16,
        read_only: false,
        breaker_cooldown: COOLDOWN,
        spool: true,
        miss_ttl: super::MISS_TTL,
        keys: Default::default(),
    }
}

fn tier(opts: RemoteOptions) -> Tier {
    tier_with(opts, Box::new(OneShot))
}

fn tier_with(opts: RemoteOptions, policy: Box<dyn FailurePolicy>) -> Tier {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(DiskCache::open(dir.path()).unwrap());
    let store = MemoryStore::default();
    let remote = Remote::new(
        super::locations::Locations::one(Box::new(store.clone()), store.profile()),
        disk.clone(),
        Arc::new(Stats::default()),
        opts,
        policy,
    );
    Tier {
        remote,
        store,
        disk,
        _dir: dir,
    }
}

/// Entry `n`: its action ID, output ID and bytes.
fn entry(n: u8) -> (Id, Id, Bytes) {
    let data = Bytes::from(vec![n; 1000 + n as usize]);
    let output = Id(Sha256::digest(&data).into());
    (Id([n; 32]), output, data)
}

fn meta(output: Id, data: &Bytes) -> ObjectMeta {
    ObjectMeta {
        output_id: output,
        size: data.len() as u64,
        put_time_nanos: 1,
        encoding: Encoding::Identity,
        signature: None,
    }
}

/// The store holds entry `n`.
fn held(t: &Tier, n: u8) -> (Id, Id, Bytes) {
    let (action, output, data) = entry(n);
    t.store.insert(action, meta(output, &data), data.clone());
    (action, output, data)
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_verified_and_on_disk() {
    let t = tier(opts());
    let (action, output, data) = held(&t, 1);
    let (e, fresh) = t.remote.fetch(action).await.expect("a hit");
    assert!(fresh);
    assert_eq!(e.output_id, output);
    assert_eq!(std::fs::read(t.disk.output_path(&output)).unwrap(), data);
    // Settled in the index: a second fetch asks nobody.
    assert!(t.remote.fetch(action).await.is_some());
    assert_eq!(count(&t.store.gets), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_its_output_is_never_served() {
    let t = tier(opts());
    let (action, _, data) = entry(2);
    let (_, other_output, _) = entry(3);
    t.store.insert(action, meta(other_output, &data), data);
    assert!(t.remote.fetch(action).await.is_none());
    assert_eq!(count(&t.remote.stats.corrupt), 1);
    assert!(t.disk.get(&action).unwrap().is_none());
    assert!(!t.disk.output_path(&other_output).exists());
    // Remembered as corrupt: not downloaded again.
    assert!(t.remote.fetch(action).await.is_none());
    assert_eq!(count(&t.store.gets), 1);
    assert!(t.remote.knows_corrupt(&action).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_misses_are_not_asked_again() {
    let t = tier(opts());
    let (action, _, _) = entry(4);
    assert!(t.remote.fetch(action).await.is_none());
    assert!(t.remote.fetch(action).await.is_none());
    assert_eq!(count(&t.store.gets), 1);
    assert_eq!(count(&t.remote.stats.remote_misses), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_known_miss_is_asked_again_after_its_ttl() {
    let t = tier(RemoteOptions {
        miss_ttl: Duration::from_millis(100),
        ..opts()
    });
    let (action, _, _) = entry(4);
    assert!(t.remote.fetch(action).await.is_none());
    // Another replica stores it; once the miss has expired, this one
    // finds it.
    let (_, output, _) = held(&t, 4);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (e, _) = t.remote.fetch(action).await.expect("found after the TTL");
    assert_eq!(e.output_id, output);
    assert_eq!(count(&t.store.gets), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_share_one_download() {
    let t = tier(opts());
    let (action, _, _) = held(&t, 5);
    *t.store.delay.lock().unwrap() = Duration::from_millis(100);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let r = t.remote.clone();
        set.spawn(async move { r.fetch(action).await.map(|(_, fresh)| fresh) });
    }
    let results = set.join_all().await;
    assert!(results.iter().all(Option::is_some), "{results:?}");
    let fresh = results.iter().filter(|r| **r == Some(true)).count();
    assert_eq!(fresh, 1, "one of them downloaded: {results:?}");
    assert_eq!(count(&t.store.gets), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_then_lets_one_request_try() {
    let t = tier(opts());
    for n in 10..20 {
        held(&t, n);
    }
    t.store.down.store(true, Ordering::Relaxed);
    for n in 10..13 {
        assert!(t.remote.fetch(entry(n).0).await.is_none());
    }
    assert_eq!(count(&t.store.gets), 3);
    assert_eq!(count(&t.remote.stats.remote_errors), 3);
    // Open: lookups are misses without a call.
    assert!(t.remote.fetch(entry(13).0).await.is_none());
    assert_eq!(count(&t.store.gets), 3);

    // Half-open after the cooldown: one failure opens it again at once.
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert!(t.remote.fetch(entry(14).0).await.is_none());
    assert_eq!(count(&t.store.gets), 4);
    assert!(t.remote.fetch(entry(15).0).await.is_none());
    assert_eq!(count(&t.store.gets), 4, "reopened by one failure");

    // Half-open again, and the store is back: one success closes it.
    t.store.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert!(t.remote.fetch(entry(16).0).await.is_some());
    assert!(t.remote.fetch(entry(17).0).await.is_some());
    assert_eq!(count(&t.store.gets), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lookup_is_cut_off_at_the_timeout() {
    let t = tier(opts());
    let (action, _, _) = held(&t, 21);
    *t.store.delay.lock().unwrap() = Duration::from_secs(5);
    let start = std::time::Instant::now();
    assert!(t.remote.fetch(action).await.is_none());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(count(&t.remote.stats.remote_errors), 1);
}

/// An upload job for entry `n`, its output written to the local disk.
fn job(t: &Tier, n: u8) -> UploadJob {
    let (action, output, data) = entry(n);
    let path = t.disk.write_output_bytes(&output, &data).unwrap();
    UploadJob {
        action,
        output,
        size: data.len() as u64,
        put_time_nanos: 1,
        path,
    }
}

fn soon(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_land_and_are_not_repeated() {
    let t = tier(opts());
    let up = Uploader::start(t.remote.clone());
    up.enqueue(job(&t, 30)).await;
    up.enqueue(job(&t, 31)).await;
    up.drain(soon(Duration::from_secs(5))).await;
    assert_eq!(count(&t.remote.stats.uploads), 2);
    let (action, output, data) = entry(30);
    let stored = t.store.entries.lock().unwrap().get(&action).cloned();
    let (m, body) = stored.expect("uploaded");
    assert_eq!((m.output_id, m.size), (output, data.len() as u64));
    // Stored compressed; the metadata says how.
    assert_eq!(m.encoding, Encoding::Zstd);
    assert_eq!(zstd::decode_all(&body[..]).unwrap(), data);

    let again = Uploader::start(t.remote.clone());
    again.enqueue(job(&t, 30)).await;
    again.drain(soon(Duration::from_secs(5))).await;
    assert_eq!(count(&t.remote.stats.uploads_skipped), 1);
    assert_eq!(count(&t.store.puts), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_uploads_instead_of_waiting() {
    let t = tier(RemoteOptions {
        upload_workers: 1,
        upload_queue: 2,
        ..opts()
    });
    *t.store.delay.lock().unwrap() = Duration::from_millis(100);
    let up = Uploader::start(t.remote.clone());
    let jobs: Vec<_> = (40..50).map(|n| job(&t, n)).collect();
    let start = std::time::Instant::now();
    for j in jobs {
        up.enqueue(j).await;
    }
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "enqueue waited"
    );
    up.drain(soon(Duration::from_secs(10))).await;
    let (uploads, dropped) = (
        count(&t.remote.stats.uploads),
        count(&t.remote.stats.uploads_dropped),
    );
    assert!(dropped > 0, "nothing dropped");
    assert_eq!(uploads + dropped, 10, "every upload accounted for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_stops_at_its_deadline() {
    let t = tier(opts());
    *t.store.delay.lock().unwrap() = Duration::from_secs(3);
    let up = Uploader::start(t.remote.clone());
    for n in 50..53 {
        up.enqueue(job(&t, n)).await;
    }
    let start = std::time::Instant::now();
    up.drain(soon(Duration::from_millis(300))).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(count(&t.remote.stats.uploads), 0);
    assert_eq!(count(&t.remote.stats.uploads_dropped), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_write_switches_to_read_only() {
    let t = tier(RemoteOptions {
        upload_workers: 1,
        ..opts()
    });
    t.store.deny_writes.store(true, Ordering::Relaxed);
    let up = Uploader::start(t.remote.clone());
    up.enqueue(job(&t, 60)).await;
    let start = std::time::Instant::now();
    while !t.remote.is_read_only() {
        assert!(start.elapsed() < Duration::from_secs(5), "never read-only");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    up.enqueue(job(&t, 61)).await;
    up.drain(soon(Duration::from_secs(5))).await;
    assert_eq!(count(&t.remote.stats.upload_errors), 1);
    assert_eq!(count(&t.store.puts), 0);
    assert_eq!(count(&t.remote.stats.uploads), 0);
    // Lookups still work.
    let (action, _, _) = held(&t, 62);
    assert!(t.remote.fetch(action).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_cooldown_many_lookups_send_one_probe() {
    let t = tier(opts());
    for n in 100..140 {
        held(&t, n);
    }
    t.store.down.store(true, Ordering::Relaxed);
    for n in 100..103 {
        assert!(t.remote.fetch(entry(n).0).await.is_none());
    }
    assert_eq!(count(&t.store.gets), 3);
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    // The store answers slowly (within the timeout): while the probe is
    // out, the other lookups are misses without a call.
    *t.store.delay.lock().unwrap() = Duration::from_millis(300);
    let lookups: Vec<_> = (103..133)
        .map(|n| {
            let r = t.remote.clone();
            tokio::spawn(async move { r.fetch(entry(n).0).await.is_some() })
        })
        .collect();
    for l in lookups {
        assert!(!l.await.unwrap());
    }
    assert_eq!(count(&t.store.gets), 4, "one probe, not one per lookup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_retries_refused_credentials_and_denied_writes() {
    let t = tier_with(opts(), Box::new(crate::serve::pauses::Pauses::default()));
    for n in 140..150 {
        held(&t, n);
    }
    t.store.refuse_credentials.store(true, Ordering::Relaxed);
    assert!(t.remote.fetch(entry(140).0).await.is_none());
    assert!(!t.remote.in_use() && !t.remote.writes_go_through());
    assert!(t.remote.fetch(entry(141).0).await.is_none());
    assert_eq!(count(&t.store.gets), 1, "out of use: no call");
    // Still refused at the retry: out of use for another cooldown.
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert!(t.remote.fetch(entry(142).0).await.is_none());
    assert_eq!(count(&t.store.gets), 2);
    t.store.refuse_credentials.store(false, Ordering::Relaxed);
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert!(t.remote.fetch(entry(143).0).await.is_some());
    assert!(t.remote.fetch(entry(144).0).await.is_some());
    assert!(t.remote.in_use() && t.remote.writes_go_through());

    // Denied writes pause writes, not reads, and resume after the cooldown.
    t.store.deny_writes.store(true, Ordering::Relaxed);
    assert!(!upload_now(&t.remote, job(&t, 150)).await);
    assert!(t.remote.is_read_only() && !t.remote.writes_go_through());
    assert!(t.remote.in_use());
    assert!(!upload_now(&t.remote, job(&t, 151)).await);
    assert_eq!(count(&t.remote.stats.upload_errors), 1, "paused: no call");
    t.store.deny_writes.store(false, Ordering::Relaxed);
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert!(upload_now(&t.remote, job(&t, 152)).await);
    assert!(t.remote.writes_go_through());
    let failures = t.remote.failures();
    assert_eq!(failures[0], ("credentials", 2));
    assert_eq!(failures[3], ("write_denied", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_command_gives_refused_credentials_up_for_good() {
    let t = tier(opts());
    held(&t, 160);
    held(&t, 161);
    t.store.refuse_credentials.store(true, Ordering::Relaxed);
    assert!(t.remote.fetch(entry(160).0).await.is_none());
    t.store.refuse_credentials.store(false, Ordering::Relaxed);
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert!(t.remote.fetch(entry(161).0).await.is_none());
    assert_eq!(count(&t.store.gets), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_heal_skips_that_object_only() {
    let t = tier(opts());
    // A corrupt object: its metadata names another output.
    let (action, output, data) = entry(170);
    let (_, other, _) = entry(171);
    t.store.insert(action, meta(other, &data), data.clone());
    assert!(t.remote.fetch(action).await.is_none());
    assert_eq!(count(&t.remote.stats.corrupt), 1);
    t.store.deny_deletes.store(true, Ordering::Relaxed);
    assert!(!upload_now(&t.remote, job(&t, 170)).await);
    assert!(
        !t.remote.is_read_only(),
        "one denied heal is not a read-only run"
    );
    assert!(upload_now(&t.remote, job(&t, 172)).await);
    assert_eq!(count(&t.remote.stats.uploads), 1);
    assert_eq!(count(&t.remote.stats.healed), 0);
    assert_eq!(
        t.store.entries.lock().unwrap()[&action].0.output_id,
        other,
        "the bad object is left as it was"
    );
    let _ = output;
}

/// A body longer than asked for (a server that ignores `Range`) is an
/// error at the limit, not a buffer of whatever the server sends.
#[tokio::test]
async fn a_collected_body_stops_at_its_limit() {
    use super::store::Body;
    let chunks =
        |n: usize| Body::Chunks((0..n).map(|_| Ok(Bytes::from(vec![7u8; 1000]))).collect());
    assert_eq!(chunks(4).collect("k", 4000).await.unwrap().len(), 4000);
    let e = chunks(1000).collect("k", 4000).await.unwrap_err();
    assert!(e.message.contains("longer than the 4000 bytes"), "{e}");
}
