use super::*;

fn id(n: u8) -> Id {
    Id([n; 32])
}

fn item(n: u8, size: u64) -> Item {
    Item {
        action: id(n),
        output: id(n.wrapping_add(100)),
        size,
        put_time_nanos: n as i64 * 1000,
    }
}

/// The scope the test packs are written for.
const SCOPE: &str = "test scope";

/// Writes files of the given bodies and a pack of them; returns its bytes.
fn pack_of(bodies: &[Vec<u8>]) -> (Vec<Packed>, Vec<u8>) {
    pack_with(bodies, &|_, _| Ok(None))
}

fn pack_with(bodies: &[Vec<u8>], stored: &StoredBody) -> (Vec<Packed>, Vec<u8>) {
    pack_signed(bodies, stored, None)
}

fn pack_signed(
    bodies: &[Vec<u8>],
    stored: &StoredBody,
    signer: Option<&crate::trust::Signer>,
) -> (Vec<Packed>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let mut items = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let p = dir.path().join(i.to_string());
        std::fs::write(&p, b).unwrap();
        let mut it = item(i as u8, b.len() as u64);
        it.output = Id(Sha256::digest(b).into());
        items.push((it, p));
    }
    let path = dir.path().join("pack");
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let len = write(&mut f, &items, stored, signer, SCOPE).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(len, bytes.len() as u64);
    let table = read_table(&mut &bytes[..], None, SCOPE).unwrap();
    (table, bytes)
}

/// Reads the next body and decodes it.
fn next_body(src: &mut &[u8], s: &Packed) -> Result<Vec<u8>, String> {
    let mut frame = Vec::new();
    read_body(src, s, &mut frame).map_err(|e| e.to_string())?;
    Decoder::new()
        .unwrap()
        .decode(s, &frame)
        .map(|b| b.to_vec())
}

