//! Module versions as the proxy orders them: semantic version order, and
//! whether a version is a pseudo-version.

/// Whether `v` is a pseudo-version (`...-YYYYMMDDhhmmss-abcdefabcdef`).
pub(crate) fn pseudo(v: &str) -> bool {
    let parts: Vec<&str> = v.split(['-', '.']).collect();
    parts.windows(2).any(|w| {
        w[0].len() == 14
            && w[0].bytes().all(|c| c.is_ascii_digit())
            && w[1].len() == 12
            && w[1].bytes().all(|c| c.is_ascii_hexdigit())
    })
}

/// Semantic version order of two canonical (escaped) versions; build
/// suffixes are ignored.
pub(crate) fn semver_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(v: &str) -> ([u64; 3], Option<&str>) {
        let v = v.trim_start_matches('v');
        let v = v.split('+').next().unwrap_or("");
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        let mut n = [0u64; 3];
        for (i, p) in core.split('.').take(3).enumerate() {
            n[i] = p.parse().unwrap_or(0);
        }
        (n, pre)
    }
    fn pre_cmp(a: &str, b: &str) -> std::cmp::Ordering {
        let (mut x, mut y) = (a.split('.'), b.split('.'));
        loop {
            match (x.next(), y.next()) {
                (None, None) => return std::cmp::Ordering::Equal,
                (None, Some(_)) => return std::cmp::Ordering::Less,
                (Some(_), None) => return std::cmp::Ordering::Greater,
                (Some(p), Some(q)) => {
                    let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                        (Ok(m), Ok(n)) => m.cmp(&n),
                        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
                        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
                        (Err(_), Err(_)) => p.cmp(q),
                    };
                    if o.is_ne() {
                        return o;
                    }
                }
            }
        }
    }
    let ((na, pa), (nb, pb)) = (split(a), split(b));
    na.cmp(&nb).then_with(|| match (pa, pb) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(p), Some(q)) => pre_cmp(p, q),
    })
}
