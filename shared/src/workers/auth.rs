//! Worker authentication: one bearer token per worker, minted by `mintWorkerToken` (reconcile at
//! spawn, or an operator for a self-hosted worker). Only the token's SHA-256 is stored, on the
//! worker row; re-minting replaces it, `revokeWorkerToken` removes it, and a stopped worker's
//! token stops working. The workerId of every worker call comes from the token.
//!
//! Token format: `afw1.<hex of the workerId>.<64 hex random>` (256 random bits). The workerId
//! is inside so that verifying is one GetItem by key.

use crate::adapters::dynamo::Store;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::workers::model::{WorkerItem, WorkerStatus};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

const PREFIX: &str = "afw1";

/// A freshly minted token. Shown once; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerToken(String);

impl WorkerToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerToken(<redacted>)")
    }
}

/// A new random token for `worker_id`.
pub fn new_token(worker_id: &str) -> WorkerToken {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("operating system randomness");
    WorkerToken(format!("{PREFIX}.{}.{}", hex::encode(worker_id.as_bytes()), hex::encode(secret)))
}

/// Lowercase hex SHA-256 of a token: what the worker row stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The workerId a token names, if it is well formed.
pub fn token_worker_id(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (p, w, s) = (parts.next()?, parts.next()?, parts.next()?);
    if p != PREFIX || parts.next().is_some() || s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = String::from_utf8(hex::decode(w).ok()?).ok()?;
    (!id.is_empty()).then_some(id)
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

pub use super::model::Principal;

/// A principal taken from a token but not yet checked against its worker row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed(Principal);

impl Claimed {
    pub fn worker_id(&self) -> &str {
        &self.0.worker_id
    }

    /// The principal, once `row` (the worker row, read by the caller) accepts the token.
    pub fn verify(self, row: Option<&WorkerItem>) -> AppResult<Principal> {
        check_row(row, &self.0.token_hash)?;
        Ok(self.0)
    }
}

/// The worker row when it accepts the token, else why not (pure; also used by the write paths).
pub fn check_row<'a>(row: Option<&'a WorkerItem>, hash: &str) -> AppResult<&'a WorkerItem> {
    let Some(w) = row else {
        return Err(AppError::Unauthorized("unknown worker: mint a token with mintWorkerToken".into()));
    };
    // First: entering `stopped` drops the token, and the caller should learn why it stopped working.
    if w.status == WorkerStatus::Stopped {
        return Err(AppError::Unauthorized(format!("worker '{}' is stopped; its token no longer works", w.worker_id)));
    }
    let stored = w.token_hash.as_deref().unwrap_or("");
    if stored.is_empty() || !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
        return Err(AppError::Unauthorized(format!("the token of worker '{}' was revoked or replaced", w.worker_id)));
    }
    Ok(w)
}

/// Verifies bearer tokens against worker rows, trusting a verified token for `cache_ms`.
#[derive(Debug, Default)]
pub struct Authenticator {
    cache: Mutex<HashMap<String, (Millis, String)>>,
}

