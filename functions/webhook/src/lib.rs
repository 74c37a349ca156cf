//! The `webhook` function: Telegram ingress (architecture §3).
//!
//! - `POST /telegram/webhook` through the HTTP API: the *accept* stage ([`handle`]).
//! - Records of the queue table's stream whose key starts with `TG#` (new accepted updates,
//!   selected by the event source's filter): the *process* stage ([`handle_stream`]), with
//!   partial batch failures so only the failed updates are retried.
//!
//! One binary takes both event shapes ([`dispatch`]): a `Records` array is a stream batch,
//! anything else an API Gateway HTTP event.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use shared::app::App;

/// The accept stage for one HTTP request. Every outcome is a JSON response.
#[tracing::instrument(skip_all, fields(path = %req.uri().path()))]
pub async fn handle(app: &App, req: Request) -> Response<Body> {
    let full = req.uri().path();
    let on_route = full.ends_with("/telegram/webhook");
    if !on_route {
        return json_response(404, &json!({"ok": false, "error": format!("no route {full}")}));
    }
    if req.method() != http::Method::POST {
        return json_response(405, &json!({"ok": false, "error": "use POST"}));
    }
    let secret =
        req.headers().get(shared::telegram::rules::SECRET_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    match shared::ingress::accept(app, secret.as_deref(), body).await {
        Ok(o) => {
            accept_metrics(app, &o);
            json_response(o.status, &o.body)
        }
        Err(e) => {
            e.log("telegram accept");
            json_response(500, &json!({"ok": false, "error": "temporary failure; Telegram will retry"}))
        }
    }
}

/// Accept, and on a new update, process it right after (the local runner's background task).
pub async fn handle_and_spawn(app: std::sync::Arc<App>, req: Request) -> Response<Body> {
    handle_and_spawn_then(app, req, |_| {}).await
}

/// [`handle_and_spawn`], calling `after` with the outcome once a new update was processed (the
/// local runner asks for a reconcile cycle after an enqueue, as the queue table's stream does).
pub async fn handle_and_spawn_then(
    app: std::sync::Arc<App>,
    req: Request,
    after: impl FnOnce(&shared::ingress::ProcessOutcome) + Send + 'static,
) -> Response<Body> {
    let full = req.uri().path().to_string();
    let secret =
        req.headers().get(shared::telegram::rules::SECRET_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    if !full.ends_with("/telegram/webhook") || req.method() != http::Method::POST {
        return handle(&app, req).await;
    }
    let body = match req.body() {
        Body::Text(t) => t.as_bytes().to_vec(),
        Body::Binary(b) => b.clone(),
        _ => Vec::new(),
    };
    match shared::ingress::accept(&app, secret.as_deref(), &body).await {
        Ok(o) => {
            accept_metrics(&app, &o);
            if let Some((bot, update_id)) = o.accepted.clone() {
                let app = app.clone();
                tokio::spawn(async move {
                    match shared::ingress::process(&app, &bot, update_id).await {
                        Ok(out) => after(&out),
                        Err(e) => e.log("telegram process"),
                    }
                });
            }
            json_response(o.status, &o.body)
        }
        Err(e) => {
            e.log("telegram accept");
            json_response(500, &json!({"ok": false, "error": "temporary failure; Telegram will retry"}))
        }
    }
}

/// The EMF line of an accepted update (new or duplicate).
fn accept_metrics(app: &App, o: &shared::ingress::AcceptOutcome) {
    if o.accepted.is_some() {
        shared::metrics::webhook_accept(app.now(), false);
    } else if o.body.get("duplicate").and_then(Value::as_bool) == Some(true) {
        shared::metrics::webhook_accept(app.now(), true);
    }
}

pub fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::Text(body.to_string()))
        .expect("valid response parts")
}

/// The (bot, update id) of a stream record's keys (`pk = TG#<bot>`, `sk = U#<update_id>`).
fn record_update(r: &Value) -> Option<(String, i64)> {
    let keys = r.pointer("/dynamodb/Keys")?;
    let pk = keys.pointer("/pk/S")?.as_str()?;
    let sk = keys.pointer("/sk/S")?.as_str()?;
    let bot = pk.strip_prefix(shared::adapters::dynamo::keys::UPDATE_PK_PREFIX)?;
    let id = sk.strip_prefix("U#")?.parse().ok()?;
    Some((bot.to_string(), id))
}

/// The process stage for a stream batch: `{"batchItemFailures": [...]}` names the records to
/// retry (transient failures only; business outcomes are recorded on the update).
pub async fn handle_stream(app: &App, event: &Value) -> Value {
    let mut failures = Vec::new();
    for r in event.get("Records").and_then(Value::as_array).into_iter().flatten() {
        if r.get("eventName").and_then(Value::as_str) != Some("INSERT") {
            continue;
        }
        let Some((bot, id)) = record_update(r) else { continue };
        if let Err(e) = shared::ingress::process(app, &bot, id).await {
            e.log("telegram process");
            if let Some(seq) = r.pointer("/dynamodb/SequenceNumber").and_then(Value::as_str) {
                failures.push(json!({"itemIdentifier": seq}));
            }
        }
    }
    json!({ "batchItemFailures": failures })
}

/// One Lambda event of either shape: a stream batch, or an API Gateway HTTP event (answered in
/// API Gateway's response format).
pub async fn dispatch(app: &App, event: Value) -> Result<Value, lambda_runtime::Error> {
    if event.get("Records").is_some() {
        return Ok(handle_stream(app, &event).await);
    }
    let req = lambda_http::request::from_str(&event.to_string())?;
    let resp = handle(app, req).await;
    let status = resp.status().as_u16();
    let body = match resp.into_body() {
        Body::Text(t) => t,
        _ => String::new(),
    };
    Ok(json!({
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": body,
        "isBase64Encoded": false,
    }))
}
