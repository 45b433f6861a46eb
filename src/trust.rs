//! Signed entries: which writers a reader takes cache entries from.
//!
//! A writer with `--sign-key` signs every object it uploads (its action ID,
//! output ID, size and put time, so a signature cannot be moved to another
//! key), each manifest and each pack table (each with its scope, so neither
//! can be moved to another scope's key). A reader with `--trust-key` uses
//! nothing that is not signed by one of its keys. Ed25519 through aws-lc-rs,
//! which the TLS and JWT code already build on.
//!
//! Keys are 32 bytes written as 64 hex digits: the private key's file holds
//! its seed, the public key's file (`PATH.pub`) the public key.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::wire::Id;

/// Signature length in bytes.
pub const SIG_LEN: usize = 64;

/// What each kind of signature covers starts with its own label, so a
/// signature made for one kind of object is never valid for another.
const ENTRY_LABEL: &[u8] = b"gocacher entry v1\0";
/// A pack's label names the version of its signed message: `v3` covers the
/// scope too, so a table signed under `v2` (without its scope) is untrusted.
const PACK_LABEL: &[u8] = b"gocacher pack table v3\0";
const MANIFEST_LABEL: &[u8] = b"gocacher manifest v2\0";
/// A module proxy's sidecar: its file's place and the sidecar's text.
const MODULE_LABEL: &[u8] = b"gocacher module file v1\0";

/// A writer's private key.
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself: configs are printed in debug output.
        write!(f, "Signer(public {})", self.public_hex())
    }
}

impl Signer {
    /// A key from its 64 hex digits (as in the key file or
    /// `GOCACHER_SIGN_KEY`).
    pub fn from_hex(text: &str) -> Result<Signer> {
        let seed = hex32(text.trim())
            .context("a signing key is 64 hex digits (as `gocacher keygen` writes it)")?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| anyhow::anyhow!("not an ed25519 key: {e}"))?;
        Ok(Signer { pair })
    }

    /// Reads a key file written by `gocacher keygen`.
    pub fn from_file(path: &Path) -> Result<Signer> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?;
        Signer::from_hex(&text).with_context(|| format!("signing key {}", path.display()))
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    fn public(&self) -> [u8; 32] {
        self.pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("ed25519 public keys are 32 bytes")
    }

    fn sign(&self, label: &[u8], body: &[u8]) -> [u8; SIG_LEN] {
        let mut msg = Vec::with_capacity(label.len() + body.len());
        msg.extend_from_slice(label);
        msg.extend_from_slice(body);
        self.pair
            .sign(&msg)
            .as_ref()
            .try_into()
            .expect("ed25519 signatures are 64 bytes")
    }

    /// The signature of an object's entry.
    pub fn sign_entry(&self, action: &Id, output: &Id, size: u64, put_time: i64) -> [u8; SIG_LEN] {
        self.sign(ENTRY_LABEL, &entry_body(action, output, size, put_time))
    }

    /// The signature of a pack table, given the scope hash of the scope
    /// whose pack it is (as manifests record it) and the table's sha256.
    pub fn sign_pack(&self, scope: &[u8; 16], table_sum: &[u8; 32]) -> [u8; SIG_LEN] {
        self.sign(PACK_LABEL, &pack_body(scope, table_sum))
    }

    /// The signature of a manifest, given the sha256 of its content.
    pub fn sign_manifest(&self, sum: &[u8; 32]) -> [u8; SIG_LEN] {
        self.sign(MANIFEST_LABEL, sum)
    }

    /// The signature of a kept module file's sidecar (`serve --modproxy`):
    /// the file's place in the GOPROXY layout and the sidecar's text, so a
    /// signature cannot be moved to another file.
    pub fn sign_module(&self, place: &str, text: &[u8]) -> [u8; SIG_LEN] {
        self.sign(MODULE_LABEL, &module_body(place, text))
    }
}

fn entry_body(action: &Id, output: &Id, size: u64, put_time: i64) -> [u8; 80] {
    let mut b = [0u8; 80];
    b[..32].copy_from_slice(&action.0);
    b[32..64].copy_from_slice(&output.0);
    b[64..72].copy_from_slice(&size.to_le_bytes());
    b[72..].copy_from_slice(&put_time.to_le_bytes());
    b
}

