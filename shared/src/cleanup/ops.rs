//! `runFlyCleanup` (spec §9, scoped and reflected in rows): inventory, destroy machines, verify,
//! delete volumes, verify, report. Nothing is lost when a listing fails: the report says what
//! is unknown, and keeps what was done.

use super::model::{FlyCleanupReport, MACHINE_CONCURRENCY, RunFlyCleanupArgs, VOLUME_CONCURRENCY};
use super::rules;
use crate::adapters::dynamo::Store;
use crate::adapters::fly::{FlyProvider, FlySettings};
use crate::app::App;
use crate::envelope::OpTable;
use crate::error::{AppError, AppResult};
use crate::reconcile::provider::{Machine, MachineState, Volume, WorkerProvider};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

/// How long a cleanup keeps starting teardowns; the function's timeout (900 s) leaves room for
/// the batch in flight and the verification listings, so the report is always returned.
pub const TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(300);

/// What the cleanup ops run with: the application, where Fly is, the time budget.
#[derive(Debug, Clone)]
pub struct CleanupCtx {
    pub app: App,
    pub fly: FlySettings,
    pub budget: std::time::Duration,
}

impl CleanupCtx {
    pub fn new(app: App, fly: FlySettings) -> Self {
        Self { app, fly, budget: TIME_BUDGET }
    }
}

/// The cleanup function's own ops (the sweeps it also serves are `OpTable<App>`s).
pub const TABLE: OpTable<CleanupCtx> = OpTable {
    domain: "cleanup",
    ops: &[crate::op!(CleanupCtx, "runFlyCleanup", |c, a: RunFlyCleanupArgs| run_fly_cleanup(c, &a).await?)],
};

/// `runFlyCleanup`: resolves the app and the token, then [`cleanup`].
pub async fn run_fly_cleanup(ctx: &CleanupCtx, a: &RunFlyCleanupArgs) -> AppResult<FlyCleanupReport> {
    let app_name = a
        .app_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .or(ctx.fly.app_name.as_deref())
        .ok_or_else(|| AppError::validation("Fly cleanup requires a non-empty Fly app name (appName or FLY_APP_NAME)"))?
        .to_string();
    let provider = FlyProvider::from_secrets(&ctx.fly, &app_name, &ctx.app.secrets).await?;
    let deadline = std::time::Instant::now() + ctx.budget;
    let report = cleanup(Arc::new(provider), &ctx.app.store, &ctx.fly.deployment_id, a, deadline).await;
    if report.errors.is_empty() {
        tracing::info!(app = %report.app_name, deleted = report.machines_deleted, volumes = report.volumes_deleted,
            warnings = report.warnings.len(), dry_run = report.dry_run, "fly cleanup");
    } else {
        tracing::error!(app = %report.app_name, errors = ?report.errors, warnings = ?report.warnings, "fly cleanup left errors");
    }
    Ok(report)
}

enum Outcome {
    Deleted(Option<String>),
    Failed(String),
    NotAttempted,
}

/// Tear down one machine: stop, wait for stopped, destroy; if that does not finish (stuck in
/// stopping, refused), destroy with force. NotFound at any point means it is gone.
async fn destroy_machine(p: Arc<dyn WorkerProvider>, m: Machine) -> Outcome {
    if m.state == MachineState::Gone {
        return Outcome::Deleted(None);
    }
    match p.destroy_machine(&m.id, false).await {
        Ok(()) => Outcome::Deleted(None),
        Err(e) if e.is_not_found() => Outcome::Deleted(None),
        Err(graceful) => match p.destroy_machine(&m.id, true).await {
            Ok(()) => Outcome::Deleted(Some(format!(
                "Machine {}: graceful stop did not finish ({graceful}); destroyed with force",
                m.id
            ))),
            Err(e) if e.is_not_found() => Outcome::Deleted(None),
            Err(e) => Outcome::Failed(format!("Machine {}: destroy failed ({e})", m.id)),
        },
    }
}

