//! The worker protocol: `POST /worker/<op>` with JSON bodies (architecture §3), independent of
//! the HTTP framework so the `claim` Lambda and the local runner share it.

use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::hydration::HydrationArgs;
use crate::queue::*;
use crate::worker_auth::{Authenticator, Principal};
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimBody {
    #[serde(default)]
    worker_id: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeaseBody {
    #[serde(default)]
    worker_id: Option<String>,
    message_id: String,
    lease_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FailBody {
    #[serde(default)]
    worker_id: Option<String>,
    message_id: String,
    lease_id: String,
    error_message: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkerOnlyBody {
    #[serde(default)]
    worker_id: Option<String>,
}

/// A body's `workerId`, when present, must be the token's worker (it is never trusted).
fn same_worker(given: Option<&str>, p: &Principal) -> AppResult<()> {
    match given {
        Some(w) if w != p.worker_id => Err(AppError::Forbidden(format!(
            "workerId '{}' in the body is not the worker of this token",
            crate::ids::truncate(w, 60)
        ))),
        _ => Ok(()),
    }
}

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

fn parse<T: DeserializeOwned>(op: &str, body: &[u8]) -> AppResult<T> {
    if body.is_empty() && EMPTY_BODY_OK.contains(&op) {
        return parse(op, b"{}");
    }
    if body.is_empty() {
        return Err(AppError::validation(format!("POST /worker/{op} needs a JSON object body")));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| AppError::validation(format!("malformed JSON: {e}")))?;
    if !v.is_object() {
        return Err(AppError::validation("the body must be a JSON object"));
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
        return Err(AppError::validation(format!("/worker/{op} takes POST, not {method}")));
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
        let a: HydrationArgs = parse(op, body)?;
        if let Some(w) = a.worker_id.as_deref().filter(|w| *w != claimed.worker_id()) {
            return Err(AppError::Forbidden(format!(
                "workerId '{}' in the body is not the worker of this token",
                crate::ids::truncate(w, 60)
            )));
        }
        return Ok(json!(crate::hydration::hydrate(app, claimed, &a).await?));
    }
    let p = app.auth.authenticate(&app.store, authorization, false).await?;
    check_size()?;
    let store = &app.store;
    let lease = |b: LeaseBody| -> AppResult<LeaseArgs> {
        same_worker(b.worker_id.as_deref(), &p)?;
        Ok(LeaseArgs {
            worker_id: p.worker_id.clone(),
            message_id: b.message_id,
            lease_id: b.lease_id,
            token_hash: Some(p.token_hash.clone()),
        })
    };
    let v = match op {
        "claim" => {
            let a: ClaimBody = parse(op, body)?;
            same_worker(a.worker_id.as_deref(), &p)?;
            json!(store.claim_as(&p.worker_id, a.conversation_id.as_deref(), Some(&p.token_hash)).await?)
        }
        "heartbeat" => json!(store.heartbeat(&lease(parse(op, body)?)?).await?),
        "complete" => {
            store.complete(&lease(parse(op, body)?)?).await?;
            json!({ "ok": true })
        }
        "fail" => {
            let b: FailBody = parse(op, body)?;
            same_worker(b.worker_id.as_deref(), &p)?;
            let a = FailArgs {
                worker_id: p.worker_id.clone(),
                message_id: b.message_id,
                lease_id: b.lease_id,
                error_message: b.error_message,
                token_hash: Some(p.token_hash.clone()),
            };
            json!(store.fail(&a).await?)
        }
        "append-messages" => {
            let mut a: AppendArgs = parse(op, body)?;
            a.holder = Some(p.worker_id.clone());
            json!(store.append_messages(a).await?)
        }
        "has-queued" => {
            let a: ConversationArgs = parse(op, body)?;
            json!({ "hasQueued": store.has_queued(&a.conversation_id).await? })
        }
        "control-state" => {
            let a: WorkerOnlyBody = parse(op, body)?;
            same_worker(a.worker_id.as_deref(), &p)?;
            json!(store.worker_control_state(&p.worker_id).await?)
        }
        "worker-heartbeat" => {
            let a: WorkerOnlyBody = parse(op, body)?;
            same_worker(a.worker_id.as_deref(), &p)?;
            json!(store.worker_heartbeat(&p).await?)
        }
        "snapshot-prepare" => json!(snapshots::prepare(app, &p, &parse(op, body)?).await?),
        "snapshot-finalize" => json!(snapshots::finalize(app, &p, &parse(op, body)?).await?),
        "snapshot-fail" => json!(snapshots::fail(app, &p, &parse(op, body)?).await?),
        "snapshot-restore" => json!(snapshots::restore(app, &p, &parse(op, body)?).await?),
        "media-upload-url" => json!(media::upload_url(app, &p, &parse(op, body)?).await?),
        "media-url" => json!(media::file_url(app, &p, &parse(op, body)?).await?),
        "message-metadata" => json!({ "metadata": media::attach_metadata(app, &p, &parse(op, body)?).await? }),
        _ => unreachable!("checked against WORKER_OPS; hydration is handled above"),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_worker_id_must_match_the_token() {
        let p = Principal { worker_id: "w1".into(), token_hash: "h".into() };
        assert!(same_worker(None, &p).is_ok());
        assert!(same_worker(Some("w1"), &p).is_ok());
        assert_eq!(same_worker(Some("w2"), &p).unwrap_err().code().as_str(), "Forbidden");
    }

    #[test]
    fn empty_bodies_only_where_allowed() {
        assert!(parse::<WorkerOnlyBody>("control-state", b"").is_ok());
        assert!(parse::<ClaimBody>("claim", b"").is_err());
        assert!(parse::<WorkerOnlyBody>("control-state", b"[1]").is_err());
    }
}
