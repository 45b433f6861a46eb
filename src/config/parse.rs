//! The syntax of sizes and of go-cacher's single-dash flags.

use anyhow::Result;

/// Rewrites `-flag` and `-flag=value` (Go's flag syntax, as go-cacher takes
/// them) to `--flag`, for flag names longer than one letter.
pub(super) fn normalize_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some(s) if s.len() > 2 && s.starts_with('-') && !s.starts_with("--") => {
                let name = s[1..].split('=').next().unwrap_or("");
                if name.len() > 1 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    format!("-{s}").into()
                } else {
                    a
                }
            }
            _ => a,
        })
        .collect()
}

/// Parses "123", "10k", "500MB", "10GiB": decimal (k, MB, GB, TB) and
/// binary (KiB, MiB, GiB, TiB) units in any case, a space allowed before
/// the unit.
pub fn parse_size(s: &str) -> Result<u64> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(anyhow::Error::msg)
}
