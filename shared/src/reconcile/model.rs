//! Reconcile's types: the stored scaling policy and provider runtime config, what a cycle
//! observes (demand), and the actions its plan lists. Pure: no I/O.

use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use serde::{Deserialize, Serialize};

/// The scaling policy: stored (control table, versioned), read by every trigger, written only by
/// `setScalingPolicy` (spec §11 W-R5: the original's policy was per call and forgotten).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ScalingPolicy {
    /// Hard cap on machines alive in any state (rows active, draining or stopping, plus this
    /// deployment's machines without a row). 0 = never spawn.
    pub max_workers: u32,
    /// Workers kept even without work (unassigned ones are spawned to reach it; idle shutdown
    /// never takes the pool below it).
    pub min_workers: u32,
    /// Most machines created per cycle.
    pub spawn_step: u32,
    /// An idle worker (load 0) is drained this long after its last job ended.
    pub idle_timeout_ms: i64,
    /// A draining worker that never snapshots is stopped this long after the drain began.
    pub drain_deadline_ms: i64,
    /// A row whose machine is missing from the provider's listing is left alone this long
    /// after its last sign of life (listings lag right after a create).
    pub missing_machine_grace_ms: i64,
    /// A worker with no news for this long is stale: drained, its conversation free.
    pub stale_after_ms: i64,
    /// A machine tagged with this deployment and without a live row is stopped after this long.
    pub orphan_grace_ms: i64,
    /// At the cap with conversations waiting, an idle worker pinned to a conversation without
    /// work is drained after this long idle, to make room (spec W-L2).
    pub reclaim_idle_after_ms: i64,
    /// Triggers closer together than this are coalesced into one cycle.
    pub min_cycle_interval_ms: i64,
    /// Most stopped-but-kept machines (warm restarts); 0 = off.
    pub warm_pool_max: u32,
    /// How long a warm machine is kept before it is destroyed; 0 = off.
    pub warm_retention_ms: i64,
}

impl Default for ScalingPolicy {
    fn default() -> Self {
        Self {
            max_workers: 1,
            min_workers: 0,
            spawn_step: 4,
            idle_timeout_ms: 1_800_000,
            drain_deadline_ms: 600_000,
            missing_machine_grace_ms: 90_000,
            stale_after_ms: 420_000,
            orphan_grace_ms: 300_000,
            reclaim_idle_after_ms: 60_000,
            min_cycle_interval_ms: 2_000,
            warm_pool_max: 0,
            warm_retention_ms: 0,
        }
    }
}

const DAY_MS: i64 = 86_400_000;

fn range(name: &str, v: i64, lo: i64, hi: i64) -> AppResult<()> {
    if v < lo || v > hi {
        return Err(AppError::validation(format!("{name} must be between {lo} and {hi} (got {v})")));
    }
    Ok(())
}

impl ScalingPolicy {
    /// Bounds that keep every value meaningful (no hot loop, no cap below the floor).
    pub fn validate(&self) -> AppResult<()> {
        range("maxWorkers", self.max_workers.into(), 0, 1_000)?;
        range("minWorkers", self.min_workers.into(), 0, self.max_workers.into())?;
        range("spawnStep", self.spawn_step.into(), 1, 100)?;
        range("idleTimeoutMs", self.idle_timeout_ms, 60_000, 7 * DAY_MS)?;
        range("drainDeadlineMs", self.drain_deadline_ms, 30_000, DAY_MS)?;
        range("missingMachineGraceMs", self.missing_machine_grace_ms, 10_000, 3_600_000)?;
        range("staleAfterMs", self.stale_after_ms, 60_000, DAY_MS)?;
        range("orphanGraceMs", self.orphan_grace_ms, 60_000, DAY_MS)?;
        range("reclaimIdleAfterMs", self.reclaim_idle_after_ms, 0, 7 * DAY_MS)?;
        range("minCycleIntervalMs", self.min_cycle_interval_ms, 100, 300_000)?;
        range("warmPoolMax", self.warm_pool_max.into(), 0, 100)?;
        range("warmRetentionMs", self.warm_retention_ms, 0, 30 * DAY_MS)?;
        Ok(())
    }
}

