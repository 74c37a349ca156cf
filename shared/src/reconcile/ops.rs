//! Reconcile's ops, served by the `reconcile` function through the op envelope.

use super::cycle::Reconciler;
use super::model::{ProviderRuntimeConfig, ScalingPolicy};
use crate::adapters::dynamo::reconcile::{LIVE_STATUSES, Stored};
use crate::envelope::{NoArgs, OpTable};
use crate::error::{AppError, AppResult};
use crate::op;
use crate::workers::model::{WorkerItem, WorkerStatus};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPolicyArgs {
    pub policy: ScalingPolicy,
    /// The version read with `getScalingPolicy` (0 when none was ever stored).
    pub expected_version: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetProviderArgs {
    pub config: ProviderRuntimeConfig,
    pub expected_version: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListWorkersArgs {
    /// `active` (default), `draining`, `stopping` or `stopped`.
    #[serde(default)]
    pub status: Option<WorkerStatus>,
    /// 1..200, default 50.
    #[serde(default)]
    pub limit: Option<i32>,
    /// The `nextCursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

pub const TABLE: OpTable<Reconciler> = OpTable {
    domain: "reconcile",
    ops: &[
        op!(Reconciler, "reconcileWorkerPool", |r, _a: NoArgs| r.request_cycle().await?),
        op!(Reconciler, "startWorkers", |r, _a: NoArgs| r.request_cycle().await?),
        op!(Reconciler, "checkIdleShutdowns", |r, _a: NoArgs| r.request_cycle().await?),
        op!(Reconciler, "getScalingPolicy", |r, _a: NoArgs| r.policy().await?),
        op!(Reconciler, "setScalingPolicy", |r, a: SetPolicyArgs| {
            a.policy.validate()?;
            r.app.store.put_versioned(Stored::ScalingPolicy, &a.policy, a.expected_version).await?
        }),
        op!(Reconciler, "getProviderRuntimeConfig", |r, _a: NoArgs| r.provider_config().await?),
        op!(Reconciler, "setProviderRuntimeConfig", |r, a: SetProviderArgs| {
            a.config.validate()?;
            r.app.store.put_versioned(Stored::ProviderConfig, &a.config, a.expected_version).await?
        }),
        op!(Reconciler, "listWorkers", |r, a: ListWorkersArgs| list_workers(r, a).await?),
        op!(Reconciler, "getWorkerStats", |r, _a: NoArgs| worker_stats(r).await?),
    ],
};

/// A worker row without `tokenHash`.
fn public(w: WorkerItem) -> AppResult<Value> {
    let mut v = crate::envelope::to_json(w)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("tokenHash");
    }
    Ok(v)
}

async fn list_workers(r: &Reconciler, a: ListWorkersArgs) -> AppResult<Value> {
    let st = a.status.unwrap_or(WorkerStatus::Active);
    let limit = a.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::validation("limit must be between 1 and 200"));
    }
    let start = match &a.cursor {
        None => None,
        Some(c) => Some(decode_cursor(c, st)?),
    };
    let (rows, next) = r.app.store.workers_by_status(st, limit, start).await?;
    let workers = rows.into_iter().map(public).collect::<AppResult<Vec<_>>>()?;
    let next_cursor = next
        .and_then(|k| k.get("workerId").and_then(|v| v.as_s().ok()).cloned())
        .map(|id| crate::paging::encode(&format!("listWorkers {}", st.as_str()), &id));
    Ok(json!({ "workers": workers, "nextCursor": next_cursor }))
}

fn decode_cursor(c: &str, st: WorkerStatus) -> AppResult<crate::adapters::dynamo::Item> {
    use crate::adapters::dynamo::s;
    let id = crate::paging::decode(&format!("listWorkers {}", st.as_str()), "", c)?;
    crate::queue::rules::validate_worker_id(&id)
        .map_err(|_| AppError::validation("cursor is not a nextCursor of listWorkers"))?;
    Ok([("workerId", s(&id)), ("status", s(st.as_str()))].into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Counts of the live pool (bounded by it, never the stopped history) and the cycle state.
async fn worker_stats(r: &Reconciler) -> AppResult<Value> {
    let rows = r.app.store.live_workers().await?;
    let count = |st: WorkerStatus| rows.iter().filter(|w| w.status == st).count();
    let busy = rows.iter().filter(|w| w.status == WorkerStatus::Active && w.load() > 0).count();
    let state = r.app.store.reconcile_state().await?;
    let mut by = serde_json::Map::new();
    for st in LIVE_STATUSES {
        by.insert(st.as_str().to_string(), json!(count(st)));
    }
    // Spec §11: the active workers themselves (the live pool bounds the list).
    let workers: Vec<Value> = rows
        .iter()
        .filter(|w| w.status == WorkerStatus::Active)
        .map(|w| {
            json!({
                "workerId": w.worker_id, "status": w.status.as_str(), "load": w.load(),
                "heartbeatAt": w.heartbeat_at, "machineId": w.machine_id, "appName": w.app_name,
            })
        })
        .collect();
    Ok(json!({
        "byStatus": by,
        "activeCount": busy,
        "idleCount": count(WorkerStatus::Active) - busy,
        "workers": workers,
        "reconcile": {
            "lastCycleAt": state.last_cycle_at,
            "cycles": state.cycles,
            "pending": state.dirty,
            "running": state.lease_until.is_some_and(|u| u > r.app.now()),
        },
    }))
}
