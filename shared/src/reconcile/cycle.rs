//! The thin executor: single flight and coalescing around the cycle, the observation (rows,
//! inventory, demand), the pure plan (`rules::plan`), and carrying out its actions. A provider
//! error stops only the worker it concerns (spec W-S4, W-P2): `Retryable` keeps the rows for the
//! next cycle, `NotFound` means gone; nothing is marked stopped and no volume forgotten until
//! the provider confirmed.

use super::model::{Action, CycleReport, ProviderRuntimeConfig, ScalingPolicy, Versioned};
use super::provider::{DEPLOYMENT_TAG, MachineSpec, ProviderError, VolumeSpec, WORKER_TAG, WorkerProvider};
use super::rules::{self, Observed, SpawnEnv};
use crate::adapters::dynamo::reconcile::{Acquire, Stored};
use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::workers::model::WorkerStatus;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// How long one holder keeps the lease without finishing (a crashed cycle frees it after this).
pub const LEASE_TTL_MS: i64 = 150_000;
/// Rounds one holder runs for flags set during its own rounds, before leaving the rest to the
/// next trigger.
const MAX_ROUNDS: u32 = 4;
/// Most demand entries read per `ready` partition per cycle.
pub const DEMAND_LIMIT: i32 = 200;
/// Expired leases released per cycle.
const LEASE_RELEASE_LIMIT: i64 = 100;
/// Most warm machines read per cycle (above `warmPoolMax`'s bound).
const WARM_LIMIT: i32 = 200;
/// How long a bootstrap code in a spawn env stays redeemable.
pub const BOOTSTRAP_TTL_MS: i64 = 10 * 60_000;

/// Builds the provider for the stored runtime config (the same instance for the same config:
/// the process provider owns its children).
pub trait ProviderFactory: Send + Sync {
    fn provider(&self, cfg: &ProviderRuntimeConfig) -> AppResult<Arc<dyn WorkerProvider>>;
}

/// What reconcile's ops run with.
#[derive(Clone)]
pub struct Reconciler {
    pub app: App,
    /// This deployment's id (`DEPLOYMENT_ID`), tagged on every machine and volume.
    pub deployment: String,
    pub providers: Arc<dyn ProviderFactory>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").field("deployment", &self.deployment).finish_non_exhaustive()
    }
}

impl Reconciler {
    /// The stored policy, or the defaults (version 0) when none was ever set.
    pub async fn policy(&self) -> AppResult<Versioned<ScalingPolicy>> {
        Ok(self.app.store.get_versioned(Stored::ScalingPolicy).await?.unwrap_or(Versioned {
            value: ScalingPolicy::default(),
            version: 0,
            updated_at: 0,
        }))
    }

    pub async fn provider_config(&self) -> AppResult<Option<Versioned<ProviderRuntimeConfig>>> {
        self.app.store.get_versioned(Stored::ProviderConfig).await
    }

    /// A trigger asks for a cycle. Sets the coalescing flag, then takes the lease and runs
    /// rounds until no flag was set during the last one; when another cycle holds the lease the
    /// trigger is coalesced into it (`ran: false`). Triggers closer than `minCycleIntervalMs`
    /// after the last cycle wait for it.
    pub async fn request_cycle(&self) -> AppResult<CycleReport> {
        let store = &self.app.store;
        let min_interval = self.policy().await?.value.min_cycle_interval_ms;
        store.reconcile_mark_dirty().await?;
        let owner = format!("{:032x}", crate::ids::random_u128());
        let mut report = CycleReport::default();
        for _ in 0..2 {
            match store.reconcile_acquire(&owner, LEASE_TTL_MS, min_interval).await? {
                Acquire::Acquired => {
                    report.ran = true;
                    for round in 0..MAX_ROUNDS {
                        let r = self.run_cycle().await;
                        let again = store.reconcile_finish(&owner, LEASE_TTL_MS, round + 1 < MAX_ROUNDS).await;
                        let r = r?;
                        merge(&mut report, r);
                        if !again? {
                            break;
                        }
                    }
                    return Ok(report);
                }
                Acquire::Busy => return Ok(report),
                Acquire::TooSoon(wait) => {
                    tokio::time::sleep(std::time::Duration::from_millis(wait.clamp(1, min_interval) as u64)).await;
                }
            }
        }
        Ok(report)
    }