fn module_body(place: &str, text: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(place.len() + 1 + text.len());
    b.extend_from_slice(place.as_bytes());
    b.push(0);
    b.extend_from_slice(text);
    b
}

fn pack_body(scope: &[u8; 16], table_sum: &[u8; 32]) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[..16].copy_from_slice(scope);
    b[16..].copy_from_slice(table_sum);
    b
}

/// The public keys a reader takes entries from.
#[derive(Clone, PartialEq, Eq)]
pub struct Trust {
    keys: Vec<[u8; 32]>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(hex::encode).collect();
        write!(f, "Trust({keys:?})")
    }
}

impl Trust {
    /// Keys as given to `--trust-key`: each 64 hex digits, or a file that
    /// holds them.
    pub fn parse(given: &[String]) -> Result<Trust> {
        let mut keys = Vec::new();
        for g in given.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
            let key = match hex32(g) {
                Ok(k) => k,
                Err(_) => {
                    let text = std::fs::read_to_string(g).with_context(|| {
                        format!("--trust-key {g:?}: neither 64 hex digits nor a readable key file")
                    })?;
                    hex32(text.trim()).with_context(|| {
                        format!("--trust-key {g:?}: the file does not hold a public key (64 hex digits)")
                    })?
                }
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            bail!("--trust-key: no key given");
        }
        Ok(Trust { keys })
    }

    /// Adds a writer's own key: a writer that also reads trusts itself.
    pub fn with_signer(mut self, signer: &Signer) -> Trust {
        let own = signer.public();
        if !self.keys.contains(&own) {
            self.keys.push(own);
        }
        self
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn verify(&self, label: &[u8], body: &[u8], sig: &[u8; SIG_LEN]) -> bool {
        let mut msg = Vec::with_capacity(label.len() + body.len());
        msg.extend_from_slice(label);
        msg.extend_from_slice(body);
        self.keys.iter().any(|k| {
            UnparsedPublicKey::new(&ED25519, k)
                .verify(&msg, sig)
                .is_ok()
        })
    }

    /// Whether an object's signature is one of ours for exactly this entry.
    pub fn entry(
        &self,
        action: &Id,
        output: &Id,
        size: u64,
        put_time: i64,
        sig: Option<&[u8; SIG_LEN]>,
    ) -> bool {
        sig.is_some_and(|s| {
            self.verify(ENTRY_LABEL, &entry_body(action, output, size, put_time), s)
        })
    }

    /// Whether a pack table's signature is one of ours for this table as
    /// the pack of this scope (its scope hash).
    pub fn pack(&self, scope: &[u8; 16], table_sum: &[u8; 32], sig: &[u8; SIG_LEN]) -> bool {
        self.verify(PACK_LABEL, &pack_body(scope, table_sum), sig)
    }

    pub fn manifest(&self, sum: &[u8; 32], sig: &[u8; SIG_LEN]) -> bool {
        self.verify(MANIFEST_LABEL, sum, sig)
    }

    /// Whether a module file's sidecar is signed by one of ours for this
    /// place.
    pub fn module(&self, place: &str, text: &[u8], sig: &[u8; SIG_LEN]) -> bool {
        self.verify(MODULE_LABEL, &module_body(place, text), sig)
    }
}

/// The signing and trust settings of the bucket tier.
#[derive(Debug, Default)]
pub struct Keys {
    pub signer: Option<Signer>,
    /// `None`: every writer is trusted (no `--trust-key`).
    pub trust: Option<Trust>,
}

impl Keys {
    /// A signature for an uploaded entry, when this writer signs.
    pub fn sign_entry(
        &self,
        action: &Id,
        output: &Id,
        size: u64,
        put_time: i64,
    ) -> Option<[u8; SIG_LEN]> {
        self.signer
            .as_ref()
            .map(|s| s.sign_entry(action, output, size, put_time))
    }
}

/// `gocacher keygen PATH`: a new key, private at PATH (mode 0600), public at
/// PATH.pub. Refuses to overwrite either. Returns the public key's hex.
pub fn keygen(path: &Path) -> Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let signer = Signer::from_hex(&hex::encode(seed))?;
    let public = signer.public_hex();
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = std::path::PathBuf::from(pub_path);
    for p in [path, pub_path.as_path()] {
        if p.exists() {
            bail!("{} exists already; not overwriting a key", p.display());
        }
    }
    write_new(path, &format!("{}\n", hex::encode(seed)), true)?;
    write_new(&pub_path, &format!("{public}\n"), false)?;
    Ok(public)
}

