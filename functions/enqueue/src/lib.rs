//! The `enqueue` function: producer and queue-administration ops through the op envelope
//! `{"op": ..., "args": {...}}`. Errors become Lambda function errors whose `errorType` is a
//! stable code (`ValidationError`, `NotFound`, `Conflict`, ...), through
//! `From<AppError> for Diagnostic` in `shared`.

use serde_json::Value;
use shared::AppError;
use shared::app::App;
use shared::envelope::OpTable;

/// The op tables this function serves, in lookup order.
pub const TABLES: &[&OpTable<App>] = &[
    &shared::queue::ops::TABLE,
    &shared::conversations::ops::TABLE,
    &shared::agents::ops::TABLE,
    &shared::workers::ops::TABLE,
    &shared::secrets::ops::TABLE,
    &shared::snapshots::ops::TABLE,
    // Until the `api`/`admin` split: identity ops (user-scoped, then operator).
    &shared::identity::ops::USER_TABLE,
    &shared::identity::ops::ADMIN_TABLE,
];

/// Every op this function serves.
pub fn op_names() -> Vec<&'static str> {
    shared::envelope::op_names(TABLES)
}

/// Handle one invocation payload.
#[tracing::instrument(skip_all, fields(op = payload.get("op").and_then(|v| v.as_str()).unwrap_or("?")))]
pub async fn handle(app: &App, payload: Value) -> Result<Value, AppError> {
    Box::pin(shared::envelope::handle(app, TABLES, payload)).await
}
