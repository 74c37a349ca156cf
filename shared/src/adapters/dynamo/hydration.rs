//! The reads hydration starts with.

use super::{Store, from_item, key, keys};
use crate::conversations::model::ConversationItem;
use crate::error::AppResult;
use crate::ids::MessageRef;
use crate::queue::model::MessageItem;
use crate::workers::model::WorkerItem;

/// The caller's worker row, a message and its conversation item, as read together.
pub type JobContext = (Option<WorkerItem>, Option<MessageItem>, Option<ConversationItem>);

impl Store {
    /// The worker row, the message and its conversation, strongly consistent, in one
    /// BatchGetItem: hydration checks the token on this row (never a cached one) and the lease on
    /// this message before it reads anything else.
    pub async fn job_context(&self, worker_id: &str, mref: &MessageRef) -> AppResult<JobContext> {
        let pk = keys::conversation_pk(&mref.conversation_id);
        let keys = [
            (self.tables.workers.as_str(), keys::worker_key(worker_id)),
            (self.tables.queue.as_str(), key(&pk, keys::message_sk(&mref.ulid))),
            (self.tables.queue.as_str(), key(&pk, keys::CONV_SK)),
        ];
        let mut got = self.batch_get(&keys).await?.into_iter();
        let (row, msg, conv) = (got.next().flatten(), got.next().flatten(), got.next().flatten());
        Ok((row.map(from_item).transpose()?, msg.map(from_item).transpose()?, conv.map(from_item).transpose()?))
    }
}
