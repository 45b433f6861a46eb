//! An issuer's keys, and what a token is checked against: the key its
//! header names, the algorithm that key pins, and the issuer it claims.

use std::time::Instant;

use anyhow::{bail, Result};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

pub(crate) struct IssuerKeys {
    pub(crate) set: JwkSet,
    pub(crate) fetched: Instant,
}

#[derive(Deserialize)]
pub(crate) struct Discovery {
    pub(crate) jwks_uri: String,
}

pub(crate) fn find<'a>(set: &'a JwkSet, kid: Option<&str>) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(k) => set.find(k),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
}

/// The one algorithm tokens signed with `jwk` are checked with: the key's own
/// `alg` if it names one, else the usual one for its type and curve (RS256
/// for RSA, as OIDC's default). A token's header cannot choose another (an
/// RSA key's PS256 or RS512, say): what the issuer signs with is the
/// issuer's to say. Symmetric (`oct`) keys are refused: a secret published
/// in a JWKS is no secret.
pub(crate) fn pinned_algorithm(jwk: &Jwk) -> Result<Algorithm> {
    let from_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            ref c => bail!("the issuer's key is on curve {c:?}, which is not supported"),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            ref c => bail!("the issuer's key is on curve {c:?}, which is not supported"),
        },
        AlgorithmParameters::OctetKey(_) => {
            bail!("the issuer's key is symmetric (oct); a JWKS key must be public")
        }
    };
    let Some(named) = jwk.common.key_algorithm else {
        return Ok(from_type);
    };
    let alg: Algorithm = named
        .to_string()
        .parse()
        .map_err(|_| anyhow::anyhow!("the issuer's key is for {named}, not a JWT signature"))?;
    if alg.family() != from_type.family() {
        bail!("the issuer's key says {alg:?}, which does not fit its key type");
    }
    Ok(alg)
}

/// The `iss` claim before the signature is checked (to pick the keys).
pub(crate) fn unverified_issuer(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_algorithm_comes_from_the_key() {
        let jwk = |v: Value| -> Jwk { serde_json::from_value(v).unwrap() };
        let rsa = |alg: Option<&str>| {
            let mut v = serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
            if let Some(a) = alg {
                v["alg"] = a.into();
            }
            jwk(v)
        };
        let ec =
            |crv: &str| jwk(serde_json::json!({"kty": "EC", "crv": crv, "x": "AA", "y": "AA"}));
        let pinned = |k: &Jwk| pinned_algorithm(k).map_err(|e| e.to_string());
        assert_eq!(pinned(&rsa(None)), Ok(Algorithm::RS256));
        assert_eq!(pinned(&rsa(Some("PS384"))), Ok(Algorithm::PS384));
        assert_eq!(pinned(&ec("P-256")), Ok(Algorithm::ES256));
        assert_eq!(pinned(&ec("P-384")), Ok(Algorithm::ES384));
        let ed = jwk(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}));
        assert_eq!(pinned(&ed), Ok(Algorithm::EdDSA));
        // A key whose alg does not fit its type, an encryption key, a
        // symmetric key, an unsupported curve: no algorithm at all.
        assert!(pinned(&rsa(Some("HS256")))
            .unwrap_err()
            .contains("does not fit"));
        assert!(pinned(&rsa(Some("RSA-OAEP"))).is_err());
        let oct = jwk(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"}));
        assert!(pinned(&oct).unwrap_err().contains("symmetric"));
        assert!(pinned(&ec("P-521")).is_err());
    }

    #[test]
    fn the_issuer_is_read_before_verification() {
        let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!(
            "{}.{}.sig",
            b("{\"alg\":\"ES256\"}"),
            b("{\"iss\":\"https://i\"}")
        );
        assert_eq!(unverified_issuer(&jwt).as_deref(), Some("https://i"));
        assert_eq!(unverified_issuer("garbage"), None);
    }
}
