//! The secret store: every secret ref (`fly.apiToken`, `telegram.botToken.<agentKey>`,
//! `agent-bridge.*`, ...) lives in AWS Secrets Manager under one name prefix per deployment
//! (`adapters/secrets_manager.rs`), or, for the local runner, in a file under its data directory (`adapters/secrets_file.rs`).
//! [`Secrets`] wraps a backend with a short-lived per-process cache and the ref rules.
//!
//! Values are [`SecretValue`]s: their `Debug` is redacted and they have no `Display`, so a
//! value cannot end up in a log line or an error message by accident.

pub mod ops;

use crate::clock::{Millis, SharedClock};
use crate::error::{AppError, AppResult};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub use crate::BoxFut;

/// How long secret values stay in a process's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretsPolicy {
    pub cache_ms: Millis,
}

impl Default for SecretsPolicy {
    fn default() -> Self {
        Self { cache_ms: 60_000 }
    }
}

/// A secret's plaintext. Redacted in `Debug`; read it with [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(v: impl Into<String>) -> Self {
        Self(v.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// What is known about a ref, never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub secret_ref: String,
    /// True when the ref has an active value.
    pub has_active: bool,
    /// The backend's id of the active version (Secrets Manager's VersionId).
    pub version: Option<String>,
    /// When the active version was written (epoch ms), when the backend knows.
    pub updated_at: Option<Millis>,
    /// Non-secret metadata given at import (e.g. `telegramBotId`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl SecretInfo {
    pub fn missing(secret_ref: &str) -> Self {
        Self {
            secret_ref: secret_ref.to_string(),
            has_active: false,
            version: None,
            updated_at: None,
            metadata: BTreeMap::new(),
        }
    }
}

/// A place secrets are kept. Implementations never log or return values in errors.
pub trait SecretBackend: Send + Sync + std::fmt::Debug {
    /// The active value of `secret_ref`, or `None` when the ref has none (never created, or deleted).
    fn get<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<Option<SecretValue>>>;
    /// Create the ref, or add a new version that becomes the active one (the previous one stays in
    /// the backend's history). Works again after [`SecretBackend::delete`].
    fn put<'a>(
        &'a self,
        secret_ref: &'a str,
        value: &'a SecretValue,
        metadata: &'a BTreeMap<String, String>,
    ) -> BoxFut<'a, AppResult<SecretInfo>>;
    /// Status of one ref (`SecretInfo::missing` when there is none).
    fn info<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<SecretInfo>>;
    /// Deactivate the ref: afterwards `get` returns `None`. Returns whether it had an active value.
    fn delete<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<bool>>;
}

/// Longest accepted secret ref.
pub const MAX_REF_LEN: usize = 200;
/// Largest accepted secret value (Secrets Manager's limit is 64 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A ref is 1..=200 characters of `A-Z a-z 0-9 . _ -` (spec W-3, widened to the mixed-case
/// names the original uses, e.g. `telegram.botToken.<agentKey>`).
pub fn validate_ref(r: &str) -> AppResult<()> {
    if r.is_empty() || r.len() > MAX_REF_LEN {
        return Err(AppError::validation(format!("secretRef must be 1 to {MAX_REF_LEN} characters")));
    }
    if let Some(c) = r.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(AppError::validation(format!(
            "secretRef '{}' contains '{c}'; allowed: letters, digits, '.', '_' and '-'",
            crate::ids::truncate(r, 60)
        )));
    }
    Ok(())
}

/// A backend with a short per-process cache of values (positive and negative).
#[derive(Debug, Clone)]
pub struct Secrets {
    backend: Arc<dyn SecretBackend>,
    clock: SharedClock,
    ttl_ms: Millis,
    cache: Arc<Mutex<ValueCache>>,
}

/// Per ref: when it was read, and what was read.
type ValueCache = HashMap<String, (Millis, Option<SecretValue>)>;

impl Secrets {
    pub fn new(backend: Arc<dyn SecretBackend>, clock: SharedClock, ttl_ms: Millis) -> Self {
        Self { backend, clock, ttl_ms, cache: Arc::new(Mutex::new(HashMap::new())) }
    }

    pub fn backend(&self) -> &Arc<dyn SecretBackend> {
        &self.backend
    }

    /// The active value, from the cache when it is younger than the TTL.
    pub async fn get(&self, secret_ref: &str) -> AppResult<Option<SecretValue>> {
        let now = self.clock.now_ms();
        if let Some((at, v)) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(secret_ref)
            && now - *at < self.ttl_ms
        {
            return Ok(v.clone());
        }
        let v = self.backend.get(secret_ref).await?;
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(secret_ref.to_string(), (now, v.clone()));
        Ok(v)
    }

    /// The first ref of `candidates` (in order) with an active value, and that value.
    pub async fn first_active(&self, candidates: &[String]) -> AppResult<Option<(String, SecretValue)>> {
        for r in candidates {
            if let Some(v) = self.get(r).await? {
                return Ok(Some((r.clone(), v)));
            }
        }
        Ok(None)
    }

    /// Drop a ref from this process's cache (after a write through this process).
    pub fn forget(&self, secret_ref: &str) {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(secret_ref);
    }
}
