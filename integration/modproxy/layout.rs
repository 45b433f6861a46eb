//! The GOPROXY layout's names, as the module proxy tests and the action's
//! tests expect to find them on disk and in the bucket.

use std::collections::BTreeSet;

/// A module path as the GOPROXY protocol spells it: each upper-case
/// letter as `!` and the letter in lower case.
pub fn escape(m: &str) -> String {
    let mut s = String::new();
    for c in m.chars() {
        if c.is_ascii_uppercase() {
            s.push('!');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// The `.mod` and `.zip` files go.sum lines name, in the GOPROXY layout.
pub fn sum_files<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    lines
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let (m, v) = (f.next().unwrap(), f.next().unwrap());
            match v.strip_suffix("/go.mod") {
                Some(v) => format!("{}/@v/{v}.mod", escape(m)),
                None => format!("{}/@v/{v}.zip", escape(m)),
            }
        })
        .collect()
}
