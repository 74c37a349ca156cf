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
mod tests {
    use super::*;
    use crate::reconcile::provider::DEPLOYMENT_TAG;
    use std::collections::BTreeMap;

    const T: Millis = 1_700_000_000_000;
    const DEP: &str = "dep1";

    fn row(id: &str, status: WorkerStatus) -> WorkerItem {
        WorkerItem {
            worker_id: id.into(),
            provider: "fly".into(),
            status,
            load: 0,
            heartbeat_at: T,
            last_claim_at: None,
            last_complete_at: None,
            scheduled_shutdown_at: None,
            stopped_at: None,
            machine_id: Some(format!("m-{id}")),
            app_name: Some("app".into()),
            region: None,
            volume_id: Some(format!("v-{id}")),
            last_snapshot_id: None,
            assigned_conversation_id: None,
            assigned_agent_key: None,
            assigned_lease_id: None,
            assigned_at: None,
            drain_started_at: None,
            registered_at: Some(T),
            token_hash: None,
            token_issued_at: None,
            ttl: None,
        }
    }

    fn assigned(mut w: WorkerItem, c: &str) -> WorkerItem {
        w.assigned_conversation_id = Some(c.into());
        w.assigned_agent_key = Some("bot".into());
        w
    }

    fn machine(id: &str, worker: &str, state: MachineState, tagged: bool) -> Machine {
        let mut md = BTreeMap::new();
        if tagged {
            md.insert(DEPLOYMENT_TAG.to_string(), DEP.to_string());
            md.insert(WORKER_TAG.to_string(), worker.to_string());
        }
        Machine {
            id: id.into(),
            name: worker.into(),
            region: "fra".into(),
            image: "img".into(),
            state,
            raw_state: "x".into(),
            metadata: md,
            volume_ids: vec![],
        }
    }

    fn m_of(w: &WorkerItem, state: MachineState) -> Machine {
        machine(w.machine_id.as_deref().unwrap(), &w.worker_id, state, true)
    }

    fn demand(c: &str) -> Demand {
        Demand { conversation_id: c.into(), agent_key: "bot".into(), locked: false, lock_worker_id: None }
    }

    fn run(now: Millis, p: &ScalingPolicy, rows: &[WorkerItem], machines: &[Machine], d: &[Demand]) -> Plan {
        plan(&Observed {
            now,
            policy: p,
            deployment: DEP,
            provider_kind: "fly",
            app: "app",
            rows,
            machines,
            demand: d,
            warm: &[],
            id_seed: 7,
        })
    }

