//! The `admin` function: operator ops through the op envelope `{"op": ..., "args": {...}}` —
//! queue administration and redrive, agent profiles and runtime config, secrets, worker rows and
//! tokens, snapshots by conversation, the storage and lease sweeps. Grant it to operators and
//! operator tooling only; end users' calls go to `api`, producers' to `enqueue`.

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
    &shared::identity::ops::ADMIN_TABLE,
    &shared::templates::ops::TABLE,
    &shared::pushing::ops::ADMIN_TABLE,
    &shared::skills::ops::TABLE,
    &shared::usage::ops::TABLE,
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
