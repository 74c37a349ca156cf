//! Configuration read once per process from the environment.

use crate::conversations::model::HistoryPolicy;
use crate::error::AppError;
use crate::media::model::MediaPolicy;
use crate::queue::model::QueuePolicy;
use crate::secrets::SecretsPolicy;
use crate::snapshots::model::SnapshotPolicy;
use crate::workers::model::WorkerPolicy;

/// Every domain's policy, read once per process from the environment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policies {
    pub queue: QueuePolicy,
    pub workers: WorkerPolicy,
    pub history: HistoryPolicy,
    pub secrets: SecretsPolicy,
    pub snapshots: SnapshotPolicy,
    pub media: MediaPolicy,
    pub access: crate::access::model::AccessPolicy,
    pub telegram: crate::identity::model::TelegramPolicy,
}

/// The Telegram Bot API's own base URL.
pub const DEFAULT_TELEGRAM_API_BASE: &str = "https://api.telegram.org";

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
    pub policy: Policies,
    /// Secrets Manager name prefix (`SECRETS_PREFIX`, default `agent-factory/`).
    pub secrets_prefix: String,
    /// Send Secrets Manager calls here (`SECRETSMANAGER_ENDPOINT`, e.g. moto_server).
    pub secrets_endpoint: Option<String>,
    /// The bucket for snapshot archives and media (`BLOB_BUCKET`).
    pub blob_bucket: Option<String>,
    /// Send S3 calls here (`S3_ENDPOINT`, e.g. moto_server; path-style addressing).
    pub s3_endpoint: Option<String>,
    /// This deployment's id (`DEPLOYMENT_ID`, default `local`): tagged on every machine and
    /// volume it creates, so cleanup and orphan detection never touch another deployment's.
    pub deployment_id: String,
    /// Fly Machines API base URL (`FLY_API_BASE`, default `https://api.machines.dev/v1`).
    pub fly_api_base: String,
    /// Telegram Bot API base URL (`TELEGRAM_API_BASE`, default `https://api.telegram.org`).
    pub telegram_api_base: String,
    /// This deployment's public base URL (`PUBLIC_BASE_URL`, the HTTP API's URL): where
    /// `configureTelegramWebhook` points Telegram when no URL is passed.
    pub public_base_url: Option<String>,
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

