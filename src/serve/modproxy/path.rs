//! What a `/mod/...` URL asks for, checked strictly before anything is
//! fetched or opened: every answer is named by a path relative to the
//! module store (`<dir>/mod/`) and the bucket's `<prefix>/mod/`, so a
//! request must never be able to name anything outside it.
//!
//! Module paths and versions arrive case-escaped as the GOPROXY protocol
//! spells them (`!x` for an upper-case `X`), so that the layout works on
//! case-insensitive file systems; they are kept escaped, and unescaped only
//! for messages and `list` answers.

/// The longest escaped module path served.
const MAX_PATH: usize = 512;
/// The longest escaped version (or version query) served.
const MAX_VERSION: usize = 200;
/// The longest sumdb request path (after `/mod/sumdb/<name>/`).
pub(crate) const MAX_SUMDB: usize = 1024;

/// One kind of `/mod/` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `<module>/@v/list`: mutable.
    List { module: String },
    /// `<module>/@latest`: mutable.
    Latest { module: String },
    /// `<module>/@v/<version>.<ext>`: immutable when the version is
    /// canonical; an `.info` for a query (a branch, a commit prefix) is
    /// passed through like a mutable answer.
    Version {
        module: String,
        version: String,
        ext: Ext,
    },
    /// `sumdb/<name>/...`.
    Sumdb {
        name: String,
        rest: String,
        kind: SumdbKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ext {
    Info,
    Mod,
    Zip,
}

impl Ext {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ext::Info => "info",
            Ext::Mod => "mod",
            Ext::Zip => "zip",
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Ext::Info => "application/json",
            Ext::Mod => "text/plain; charset=utf-8",
            Ext::Zip => "application/zip",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SumdbKind {
    /// `supported`: whether the upstream proxies this database.
    Supported,
    /// `latest` (the signed tree head) and `lookup/...`: they carry the
    /// current tree head, which changes as the log grows.
    Mutable,
    /// A tile (`tile/H/L/NNN`, `tile/H/data/NNN`), full or partial
    /// (`.../NNN.p/W`): never changes.
    Tile,
}

impl Ask {
    /// Where an immutable answer is kept, relative to the module store
    /// (the GOPROXY layout); `None` for a mutable one.
    pub(crate) fn kept_at(&self) -> Option<String> {
        match self {
            Ask::Version {
                module,
                version,
                ext,
            } if canonical(version) => Some(format!("{module}/@v/{version}.{}", ext.as_str())),
            Ask::Sumdb {
                name,
                rest,
                kind: SumdbKind::Tile,
            } => Some(format!("sumdb/{name}/{rest}")),
            _ => None,
        }
    }

    /// The path to ask the upstream for, under its URL.
    pub(crate) fn upstream_path(&self) -> String {
        match self {
            Ask::List { module } => format!("{module}/@v/list"),
            Ask::Latest { module } => format!("{module}/@latest"),
            Ask::Version {
                module,
                version,
                ext,
            } => format!("{module}/@v/{version}.{}", ext.as_str()),
            Ask::Sumdb { name, rest, .. } => format!("sumdb/{name}/{rest}"),
        }
    }
}

/// Why a request was refused: the reply's status and text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) not_found: bool,
    pub(crate) why: String,
}

pub(crate) fn bad(why: impl Into<String>) -> Refused {
    Refused {
        not_found: false,
        why: why.into(),
    }
}

pub(crate) fn missing(why: impl Into<String>) -> Refused {
    Refused {
        not_found: true,
        why: why.into(),
    }
}

/// Reads a request's path after `/mod/` (still percent-encoded).
pub(crate) fn parse(raw: &str) -> Result<Ask, Refused> {
    let path = percent_decode(raw)?;
    if let Some(rest) = path.strip_prefix("sumdb/") {
        return super::sumdb::parse(rest);
    }
    if let Some(module) = path.strip_suffix("/@latest") {
        check_module(module)?;
        return Ok(Ask::Latest {
            module: module.to_string(),
        });
    }
    let Some((module, file)) = path.rsplit_once("/@v/") else {
        return Err(missing(
            "not a module proxy path: expected MODULE/@v/list, MODULE/@latest, MODULE/@v/VERSION.info|.mod|.zip or sumdb/NAME/...",
        ));
    };
    check_module(module)?;
    let module = module.to_string();
    if file == "list" {
        return Ok(Ask::List { module });
    }
    let (version, ext) = match file.rsplit_once('.') {
        Some((v, "info")) => (v, Ext::Info),
        Some((v, "mod")) => (v, Ext::Mod),
        Some((v, "zip")) => (v, Ext::Zip),
        _ => {
            return Err(missing(format!(
                "{file:?}: expected list, or VERSION.info, .mod or .zip"
            )))
        }
    };
    check_version(version)?;
    if ext != Ext::Info && !canonical(version) {
        return Err(missing(format!(
            "{version:?} is not a canonical version (vMAJOR.MINOR.PATCH[-PRE][+BUILD]): ask VERSION.info for a query"
        )));
    }
    Ok(Ask::Version {
        module,
        version: version.to_string(),
        ext,
    })
}

/// Decodes `%XX` escapes (cmd/go sends `!` as `%21`); anything decoded
/// must still be printable ASCII, and is checked as if it came plain.
fn percent_decode(raw: &str) -> Result<String, Refused> {
    if raw.len() > MAX_PATH + MAX_SUMDB {
        return Err(bad("the path is too long"));
    }
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(bad("a malformed %-escape in the path"));
            };
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if !out.iter().all(|c| c.is_ascii_graphic()) {
        return Err(bad("the path has characters no module path or version has"));
    }
    Ok(String::from_utf8(out).expect("ASCII"))
}

