//! The reconcile cycle as a pure plan (spec §5, with the fixes of §11): observed worker rows +
//! the provider's inventory + demand + the policy + now -> the actions to take. No I/O; time
//! and fresh ids are given.

use super::model::{Action, Demand, Plan, Reason, ScalingPolicy, Waiting, WarmMachine};
use super::provider::{Machine, MachineState, WORKER_TAG};
use crate::clock::Millis;
use crate::workers::model::{WorkerItem, WorkerStatus};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Everything one cycle looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub now: Millis,
    pub policy: &'a ScalingPolicy,
    /// This deployment's id: only machines tagged with it are ever touched.
    pub deployment: &'a str,
    /// The provider's kind (`fly`, `process`) and app: rows of that provider and app are the
    /// managed pool; other rows (self-hosted workers) only count as coverage.
    pub provider_kind: &'a str,
    pub app: &'a str,
    /// Rows in a running status (`active`, `draining`, `stopping`): never the stopped history.
    pub rows: &'a [WorkerItem],
    /// The provider's listing of the app's machines.
    pub machines: &'a [Machine],
    /// Conversations with work now, oldest first.
    pub demand: &'a [Demand],
    /// Machines kept stopped for warm restarts.
    pub warm: &'a [WarmMachine],
    /// Makes this cycle's new worker ids unique (random per cycle).
    pub id_seed: u64,
}

/// A new worker id: `afw-<now:013>-<seed hex>-<i>`. The time is part of it, so an orphaned
/// machine's age is known from its name.
pub fn new_worker_id(now: Millis, seed: u64, i: usize) -> String {
    format!("afw-{now:013}-{seed:016x}-{i}")
}

/// The creation time in a worker id made by [`new_worker_id`].
pub fn worker_id_time(id: &str) -> Option<Millis> {
    let rest = id.strip_prefix("afw-")?;
    let t = rest.get(..13)?;
    if rest.as_bytes().get(13) != Some(&b'-') {
        return None;
    }
    t.parse().ok()
}

/// Whether a row is managed by this provider and app (reconcile may act on it).
pub fn managed(row: &WorkerItem, kind: &str, app: &str) -> bool {
    row.provider == kind && row.app_name.as_deref().is_none_or(|a| a == app)
}

/// A row's last sign of life: heartbeat (worker-sent) or registration, whichever is later.
fn last_sign(w: &WorkerItem) -> Millis {
    w.heartbeat_at.max(w.registered_at.unwrap_or(0))
}

fn is_stale(w: &WorkerItem, o: &Observed<'_>) -> bool {
    o.now - w.heartbeat_at >= o.policy.stale_after_ms
}

/// When the worker last ended a job (or started existing): the base of the idle deadline
/// (spec W-L1: measured from the last job end, not the last claim).
pub fn idle_since(w: &WorkerItem) -> Millis {
    [w.last_complete_at, w.last_claim_at, w.registered_at, w.assigned_at].into_iter().flatten().max().unwrap_or(0)
}

