//! A queue gauge for metrics: the due time of the oldest ready message (one Query, Limit 1, of
//! each shard of `queued` in the `byStatusShard` index, concurrently; its sort key starts with
//! the due time).

use super::Store;
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::error::AppResult;
use crate::queue::model::MessageStatus;

impl Store {
    /// The due time of the oldest queued message that is due at `now`, if any.
    pub async fn oldest_ready_at(&self, now: Millis) -> AppResult<Option<Millis>> {
        let firsts = super::queue::all_status_shards(|shard| {
            let q = self
                .status_query(MessageStatus::Queued, shard, Some((now, true)))
                .projection_expression("scheduledFor")
                .limit(1);
            async move {
                let out = q.send().await.map_err(|e| sdk_error("Query oldest ready", e))?;
                Ok(out
                    .items
                    .unwrap_or_default()
                    .first()
                    .and_then(|i| i.get("scheduledFor"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<Millis>().ok()))
            }
        })
        .await?;
        Ok(firsts.into_iter().flatten().min())
    }
}
