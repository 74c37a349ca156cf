//! The `enqueue` function: producer and queue-administration ops through the op envelope
//! `{"op": ..., "args": {...}}`. Errors become Lambda function errors whose `errorType` is a
//! stable code (`ValidationError`, `NotFound`, `Conflict`, ...).

use lambda_runtime::Diagnostic;
use serde_json::Value;
use shared::AppError;
use shared::app::App;

/// Handle one invocation payload.
#[tracing::instrument(skip_all, fields(op = payload.get("op").and_then(|v| v.as_str()).unwrap_or("?")))]
pub async fn handle(app: &App, payload: Value) -> Result<Value, AppError> {
    let env = shared::ops::parse_envelope(payload)?;
    let r = Box::pin(shared::ops::dispatch(app, env)).await;
    if let Err(e) = &r {
        tracing::info!(code = e.code().as_str(), error = %e, "op refused");
    }
    r
}

/// The Lambda runtime's view of an error.
pub fn diagnostic(e: AppError) -> Diagnostic {
    // The body's message: an internal error's cause stays in the log, not in the caller's answer.
    let error_message = e.to_body()["error"]["message"].as_str().unwrap_or_default().to_string();
    Diagnostic { error_type: e.code().as_str().to_string(), error_message }
}
