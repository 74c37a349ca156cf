//! Configuration read once per process from the environment.

use crate::error::AppError;

/// Queue, lease and retry policy. Defaults are the original's constants (spec §2).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePolicy {
    pub lease_ms: i64,
    pub stale_after_ms: i64,
    pub default_priority: f64,
    pub max_priority: f64,
    pub default_max_attempts: u32,
    pub retry_base_delay_ms: i64,
    pub retry_max_delay_ms: i64,
    pub retry_jitter_ratio: f64,
    /// How long done messages stay readable before DynamoDB TTL removes them.
    pub done_retention_ms: i64,
    /// How long dead-lettered messages stay (for inspection and redrive).
    pub dead_letter_retention_ms: i64,
    /// How far ahead `scheduledFor` may be.
    pub max_schedule_ahead_ms: i64,
    /// Partitions of the `ready` index (constant per deployment).
    pub ready_shards: u32,
    /// Largest accepted payload, as JSON bytes (a DynamoDB item stops at 400 KB).
    pub max_payload_bytes: usize,
    /// An idle worker (no job) is told to stop this long after its last claim or completion.
    pub idle_timeout_ms: i64,
    /// How long a process trusts a verified worker token before reading the worker row again
    /// (writes always re-check the token inside their transaction).
    pub auth_cache_ms: i64,
    /// How long secret values stay in a process's cache.
    pub secrets_cache_ms: i64,
    /// Ready snapshots are kept this long after finalize, then expired (object deleted).
    pub snapshot_retention_ms: i64,
    /// An upload not finalized within this time fails (its URL expires at the same moment).
    pub snapshot_upload_timeout_ms: i64,
    /// Largest snapshot archive. Finalize reads the object once to verify it inside the claim
    /// function's 30 s, so raise this together with that function's memory and timeout.
    pub snapshot_max_bytes: u64,
    /// Default retention of media (message config `telegramAttachmentRetentionMs` overrides it).
    pub media_retention_ms: i64,
    /// Telegram bots can download at most 20 MB: larger media are refused.
    pub media_max_bytes: u64,
    /// Lifetime of presigned download URLs handed to workers.
    pub download_url_ttl_ms: i64,
    /// History entries in the hydration bundle when the cache key matches (spec: 64) ...
    pub history_window: i32,
    /// ... and the bound on the "full history" the original returns otherwise.
    pub full_history_max: i32,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            lease_ms: 360_000,
            stale_after_ms: 420_000,
            default_priority: 50.0,
            max_priority: 100.0,
            default_max_attempts: 5,
            retry_base_delay_ms: 1_000,
            retry_max_delay_ms: 120_000,
            retry_jitter_ratio: 0.1,
            done_retention_ms: 7 * 86_400_000,
            dead_letter_retention_ms: 30 * 86_400_000,
            max_schedule_ahead_ms: 366 * 86_400_000,
            ready_shards: 1,
            max_payload_bytes: 256 * 1024,
            idle_timeout_ms: 1_800_000,
            auth_cache_ms: 10_000,
            secrets_cache_ms: 60_000,
            snapshot_retention_ms: 7 * 86_400_000,
            snapshot_upload_timeout_ms: 3_600_000,
            snapshot_max_bytes: 512 * 1024 * 1024,
            media_retention_ms: 7 * 86_400_000,
            media_max_bytes: 20 * 1024 * 1024,
            download_url_ttl_ms: 900_000,
            history_window: 64,
            full_history_max: 1000,
        }
    }
}

/// Physical table names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub queue: String,
    pub workers: String,
    pub control: String,
}

impl TableNames {
    /// Logical table names (the tables' definitions are in `adapters/dynamo/schema.rs`).
    pub const QUEUE: &str = "queue";
    pub const WORKERS: &str = "workers";
    pub const CONTROL: &str = "control";

