//! Worker rows: reads and `upsertWorkerState` with the allowed status transitions (spec §5.2, §14).

use super::{Store, from_item, s, to_item};
use crate::clock::Millis;
use crate::error::{AppError, AppResult, sdk_error};
use crate::model::{WorkerItem, WorkerStatus};
use crate::queue::rules;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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
            registered_at: Some(now),
            token_hash: None,
            token_issued_at: None,
        };
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
        // A stopped worker's token stops working.
        w.token_hash = None;
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

impl Store {
    pub async fn get_worker(&self, worker_id: &str) -> AppResult<Option<WorkerItem>> {
        let k = HashMap::from([("workerId".to_string(), s(worker_id))]);
        self.get(&self.tables.workers, k).await?.map(from_item).transpose()
    }

    /// `upsertWorkerState`: read, apply the rules, write back only if nobody changed the row.
    pub async fn upsert_worker_state(&self, a: &UpsertWorkerArgs) -> AppResult<WorkerItem> {
        rules::validate_worker_id(&a.worker_id)?;
        if a.provider.trim().is_empty() {
            return Err(AppError::validation("provider is required and must not be blank"));
        }
        if let Some(Some(x)) = &a.assignment {
            rules::validate_conversation_id(&x.conversation_id)?;
            rules::validate_agent_key(&x.agent_key)?;
        }
        for _ in 0..5 {
            let now = self.now();
            let prev = self.get_worker(&a.worker_id).await?;
            let next = apply_upsert(prev.as_ref(), a, now)?;
            let mut req = self.client.put_item().table_name(&self.tables.workers).set_item(Some(to_item(&next)?));
            req = match &prev {
                None => req.condition_expression("attribute_not_exists(workerId)"),
                Some(p) => req
                    .condition_expression("#st = :st AND heartbeatAt = :hb AND #ld = :ld")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_names("#ld", "load")
                    .expression_attribute_values(":st", s(p.status.as_str()))
                    .expression_attribute_values(":hb", AttributeValue::N(p.heartbeat_at.to_string()))
                    .expression_attribute_values(":ld", AttributeValue::N(p.load.to_string())),
            };
            match req.send().await {
                Ok(_) => {
                    // An assignment keeps other workers out of its conversation (I6), like a claim.
                    if let (Some(Some(x)), WorkerStatus::Active) = (&a.assignment, next.status) {
                        self.own_assigned_conversation(&a.worker_id, &x.conversation_id, &x.agent_key).await?;
                    }
                    return Ok(next);
                }
                Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => continue,
                Err(e) => return Err(sdk_error("PutItem worker", e)),
            }
        }
        Err(AppError::conflict(format!("worker '{}' changed during the update; try again", a.worker_id)))
    }
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

/// The control state of a worker row (pure).
pub fn control_state(w: Option<&WorkerItem>, now: Millis, pol: &crate::config::QueuePolicy) -> ControlState {
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

impl Store {
    /// `mintWorkerToken`: a new token for the worker (registering it as `active` when the row does
    /// not exist). The previous token stops working. Refused for stopping/stopped workers.
    pub async fn mint_worker_token(&self, a: &MintTokenArgs) -> AppResult<MintedToken> {
        rules::validate_worker_id(&a.worker_id)?;
        let provider = a.provider.as_deref().map(str::trim).unwrap_or("self-hosted");
        if provider.is_empty() || provider.len() > 64 {
            return Err(AppError::validation("provider must be 1 to 64 characters"));
        }
        let token = crate::worker_auth::new_token(&a.worker_id);
        let now = self.now();
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.workers)
            .set_key(Some(HashMap::from([("workerId".to_string(), s(&a.worker_id))])))
            .update_expression(
                "SET tokenHash = :h, tokenIssuedAt = :now, provider = if_not_exists(provider, :p), \
                 #st = if_not_exists(#st, :active), heartbeatAt = if_not_exists(heartbeatAt, :now), \
                 registeredAt = if_not_exists(registeredAt, :now), #ld = if_not_exists(#ld, :zero)",
            )
            .condition_expression("attribute_not_exists(workerId) OR #st IN (:active, :draining)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#ld", "load")
            .expression_attribute_values(":h", s(crate::worker_auth::token_hash(token.expose())))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":p", s(provider))
            .expression_attribute_values(":active", s("active"))
            .expression_attribute_values(":draining", s("draining"))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let Some(o) = super::applied(out, "UpdateItem worker token")? else {
            return Err(AppError::conflict(format!(
                "worker '{}' is stopping or stopped and gets no new token; register a new workerId",
                a.worker_id
            )));
        };
        let w: WorkerItem = from_item(o.attributes.unwrap_or_default())?;
        Ok(MintedToken {
            worker_id: a.worker_id.clone(),
            token: token.expose().to_string(),
            issued_at: now,
            status: w.status,
        })
    }

    /// `revokeWorkerToken`: the worker's token stops working at once for writes, and within the
    /// authentication cache time (`WORKER_AUTH_CACHE_MS`) for reads. Returns whether one existed.
    pub async fn revoke_worker_token(&self, worker_id: &str) -> AppResult<bool> {
        rules::validate_worker_id(worker_id)?;
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.workers)
            .set_key(Some(HashMap::from([("workerId".to_string(), s(worker_id))])))
            .update_expression("REMOVE tokenHash, tokenIssuedAt")
            .condition_expression("attribute_exists(tokenHash)")
            .send()
            .await;
        Ok(super::applied(out, "UpdateItem worker token")?.is_some())
    }

    /// `getWorkerControlState` on the server clock.
    pub async fn worker_control_state(&self, worker_id: &str) -> AppResult<ControlState> {
        rules::validate_worker_id(worker_id)?;
        let w = self.get_worker(worker_id).await?;
        let st = control_state(w.as_ref(), self.now(), &self.policy);
        if st.should_stop {
            tracing::info!(worker_id, reasons = ?st.reasons, "worker should stop");
        }
        Ok(st)
    }

    /// The worker-level heartbeat (the original has none, W8): an idle worker proves it is alive.
    /// One UpdateItem that also re-checks the token; returns the control state.
    pub async fn worker_heartbeat(&self, p: &crate::worker_auth::Principal) -> AppResult<ControlState> {
        let now = self.now();
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.workers)
            .set_key(Some(HashMap::from([("workerId".to_string(), s(&p.worker_id))])))
            .update_expression("SET heartbeatAt = :now")
            .condition_expression("tokenHash = :h AND #st IN (:active, :draining, :stopping)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":h", s(&p.token_hash))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":active", s("active"))
            .expression_attribute_values(":draining", s("draining"))
            .expression_attribute_values(":stopping", s("stopping"))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let Some(o) = super::applied(out, "UpdateItem worker heartbeat")? else {
            let row = self.get_worker(&p.worker_id).await?;
            crate::worker_auth::check_row(row.as_ref(), &p.token_hash)?;
            return Err(AppError::internal("worker heartbeat refused for an unknown reason"));
        };
        let w: WorkerItem = from_item(o.attributes.unwrap_or_default())?;
        Ok(control_state(Some(&w), now, &self.policy))
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
        let pol = crate::config::QueuePolicy::default();
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
