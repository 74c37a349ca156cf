//! The `reconcile` function: keeps the worker pool matched to the work (spec
//! `reconcile-and-providers.md`). Three triggers, one handler:
//!
//! - the queue table's DynamoDB stream (`Records` with `eventSource: aws:dynamodb`): a batch
//!   asks for one cycle when any record can need capacity (a conversation waiting for a claim);
//!   the answer is a partial batch response (`batchItemFailures`);
//! - the EventBridge schedule (`source: aws.events`): one cycle;
//! - the op envelope `{"op": ..., "args": {...}}` (the ops of `shared::reconcile::ops`).
//!
//! Every trigger goes through the single-flight lease with coalescing, so a burst of stream
//! batches causes a handful of cycles.

use aws_lambda_events::event::dynamodb::{Event as DynamoDbEvent, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde_json::{Value, json};
use shared::AppError;
use shared::envelope::OpTable;
use shared::reconcile::cycle::Reconciler;

/// The op tables this function serves.
pub const TABLES: &[&OpTable<Reconciler>] = &[&shared::reconcile::ops::TABLE];

/// Every op this function serves.
pub fn op_names() -> Vec<&'static str> {
    shared::envelope::op_names(TABLES)
}

/// Whether a stream record can need capacity: a conversation item, unlocked (`readyShard`
/// `d…` due, or `r…` waiting), with open work (`readyAt` present). The template's event filter lets only these
/// through on AWS; the local runner relies on this check.
pub fn needs_capacity(r: &EventRecord) -> bool {
    use serde_dynamo::AttributeValue as Av;
    if !matches!(r.event_name.as_str(), "INSERT" | "MODIFY") {
        return false;
    }
    let img = &r.change.new_image;
    let s = |k: &str| match img.get(k) {
        Some(Av::S(v)) => Some(v.as_str()),
        _ => None,
    };
    s("sk") == Some("CONV")
        && s("readyShard").is_some_and(|v| v.starts_with(['d', 'r']))
        && img.get("readyAt").is_some()
}

/// Handle one invocation payload: a stream batch, a scheduled event or an op envelope.
#[tracing::instrument(skip_all)]
pub async fn handle(r: &Reconciler, payload: Value) -> Result<Value, AppError> {
    if is_stream(&payload) {
        return handle_stream(r, payload).await;
    }
    if payload.get("source").and_then(Value::as_str) == Some("aws.events") {
        let report = Box::pin(r.request_cycle()).await.inspect_err(|e| e.log("scheduled reconcile"))?;
        cycle_metrics(r, &report);
        // The queue gauges, every scheduled run (5 minutes): best effort.
        if let Err(e) = shared::stats::ops::emit_queue_gauges(&r.app).await {
            e.log("queue gauges");
        }
        return shared::envelope::to_json(report);
    }
    Box::pin(shared::envelope::handle(r, TABLES, payload)).await
}

/// The EMF line of a cycle that ran (spawns, warm starts, conversations left waiting).
fn cycle_metrics(r: &Reconciler, report: &shared::reconcile::model::CycleReport) {
    if report.ran {
        shared::metrics::reconcile_cycle(r.app.now(), report.spawned, report.warm_started, report.unserved);
    }
}

fn is_stream(v: &Value) -> bool {
    v.get("Records")
        .and_then(Value::as_array)
        .is_some_and(|a| a.first().and_then(|x| x.get("eventSource")).and_then(Value::as_str) == Some("aws:dynamodb"))
}

/// A stream batch: one cycle if any record needs capacity. On failure every record is
/// reported failed from the first one (Lambda retries the batch, bisecting on error), so no
/// trigger is lost; on success the response lists none.
async fn handle_stream(r: &Reconciler, payload: Value) -> Result<Value, AppError> {
    let ev: DynamoDbEvent = serde_json::from_value(payload)
        .map_err(|e| AppError::validation(format!("invalid DynamoDB stream event: {e}")))?;
    let wanted = ev.records.iter().filter(|x| needs_capacity(x)).count();
    let mut resp = DynamoDbEventResponse::default();
    if wanted > 0 {
        match Box::pin(r.request_cycle()).await {
            Ok(report) => {
                cycle_metrics(r, &report);
                tracing::info!(records = ev.records.len(), wanted, ran = report.ran, "stream batch")
            }
            Err(e) => {
                e.log("stream reconcile");
                if let Some(first) = ev.records.first() {
                    let mut f = DynamoDbBatchItemFailure::default();
                    f.item_identifier = first.change.sequence_number.clone();
                    resp.batch_item_failures.push(f);
                }
            }
        }
    }
    shared::envelope::to_json(resp).map(|v| if v.is_null() { json!({}) } else { v })
}