/// How workers are run and reached: stored next to the policy, versioned, never written back by
/// scheduled work (spec W-R4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRuntimeConfig {
    /// `fly` or `process`.
    pub kind: String,
    /// The Fly app (or the local pool's name): rows record it, only its rows are in scope.
    pub app_name: String,
    /// The worker image (Fly); ignored by the process provider.
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub region: String,
    /// Prefix of per-worker volume names.
    #[serde(default = "default_volume_prefix")]
    pub volume_name_prefix: String,
    #[serde(default = "default_volume_path")]
    pub volume_path: String,
    /// 0 = no volume.
    #[serde(default = "default_volume_size")]
    pub volume_size_gb: u32,
    /// The base URL workers call (`AGENT_FACTORY_URL` in their env).
    pub api_base_url: String,
    #[serde(default = "default_workspace")]
    pub workspace_id: String,
}

fn default_volume_prefix() -> String {
    "afw_data".into()
}
fn default_volume_path() -> String {
    "/data".into()
}
fn default_volume_size() -> u32 {
    10
}
fn default_workspace() -> String {
    "default".into()
}

impl ProviderRuntimeConfig {
    pub fn validate(&self) -> AppResult<()> {
        if !matches!(self.kind.as_str(), "fly" | "process") {
            return Err(AppError::validation("kind must be 'fly' or 'process'"));
        }
        crate::ids::check_text("appName", &self.app_name, 64)?;
        if self.kind == "fly" {
            for (n, v) in [("image", &self.image), ("region", &self.region)] {
                if v.trim().is_empty() {
                    return Err(AppError::validation(format!("{n} is required for the fly provider")));
                }
            }
        }
        for (n, v, max) in [
            ("image", &self.image, 512),
            ("region", &self.region, 64),
            ("volumeNamePrefix", &self.volume_name_prefix, 20),
            ("volumePath", &self.volume_path, 256),
            ("workspaceId", &self.workspace_id, 128),
        ] {
            if v.len() > max || v.chars().any(char::is_control) {
                return Err(AppError::validation(format!(
                    "{n} must be at most {max} bytes, without control characters"
                )));
            }
        }
        if !self.volume_path.starts_with('/') {
            return Err(AppError::validation("volumePath must be an absolute path"));
        }
        range("volumeSizeGb", self.volume_size_gb.into(), 0, 500)?;
        let u = self.api_base_url.as_str();
        if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 512 {
            return Err(AppError::validation("apiBaseUrl must be an http(s) URL of at most 512 bytes"));
        }
        crate::ids::check_text("workspaceId", &self.workspace_id, 128)?;
        Ok(())
    }
}

/// A stored, versioned record (policy or provider config). `version` grows by one per write;
/// a write names the version it read (`expectedVersion`), else it is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
    pub updated_at: Millis,
}

/// A conversation that has work a worker could do now (ready or in progress), from the queue's
/// ready index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Demand {
    pub conversation_id: String,
    pub agent_key: String,
    /// A worker holds its lock now (in progress).
    pub locked: bool,
    /// The lock's holder, when locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_worker_id: Option<String>,
}

/// A stopped machine kept with its volume for a warm restart of its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmMachine {
    pub machine_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// The worker it last ran.
    pub worker_id: String,
    pub conversation_id: String,
    pub agent_key: String,
    pub parked_at: Millis,
}