/// An escaped module path: lower-case letters, digits, `-._~` and `!`
/// escapes, in `/`-separated elements that neither start nor end with a
/// dot; the first has a dot (a host name) and does not start with `-`.
pub(crate) fn check_module(m: &str) -> Result<(), Refused> {
    if m.is_empty() || m.len() > MAX_PATH {
        return Err(bad(format!("a module path has 1 to {MAX_PATH} characters")));
    }
    for (i, elem) in m.split('/').enumerate() {
        if elem.is_empty() || elem.starts_with('.') || elem.ends_with('.') {
            return Err(bad(format!(
                "{m:?}: an empty path element, or one starting or ending with a dot"
            )));
        }
        if i == 0 && (!elem.contains('.') || elem.starts_with('-')) {
            return Err(bad(format!(
                "{m:?}: a module path starts with a host name (a dot in it, no leading dash)"
            )));
        }
        check_escaped(m, elem, b"-._~")?;
    }
    Ok(())
}

/// An escaped version or version query: `-._+~` and letters, digits and
/// `!` escapes, starting with neither a dot nor a dash.
pub(crate) fn check_version(v: &str) -> Result<(), Refused> {
    if v.is_empty() || v.len() > MAX_VERSION {
        return Err(bad(format!("a version has 1 to {MAX_VERSION} characters")));
    }
    if v.starts_with(['.', '-']) {
        return Err(bad(format!("{v:?}: a version starts with neither . nor -")));
    }
    check_escaped(v, v, b"-._+~")
}

/// Lower-case letters, digits, `extra`, and `!` each before a lower-case
/// letter (an escaped upper-case one).
fn check_escaped(whole: &str, s: &str, extra: &[u8]) -> Result<(), Refused> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let ok = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || extra.contains(&c)
            || (c == b'!' && b.get(i + 1).is_some_and(u8::is_ascii_lowercase));
        if !ok {
            return Err(bad(format!(
                "{whole:?}: {:?} is not allowed here (upper-case letters are escaped as !x)",
                c as char
            )));
        }
    }
    Ok(())
}

/// Whether `v` (escaped) is a canonical semantic version, as cmd/go asks
/// for `.mod` and `.zip`: `vMAJOR.MINOR.PATCH`, an optional `-PRERELEASE`
/// and an optional `+incompatible`-style build suffix.
pub(crate) fn canonical(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let (rest, build) = match rest.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (rest, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    let numeric = |s: &str| {
        !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'!')
            })
    };
    nums.len() == 3
        && nums.iter().all(|n| numeric(n))
        && pre.is_none_or(ident)
        && build.is_none_or(ident)
}

