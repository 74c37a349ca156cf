//! Dispatching pushes: where a job's message goes, one slot dispatched exactly once (the guard,
//! the record, the job's advance and the enqueue in one transaction), the due-job sweep, manual
//! triggers and company broadcasts. The op tables are in `ops.rs`.

use super::*;

// ---------- the target of a push and its dispatch ----------

/// Where a job's message goes: the conversation of the user's newest binding with the agent.
pub(super) struct Target {
    agent_key: String,
    args: EnqueueArgs,
}

/// The target of `job` for `agent` (the job's agent, else the user's active agent). `Err(reason)`:
/// no message can be sent (recorded as the dispatch's error).
pub(super) async fn job_target(
    app: &App,
    job: &PushJob,
    agent: Option<&str>,
    mode: &str,
    run_key: &str,
) -> AppResult<Result<Target, String>> {
    let bindings = app.store.user_bindings(&job.consumer_user_id).await?;
    let agent = match agent.map(str::to_string).or_else(|| job.agent_key.clone()) {
        Some(a) => a,
        None => match views::active_agent_key(&bindings) {
            Some(a) => a.to_string(),
            None => return Ok(Err("No active agent binding for user".into())),
        },
    };
    let Some(b) = views::latest_binding(&bindings, &agent).filter(|b| b.status == BindingStatus::Active) else {
        return Ok(Err(format!("No active binding for the user and agent '{agent}'")));
    };
    let has_chat = b.telegram_chat_id.as_deref().is_some_and(|c| !c.trim().is_empty());
    let metadata = BTreeMap::from([
        ("pushJobId".to_string(), job.job_id.clone()),
        ("runKey".to_string(), run_key.to_string()),
        ("pushMode".to_string(), mode.to_string()),
        ("conversationTargetSource".to_string(), if has_chat { "telegram_chat" } else { "legacy_user" }.to_string()),
    ]);
    let args = views::message_to_binding(&bindings, b, &job.consumer_user_id, &agent, job.text.clone(), metadata);
    Ok(Ok(Target { agent_key: agent, args }))
}

pub(super) fn record(
    job: &PushJob,
    agent: Option<String>,
    run_key: &str,
    mode: &str,
    scheduled_for: Millis,
    at: Millis,
) -> PushDispatch {
    PushDispatch {
        dispatch_id: format!("{}:{}", job.job_id, crate::ids::ulid(at)),
        job_id: job.job_id.clone(),
        consumer_user_id: job.consumer_user_id.clone(),
        agent_key: agent,
        run_key: run_key.to_string(),
        mode: mode.to_string(),
        scheduled_for,
        enqueued_message_id: None,
        status: DispatchStatus::Enqueued,
        error: None,
        created_at: at,
    }
}

/// What became of one due job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Enqueued,
    Skipped,
    Failed,
    /// Another dispatcher took the slot first, or the job is not due (any more): nothing written.
    NotMine,
}

/// Dispatch the current slot of one job at `at`, exactly once (see the module doc); a handled
/// slot is counted in the `PushDispatches` metric.
pub async fn dispatch_job(app: &App, job_id: &str, at: Millis) -> AppResult<Outcome> {
    let o = dispatch_slot(app, job_id, at).await?;
    match o {
        Outcome::Enqueued => crate::metrics::push_dispatch(at, "enqueued"),
        Outcome::Skipped => crate::metrics::push_dispatch(at, "skipped"),
        Outcome::Failed => crate::metrics::push_dispatch(at, "failed"),
        Outcome::NotMine => {}
    }
    Ok(o)
}

