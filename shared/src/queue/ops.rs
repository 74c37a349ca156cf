//! The queue's ops (producer and queue administration), served through the op envelope.

use super::*;
use crate::adapters::dynamo::Store;
use crate::app::App;
use crate::envelope::{NoArgs, Op, OpTable, args, to_json};
use crate::op;
use crate::{AppResult, BoxFut};
use serde_json::Value;
use serde_json::json;

/// The producer's ops (the `enqueue` function): messages in, and whether a conversation waits.
pub const PRODUCER_TABLE: OpTable<App> = OpTable {
    domain: "queue",
    ops: &[
        Op { name: "enqueue", run: enqueue },
        op!(App, "hasQueuedJobsForConversation", |app, a: ConversationArgs| {
            json!({ "hasQueued": app.store.has_queued(&a.conversation_id).await? })
        }),
    ],
};

/// Queue administration (the `admin` function).
pub const TABLE: OpTable<App> = OpTable {
    domain: "queue",
    ops: &[
        op!(App, "queueStats", |app, _a: NoArgs| app.store.queue_stats().await?),
        op!(App, "listJobsByStatus", |app, a: ListByStatusArgs| app.store.list_jobs_by_status(&a).await?),
        op!(App, "listQueueItemsForConversation", |app, a: ListConversationArgs| app
            .store
            .list_conversation_items(&a)
            .await?),
        op!(App, "redriveDeadLetters", |app, a: RedriveArgs| app.store.redrive(a).await?),
        op!(App, "backfillStatusShards", |app, a: BackfillArgs| app.store.backfill_status_shards(&a).await?),
    ],
};

/// The lease sweep, served by the `cleanup` function (its schedule and the local runner's timer).
pub const SWEEPS: OpTable<App> = OpTable {
    domain: "queue-sweeps",
    ops: &[
        op!(App, "releaseStuckJobs", |app, a: ReleaseArgs| app.store.release_expired_leases(a.limit).await?),
        op!(App, "releaseExpiredLeases", |app, a: ReleaseArgs| app.store.release_expired_leases(a.limit).await?),
    ],
};

fn enqueue(app: &App, v: Option<Value>) -> BoxFut<'_, AppResult<Value>> {
    Box::pin(async move { to_json(app.store.enqueue(enqueue_args(&app.store, v).await?).await?) })
}

/// `enqueue`'s args. When they do not parse, an unknown or disabled agent named by a readable
/// `agentKey` is reported first, as the store does for a refused payload.
async fn enqueue_args(store: &Store, v: Option<Value>) -> AppResult<EnqueueArgs> {
    let agent = v.as_ref().and_then(|a| a.get("agentKey")).and_then(Value::as_str).map(str::to_string);
    match args::<EnqueueArgs>("enqueue", v) {
        Ok(a) => Ok(a),
        Err(e) => match agent.filter(|k| super::rules::validate_agent_key(k).is_ok()) {
            Some(k) => Err(store.agent_refusal(&k).await?.unwrap_or(e)),
            None => Err(e),
        },
    }
}
