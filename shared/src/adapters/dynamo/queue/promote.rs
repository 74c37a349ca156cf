//! Promotion: conversations written while not due (a backoff, a scheduled message, an owner's
//! grace, items written before the `due` index existed) wait in `r<n>` of the `ready` index, by
//! `readyAt`. When their time comes they are moved to `d<n>` with their `dueRank`, so unassigned
//! claims see every due conversation in one global order. Claimers promote at most once a second
//! per process and shard, and whenever `d<n>` has nothing for them; the lease sweep promotes too.

use super::*;

/// The least time between two promotions of a shard by one process while `d<n>` has work ...
pub(super) const PROMOTE_EVERY_MS: Millis = 1_000;
/// ... and the most, when the last promotion saw nothing coming due (another process may have
/// written a backoff since).
pub(super) const PROMOTE_AT_LEAST_EVERY_MS: Millis = 5_000;

/// What one process knows of a shard's `r<n>` partition.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PromotionState {
    /// When it last promoted.
    last: Millis,
    /// The earliest `readyAt` it saw still waiting then.
    next_due: Option<Millis>,
}

impl Store {
    /// Whether this process should promote shard `n` now: not within [`PROMOTE_EVERY_MS`] of the
    /// last time, and then when the earliest waiting conversation it saw has come due, or
    /// [`PROMOTE_AT_LEAST_EVERY_MS`] after the last time. Taking the slot records the time.
    pub(super) fn take_promotion_slot(&self, shard: u32, now: Millis) -> bool {
        let mut states = self.promoted_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = match states.get(&shard) {
            None => true,
            Some(st) if now < st.last => true,
            Some(st) => {
                now - st.last >= PROMOTE_EVERY_MS
                    && (st.next_due.is_some_and(|t| t <= now) || now - st.last >= PROMOTE_AT_LEAST_EVERY_MS)
            }
        };
        if due {
            states.entry(shard).or_default().last = now;
        }
        due
    }

    fn record_next_due(&self, shard: u32, next_due: Option<Millis>) {
        let mut states = self.promoted_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        states.entry(shard).or_default().next_due = next_due;
    }

    /// Move up to `limit` conversations of `r<shard>` whose `readyAt` has come into `d<shard>`.
    /// One Query (the partition's first `limit` entries by `readyAt`, due or not, so the earliest
    /// one still waiting is known), then one conditional UpdateItem per conversation (on `rev`: a conversation that
    /// changed meanwhile is left to whoever changed it). Returns how many moved.
    pub(super) async fn promote_due(&self, shard: u32, limit: i32) -> AppResult<usize> {
        let now = self.now();
        let out = self
            .client
            .query()
            .table_name(self.q())
            .index_name(schema::IDX_READY)
            .key_condition_expression("readyShard = :s")
            .expression_attribute_values(":s", s(format!("r{shard}")))
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query ready (promote)", e))?;
        let more = out.last_evaluated_key.as_ref().is_some_and(|k| !k.is_empty());
        let mut moved = 0;
        let mut next_due = None;
        for item in out.items.unwrap_or_default() {
            let conv: ConversationItem = from_item(item)?;
            let Some(at) = conv.ready_at else { continue };
            if at > now {
                // In `readyAt` order: the rest is not due either.
                next_due = Some(at);
                break;
            }
            if conv.lock_lease_id.is_some() || conv.open_count <= 0 {
                continue;
            }
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
        // A full page all due: more may wait behind it, so the next slot promotes again.
        self.record_next_due(shard, next_due.or(more.then_some(now)));
        Ok(moved)
    }
}