pub(super) async fn dispatch_slot(app: &App, job_id: &str, at: Millis) -> AppResult<Outcome> {
    let Some(job) = app.store.get_push_job(job_id).await? else { return Ok(Outcome::NotMine) };
    let Some(slot) = job.next_run_at.filter(|s| job.enabled && *s <= at) else { return Ok(Outcome::NotMine) };
    let run_key = rules::scheduled_run_key(&job.job_id, slot);
    let base = |agent: Option<String>| record(&job, agent, &run_key, "scheduled", slot, at);
    // Without a computable next run (a zone that no longer resolves) the job is recorded failed
    // and leaves the due index (quarantined until edited), so it cannot fail every sweep.
    let next = match rules::job_next_run(job.enabled, &job.schedule, &job.timezone, at) {
        Ok(n) => n,
        Err(e) => {
            let d = PushDispatch { status: DispatchStatus::Failed, error: Some(e.to_string()), ..base(None) };
            return finish_without_message(
                app,
                &job,
                d,
                Advance { slot: Some(slot), next: Some(None), agent_key: None },
            )
            .await;
        }
    };
    if let SlotDecision::Skip { lateness_ms } = rules::slot_decision(slot, at) {
        let d = PushDispatch {
            status: DispatchStatus::Skipped,
            error: Some(format!(
                "slot missed by {} s (more than the {} s staleness cut-off): not sent",
                lateness_ms / 1000,
                rules::STALE_AFTER_MS / 1000
            )),
            ..base(None)
        };
        return finish_without_message(app, &job, d, Advance { slot: Some(slot), next: Some(next), agent_key: None })
            .await;
    }
    let target = match job_target(app, &job, None, "scheduled", &run_key).await? {
        Ok(t) => t,
        Err(reason) => {
            let d = PushDispatch { status: DispatchStatus::Failed, error: Some(reason), ..base(None) };
            return finish_without_message(
                app,
                &job,
                d,
                Advance { slot: Some(slot), next: Some(next), agent_key: None },
            )
            .await;
        }
    };
    let adv = Advance { slot: Some(slot), next: Some(next), agent_key: Some(target.agent_key.clone()) };
    let d = base(Some(target.agent_key.clone()));
    let store = &app.store;
    let r = store
        .enqueue_with(target.args, |mid| {
            let d = PushDispatch { enqueued_message_id: Some(mid.to_string()), ..d.clone() };
            store.push_dispatch_writes(&job, &d, &adv)
        })
        .await;
    match r {
        Ok(Enqueued::Done(_)) => {
            tracing::info!(job_id = %job.job_id, %run_key, "push enqueued");
            Ok(Outcome::Enqueued)
        }
        Ok(Enqueued::ExtraRefused { .. }) => Ok(Outcome::NotMine),
        // The enqueue was refused (a disabled agent, a conversation of another agent): recorded.
        Err(e) if e.code().http_status() < 500 => {
            let d = PushDispatch { status: DispatchStatus::Failed, error: Some(e.to_string()), ..d };
            finish_without_message(app, &job, d, Advance { agent_key: None, ..adv }).await
        }
        Err(e) => Err(e),
    }
}