    /// `<prefix>queue`, `<prefix>workers`, `<prefix>control`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            queue: format!("{prefix}{}", Self::QUEUE),
            workers: format!("{prefix}{}", Self::WORKERS),
            control: format!("{prefix}{}", Self::CONTROL),
        }
    }

    pub fn name_of(&self, logical: &str) -> &str {
        match logical {
            Self::QUEUE => &self.queue,
            Self::WORKERS => &self.workers,
            _ => &self.control,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tables: TableNames,
    /// Send DynamoDB calls here instead of AWS (DynamoDB Local, dynoxide).
    pub dynamodb_endpoint: Option<String>,
    pub policy: QueuePolicy,
    /// Secrets Manager name prefix (`SECRETS_PREFIX`, default `agent-factory/`).
    pub secrets_prefix: String,
    /// Send Secrets Manager calls here (`SECRETSMANAGER_ENDPOINT`, e.g. moto_server).
    pub secrets_endpoint: Option<String>,
    /// The bucket for snapshot archives and media (`BLOB_BUCKET`).
    pub blob_bucket: Option<String>,
    /// Send S3 calls here (`S3_ENDPOINT`, e.g. moto_server; path-style addressing).
    pub s3_endpoint: Option<String>,
}

fn env_num<T: std::str::FromStr>(get: &dyn Fn(&str) -> Option<String>, key: &str, default: T) -> Result<T, AppError> {
    match get(key) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| AppError::validation(format!("environment variable {key}='{v}' is not a number"))),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, AppError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads: `TABLE_PREFIX` (default `agent-factory-`), `QUEUE_TABLE`, `WORKERS_TABLE`,
    /// `CONTROL_TABLE`, `DYNAMODB_ENDPOINT`, `LEASE_MS`, `STALE_AFTER_MS`, `MAX_ATTEMPTS`,
    /// `DONE_RETENTION_DAYS`, `READY_SHARDS`.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, AppError> {
        let prefix = get("TABLE_PREFIX").unwrap_or_else(|| "agent-factory-".to_string());
        let mut tables = TableNames::with_prefix(&prefix);
        if let Some(v) = get("QUEUE_TABLE").filter(|v| !v.is_empty()) {
            tables.queue = v;
        }
        if let Some(v) = get("WORKERS_TABLE").filter(|v| !v.is_empty()) {
            tables.workers = v;
        }
        if let Some(v) = get("CONTROL_TABLE").filter(|v| !v.is_empty()) {
            tables.control = v;
        }
        let d = QueuePolicy::default();
        let policy = QueuePolicy {
            lease_ms: env_num(get, "LEASE_MS", d.lease_ms)?,
            stale_after_ms: env_num(get, "STALE_AFTER_MS", d.stale_after_ms)?,
            default_max_attempts: env_num(get, "MAX_ATTEMPTS", d.default_max_attempts)?,
            done_retention_ms: env_num(get, "DONE_RETENTION_DAYS", 7i64)? * 86_400_000,
            ready_shards: env_num(get, "READY_SHARDS", d.ready_shards)?.clamp(1, 64),
            idle_timeout_ms: env_num(get, "WORKER_IDLE_TIMEOUT_MS", d.idle_timeout_ms)?,
            auth_cache_ms: env_num(get, "WORKER_AUTH_CACHE_MS", d.auth_cache_ms)?,
            secrets_cache_ms: env_num(get, "SECRETS_CACHE_MS", d.secrets_cache_ms)?,
            snapshot_retention_ms: env_num(get, "SNAPSHOT_RETENTION_DAYS", 7i64)? * 86_400_000,
            snapshot_max_bytes: env_num(get, "SNAPSHOT_MAX_BYTES", d.snapshot_max_bytes)?,
            ..d
        };
        if policy.lease_ms <= 0 || policy.stale_after_ms <= 0 {
            return Err(AppError::validation("LEASE_MS and STALE_AFTER_MS must be positive"));
        }
        if policy.idle_timeout_ms <= 0 || policy.auth_cache_ms < 0 || policy.secrets_cache_ms < 0 {
            return Err(AppError::validation(
                "WORKER_IDLE_TIMEOUT_MS must be positive; WORKER_AUTH_CACHE_MS and SECRETS_CACHE_MS must not be negative",
            ));
        }
        let opt = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Ok(Self {
            tables,
            dynamodb_endpoint: opt("DYNAMODB_ENDPOINT"),
            policy,
            secrets_prefix: opt("SECRETS_PREFIX").unwrap_or_else(|| "agent-factory/".to_string()),
            secrets_endpoint: opt("SECRETSMANAGER_ENDPOINT"),
            blob_bucket: opt("BLOB_BUCKET"),
            s3_endpoint: opt("S3_ENDPOINT"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, AppError> {
        let m: HashMap<String, String> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Config::from_lookup(&|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.tables.queue, "agent-factory-queue");
        assert_eq!(c.policy.lease_ms, 360_000);
        assert_eq!(c.policy.stale_after_ms, 420_000);
        assert_eq!(c.policy.default_max_attempts, 5);
        assert!(c.dynamodb_endpoint.is_none());
    }

    #[test]
    fn overrides_and_bad_numbers() {
        let c = cfg(&[("TABLE_PREFIX", "t-"), ("WORKERS_TABLE", "w"), ("LEASE_MS", "1000")]).unwrap();
        assert_eq!(c.tables.queue, "t-queue");
        assert_eq!(c.tables.workers, "w");
        assert_eq!(c.policy.lease_ms, 1000);
        let e = cfg(&[("LEASE_MS", "soon")]).unwrap_err();
        assert!(e.to_string().contains("LEASE_MS"));
        assert!(cfg(&[("LEASE_MS", "-5")]).is_err());
    }
}
