//! Read models: `queueStats` (bounded index reads), job listings.

use super::*;

impl Store {
    /// Count the `byStatusShard` entries of `status` (every shard) whose `statusKey` is below
    /// (`Some((t, true))`) or at/above (`Some((t, false))`) time `t`, reading at most
    /// [`STATS_CAP`] entries over all shards: the count, and whether more were left unread.
    pub(super) async fn count_status(
        &self,
        status: MessageStatus,
        split: Option<(Millis, bool)>,
    ) -> AppResult<(u64, bool)> {
        let b = self.bounded_status_read(status, split, None).await?;
        Ok((b.count, b.capped))
    }

    /// `queueStats`: bounded reads of the `byStatusShard` index. Each figure reads at most
    /// [`STATS_CAP`] index entries over its 32 shards (queued due, queued scheduled, processing —
    /// split into live and expired leases from the same read —, dead-letter), so its cost does
    /// not grow with the queue's depth; a figure that reached the cap is a lower bound and
    /// `capped` says so. Each figure queries every shard at once (32 Queries), then continues
    /// the shards that had more than their share, while the bound allows.
    pub async fn queue_stats(&self) -> AppResult<QueueStats> {
        let now = self.now();
        let (queued_ready, c1) = self.count_status(MessageStatus::Queued, Some((now, true))).await?;
        let (queued_scheduled, c2) = self.count_status(MessageStatus::Queued, Some((now, false))).await?;
        let (dead_letter, c3) = self.count_status(MessageStatus::DeadLetter, None).await?;
        let p = self.bounded_status_read(MessageStatus::Processing, None, Some("leaseExpiresAt")).await?;
        let (mut processing, mut processing_expired) = (0u64, 0u64);
        for i in &p.items {
            let until = i.get("leaseExpiresAt").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
            if until.is_some_and(|t| t > now) {
                processing += 1;
            } else {
                processing_expired += 1;
            }
        }
        Ok(QueueStats {
            queued_ready,
            queued_scheduled,
            processing,
            processing_expired,
            dead_letter,
            capped: c1 || c2 || c3 || p.capped,
        })
    }

    /// `listJobsByStatus`: by due time, oldest first (`statusKey` order, exact over the 32
    /// shards); limit default 100, clamped to 1..=500. Reads each shard's first `limit` entries
    /// (32 concurrent Queries: at most 32 × `limit` entries, 16,000 at the largest limit) and
    /// keeps the first `limit` of them.
    pub async fn list_jobs_by_status(&self, a: &ListByStatusArgs) -> AppResult<Vec<JobRow>> {
        let st = MessageStatus::parse(&a.status).ok_or_else(|| {
            AppError::validation(format!(
                "status '{}' is not one of queued, processing, done, dead_letter",
                ids::truncate(&a.status, 40)
            ))
        })?;
        let limit = a.limit.unwrap_or(100).clamp(1, 500) as usize;
        self.first_by_status(st, limit).await?.iter().map(|i| job_row(i, st)).collect()
    }