pub(super) async fn finish_without_message(
    app: &App,
    job: &PushJob,
    d: PushDispatch,
    adv: Advance,
) -> AppResult<Outcome> {
    let status = d.status;
    let writes = app.store.push_dispatch_writes(job, &d, &adv)?;
    if !app.store.write_push_dispatch(writes).await? {
        return Ok(Outcome::NotMine);
    }
    tracing::info!(job_id = %job.job_id, run_key = %d.run_key, status = ?status, error = ?d.error, "push not sent");
    Ok(if status == DispatchStatus::Skipped { Outcome::Skipped } else { Outcome::Failed })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DueArgs {
    #[serde(default)]
    limit: Option<i64>,
}

/// `dispatchDuePushJobs`: every job due now (the sparse `pushDue` index, oldest slot first, pages
/// until drained or `limit` jobs handled), each on its own.
pub async fn dispatch_due(app: &App, a: DueArgs) -> AppResult<Value> {
    let limit = rules::due_limit(a.limit)?;
    let at = now(app);
    let (mut scanned, mut enqueued, mut skipped, mut failed, mut raced, mut errors) = (0, 0, 0, 0, 0, 0);
    let mut start = None;
    loop {
        let (ids, next) = app.store.due_push_jobs(at, limit - scanned, start).await?;
        for id in ids {
            scanned += 1;
            match dispatch_job(app, &id, at).await {
                Ok(Outcome::Enqueued) => enqueued += 1,
                Ok(Outcome::Skipped) => skipped += 1,
                Ok(Outcome::Failed) => failed += 1,
                Ok(Outcome::NotMine) => raced += 1,
                Err(e) => {
                    // A transient failure: the job stays due for the next run; the others go on.
                    errors += 1;
                    tracing::warn!(job_id = %id, error = %e.chain(), "push dispatch failed; retried on the next run");
                }
            }
        }
        match next {
            Some(k) if scanned < limit => start = Some(k),
            _ => break,
        }
    }
    Ok(json!({"scanned": scanned, "enqueued": enqueued, "skipped": skipped, "failed": failed,
        "notDue": raced, "errors": errors}))
}

/// `dispatchPushJob`: one job's slot (its schedule's invocation).
pub(super) async fn dispatch_one(app: &App, a: JobIdArgs) -> AppResult<Value> {
    let outcome = dispatch_job(app, &a.job_id, now(app)).await?;
    Ok(json!({ "jobId": a.job_id, "outcome": format!("{outcome:?}") }))
}

/// `triggerPushJobNow`: the job's text now, whatever its schedule (disabled and manual jobs too),
/// to `agent` (ForAgent) or the job's agent, else the user's active one. With an idempotency key
/// a replay returns the first result and sends nothing. The job's next slot is kept (§16.7).
pub(super) async fn trigger(app: &App, job: PushJob, agent: Option<&str>, key: Option<String>) -> AppResult<Value> {
    let at = now(app);
    if let Some(k) = &key {
        rules::validate_idempotency_key(k)?;
    }
    let run_key = rules::manual_run_key(&job.job_id, key.as_deref().unwrap_or(&at.to_string()));
    let replay = |g: crate::adapters::dynamo::Item| {
        json!({"enqueuedMessageId": crate::adapters::dynamo::item_s(&g, "enqueuedMessageId"), "runKey": run_key,
            "deduplicated": true})
    };
    if key.is_some()
        && let Some(g) = app.store.push_run_guard(&job.job_id, &run_key).await?
    {
        return Ok(replay(g));
    }
    let target = job_target(app, &job, agent, "manual", &run_key).await?.map_err(AppError::not_found)?;
    let adv = Advance { slot: None, next: None, agent_key: Some(target.agent_key.clone()) };
    let d = record(&job, Some(target.agent_key.clone()), &run_key, "manual", at, at);
    let store = &app.store;
    let r = store
        .enqueue_with(target.args, |mid| {
            let d = PushDispatch { enqueued_message_id: Some(mid.to_string()), ..d.clone() };
            store.push_dispatch_writes(&job, &d, &adv)
        })
        .await?;
    match r {
        Enqueued::Done(m) => Ok(json!({"enqueuedMessageId": m.message_id, "runKey": run_key, "deduplicated": false})),
        Enqueued::ExtraRefused { index: 0, .. } => match app.store.push_run_guard(&job.job_id, &run_key).await? {
            Some(g) => Ok(replay(g)),
            None => Err(AppError::conflict("triggerPushJobNow: lost a race; try again")),
        },
        Enqueued::ExtraRefused { .. } => Err(AppError::not_found("Push job not found")),
    }
}

// ---------- broadcasts ----------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct BroadcastArgs {
    company_id: String,
    title: String,
    text: String,
    requested_by: String,
    idempotency_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct BroadcastKeyArgs {
    company_id: String,
    idempotency_key: String,
}

/// `sendBroadcastToAllActiveAgents`: `title` + `text` to the admin conversation
/// (`broadcast:agent:<agentKey>`) of every enabled agent of the company's roster (the agents
/// its push jobs were made for), paced at [`BROADCAST_PER_SECOND`], one dispatch row per agent.
/// The idempotency key names the broadcast: a replay sends nothing new and finishes an
/// interrupted one (only agents without a row get a message).
pub(super) async fn broadcast(app: &App, a: BroadcastArgs) -> AppResult<Value> {
    validate_company_id(&a.company_id)?;
    validate_actor(&a.requested_by)?;
    rules::validate_idempotency_key(&a.idempotency_key)?;
    rules::validate_title_text(&a.title, &a.text)?;
    let b = match app.store.get_broadcast(&a.company_id, &a.idempotency_key).await? {
        Some(b) => b,
        None => {
            let mut targets = Vec::new();
            for agent in app.store.company_agents(&a.company_id).await? {
                if app.store.get_agent(&agent).await?.is_some_and(|p| p.enabled) {
                    targets.push(agent);
                }
            }
            let at = now(app);
            let b = Broadcast {
                broadcast_id: crate::ids::ulid(at),
                company_id: a.company_id.clone(),
                idempotency_key: a.idempotency_key.clone(),
                title: a.title.clone(),
                text: a.text.clone(),
                target: "all_active_agents".into(),
                requested_by: a.requested_by.clone(),
                requested_at: at,
                status: "running".into(),
                total_targets: targets.len() as u32,
                enqueued_count: 0,
                failed_count: 0,
                completed_at: None,
            };
            if app.store.insert_broadcast(&b, &targets).await? {
                b
            } else {
                app.store
                    .get_broadcast(&a.company_id, &a.idempotency_key)
                    .await?
                    .ok_or_else(|| AppError::conflict("broadcast: lost a race; try again"))?
            }
        }
    };
    if b.status == "running" {
        run_broadcast(app, b.clone()).await?;
    }
    let b = app.store.get_broadcast(&a.company_id, &a.idempotency_key).await?.unwrap_or(b);
    Ok(json!({"broadcastId": b.broadcast_id, "status": b.status, "totalTargets": b.total_targets,
        "enqueued": b.enqueued_count, "failed": b.failed_count}))
}

pub(super) async fn run_broadcast(app: &App, mut b: Broadcast) -> AppResult<()> {
    let targets = app.store.broadcast_targets(&b.company_id, &b.idempotency_key).await?;
    let done: Vec<String> = app
        .store
        .broadcast_rows(&b.broadcast_id)
        .await?
        .iter()
        .filter_map(|r| r["agentKey"].as_str().map(str::to_string))
        .collect();
    let text = rules::broadcast_text(&b.title, &b.text);
    let started = std::time::Instant::now();
    for (sent, agent) in targets.iter().filter(|t| !done.contains(t)).enumerate() {
        // Pacing: the n-th message no earlier than n / BROADCAST_PER_SECOND s after the first.
        let due = std::time::Duration::from_millis(sent as u64 * 1000 / u64::from(BROADCAST_PER_SECOND));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let run_key = format!("broadcast:{}:{agent}", b.broadcast_id);
        let at = now(app);
        let row = |status: &str, mid: Option<&str>, error: Option<String>| {
            json!({"broadcastId": b.broadcast_id, "consumerUserId": format!("agent:{agent}"), "agentKey": agent,
                "runKey": run_key, "enqueuedMessageId": mid, "status": status, "error": error, "createdAt": at})
        };
        let metadata = BTreeMap::from([
            ("broadcastId".to_string(), b.broadcast_id.clone()),
            ("runKey".to_string(), run_key.clone()),
            ("adminInitiated".to_string(), "true".to_string()),
            ("companyId".to_string(), b.company_id.clone()),
        ]);
        let args = EnqueueArgs {
            conversation_id: format!("broadcast:agent:{agent}"),
            agent_key: agent.clone(),
            payload: Payload {
                provider: "system_push".into(),
                provider_user_id: format!("agent:{agent}"),
                message_text: text.clone(),
                external_message_id: None,
                raw_update_json: None,
                metadata: Some(metadata),
                attachments: None,
            },
            priority: None,
            scheduled_for: None,
            max_attempts: None,
        };
        let store = &app.store;
        let bid = b.broadcast_id.clone();
        match store
            .enqueue_with(args, |mid| {
                Ok(vec![store.broadcast_row_write(&row("enqueued", Some(mid), None), &bid, agent)?])
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.code().http_status() < 500 => {
                let w = store.broadcast_row_write(&row("failed", None, Some(e.to_string())), &bid, agent)?;
                store.write_push_dispatch(vec![w]).await?;
            }
            Err(e) => return Err(e),
        }
    }
    let rows = app.store.broadcast_rows(&b.broadcast_id).await?;
    b.enqueued_count = rows.iter().filter(|r| r["status"] == "enqueued").count() as u32;
    b.failed_count = rows.iter().filter(|r| r["status"] == "failed").count() as u32;
    b.status = if b.failed_count > 0 { "failed" } else { "done" }.into();
    b.completed_at = Some(now(app));
    app.store.finish_broadcast(&b).await
}

/// `getPushBroadcast`: a broadcast and its dispatch rows (the audit).
pub(super) async fn get_broadcast(app: &App, a: BroadcastKeyArgs) -> AppResult<Value> {
    validate_company_id(&a.company_id)?;
    rules::validate_idempotency_key(&a.idempotency_key)?;
    let Some(b) = app.store.get_broadcast(&a.company_id, &a.idempotency_key).await? else { return Ok(Value::Null) };
    let rows = app.store.broadcast_rows(&b.broadcast_id).await?;
    Ok(json!({"broadcast": b, "dispatches": rows}))
}