/// The cycle's decisions.
pub fn plan(o: &Observed<'_>) -> Plan {
    let p = o.policy;
    let mut plan = Plan::default();
    let tagged: Vec<&Machine> = o.machines.iter().filter(|m| m.tagged_for(o.deployment)).collect();
    let by_id: HashMap<&str, &Machine> = tagged.iter().map(|m| (m.id.as_str(), *m)).collect();
    let by_worker: HashMap<&str, &Machine> = tagged
        .iter()
        .filter(|m| m.state != MachineState::Gone)
        .map(|m| (m.metadata.get(WORKER_TAG).map(String::as_str).unwrap_or(m.name.as_str()), *m))
        .collect();
    let demand_ids: HashSet<&str> = o.demand.iter().map(|d| d.conversation_id.as_str()).collect();
    let mut claimed_machines: HashSet<&str> = HashSet::new();
    // Rows leaving the pool this cycle (drained, stopped or torn down): not capacity.
    let mut leaving: HashSet<&str> = HashSet::new();
    // Machines that may be alive: the hard cap counts them.
    let mut alive = 0u32;

    // Warm machines: kept while listed, stopped and within retention; otherwise discarded.
    let warm_on = p.warm_pool_max > 0 && p.warm_retention_ms > 0;
    let warm_ids: HashSet<&str> = o.warm.iter().map(|w| w.machine_id.as_str()).collect();
    let mut warm_avail: Vec<&WarmMachine> = Vec::new();
    for wm in o.warm {
        let listed = by_id.get(wm.machine_id.as_str()).filter(|m| m.state != MachineState::Gone);
        let expired = !warm_on || o.now - wm.parked_at >= p.warm_retention_ms;
        match listed {
            Some(m) if !expired && m.state == MachineState::Stopped => warm_avail.push(wm),
            Some(_) if !expired => plan.waiting.push(Waiting { id: wm.machine_id.clone(), reason: "warm_not_stopped" }),
            _ => plan
                .actions
                .push(Action::DiscardWarm { machine_id: wm.machine_id.clone(), volume_id: wm.volume_id.clone() }),
        }
    }
    let mut warm_count = warm_avail.len() as u32;

    let rows: Vec<&WorkerItem> = o.rows.iter().filter(|w| w.status != WorkerStatus::Stopped).collect();
    for w in rows.iter().filter(|w| managed(w, o.provider_kind, o.app)) {
        let id = w.worker_id.as_str();
        let mut m = w.machine_id.as_deref().and_then(|mid| by_id.get(mid).copied());
        if m.is_none()
            && w.machine_id.is_none()
            && let Some(found) = by_worker.get(id)
        {
            plan.actions.push(Action::AttachMachine { worker_id: id.into(), machine_id: found.id.clone() });
            m = Some(found);
        }
        if let Some(m) = m {
            claimed_machines.insert(m.id.as_str());
        }
        let within_grace = o.now - last_sign(w) <= p.missing_machine_grace_ms;
        // Whether the machine is confirmed down (listed as stopped/gone, or missing past grace).
        let down: Option<Reason> = match (m, &w.machine_id) {
            (Some(m), _) if m.state != MachineState::Active => Some(Reason::MachineGone),
            (Some(_), _) => None,
            (None, Some(_)) if within_grace => None,
            (None, Some(_)) => Some(Reason::MachineMissing),
            (None, None) if within_grace => None,
            (None, None) => Some(Reason::NoMachine),
        };
        let machine_alive = match m {
            Some(m) => m.state != MachineState::Gone,
            None => down.is_none(),
        };
        if machine_alive {
            alive += 1;
        }
        // Teardown destroys the listed machine, or the row's (a destroy answered "not found"
        // is the provider's confirmation that it is gone).
        let machine_id = m.filter(|m| m.state != MachineState::Gone).map(|m| m.id.clone()).or(w.machine_id.clone());
        if m.is_none() && down.is_none() && w.status != WorkerStatus::Stopping {
            plan.waiting.push(Waiting {
                id: id.into(),
                reason: if w.machine_id.is_some() { "machine_missing_grace" } else { "spawning" },
            });
        }
        match w.status {
            WorkerStatus::Active => {
                if let Some(r) = down {
                    retire(&mut plan, w, WorkerStatus::Active, r, machine_id);
                    leaving.insert(id);
                } else if m.is_some() && is_stale(w, o) {
                    plan.actions.push(Action::Drain { worker_id: id.into(), reason: Reason::StaleHeartbeat });
                    leaving.insert(id);
                }
            }
            WorkerStatus::Draining => {
                leaving.insert(id);
                let since = w.drain_started_at.unwrap_or(w.heartbeat_at);
                if let Some(r) = down {
                    retire(&mut plan, w, WorkerStatus::Draining, r, machine_id);
                } else if w.last_claim_at.is_none() {
                    retire(&mut plan, w, WorkerStatus::Draining, Reason::Snapshotted, machine_id);
                } else if o.now - since >= p.drain_deadline_ms {
                    retire(&mut plan, w, WorkerStatus::Draining, Reason::DrainDeadline, machine_id);
                } else {
                    plan.waiting.push(Waiting { id: id.into(), reason: "awaiting_snapshot" });
                }
            }
            WorkerStatus::Stopping => {
                leaving.insert(id);
                let parkable = warm_on
                    && warm_count < p.warm_pool_max
                    && w.last_snapshot_id.is_some()
                    && m.is_some_and(|m| {
                        matches!(m.state, MachineState::Active | MachineState::Stopping | MachineState::Stopped)
                    });
                match (parkable, m, w.assigned_conversation_id.as_ref(), w.assigned_agent_key.as_ref()) {
                    (true, Some(m), Some(c), Some(a)) => {
                        warm_count += 1;
                        alive -= 1; // parked: stopped and kept, not a running machine
                        plan.actions.push(Action::Park {
                            worker_id: id.into(),
                            machine_id: m.id.clone(),
                            volume_id: w.volume_id.clone(),
                            conversation_id: c.clone(),
                            agent_key: a.clone(),
                        });
                    }
                    _ => retire(&mut plan, w, WorkerStatus::Stopping, Reason::Snapshotted, machine_id),
                }
            }
            WorkerStatus::Stopped => {}
        }
    }

    // Orphans: machines of this deployment that no live row claims (a crash between create and
    // row write, a row stopped while its machine lived on). Untagged machines are never touched.
    let live_ids: HashSet<&str> = rows.iter().map(|w| w.worker_id.as_str()).collect();
    for m in &tagged {
        if m.state == MachineState::Gone || claimed_machines.contains(m.id.as_str()) || warm_ids.contains(m.id.as_str())
        {
            continue;
        }
        let worker = m.metadata.get(WORKER_TAG).cloned().unwrap_or_else(|| m.name.clone());
        if live_ids.contains(worker.as_str()) {
            // A row of another provider/app claims it by name: not ours to judge.
            continue;
        }
        alive += 1;
        let born = worker_id_time(&worker).unwrap_or(0);
        if o.now - born >= p.orphan_grace_ms {
            plan.actions.push(Action::DestroyOrphan { machine_id: m.id.clone(), worker: Some(worker) });
        } else {
            plan.waiting.push(Waiting { id: m.id.clone(), reason: "orphan_grace" });
        }
    }

    // Capacity: fresh active rows not leaving, of any provider (a self-hosted worker serves too).
    let serving: Vec<&WorkerItem> = rows
        .iter()
        .copied()
        .filter(|w| w.status == WorkerStatus::Active && !leaving.contains(w.worker_id.as_str()) && !is_stale(w, o))
        .collect();
    let mut covered: HashSet<&str> = serving.iter().filter_map(|w| w.assigned_conversation_id.as_deref()).collect();
    let serving_ids: HashSet<&str> = serving.iter().map(|w| w.worker_id.as_str()).collect();
    for d in o.demand.iter().filter(|d| d.locked) {
        if d.lock_worker_id.as_deref().is_some_and(|x| serving_ids.contains(x)) {
            covered.insert(d.conversation_id.as_str());
        }
    }
    let lock_holders: HashSet<&str> = o.demand.iter().filter_map(|d| d.lock_worker_id.as_deref()).collect();
    let unassigned = serving
        .iter()
        .filter(|w| w.assigned_conversation_id.is_none() && !lock_holders.contains(w.worker_id.as_str()))
        .count();
    let targets: Vec<&Demand> =
        o.demand.iter().filter(|d| !covered.contains(d.conversation_id.as_str())).skip(unassigned).collect();
    // No conversation gets two spawns (the demand list is distinct, but be sure).
    let mut seen = BTreeSet::new();
    let targets: Vec<&Demand> = targets.into_iter().filter(|d| seen.insert(d.conversation_id.as_str())).collect();
    let room = p.max_workers.saturating_sub(alive);
    let to_spawn = (p.spawn_step.min(room) as usize).min(targets.len());
    for (i, d) in targets.iter().take(to_spawn).enumerate() {
        let worker_id = new_worker_id(o.now, o.id_seed, i);
        // A warm machine of the same conversation first (its volume holds that workspace).
        if let Some(pos) = warm_avail.iter().position(|w| w.conversation_id == d.conversation_id) {
            let wm = warm_avail.remove(pos);
            plan.actions.push(Action::StartWarm {
                worker_id,
                machine_id: wm.machine_id.clone(),
                volume_id: wm.volume_id.clone(),
                conversation_id: d.conversation_id.clone(),
                agent_key: d.agent_key.clone(),
            });
            continue;
        }
        plan.actions.push(Action::Spawn {
            worker_id,
            conversation_id: Some(d.conversation_id.clone()),
            agent_key: Some(d.agent_key.clone()),
        });
    }
    let mut spawned = to_spawn as u32;
    // The floor: unassigned workers up to minWorkers (managed ones only).
    let managed_serving = serving.iter().filter(|w| managed(w, o.provider_kind, o.app)).count() as u32 + spawned;
    let floor_room = p.min_workers.saturating_sub(managed_serving).min(room - spawned).min(p.spawn_step - spawned);
    for i in 0..floor_room as usize {
        plan.actions.push(Action::Spawn {
            worker_id: new_worker_id(o.now, o.id_seed, to_spawn + i),
            conversation_id: None,
            agent_key: None,
        });
        spawned += 1;
    }
    let unserved = (targets.len() - to_spawn) as u32;

    // Idle shutdown: active, load 0, no work for its conversation, idle since its last job
    // ended for idleTimeoutMs; never below minWorkers. At the cap with work waiting, idle
    // workers make room sooner (reclaim).
    let mut keep = managed_serving.saturating_sub(floor_room);
    let mut reclaim_wanted = unserved;
    let mut idle: Vec<&WorkerItem> = serving
        .iter()
        .copied()
        .filter(|w| managed(w, o.provider_kind, o.app) && w.load() == 0)
        .filter(|w| w.assigned_conversation_id.as_deref().is_none_or(|c| !demand_ids.contains(c)))
        .collect();
    idle.sort_by_key(|w| (idle_since(w), w.worker_id.clone()));
    for w in idle {
        let idle_for = o.now - idle_since(w);
        let reason = if idle_for >= p.idle_timeout_ms {
            Reason::Idle
        } else if reclaim_wanted > 0 && idle_for >= p.reclaim_idle_after_ms {
            Reason::Reclaim
        } else {
            continue;
        };
        if keep <= p.min_workers {
            plan.waiting.push(Waiting { id: w.worker_id.clone(), reason: "min_workers" });
            continue;
        }
        if reason == Reason::Reclaim {
            reclaim_wanted -= 1;
        }
        keep -= 1;
        plan.actions.push(Action::Drain { worker_id: w.worker_id.clone(), reason });
    }

    plan.alive_after = alive + spawned;
    plan.unserved = unserved;
    plan
}