    /// `listQueueItemsForConversation`: newest first by due time (`scheduledFor`, then newest
    /// enqueued); limit default 100, clamped to 1..=500. Due times do not follow the key order
    /// (scheduled messages, retries), so the conversation's messages are read (Query pages of
    /// `M#` items; done ones expire after `DONE_RETENTION_DAYS`) and sorted.
    pub async fn list_conversation_items(&self, a: &ListConversationArgs) -> AppResult<Vec<JobRow>> {
        rules::validate_conversation_id(&a.conversation_id)?;
        let limit = a.limit.unwrap_or(100).clamp(1, 500) as usize;
        let mut all: Vec<MessageItem> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(self.q())
                .key_condition_expression("pk = :pk AND begins_with(sk, :m)")
                .expression_attribute_values(":pk", s(keys::conversation_pk(&a.conversation_id)))
                .expression_attribute_values(":m", s(keys::MESSAGE_PREFIX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query conversation", e))?;
            for i in out.items.unwrap_or_default() {
                all.push(from_item(i)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        all.sort_by(|x, y| y.scheduled_for.cmp(&x.scheduled_for).then_with(|| y.sk.cmp(&x.sk)));
        Ok(all.into_iter().take(limit).map(listed_row).collect())
    }

    /// One page of a conversation's messages, newest first (by insertion), `limit` evaluated
    /// items starting after the sort key `after`, only those in `statuses` when given: the rows
    /// and the sort key to continue after (`None` on the last page). One Query, whatever the
    /// conversation's length.
    pub async fn page_conversation_items(
        &self,
        cid: &str,
        statuses: Option<&[MessageStatus]>,
        limit: i32,
        after: Option<&str>,
    ) -> AppResult<(Vec<JobRow>, Option<String>)> {
        rules::validate_conversation_id(cid)?;
        let pk = keys::conversation_pk(cid);
        let mut q = self
            .client
            .query()
            .table_name(self.q())
            .key_condition_expression("pk = :pk AND begins_with(sk, :m)")
            .expression_attribute_values(":pk", s(pk.clone()))
            .expression_attribute_values(":m", s(keys::MESSAGE_PREFIX))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(after.map(|sk| key(pk.clone(), sk)));
        if let Some(st) = statuses.filter(|s| !s.is_empty()) {
            let names: Vec<String> = (0..st.len()).map(|i| format!(":st{i}")).collect();
            q = q
                .filter_expression(format!("#st IN ({})", names.join(", ")))
                .expression_attribute_names("#st", "status");
            for (name, status) in names.iter().zip(st) {
                q = q.expression_attribute_values(name.as_str(), s(status.as_str()));
            }
        }
        let out = q.send().await.map_err(|e| sdk_error("Query conversation page", e))?;
        let rows = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|i| from_item::<MessageItem>(i).map(listed_row))
            .collect::<AppResult<Vec<_>>>()?;
        Ok((rows, last_sort_key(out.last_evaluated_key)))
    }

    /// One page of a conversation's history, newest first, `limit` entries before the sort key
    /// `before`: the entries (oldest first) and the sort key to continue before (`None` when the
    /// oldest was reached). One Query.
    pub async fn page_history(
        &self,
        cid: &str,
        limit: i32,
        before: Option<&str>,
    ) -> AppResult<(Vec<crate::conversations::model::HistoryEntry>, Option<String>)> {
        rules::validate_conversation_id(cid)?;
        let pk = keys::conversation_pk(cid);
        let out = self
            .client
            .query()
            .table_name(self.q())
            .key_condition_expression("pk = :pk AND begins_with(sk, :h)")
            .expression_attribute_values(":pk", s(pk.clone()))
            .expression_attribute_values(":h", s(keys::HISTORY_PREFIX))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit)
            .set_exclusive_start_key(before.map(|sk| key(pk.clone(), sk)))
            .send()
            .await
            .map_err(|e| sdk_error("Query history page", e))?;
        let mut v = out.items.unwrap_or_default().into_iter().map(from_item).collect::<AppResult<Vec<_>>>()?;
        v.reverse();
        Ok((v, last_sort_key(out.last_evaluated_key)))
    }
}

/// The sort key of a Query's `LastEvaluatedKey`: where the next page starts.
fn last_sort_key(k: Option<Item>) -> Option<String> {
    k.and_then(|k| k.get("sk").and_then(|v| v.as_s().ok()).cloned())
}

/// A message as the listings show it.
fn listed_row(m: MessageItem) -> JobRow {
    JobRow {
        id: m.message_id,
        creation_time: m.created_at,
        conversation_id: m.conversation_id,
        agent_key: m.agent_key,
        status: m.status,
        priority: m.priority,
        scheduled_for: m.scheduled_for,
        attempts: m.attempts,
        max_attempts: m.max_attempts,
        last_error: m.last_error,
        payload: Some(m.payload),
    }
}
