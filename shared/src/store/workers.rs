//! Worker rows: reads and `upsertWorkerState` with the allowed status transitions (spec §5.2, §14).

use super::{Store, from_item, s, to_item};
use crate::clock::Millis;
use crate::error::{AppError, AppResult, sdk_error};
use crate::model::{WorkerItem, WorkerStatus};
use crate::queue::rules;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Deserialize;
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
                Ok(_) => return Ok(next),
                Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => continue,
                Err(e) => return Err(sdk_error("PutItem worker", e)),
            }
        }
        Err(AppError::conflict(format!("worker '{}' changed during the update; try again", a.worker_id)))
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
