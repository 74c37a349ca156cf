//! Push use cases and their op tables: `ADMIN_TABLE` (operator ops, the `admin` function),
//! `USER_TABLE` (the "my agent" ops for the calling user, `api`), `DISPATCH_TABLE` (the
//! `push-dispatch` function: the sweep and one job's slot).
//!
//! Exactly once per slot: a dispatch is one transaction holding the (jobId, runKey) guard (put if
//! absent), the dispatch record, the job's advance (conditional on `nextRunAt` still being the
//! slot) and the enqueue of the message; two dispatchers racing for a slot (the job's schedule and
//! the hourly sweep) cannot both commit. Each job is dispatched on its own: one that fails is
//! recorded `failed` (and quarantined when its schedule cannot be computed) and the others go on.

use super::model::*;
use super::rules::{self, SlotDecision};
use crate::access::ops::UserCtx;
use crate::adapters::dynamo::pushing::Advance;
use crate::adapters::dynamo::queue::Enqueued;
use crate::app::App;
use crate::clock::Millis;
use crate::envelope::OpTable;
use crate::error::{AppError, AppResult};
use crate::identity::model::BindingStatus;
use crate::identity::views;
use crate::op;
use crate::queue::EnqueueArgs;
use crate::queue::model::Payload;
use crate::templates::rules::{validate_actor, validate_company_id};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// How often an edit re-reads a job or template that changed under it.
const EDIT_RETRIES: u32 = 5;
/// Broadcast pacing: at most this many messages a second (Telegram's ~30 messages/s per bot).
pub const BROADCAST_PER_SECOND: u32 = 30;

fn now(app: &App) -> Millis {
    app.now()
}

