//! HS256 user tokens (compact JWS): the signature check. Only `alg: HS256` is accepted (never
//! `none`, never an algorithm the token picks for itself).

use super::model::{AccessPolicy, ConsumerUserId};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde_json::Value;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The user `token` names, if it is an HS256 token signed with `key` whose claims are acceptable.
/// Errors are `Unauthorized` and never repeat the token.
pub fn verify(token: &str, key: &[u8], policy: &AccessPolicy, now: Millis) -> AppResult<ConsumerUserId> {
    let bad = |why: &str| AppError::Unauthorized(format!("user token refused: {why}"));
    if token.len() > 8192 {
        return Err(bad("it is longer than 8192 bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("it is not a compact JWS (header.payload.signature)"));
    };
    let json = |part: &str, what: &str| -> AppResult<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| bad(&format!("its {what} is not base64url")))?;
        serde_json::from_slice(&bytes).map_err(|_| bad(&format!("its {what} is not JSON")))
    };
    let header = json(h, "header")?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(bad("only HS256 tokens are accepted"));
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| bad("its signature is not base64url"))?;
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| AppError::internal("user-token key unusable"))?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&sig).map_err(|_| bad("bad signature"))?;
    super::rules::check_claims(&json(p, "payload")?, policy, now)
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

    #[test]
    fn signed_tokens_verify_and_tampered_ones_do_not() {
        let p = AccessPolicy::default();
        let t = sign(&json!({"sub": "u1", "exp": NOW / 1000 + 60}), b"k1").unwrap();
        assert_eq!(verify(&t, b"k1", &p, NOW).unwrap().as_str(), "u1");
        assert!(verify(&t, b"k2", &p, NOW).unwrap_err().to_string().contains("bad signature"));
        // Another user's claims under the first signature.
        let (h, _, s) = {
            let v: Vec<&str> = t.split('.').collect();
            (v[0], v[1], v[2])
        };
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"u2","exp":9999999999}"#);
        assert!(verify(&format!("{h}.{forged}.{s}"), b"k1", &p, NOW).is_err());
        // alg none, garbage, wrong shape.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), forged);
        assert!(verify(&none, b"k1", &p, NOW).unwrap_err().to_string().contains("HS256"));
        for junk in ["", "a.b", "a.b.c.d", "!!.??.##", &"x".repeat(9000)] {
            let e = verify(junk, b"k1", &p, NOW).unwrap_err();
            assert_eq!(e.code().as_str(), "Unauthorized", "{junk}");
            assert!(junk.is_empty() || junk.len() > 100 || !e.to_string().contains(junk));
        }
    }
}
