//! Unit tests of the reconcile plan (one per rule, each naming the weakness of the original it
//! fixes), with time and ids given.

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
    let ms = [m_of(&a, MachineState::Active), m_of(&b, MachineState::Active), m_of(&c, MachineState::Stopping), orphan];
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
            Action::Teardown { worker_id: "a".into(), machine_id: Some("m-a".into()), volume_id: Some("v-a".into()) },
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
        vec![Action::Teardown { worker_id: "a".into(), machine_id: Some("m-a".into()), volume_id: Some("v-a".into()) }]
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