/// A worker's dedicated volume name: `<prefix>_<hash>`, at most 30 characters (Fly's limit),
/// the hash a 64-bit FNV-1a of the worker id in base 36 (the original's 32-bit hash could
/// collide, W-P7). Lower-case `[a-z0-9_]` only.
pub fn volume_name(prefix: &str, worker_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in worker_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut hash = String::new();
    loop {
        let d = (h % 36) as u32;
        hash.insert(0, char::from_digit(d, 36).unwrap_or('0'));
        h /= 36;
        if h == 0 {
            break;
        }
    }
    let clean: String =
        prefix.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let clean = clean.trim_matches('_');
    let clean = if clean.is_empty() { "afw" } else { clean };
    let room = 29 - hash.len();
    format!("{}_{hash}", &clean[..clean.len().min(room)])
}

/// What a spawned worker's env is built from (spec §7, without the original's plaintext
/// bridge secrets: those come in the hydration bundle).
#[derive(Debug, Clone)]
pub struct SpawnEnv<'a> {
    pub worker_id: &'a str,
    pub conversation_id: Option<&'a str>,
    pub agent_key: Option<&'a str>,
    pub api_base_url: &'a str,
    pub workspace_id: &'a str,
    pub volume_path: &'a str,
    pub idle_timeout_ms: i64,
    /// The single-use bootstrap code the worker exchanges for its token (`POST
    /// /worker/bootstrap`). Never logged.
    pub bootstrap_code: &'a str,
}