/// What a cycle decided to do, in order. The executor carries them out; a provider error stops
/// only the action it hit (the rows stay, the next cycle decides again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Register a new worker (row first), then create its volume and machine.
    Spawn { worker_id: String, conversation_id: Option<String>, agent_key: Option<String> },
    /// Record the machine found for a row that has none (a crash between create and row write).
    AttachMachine { worker_id: String, machine_id: String },
    /// `active -> draining`: stop claiming, snapshot, exit.
    Drain { worker_id: String, reason: Reason },
    /// `draining -> stopping`: the machine will be torn down.
    Stop { worker_id: String, reason: Reason },
    /// Destroy the machine (if any), delete the volume (if any), then mark the row stopped, each
    /// step only after the provider confirmed the previous one.
    Teardown { worker_id: String, machine_id: Option<String>, volume_id: Option<String> },
    /// Stop (not destroy) a stopping worker's machine after its final snapshot and keep it,
    /// with its volume, for its conversation; then mark the row stopped.
    Park {
        worker_id: String,
        machine_id: String,
        volume_id: Option<String>,
        conversation_id: String,
        agent_key: String,
    },
    /// A new worker on a warm machine of its conversation: row first, then start the machine
    /// with a fresh env (a new bootstrap code).
    StartWarm {
        worker_id: String,
        machine_id: String,
        volume_id: Option<String>,
        conversation_id: String,
        agent_key: String,
    },
    /// A warm machine past its retention (or gone): destroy it and its volume, forget it.
    DiscardWarm { machine_id: String, volume_id: Option<String> },
    /// Destroy a machine of this deployment that no live row claims.
    DestroyOrphan { machine_id: String, worker: Option<String> },
}

/// Why a worker is drained or stopped (also in logs and reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The provider confirmed the machine is gone or stopped.
    MachineGone,
    /// The machine is missing from the listing beyond the grace.
    MachineMissing,
    /// No heartbeat for `staleAfterMs`.
    StaleHeartbeat,
    /// Idle `idleTimeoutMs` after its last job ended.
    Idle,
    /// At the cap with conversations waiting: an idle worker makes room.
    Reclaim,
    /// Its final snapshot is in (or it never did work): nothing left to save.
    Snapshotted,
    /// Draining longer than `drainDeadlineMs` without a snapshot.
    DrainDeadline,
    /// Never got a machine (spawn failed or crashed before create) beyond the grace.
    NoMachine,
}

/// Why a row or machine was left alone this cycle (reported, not acted on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub id: String,
    pub reason: &'static str,
}

/// A cycle's plan: its actions and what it deliberately left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub actions: Vec<Action>,
    pub waiting: Vec<Waiting>,
    /// Machines alive (rows in a running status plus orphans) after the plan's spawns.
    pub alive_after: u32,
    /// Conversations with work and no worker that the cap left waiting.
    pub unserved: u32,
}

impl Plan {
    pub fn spawns(&self) -> usize {
        self.actions.iter().filter(|a| matches!(a, Action::Spawn { .. } | Action::StartWarm { .. })).count()
    }
}

/// A cycle's outcome, as `reconcileWorkerPool` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CycleReport {
    /// `false` when another cycle held the lease (this trigger was coalesced into it).
    pub ran: bool,
    pub cycles: u32,
    pub spawned: u32,
    pub warm_started: u32,
    pub parked: u32,
    pub drained: u32,
    pub stopping: u32,
    pub torn_down: u32,
    pub orphans_destroyed: u32,
    pub leases_released: u32,
    /// Provider calls that failed retryably: the rows they concerned are kept for next time.
    pub provider_errors: u32,
    pub alive: u32,
    pub unserved: u32,
    pub waiting: Vec<Waiting>,
    pub errors: Vec<String>,
}

/// A single-use bootstrap code: put in a spawned worker's env, exchanged once (within minutes)
/// for the worker's token at `POST /worker/bootstrap`. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapCode(pub String);

impl BootstrapCode {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BootstrapCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapCode(<redacted>)")
    }
}

/// `POST /worker/bootstrap` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapArgs {
    pub code: String,
}