    /// One cycle (the caller holds the lease): release expired leases, observe, plan, act.
    pub async fn run_cycle(&self) -> AppResult<CycleReport> {
        let store = &self.app.store;
        let mut report = CycleReport { cycles: 1, ..CycleReport::default() };
        match store.release_expired_leases(Some(LEASE_RELEASE_LIMIT)).await {
            Ok(r) => report.leases_released = r.requeued + r.dead_lettered,
            Err(e) => report.errors.push(format!("lease release: {}", e.code().as_str())),
        }
        // The demand read also tells unassigned claimers which shards have work (the ready
        // hint: one write per cycle), whether or not a provider is configured.
        let now = store.now();
        let (demand, _capped, hint) = store.ready_demand(now, DEMAND_LIMIT).await?;
        store.put_ready_hint(&hint).await?;
        let policy = self.policy().await?.value;
        let Some(cfg) = self.provider_config().await? else {
            report.errors.push("no provider runtime config: nothing is spawned (setProviderRuntimeConfig)".into());
            return Ok(report);
        };
        let cfg = cfg.value;
        let provider = self.providers.provider(&cfg)?;
        let rows = store.live_workers().await?;
        let machines = match provider.list_machines().await {
            Ok(m) => m,
            Err(e) => {
                // Nothing may be concluded without the inventory: no action at all.
                report.provider_errors += 1;
                report.errors.push(format!("list machines: {e}"));
                return Ok(report);
            }
        };
        let warm = store.warm_machines(WARM_LIMIT).await?;
        let plan = rules::plan(&Observed {
            now,
            policy: &policy,
            deployment: &self.deployment,
            provider_kind: provider.kind(),
            app: provider.app(),
            rows: &rows,
            machines: &machines,
            demand: &demand,
            warm: &warm,
            id_seed: crate::ids::random_u128() as u64,
        });
        report.alive = plan.alive_after;
        report.unserved = plan.unserved;
        report.waiting = plan.waiting.clone();
        let mut failed: HashSet<String> = HashSet::new();
        for a in &plan.actions {
            let who = worker_of(a);
            if who.is_some_and(|w| failed.contains(w)) {
                continue;
            }
            let r = self.act(&*provider, &cfg, &policy, a, &mut report).await;
            if let Err(e) = r {
                if matches!(e, ActError::Provider(_)) {
                    report.provider_errors += 1;
                }
                if let Some(w) = who {
                    failed.insert(w.to_string());
                }
                tracing::warn!(action = ?action_name(a), worker = ?who, error = %e, "reconcile action failed");
                report.errors.push(format!("{} {}: {e}", action_name(a), who.unwrap_or("-")));
            }
        }
        tracing::info!(
            spawned = report.spawned,
            drained = report.drained,
            torn_down = report.torn_down,
            orphans = report.orphans_destroyed,
            alive = report.alive,
            unserved = report.unserved,
            "reconcile cycle"
        );
        Ok(report)
    }

