//! Promotion: conversations written while not due (a backoff, a scheduled message, an owner's
//! grace, items written before the `due` index existed) wait in `r<n>` of the `ready` index, by
//! `readyAt`. When their time comes they are moved to `d<n>` with their `dueRank`, so unassigned
//! claims see every due conversation in one global order. Claimers promote at most once a second
//! per process and shard, and whenever `d<n>` has nothing for them; the lease sweep promotes too.

use super::*;

/// How often one process promotes a shard while `d<n>` still has work.
pub(super) const PROMOTE_EVERY_MS: Millis = 1_000;

impl Store {
    /// Whether this process should promote shard `n` now (at most once per [`PROMOTE_EVERY_MS`]);
    /// taking the slot records the time.
    pub(super) fn take_promotion_slot(&self, shard: u32, now: Millis) -> bool {
        let mut last = self.promoted_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.get(&shard).is_none_or(|t| now - t >= PROMOTE_EVERY_MS || now < *t);
        if due {
            last.insert(shard, now);
        }
        due
    }

    /// Move up to `limit` conversations of `r<shard>` whose `readyAt` has come into `d<shard>`.
    /// One Query, then one conditional UpdateItem per conversation (on `rev`: a conversation that
    /// changed meanwhile is left to whoever changed it). Returns how many moved.
    pub(super) async fn promote_due(&self, shard: u32, limit: i32) -> AppResult<usize> {
        let now = self.now();
        let out = self
            .client
            .query()
            .table_name(self.q())
            .index_name(schema::IDX_READY)
            .key_condition_expression("readyShard = :s AND readyAt <= :now")
            .expression_attribute_values(":s", s(format!("r{shard}")))
            .expression_attribute_values(":now", n(now))
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query ready (promote)", e))?;
        let mut moved = 0;
        for item in out.items.unwrap_or_default() {
            let conv: ConversationItem = from_item(item)?;
            if conv.lock_lease_id.is_some() || conv.open_count <= 0 {
                continue;
            }
            let Some(at) = conv.ready_at else { continue };
            let rank = keys::due_rank(
                conv.priority.unwrap_or(self.policy.queue.default_priority),
                at,
                conv.head_seq.as_deref().unwrap_or("~"),
            );
            let ex = Ex::new()
                .val(":rev", n(conv.rev))
                .val(":one", n(1))
                .val(":d", s(format!("d{shard}")))
                .val(":rank", s(rank));
            let update = "SET readyShard = :d, dueRank = :rank, rev = rev + :one";
            if self
                .update_if(self.q(), key(&conv.pk, &conv.sk), update, "rev = :rev", &ex, "UpdateItem promote")
                .await?
            {
                moved += 1;
            }
        }
        Ok(moved)
    }
}
