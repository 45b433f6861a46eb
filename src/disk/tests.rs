use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::*;

fn cache() -> (DiskCache, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (DiskCache::open(dir.path()).unwrap(), dir)
}

fn sum(b: &[u8]) -> Id {
    Id(Sha256::digest(b).into())
}

/// Stores `body` under `action` the way a put does.
fn store(c: &DiskCache, action: Id, body: &[u8]) -> Result<PathBuf, PutError> {
    let mut chunks = body
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect::<Vec<_>>()
        .into_iter();
    let path = c.write_output(&sum(body), body.len() as u64, || chunks.next())?;
    c.write_action(&action, &sum(body), body.len() as u64, 42)?;
    Ok(path)
}

fn set_age(path: &Path, age: Duration) {
    let f = File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

const DAY: Duration = Duration::from_secs(86400);

#[test]
fn layout_is_sharded_like_gos() {
    let (c, _dir) = cache();
    let path = store(&c, Id([0xAB; 32]), b"hello").unwrap();
    let hex = sum(b"hello").to_hex();
    assert_eq!(path, c.root().join(&hex[..2]).join(format!("{hex}-d")));
    let apath = c.action_path(&Id([0xAB; 32]));
    assert!(apath.ends_with(format!("ab/{}-a", "ab".repeat(32))));
    assert_eq!(fs::read(&path).unwrap(), b"hello");
    let e = c.get(&Id([0xAB; 32])).unwrap().unwrap();
    assert_eq!(
        (e.size, e.put_time_nanos, e.output_id),
        (5, 42, sum(b"hello"))
    );
}

/// Entries get a plain create's mode (0666 less the umask), as Go's own
/// cache files do: tempfile's default, 0600, would hide them from other
/// readers of a shared cache dir.
#[cfg(unix)]
#[test]
fn entries_have_a_plain_creates_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (c, _dir) = cache();
    let out = store(&c, Id([0xCD; 32]), b"mode").unwrap();
    let plain = c.root().join("plain");
    fs::File::create(&plain).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&plain), "output");
    assert_eq!(
        mode(&c.action_path(&Id([0xCD; 32]))),
        mode(&plain),
        "action"
    );
}

#[test]
fn damaged_entries_are_misses() {
    let (c, _dir) = cache();
    let a = Id([1; 32]);
    let out = store(&c, a, b"content").unwrap();
    // Output of the wrong size (say, truncated by a crash or a hand edit).
    fs::write(&out, b"cont").unwrap();
    assert_eq!(c.get(&a).unwrap(), None);
    // A put repairs it: the wrong-size file is replaced.
    store(&c, a, b"content").unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"content");
    // Garbage action entry.
    fs::write(c.action_path(&a), "v1 nonsense\n").unwrap();
    assert_eq!(c.get(&a).unwrap(), None);
    // Entry naming another action (copied file).
    store(&c, Id([2; 32]), b"content").unwrap();
    fs::copy(c.action_path(&Id([2; 32])), c.action_path(&a)).unwrap();
    assert_eq!(c.get(&a).unwrap(), None);
    // Output removed.
    fs::remove_file(&out).unwrap();
    assert_eq!(c.get(&Id([2; 32])).unwrap(), None);
}

#[test]
fn mismatch_and_short_bodies_leave_nothing() {
    let (c, dir) = cache();
    let mut once = Some(Ok(Bytes::from_static(b"abc")));
    let err = c.write_output(&sum(b"xyz"), 3, || once.take()).unwrap_err();
    assert!(matches!(err, PutError::Mismatch { .. }), "{err}");
    let mut once = Some(Ok(Bytes::from_static(b"ab")));
    let err = c.write_output(&sum(b"abc"), 3, || once.take()).unwrap_err();
    assert!(matches!(err, PutError::Size { .. }), "{err}");
    let mut once = Some(Err(io::Error::other("cut")));
    let err = c.write_output(&sum(b"abc"), 3, || once.take()).unwrap_err();
    assert!(matches!(err, PutError::Body(_)), "{err}");
    let files: Vec<_> = walk(dir.path());
    assert!(files.is_empty(), "left behind: {files:?}");
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(root).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            for f in fs::read_dir(&shard).unwrap() {
                out.push(f.unwrap().path());
            }
        }
    }
    out
}

