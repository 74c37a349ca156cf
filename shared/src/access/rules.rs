//! User-token claims: what a verified token must say (pure; the signature is `token.rs`'s).

use super::model::{AccessPolicy, ConsumerUserId};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use serde_json::Value;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_MS: Millis = 30_000;

/// The user a token's claims name, if they are acceptable at `now`: `sub` present, `exp` present
/// and not past, `nbf` (if any) reached, `iss`/`aud` as the policy requires.
pub fn check_claims(claims: &Value, policy: &AccessPolicy, now: Millis) -> AppResult<ConsumerUserId> {
    let bad = |why: &str| AppError::Unauthorized(format!("user token refused: {why}"));
    let secs = |k: &str| claims.get(k).and_then(Value::as_f64).map(|s| (s * 1000.0) as Millis);
    let Some(exp) = secs("exp") else { return Err(bad("it has no 'exp' claim")) };
    if exp + LEEWAY_MS <= now {
        return Err(bad("it has expired"));
    }
    if secs("nbf").is_some_and(|nbf| nbf - LEEWAY_MS > now) {
        return Err(bad("it is not valid yet ('nbf')"));
    }
    if let Some(iss) = &policy.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
    {
        return Err(bad("wrong issuer ('iss')"));
    }
    if let Some(aud) = &policy.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == aud,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud.as_str())),
            _ => false,
        };
        if !ok {
            return Err(bad("wrong audience ('aud')"));
        }
    }
    let sub = claims.get("sub").and_then(Value::as_str).ok_or_else(|| bad("it has no 'sub' claim"))?;
    ConsumerUserId::parse(sub).map_err(|_| bad("its 'sub' is not a valid consumerUserId"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Millis = 1_800_000_000_000;

    #[test]
    fn claims_are_checked_with_injected_time() {
        let p = AccessPolicy::default();
        let ok = json!({"sub": "u1", "exp": NOW / 1000 + 60});
        assert_eq!(check_claims(&ok, &p, NOW).unwrap().as_str(), "u1");
        let expired = json!({"sub": "u1", "exp": NOW / 1000 - 31});
        assert!(check_claims(&expired, &p, NOW).unwrap_err().to_string().contains("expired"));
        // Within the leeway.
        assert!(check_claims(&json!({"sub": "u1", "exp": NOW / 1000 - 29}), &p, NOW).is_ok());
        assert!(check_claims(&json!({"sub": "u1"}), &p, NOW).unwrap_err().to_string().contains("exp"));
        assert!(check_claims(&json!({"exp": NOW / 1000 + 60}), &p, NOW).unwrap_err().to_string().contains("sub"));
        let early = json!({"sub": "u1", "exp": NOW / 1000 + 600, "nbf": NOW / 1000 + 60});
        assert!(check_claims(&early, &p, NOW).is_err());
        assert!(check_claims(&json!({"sub": " ", "exp": NOW / 1000 + 60}), &p, NOW).is_err());
    }

    #[test]
    fn issuer_and_audience_when_required() {
        let p = AccessPolicy { issuer: Some("me".into()), audience: Some("af".into()), ..Default::default() };
        let base = |iss: &str, aud: Value| json!({"sub": "u", "exp": NOW / 1000 + 60, "iss": iss, "aud": aud});
        assert!(check_claims(&base("me", json!("af")), &p, NOW).is_ok());
        assert!(check_claims(&base("me", json!(["x", "af"])), &p, NOW).is_ok());
        assert!(check_claims(&base("you", json!("af")), &p, NOW).is_err());
        assert!(check_claims(&base("me", json!("other")), &p, NOW).is_err());
        assert_eq!(check_claims(&base("you", json!("af")), &p, NOW).unwrap_err().code().as_str(), "Unauthorized");
    }

    #[test]
    fn consumer_user_ids_are_parsed() {
        assert!(ConsumerUserId::parse("user-42").is_ok());
        assert!(ConsumerUserId::parse("").is_err());
        assert!(ConsumerUserId::parse("a\u{0}b").is_err());
        assert!(ConsumerUserId::parse(&"x".repeat(257)).is_err());
        assert!(ConsumerUserId::parse(&"é".repeat(128)).is_ok());
        assert!(ConsumerUserId::parse(&"é".repeat(129)).is_err(), "256 bytes at most");
        assert!(ConsumerUserId::parse(" u").is_err());
    }
}
