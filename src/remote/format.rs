//! The bucket's object format, version 1 (documented in docs/FORMAT.md).
//!
//! One object per action ID, so a remote hit is one GET and a store one PUT:
//!
//! - key: `[PREFIX/]gocacher/v1/<action-id-hex>`
//! - body: the output bytes, raw or as one zstd frame
//! - user metadata (`x-amz-meta-*`):
//!   - `gocacher-output-id`: hex sha256 of the (uncompressed) output
//!   - `gocacher-size`: uncompressed size in bytes
//!   - `gocacher-put-time`: nanoseconds since the Unix epoch of the first put
//!   - `gocacher-encoding`: `identity` or `zstd`
//!   - `gocacher-signature` (only from a writer with `--sign-key`): hex
//!     ed25519 signature of the action ID, output ID, size and put time

use std::collections::HashMap;

use crate::wire::Id;

pub const META_OUTPUT_ID: &str = "gocacher-output-id";
pub const META_SIZE: &str = "gocacher-size";
pub const META_PUT_TIME: &str = "gocacher-put-time";
pub const META_ENCODING: &str = "gocacher-encoding";
pub const META_SIGNATURE: &str = "gocacher-signature";

/// Outputs smaller than this are stored raw: zstd's frame overhead and the
/// CPU are not worth it for a few hundred bytes.
pub const COMPRESS_MIN: u64 = 512;

/// Compressed objects must save at least this share of the bytes, else the
/// raw bytes are stored (already-compressed data, random test data).
pub const COMPRESS_MAX_RATIO: f64 = 0.9;

/// zstd level: its fastest, not its default (3). A cold build uploads
/// everything it compiles while cmd/go compiles, so the helper's CPU counts
/// for more there than the last bytes of ratio (bench/README.md has the
/// numbers).
pub const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Zstd,
    /// lz4 frames, as the seed's cache servers send them (never stored by
    /// gocacher, so never in object metadata).
    Lz4,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Zstd => "zstd",
            Encoding::Lz4 => "lz4",
        }
    }
}

/// What an object's metadata says about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectMeta {
    pub output_id: Id,
    pub size: u64,
    pub put_time_nanos: i64,
    pub encoding: Encoding,
    /// The writer's signature of the entry (see [`crate::trust`]).
    pub signature: Option<[u8; crate::trust::SIG_LEN]>,
}

impl ObjectMeta {
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            (META_OUTPUT_ID.to_string(), self.output_id.to_hex()),
            (META_SIZE.to_string(), self.size.to_string()),
            (META_PUT_TIME.to_string(), self.put_time_nanos.to_string()),
            (
                META_ENCODING.to_string(),
                self.encoding.as_str().to_string(),
            ),
        ]);
        if let Some(sig) = &self.signature {
            m.insert(META_SIGNATURE.to_string(), hex::encode(sig));
        }
        m
    }

    /// Parses object metadata; `None` means the object is not ours or is
    /// damaged, and is treated as corrupt.
    pub fn from_metadata(m: &HashMap<String, String>) -> Option<ObjectMeta> {
        let get = |k: &str| m.get(k).map(|v| v.trim());
        Some(ObjectMeta {
            output_id: Id::from_hex(get(META_OUTPUT_ID)?)?,
            size: get(META_SIZE)?.parse().ok()?,
            put_time_nanos: get(META_PUT_TIME)?.parse().ok()?,
            encoding: match get(META_ENCODING)? {
                "identity" => Encoding::Identity,
                "zstd" => Encoding::Zstd,
                _ => return None,
            },
            // A damaged signature is no signature: the object is then
            // untrusted where trust is asked for, and fine elsewhere.
            signature: get(META_SIGNATURE).and_then(crate::trust::sig_from_hex),
        })
    }
}

/// The object key of an action under `prefix` (no leading or trailing '/').
pub fn object_key(prefix: &str, action: &Id) -> String {
    format!("{}{}", entries_at(prefix), action.to_hex())
}

/// What every entry's key starts with under `prefix` (see [`object_key`]).
pub fn entries_at(prefix: &str) -> String {
    if prefix.is_empty() {
        "gocacher/v1/".to_string()
    } else {
        format!("{prefix}/gocacher/v1/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip() {
        let m = ObjectMeta {
            output_id: Id([3; 32]),
            size: 1234,
            put_time_nanos: 1_700_000_000_000_000_000,
            encoding: Encoding::Zstd,
            signature: Some([9; 64]),
        };
        assert_eq!(ObjectMeta::from_metadata(&m.to_metadata()), Some(m));
        let unsigned = ObjectMeta {
            signature: None,
            ..m
        };
        assert_eq!(
            ObjectMeta::from_metadata(&unsigned.to_metadata()),
            Some(unsigned)
        );
        let mut bad = m.to_metadata();
        bad.insert(META_ENCODING.into(), "lz4".into());
        assert_eq!(ObjectMeta::from_metadata(&bad), None);
        bad.remove(META_ENCODING);
        assert_eq!(ObjectMeta::from_metadata(&bad), None);
    }

    #[test]
    fn keys() {
        let a = Id([0xab; 32]);
        assert_eq!(
            object_key("", &a),
            format!("gocacher/v1/{}", "ab".repeat(32))
        );
        assert_eq!(
            object_key("ci/main", &a),
            format!("ci/main/gocacher/v1/{}", "ab".repeat(32))
        );
    }
}
