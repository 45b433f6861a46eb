//! The checksum database's paths under `/mod/sumdb/<name>/`, as the
//! GOPROXY protocol passes them through: `supported`, `latest`,
//! `lookup/<module>@<version>` and `tile/...`. A tile never changes, full
//! or partial (`.../NNN.p/W`: the first W hashes of a tile, which the log
//! only appends to), so both are kept; `latest` and lookups carry the
//! current tree head and are mutable.

use super::path::{bad, check_module, check_version, missing, Ask, Refused, SumdbKind, MAX_SUMDB};

/// `sumdb/<name>/supported|latest|lookup/M@V|tile/...`.
pub(crate) fn parse(rest: &str) -> Result<Ask, Refused> {
    let (name, what) = rest.split_once('/').unwrap_or((rest, ""));
    let host_ok = !name.is_empty()
        && name.len() <= 253
        && name.contains('.')
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    if !host_ok {
        return Err(bad(format!("{name:?} is not a checksum database name")));
    }
    if what.len() > MAX_SUMDB {
        return Err(bad("the checksum database path is too long"));
    }
    let sumdb = |kind| -> Result<Ask, Refused> {
        Ok(Ask::Sumdb {
            name: name.to_string(),
            rest: what.to_string(),
            kind,
        })
    };
    match what {
        "supported" => return sumdb(SumdbKind::Supported),
        "latest" => return sumdb(SumdbKind::Mutable),
        _ => {}
    }
    if let Some(mv) = what.strip_prefix("lookup/") {
        let Some((m, v)) = mv.rsplit_once('@') else {
            return Err(bad("a lookup is lookup/MODULE@VERSION"));
        };
        check_module(m)?;
        check_version(v.strip_suffix("/go.mod").unwrap_or(v))?;
        return sumdb(SumdbKind::Mutable);
    }
    if let Some(tile) = what.strip_prefix("tile/") {
        return match tile_kind(tile) {
            Some(kind) => sumdb(kind),
            None => Err(bad(format!(
                "tile/{tile:?} is not a tile path (tile/H/L/NNN[.p/W] or tile/H/data/NNN[.p/W])"
            ))),
        };
    }
    Err(missing(format!(
        "sumdb/{name}/{what:?}: expected supported, latest, lookup/... or tile/..."
    )))
}

/// `H/L/x001/x234/067[.p/W]` (L may be `data`): a full tile or a partial
/// one; `None` if it is neither.
fn tile_kind(t: &str) -> Option<SumdbKind> {
    let parts: Vec<&str> = t.split('/').collect();
    let num = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|c| c.is_ascii_digit());
    if parts.len() < 3 || !num(parts[0]) || !(num(parts[1]) || parts[1] == "data") {
        return None;
    }
    let mut index = &parts[2..];
    let partial = index.len() >= 2 && index[index.len() - 2].ends_with(".p");
    if partial {
        if !num(index[index.len() - 1]) {
            return None;
        }
        index = &index[..index.len() - 1];
    }
    let last = index.len() - 1;
    for (i, &elem) in index.iter().enumerate() {
        let digits = match (i == last, partial) {
            (true, true) => elem.strip_suffix(".p")?,
            (true, false) => elem,
            (false, _) => elem.strip_prefix('x')?,
        };
        if digits.len() != 3 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    Some(SumdbKind::Tile)
}

#[cfg(test)]
mod tests {
    use super::super::path::{parse, Ask, SumdbKind};

    #[test]
    fn sumdb_requests_parse() {
        let kind = |p: &str| match parse(p) {
            Ok(Ask::Sumdb { kind, .. }) => Some(kind),
            _ => None,
        };
        assert_eq!(
            kind("sumdb/sum.example.org/supported"),
            Some(SumdbKind::Supported)
        );
        assert_eq!(
            kind("sumdb/sum.example.org/latest"),
            Some(SumdbKind::Mutable)
        );
        assert_eq!(
            kind("sumdb/sum.example.org/lookup/github.com/!burnt!sushi/toml@v1.6.0"),
            Some(SumdbKind::Mutable)
        );
        assert_eq!(
            kind("sumdb/sum.example.org/tile/8/0/x123/456"),
            Some(SumdbKind::Tile)
        );
        assert_eq!(
            kind("sumdb/sum.example.org/tile/8/data/000"),
            Some(SumdbKind::Tile)
        );
        assert_eq!(
            kind("sumdb/sum.example.org/tile/8/1/045.p/12"),
            Some(SumdbKind::Tile)
        );
        assert_eq!(
            kind("sumdb/sum.example.org/tile/8/data/x001/045.p/200"),
            Some(SumdbKind::Tile)
        );
        let t = parse("sumdb/sum.example.org/tile/8/0/x123/456").unwrap();
        assert_eq!(
            t.kept_at().unwrap(),
            "sumdb/sum.example.org/tile/8/0/x123/456"
        );
        for p in [
            "sumdb/../tile/8/0/000",
            "sumdb/sum.example.org/tile/8/0/../000",
            "sumdb/sum.example.org/tile/8/0/0000",
            "sumdb/sum.example.org/tile/8/0/x12/000",
            "sumdb/sum.example.org/tile/x/0/000",
            "sumdb/sum.example.org/lookup/nothing",
            "sumdb/SUM/latest",
            "sumdb/sum.example.org/other",
        ] {
            assert!(parse(p).is_err(), "{p}");
        }
    }
}