    async fn act(
        &self,
        provider: &dyn WorkerProvider,
        cfg: &ProviderRuntimeConfig,
        policy: &ScalingPolicy,
        a: &Action,
        report: &mut CycleReport,
    ) -> Result<(), ActError> {
        let store = &self.app.store;
        match a {
            Action::Spawn { worker_id, conversation_id, agent_key } => {
                let assignment = conversation_id.as_deref().zip(agent_key.as_deref());
                store.register_spawn(worker_id, provider.kind(), provider.app(), assignment).await?;
                let mut tags = BTreeMap::new();
                tags.insert(DEPLOYMENT_TAG.to_string(), self.deployment.clone());
                tags.insert(WORKER_TAG.to_string(), worker_id.clone());
                let mut mount = None;
                let mut volume_id = None;
                if cfg.volume_size_gb > 0 {
                    let v = provider
                        .create_volume(&VolumeSpec {
                            name: rules::volume_name(&cfg.volume_name_prefix, worker_id),
                            region: cfg.region.clone(),
                            size_gb: cfg.volume_size_gb,
                            metadata: tags.clone(),
                        })
                        .await?;
                    store.attach_volume(worker_id, &v.id).await?;
                    mount = Some((v.id.clone(), cfg.volume_path.clone()));
                    volume_id = Some(v.id);
                }
                let env = self.env(cfg, policy, worker_id, conversation_id.as_deref(), agent_key.as_deref()).await?;
                let spec = MachineSpec {
                    name: worker_id.clone(),
                    region: cfg.region.clone(),
                    image: cfg.image.clone(),
                    env,
                    mount,
                    metadata: tags,
                };
                let m = provider.create_machine(&spec).await?;
                store.attach_machine(worker_id, &m.id, Some(&m.region), volume_id.as_deref()).await?;
                report.spawned += 1;
            }
            Action::StartWarm { worker_id, machine_id, volume_id, conversation_id, agent_key } => {
                if !store.take_warm(machine_id).await? {
                    return Err(ActError::Moved);
                }
                store
                    .register_spawn(worker_id, provider.kind(), provider.app(), Some((conversation_id, agent_key)))
                    .await?;
                store.attach_machine(worker_id, machine_id, None, volume_id.as_deref()).await?;
                let env = self.env(cfg, policy, worker_id, Some(conversation_id), Some(agent_key)).await?;
                provider.start_machine(machine_id, &env).await?;
                report.warm_started += 1;
            }
            Action::Park { worker_id, machine_id, volume_id, conversation_id, agent_key } => {
                match provider.stop_machine(machine_id).await {
                    Ok(()) => {
                        store
                            .put_warm(&super::model::WarmMachine {
                                machine_id: machine_id.clone(),
                                volume_id: volume_id.clone(),
                                worker_id: worker_id.clone(),
                                conversation_id: conversation_id.clone(),
                                agent_key: agent_key.clone(),
                                parked_at: store.now(),
                            })
                            .await?;
                    }
                    // Gone meanwhile: nothing to keep; its volume goes.
                    Err(e) if e.is_not_found() => {
                        if let Some(v) = volume_id {
                            gone_ok(provider.delete_volume(v).await)?;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
                if !store.reconcile_transition(worker_id, WorkerStatus::Stopping).await? {
                    return Err(ActError::Moved);
                }
                report.parked += 1;
            }
            Action::DiscardWarm { machine_id, volume_id } => {
                gone_ok(provider.destroy_machine(machine_id, true).await)?;
                if let Some(v) = volume_id {
                    gone_ok(provider.delete_volume(v).await)?;
                }
                store.take_warm(machine_id).await?;
            }
            Action::AttachMachine { worker_id, machine_id } => {
                store.attach_machine(worker_id, machine_id, None, None).await?;
            }
            Action::Drain { worker_id, reason } => {
                if !store.reconcile_transition(worker_id, WorkerStatus::Active).await? {
                    return Err(ActError::Moved);
                }
                tracing::info!(worker_id, reason = ?reason, "worker draining");
                report.drained += 1;
            }
            Action::Stop { worker_id, reason } => {
                if !store.reconcile_transition(worker_id, WorkerStatus::Draining).await? {
                    return Err(ActError::Moved);
                }
                if *reason == super::model::Reason::DrainDeadline {
                    tracing::warn!(worker_id, "drain deadline passed without a snapshot: stopping the worker anyway");
                }
                report.stopping += 1;
            }
            Action::Teardown { worker_id, machine_id, volume_id } => {
                if let Some(m) = machine_id {
                    gone_ok(provider.destroy_machine(m, true).await)?;
                }
                if let Some(v) = volume_id {
                    gone_ok(provider.delete_volume(v).await)?;
                }
                if !store.reconcile_transition(worker_id, WorkerStatus::Stopping).await? {
                    return Err(ActError::Moved);
                }
                report.torn_down += 1;
            }
            Action::DestroyOrphan { machine_id, worker } => {
                tracing::warn!(machine_id, worker = ?worker, "destroying an orphaned machine of this deployment");
                gone_ok(provider.destroy_machine(machine_id, true).await)?;
                report.orphans_destroyed += 1;
            }
        }
        Ok(())
    }
}

impl Reconciler {
    /// A worker's spawn env, with a fresh single-use bootstrap code.
    async fn env(
        &self,
        cfg: &ProviderRuntimeConfig,
        policy: &ScalingPolicy,
        worker_id: &str,
        conversation_id: Option<&str>,
        agent_key: Option<&str>,
    ) -> AppResult<BTreeMap<String, String>> {
        let code = self.app.store.create_bootstrap_code(worker_id, BOOTSTRAP_TTL_MS).await?;
        Ok(rules::spawn_env(&SpawnEnv {
            worker_id,
            conversation_id,
            agent_key,
            api_base_url: &cfg.api_base_url,
            workspace_id: &cfg.workspace_id,
            volume_path: &cfg.volume_path,
            idle_timeout_ms: policy.idle_timeout_ms,
            bootstrap_code: code.expose(),
        }))
    }
}

/// Why an action did not complete.
#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error("{0}")]
    Store(#[from] AppError),
    #[error("{0}")]
    Provider(#[from] ProviderError),
    #[error("the row changed since the cycle read it")]
    Moved,
}

/// `NotFound` confirms the thing is gone: success for a teardown.
fn gone_ok(r: Result<(), ProviderError>) -> Result<(), ProviderError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

fn worker_of(a: &Action) -> Option<&str> {
    match a {
        Action::Spawn { worker_id, .. }
        | Action::AttachMachine { worker_id, .. }
        | Action::Drain { worker_id, .. }
        | Action::Stop { worker_id, .. }
        | Action::Teardown { worker_id, .. }
        | Action::Park { worker_id, .. }
        | Action::StartWarm { worker_id, .. } => Some(worker_id),
        Action::DestroyOrphan { .. } | Action::DiscardWarm { .. } => None,
    }
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Spawn { .. } => "spawn",
        Action::AttachMachine { .. } => "attachMachine",
        Action::Drain { .. } => "drain",
        Action::Stop { .. } => "stop",
        Action::Teardown { .. } => "teardown",
        Action::DestroyOrphan { .. } => "destroyOrphan",
        Action::Park { .. } => "park",
        Action::StartWarm { .. } => "startWarm",
        Action::DiscardWarm { .. } => "discardWarm",
    }
}

fn merge(into: &mut CycleReport, r: CycleReport) {
    into.cycles += r.cycles;
    into.spawned += r.spawned;
    into.warm_started += r.warm_started;
    into.parked += r.parked;
    into.drained += r.drained;
    into.stopping += r.stopping;
    into.torn_down += r.torn_down;
    into.orphans_destroyed += r.orphans_destroyed;
    into.leases_released += r.leases_released;
    into.provider_errors += r.provider_errors;
    into.alive = r.alive;
    into.unserved = r.unserved;
    into.waiting = r.waiting;
    into.errors.extend(r.errors);
}
