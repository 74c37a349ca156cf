//! The `api` function: ops that act for one end user, through the envelope
//! `{"op": ..., "args": {...}, "userToken"?: "<HS256 JWT>"}`. The user is resolved once per call
//! (`shared::access`): from the verified token's `sub` when the deployment sets
//! `USER_TOKEN_SECRET_REF`, else from `args.consumerUserId` (trusted-backend mode); the ops get
//! it as a parameter and never read it from their args.

use serde_json::Value;
use shared::AppError;
use shared::access::ops::UserCtx;
use shared::app::App;
use shared::envelope::OpTable;

/// The op tables this function serves, in lookup order.
pub const TABLES: &[&OpTable<UserCtx>] = &[
    &shared::identity::ops::USER_TABLE,
    &shared::identity::user_agents::TABLE,
    &shared::snapshots::ops::USER_TABLE,
    &shared::pushing::ops::USER_TABLE,
    &shared::stats::ops::USER_TABLE,
];

/// Every op this function serves.
pub fn op_names() -> Vec<&'static str> {
    shared::envelope::op_names(TABLES)
}

/// Handle one invocation payload.
#[tracing::instrument(skip_all, fields(op = payload.get("op").and_then(|v| v.as_str()).unwrap_or("?")))]
pub async fn handle(app: &App, payload: Value) -> Result<Value, AppError> {
    Box::pin(shared::access::ops::handle(app, TABLES, payload)).await
}
