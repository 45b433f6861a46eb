//! The GOCACHEPROG wire types, as cmd/go sends and reads them.
//!
//! Field names and omission rules follow `cmd/go/internal/cacheprog` (Go 1.24+)
//! exactly, because cmd/go decodes our responses with `encoding/json` and treats
//! a malformed or unexpected message as fatal. Nothing here knows about storage.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The commands gocacher declares in its first message. Without "put" cmd/go
/// would never store anything; without "close" it would never let us drain.
pub const KNOWN_COMMANDS: [&str; 3] = ["get", "put", "close"];

/// A 32-byte ID: a cache key (action ID) or a content hash (output ID).
///
/// cmd/go sends both as base64 of 32 bytes (`[]byte` in Go's JSON). Any other
/// length is rejected at parse time so no code below has to re-check it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Lower-case hex, the form used for file and object names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s: &str = Deserialize::deserialize(d)?;
        let bytes = B64.decode(s).map_err(serde::de::Error::custom)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            serde::de::Error::custom(format!("ID must be 32 bytes, got {}", b.len()))
        })?;
        Ok(Id(arr))
    }
}

/// One request line from cmd/go.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Request {
    /// Unique per process, starting at 1; echoed in the response.
    #[serde(rename = "ID")]
    pub id: i64,
    /// "get", "put" or "close". Kept as a string so an unknown command gets an
    /// `Err` reply instead of failing the whole line.
    pub command: String,
    #[serde(rename = "ActionID")]
    pub action_id: Option<Id>,
    /// The output's sha256 (put only).
    #[serde(rename = "OutputID")]
    pub output_id: Option<Id>,
    /// The pre-1.24 name of OutputID; Go 1.24 with the old experiment sends both.
    #[serde(rename = "ObjectID")]
    pub object_id: Option<Id>,
    /// Length of the body that follows on the next non-blank line (absent when 0).
    #[serde(default)]
    pub body_size: i64,
}

impl Request {
    /// OutputID, else the legacy ObjectID.
    pub fn output_id(&self) -> Option<Id> {
        self.output_id.or(self.object_id)
    }
}

/// One response line to cmd/go. Optional fields are omitted when empty, as Go's
/// `omitempty` would, so the output is exactly what cmd/go expects to decode.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub err: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_commands: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "is_false")]
    pub miss: bool,
    #[serde(rename = "OutputID", skip_serializing_if = "Option::is_none")]
    pub output_id: Option<Id>,
    #[serde(skip_serializing_if = "is_zero")]
    pub size: i64,
    /// RFC 3339 time of the original put; cmd/go uses it for test-cache expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub disk_path: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Response {
    pub fn capabilities() -> Response {
        Response {
            id: 0,
            known_commands: Some(KNOWN_COMMANDS.to_vec()),
            ..Default::default()
        }
    }

    pub fn error(id: i64, err: impl fmt::Display) -> Response {
        Response {
            id,
            err: err.to_string(),
            ..Default::default()
        }
    }

    pub fn miss(id: i64) -> Response {
        Response {
            id,
            miss: true,
            ..Default::default()
        }
    }
}

/// Nanoseconds since the Unix epoch, for put times.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 in UTC, the form Go's
/// `time.Time` decodes from JSON.
pub fn rfc3339(unix_nanos: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_nanos.max(0) as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_put_with_object_id_only() {
        let id = B64.encode([7u8; 32]);
        let line = format!(
            r#"{{"ID":3,"Command":"put","ActionID":"{id}","ObjectID":"{id}","BodySize":5}}"#
        );
        let req: Request = serde_json::from_str(&line).unwrap();
        assert_eq!(req.id, 3);
        assert_eq!(req.output_id(), Some(Id([7; 32])));
        assert_eq!(req.body_size, 5);
    }

    #[test]
    fn output_id_wins_over_object_id() {
        let a = B64.encode([1u8; 32]);
        let b = B64.encode([2u8; 32]);
        let line = format!(
            r#"{{"ID":1,"Command":"put","ActionID":"{a}","OutputID":"{a}","ObjectID":"{b}"}}"#
        );
        let req: Request = serde_json::from_str(&line).unwrap();
        assert_eq!(req.output_id(), Some(Id([1; 32])));
        assert_eq!(req.body_size, 0);
    }

    #[test]
    fn rejects_short_ids() {
        let line = r#"{"ID":1,"Command":"get","ActionID":"AAAA"}"#;
        let err = serde_json::from_str::<Request>(line).unwrap_err();
        assert!(err.to_string().contains("32 bytes"), "{err}");
    }

    #[test]
    fn responses_omit_empty_fields() {
        let s = serde_json::to_string(&Response::capabilities()).unwrap();
        assert_eq!(s, r#"{"ID":0,"KnownCommands":["get","put","close"]}"#);
        let s = serde_json::to_string(&Response::miss(9)).unwrap();
        assert_eq!(s, r#"{"ID":9,"Miss":true}"#);
    }

    #[test]
    fn time_is_rfc3339() {
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    }
}