/// The spawn env: runtime defaults (paths under the volume path, not a hard-coded `/data`),
/// then the worker's identity and target; blank values dropped, kept values not trimmed.
pub fn spawn_env(e: &SpawnEnv<'_>) -> std::collections::BTreeMap<String, String> {
    let vp = e.volume_path.trim_end_matches('/');
    let state = format!("{vp}/.clawdbot");
    let ws = format!("{vp}/workspace");
    let pairs: Vec<(&str, String)> = vec![
        ("NODE_ENV", "production".into()),
        ("OPENCLAW_GATEWAY_HOST", "127.0.0.1".into()),
        ("OPENCLAW_GATEWAY_PORT", "18789".into()),
        ("OPENCLAW_GATEWAY_URL", "http://127.0.0.1:18789".into()),
        ("OPENCLAW_STATE_DIR", state.clone()),
        ("OPENCLAW_WORKSPACE_DIR", ws.clone()),
        ("OPENCLAW_CONFIG_PATH", format!("{state}/openclaw.json")),
        ("OPENCLAW_REQUIRE_DATA_MOUNT", "true".into()),
        ("OPENCLAW_RUN_SETUP", "false".into()),
        ("OPENCLAW_SETUP_TIMEOUT_MS", "90000".into()),
        ("OPENCLAW_GATEWAY_COMMAND", "node /app/openclaw.mjs gateway".into()),
        ("OPENCLAW_GATEWAY_READY_TIMEOUT_MS", "60000".into()),
        ("OPENCLAW_GATEWAY_READY_POLL_MS", "500".into()),
        ("OPENCLAW_GATEWAY_READY_REQUIRED", "true".into()),
        ("SKILLS_BOOTSTRAP_MODE", "db_manifest".into()),
        ("SKILLS_BOOTSTRAP_REQUIRED", "false".into()),
        ("SKILLS_BOOTSTRAP_TIMEOUT_MS", "15000".into()),
        ("SKILLS_RELEASE_CHANNEL", "stable".into()),
        ("OPENCLAW_SKILLS_DIR", format!("{ws}/skills")),
        ("AGENT_FACTORY_URL", e.api_base_url.into()),
        ("WORKSPACE_ID", e.workspace_id.into()),
        ("WORKER_ID", e.worker_id.into()),
        ("AGENT_FACTORY_WORKER_ID", e.worker_id.into()),
        ("WORKER_IDLE_TIMEOUT_MS", e.idle_timeout_ms.to_string()),
        ("OPENCLAW_AGENT_KEY", e.agent_key.unwrap_or_default().into()),
        ("OPENCLAW_CONVERSATION_ID", e.conversation_id.unwrap_or_default().into()),
        ("AGENT_FACTORY_BOOTSTRAP_CODE", e.bootstrap_code.into()),
    ];
    pairs.into_iter().filter(|(_, v)| !v.trim().is_empty()).map(|(k, v)| (k.to_string(), v)).collect()
}

/// Walk a row whose work is over to `stopped`: the remaining transitions, then the teardown
/// (which marks it stopped only after the provider confirmed the machine and volume gone).
fn retire(plan: &mut Plan, w: &WorkerItem, from: WorkerStatus, reason: Reason, machine_id: Option<String>) {
    let id = &w.worker_id;
    if from == WorkerStatus::Active {
        plan.actions.push(Action::Drain { worker_id: id.clone(), reason });
    }
    if matches!(from, WorkerStatus::Active | WorkerStatus::Draining) {
        plan.actions.push(Action::Stop { worker_id: id.clone(), reason });
    }
    plan.actions.push(Action::Teardown { worker_id: id.clone(), machine_id, volume_id: w.volume_id.clone() });
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
