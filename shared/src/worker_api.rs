//! The worker protocol: `POST /worker/<op>` with JSON bodies (architecture §3), independent of
//! the HTTP framework so the `claim` Lambda and the local runner share it.

use crate::error::{AppError, AppResult};
use crate::queue::*;
use crate::store::Store;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub const WORKER_OPS: &[&str] = &["claim", "heartbeat", "complete", "fail", "append-messages", "has-queued"];

/// Worker authentication. Until per-worker tokens exist, one bearer token from configuration.
#[derive(Clone)]
pub struct WorkerAuth {
    token: Option<String>,
}

impl std::fmt::Debug for WorkerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerAuth").field("configured", &self.token.is_some()).finish()
    }
}

impl WorkerAuth {
    pub fn new(token: Option<String>) -> Self {
        Self { token: token.filter(|t| !t.is_empty()) }
    }

    /// From `WORKER_AUTH_TOKEN`.
    pub fn from_env() -> Self {
        Self::new(std::env::var("WORKER_AUTH_TOKEN").ok())
    }

    /// Check an `Authorization` header value, in constant time.
    pub fn check(&self, header: Option<&str>) -> AppResult<()> {
        let Some(expected) = &self.token else {
            return Err(AppError::Unauthorized("worker authentication is not configured on this deployment".into()));
        };
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(AppError::Unauthorized("missing bearer token (Authorization: Bearer <token>)".into()));
        };
        if !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
            return Err(AppError::Unauthorized("invalid bearer token".into()));
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
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
pub async fn handle(store: &Store, auth: &WorkerAuth, req: WorkerRequest<'_>) -> WorkerResponse {
    let path = req.path;
    match route(store, auth, req).await {
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

async fn route(store: &Store, auth: &WorkerAuth, req: WorkerRequest<'_>) -> AppResult<Value> {
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
    auth.check(authorization)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(AppError::PayloadTooLarge(format!("body is {} bytes; the limit is {MAX_BODY_BYTES}", body.len())));
    }
    let v = match op {
        "claim" => {
            let a: ClaimArgs = parse(op, body)?;
            json!(store.claim(&a.worker_id, a.conversation_id.as_deref()).await?)
        }
        "heartbeat" => json!(store.heartbeat(&parse::<LeaseArgs>(op, body)?).await?),
        "complete" => {
            store.complete(&parse::<LeaseArgs>(op, body)?).await?;
            json!({ "ok": true })
        }
        "fail" => json!(store.fail(&parse::<FailArgs>(op, body)?).await?),
        "append-messages" => json!(store.append_messages(parse::<AppendArgs>(op, body)?).await?),
        "has-queued" => {
            let a: ConversationArgs = parse(op, body)?;
            json!({ "hasQueued": store.has_queued(&a.conversation_id).await? })
        }
        _ => unreachable!("checked against WORKER_OPS"),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_checks() {
        let a = WorkerAuth::new(Some("s3cret".into()));
        assert!(a.check(Some("Bearer s3cret")).is_ok());
        assert!(a.check(Some("Bearer s3cre")).is_err());
        assert!(a.check(Some("s3cret")).is_err());
        assert!(a.check(None).is_err());
        let none = WorkerAuth::new(None);
        assert!(none.check(Some("Bearer x")).is_err());
        assert!(!format!("{a:?}").contains("s3cret"), "the token never appears in Debug output");
        let e = a.check(Some("Bearer wrong")).unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
    }
}