async fn delete_volume(p: Arc<dyn WorkerProvider>, v: Volume) -> Outcome {
    match p.delete_volume(&v.id).await {
        Ok(()) => Outcome::Deleted(None),
        Err(e) if e.is_not_found() => Outcome::Deleted(None),
        Err(e) => Outcome::Failed(format!("Volume {}: destroy failed ({e})", v.id)),
    }
}

/// Run `f` over `items` with at most `n` in flight; results in the items' order. Once
/// `deadline` has passed no new batch starts: the rest fail as "not attempted".
async fn bounded<T, F, Fut>(items: Vec<T>, n: usize, deadline: Instant, f: F) -> Vec<(T, Outcome)>
where
    T: Clone + Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(n.max(1)) {
        if Instant::now() >= deadline {
            for it in chunk {
                out.push((it.clone(), Outcome::NotAttempted));
            }
            continue;
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, it) in chunk.iter().enumerate() {
            let fut = f(it.clone());
            set.spawn(async move { (i, fut.await) });
        }
        let mut done: Vec<(usize, Outcome)> = Vec::with_capacity(chunk.len());
        while let Some(r) = set.join_next().await {
            match r {
                Ok(x) => done.push(x),
                Err(e) => tracing::error!(error = %e, "cleanup task failed"),
            }
        }
        done.sort_by_key(|(i, _)| *i);
        let mut by_index: Vec<Option<Outcome>> = (0..chunk.len()).map(|_| None).collect();
        for (i, o) in done {
            by_index[i] = Some(o);
        }
        for (it, o) in chunk.iter().zip(by_index) {
            out.push((it.clone(), o.unwrap_or_else(|| Outcome::Failed("the teardown task failed".into()))));
        }
    }
    out
}

