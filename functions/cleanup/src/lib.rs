//! The `cleanup` function: the expiry sweeps with side effects (`releaseExpiredLeases` /
//! `releaseStuckJobs`, `expireStorage` / `expireOldDataSnapshots`), run by EventBridge schedules,
//! and the billing-protection Fly cleanup `runFlyCleanup` (admin; nightly schedule, disabled by
//! default), through the op envelope `{"op": ..., "args": {...}}`.

use serde_json::Value;
use shared::AppError;
use shared::adapters::fly::FlySettings;
use shared::app::App;
use shared::cleanup::ops::CleanupCtx;
use shared::envelope::OpTable;

/// The sweep tables this function serves (ops that run on the application alone).
pub const SWEEPS: &[&OpTable<App>] = &[&shared::queue::ops::SWEEPS, &shared::snapshots::ops::SWEEPS];

/// The ops that also need Fly.
pub const CLEANUP: &[&OpTable<CleanupCtx>] = &[&shared::cleanup::ops::TABLE];

/// Every op this function serves.
pub fn op_names() -> Vec<&'static str> {
    let mut v = shared::envelope::op_names(SWEEPS);
    v.extend(shared::envelope::op_names(CLEANUP));
    v
}

/// The context of a deployed function: `Config` (`DEPLOYMENT_ID`, `FLY_API_BASE`) and
/// `FLY_APP_NAME`.
pub fn settings_from_env(cfg: &shared::Config) -> FlySettings {
    FlySettings::from_config(cfg, std::env::var("FLY_APP_NAME").ok())
}

/// Handle one invocation payload.
#[tracing::instrument(skip_all, fields(op = payload.get("op").and_then(|v| v.as_str()).unwrap_or("?")))]
pub async fn handle(ctx: &CleanupCtx, payload: Value) -> Result<Value, AppError> {
    let env = shared::envelope::parse_envelope(payload)?;
    let op = shared::ids::truncate(&env.op, 60);
    let r = if CLEANUP.iter().any(|t| t.ops.iter().any(|o| o.name == env.op)) {
        Box::pin(shared::envelope::dispatch(ctx, CLEANUP, env)).await
    } else if SWEEPS.iter().any(|t| t.ops.iter().any(|o| o.name == env.op)) {
        Box::pin(shared::envelope::dispatch(&ctx.app, SWEEPS, env)).await
    } else {
        Err(AppError::validation(format!("unknown op '{op}'; this function serves: {}", op_names().join(", "))))
    };
    if let Err(e) = &r {
        e.log(&op);
    }
    r
}
