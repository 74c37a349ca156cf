//! The worker protocol: `POST /worker/<op>` with JSON bodies (architecture §3), independent of
//! the HTTP framework so the `claim` Lambda and the local runner share it.

use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::hydration::HydrationArgs;
use crate::queue::*;
use crate::store::workers::control_state;
use crate::worker_auth::Authenticator;
use crate::{media, snapshots};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub const WORKER_OPS: &[&str] = &[
    "claim",
    "heartbeat",
    "complete",
    "fail",
    "append-messages",
    "has-queued",
    "hydration",
    "control-state",
    "worker-heartbeat",
    "snapshot-prepare",
    "snapshot-finalize",
    "snapshot-fail",
    "snapshot-restore",
    "media-upload-url",
    "media-url",
    "message-metadata",
];

/// Routes that may be called with an empty body.
const EMPTY_BODY_OK: &[&str] = &["control-state", "worker-heartbeat"];

/// Ops whose argument type carries the caller's `workerId` (the store's own types): the token's
/// worker is put there. Every other op's body loses the key once checked.
const TAKES_WORKER_ID: &[&str] = &["claim", "heartbeat", "complete", "fail"];

/// Routes that need the caller's worker row: it is read by the authentication (never from the
/// cache) and handed to them, so it is read once. `media-url` hands out a URL to data, so it
/// re-checks the token too. The other routes either re-check the token in their own conditional
/// write or are the cheap read `has-queued` (cache window `WORKER_AUTH_CACHE_MS`, README).
const ROW_OPS: &[&str] =
    &["control-state", "snapshot-prepare", "snapshot-finalize", "snapshot-fail", "snapshot-restore", "media-url"];

/// For routes that take no arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// A response: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerResponse {
    pub status: u16,
    pub body: Value,
}

impl WorkerResponse {
    fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }
    pub fn error(e: &AppError) -> Self {
        Self { status: e.code().http_status(), body: e.to_body() }
    }
}

/// The body of `/worker/<op>` as `T`. A `workerId` in the body (older workers send one) must be
/// the token's worker, else 403; it is never trusted: ops of [`TAKES_WORKER_ID`] get the token's
/// worker, the others never see the key.
fn parse<T: DeserializeOwned>(op: &str, body: &[u8], worker_id: &str) -> AppResult<T> {
    let mut v: Value = if body.is_empty() && EMPTY_BODY_OK.contains(&op) {
        json!({})
    } else if body.is_empty() {
        return Err(AppError::validation(format!("POST /worker/{op} needs a JSON object body")));
    } else {
        serde_json::from_slice(body).map_err(|e| AppError::validation(format!("malformed JSON: {e}")))?
    };
    let Some(obj) = v.as_object_mut() else {
        return Err(AppError::validation("the body must be a JSON object"));
    };
    match obj.remove("workerId") {
        Some(Value::String(w)) if w != worker_id => {
            return Err(AppError::Forbidden(format!(
                "workerId '{}' in the body is not the worker of this token",
                crate::ids::truncate(&w, 60)
            )));
        }
        Some(w) if !w.is_string() => return Err(AppError::validation("workerId must be a string")),
        _ => {}
    }
    if TAKES_WORKER_ID.contains(&op) {
        obj.insert("workerId".into(), Value::String(worker_id.to_string()));
    }
    serde_json::from_value(v).map_err(|e| AppError::validation(format!("invalid body for /worker/{op}: {e}")))
}

/// One worker call, as any HTTP front end sees it.
#[derive(Debug, Clone, Copy)]
pub struct WorkerRequest<'a> {
    pub method: &'a str,
    /// The request path, e.g. `/worker/claim`.
    pub path: &'a str,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// Handle one request.
pub async fn handle(app: &App, req: WorkerRequest<'_>) -> WorkerResponse {
    let path = req.path;
    match route(app, req).await {
        Ok(v) => WorkerResponse::ok(v),
        Err(e) => {
            if matches!(e, AppError::Internal(_)) {
                tracing::error!(error = %e, path, "worker call failed");
            } else {
                tracing::info!(code = e.code().as_str(), error = %e, path, "worker call refused");
            }
            WorkerResponse::error(&e)
        }
    }
}