/// The cleanup itself, on any provider. Never fails: every failure is in the report.
pub async fn cleanup(
    p: Arc<dyn WorkerProvider>,
    store: &Store,
    deployment: &str,
    a: &RunFlyCleanupArgs,
    deadline: Instant,
) -> FlyCleanupReport {
    let all = a.all_machines_in_app;
    let mut r = FlyCleanupReport {
        app_name: p.app().to_string(),
        deployment_id: deployment.to_string(),
        scope: if all { "app" } else { "deployment" },
        dry_run: a.dry_run,
        ..FlyCleanupReport::default()
    };
    // 1. Inventory.
    let machines = match p.list_machines().await {
        Ok(m) => m,
        Err(e) => {
            r.errors.push(format!("Machine inventory failed ({e}); nothing was deleted"));
            return r;
        }
    };
    r.machines_found = machines.len();
    let (targets, skipped): (Vec<Machine>, Vec<Machine>) =
        machines.into_iter().partition(|m| rules::machine_in_scope(m, deployment, all));
    r.machines_skipped = skipped.len();
    r.machine_ids_targeted = targets.iter().map(|m| m.id.clone()).collect();
    let scoped_machines: BTreeSet<String> = r.machine_ids_targeted.iter().cloned().collect();
    let scoped_mounts: BTreeSet<String> = targets.iter().flat_map(|m| m.volume_ids.iter().cloned()).collect();
    let volumes = match p.list_volumes().await {
        Ok(v) => Some(v),
        Err(e) => {
            r.errors.push(format!("Volume inventory failed ({e}); no volume was deleted"));
            None
        }
    };
    let vol_targets: Vec<Volume> = volumes
        .map(|vs| {
            r.volumes_found = vs.len();
            let (t, s): (Vec<Volume>, Vec<Volume>) = vs
                .into_iter()
                .partition(|v| rules::volume_in_scope(v, deployment, all, &scoped_machines, &scoped_mounts));
            r.volumes_skipped = s.len();
            r.volume_ids_targeted = t.iter().map(|v| v.id.clone()).collect();
            t
        })
        .unwrap_or_default();
    if a.dry_run {
        return r;
    }

    // 2. Destroy machines, at most `machineConcurrency` at once.
    let n = rules::concurrency(a.machine_concurrency, MACHINE_CONCURRENCY);
    let results = bounded(targets, n, deadline, |m| destroy_machine(p.clone(), m)).await;
    let mut deleted: Vec<Machine> = Vec::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for (m, o) in results {
        match o {
            Outcome::Deleted(w) => {
                r.warnings.extend(w);
                deleted.push(m);
            }
            Outcome::Failed(e) => {
                r.errors.push(e);
                failed.insert(m.id);
            }
            Outcome::NotAttempted => {
                r.errors.push(format!("Machine {}: not attempted (the time budget was spent)", m.id));
                failed.insert(m.id);
            }
        }
    }
    r.machine_ids_deleted = deleted.iter().map(|m| m.id.clone()).collect();
    r.machines_deleted = deleted.len();

    // 3. Verify machines.
    let still: BTreeSet<String> = match p.list_machines().await {
        Ok(listing) => {
            let rem = rules::machines_remaining(&r.machine_ids_targeted, &listing);
            if !rem.is_empty() {
                r.warnings.push(format!(
                    "Fly cleanup left {} machine(s) after verification: {}",
                    rem.len(),
                    rem.join(", ")
                ));
            }
            r.machines_remaining = Some(rem.len());
            r.machine_ids_remaining = rem.clone();
            rem.into_iter().collect()
        }
        Err(e) => {
            r.warnings.push(format!("Machine verification listing failed ({e}); machines remaining unknown"));
            failed.clone()
        }
    };

    // 4. Worker rows of machines confirmed destroyed (destroy succeeded and not listed alive).
    for m in deleted.iter().filter(|m| !still.contains(&m.id)) {
        let Some(w) = rules::worker_of(m) else { continue };
        match store.mark_worker_machine_destroyed(w, &m.id).await {
            Ok(true) => {
                r.workers_stopped += 1;
                r.worker_ids_stopped.push(w.to_string());
            }
            Ok(false) => {}
            Err(e) => r.errors.push(format!("Worker {w}: marking stopped failed ({e})")),
        }
    }

    // 5. Delete volumes; a volume still attached to a machine that was not destroyed is kept.
    let (vol_targets, kept): (Vec<Volume>, Vec<Volume>) = vol_targets
        .into_iter()
        .partition(|v| v.attached_machine.as_ref().is_none_or(|m| !still.contains(m) && !failed.contains(m)));
    for v in &kept {
        r.warnings.push(format!(
            "Volume {}: kept, attached to machine {} which was not destroyed",
            v.id,
            v.attached_machine.as_deref().unwrap_or_default()
        ));
    }
    let n = rules::concurrency(a.volume_concurrency, VOLUME_CONCURRENCY);
    for (v, o) in bounded(vol_targets, n, deadline, |v| delete_volume(p.clone(), v)).await {
        match o {
            Outcome::Deleted(w) => {
                r.warnings.extend(w);
                r.volume_ids_deleted.push(v.id);
            }
            Outcome::Failed(e) => r.errors.push(e),
            Outcome::NotAttempted => {
                r.errors.push(format!("Volume {}: not attempted (the time budget was spent)", v.id))
            }
        }
    }
    r.volumes_deleted = r.volume_ids_deleted.len();

    // 6. Verify volumes.
    match p.list_volumes().await {
        Ok(listing) => {
            let rem = rules::volumes_remaining(&r.volume_ids_targeted, &listing);
            if !rem.is_empty() {
                r.warnings.push(format!(
                    "Fly cleanup left {} volume(s) after verification: {}",
                    rem.len(),
                    rem.join(", ")
                ));
            }
            r.volumes_remaining = Some(rem.len());
            r.volume_ids_remaining = rem;
        }
        Err(e) => r.warnings.push(format!("Volume verification listing failed ({e}); volumes remaining unknown")),
    }
    r
}
