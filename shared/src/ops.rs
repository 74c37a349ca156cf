//! The consumer invocation envelope `{"op": "<name>", "args": {...}}` (architecture §3) and
//! the queue operations served through it.

use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::model::MessageConfig;
use crate::queue::*;
use crate::snapshots;
use crate::store::Store;
use crate::store::control::ConfigureAgentArgs;
use crate::store::workers::MintTokenArgs;
use crate::store::workers::UpsertWorkerArgs;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub op: String,
    #[serde(default)]
    pub args: Option<Value>,
}

/// Operations the `enqueue` function serves (producer and queue administration).
pub const QUEUE_OPS: &[&str] = &[
    "enqueue",
    "configureAgent",
    "getAgentProfile",
    "queueStats",
    "listJobsByStatus",
    "listQueueItemsForConversation",
    "hasQueuedJobsForConversation",
    "releaseStuckJobs",
    "releaseExpiredLeases",
    "redriveDeadLetters",
    "upsertWorkerState",
    "getWorker",
    "setMessageRuntimeConfig",
    "messageRuntimeConfig",
    "appendConversationMessages",
    "mintWorkerToken",
    "revokeWorkerToken",
    "getWorkerControlState",
    "listSnapshotsForConversation",
    "listSnapshotsForUserAgent",
    "getLatestSnapshotForUserAgent",
    "expireOldDataSnapshots",
    "expireStorage",
];

/// Every op of the envelope: the queue and worker administration ops and the secret ops.
pub fn all_ops() -> Vec<&'static str> {
    QUEUE_OPS.iter().chain(crate::secrets::ops::SECRET_OPS).copied().collect()
}