async fn route(app: &App, req: WorkerRequest<'_>) -> AppResult<Value> {
    let WorkerRequest { method, path, authorization, body } = req;
    let op = path
        .strip_prefix("/worker/")
        .filter(|o| !o.is_empty() && !o.contains('/'))
        .ok_or_else(|| AppError::not_found(format!("no route for {}", crate::ids::truncate(path, 80))))?;
    if !WORKER_OPS.contains(&op) {
        return Err(AppError::not_found(format!(
            "unknown worker op '{}'; known: {}",
            crate::ids::truncate(op, 40),
            WORKER_OPS.join(", ")
        )));
    }
    if method != "POST" {
        return Err(AppError::MethodNotAllowed(format!(
            "/worker/{op} takes POST, not {}",
            crate::ids::truncate(method, 16)
        )));
    }
    let check_size = || {
        if body.len() > MAX_BODY_BYTES {
            return Err(AppError::PayloadTooLarge(format!(
                "body is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            )));
        }
        Ok(())
    };
    if op == "hydration" {
        // The bundle holds secrets: the token is checked against the worker row read together
        // with the message (never from the cache), before anything else is read.
        let claimed = Authenticator::claimed(authorization)?;
        check_size()?;
        let a: HydrationArgs = parse(op, body, claimed.worker_id())?;
        return Ok(json!(crate::hydration::hydrate(app, claimed, &a).await?));
    }
    if ROW_OPS.contains(&op) {
        let (p, row) = app.auth.authenticate_row(&app.store, authorization).await?;
        check_size()?;
        let w = p.worker_id.as_str();
        return Ok(match op {
            "control-state" => {
                let NoArgs {} = parse(op, body, w)?;
                json!(control_state(Some(&row), app.now(), &app.store.policy))
            }
            "snapshot-prepare" => json!(snapshots::prepare(app, &p, &row, &parse(op, body, w)?).await?),
            "snapshot-finalize" => json!(snapshots::finalize(app, &p, row, &parse(op, body, w)?).await?),
            "snapshot-restore" => json!(snapshots::restore(app, &row, &parse(op, body, w)?).await?),
            "snapshot-fail" => json!(snapshots::fail(app, &p, &parse(op, body, w)?).await?),
            _ => json!(media::file_url(app, &p, &parse(op, body, w)?).await?),
        });
    }
    let p = app.auth.authenticate(&app.store, authorization).await?;
    check_size()?;
    let store = &app.store;
    let w = p.worker_id.as_str();
    let v = match op {
        "claim" => {
            let a: ClaimArgs = parse(op, body, w)?;
            json!(store.claim_as(w, a.conversation_id.as_deref(), Some(&p.token_hash)).await?)
        }
        "heartbeat" | "complete" => {
            let a = LeaseArgs { token_hash: Some(p.token_hash.clone()), ..parse(op, body, w)? };
            if op == "heartbeat" {
                json!(store.heartbeat(&a).await?)
            } else {
                store.complete(&a).await?;
                json!({ "ok": true })
            }
        }
        "fail" => json!(store.fail(&FailArgs { token_hash: Some(p.token_hash.clone()), ..parse(op, body, w)? }).await?),
        "append-messages" => {
            let a = AppendArgs { holder: Some(p.clone()), ..parse(op, body, w)? };
            json!(store.append_messages(a).await?)
        }
        "has-queued" => {
            let a: ConversationArgs = parse(op, body, w)?;
            json!({ "hasQueued": store.has_queued(&a.conversation_id).await? })
        }
        "worker-heartbeat" => {
            let NoArgs {} = parse(op, body, w)?;
            json!(store.worker_heartbeat(&p).await?)
        }
        "media-upload-url" => json!(media::upload_url(app, &p, &parse(op, body, w)?).await?),
        "message-metadata" => json!({ "metadata": media::attach_metadata(app, &p, &parse(op, body, w)?).await? }),
        other => return Err(AppError::not_found(format!("unknown worker op '{other}'"))),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_worker_id_is_checked_then_replaced_or_dropped() {
        let a: ClaimArgs = parse("claim", br#"{"workerId":"w1"}"#, "w1").unwrap();
        assert_eq!(a.worker_id, "w1");
        let a: ClaimArgs = parse("claim", b"{}", "w1").unwrap();
        assert_eq!(a.worker_id, "w1", "the token's worker, whatever the body says");
        let e = parse::<ClaimArgs>("claim", br#"{"workerId":"w2"}"#, "w1").unwrap_err();
        assert_eq!(e.code().as_str(), "Forbidden");
        assert_eq!(
            parse::<ClaimArgs>("claim", br#"{"workerId":5}"#, "w1").unwrap_err().code().as_str(),
            "ValidationError"
        );
        let c: ConversationArgs = parse("has-queued", br#"{"workerId":"w1","conversationId":"c"}"#, "w1").unwrap();
        assert_eq!(c.conversation_id, "c", "ops without a workerId field never see the key");
    }

    #[test]
    fn empty_bodies_only_where_allowed() {
        assert!(parse::<NoArgs>("control-state", b"", "w").is_ok());
        assert!(parse::<ClaimArgs>("claim", b"", "w").is_err());
        assert!(parse::<NoArgs>("control-state", b"[1]", "w").is_err());
        assert!(parse::<NoArgs>("control-state", br#"{"verbose":true}"#, "w").is_err());
    }
}
