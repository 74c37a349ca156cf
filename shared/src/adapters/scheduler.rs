//! EventBridge Scheduler: one schedule per enabled recurring push job, in a schedule group, that
//! invokes the `push-dispatch` function with `{"op": "dispatchPushJob", "args": {"jobId": ...}}`
//! at the job's slots, in the job's time zone, assuming a role that may invoke only that function.
//! Configured by `PUSH_SCHEDULE_GROUP`, `PUSH_DISPATCH_FUNCTION_ARN`, `PUSH_SCHEDULER_ROLE_ARN`
//! (and `SCHEDULER_ENDPOINT` for moto_server); without them jobs have no schedule and the hourly
//! sweep alone dispatches.

use crate::BoxFut;
use crate::adapters::sdk_error;
use crate::error::{AppError, AppResult};
use crate::pushing::port::JobScheduler;
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
use sha2::{Digest, Sha256};

/// Per-job schedules on EventBridge Scheduler.
#[derive(Debug, Clone)]
pub struct EventBridgeScheduler {
    client: aws_sdk_scheduler::Client,
    group: String,
    function_arn: String,
    role_arn: String,
}

/// A job's schedule as stored (for checks and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    pub expression: String,
    pub timezone: String,
    pub input: String,
    pub enabled: bool,
}

/// A job's schedule name: `pj-` + 40 hex characters of SHA-256(jobId) (names allow only
/// `[0-9A-Za-z_.-]`, at most 64 characters; job ids may hold anything).
pub fn schedule_name(job_id: &str) -> String {
    let h = hex::encode(Sha256::digest(job_id.as_bytes()));
    format!("pj-{}", &h[..40])
}

impl EventBridgeScheduler {
    pub fn new(sdk: &aws_config::SdkConfig, group: String, function_arn: String, role_arn: String) -> Self {
        Self { client: aws_sdk_scheduler::Client::new(sdk), group, function_arn, role_arn }
    }

    /// From `PUSH_SCHEDULE_GROUP`, `PUSH_DISPATCH_FUNCTION_ARN`, `PUSH_SCHEDULER_ROLE_ARN`
    /// (all three, else `None`).
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Option<Self> {
        let v = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Some(Self::new(sdk, v("PUSH_SCHEDULE_GROUP")?, v("PUSH_DISPATCH_FUNCTION_ARN")?, v("PUSH_SCHEDULER_ROLE_ARN")?))
    }

    /// Create the schedule group if it does not exist (tests and local set-ups; on AWS the stack
    /// creates it).
    pub async fn ensure_group(&self) -> AppResult<()> {
        match self.client.create_schedule_group().name(&self.group).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conflict_exception()) => Ok(()),
            Err(e) => Err(sdk_error("CreateScheduleGroup", e)),
        }
    }

    fn target(&self, job_id: &str) -> AppResult<Target> {
        let input = serde_json::json!({"op": "dispatchPushJob", "args": {"jobId": job_id}}).to_string();
        Target::builder()
            .arn(&self.function_arn)
            .role_arn(&self.role_arn)
            .input(input)
            .build()
            .map_err(|e| AppError::internal(format!("scheduler target: {e}")))
    }

    fn window() -> AppResult<FlexibleTimeWindow> {
        FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| AppError::internal(format!("scheduler window: {e}")))
    }

    async fn put_schedule(&self, job_id: &str, expression: &str, timezone: &str) -> AppResult<()> {
        let name = schedule_name(job_id);
        let updated = self
            .client
            .update_schedule()
            .name(&name)
            .group_name(&self.group)
            .schedule_expression(expression)
            .schedule_expression_timezone(timezone)
            .flexible_time_window(Self::window()?)
            .target(self.target(job_id)?)
            .state(ScheduleState::Enabled)
            .send()
            .await;
        match updated {
            Ok(_) => return Ok(()),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_resource_not_found_exception()) => {}
            Err(e) => return Err(sdk_error("UpdateSchedule", e)),
        }
        let created = self
            .client
            .create_schedule()
            .name(&name)
            .group_name(&self.group)
            .schedule_expression(expression)
            .schedule_expression_timezone(timezone)
            .flexible_time_window(Self::window()?)
            .target(self.target(job_id)?)
            .state(ScheduleState::Enabled)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Created concurrently: write ours over it.
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conflict_exception()) => {
                Box::pin(self.put_schedule(job_id, expression, timezone)).await
            }
            Err(e) => Err(sdk_error("CreateSchedule", e)),
        }
    }

    async fn delete_schedule(&self, job_id: &str) -> AppResult<()> {
        match self.client.delete_schedule().name(schedule_name(job_id)).group_name(&self.group).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_resource_not_found_exception()) => Ok(()),
            Err(e) => Err(sdk_error("DeleteSchedule", e)),
        }
    }

    /// The job's schedule, if it has one.
    pub async fn get(&self, job_id: &str) -> AppResult<Option<StoredSchedule>> {
        match self.client.get_schedule().name(schedule_name(job_id)).group_name(&self.group).send().await {
            Ok(o) => Ok(Some(StoredSchedule {
                expression: o.schedule_expression.unwrap_or_default(),
                timezone: o.schedule_expression_timezone.unwrap_or_default(),
                input: o.target.and_then(|t| t.input).unwrap_or_default(),
                enabled: o.state == Some(ScheduleState::Enabled),
            })),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(sdk_error("GetSchedule", e)),
        }
    }
}

impl JobScheduler for EventBridgeScheduler {
    fn put<'a>(&'a self, job_id: &'a str, expression: &'a str, timezone: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(self.put_schedule(job_id, expression, timezone))
    }
    fn remove<'a>(&'a self, job_id: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(self.delete_schedule(job_id))
    }
}
