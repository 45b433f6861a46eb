//! A partial checksum-database hash tile cut from a wider kept one, for
//! when the upstream fails. `tile/8/L/NNN.p/W` is the first W hashes of
//! tile NNN at level L, 32 bytes each; any wider copy of the same tile
//! (`.p/W2` with W2 > W, or the full tile) starts with those same bytes, as
//! the log only ever appends. Which widths a client asks for depends on
//! the tree sizes it has seen, in the order it saw them; a new client
//! behind a server whose upstream is down may ask for a width nobody asked
//! for before, and this answers it from what is kept. go checks every
//! hash against the signed tree head, as it does for any tile.
//!
//! Data tiles (`tile/8/data/...`) hold records of varying length and are
//! not cut.

use super::keep::Scratch;
use super::ModProxy;
use crate::remote::store::Fetched;

/// The bytes of one hash in a tile.
const HASH: usize = 32;
/// The hashes of a full tile (height 8).
const FULL: usize = 256;
/// Bucket reads in flight at once while looking for a wider copy.
const AT_ONCE: usize = 32;

/// For a partial hash tile of height 8 (`sumdb/<name>/tile/8/L/NNN.p/W`,
/// L a number): the full tile's place and W.
pub(crate) fn partial(rel: &str) -> Option<(&str, usize)> {
    let (base, width) = rel.rsplit_once(".p/")?;
    let width: usize = width.parse().ok().filter(|w| (1..FULL).contains(w))?;
    let (_, tile) = base.split_once("/tile/")?;
    let mut parts = tile.split('/');
    let (height, level) = (parts.next()?, parts.next()?);
    (height == "8" && level.bytes().all(|b| b.is_ascii_digit()) && !level.is_empty())
        .then_some((base, width))
}

/// The places of the wider copies of `base`'s tile than `width`: the full
/// tile first, then the partial ones, widest first.
fn wider(base: &str, width: usize) -> Vec<String> {
    std::iter::once(base.to_string())
        .chain((width + 1..FULL).rev().map(|w| format!("{base}.p/{w}")))
        .collect()
}

impl ModProxy {
    /// The partial tile `rel` cut from a wider copy kept on disk or in the
    /// bucket, kept on disk at `rel`: its length, or `None` if `rel` is
    /// not a partial hash tile or no wider copy is kept.
    pub(super) async fn cut_from_wider(&self, rel: &str) -> Option<u64> {
        let (base, width) = partial(rel)?;
        let want = width * HASH;
        let places = wider(base, width);
        let mut found = None;
        for p in &places {
            if let Ok(bytes) = std::fs::read(self.keep.path(p)) {
                if bytes.len() >= want && bytes.len() % HASH == 0 {
                    found = Some((p.clone(), bytes));
                    break;
                }
            }
        }
        if found.is_none() {
            found = self.wider_in_bucket(&places, want).await;
        }
        let (from, bytes) = found?;
        let mut scratch: Scratch = self.keep.scratch(rel).ok()?;
        std::io::Write::write_all(scratch.file.as_file_mut(), &bytes[..want]).ok()?;
        scratch.commit().ok()?;
        self.keep.upload_later(rel, want as u64);
        eprintln!(
            "gocacher serve: modproxy: {rel}: the upstream failed; sending the first {width} hashes of the kept wider tile {from}, and keeping them as {rel}"
        );
        Some(want as u64)
    }

    /// The first wider copy found in the bucket, [`AT_ONCE`] reads at a
    /// time, in the order of `places`.
    async fn wider_in_bucket(&self, places: &[String], want: usize) -> Option<(String, Vec<u8>)> {
        let b = self.keep.bucket.as_ref().filter(|b| b.remote.may_read())?;
        for batch in places.chunks(AT_ONCE) {
            let reads = batch.iter().map(|p| async move {
                let key = b.mod_key(p);
                match b.remote.read_named(&key).await {
                    Ok(Fetched::Found { body, .. }) => body.collect(&key, FULL * HASH).await.ok(),
                    _ => None,
                }
            });
            let got = futures_util::future::join_all(reads).await;
            let hit = batch.iter().zip(got).find_map(|(p, bytes)| {
                bytes
                    .filter(|b| b.len() >= want && b.len() % HASH == 0)
                    .map(|b| (p.clone(), b))
            });
            if hit.is_some() {
                return hit;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_partial_hash_tiles_are_cut() {
        let t = "sumdb/sum.golang.org/tile/8/1/x001/013";
        assert_eq!(partial(&format!("{t}.p/19")), Some((t, 19)));
        assert_eq!(partial(t), None, "a full tile");
        assert_eq!(partial("sumdb/s/tile/8/data/x001/013.p/19"), None);
        assert_eq!(partial("sumdb/s/tile/4/0/013.p/3"), None, "another height");
        assert_eq!(partial("sumdb/s/tile/8/0/013.p/256"), None);
        assert_eq!(partial("sumdb/s/tile/8/0/013.p/0"), None);
        let w = wider(t, 253);
        assert_eq!(
            w,
            [t.to_string(), format!("{t}.p/255"), format!("{t}.p/254")]
        );
    }
}
