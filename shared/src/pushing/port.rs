//! The per-job wake-up schedules (EventBridge Scheduler on AWS, in-process timers in the local
//! runner): each enabled recurring job has one, named by the job, that invokes `push-dispatch`
//! with `{"op": "dispatchPushJob", "args": {"jobId": ...}}` at its slots.

use crate::BoxFut;
use crate::error::AppResult;

/// Keeps one wake-up schedule per job.
pub trait JobScheduler: Send + Sync + std::fmt::Debug {
    /// Create or replace the job's schedule: `expression` (EventBridge Scheduler syntax, e.g.
    /// `cron(30 0 ? * MON *)`) in the IANA zone `timezone`.
    fn put<'a>(&'a self, job_id: &'a str, expression: &'a str, timezone: &'a str) -> BoxFut<'a, AppResult<()>>;
    /// Delete the job's schedule (nothing when it has none).
    fn remove<'a>(&'a self, job_id: &'a str) -> BoxFut<'a, AppResult<()>>;
}

/// No per-job schedules: the hourly sweep alone dispatches (tests, deployments without Scheduler).
#[derive(Debug, Default)]
pub struct NoScheduler;

impl JobScheduler for NoScheduler {
    fn put<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(async { Ok(()) })
    }
    fn remove<'a>(&'a self, _: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(async { Ok(()) })
    }
}