/// A module path or version as the GOPROXY protocol spells it in a path
/// (`!x` for `X`).
pub(crate) fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if c.is_ascii_uppercase() {
            s.push('!');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// An escaped path or version as it really is: `!x` back to `X`.
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut bang = false;
    for c in s.chars() {
        match (bang, c) {
            (false, '!') => bang = true,
            (true, c) => {
                out.push(c.to_ascii_uppercase());
                bang = false;
            }
            (false, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(module: &str, version: &str, ext: Ext) -> Ask {
        Ask::Version {
            module: module.into(),
            version: version.into(),
            ext,
        }
    }

    #[test]
    fn module_requests_parse() {
        assert_eq!(
            parse("github.com/%21burnt%21sushi/toml/@v/list").unwrap(),
            Ask::List {
                module: "github.com/!burnt!sushi/toml".into()
            }
        );
        assert_eq!(
            parse("golang.org/x/text/@latest").unwrap(),
            Ask::Latest {
                module: "golang.org/x/text".into()
            }
        );
        let zip = parse("github.com/!burnt!sushi/toml/@v/v1.6.0.zip").unwrap();
        assert_eq!(zip, v("github.com/!burnt!sushi/toml", "v1.6.0", Ext::Zip));
        assert_eq!(
            zip.kept_at().unwrap(),
            "github.com/!burnt!sushi/toml/@v/v1.6.0.zip"
        );
        let pseudo = "v0.0.0-20230120002735-62a210ff1fd5";
        assert!(parse(&format!("bazil.org/fuse/@v/{pseudo}.mod")).is_ok());
        assert!(parse("gopkg.in/yaml.v3/@v/v3.0.1.info").is_ok());
        assert!(parse("example.com/m/@v/v2.0.0+incompatible.zip").is_ok());
        assert!(parse("example.com/m/@v/v1.0.0-!r!c1.info").is_ok());
        // A query: passed through, never kept.
        let q = parse("example.com/m/@v/master.info").unwrap();
        assert_eq!(q.kept_at(), None);
        assert!(parse("example.com/m/@v/master.zip").unwrap_err().not_found);
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in [
            "../etc/passwd/@v/list",
            "example.com/../x/@v/list",
            "example.com/./x/@v/list",
            "example.com//x/@v/list",
            "/etc/x/@v/list",
            "example.com/x/@v/..%2f..%2fpasswd.info",
            "example.com/x/@v/.hidden.info",
            "example.com/X/@v/list",
            "example.com/x!/@v/list",
            "example.com/x%00/@v/list",
            "example.com/x%zz/@v/list",
            "localhost/x/@v/list",
            "-example.com/x/@v/list",
            "example.com/x y/@v/list",
        ] {
            let e = parse(p).unwrap_err();
            assert!(!e.why.is_empty(), "{p}");
        }
        let long = format!("example.com/{}/@v/list", "a".repeat(600));
        assert!(parse(&long).is_err());
        let long = format!("example.com/x/@v/v1.0.0-{}.info", "a".repeat(300));
        assert!(parse(&long).is_err());
        assert!(parse("example.com/x/@v/v1.0.0.tar").unwrap_err().not_found);
        assert!(parse("example.com/x").unwrap_err().not_found);
    }

    #[test]
    fn versions_and_escapes() {
        for c in [
            "v1.0.0",
            "v0.0.0-20230120002735-62a210ff1fd5",
            "v2.0.0+incompatible",
            "v1.2.3-rc.1",
        ] {
            assert!(canonical(c), "{c}");
        }
        for n in [
            "v1.0",
            "1.0.0",
            "v01.0.0",
            "master",
            "v1.0.0-",
            "v1.0.0-a..b",
        ] {
            assert!(!canonical(n), "{n}");
        }
        assert_eq!(
            unescape("github.com/!burnt!sushi/toml"),
            "github.com/BurntSushi/toml"
        );
    }
}