fn write_new(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn hex32(text: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(text).context("not hex")?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("{} bytes, not 32", b.len()))
}

/// Parses a signature from object metadata (128 hex digits).
pub fn sig_from_hex(text: &str) -> Option<[u8; SIG_LEN]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(n: u8) -> Signer {
        Signer::from_hex(&hex::encode([n; 32])).unwrap()
    }

    #[test]
    fn entries_verify_only_as_signed() {
        let (a, b) = (signer(1), signer(2));
        let trust = Trust::parse(&[a.public_hex()]).unwrap();
        let (act, out) = (Id([7; 32]), Id([8; 32]));
        let sig = a.sign_entry(&act, &out, 10, 5);
        assert!(trust.entry(&act, &out, 10, 5, Some(&sig)));
        assert!(
            !trust.entry(&Id([9; 32]), &out, 10, 5, Some(&sig)),
            "another action"
        );
        assert!(
            !trust.entry(&act, &Id([9; 32]), 10, 5, Some(&sig)),
            "another output"
        );
        assert!(!trust.entry(&act, &out, 11, 5, Some(&sig)), "another size");
        assert!(
            !trust.entry(&act, &out, 10, 6, Some(&sig)),
            "another put time"
        );
        assert!(!trust.entry(&act, &out, 10, 5, None), "unsigned");
        let other = b.sign_entry(&act, &out, 10, 5);
        assert!(!trust.entry(&act, &out, 10, 5, Some(&other)), "another key");
        // Rotation: either of two keys.
        let both = Trust::parse(&[a.public_hex(), b.public_hex()]).unwrap();
        assert!(both.entry(&act, &out, 10, 5, Some(&other)));
        // A pack table's signature is not a manifest's, and names its scope.
        let (sum, scope) = ([3u8; 32], [4u8; 16]);
        assert!(trust.pack(&scope, &sum, &a.sign_pack(&scope, &sum)));
        assert!(!trust.pack(&[5u8; 16], &sum, &a.sign_pack(&scope, &sum)));
        assert!(!trust.manifest(&sum, &a.sign_pack(&scope, &sum)));
        // A table signed before packs named their scope is not trusted.
        let old = a.sign(b"gocacher pack table v2\0", &sum);
        assert!(!trust.pack(&scope, &sum, &old));
        // A module sidecar's signature names its file.
        let m = a.sign_module("m/@v/v1.0.0.zip", b"text");
        assert!(trust.module("m/@v/v1.0.0.zip", b"text", &m));
        assert!(!trust.module("m/@v/v1.0.1.zip", b"text", &m));
        assert!(!trust.module("m/@v/v1.0.0.zip", b"texT", &m));
        assert!(!trust.manifest(&sum, &m));
    }

    #[test]
    fn keygen_writes_a_usable_pair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let public = keygen(&path).unwrap();
        let s = Signer::from_file(&path).unwrap();
        assert_eq!(s.public_hex(), public);
        let pub_file = dir.path().join("k.pub");
        let trust = Trust::parse(&[pub_file.display().to_string()]).unwrap();
        assert_eq!(trust, Trust::parse(&[public]).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(keygen(&path).is_err(), "never overwrites a key");
        assert!(
            !format!("{s:?}").contains(&std::fs::read_to_string(&path).unwrap().trim().to_string())
        );
        assert!(Trust::parse(&["nonsense".into()]).is_err());
        assert!(Signer::from_hex("abcd").is_err());
    }
}
