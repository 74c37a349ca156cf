//! The consumer invocation envelope `{"op": "<name>", "args": {...}}` (architecture §3) and
//! the queue operations served through it.

use crate::error::{AppError, AppResult};
use crate::model::MessageConfig;
use crate::queue::*;
use crate::store::Store;
use crate::store::control::ConfigureAgentArgs;
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
];

/// Parse an invocation payload into an envelope, with a precise error.
pub fn parse_envelope(event: Value) -> AppResult<Envelope> {
    if !event.is_object() {
        return Err(AppError::validation("the payload must be a JSON object {\"op\": ..., \"args\": {...}}"));
    }
    serde_json::from_value(event).map_err(|e| AppError::validation(format!("invalid envelope: {e}")))
}

fn args<T: DeserializeOwned>(op: &str, v: Option<Value>) -> AppResult<T> {
    let v = v.unwrap_or_else(|| json!({}));
    if !v.is_object() {
        return Err(AppError::validation(format!("args of op '{op}' must be a JSON object")));
    }
    serde_json::from_value(v).map_err(|e| AppError::validation(format!("invalid args for op '{op}': {e}")))
}

fn to_json<T: serde::Serialize>(v: T) -> AppResult<Value> {
    serde_json::to_value(v).map_err(|e| AppError::internal(e.to_string()))
}

/// Run one queue operation.
pub async fn dispatch_queue_op(store: &Store, env: Envelope) -> AppResult<Value> {
    let op = env.op.as_str();
    match op {
        "enqueue" => to_json(store.enqueue(args::<EnqueueArgs>(op, env.args)?).await?),
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
        "upsertWorkerState" => to_json(store.upsert_worker_state(&args::<UpsertWorkerArgs>(op, env.args)?).await?),
        "getWorker" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct A {
                worker_id: String,
            }
            let a: A = args(op, env.args)?;
            to_json(store.get_worker(&a.worker_id).await?)
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
            QUEUE_OPS.join(", ")
        ))),
    }
}

/// Ops that take no arguments still refuse unknown ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseArgsNone {}
