//! Worker rules (pure): status transitions of `upsertWorkerState` and the control state.

use super::model::{Assignment, ControlState, UpsertWorkerArgs, WorkerPolicy};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::queue::rules;
use crate::workers::model::{WorkerItem, WorkerStatus};

/// The caps of `upsertWorkerState`'s strings (ids within DynamoDB's key limits, free strings
/// bounded), so no input reaches the store as an SDK error.
pub fn validate_upsert(a: &UpsertWorkerArgs) -> AppResult<()> {
    rules::validate_worker_id(&a.worker_id)?;
    crate::ids::check_text("provider", &a.provider, 64)?;
    for (name, v) in
        [("machineId", &a.machine_id), ("appName", &a.app_name), ("region", &a.region), ("volumeId", &a.volume_id)]
    {
        if let Some(v) = v {
            crate::ids::check_text(name, v, 256)?;
        }
    }
    if let Some(Some(x)) = &a.assignment {
        rules::validate_conversation_id(&x.conversation_id)?;
        rules::validate_agent_key(&x.agent_key)?;
        crate::ids::check_text("assignment.leaseId", &x.lease_id, 256)?;
    }
    for (name, v) in [("scheduledShutdownAt", a.scheduled_shutdown_at), ("stoppedAt", a.stopped_at)] {
        if v.is_some_and(|v| v < 0) {
            return Err(AppError::validation(format!("{name} must not be negative")));
        }
    }
    Ok(())
}

/// The row after an upsert (pure; spec §14), or the refused transition.
pub fn apply_upsert(prev: Option<&WorkerItem>, a: &UpsertWorkerArgs, now: Millis) -> AppResult<WorkerItem> {
    let running = matches!(a.status, WorkerStatus::Active | WorkerStatus::Draining | WorkerStatus::Stopping);
    let ending = matches!(a.status, WorkerStatus::Stopping | WorkerStatus::Stopped);
    let Some(p) = prev else {
        let mut w = WorkerItem {
            worker_id: a.worker_id.clone(),
            provider: a.provider.clone(),
            status: a.status,
            load: a.load.max(0),
            heartbeat_at: now,
            last_claim_at: None,
            last_complete_at: None,
            scheduled_shutdown_at: a.scheduled_shutdown_at,
            stopped_at: ending.then(|| a.stopped_at.unwrap_or(now)),
            machine_id: None,
            app_name: None,
            region: None,
            volume_id: a.volume_id.clone(),
            last_snapshot_id: None,
            assigned_conversation_id: None,
            assigned_agent_key: None,
            assigned_lease_id: None,
            assigned_at: None,
            drain_started_at: None,
            registered_at: Some(now),
            token_hash: None,
            token_issued_at: None,
            ttl: None,
        };
        if a.status == WorkerStatus::Stopped {
            w.ttl = w.stopped_at.map(crate::workers::model::stopped_ttl);
        }
        if let (Some(m), Some(app)) = (&a.machine_id, &a.app_name) {
            w.machine_id = Some(m.clone());
            w.app_name = Some(app.clone());
            w.region = a.region.clone();
        }
        set_assignment(&mut w, a.assignment.clone(), now);
        return Ok(w);
    };
    if !a.status.allowed_from().contains(&p.status) {
        return Err(AppError::conflict(format!(
            "Worker '{}' cannot transition from '{}' to '{}'.",
            a.worker_id,
            p.status.as_str(),
            a.status.as_str()
        )));
    }
    let mut w = p.clone();
    w.provider = a.provider.clone();
    w.status = a.status;
    w.load = a.load.max(0);
    if running {
        w.heartbeat_at = now;
    }
    w.scheduled_shutdown_at = a.scheduled_shutdown_at.or(p.scheduled_shutdown_at);
    w.stopped_at = if ending { Some(a.stopped_at.or(p.stopped_at).unwrap_or(now)) } else { None };
    if a.clear_last_snapshot_id {
        w.last_snapshot_id = None;
    }
    if a.clear_volume_id {
        w.volume_id = None;
    } else if a.volume_id.is_some() {
        w.volume_id = a.volume_id.clone();
    }
    if a.clear_machine_ref {
        w.machine_id = None;
        w.app_name = None;
        w.region = None;
    } else if let (Some(m), Some(app)) = (&a.machine_id, &a.app_name) {
        w.machine_id = Some(m.clone());
        w.app_name = Some(app.clone());
        w.region = a.region.clone();
    }
    set_assignment(&mut w, a.assignment.clone(), now);
    if a.status == WorkerStatus::Stopped {
        // A stopped worker's token stops working, and the row expires after the retention.
        w.token_hash = None;
        w.ttl = w.stopped_at.map(crate::workers::model::stopped_ttl);
    } else {
        w.ttl = None;
    }
    Ok(w)
}

