//! CloudWatch metrics as embedded-metric-format (EMF) log lines: one JSON object per line with
//! an `_aws` block naming the metrics, their namespace and dimensions; CloudWatch Logs turns
//! them into metrics without any API call from the function.
//!
//! The formatting is pure ([`emf_line`]); [`emit`] logs the line as a `tracing` event with target
//! [`TARGET`], which `telemetry::init` writes as the bare JSON line (whatever the log level
//! filter), apart from the ordinary logs: to stdout on Lambda, to stderr locally.
//!
//! Where each metric is emitted (the edges):
//! - `Claims`, `EmptyClaims`, `Completes`, `Failures`, `DeadLetters`, `InputTokens`,
//!   `OutputTokens`: the worker API ([`worker_route`], called by `worker_api::handle`);
//! - `QueueDepth`, `Processing`, `DeadLetterDepth`, `OldestReadyAgeMs`: [`queue_gauges`], by the
//!   scheduled reconcile (every 5 minutes);
//! - `Spawns`, `WarmStarts`, `Unserved`: [`reconcile_cycle`], after every reconcile cycle;
//! - `WebhookAccepts`: [`webhook_accept`], by the webhook function;
//! - `Replies`: [`reply_sent`], for the worker reply route (`POST /worker/reply`);
//! - `PushDispatches`: [`push_dispatch`], for the push dispatcher (per handled slot).

use crate::clock::Millis;
use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "AgentFactory";
/// The `tracing` target of EMF lines.
pub const TARGET: &str = "emf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::None => "None",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub unit: Unit,
    pub value: f64,
}

pub fn count(name: &str, value: u64) -> Metric<'_> {
    Metric { name, unit: Unit::Count, value: value as f64 }
}

/// One EMF line: the metrics under one dimension set (`dims`, possibly empty), at `at`.
/// Dimension values are plain properties of the line, as EMF wants.
pub fn emf_line(at: Millis, dims: &[(&str, &str)], metrics: &[Metric<'_>]) -> String {
    let mut root = Map::new();
    let names: Vec<&str> = dims.iter().map(|(k, _)| *k).collect();
    let defs: Vec<Value> = metrics.iter().map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()})).collect();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": at,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [names], "Metrics": defs}],
        }),
    );
    for (k, v) in dims {
        root.insert((*k).into(), json!(v));
    }
    for m in metrics {
        let v = if m.value.is_finite() { m.value } else { 0.0 };
        root.insert(m.name.into(), json!(v));
    }
    Value::Object(root).to_string()
}

/// Log one EMF line (see the module doc).
pub fn emit(at: Millis, dims: &[(&str, &str)], metrics: &[Metric<'_>]) {
    if metrics.is_empty() {
        return;
    }
    let line = emf_line(at, dims, metrics);
    tracing::info!(target: TARGET, "{line}");
}

/// After a successful worker call: claims (with a job or empty), completes (and their token
/// usage), failures and dead letters.
pub fn worker_route(at: Millis, op: &str, result: &Value, usage: Option<(u64, u64)>) {
    let dims = [("Operation", op)];
    match op {
        "claim" if result.is_null() => emit(at, &dims, &[count("EmptyClaims", 1)]),
        "claim" => emit(at, &dims, &[count("Claims", 1)]),
        "complete" => {
            let mut m = vec![count("Completes", 1)];
            if let Some((i, o)) = usage {
                m.push(count("InputTokens", i));
                m.push(count("OutputTokens", o));
            }
            emit(at, &dims, &m)
        }
        "fail" => {
            let dead = result.get("deadLettered").and_then(Value::as_bool) == Some(true);
            emit(at, &dims, &[count("Failures", 1), count("DeadLetters", u64::from(dead))])
        }
        // A reply part answered (its final `status`: sent, failed, unconfirmed), replays too.
        "reply" => reply_sent(at, result.get("status").and_then(Value::as_str).unwrap_or("unknown")),
        _ => {}
    }
}

/// Queue gauges: messages ready to claim, in progress, dead-lettered, and how long the oldest
/// ready message has waited (0 when none waits).
pub fn queue_gauges(at: Millis, ready: u64, processing: u64, dead_letter: u64, oldest_ready_age_ms: Millis) {
    emit(
        at,
        &[],
        &[
            count("QueueDepth", ready),
            count("Processing", processing),
            count("DeadLetterDepth", dead_letter),
            Metric { name: "OldestReadyAgeMs", unit: Unit::Milliseconds, value: oldest_ready_age_ms.max(0) as f64 },
        ],
    )
}

/// After a reconcile cycle that ran.
pub fn reconcile_cycle(at: Millis, spawned: u32, warm_started: u32, unserved: u32) {
    emit(
        at,
        &[],
        &[
            count("Spawns", u64::from(spawned)),
            count("WarmStarts", u64::from(warm_started)),
            count("Unserved", u64::from(unserved)),
        ],
    )
}

/// A Telegram update accepted by the webhook (`duplicate`: already seen, not stored again).
pub fn webhook_accept(at: Millis, duplicate: bool) {
    emit(at, &[("Outcome", if duplicate { "duplicate" } else { "accepted" })], &[count("WebhookAccepts", 1)])
}

/// A reply part sent to Telegram for a worker (`Outcome`: e.g. `sent`, `duplicate`, `failed`).
pub fn reply_sent(at: Millis, outcome: &str) {
    emit(at, &[("Outcome", outcome)], &[count("Replies", 1)])
}

/// A push slot handled by the dispatcher (`Outcome`: `enqueued`, `skipped` or `failed`).
pub fn push_dispatch(at: Millis, outcome: &str) {
    emit(at, &[("Outcome", outcome)], &[count("PushDispatches", 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What CloudWatch requires of an EMF line: a JSON object, `_aws.Timestamp` a number,
    /// each directive's metrics present as numbers and its dimensions as string properties.
    pub(crate) fn check_emf(line: &str) -> Value {
        let v: Value = serde_json::from_str(line).expect("a JSON object");
        let aws = &v["_aws"];
        assert!(aws["Timestamp"].is_i64(), "{line}");
        for d in aws["CloudWatchMetrics"].as_array().expect("directives") {
            assert_eq!(d["Namespace"], NAMESPACE);
            for set in d["Dimensions"].as_array().unwrap() {
                for k in set.as_array().unwrap() {
                    assert!(v[k.as_str().unwrap()].is_string(), "dimension {k} in {line}");
                }
            }
            for m in d["Metrics"].as_array().unwrap() {
                assert!(v[m["Name"].as_str().unwrap()].is_number(), "{line}");
                assert!(["Count", "Milliseconds", "None"].contains(&m["Unit"].as_str().unwrap()));
            }
        }
        v
    }

    #[test]
    fn lines_are_valid_emf() {
        let l = emf_line(5, &[("Operation", "claim")], &[count("Claims", 1), count("X", 3)]);
        let v = check_emf(&l);
        assert_eq!(v["Claims"], 1.0);
        assert_eq!(v["Operation"], "claim");
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Operation"]]));
        assert!(!l.contains('\n'));
        let v = check_emf(&emf_line(
            7,
            &[],
            &[Metric { name: "OldestReadyAgeMs", unit: Unit::Milliseconds, value: f64::NAN }],
        ));
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert_eq!(v["OldestReadyAgeMs"], 0.0);
        let v = check_emf(&emf_line(9, &[("Outcome", "a\"b\n")], &[count("Replies", 1)]));
        assert_eq!(v["Outcome"], "a\"b\n");
    }
}
