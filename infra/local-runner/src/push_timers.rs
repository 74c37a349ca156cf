//! Per-job push wake-ups in process: what EventBridge Scheduler does on AWS. Each enabled
//! recurring job gets a timer task that sleeps until the job's `nextRunAt` and invokes the
//! `push-dispatch` function with `dispatchPushJob`, then reads the job again; editing, disabling
//! or deleting the job replaces or stops its task. The runner's sweep timer also runs
//! `dispatchDuePushJobs` (the hourly rule), which covers jobs made before a restart.

use serde_json::json;
use shared::BoxFut;
use shared::app::App;
use shared::error::AppResult;
use shared::pushing::port::JobScheduler;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The application the timers dispatch with (set once it is built: it holds the timers).
pub(crate) static PUSH_APP: OnceLock<Arc<App>> = OnceLock::new();

/// One timer task per job.
#[derive(Debug, Default)]
pub(crate) struct LocalPushTimers {
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl LocalPushTimers {
    fn replace(&self, job_id: &str, task: Option<tokio::task::AbortHandle>) {
        let mut g = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = g.remove(job_id) {
            old.abort();
        }
        if let Some(t) = task {
            g.insert(job_id.to_string(), t);
        }
    }
}

async fn timer(job_id: String) {
    loop {
        let Some(app) = PUSH_APP.get() else { return };
        let next = match app.store.get_push_job(&job_id).await {
            Ok(Some(j)) if j.enabled => j.next_run_at,
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(%job_id, error = %e, "push timer: reading the job failed");
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
        };
        let Some(next) = next else { return };
        let wait = u64::try_from(next - app.now()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        crate::run_scheduled(app, "push-dispatch", json!({"op": "dispatchPushJob", "args": {"jobId": job_id}})).await;
        // Never spin on a job that did not move on (a transient failure): the sweep retries too.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl JobScheduler for LocalPushTimers {
    fn put<'a>(&'a self, job_id: &'a str, _expression: &'a str, _timezone: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(async move {
            let task = tokio::spawn(timer(job_id.to_string()));
            self.replace(job_id, Some(task.abort_handle()));
            Ok(())
        })
    }

    fn remove<'a>(&'a self, job_id: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(async move {
            self.replace(job_id, None);
            Ok(())
        })
    }
}
