//! End users' tokens (compact JWS): signature checks. Accepted algorithms are the ones the
//! deployment configured a key for — HS256 with the `USER_TOKEN_SECRET_REF` key, RS256 and ES256
//! with the keys of `USER_TOKEN_JWKS_URL` (by `kid`) — never `none`, never an algorithm the token
//! picks for a key of another kind (an HS256 token "signed" with a public key is refused).

use super::model::{AccessPolicy, ConsumerUserId};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// One key of a JSON Web Key Set (RFC 7517): RSA (`n`, `e`) or EC P-256 (`x`, `y`).
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

/// A JSON Web Key Set document.
#[derive(Debug, Clone, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// The keys a deployment verifies user tokens with.
#[derive(Debug, Clone, Default)]
pub struct VerifyKeys<'a> {
    pub hs256: Option<&'a [u8]>,
    pub jwks: Option<&'a JwkSet>,
}

fn refused(why: &str) -> AppError {
    AppError::Unauthorized(format!("user token refused: {why}"))
}

/// A token split into its parts; nothing is trusted yet.
pub struct Parsed<'t> {
    pub alg: String,
    pub kid: Option<String>,
    signing_input: &'t str,
    payload: &'t str,
    sig: Vec<u8>,
}

/// Split and decode a compact JWS (header and signature; the payload is read only once verified).
pub fn parse(token: &str) -> AppResult<Parsed<'_>> {
    if token.len() > 8192 {
        return Err(refused("it is longer than 8192 bytes"));
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(refused("it is not a compact JWS (header.payload.signature)"));
    };
    let header = decode_json(h, "header")?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default().to_string();
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_string);
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| refused("its signature is not base64url"))?;
    Ok(Parsed { alg, kid, signing_input: &token[..h.len() + 1 + p.len()], payload: p, sig })
}

fn decode_json(part: &str, what: &str) -> AppResult<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| refused(&format!("its {what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| refused(&format!("its {what} is not JSON")))
}

fn b64(field: &Option<String>, what: &str) -> AppResult<Vec<u8>> {
    let v = field.as_deref().ok_or_else(|| refused(&format!("its signing key has no '{what}'")))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|_| refused(&format!("its signing key's '{what}' is not base64url")))
}

/// The JWKS key for `kid` and `kty` (a token without `kid` may use the only key of that type).
pub fn find_key<'k>(set: &'k JwkSet, kid: Option<&str>, kty: &str) -> Option<&'k Jwk> {
    let usable = |k: &&Jwk| k.kty == kty && k.use_.as_deref().is_none_or(|u| u == "sig");
    match kid {
        Some(kid) => set.keys.iter().filter(usable).find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let mut it = set.keys.iter().filter(usable);
            let first = it.next();
            if it.next().is_some() { None } else { first }
        }
    }
}

/// Check the signature of `t` with `keys`, then its claims; the user it names.
pub fn verify_parsed(
    t: &Parsed<'_>,
    keys: &VerifyKeys<'_>,
    policy: &AccessPolicy,
    now: Millis,
) -> AppResult<ConsumerUserId> {
    let msg = t.signing_input.as_bytes();
    match t.alg.as_str() {
        "HS256" => {
            let key = keys.hs256.ok_or_else(|| refused("HS256 is not accepted by this deployment"))?;
            let mut mac = HmacSha256::new_from_slice(key).map_err(|_| AppError::internal("user-token key unusable"))?;
            mac.update(msg);
            // Constant-time comparison.
            mac.verify_slice(&t.sig).map_err(|_| refused("bad signature"))?;
        }
        alg @ ("RS256" | "ES256") => {
            let set = keys.jwks.ok_or_else(|| refused(&format!("{alg} is not accepted by this deployment")))?;
            let kty = if alg == "RS256" { "RSA" } else { "EC" };
            let key =
                find_key(set, t.kid.as_deref(), kty).ok_or_else(|| refused("no key of the key set has its 'kid'"))?;
            if key.alg.as_deref().is_some_and(|a| a != alg) {
                return Err(refused("its key is for another algorithm"));
            }
            let ok = if alg == "RS256" {
                let c = RsaPublicKeyComponents { n: b64(&key.n, "n")?, e: b64(&key.e, "e")? };
                c.verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, &t.sig).is_ok()
            } else {
                if key.crv.as_deref() != Some("P-256") {
                    return Err(refused("ES256 needs a P-256 key"));
                }
                let mut point = vec![4u8];
                point.extend(b64(&key.x, "x")?);
                point.extend(b64(&key.y, "y")?);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, &t.sig).is_ok()
            };
            if !ok {
                return Err(refused("bad signature"));
            }
        }
        _ => return Err(refused("only HS256, RS256 and ES256 tokens are accepted")),
    }
    super::rules::check_claims(&decode_json(t.payload, "payload")?, policy, now)
}