/// Run one op of the envelope.
pub async fn dispatch(app: &App, env: Envelope) -> AppResult<Value> {
    let op = env.op.as_str();
    if crate::secrets::ops::SECRET_OPS.contains(&op) {
        return crate::secrets::ops::dispatch(&app.store, &app.secrets, op, env.args).await;
    }
    match op {
        "appendConversationMessages" => to_json(app.store.append_messages(args::<AppendArgs>(op, env.args)?).await?),
        "mintWorkerToken" => to_json(app.store.mint_worker_token(&args::<MintTokenArgs>(op, env.args)?).await?),
        "revokeWorkerToken" => {
            let a: WorkerIdArgs = args(op, env.args)?;
            let revoked = app.store.revoke_worker_token(&a.worker_id).await?;
            app.auth.clear();
            to_json(json!({ "workerId": a.worker_id, "revoked": revoked }))
        }
        "getWorkerControlState" => {
            let a: WorkerIdArgs = args(op, env.args)?;
            to_json(app.store.worker_control_state(&a.worker_id).await?)
        }
        "listSnapshotsForConversation" => to_json(snapshots::list_for_conversation(app, &args(op, env.args)?).await?),
        "listSnapshotsForUserAgent" => to_json(snapshots::list_for_user_agent(app, &args(op, env.args)?).await?),
        "getLatestSnapshotForUserAgent" => {
            let mut a: snapshots::UserAgentSnapshotsArgs = args(op, env.args)?;
            a.limit = Some(1);
            to_json(snapshots::list_for_user_agent(app, &a).await?.into_iter().next())
        }
        "expireOldDataSnapshots" | "expireStorage" => {
            to_json(snapshots::sweep(app, args::<ReleaseArgs>(op, env.args)?.limit).await?)
        }
        _ => dispatch_queue_op(&app.store, env).await,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkerIdArgs {
    worker_id: String,
}

/// Parse an invocation payload into an envelope, with a precise error.
pub fn parse_envelope(event: Value) -> AppResult<Envelope> {
    if !event.is_object() {
        return Err(AppError::validation("the payload must be a JSON object {\"op\": ..., \"args\": {...}}"));
    }
    serde_json::from_value(event).map_err(|e| AppError::validation(format!("invalid envelope: {e}")))
}

/// The `args` of an op as `T`, with a precise error.
pub(crate) fn args<T: DeserializeOwned>(op: &str, v: Option<Value>) -> AppResult<T> {
    let v = v.unwrap_or_else(|| json!({}));
    if !v.is_object() {
        return Err(AppError::validation(format!("args of op '{op}' must be a JSON object")));
    }
    serde_json::from_value(v).map_err(|e| AppError::validation(format!("invalid args for op '{op}': {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(v: T) -> AppResult<Value> {
    serde_json::to_value(v).map_err(|e| AppError::internal(e.to_string()))
}

/// `enqueue`'s args. When they do not parse, an unknown or disabled agent named by a readable
/// `agentKey` is reported first, as the store does for a refused payload.
async fn enqueue_args(store: &Store, v: Option<Value>) -> AppResult<EnqueueArgs> {
    let agent = v.as_ref().and_then(|a| a.get("agentKey")).and_then(Value::as_str).map(str::to_string);
    match args::<EnqueueArgs>("enqueue", v) {
        Ok(a) => Ok(a),
        Err(e) => match agent.filter(|k| crate::queue::rules::validate_agent_key(k).is_ok()) {
            Some(k) => Err(store.agent_refusal(&k).await?.unwrap_or(e)),
            None => Err(e),
        },
    }
}

/// Run one queue operation.
pub async fn dispatch_queue_op(store: &Store, env: Envelope) -> AppResult<Value> {
    let op = env.op.as_str();
    match op {
        "enqueue" => to_json(store.enqueue(enqueue_args(store, env.args).await?).await?),
        "configureAgent" => to_json(store.configure_agent(args::<ConfigureAgentArgs>(op, env.args)?).await?),
        "getAgentProfile" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct A {
                agent_key: String,
            }
            let a: A = args(op, env.args)?;
            to_json(store.get_agent(&a.agent_key).await?)
        }
        "queueStats" => {
            let _: ReleaseArgsNone = args(op, env.args)?;
            to_json(store.queue_stats().await?)
        }
        "listJobsByStatus" => to_json(store.list_jobs_by_status(&args::<ListByStatusArgs>(op, env.args)?).await?),
        "listQueueItemsForConversation" => {
            to_json(store.list_conversation_items(&args::<ListConversationArgs>(op, env.args)?).await?)
        }
        "hasQueuedJobsForConversation" => {
            let a: ConversationArgs = args(op, env.args)?;
            to_json(json!({ "hasQueued": store.has_queued(&a.conversation_id).await? }))
        }
        "releaseStuckJobs" | "releaseExpiredLeases" => {
            to_json(store.release_expired_leases(args::<ReleaseArgs>(op, env.args)?.limit).await?)
        }
        "redriveDeadLetters" => to_json(store.redrive(args::<RedriveArgs>(op, env.args)?).await?),
        "upsertWorkerState" => {
            worker_json(Some(store.upsert_worker_state(&args::<UpsertWorkerArgs>(op, env.args)?).await?))
        }
        "getWorker" => {
            let a: WorkerIdArgs = args(op, env.args)?;
            worker_json(store.get_worker(&a.worker_id).await?)
        }
        "setMessageRuntimeConfig" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct A {
                message_config: MessageConfig,
            }
            let a: A = args(op, env.args)?;
            to_json(store.set_message_config(a.message_config).await?)
        }
        "messageRuntimeConfig" => {
            let _: ReleaseArgsNone = args(op, env.args)?;
            to_json(store.message_config().await?)
        }
        other => Err(AppError::validation(format!(
            "unknown op '{}'; this function serves: {}",
            crate::ids::truncate(other, 60),
            all_ops().join(", ")
        ))),
    }
}

/// A worker row as ops show it: without `tokenHash` (not a secret, but nobody needs it).
fn worker_json(w: Option<crate::model::WorkerItem>) -> AppResult<Value> {
    let mut v = to_json(w)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("tokenHash");
    }
    Ok(v)
}

/// Ops that take no arguments still refuse unknown ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseArgsNone {}