// Inode numbers are a Unix notion.
#[cfg(unix)]
#[test]
fn existing_output_is_not_rewritten() {
    let (c, _dir) = cache();
    let path = store(&c, Id([3; 32]), b"same bytes").unwrap();
    let before = fs::metadata(&path).unwrap();
    store(&c, Id([4; 32]), b"same bytes").unwrap();
    let after = fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        before.ino(),
        after.ino(),
        "the shared output kept its inode"
    );
}

#[test]
fn hits_refresh_stale_mtimes_only() {
    let (c, _dir) = cache();
    let a = Id([5; 32]);
    let out = store(&c, a, b"x").unwrap();
    set_age(&out, 2 * DAY);
    set_age(&c.action_path(&a), 2 * DAY);
    c.get(&a).unwrap().unwrap();
    let age = |p: &Path| {
        SystemTime::now()
            .duration_since(fs::metadata(p).unwrap().modified().unwrap())
            .unwrap()
    };
    assert!(age(&out) < Duration::from_secs(60));
    assert!(age(&c.action_path(&a)) < Duration::from_secs(60));
    // Within the hour: left alone.
    set_age(&out, Duration::from_secs(600));
    c.get(&a).unwrap().unwrap();
    assert!(age(&out) >= Duration::from_secs(599));
}