impl Authenticator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token of an `Authorization: Bearer <token>` header value.
    fn bearer(header: Option<&str>) -> AppResult<&str> {
        let h = header.ok_or_else(|| {
            AppError::Unauthorized("missing bearer token (Authorization: Bearer <worker token>)".into())
        })?;
        let t =
            h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")).map(str::trim).ok_or_else(|| {
                AppError::Unauthorized("the Authorization header must be 'Bearer <worker token>'".into())
            })?;
        Ok(t)
    }

    /// Who a call says it is (the token's worker), not yet checked against the worker row: only
    /// for a caller that reads the row itself and passes it to [`check_row`] (hydration does, in
    /// the same request as the message), then calls [`Authenticator::remember`].
    pub fn claimed(header: Option<&str>) -> AppResult<Claimed> {
        let token = Self::bearer(header)?;
        let worker_id = token_worker_id(token)
            .ok_or_else(|| AppError::Unauthorized("malformed worker token (expected afw1.<id>.<secret>)".into()))?;
        // A workerId no worker can have (over-long, control characters) is refused before any read.
        let worker_id = crate::ids::WorkerId::parse(&worker_id)
            .map_err(|e| AppError::validation(format!("the worker token names an invalid workerId: {e}")))?
            .into_string();
        Ok(Claimed(Principal { worker_id, token_hash: token_hash(token) }))
    }

    /// Trust a principal verified by the caller (see [`Authenticator::claimed`]) for the cache time.
    pub fn remember(&self, p: &Principal, now: Millis, ttl: Millis) {
        if ttl > 0 {
            let mut c = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(p.token_hash.clone(), (now, p.worker_id.clone()));
        }
    }

    /// Authenticate a call, trusting a token verified less than `WORKER_AUTH_CACHE_MS` ago.
    pub async fn authenticate(&self, store: &Store, header: Option<&str>) -> AppResult<Principal> {
        let Claimed(p) = Self::claimed(header)?;
        let ttl = store.policy.workers.auth_cache_ms;
        if ttl > 0
            && let Some((at, id)) =
                self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&p.token_hash)
            && store.now() - *at < ttl
            && *id == p.worker_id
        {
            return Ok(p);
        }
        Ok(self.authenticate_row(store, header).await?.0)
    }

    /// Authenticate by reading the worker row (never the cache), and hand the row back: for the
    /// routes that need it anyway, so it is read once. A verified token is then remembered.
    pub async fn authenticate_row(&self, store: &Store, header: Option<&str>) -> AppResult<(Principal, WorkerItem)> {
        let Claimed(p) = Self::claimed(header)?;
        let row = store.get_worker(&p.worker_id).await?;
        if let Err(e) = check_row(row.as_ref(), &p.token_hash) {
            self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&p.token_hash);
            return Err(e);
        }
        let Some(row) = row else {
            return Err(AppError::Unauthorized("unknown worker: mint a token with mintWorkerToken".into()));
        };
        self.remember(&p, store.now(), store.policy.workers.auth_cache_ms);
        Ok((p, row))
    }

    /// Forget every cached verification (after a revoke through this process).
    pub fn clear(&self) {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_worker_and_hash_stably() {
        let t = new_token("afw-1:x y");
        assert_eq!(token_worker_id(t.expose()).as_deref(), Some("afw-1:x y"));
        assert_eq!(token_hash(t.expose()), token_hash(t.expose()));
        assert_eq!(token_hash(t.expose()).len(), 64);
        assert_ne!(new_token("w").expose(), new_token("w").expose(), "random part differs");
        assert!(!format!("{t:?}").contains(t.expose()), "Debug hides the token");
        for bad in ["", "afw1", "afw1.77.zz", "afw2.77.".to_string().as_str(), "afw1..abc", "afw1.77.00.00"] {
            assert_eq!(token_worker_id(bad), None, "{bad}");
        }
        let mut tampered = t.expose().to_string();
        tampered.push('0');
        assert_eq!(token_worker_id(&tampered), None, "65 hex digits");
    }

    #[test]
    fn rows_refuse_unknown_revoked_replaced_and_stopped() {
        let t = new_token("w");
        let h = token_hash(t.expose());
        let mut row = crate::workers::rules::apply_upsert(
            None,
            &crate::workers::model::UpsertWorkerArgs::status("w", "fly", WorkerStatus::Active),
            1,
        )
        .unwrap();
        assert!(check_row(None, &h).is_err());
        assert!(check_row(Some(&row), &h).is_err(), "no token minted");
        row.token_hash = Some(h.clone());
        assert!(check_row(Some(&row), &h).is_ok());
        assert!(check_row(Some(&row), &token_hash(new_token("w").expose())).is_err(), "replaced");
        row.status = WorkerStatus::Draining;
        assert!(check_row(Some(&row), &h).is_ok(), "a draining worker still completes and snapshots");
        row.status = WorkerStatus::Stopped;
        let e = check_row(Some(&row), &h).unwrap_err();
        assert_eq!(e.code().as_str(), "Unauthorized");
        assert!(e.to_string().contains("stopped"));
        row.token_hash = None;
        assert!(check_row(Some(&row), &h).unwrap_err().to_string().contains("stopped"), "stopping drops the hash");
    }

    #[test]
    fn bearer_parsing() {
        assert!(Authenticator::bearer(None).is_err());
        assert!(Authenticator::bearer(Some("Basic abc")).is_err());
        assert_eq!(Authenticator::bearer(Some("Bearer  afw1.x.y ")).unwrap(), "afw1.x.y");
        let long = format!("Bearer {}", new_token(&"w".repeat(3_000)).expose());
        assert_eq!(Authenticator::claimed(Some(&long)).unwrap_err().code().as_str(), "ValidationError");
    }
}