    fn spawns(p: &Plan) -> Vec<Option<String>> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn { conversation_id, .. } => Some(conversation_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn drains(p: &Plan) -> Vec<(String, Reason)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Drain { worker_id, reason } => Some((worker_id.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn teardowns(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Teardown { worker_id, .. } => Some(worker_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn pol(max: u32) -> ScalingPolicy {
        ScalingPolicy { max_workers: max, spawn_step: 10, ..ScalingPolicy::default() }
    }

    #[test]
    fn ids_carry_their_time() {
        let id = new_worker_id(T, 0xabc, 3);
        assert_eq!(worker_id_time(&id), Some(T));
        assert_ne!(id, new_worker_id(T, 0xabd, 3), "two cycles in the same millisecond get different ids (W-R2)");
        assert_eq!(worker_id_time("w1"), None);
        assert_eq!(worker_id_time("afw-17000000000001"), None);
    }

    #[test]
    fn one_pre_assigned_spawn_per_uncovered_conversation_up_to_the_cap() {
        let d = [demand("c1"), demand("c2"), demand("c3")];
        let p = run(T, &pol(2), &[], &[], &d);
        assert_eq!(spawns(&p), vec![Some("c1".into()), Some("c2".into())]);
        assert_eq!(p.unserved, 1);
        assert_eq!(p.alive_after, 2);
        // spawnStep bounds one cycle
        let p = run(T, &ScalingPolicy { max_workers: 10, spawn_step: 1, ..ScalingPolicy::default() }, &[], &[], &d);
        assert_eq!(spawns(&p).len(), 1);
    }

    #[test]
    fn sticky_worker_covers_its_conversation_and_unassigned_ones_take_the_first_targets() {
        let w1 = assigned(row("w1", WorkerStatus::Active), "c1");
        let w2 = row("w2", WorkerStatus::Active);
        let ms = [m_of(&w1, MachineState::Active), m_of(&w2, MachineState::Active)];
        let d = [demand("c1"), demand("c2"), demand("c3")];
        let p = run(T, &pol(5), &[w1, w2], &ms, &d);
        // c1 is w1's; c2 is left to the unassigned w2; c3 gets a machine.
        assert_eq!(spawns(&p), vec![Some("c3".into())]);
    }

    #[test]
    fn max_workers_is_a_hard_cap_counting_every_state_and_orphans_w_l2() {
        // The original counted only fresh active rows pinned to active conversations: a worker
        // pinned elsewhere, a draining and a stopping one were invisible and it spawned anyway.
        let a = assigned(row("a", WorkerStatus::Active), "idle-conv");
        let mut b = assigned(row("b", WorkerStatus::Draining), "x");
        b.last_claim_at = Some(T);
        b.drain_started_at = Some(T);
        let c = row("c", WorkerStatus::Stopping);
        let orphan = machine("m-orphan", &new_worker_id(T, 1, 0), MachineState::Active, true);
        let ms =
            [m_of(&a, MachineState::Active), m_of(&b, MachineState::Active), m_of(&c, MachineState::Stopping), orphan];
        let d = [demand("c1"), demand("c2")];
        let p = run(T, &pol(4), &[a.clone(), b.clone(), c.clone()], &ms, &d);
        assert!(spawns(&p).is_empty(), "4 machines alive (active, draining, stopping, orphan): no spawn at cap 4");
        assert_eq!(p.unserved, 2);
        let p = run(T, &pol(5), &[a, b, c], &ms, &d);
        assert_eq!(spawns(&p).len(), 1);
        assert!(p.alive_after <= 5);
    }

    #[test]
    fn at_the_cap_an_idle_worker_pinned_elsewhere_makes_room_w_l2() {
        // maxWorkers 1, the single worker pinned to a conversation without work: the original
        // starved the new conversation until the worker went stale.
        let mut a = assigned(row("a", WorkerStatus::Active), "old");
        a.last_complete_at = Some(T);
        let ms = [m_of(&a, MachineState::Active)];
        let p = run(T + 30_000, &pol(1), std::slice::from_ref(&a), &ms, &[demand("new")]);
        assert!(drains(&p).is_empty(), "not before reclaimIdleAfterMs");
        let p = run(T + 60_000, &pol(1), &[a], &ms, &[demand("new")]);
        assert_eq!(drains(&p), vec![("a".into(), Reason::Reclaim)]);
        assert!(spawns(&p).is_empty(), "the cap holds until its machine is gone");
    }

    #[test]
    fn min_workers_spawns_unassigned_and_is_never_drained_below() {
        let p = ScalingPolicy { max_workers: 3, min_workers: 2, ..ScalingPolicy::default() };
        let plan1 = run(T, &p, &[], &[], &[]);
        assert_eq!(spawns(&plan1), vec![None, None]);
        let mut a = row("a", WorkerStatus::Active);
        a.registered_at = Some(T - 3_600_000);
        a.heartbeat_at = T;
        let mut b = a.clone();
        b.worker_id = "b".into();
        b.machine_id = Some("m-b".into());
        let ms = [m_of(&a, MachineState::Active), m_of(&b, MachineState::Active)];
        let plan2 = run(T, &p, &[a.clone(), b.clone()], &ms, &[]);
        assert!(drains(&plan2).is_empty(), "idle for an hour, but the pool is at minWorkers");
        let plan3 = run(T, &ScalingPolicy { min_workers: 1, ..p }, &[a, b], &ms, &[]);
        assert_eq!(drains(&plan3).len(), 1);
    }

    #[test]
    fn idle_is_measured_from_the_last_job_end_not_staleness_or_the_claim_w_l1() {
        // A 40-minute job: claimed at T, completed at T+40min. The original measured the deadline
        // from the claim (drained at once) and drained idle workers after 7 min of staleness.
        let mut a = assigned(row("a", WorkerStatus::Active), "c1");
        a.last_claim_at = Some(T);
        a.last_complete_at = Some(T + 2_400_000);
        let ms = [m_of(&a, MachineState::Active)];
        let mut hb = a.clone();
        hb.heartbeat_at = T + 2_400_000 + 1_200_000; // idle heartbeats keep it fresh
        let p = run(T + 2_400_000 + 1_200_000, &pol(1), std::slice::from_ref(&hb), &ms, &[]);
        assert!(drains(&p).is_empty(), "20 min idle < 30 min");
        hb.heartbeat_at = T + 2_400_000 + 1_800_000;
        let p = run(T + 2_400_000 + 1_800_000, &pol(1), &[hb], &ms, &[]);
        assert_eq!(drains(&p), vec![("a".into(), Reason::Idle)]);
    }

    #[test]
    fn an_idle_worker_whose_conversation_has_work_is_kept() {
        let mut a = assigned(row("a", WorkerStatus::Active), "c1");
        a.registered_at = Some(T - 7_200_000);
        let ms = [m_of(&a, MachineState::Active)];
        let p = run(T, &pol(1), &[a], &ms, &[demand("c1")]);
        assert!(drains(&p).is_empty());
        assert!(spawns(&p).is_empty());
    }

    #[test]
    fn stale_heartbeat_drains_and_frees_the_conversation_w_r6() {
        let mut a = assigned(row("a", WorkerStatus::Active), "c1");
        a.load = 1;
        let ms = [m_of(&a, MachineState::Active)];
        let p = run(T + 419_999, &pol(2), std::slice::from_ref(&a), &ms, &[demand("c1")]);
        assert!(drains(&p).is_empty());
        assert!(spawns(&p).is_empty(), "c1 is covered by its live worker");
        let p = run(T + 420_000, &pol(2), &[a], &ms, &[demand("c1")]);
        assert_eq!(drains(&p), vec![("a".into(), Reason::StaleHeartbeat)]);
        assert_eq!(spawns(&p), vec![Some("c1".into())], "the crashed worker's conversation gets a new machine");
    }

    #[test]
    fn missing_machine_grace_then_retire_without_stopping_anything_unconfirmed() {
        let a = row("a", WorkerStatus::Active);
        let p = run(T + 90_000, &pol(1), std::slice::from_ref(&a), &[], &[]);
        assert!(p.actions.is_empty(), "{p:?}");
        assert_eq!(p.waiting[0].reason, "machine_missing_grace");
        assert_eq!(p.alive_after, 1, "a machine that may exist counts toward the cap");
        let p = run(T + 90_001, &pol(1), &[a], &[], &[]);
        assert_eq!(
            p.actions,
            vec![
                Action::Drain { worker_id: "a".into(), reason: Reason::MachineMissing },
                Action::Stop { worker_id: "a".into(), reason: Reason::MachineMissing },
                Action::Teardown {
                    worker_id: "a".into(),
                    machine_id: Some("m-a".into()),
                    volume_id: Some("v-a".into())
                },
            ]
        );
        assert_eq!(p.alive_after, 0);
    }

    #[test]
    fn a_stopped_machine_is_torn_down_with_its_row() {
        let a = assigned(row("a", WorkerStatus::Active), "c1");
        let ms = [m_of(&a, MachineState::Stopped)];
        let p = run(T, &pol(1), &[a], &ms, &[]);
        assert_eq!(teardowns(&p), vec!["a".to_string()]);
        assert!(matches!(&p.actions[2], Action::Teardown { machine_id: Some(m), .. } if m == "m-a"));
    }

    #[test]
    fn drain_deadline_stops_a_worker_that_never_snapshots_w_l3() {
        let mut a = row("a", WorkerStatus::Draining);
        a.last_claim_at = Some(T - 1);
        a.drain_started_at = Some(T);
        let ms = [m_of(&a, MachineState::Active)];
        let p = run(T + 599_999, &pol(1), std::slice::from_ref(&a), &ms, &[]);
        assert!(p.actions.is_empty());
        assert_eq!(p.waiting[0].reason, "awaiting_snapshot");
        let p = run(T + 600_000, &pol(1), &[a], &ms, &[]);
        assert_eq!(p.actions[0], Action::Stop { worker_id: "a".into(), reason: Reason::DrainDeadline });
        assert_eq!(teardowns(&p), vec!["a".to_string()]);
    }

    #[test]
    fn a_draining_worker_that_never_worked_needs_no_snapshot() {
        let a = row("a", WorkerStatus::Draining);
        let ms = [m_of(&a, MachineState::Active)];
        let p = run(T, &pol(1), &[a], &ms, &[]);
        assert_eq!(p.actions[0], Action::Stop { worker_id: "a".into(), reason: Reason::Snapshotted });
    }

    #[test]
    fn stopping_rows_are_torn_down_even_when_the_machine_is_stuck_stopping() {
        let a = row("a", WorkerStatus::Stopping);
        let ms = [m_of(&a, MachineState::Stopping)];
        let p = run(T, &pol(1), &[a], &ms, &[]);
        assert_eq!(
            p.actions,
            vec![Action::Teardown {
                worker_id: "a".into(),
                machine_id: Some("m-a".into()),
                volume_id: Some("v-a".into())
            }]
        );
    }

    #[test]
    fn orphans_are_destroyed_after_a_grace_untagged_machines_never_w_p4() {
        let young = machine("m1", &new_worker_id(T, 1, 0), MachineState::Active, true);
        let old = machine("m2", &new_worker_id(T - 300_000, 1, 0), MachineState::Stopped, true);
        let foreign = machine("m3", "web", MachineState::Active, false);
        let mut other_dep = machine("m4", "x", MachineState::Active, true);
        other_dep.metadata.insert(DEPLOYMENT_TAG.into(), "other".into());
        let p = run(T, &pol(10), &[], &[young, old, foreign, other_dep], &[]);
        assert_eq!(
            p.actions,
            vec![Action::DestroyOrphan { machine_id: "m2".into(), worker: Some(new_worker_id(T - 300_000, 1, 0)) }]
        );
        assert_eq!(p.waiting, vec![Waiting { id: "m1".into(), reason: "orphan_grace" }]);
        assert_eq!(p.alive_after, 2, "only this deployment's machines count");
    }

    #[test]
    fn a_row_without_machine_id_adopts_its_named_machine() {
        let mut a = assigned(row("a", WorkerStatus::Active), "c1");
        a.machine_id = None;
        let m = machine("m9", "a", MachineState::Active, true);
        let mut fresh = a.clone();
        fresh.heartbeat_at = T + 1_000_000;
        let p = run(T + 1_000_000, &pol(1), &[fresh], &[m], &[demand("c1")]);
        assert_eq!(p.actions, vec![Action::AttachMachine { worker_id: "a".into(), machine_id: "m9".into() }]);
        // and without one past the grace, it is retired (the original left a phantom row, W-P5)
        let p = run(T + 1_000_000, &pol(1), &[a], &[], &[]);
        assert_eq!(drains(&p), vec![("a".into(), Reason::NoMachine)]);
    }

    #[test]
    fn self_hosted_rows_count_as_coverage_but_are_never_touched() {
        let mut s = assigned(row("s", WorkerStatus::Active), "c1");
        s.provider = "self-hosted".into();
        s.machine_id = None;
        s.heartbeat_at = T - 10_000_000;
        s.heartbeat_at = T;
        s.registered_at = Some(T - 10_000_000);
        let p = run(T, &pol(1), &[s], &[], &[demand("c1")]);
        assert!(p.actions.is_empty(), "{p:?}");
        assert_eq!(p.alive_after, 0);
    }

    #[test]
    fn locked_conversations_held_by_live_workers_are_covered() {
        let a = row("a", WorkerStatus::Active);
        let ms = [m_of(&a, MachineState::Active)];
        let d = [Demand {
            conversation_id: "c1".into(),
            agent_key: "bot".into(),
            locked: true,
            lock_worker_id: Some("a".into()),
        }];
        // `a` is unassigned in its row but holds c1's lock: no spawn, and `a` is not spare.
        let p = run(T, &pol(3), &[a], &ms, &d);
        assert!(spawns(&p).is_empty());
    }

    #[test]
    fn volume_names_are_short_distinct_and_clean() {
        let a = volume_name("Afw-Data!", &new_worker_id(T, 1, 0));
        let b = volume_name("Afw-Data!", &new_worker_id(T, 1, 1));
        assert_ne!(a, b);
        assert!(a.starts_with("afw_data_"), "{a}");
        let long = volume_name("a_very_long_volume_prefix_name_exceeding", "w");
        assert!(long.len() <= 30, "{long}");
        assert!(volume_name("", "w").starts_with("afw_"));
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }

    #[test]
    fn spawn_env_drops_blanks_and_carries_no_long_lived_secret() {
        let e = SpawnEnv {
            worker_id: "w1",
            conversation_id: None,
            agent_key: Some(" "),
            api_base_url: "https://x",
            workspace_id: "default",
            volume_path: "/vol/",
            idle_timeout_ms: 60_000,
            bootstrap_code: "code",
        };
        let env = spawn_env(&e);
        assert!(!env.contains_key("OPENCLAW_CONVERSATION_ID") && !env.contains_key("OPENCLAW_AGENT_KEY"));
        assert_eq!(env["OPENCLAW_WORKSPACE_DIR"], "/vol/workspace");
        assert_eq!(env["WORKER_IDLE_TIMEOUT_MS"], "60000");
        assert_eq!(env["AGENT_FACTORY_BOOTSTRAP_CODE"], "code");
        assert!(env.keys().all(|k| !k.contains("TOKEN") && !k.contains("SERVICE_KEY")));
    }

    fn run_warm(
        now: Millis,
        p: &ScalingPolicy,
        rows: &[WorkerItem],
        ms: &[Machine],
        d: &[Demand],
        warm: &[WarmMachine],
    ) -> Plan {
        plan(&Observed {
            now,
            policy: p,
            deployment: DEP,
            provider_kind: "fly",
            app: "app",
            rows,
            machines: ms,
            demand: d,
            warm,
            id_seed: 7,
        })
    }

    #[test]
    fn warm_restarts_park_after_the_final_snapshot_and_restart_for_the_same_conversation() {
        let warm = ScalingPolicy { warm_pool_max: 1, warm_retention_ms: 3_600_000, ..pol(3) };
        let mut a = assigned(row("a", WorkerStatus::Stopping), "c1");
        a.last_snapshot_id = Some("s1".into());
        let ms = [m_of(&a, MachineState::Active)];
        // Off by default: torn down.
        assert_eq!(teardowns(&run(T, &pol(3), std::slice::from_ref(&a), &ms, &[])), vec!["a".to_string()]);
        let p = run_warm(T, &warm, std::slice::from_ref(&a), &ms, &[], &[]);
        assert!(
            matches!(&p.actions[..], [Action::Park { machine_id, conversation_id, .. }] if machine_id == "m-a" && conversation_id == "c1"),
            "{p:?}"
        );
        assert_eq!(p.alive_after, 0, "a parked machine is not a running one");
        // Without a final snapshot it is not kept.
        let mut b = a.clone();
        b.last_snapshot_id = None;
        assert_eq!(teardowns(&run_warm(T, &warm, &[b], &ms, &[], &[])), vec!["a".to_string()]);
        // Parked: c1 gets it back, c2 gets a new machine; it is no orphan.
        let wm = WarmMachine {
            machine_id: "m-a".into(),
            volume_id: Some("v-a".into()),
            worker_id: "a".into(),
            conversation_id: "c1".into(),
            agent_key: "bot".into(),
            parked_at: T,
        };
        let stopped = [m_of(&a, MachineState::Stopped)];
        let p = run_warm(T + 1_000, &warm, &[], &stopped, &[demand("c2"), demand("c1")], std::slice::from_ref(&wm));
        assert!(p.actions.iter().any(|x| matches!(x, Action::StartWarm { machine_id, conversation_id, .. } if machine_id == "m-a" && conversation_id == "c1")), "{p:?}");
        assert_eq!(spawns(&p), vec![Some("c2".into())]);
        assert!(!p.actions.iter().any(|x| matches!(x, Action::DestroyOrphan { .. })));
        // Past its retention: destroyed with its volume.
        let p = run_warm(T + 3_600_000, &warm, &[], &stopped, &[], std::slice::from_ref(&wm));
        assert_eq!(p.actions, vec![Action::DiscardWarm { machine_id: "m-a".into(), volume_id: Some("v-a".into()) }]);
    }

    #[test]
    fn policy_validation() {
        assert!(ScalingPolicy::default().validate().is_ok());
        let bad = ScalingPolicy { min_workers: 2, max_workers: 1, ..ScalingPolicy::default() };
        assert!(bad.validate().is_err());
        assert!(ScalingPolicy { min_cycle_interval_ms: 0, ..ScalingPolicy::default() }.validate().is_err());
        assert!(ScalingPolicy { spawn_step: 0, ..ScalingPolicy::default() }.validate().is_err());
    }
}
