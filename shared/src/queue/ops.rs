//! The queue's ops (producer and queue administration), served through the op envelope.

use super::*;
use crate::app::App;
use crate::envelope::{NoArgs, OpTable};
use crate::op;
use serde_json::json;

pub const TABLE: OpTable<App> = OpTable {
    domain: "queue",
    ops: &[
        op!(App, "enqueue", |app, a: EnqueueArgs| app.store.enqueue(a).await?),
        op!(App, "queueStats", |app, _a: NoArgs| app.store.queue_stats().await?),
        op!(App, "listJobsByStatus", |app, a: ListByStatusArgs| app.store.list_jobs_by_status(&a).await?),
        op!(App, "listQueueItemsForConversation", |app, a: ListConversationArgs| app
            .store
            .list_conversation_items(&a)
            .await?),
        op!(App, "hasQueuedJobsForConversation", |app, a: ConversationArgs| {
            json!({ "hasQueued": app.store.has_queued(&a.conversation_id).await? })
        }),
        op!(App, "releaseStuckJobs", |app, a: ReleaseArgs| app.store.release_expired_leases(a.limit).await?),
        op!(App, "releaseExpiredLeases", |app, a: ReleaseArgs| app.store.release_expired_leases(a.limit).await?),
        op!(App, "redriveDeadLetters", |app, a: RedriveArgs| app.store.redrive(a).await?),
    ],
};