#[test]
fn round_trip_raw_and_compressed() {
    let bodies = vec![
        b"x".repeat(100_000), // compresses
        Vec::new(),           // empty
        (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(), // barely
    ];
    let (table, bytes) = pack_of(&bodies);
    assert_eq!(table.len(), 3);
    assert!(table[0].zstd && table[0].stored < 1000);
    let mut src = &bytes[..];
    read_table(&mut src, None, SCOPE).unwrap();
    assert_eq!(next_body(&mut src, &table[0]).unwrap(), bodies[0]);
    skip(&mut src, &table[1]).unwrap();
    assert_eq!(next_body(&mut src, &table[2]).unwrap(), bodies[2]);
    assert!(src.is_empty());
}

#[test]
fn bodies_given_in_stored_form_are_copied_as_they_are() {
    let bodies = vec![b"q".repeat(50_000), b"raw body".to_vec(), b"r".repeat(3000)];
    let frame = zstd::bulk::compress(&bodies[0], 1).unwrap();
    let given = |item: &Item, out: &mut dyn Write| -> io::Result<Option<(u64, bool)>> {
        match item.size {
            50_000 => out
                .write_all(&frame)
                .map(|()| Some((frame.len() as u64, true))),
            8 => out.write_all(b"raw body").map(|()| Some((8, false))),
            _ => Ok(None), // compressed by the writer
        }
    };
    let (table, bytes) = pack_with(&bodies, &given);
    assert_eq!(table[0].stored, frame.len() as u64);
    assert!(table[0].zstd && !table[1].zstd && table[2].zstd);
    let mut src = &bytes[..];
    read_table(&mut src, None, SCOPE).unwrap();
    for (s, b) in table.iter().zip(&bodies) {
        assert_eq!(&next_body(&mut src, s).unwrap(), b);
    }
    assert!(src.is_empty());
}

#[test]
fn table_len_says_where_the_bodies_start() {
    let bodies = vec![b"abc".to_vec(), b"y".repeat(5000)];
    let (table, bytes) = pack_of(&bodies);
    let len = table_len(&bytes[..20]).unwrap() as usize;
    // The bodies follow the table: skipping both leaves nothing.
    let mut src = &bytes[len..];
    for s in &table {
        skip(&mut src, s).unwrap();
    }
    assert!(src.is_empty());
    // The table parses from exactly those bytes, and not from fewer.
    assert_eq!(read_table(&mut &bytes[..len], None, SCOPE).unwrap(), table);
    assert!(read_table(&mut &bytes[..len - 1], None, SCOPE).is_err());
    assert_eq!(table_len(&bytes[..19]), None);
    assert_eq!(table_len(b"not a pack at all, no"), None);
}

#[test]
fn large_bodies_stream_and_stay_in_bounds() {
    let noise: Vec<u8> = (0..1_300_000u32)
        .map(|i| (i.wrapping_mul(2654435761).rotate_left(i % 31) >> 7) as u8)
        .collect();
    let bodies = vec![b"abcdefgh".repeat(300_000), noise];
    let (table, bytes) = pack_of(&bodies);
    assert!(table.iter().all(|s| s.zstd), "large bodies are always zstd");
    assert!(table[0].stored < 100_000);
    assert!(table[1].stored <= max_frame(table[1].item.size));
    let mut src = &bytes[..];
    read_table(&mut src, None, SCOPE).unwrap();
    for (s, body) in table.iter().zip(&bodies) {
        let mut frame = Vec::new();
        read_body(&mut src, s, &mut frame).unwrap();
        let mut out = Vec::new();
        zstd::stream::read::Decoder::with_buffer(&frame[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(&out, body);
    }
}

#[test]
fn damage_is_refused() {
    let bodies = vec![b"hello pack".repeat(50), b"second".repeat(10)];
    let (table, bytes) = pack_of(&bodies);
    // A flipped bit in the table fails its checksum.
    let mut t = bytes.clone();
    t[MAGIC.len() + 4 + 70] ^= 1;
    assert!(
        matches!(read_table(&mut &t[..], None, SCOPE), Err(ReadError::Corrupt(w)) if w.contains("checksum"))
    );
    // Not a pack at all.
    assert!(matches!(
        read_table(&mut &b"garbage"[..], None, SCOPE),
        Err(ReadError::Corrupt(_))
    ));
    // A truncated body.
    let mut src = &bytes[..bytes.len() - 3];
    read_table(&mut src, None, SCOPE).unwrap();
    next_body(&mut src, &table[0]).unwrap();
    assert_eq!(next_body(&mut src, &table[1]).unwrap_err(), "truncated");
    // A damaged compressed body fails to decode or decodes to other
    // bytes (which the disk tier's sha256 check refuses).
    let mut d = bytes.clone();
    let at = bytes.len() - table[1].stored as usize - 5;
    d[at] ^= 0xff;
    let mut src = &d[..];
    read_table(&mut src, None, SCOPE).unwrap();
    assert!(next_body(&mut src, &table[0]).map_or(true, |b| b != bodies[0]));
}

#[test]
fn staleness() {
    let stored = |items: &[Item]| -> Vec<Packed> {
        items
            .iter()
            .map(|&item| Packed {
                item,
                stored: item.size,
                zstd: false,
            })
            .collect()
    };
    let wanted: Vec<Item> = (0..100).map(|n| item(n, 100_000)).collect();
    assert!(stale(None, &wanted));
    assert!(!stale(None, &[]));
    let same = stored(&wanted);
    assert!(!stale(Some(&same), &wanted));
    // 5% new entries: still good enough; 20%: rewrite.
    let mut more = wanted.clone();
    more.extend((100..105).map(|n| item(n, 100_000)));
    assert!(!stale(Some(&same), &more));
    more.extend((105..125).map(|n| item(n, 100_000)));
    assert!(stale(Some(&same), &more));
    // Half the pack no longer wanted: rewrite.
    assert!(stale(Some(&same), &wanted[..50]));
    // Many small entries no longer wanted: few bytes, but a fifth of
    // the entries (file creations at every prefetch): rewrite.
    let mut small = wanted.clone();
    small.extend((150..180).map(|n| item(n, 10)));
    assert!(stale(Some(&stored(&small)), &wanted));
    // An entry whose output changed counts as lacking and dead.
    let mut changed = wanted.clone();
    for c in changed.iter_mut().take(20) {
        c.output = id(250);
    }
    assert!(stale(Some(&same), &changed));
}

#[test]
fn trust_takes_only_signed_tables() {
    use crate::trust::{Signer, Trust};
    let key = Signer::from_hex(&"11".repeat(32)).unwrap();
    let other = Signer::from_hex(&"22".repeat(32)).unwrap();
    let trust = Trust::parse(&[key.public_hex()]).unwrap();
    let bodies = vec![b"signed body".repeat(20), b"two".to_vec()];
    let (table, signed) = pack_signed(&bodies, &|_, _| Ok(None), Some(&key));
    assert_eq!(
        read_table(&mut &signed[..], Some(&trust), SCOPE).unwrap(),
        table
    );
    let (_, unsigned) = pack_of(&bodies);
    assert!(matches!(
        read_table(&mut &unsigned[..], Some(&trust), SCOPE),
        Err(ReadError::Untrusted)
    ));
    let (_, theirs) = pack_signed(&bodies, &|_, _| Ok(None), Some(&other));
    assert!(matches!(
        read_table(&mut &theirs[..], Some(&trust), SCOPE),
        Err(ReadError::Untrusted)
    ));
    // A table signed by a trusted key for another scope is not this one's.
    assert!(matches!(
        read_table(&mut &signed[..], Some(&trust), "another scope"),
        Err(ReadError::Untrusted)
    ));
    // Without trust, any well-formed table is read.
    assert_eq!(read_table(&mut &theirs[..], None, SCOPE).unwrap(), table);
}

/// A head claiming 2^32 - 1 entries is refused from its 20 bytes: neither
/// the ranged reader (`table_len`) nor the table reader asks for or
/// allocates the ~380 GB such a table would take.
#[test]
fn a_table_claiming_billions_of_entries_is_refused_unread() {
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(table_len(&head), None);
    assert!(matches!(
        read_table(&mut &head[..], None, SCOPE),
        Err(ReadError::Corrupt(w)) if w.contains("entries announced")
    ));
    // The largest count allowed still has a length.
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&(manifest::MAX_ENTRIES as u32).to_le_bytes());
    assert!(table_len(&head).is_some());
    head[MAGIC.len()..].copy_from_slice(&(manifest::MAX_ENTRIES as u32 + 1).to_le_bytes());
    assert_eq!(table_len(&head), None);
}