/// [`verify_parsed`] on a token string.
pub fn verify(token: &str, keys: &VerifyKeys<'_>, policy: &AccessPolicy, now: Millis) -> AppResult<ConsumerUserId> {
    verify_parsed(&parse(token)?, keys, policy, now)
}

/// Sign `claims` as an HS256 token (for tests, the CLI and consumers' examples).
pub fn sign(claims: &Value, key: &[u8]) -> AppResult<String> {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| AppError::internal("encoding claims"))?);
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| AppError::internal("user-token key unusable"))?;
    mac.update(format!("{h}.{p}").as_bytes());
    Ok(format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Millis = 1_800_000_000_000;

    fn hs(key: &[u8]) -> VerifyKeys<'_> {
        VerifyKeys { hs256: Some(key), jwks: None }
    }

    #[test]
    fn signed_tokens_verify_and_tampered_ones_do_not() {
        let p = AccessPolicy::default();
        let t = sign(&json!({"sub": "u1", "exp": NOW / 1000 + 60}), b"k1").unwrap();
        assert_eq!(verify(&t, &hs(b"k1"), &p, NOW).unwrap().as_str(), "u1");
        assert!(verify(&t, &hs(b"k2"), &p, NOW).unwrap_err().to_string().contains("bad signature"));
        // Another user's claims under the first signature.
        let v: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"u2","exp":9999999999}"#);
        assert!(verify(&format!("{}.{forged}.{}", v[0], v[2]), &hs(b"k1"), &p, NOW).is_err());
        // alg none, garbage, wrong shape.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), forged);
        assert!(verify(&none, &hs(b"k1"), &p, NOW).unwrap_err().to_string().contains("only HS256"));
        for junk in ["", "a.b", "a.b.c.d", "!!.??.##", &"x".repeat(9000)] {
            let e = verify(junk, &hs(b"k1"), &p, NOW).unwrap_err();
            assert_eq!(e.code().as_str(), "Unauthorized", "{junk}");
            assert!(junk.is_empty() || junk.len() > 100 || !e.to_string().contains(junk));
        }
        // HS256 where only a key set is configured: refused whatever its MAC.
        let set = JwkSet { keys: vec![] };
        let e = verify(&t, &VerifyKeys { hs256: None, jwks: Some(&set) }, &p, NOW).unwrap_err();
        assert!(e.to_string().contains("HS256 is not accepted"), "{e}");
    }

    #[test]
    fn keys_are_found_by_kid_and_type() {
        let k = |kty: &str, kid: Option<&str>| Jwk {
            kty: kty.into(),
            kid: kid.map(Into::into),
            alg: None,
            use_: None,
            crv: None,
            n: None,
            e: None,
            x: None,
            y: None,
        };
        let set = JwkSet { keys: vec![k("RSA", Some("a")), k("RSA", Some("b")), k("EC", None)] };
        assert_eq!(find_key(&set, Some("b"), "RSA").unwrap().kid.as_deref(), Some("b"));
        assert!(find_key(&set, Some("b"), "EC").is_none());
        assert!(find_key(&set, None, "RSA").is_none(), "ambiguous without kid");
        assert!(find_key(&set, None, "EC").is_some());
    }
}