#[test]
fn concurrent_writers_of_the_same_entries() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            // One DiskCache per thread, as one per process would be.
            let c = Arc::new(DiskCache::open(dir.path()).unwrap());
            std::thread::spawn(move || {
                for i in 0..200u8 {
                    let body = vec![i; i as usize * 100];
                    let path = store(&c, Id([i; 32]), &body).unwrap();
                    assert_eq!(fs::read(&path).unwrap(), body);
                    let e = c.get(&Id([i; 32])).unwrap().expect("hit after put");
                    assert_eq!(e.size, body.len() as u64);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let c = DiskCache::open(dir.path()).unwrap();
    assert_eq!(c.temp_files().unwrap(), Vec::<PathBuf>::new());
}

fn policy(max_age: Duration, max_size: Option<u64>) -> TrimPolicy {
    TrimPolicy {
        max_age,
        max_size,
        deadline: Duration::from_secs(60),
        min_age: crate::disk::TRIM_MIN_AGE,
    }
}

#[test]
fn trim_removes_old_entries_once_a_day() {
    let (c, _dir) = cache();
    let old = Id([6; 32]);
    let fresh = Id([7; 32]);
    let old_out = store(&c, old, b"old").unwrap();
    store(&c, fresh, b"fresh").unwrap();
    set_age(&old_out, 6 * DAY);
    set_age(&c.action_path(&old), 6 * DAY);
    // A temp file a crashed writer left two days ago.
    let stale_tmp = c.root().join("07").join(".tmp-1-1");
    fs::write(&stale_tmp, b"junk").unwrap();
    set_age(&stale_tmp, 2 * DAY);

    let r = c
        .trim(&policy(5 * DAY, None))
        .unwrap()
        .expect("first trim runs");
    assert_eq!(r.removed_files, 3);
    assert!(r.complete);
    assert_eq!(c.get(&old).unwrap(), None);
    assert!(c.get(&fresh).unwrap().is_some());
    assert!(!stale_tmp.exists());
    // Not again today.
    assert_eq!(c.trim(&policy(5 * DAY, None)).unwrap(), None);
}

#[test]
fn trim_size_cap_spares_the_last_day() {
    let (c, _dir) = cache();
    let mut paths = Vec::new();
    for i in 0..4u8 {
        let p = store(&c, Id([i + 10; 32]), &vec![i; 1000]).unwrap();
        // Ages 4, 3, 2 days and fresh: all within the 5-day trim age.
        if i < 3 {
            set_age(&p, (4 - i as u32) * DAY);
            set_age(&c.action_path(&Id([i + 10; 32])), (4 - i as u32) * DAY);
        }
        paths.push(p);
    }
    // Cap of 1 byte: everything older than a day goes, oldest first; the
    // fresh entry stays although the cap is still exceeded.
    let r = trim::trim_now(c.root(), &policy(5 * DAY, Some(1)), SystemTime::now()).unwrap();
    assert_eq!(r.removed_files, 6);
    assert!(paths[3].exists());
    assert!(!paths[0].exists() && !paths[2].exists());
    // A cap that fits two outputs keeps the two newest.
    for i in 0..3u8 {
        let p = store(&c, Id([i + 10; 32]), &vec![i; 1000]).unwrap();
        set_age(&p, (4 - i as u32) * DAY);
        set_age(&c.action_path(&Id([i + 10; 32])), (4 - i as u32) * DAY);
    }
    let r = trim::trim_now(c.root(), &policy(5 * DAY, Some(2300)), SystemTime::now()).unwrap();
    assert!(r.kept_bytes <= 2300, "{r:?}");
    assert!(!paths[0].exists() && !paths[1].exists());
    assert!(paths[2].exists() && paths[3].exists());
}

#[test]
fn trim_roots_takes_named_objects_with_entries_by_last_use() {
    let (c, _dir) = cache();
    let root = c.root().to_path_buf();
    let packs = root.join("named/packs");
    fs::create_dir_all(&packs).unwrap();
    let at = |age: Duration| SystemTime::now() - age;
    // An entry three days old; packs four and two days old; a pack
    // written five days ago and read one day ago (its access time).
    let entry = store(&c, Id([3; 32]), &[3; 1000]).unwrap();
    set_age(&entry, 3 * DAY);
    set_age(&c.action_path(&Id([3; 32])), 3 * DAY);
    let pack = |name: &str, modified: Duration, accessed: Duration| {
        let p = packs.join(name);
        fs::write(&p, vec![0u8; 1000]).unwrap();
        let f = File::options().write(true).open(&p).unwrap();
        f.set_times(
            fs::FileTimes::new()
                .set_modified(at(modified))
                .set_accessed(at(accessed)),
        )
        .unwrap();
        p
    };
    let old = pack("old", 4 * DAY, 4 * DAY);
    let newer = pack("newer", 2 * DAY, 2 * DAY);
    let read = pack("read", 5 * DAY, DAY);
    let stale_tmp = pack(".tmp-1-1", 2 * DAY, 2 * DAY);
    let roots = [root.clone()];
    let r = trim::trim_roots(
        &roots,
        &["named/manifests", "named/packs"],
        &TrimPolicy {
            max_age: 30 * DAY,
            max_size: Some(2100),
            deadline: Duration::from_secs(60),
            min_age: Duration::ZERO,
        },
        SystemTime::now(),
    )
    .unwrap();
    // The stale temp file goes by age; then the oldest by last use: the
    // old pack, the entry's two files. The read pack and the newer stay.
    assert!(
        !stale_tmp.exists() && !old.exists() && !entry.exists(),
        "{r:?}"
    );
    assert!(read.exists() && newer.exists(), "{r:?}");
    assert_eq!(r.kept_bytes, 2000);
    // A trim of the client's cache never looks under named/.
    trim::trim_now(&root, &policy(DAY, Some(1)), SystemTime::now()).unwrap();
    assert!(read.exists() && newer.exists());
}

/// Stores `body`'s output only, as a pack entry's is, and indexes `action`.
fn store_indexed(c: &DiskCache, action: Id, body: &[u8]) -> Indexed {
    c.write_output_bytes(&sum(body), body).unwrap();
    let e = Indexed {
        output_id: sum(body),
        size: body.len() as u64,
        put_time_nanos: 7,
    };
    c.index(action, e);
    e
}

#[test]
fn indexed_entries_hit_without_action_files_and_survive_reopening() {
    let (c, dir) = cache();
    let (a, b, gone) = (Id([1; 32]), Id([2; 32]), Id([3; 32]));
    let ea = store_indexed(&c, a, b"first");
    let eb = store_indexed(&c, b, b"second");
    // Indexed, but its output is not there: a miss, not a wrong hit.
    c.index(
        gone,
        Indexed {
            output_id: sum(b"never written"),
            ..ea
        },
    );
    let hit = c.get(&a).unwrap().unwrap();
    assert_eq!(
        (hit.output_id, hit.size, hit.put_time_nanos),
        (sum(b"first"), 5, 7)
    );
    assert!(c.get(&gone).unwrap().is_none());
    assert!(
        !c.action_path(&a).exists(),
        "no -a file for an indexed entry"
    );

    // Another process opening the directory sees nothing before the index
    // file is written, and everything in it after.
    assert!(DiskCache::open(dir.path())
        .unwrap()
        .get(&a)
        .unwrap()
        .is_none());
    c.write_index("0123abcd", [(a, ea), (b, eb)].into_iter())
        .unwrap();
    let other = DiskCache::open(dir.path()).unwrap();
    assert_eq!(other.get(&b).unwrap().unwrap().output_id, sum(b"second"));
    assert!(other.get(&gone).unwrap().is_none());

    // An -a file (a later put) answers before the index.
    c.write_output_bytes(&sum(b"put later"), b"put later")
        .unwrap();
    c.write_action(&a, &sum(b"put later"), 9, 8).unwrap();
    assert_eq!(c.get(&a).unwrap().unwrap().output_id, sum(b"put later"));

    // A rewritten index replaces the old one; a damaged line costs only
    // itself; temp files in ix/ are not read.
    let ix = dir.path().join("ix");
    c.write_index("0123abcd", [(b, eb)].into_iter()).unwrap();
    let mut text = fs::read_to_string(ix.join("0123abcd")).unwrap();
    text.push_str("gocacher1 not-hex\n");
    fs::write(ix.join("0123abcd"), text).unwrap();
    fs::write(ix.join(".tmp-1-1"), entry_line(&gone, &sum(b"first"), 5, 1)).unwrap();
    let third = DiskCache::open(dir.path()).unwrap();
    assert!(third.get(&b).unwrap().is_some());
    assert!(third.get(&gone).unwrap().is_none());
    assert_eq!(fs::read_dir(&ix).unwrap().count(), 2);
}

#[test]
fn trim_ages_index_files_like_entries() {
    let (c, dir) = cache();
    let e = store_indexed(&c, Id([4; 32]), b"old");
    c.write_index("aa", [(Id([4; 32]), e)].into_iter()).unwrap();
    c.write_index("bb", [(Id([4; 32]), e)].into_iter()).unwrap();
    let ix = dir.path().join("ix");
    set_age(&ix.join("aa"), 10 * DAY);
    let report = c.trim(&policy(5 * DAY, None)).unwrap().unwrap();
    assert!(!ix.join("aa").exists());
    assert!(ix.join("bb").exists());
    assert_eq!(report.removed_files, 1);
    // Opening leaves an index's mtime alone (an index nobody uses must age
    // out); a hit from it refreshes the mtime, once it is over an hour old.
    set_age(&ix.join("bb"), 2 * DAY);
    let age = |p: &std::path::Path| {
        SystemTime::now()
            .duration_since(fs::metadata(p).unwrap().modified().unwrap())
            .unwrap_or_default()
    };
    let reopened = DiskCache::open(dir.path()).unwrap();
    assert!(reopened.get(&Id([5; 32])).unwrap().is_none());
    assert!(
        age(&ix.join("bb")) > 2 * DAY - Duration::from_secs(60),
        "opening refreshed an unused index"
    );
    assert!(reopened.get(&Id([4; 32])).unwrap().is_some());
    assert!(
        age(&ix.join("bb")) < Duration::from_secs(60),
        "a hit did not refresh its index: {:?}",
        age(&ix.join("bb"))
    );
    // An index that no go command used for the trim age goes.
    set_age(&ix.join("bb"), 10 * DAY);
    DiskCache::open(dir.path()).unwrap();
    trim::trim_now(dir.path(), &policy(5 * DAY, None), SystemTime::now()).unwrap();
    assert!(!ix.join("bb").exists(), "an unused index never ages out");
}

#[test]
fn reputting_an_existing_output_refreshes_its_mtime() {
    let (c, _dir) = cache();
    let body = b"an output cmd/go puts again";
    let path = c.write_output_bytes(&sum(body), body).unwrap();
    set_age(&path, 3 * DAY);
    c.write_output_bytes(&sum(body), body).unwrap();
    let age = SystemTime::now()
        .duration_since(fs::metadata(&path).unwrap().modified().unwrap())
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "re-put left it {age:?} old");
}

#[test]
fn the_newest_index_file_wins_when_two_disagree() {
    let (c, dir) = cache();
    let action = Id([6; 32]);
    let old = store_indexed(&c, action, b"an output of an older build");
    let new = store_indexed(&c, action, b"an output of a newer build");
    let ix = dir.path().join("ix");
    // Written in either order, the file with the later mtime answers.
    for (first, second) in [("aa", "bb"), ("bb", "aa")] {
        c.write_index(first, [(action, new)].into_iter()).unwrap();
        c.write_index(second, [(action, old)].into_iter()).unwrap();
        set_age(&ix.join(second), DAY);
        set_age(&ix.join(first), Duration::from_secs(60));
        let reopened = DiskCache::open(dir.path()).unwrap();
        let hit = reopened.get(&action).unwrap().unwrap();
        assert_eq!(
            hit.output_id, new.output_id,
            "the older index file ({second}) answered"
        );
    }
}
