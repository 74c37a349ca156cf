//! The `enqueue` function: the producer's ops through the op envelope `{"op": ..., "args": {...}}`
//! (`enqueue`, `hasQueuedJobsForConversation`). Operator ops are the `admin` function's, ops that
//! act for one end user the `api` function's. Errors become Lambda function errors whose
//! `errorType` is a stable code (`ValidationError`, `NotFound`, `Conflict`, ...), through
//! `From<AppError> for Diagnostic` in `shared`.

use serde_json::Value;
use shared::AppError;
use shared::app::App;
use shared::envelope::OpTable;

/// The op tables this function serves, in lookup order.
pub const TABLES: &[&OpTable<App>] = &[&shared::queue::ops::PRODUCER_TABLE];

/// Every op this function serves.
pub fn op_names() -> Vec<&'static str> {
    shared::envelope::op_names(TABLES)
}

/// Handle one invocation payload.
#[tracing::instrument(skip_all, fields(op = payload.get("op").and_then(|v| v.as_str()).unwrap_or("?")))]
pub async fn handle(app: &App, payload: Value) -> Result<Value, AppError> {
    Box::pin(shared::envelope::handle(app, TABLES, payload)).await
}
