//! The `push-dispatch` function: sends the push jobs that are due, through the op envelope
//! `{"op": ..., "args": {...}}`. An hourly EventBridge rule invokes `dispatchDuePushJobs` (the
//! sweep: every due job, oldest slot first); each enabled recurring job's EventBridge Scheduler
//! schedule invokes `dispatchPushJob` with its `jobId` at its slots. A slot is sent once however
//! many of them race for it (see `shared::pushing::ops`).

use serde_json::Value;
use shared::AppError;
use shared::app::App;
use shared::envelope::OpTable;

/// The op tables this function serves.
pub const TABLES: &[&OpTable<App>] = &[&shared::pushing::ops::DISPATCH_TABLE];

/// Every op this function serves.
pub fn op_names() -> Vec<&'static str> {
    shared::envelope::op_names(TABLES)
}

/// Handle one invocation payload.
#[tracing::instrument(skip_all, fields(op = payload.get("op").and_then(|v| v.as_str()).unwrap_or("?")))]
pub async fn handle(app: &App, payload: Value) -> Result<Value, AppError> {
    Box::pin(shared::envelope::handle(app, TABLES, payload)).await
}
