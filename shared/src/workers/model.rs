//! Worker rows' argument and result types.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};

/// `upsertWorkerState` arguments (spec §14; `nowMs` refused).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpsertWorkerArgs {
    pub worker_id: String,
    pub provider: String,
    pub status: WorkerStatus,
    pub load: i64,
    #[serde(default)]
    pub scheduled_shutdown_at: Option<Millis>,
    #[serde(default)]
    pub stopped_at: Option<Millis>,
    #[serde(default)]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub app_name: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub volume_id: Option<String>,
    /// Omitted: keep; `null`: clear; object: replace.
    #[serde(default, deserialize_with = "double_option")]
    pub assignment: Option<Option<Assignment>>,
    #[serde(default)]
    pub clear_last_snapshot_id: bool,
    #[serde(default)]
    pub clear_machine_ref: bool,
    #[serde(default)]
    pub clear_volume_id: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assignment {
    pub conversation_id: String,
    pub agent_key: String,
    pub lease_id: String,
    #[serde(default)]
    pub assigned_at: Option<Millis>,
}

impl UpsertWorkerArgs {
    /// A status change that sets nothing else (load 0; every optional field omitted).
    pub fn status(worker_id: &str, provider: &str, status: WorkerStatus) -> Self {
        Self {
            worker_id: worker_id.into(),
            provider: provider.into(),
            status,
            load: 0,
            scheduled_shutdown_at: None,
            stopped_at: None,
            machine_id: None,
            app_name: None,
            region: None,
            volume_id: None,
            assignment: None,
            clear_last_snapshot_id: false,
            clear_machine_ref: false,
            clear_volume_id: false,
        }
    }
}

fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `mintWorkerToken` arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MintTokenArgs {
    pub worker_id: String,
    /// Provider of a worker registered by this call (default `self-hosted`).
    #[serde(default)]
    pub provider: Option<String>,
}

/// A minted token: shown once, never stored.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MintedToken {
    pub worker_id: String,
    pub token: String,
    pub issued_at: Millis,
    pub status: WorkerStatus,
}

/// What a worker should do now (spec §6.9, returning the reasons the original only logs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlState {
    pub should_stop: bool,
    /// `continue`; `drain` = stop claiming, snapshot, exit; `exit` = exit now (nothing to save).
    pub action: &'static str,
    /// `missing_worker`, `status_<status>`, `stale_heartbeat`, `scheduled_shutdown_due`, `idle_timeout`.
    pub reasons: Vec<String>,
    pub status: Option<WorkerStatus>,
    pub load: i64,
    pub heartbeat_at: Option<Millis>,
    /// The heartbeat goes stale at this instant unless the worker calls heartbeat again.
    pub stale_at: Option<Millis>,
    /// When an idle worker (load 0) is told to stop.
    pub idle_deadline: Option<Millis>,
    pub now: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    Active,
    Draining,
    Stopping,
    Stopped,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Active => "active",
            WorkerStatus::Draining => "draining",
            WorkerStatus::Stopping => "stopping",
            WorkerStatus::Stopped => "stopped",
        }
    }

    /// The statuses a worker may be in before moving to `self` (spec §5.2).
    pub fn allowed_from(self) -> &'static [WorkerStatus] {
        match self {
            WorkerStatus::Active => &[WorkerStatus::Active],
            WorkerStatus::Draining => &[WorkerStatus::Active, WorkerStatus::Draining],
            WorkerStatus::Stopping => &[WorkerStatus::Draining, WorkerStatus::Stopping],
            WorkerStatus::Stopped => &[WorkerStatus::Stopping, WorkerStatus::Stopped],
        }
    }
}

/// A worker row (workers table, key `workerId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerItem {
    pub worker_id: String,
    pub provider: String,
    pub status: WorkerStatus,
    /// In-flight jobs. Stored as a running sum (it may dip below zero when a lease is recovered
    /// by someone else); always read through [`WorkerItem::load`].
    #[serde(default)]
    pub load: i64,
    pub heartbeat_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_claim_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_complete_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_shutdown_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_agent_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Millis>,
    /// When reconcile moved the worker to `draining` (base of the drain deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_started_at: Option<Millis>,
    /// When the row was first written (mint, spawn or upsert); base of the idle deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Millis>,
    /// Lowercase hex SHA-256 of the worker's bearer token; the token itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_issued_at: Option<Millis>,
    /// DynamoDB TTL (epoch seconds), set only on `stopped` rows: [`STOPPED_RETENTION_MS`] after
    /// the stop, so the history of stopped workers does not grow without bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

/// How long a `stopped` worker row is kept (for `listWorkers`, audits) before DynamoDB's TTL
/// deletes it.
pub const STOPPED_RETENTION_MS: Millis = 30 * 86_400_000;

/// The `ttl` of a row stopped at `stopped_at`.
pub fn stopped_ttl(stopped_at: Millis) -> i64 {
    (stopped_at + STOPPED_RETENTION_MS).div_euclid(1000)
}

impl WorkerItem {
    pub fn load(&self) -> i64 {
        self.load.max(0)
    }
}

/// Worker liveness and authentication policy.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPolicy {
    /// A worker whose last news (claim, heartbeat, complete, idle heartbeat) is older than this
    /// is stale: its sticky claim on a conversation lapses and its control state says so.
    pub stale_after_ms: i64,
    /// An idle worker (no job) is told to stop this long after its last claim or completion.
    pub idle_timeout_ms: i64,
    /// How long a process trusts a verified worker token before reading the worker row again
    /// (writes always re-check the token inside their transaction).
    pub auth_cache_ms: i64,
}

impl Default for WorkerPolicy {
    fn default() -> Self {
        Self { stale_after_ms: 420_000, idle_timeout_ms: 1_800_000, auth_cache_ms: 10_000 }
    }
}

/// An authenticated worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub worker_id: String,
    /// Carried into write transactions, which re-check it on the worker row.
    pub token_hash: String,
}
