//! Read buffers for replies, used again once a reply is sent.
//!
//! A buffer above the process's mmap threshold is a fresh mapping from the
//! kernel each time it is allocated: every page faults and is cleared
//! before a file is read into it, and under load that costs more than the
//! read. Here freed buffers are kept, up to a byte cap, by size class (a
//! power of two), and handed to the next reply of that class.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

/// The smallest pooled buffer. A file of half this or less is read into a
/// heap buffer of its own size, which malloc already reuses.
const SMALLEST: usize = 64 << 10;

/// Size classes: 64 KiB, 128 KiB, ... 8 MiB.
const CLASSES: usize = 8;

pub(crate) struct Pool {
    /// Free buffers by class, and their bytes in all.
    free: Mutex<(Vec<Vec<Vec<u8>>>, usize)>,
    /// Free buffers' bytes kept at most.
    cap: usize,
}

impl Pool {
    pub(crate) fn new(cap: usize) -> Arc<Pool> {
        Arc::new(Pool {
            free: Mutex::new((vec![Vec::new(); CLASSES], 0)),
            cap,
        })
    }

    /// A file's bytes (it must hold exactly `size`) as a body, in a buffer
    /// that comes back here when the body is dropped; `permit` (its share
    /// of the replies' read budget) is held until then too.
    pub(crate) fn read(
        self: &Arc<Self>,
        path: &Path,
        size: u64,
        permit: OwnedSemaphorePermit,
    ) -> io::Result<Bytes> {
        let size = usize::try_from(size).map_err(io::Error::other)?;
        let file = File::open(path)?;
        let (buf, pool) = match class_of(size) {
            Some(class) => (self.take(class), Some(self.clone())),
            None => (Vec::with_capacity(size), None),
        };
        let mut held = Pooled {
            buf,
            pool,
            _permit: permit,
        };
        let mut file = file.take(size as u64);
        file.read_to_end(&mut held.buf)?;
        // One byte more would say the file grew.
        let grew = file.into_inner().read(&mut [0u8; 1])? > 0;
        if held.buf.len() != size || grew {
            return Err(io::Error::other("it changed size while read"));
        }
        Ok(Bytes::from_owner(held))
    }

    /// The bytes a read of `size` holds: its buffer's capacity (what the
    /// replies' budget must count).
    pub(crate) fn held_bytes(size: u64) -> u64 {
        match usize::try_from(size).ok().and_then(class_of) {
            Some(class) => (SMALLEST << class) as u64,
            None => size,
        }
    }

    fn take(&self, class: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap();
        match free.0[class].pop() {
            Some(b) => {
                free.1 -= b.capacity();
                b
            }
            None => {
                drop(free);
                Vec::with_capacity(SMALLEST << class)
            }
        }
    }

    fn give(&self, buf: Vec<u8>) {
        let cap = buf.capacity();
        let class =
            (cap.trailing_zeros() as usize).wrapping_sub(SMALLEST.trailing_zeros() as usize);
        if !cap.is_power_of_two() || cap < SMALLEST || class >= CLASSES {
            return;
        }
        let mut free = self.free.lock().unwrap();
        if free.1 + buf.capacity() <= self.cap {
            free.1 += buf.capacity();
            free.0[class].push(buf);
        }
    }
}

/// The class of a buffer for `size` bytes, or `None` if the heap serves
/// it better.
fn class_of(size: usize) -> Option<usize> {
    if size <= SMALLEST / 2 {
        return None;
    }
    let class = size
        .max(SMALLEST)
        .checked_next_power_of_two()?
        .trailing_zeros() as usize
        - SMALLEST.trailing_zeros() as usize;
    (class < CLASSES).then_some(class)
}

/// A buffer as a body's owner: back to its pool (if it has one) when
/// dropped, and its share of the budget with it.
struct Pooled {
    buf: Vec<u8>,
    pool: Option<Arc<Pool>>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            pool.give(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permit() -> OwnedSemaphorePermit {
        Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap()
    }

    #[test]
    fn classes() {
        assert_eq!(class_of(100), None);
        assert_eq!(class_of(32 << 10), None);
        assert_eq!(class_of((32 << 10) + 1), Some(0));
        assert_eq!(class_of(64 << 10), Some(0));
        assert_eq!(class_of((64 << 10) + 1), Some(1));
        assert_eq!(class_of(1 << 20), Some(4));
        assert_eq!(class_of(4 << 20), Some(6));
        assert_eq!(class_of(8 << 20), Some(7));
        assert_eq!(class_of((8 << 20) + 1), None);
        assert_eq!(Pool::held_bytes(100), 100);
        assert_eq!(Pool::held_bytes((1 << 20) + 1), 2 << 20);
    }

    #[test]
    fn a_buffer_comes_back_and_is_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, vec![7u8; 300 << 10]).unwrap();
        std::fs::write(&b, vec![9u8; 400 << 10]).unwrap();
        let pool = Pool::new(1 << 20);
        let first = pool.read(&a, 300 << 10, permit()).unwrap();
        assert!(first.iter().all(|&x| x == 7));
        let ptr = first.as_ptr();
        drop(first);
        assert_eq!(pool.free.lock().unwrap().1, 512 << 10);
        let second = pool.read(&b, 400 << 10, permit()).unwrap();
        assert_eq!(second.as_ptr(), ptr, "the freed buffer is used again");
        assert_eq!(second.len(), 400 << 10);
        assert!(second.iter().all(|&x| x == 9));
        assert_eq!(pool.free.lock().unwrap().1, 0);
    }

    #[test]
    fn a_body_holds_its_share_of_the_budget_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![1u8; 100 << 10]).unwrap();
        let budget = Arc::new(tokio::sync::Semaphore::new(4));
        let pool = Pool::new(1 << 20);
        let body = pool
            .read(
                &a,
                100 << 10,
                budget.clone().try_acquire_many_owned(3).unwrap(),
            )
            .unwrap();
        let tail = body.slice(10..);
        drop(body);
        assert_eq!(budget.available_permits(), 1, "a slice still holds it");
        drop(tail);
        assert_eq!(budget.available_permits(), 4);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![1u8; 300 << 10]).unwrap();
        let pool = Pool::new(600 << 10);
        let held: Vec<_> = (0..3)
            .map(|_| pool.read(&a, 300 << 10, permit()).unwrap())
            .collect();
        drop(held);
        assert_eq!(pool.free.lock().unwrap().1, 512 << 10);
    }

    #[test]
    fn a_file_of_another_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![1u8; 100 << 10]).unwrap();
        let pool = Pool::new(1 << 20);
        assert!(pool.read(&a, 99 << 10, permit()).is_err());
        assert!(pool.read(&a, 101 << 10, permit()).is_err());
        assert_eq!(pool.read(&a, 100 << 10, permit()).unwrap().len(), 100 << 10);
        assert_eq!(
            pool.read(&dir.path().join("gone"), 10, permit())
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