// ---------- push templates ----------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTemplateArgs {
    company_id: String,
    template_key: String,
    title: String,
    text: String,
    periodicity: Periodicity,
    #[serde(default)]
    suggested_times: Vec<Schedule>,
    #[serde(default)]
    enabled: Option<bool>,
    actor_user_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTemplateArgs {
    template_id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    periodicity: Option<Periodicity>,
    #[serde(default)]
    suggested_times: Option<Vec<Schedule>>,
    #[serde(default)]
    enabled: Option<bool>,
    actor_user_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateIdArgs {
    template_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompanyArgs {
    company_id: String,
    #[serde(default)]
    include_disabled: Option<bool>,
}

async fn create_template(app: &App, a: CreateTemplateArgs) -> AppResult<Value> {
    validate_company_id(&a.company_id)?;
    validate_actor(&a.actor_user_id)?;
    rules::validate_template_key(&a.template_key)?;
    rules::validate_title_text(&a.title, &a.text)?;
    rules::validate_suggested_times(a.periodicity, &a.suggested_times)?;
    let t = now(app);
    let tpl = PushTemplate {
        template_id: rules::make_id(&crate::ids::ulid(t), &a.company_id),
        company_id: a.company_id,
        template_key: a.template_key,
        title: a.title,
        text: a.text,
        periodicity: a.periodicity,
        suggested_times: a.suggested_times,
        enabled: a.enabled.unwrap_or(true),
        created_by: a.actor_user_id.clone(),
        updated_by: a.actor_user_id,
        created_at: t,
        updated_at: t,
    };
    if !app.store.insert_push_template(&tpl).await? {
        return Err(AppError::conflict(format!("Template key '{}' already exists for company", tpl.template_key)));
    }
    Ok(json!({ "templateId": tpl.template_id }))
}

async fn update_template(app: &App, a: UpdateTemplateArgs) -> AppResult<bool> {
    validate_actor(&a.actor_user_id)?;
    for _ in 0..EDIT_RETRIES {
        let Some(old) = app.store.get_push_template(&a.template_id).await? else { return Ok(false) };
        let new = PushTemplate {
            title: a.title.clone().unwrap_or_else(|| old.title.clone()),
            text: a.text.clone().unwrap_or_else(|| old.text.clone()),
            periodicity: a.periodicity.unwrap_or(old.periodicity),
            suggested_times: a.suggested_times.clone().unwrap_or_else(|| old.suggested_times.clone()),
            enabled: a.enabled.unwrap_or(old.enabled),
            updated_by: a.actor_user_id.clone(),
            updated_at: now(app).max(old.updated_at + 1),
            ..old.clone()
        };
        rules::validate_title_text(&new.title, &new.text)?;
        rules::validate_suggested_times(new.periodicity, &new.suggested_times)?;
        if app.store.replace_push_template(&old, &new).await? {
            return Ok(true);
        }
    }
    Err(AppError::conflict("updatePushTemplate: the template changed concurrently; try again"))
}

async fn list_templates(app: &App, a: CompanyArgs) -> AppResult<Vec<PushTemplate>> {
    validate_company_id(&a.company_id)?;
    let mut v = app.store.company_push_templates(&a.company_id).await?;
    v.retain(|t| a.include_disabled.unwrap_or(false) || t.enabled);
    v.sort_by(|x, y| y.updated_at.cmp(&x.updated_at).then(y.template_id.cmp(&x.template_id)));
    Ok(v)
}

// ---------- push jobs ----------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromTemplateArgs {
    company_id: String,
    consumer_user_id: String,
    template_id: String,
    timezone: String,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomArgs {
    company_id: String,
    consumer_user_id: String,
    title: String,
    text: String,
    periodicity: Periodicity,
    timezone: String,
    schedule: Schedule,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateJobArgs {
    job_id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    periodicity: Option<Periodicity>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobIdArgs {
    job_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnableArgs {
    job_id: String,
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserJobsArgs {
    consumer_user_id: String,
    #[serde(default)]
    include_disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerArgs {
    job_id: String,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DispatchesArgs {
    job_id: String,
    #[serde(default)]
    limit: Option<i64>,
}

fn check_user(u: &str) -> AppResult<()> {
    crate::access::model::ConsumerUserId::parse(u).map(drop)
}

/// R1: the agent of the user's active binding, when its profile exists and is enabled.
async fn active_agent(app: &App, user: &str) -> AppResult<Option<String>> {
    let bindings = app.store.user_bindings(user).await?;
    let Some(agent) = views::active_agent_key(&bindings).map(str::to_string) else { return Ok(None) };
    Ok(app.store.get_agent(&agent).await?.filter(|p| p.enabled).map(|_| agent))
}

/// A new job for `user` (its id in the user's partition), with its next run, and its schedule.
#[allow(clippy::too_many_arguments)]
async fn insert_job(
    app: &App,
    company_id: String,
    user: &str,
    agent_key: Option<String>,
    source_template_id: Option<String>,
    title: String,
    text: String,
    periodicity: Periodicity,
    timezone: String,
    schedule: Schedule,
    enabled: bool,
) -> AppResult<Value> {
    let t = now(app);
    let job = PushJob {
        job_id: rules::make_id(&crate::ids::ulid(t), user),
        company_id,
        consumer_user_id: user.to_string(),
        agent_key,
        source_template_id,
        title,
        text,
        periodicity,
        next_run_at: rules::job_next_run(enabled, &schedule, &timezone, t)?,
        timezone,
        schedule,
        enabled,
        last_run_at: None,
        last_run_key: None,
        created_at: t,
        updated_at: t,
    };
    app.store.insert_push_job(&job).await?;
    sync_schedule(app, &job).await;
    Ok(json!({ "jobId": job.job_id, "nextRunAt": job.next_run_at }))
}

/// Keep the job's wake-up schedule in step with it (created, replaced or removed). A failure is
/// logged: the hourly sweep still dispatches the job.
pub async fn sync_schedule(app: &App, job: &PushJob) {
    let r = match (job.enabled, rules::scheduler_expression(&job.schedule)) {
        (true, Ok(Some(expr))) => app.push_scheduler.put(&job.job_id, &expr, &job.timezone).await,
        _ => app.push_scheduler.remove(&job.job_id).await,
    };
    if let Err(e) = r {
        tracing::warn!(job_id = %job.job_id, error = %e.chain(), "push job schedule not updated; the hourly sweep covers it");
    }
}

/// `createPushJobFromTemplate` (and its ForAgent variant when `for_agent` is given).
async fn create_from_template(app: &App, a: FromTemplateArgs, for_agent: Option<&str>) -> AppResult<Value> {
    validate_company_id(&a.company_id)?;
    check_user(&a.consumer_user_id)?;
    rules::resolve_timezone(&a.timezone)?;
    let active = active_agent(app, &a.consumer_user_id).await?;
    if let Some(agent) = for_agent
        && active.as_deref() != Some(agent)
    {
        return Err(AppError::validation("Agent key must match the current active binding for the user"));
    }
    let tpl =
        app.store.get_push_template(&a.template_id).await?.ok_or_else(|| AppError::not_found("Template not found"))?;
    if tpl.company_id != a.company_id {
        return Err(AppError::validation("Template company mismatch"));
    }
    let schedule = if tpl.periodicity == Periodicity::Manual {
        Schedule::Manual
    } else if let Some(s) = a.schedule {
        s
    } else {
        tpl.suggested_times
            .iter()
            .find(|s| s.kind() == tpl.periodicity)
            .cloned()
            .ok_or_else(|| AppError::validation("Schedule is required for non-manual template"))?
    };
    rules::validate_job_schedule(tpl.periodicity, &schedule)?;
    let agent = for_agent.map(str::to_string).or(active);
    insert_job(
        app,
        a.company_id,
        &a.consumer_user_id,
        agent,
        Some(tpl.template_id),
        tpl.title,
        tpl.text,
        tpl.periodicity,
        a.timezone,
        schedule,
        a.enabled.unwrap_or(true),
    )
    .await
}

/// `createPushJobCustom` (and its ForAgent variant).
async fn create_custom(app: &App, a: CustomArgs, for_agent: Option<&str>) -> AppResult<Value> {
    validate_company_id(&a.company_id)?;
    check_user(&a.consumer_user_id)?;
    rules::validate_title_text(&a.title, &a.text)?;
    rules::resolve_timezone(&a.timezone)?;
    rules::validate_job_schedule(a.periodicity, &a.schedule)?;
    let active = active_agent(app, &a.consumer_user_id).await?;
    if let Some(agent) = for_agent
        && active.as_deref() != Some(agent)
    {
        return Err(AppError::validation("Agent key must match the current active binding for the user"));
    }
    let agent = for_agent.map(str::to_string).or(active);
    insert_job(
        app,
        a.company_id,
        &a.consumer_user_id,
        agent,
        None,
        a.title,
        a.text,
        a.periodicity,
        a.timezone,
        a.schedule,
        a.enabled.unwrap_or(true),
    )
    .await
}

/// `updatePushJob`: `false` for an unknown job (or, with `owner`, one the user's agent does not
/// own). The next run is recomputed only when the schedule, zone or enabled flag changes, so a
/// title edit does not drop a due slot (§16.7).
async fn update_job(app: &App, a: UpdateJobArgs, owner: Option<(&str, &str)>) -> AppResult<bool> {
    for _ in 0..EDIT_RETRIES {
        let Some(old) = app.store.get_push_job(&a.job_id).await? else { return Ok(false) };
        if let Some((user, agent)) = owner
            && (old.consumer_user_id != user || old.agent_key.as_deref() != Some(agent))
        {
            return Ok(false);
        }
        let mut new = PushJob {
            title: a.title.clone().unwrap_or_else(|| old.title.clone()),
            text: a.text.clone().unwrap_or_else(|| old.text.clone()),
            periodicity: a.periodicity.unwrap_or(old.periodicity),
            timezone: a.timezone.clone().unwrap_or_else(|| old.timezone.clone()),
            schedule: a.schedule.clone().unwrap_or_else(|| old.schedule.clone()),
            enabled: a.enabled.unwrap_or(old.enabled),
            updated_at: now(app).max(old.updated_at + 1),
            ..old.clone()
        };
        rules::validate_title_text(&new.title, &new.text)?;
        rules::resolve_timezone(&new.timezone)?;
        rules::validate_job_schedule(new.periodicity, &new.schedule)?;
        let timing_changed = new.schedule != old.schedule || new.timezone != old.timezone || new.enabled != old.enabled;
        if timing_changed || old.next_run_at.is_none() && new.enabled {
            new.next_run_at = rules::job_next_run(new.enabled, &new.schedule, &new.timezone, now(app))?;
        }
        if app.store.replace_push_job(&old, &new).await? {
            if timing_changed {
                sync_schedule(app, &new).await;
            }
            return Ok(true);
        }
    }
    Err(AppError::conflict("updatePushJob: the job changed concurrently; try again"))
}

/// `setPushJobEnabled`: `false` for an unknown job. Enabling recomputes the next run.
async fn set_enabled(app: &App, a: EnableArgs) -> AppResult<bool> {
    for _ in 0..EDIT_RETRIES {
        let Some(old) = app.store.get_push_job(&a.job_id).await? else { return Ok(false) };
        let t = now(app);
        let new = PushJob {
            enabled: a.enabled,
            next_run_at: rules::job_next_run(a.enabled, &old.schedule, &old.timezone, t)?,
            updated_at: t.max(old.updated_at + 1),
            ..old.clone()
        };
        if app.store.replace_push_job(&old, &new).await? {
            sync_schedule(app, &new).await;
            return Ok(true);
        }
    }
    Err(AppError::conflict("setPushJobEnabled: the job changed concurrently; try again"))
}

/// `deletePushJob`: `false` for an unknown job; its dispatch history stays.
async fn delete_job(app: &App, a: JobIdArgs) -> AppResult<bool> {
    let Some(job) = app.store.get_push_job(&a.job_id).await? else { return Ok(false) };
    let deleted = app.store.delete_push_job(&job).await?;
    if deleted && let Err(e) = app.push_scheduler.remove(&job.job_id).await {
        tracing::warn!(job_id = %job.job_id, error = %e.chain(), "push job schedule not deleted");
    }
    Ok(deleted)
}

/// A user's jobs, newest update first (`agent`: only that agent's).
async fn list_jobs(app: &App, user: &str, include_disabled: bool, agent: Option<&str>) -> AppResult<Vec<PushJob>> {
    check_user(user)?;
    let mut v = app.store.user_push_jobs(user).await?;
    v.retain(|j| (include_disabled || j.enabled) && agent.is_none_or(|a| j.agent_key.as_deref() == Some(a)));
    v.sort_by(|x, y| y.updated_at.cmp(&x.updated_at).then(y.job_id.cmp(&x.job_id)));
    Ok(v)
}

/// The view of a dispatch record in listings.
fn dispatch_view(d: &PushDispatch, with_job: bool) -> Value {
    let mut v = json!({
        "_id": d.dispatch_id, "runKey": d.run_key, "status": d.status, "scheduledFor": d.scheduled_for,
        "createdAt": d.created_at, "error": d.error, "enqueuedMessageId": d.enqueued_message_id,
    });
    if with_job {
        v["jobId"] = json!(d.job_id);
    }
    v
}

mod dispatch;
use dispatch::*;
pub use dispatch::{DueArgs, Outcome, dispatch_due, dispatch_job};

// ---------- user ("my agent") ops ----------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentJobsArgs {
    agent_key: String,
    #[serde(default)]
    include_disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentFromTemplateArgs {
    company_id: String,
    agent_key: String,
    template_id: String,
    timezone: String,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentCustomArgs {
    company_id: String,
    agent_key: String,
    title: String,
    text: String,
    periodicity: Periodicity,
    timezone: String,
    schedule: Schedule,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentUpdateArgs {
    agent_key: String,
    job_id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    periodicity: Option<Periodicity>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentTriggerArgs {
    agent_key: String,
    job_id: String,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentDispatchesArgs {
    agent_key: String,
    #[serde(default)]
    limit: Option<i64>,
}

/// The job `job_id` if the user's agent `agent` owns it.
async fn owned_job(c: &UserCtx, job_id: &str, agent: &str) -> AppResult<Option<PushJob>> {
    Ok(app_job(&c.app, job_id)
        .await?
        .filter(|j| j.consumer_user_id == c.user.as_str() && j.agent_key.as_deref() == Some(agent)))
}

async fn app_job(app: &App, job_id: &str) -> AppResult<Option<PushJob>> {
    app.store.get_push_job(job_id).await
}

/// `listPushDispatchesForAgent`: the newest `limit` records over the user's jobs for the agent.
async fn agent_dispatches(c: &UserCtx, a: AgentDispatchesArgs) -> AppResult<Vec<Value>> {
    let limit = rules::dispatch_limit(a.limit)?;
    let mut all = Vec::new();
    for j in list_jobs(&c.app, c.user.as_str(), true, Some(&a.agent_key)).await? {
        all.extend(c.app.store.job_dispatches(&j.job_id, limit).await?);
    }
    all.sort_by(|x, y| y.created_at.cmp(&x.created_at).then(y.dispatch_id.cmp(&x.dispatch_id)));
    all.truncate(limit);
    Ok(all.iter().map(|d| dispatch_view(d, true)).collect())
}

/// The operator's push ops (the `admin` function).
pub const ADMIN_TABLE: OpTable<App> = OpTable {
    domain: "pushing",
    ops: &[
        op!(App, "createPushTemplate", |app, a: CreateTemplateArgs| create_template(app, a).await?),
        op!(App, "updatePushTemplate", |app, a: UpdateTemplateArgs| update_template(app, a).await?),
        op!(App, "deletePushTemplate", |app, a: TemplateIdArgs| {
            match app.store.get_push_template(&a.template_id).await? {
                Some(t) => app.store.delete_push_template(&t).await?,
                None => false,
            }
        }),
        op!(App, "listPushTemplatesByCompany", |app, a: CompanyArgs| list_templates(app, a).await?),
        op!(App, "createPushJobFromTemplate", |app, a: FromTemplateArgs| create_from_template(app, a, None).await?),
        op!(App, "createPushJobCustom", |app, a: CustomArgs| create_custom(app, a, None).await?),
        op!(App, "updatePushJob", |app, a: UpdateJobArgs| update_job(app, a, None).await?),
        op!(App, "deletePushJob", |app, a: JobIdArgs| delete_job(app, a).await?),
        op!(App, "setPushJobEnabled", |app, a: EnableArgs| set_enabled(app, a).await?),
        op!(App, "getPushJob", |app, a: JobIdArgs| app_job(app, &a.job_id).await?),
        op!(App, "listPushJobsForUser", |app, a: UserJobsArgs| list_jobs(
            app,
            &a.consumer_user_id,
            a.include_disabled.unwrap_or(true),
            None
        )
        .await?),
        op!(App, "triggerPushJobNow", |app, a: TriggerArgs| {
            let job = app_job(app, &a.job_id).await?.ok_or_else(|| AppError::not_found("Push job not found"))?;
            trigger(app, job, None, a.idempotency_key).await?
        }),
        op!(App, "listPushDispatchesByJob", |app, a: DispatchesArgs| {
            let limit = rules::dispatch_limit(a.limit)?;
            if rules::split_id(&a.job_id).is_none() {
                return Err(AppError::validation("jobId is not a push job id"));
            }
            let v = app.store.job_dispatches(&a.job_id, limit).await?;
            v.iter().map(|d| dispatch_view(d, false)).collect::<Vec<_>>()
        }),
        op!(App, "dispatchDuePushJobs", |app, a: DueArgs| dispatch_due(app, a).await?),
        op!(App, "sendBroadcastToAllActiveAgents", |app, a: BroadcastArgs| broadcast(app, a).await?),
        op!(App, "getPushBroadcast", |app, a: BroadcastKeyArgs| get_broadcast(app, a).await?),
    ],
};

/// The `push-dispatch` function's ops: the sweep (hourly rule) and one job's slot (its schedule).
pub const DISPATCH_TABLE: OpTable<App> = OpTable {
    domain: "push-dispatch",
    ops: &[
        op!(App, "dispatchDuePushJobs", |app, a: DueArgs| dispatch_due(app, a).await?),
        op!(App, "dispatchPushJob", |app, a: JobIdArgs| dispatch_one(app, a).await?),
    ],
};

/// The calling user's push ops for one of its agents (the `api` function).
pub const USER_TABLE: OpTable<UserCtx> = OpTable {
    domain: "pushing-user",
    ops: &[
        op!(UserCtx, "listPushJobsForAgent", |c, a: AgentJobsArgs| list_jobs(
            &c.app,
            c.user.as_str(),
            a.include_disabled.unwrap_or(true),
            Some(&a.agent_key)
        )
        .await?),
        op!(UserCtx, "createPushJobFromTemplateForAgent", |c, a: AgentFromTemplateArgs| {
            let args = FromTemplateArgs {
                company_id: a.company_id,
                consumer_user_id: c.user.as_str().to_string(),
                template_id: a.template_id,
                timezone: a.timezone,
                schedule: a.schedule,
                enabled: a.enabled,
            };
            create_from_template(&c.app, args, Some(&a.agent_key)).await?
        }),
        op!(UserCtx, "createPushJobCustomForAgent", |c, a: AgentCustomArgs| {
            let args = CustomArgs {
                company_id: a.company_id,
                consumer_user_id: c.user.as_str().to_string(),
                title: a.title,
                text: a.text,
                periodicity: a.periodicity,
                timezone: a.timezone,
                schedule: a.schedule,
                enabled: a.enabled,
            };
            create_custom(&c.app, args, Some(&a.agent_key)).await?
        }),
        op!(UserCtx, "updatePushJobForAgent", |c, a: AgentUpdateArgs| {
            let u = UpdateJobArgs {
                job_id: a.job_id,
                title: a.title,
                text: a.text,
                periodicity: a.periodicity,
                timezone: a.timezone,
                schedule: a.schedule,
                enabled: a.enabled,
            };
            update_job(&c.app, u, Some((c.user.as_str(), &a.agent_key))).await?
        }),
        op!(UserCtx, "triggerPushJobNowForAgent", |c, a: AgentTriggerArgs| {
            let job = owned_job(c, &a.job_id, &a.agent_key)
                .await?
                .ok_or_else(|| AppError::not_found("Push job not found for agent"))?;
            trigger(&c.app, job, Some(&a.agent_key), a.idempotency_key).await?
        }),
        op!(UserCtx, "listPushDispatchesForAgent", |c, a: AgentDispatchesArgs| agent_dispatches(c, a).await?),
    ],
};