fn set_assignment(w: &mut WorkerItem, a: Option<Option<Assignment>>, now: Millis) {
    match a {
        None => {}
        Some(None) => {
            w.assigned_conversation_id = None;
            w.assigned_agent_key = None;
            w.assigned_lease_id = None;
            w.assigned_at = None;
        }
        Some(Some(x)) => {
            w.assigned_conversation_id = Some(x.conversation_id);
            w.assigned_agent_key = Some(x.agent_key);
            w.assigned_lease_id = Some(x.lease_id);
            w.assigned_at = Some(x.assigned_at.unwrap_or(now));
        }
    }
}

/// The control state of a worker row (pure).
pub fn control_state(w: Option<&WorkerItem>, now: Millis, pol: &WorkerPolicy) -> ControlState {
    let Some(w) = w else {
        return ControlState {
            should_stop: true,
            action: "exit",
            reasons: vec!["missing_worker".into()],
            status: None,
            load: 0,
            heartbeat_at: None,
            stale_at: None,
            idle_deadline: None,
            now,
        };
    };
    let mut reasons = Vec::new();
    if w.status != WorkerStatus::Active {
        reasons.push(format!("status_{}", w.status.as_str()));
    }
    if w.heartbeat_at <= now - pol.stale_after_ms {
        reasons.push("stale_heartbeat".into());
    }
    if w.scheduled_shutdown_at.is_some_and(|t| t <= now) {
        reasons.push("scheduled_shutdown_due".into());
    }
    let idle_deadline = (w.load() == 0)
        .then(|| [w.last_claim_at, w.last_complete_at, w.registered_at].into_iter().flatten().max())
        .flatten()
        .map(|t| t + pol.idle_timeout_ms);
    if idle_deadline.is_some_and(|t| t <= now) {
        reasons.push("idle_timeout".into());
    }
    let should_stop = !reasons.is_empty();
    let action = match (should_stop, w.status) {
        (false, _) => "continue",
        (true, WorkerStatus::Active | WorkerStatus::Draining) => "drain",
        (true, _) => "exit",
    };
    ControlState {
        should_stop,
        action,
        reasons,
        status: Some(w.status),
        load: w.load(),
        heartbeat_at: Some(w.heartbeat_at),
        stale_at: Some(w.heartbeat_at + pol.stale_after_ms),
        idle_deadline,
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(status: WorkerStatus) -> UpsertWorkerArgs {
        UpsertWorkerArgs {
            machine_id: Some("m1".into()),
            app_name: Some("app".into()),
            ..UpsertWorkerArgs::status("w", "fly", status)
        }
    }

    #[test]
    fn transitions_follow_the_state_machine() {
        use WorkerStatus::*;
        let first = apply_upsert(None, &args(Stopped), 10).unwrap();
        assert_eq!(first.stopped_at, Some(10));
        let active = apply_upsert(None, &args(Active), 10).unwrap();
        assert_eq!(active.machine_id.as_deref(), Some("m1"));
        for (from, to, ok) in [
            (Active, Active, true),
            (Active, Draining, true),
            (Draining, Stopping, true),
            (Stopping, Stopped, true),
            (Stopped, Stopped, true),
            (Active, Stopping, false),
            (Active, Stopped, false),
            (Draining, Active, false),
            (Stopped, Active, false),
            (Stopping, Active, false),
        ] {
            let mut p = active.clone();
            p.status = from;
            let r = apply_upsert(Some(&p), &args(to), 20);
            assert_eq!(r.is_ok(), ok, "{from:?} -> {to:?}");
            if !ok {
                assert_eq!(
                    r.unwrap_err().to_string(),
                    format!("Worker 'w' cannot transition from '{}' to '{}'.", from.as_str(), to.as_str())
                );
            }
        }
    }

    #[test]
    fn control_state_reasons_and_idle_deadline() {
        let pol = WorkerPolicy::default();
        let none = control_state(None, 5, &pol);
        assert!(none.should_stop);
        assert_eq!((none.action, none.reasons.as_slice()), ("exit", &["missing_worker".to_string()][..]));
        let mut w = apply_upsert(None, &args(WorkerStatus::Active), 1_000).unwrap();
        let fresh = control_state(Some(&w), 1_000 + 60_000, &pol);
        assert!(!fresh.should_stop, "{fresh:?}");
        assert_eq!(fresh.idle_deadline, Some(1_000 + pol.idle_timeout_ms));
        // Alive (heartbeat refreshed) but idle for the whole idle timeout: drain.
        w.heartbeat_at = 1_000 + pol.idle_timeout_ms;
        let idle = control_state(Some(&w), 1_000 + pol.idle_timeout_ms, &pol);
        assert_eq!((idle.action, idle.reasons.clone()), ("drain", vec!["idle_timeout".to_string()]));
        // A job in flight: no idle deadline at all.
        w.load = 1;
        assert_eq!(control_state(Some(&w), 1_000 + pol.idle_timeout_ms, &pol).idle_deadline, None);
        // Every reason at once, in a stable order.
        w.load = 0;
        w.status = WorkerStatus::Stopping;
        w.heartbeat_at = 0;
        w.scheduled_shutdown_at = Some(10);
        let all = control_state(Some(&w), pol.idle_timeout_ms * 2, &pol);
        assert_eq!(all.action, "exit");
        assert_eq!(all.reasons, vec!["status_stopping", "stale_heartbeat", "scheduled_shutdown_due", "idle_timeout"]);
        // Exactly at the stale boundary counts as stale (spec: heartbeatAt <= now - staleAfterMs).
        let mut b = apply_upsert(None, &args(WorkerStatus::Active), 0).unwrap();
        b.last_claim_at = Some(pol.stale_after_ms);
        assert!(control_state(Some(&b), pol.stale_after_ms, &pol).reasons == vec!["stale_heartbeat".to_string()]);
        assert!(!control_state(Some(&b), pol.stale_after_ms - 1, &pol).should_stop);
    }

    #[test]
    fn entering_stopped_drops_the_token() {
        let mut w = apply_upsert(None, &args(WorkerStatus::Stopping), 1).unwrap();
        w.token_hash = Some("h".into());
        let stopped = apply_upsert(Some(&w), &args(WorkerStatus::Stopped), 2).unwrap();
        assert_eq!(stopped.token_hash, None);
        let mut d = apply_upsert(None, &args(WorkerStatus::Draining), 1).unwrap();
        d.token_hash = Some("h".into());
        assert_eq!(apply_upsert(Some(&d), &args(WorkerStatus::Stopping), 2).unwrap().token_hash.as_deref(), Some("h"));
    }

    #[test]
    fn upsert_keeps_clears_and_replaces() {
        let mut a = args(WorkerStatus::Active);
        a.assignment = Some(Some(Assignment {
            conversation_id: "c".into(),
            agent_key: "k".into(),
            lease_id: "spawn:w".into(),
            assigned_at: None,
        }));
        let w = apply_upsert(None, &a, 5).unwrap();
        assert_eq!(w.assigned_conversation_id.as_deref(), Some("c"));
        assert_eq!(w.assigned_at, Some(5));
        let mut b = args(WorkerStatus::Draining);
        b.clear_machine_ref = true;
        let d = apply_upsert(Some(&w), &b, 9).unwrap();
        assert_eq!(d.assigned_conversation_id.as_deref(), Some("c"), "omitted assignment is kept");
        assert!(d.machine_id.is_none());
        assert_eq!(d.heartbeat_at, 9);
        let mut c = args(WorkerStatus::Draining);
        c.assignment = Some(None);
        assert!(apply_upsert(Some(&d), &c, 10).unwrap().assigned_conversation_id.is_none());
        let mut st = args(WorkerStatus::Stopping);
        st.stopped_at = None;
        let s1 = apply_upsert(Some(&d), &st, 11).unwrap();
        assert_eq!(s1.stopped_at, Some(11));
        let s2 = apply_upsert(Some(&s1), &args(WorkerStatus::Stopped), 50).unwrap();
        assert_eq!(s2.stopped_at, Some(11), "stoppedAt kept");
        assert_eq!(s2.heartbeat_at, 11, "heartbeat preserved when entering stopped");
    }
}
