//! Configuration read once per process from the environment.

use crate::error::AppError;
use crate::store::schema;

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
    /// `<prefix>queue`, `<prefix>workers`, `<prefix>control`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            queue: format!("{prefix}{}", schema::QUEUE),
            workers: format!("{prefix}{}", schema::WORKERS),
            control: format!("{prefix}{}", schema::CONTROL),
        }
    }

    pub fn name_of(&self, logical: &str) -> &str {
        match logical {
            schema::QUEUE => &self.queue,
            schema::WORKERS => &self.workers,
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
            ..d
        };
        if policy.lease_ms <= 0 || policy.stale_after_ms <= 0 {
            return Err(AppError::validation("LEASE_MS and STALE_AFTER_MS must be positive"));
        }
        Ok(Self { tables, dynamodb_endpoint: get("DYNAMODB_ENDPOINT").filter(|v| !v.is_empty()), policy })
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
