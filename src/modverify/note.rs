//! Signed notes and verifier keys, in the format of
//! golang.org/x/mod/sumdb/note: what a checksum database signs its tree
//! heads with, and the key `GOSUMDB` names.
//!
//! A verifier key is `<name>+<hash>+<base64 key>`: the key is an algorithm
//! byte (1, Ed25519) and 32 bytes, the hash the first four bytes
//! (big-endian) of SHA-256 over `<name>\n` and the key. A signed note is a
//! text ending in a newline, a blank line, and lines `— <name> <base64>`
//! whose bytes are the key hash and the signature over the text.

use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::Error;

/// The only algorithm a verifier key may name.
const ALG_ED25519: u8 = 1;

/// More signatures than this and a note is refused, as Go does, so a note
/// cannot make us verify without end.
const MAX_SIGNATURES: usize = 100;

/// A checksum database's public key, as `GOSUMDB` gives it.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    hash: u32,
    key: [u8; 32],
}

impl std::fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifierKey({}+{:08x})", self.name, self.hash)
    }
}

impl VerifierKey {
    /// Parses `<name>+<hash>+<base64 key>`, checking the hash against the
    /// name and key, as Go's `note.NewVerifier` does.
    pub fn parse(text: &str) -> Result<VerifierKey, Error> {
        let bad = |why: &str| Error::Key(format!("{text:?} is not a verifier key: {why}"));
        let mut parts = text.splitn(3, '+');
        let (name, hash16, key64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(h), Some(k)) => (n, h, k),
            _ => return Err(bad("it is <name>+<hash>+<base64 key>")),
        };
        if !valid_name(name) {
            return Err(bad("the name is empty or has a space or a plus"));
        }
        let hash = match u32::from_str_radix(hash16, 16) {
            Ok(h) if hash16.len() == 8 => h,
            _ => return Err(bad("the hash is not 8 hex digits")),
        };
        let raw = STANDARD
            .decode(key64)
            .map_err(|_| bad("the key is not base64"))?;
        if key_hash(name, &raw) != hash {
            return Err(bad("the hash does not match the name and key"));
        }
        match raw.split_first() {
            Some((&ALG_ED25519, key)) if key.len() == 32 => Ok(VerifierKey {
                name: name.to_owned(),
                hash,
                key: key.try_into().expect("checked length"),
            }),
            Some((&ALG_ED25519, _)) => Err(bad("an Ed25519 key is 32 bytes")),
            _ => Err(bad("the algorithm is not Ed25519 (1)")),
        }
    }

    /// The database's name: the `<name>` of `<proxy>/sumdb/<name>/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<hash>`, to name the key in messages.
    pub fn id(&self) -> String {
        format!("{}+{:08x}", self.name, self.hash)
    }

    /// The text of `note` if it is signed by this key. A note this key
    /// did not sign, or signed badly, or that is malformed, is refused;
    /// signatures by other keys are ignored, as Go ignores unknown keys.
    pub fn open<'a>(&self, note: &'a [u8]) -> Result<&'a [u8], Error> {
        let bad = |why: String| Error::Signature(format!("tree note: {why}"));
        let text = std::str::from_utf8(note).map_err(|_| bad("not UTF-8".into()))?;
        if text.chars().any(|c| c < ' ' && c != '\n') {
            return Err(bad("it has a control character".into()));
        }
        let split = text
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures".into()))?;
        let (body, sigs) = (&note[..split + 1], &text[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(bad("the signatures do not end in a newline".into()));
        }
        let mut verified = false;
        for (n, line) in sigs.lines().enumerate() {
            if n >= MAX_SIGNATURES {
                return Err(bad(format!("more than {MAX_SIGNATURES} signatures")));
            }
            let rest = line
                .strip_prefix("— ")
                .ok_or_else(|| bad(format!("{line:?} is not a signature line")))?;
            let (name, b64) = rest.split_once(' ').unwrap_or((rest, ""));
            let sig = STANDARD.decode(b64).ok().filter(|s| s.len() >= 5);
            let sig = match sig {
                Some(s) if valid_name(name) => s,
                _ => return Err(bad(format!("{line:?} is not a signature line"))),
            };
            let hash = u32::from_be_bytes(sig[..4].try_into().expect("checked length"));
            if name != self.name || hash != self.hash {
                continue;
            }
            UnparsedPublicKey::new(&ED25519, &self.key)
                .verify(body, &sig[4..])
                .map_err(|_| {
                    Error::Signature(format!("tree note: bad signature by {}", self.id()))
                })?;
            verified = true;
        }
        if !verified {
            return Err(bad(format!("not signed by {}", self.id())));
        }
        Ok(body)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

fn key_hash(name: &str, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(key);
    u32::from_be_bytes(h.finalize()[..4].try_into().expect("sha256 is 32 bytes"))
}

/// The key `go env GOSUMDB` names, for callers given no key.
///
/// `GOSUMDB` is `<key>` or `<key> <url>`. When the key is a bare name, the
/// go command uses a key it was built with; the only copy outside its
/// binary is its source, so this reads the key from
/// `$GOROOT/src/cmd/go/internal/modfetch/` and refuses if it is not there
/// (pass the full key instead). `GOSUMDB=off` is refused: there is nothing
/// to check against.
pub fn go_env_key() -> Result<VerifierKey, Error> {
    let out = std::process::Command::new("go")
        .args(["env", "GOSUMDB", "GOROOT"])
        .output()
        .map_err(|e| Error::Key(format!("running `go env GOSUMDB GOROOT`: {e}")))?;
    if !out.status.success() {
        return Err(Error::Key(format!(
            "`go env GOSUMDB GOROOT` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let gosumdb = lines.next().unwrap_or("").trim();
    let goroot = lines.next().unwrap_or("").trim();
    let key = gosumdb.split_whitespace().next().unwrap_or("");
    if key.is_empty() || key == "off" {
        return Err(Error::Key(format!(
            "GOSUMDB is {gosumdb:?}: no checksum database to verify against"
        )));
    }
    if key.contains('+') {
        return VerifierKey::parse(key);
    }
    let dir = std::path::Path::new(goroot).join("src/cmd/go/internal/modfetch");
    known_key(&dir, key)
}

/// The full key for the bare database name `name`, from the go command's
/// source in `dir`: the one quoted string there that starts `<name>+`.
pub fn known_key(dir: &std::path::Path, name: &str) -> Result<VerifierKey, Error> {
    let want = format!("\"{name}+");
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Key(format!(
            "GOSUMDB names {name} without its key, and the go source that holds it ({}) cannot be read: {e}; pass the full key",
            dir.display()
        ))
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "go") {
            continue;
        }
        let Ok(src) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Some(at) = src.find(&want) {
            let rest = &src[at + 1..];
            if let Some(end) = rest.find('"') {
                return VerifierKey::parse(&rest[..end]);
            }
        }
    }
    Err(Error::Key(format!(
        "GOSUMDB names {name} without its key, and {} does not hold it; pass the full key",
        dir.display()
    )))
}