fn env_bool(get: &dyn Fn(&str) -> Option<String>, key: &str, default: bool) -> Result<bool, AppError> {
    match get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) if v == "true" || v == "1" => Ok(true),
        Some(v) if v == "false" || v == "0" => Ok(false),
        Some(v) => Err(AppError::validation(format!("environment variable {key}='{v}' is not true or false"))),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, AppError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads: `TABLE_PREFIX` (default `agent-factory-`), `QUEUE_TABLE`, `WORKERS_TABLE`,
    /// `CONTROL_TABLE`, `DYNAMODB_ENDPOINT`, `LEASE_MS`, `STALE_AFTER_MS`, `MAX_ATTEMPTS`,
    /// `DONE_RETENTION_DAYS`, `READY_SHARDS`, `DEPLOYMENT_ID`, `FLY_API_BASE`, ...
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
        let d = Policies::default();
        let policy = Policies {
            queue: QueuePolicy {
                lease_ms: env_num(get, "LEASE_MS", d.queue.lease_ms)?,
                default_max_attempts: env_num(get, "MAX_ATTEMPTS", d.queue.default_max_attempts)?,
                done_retention_ms: env_num(get, "DONE_RETENTION_DAYS", 7i64)? * 86_400_000,
                ready_shards: env_num(get, "READY_SHARDS", d.queue.ready_shards)?.clamp(1, 256),
                ..d.queue
            },
            workers: WorkerPolicy {
                stale_after_ms: env_num(get, "STALE_AFTER_MS", d.workers.stale_after_ms)?,
                idle_timeout_ms: env_num(get, "WORKER_IDLE_TIMEOUT_MS", d.workers.idle_timeout_ms)?,
                auth_cache_ms: env_num(get, "WORKER_AUTH_CACHE_MS", d.workers.auth_cache_ms)?,
            },
            secrets: SecretsPolicy { cache_ms: env_num(get, "SECRETS_CACHE_MS", d.secrets.cache_ms)? },
            snapshots: SnapshotPolicy {
                retention_ms: env_num(get, "SNAPSHOT_RETENTION_DAYS", 7i64)? * 86_400_000,
                max_bytes: env_num(get, "SNAPSHOT_MAX_BYTES", d.snapshots.max_bytes)?,
                ..d.snapshots
            },
            history: d.history,
            media: d.media,
            access: crate::access::model::AccessPolicy {
                user_token_secret_ref: get("USER_TOKEN_SECRET_REF")
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty()),
                jwks_url: get("USER_TOKEN_JWKS_URL").map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
                issuer: get("USER_TOKEN_ISSUER").map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
                audience: get("USER_TOKEN_AUDIENCE").map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
            },
            telegram: crate::identity::model::TelegramPolicy {
                require_binding: env_bool(get, "TELEGRAM_REQUIRE_BINDING", d.telegram.require_binding)?,
                replies: env_bool(get, "TELEGRAM_REPLIES", d.telegram.replies)?,
                attempts_per_chat: env_num(get, "PAIRING_ATTEMPTS_PER_CHAT", d.telegram.attempts_per_chat)?,
                attempts_per_bot: env_num(get, "PAIRING_ATTEMPTS_PER_BOT", d.telegram.attempts_per_bot)?,
                ..d.telegram
            },
        };
        if policy.queue.lease_ms <= 0 || policy.workers.stale_after_ms <= 0 {
            return Err(AppError::validation("LEASE_MS and STALE_AFTER_MS must be positive"));
        }
        if policy.workers.idle_timeout_ms <= 0 || policy.workers.auth_cache_ms < 0 || policy.secrets.cache_ms < 0 {
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
            deployment_id: opt("DEPLOYMENT_ID").unwrap_or_else(|| "local".to_string()),
            fly_api_base: opt("FLY_API_BASE").unwrap_or_else(|| "https://api.machines.dev/v1".to_string()),
            telegram_api_base: opt("TELEGRAM_API_BASE").unwrap_or_else(|| DEFAULT_TELEGRAM_API_BASE.to_string()),
            public_base_url: opt("PUBLIC_BASE_URL"),
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
        assert_eq!(c.policy.queue.lease_ms, 360_000);
        assert_eq!(c.policy.workers.stale_after_ms, 420_000);
        assert_eq!(c.policy.queue.default_max_attempts, 5);
        assert!(c.dynamodb_endpoint.is_none());
        assert_eq!(c.telegram_api_base, "https://api.telegram.org");
        assert!(c.public_base_url.is_none());
        assert!(!c.policy.telegram.require_binding && c.policy.telegram.replies);
    }

    #[test]
    fn telegram_settings() {
        let c = cfg(&[
            ("TELEGRAM_API_BASE", "http://127.0.0.1:9/"),
            ("PUBLIC_BASE_URL", "https://x.example"),
            ("TELEGRAM_REQUIRE_BINDING", "true"),
        ])
        .unwrap();
        assert_eq!(c.telegram_api_base, "http://127.0.0.1:9/");
        assert_eq!(c.public_base_url.as_deref(), Some("https://x.example"));
        assert!(c.policy.telegram.require_binding);
        assert!(cfg(&[("TELEGRAM_REPLIES", "maybe")]).is_err());
    }

    #[test]
    fn overrides_and_bad_numbers() {
        let c = cfg(&[("TABLE_PREFIX", "t-"), ("WORKERS_TABLE", "w"), ("LEASE_MS", "1000")]).unwrap();
        assert_eq!(c.tables.queue, "t-queue");
        assert_eq!(c.tables.workers, "w");
        assert_eq!(c.policy.queue.lease_ms, 1000);
        let e = cfg(&[("LEASE_MS", "soon")]).unwrap_err();
        assert!(e.to_string().contains("LEASE_MS"));
        assert!(cfg(&[("LEASE_MS", "-5")]).is_err());
    }
}
