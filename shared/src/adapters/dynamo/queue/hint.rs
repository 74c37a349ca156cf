//! The ready hint (`queue::shards`): one control-table item written by reconcile once per
//! cycle, read by unassigned claimers at most once a second per process; and what a claimer
//! remembers of the shards it found empty.

use super::*;
use crate::queue::shards::{HINT_CACHE_MS, HINTED_PROBES, ProbePlan, ReadyHint, plan_probes};
use std::sync::atomic::Ordering;

impl Store {
    /// Write the hint (one PutItem). Reconcile calls it once per cycle.
    pub async fn put_ready_hint(&self, hint: &ReadyHint) -> AppResult<()> {
        let mut item = to_item(hint)?;
        item.extend(keys::ready_hint_key());
        self.put_control(item, "PutItem ready hint").await
    }

    /// The hint, from this process's copy when it is younger than [`HINT_CACHE_MS`], else one
    /// eventually consistent GetItem. An unreadable hint counts as none (the claim then scans).
    pub async fn ready_hint(&self, now: Millis) -> AppResult<Option<ReadyHint>> {
        {
            let cached = self.ready_hint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, h)) = cached.as_ref()
                && now >= *at
                && now - at < HINT_CACHE_MS
            {
                return Ok(h.clone());
            }
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.control)
            .set_key(Some(keys::ready_hint_key()))
            .send()
            .await
            .map_err(|e| sdk_error("GetItem ready hint", e))?;
        let hint = out.item.and_then(|i| {
            from_item::<ReadyHint>(i).inspect_err(|e| tracing::warn!(error = %e, "unreadable ready hint ignored")).ok()
        });
        *self.ready_hint.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((now, hint.clone()));
        Ok(hint)
    }

    /// The shards this unassigned claim probes. Reads the hint only when there are more shards
    /// than one claim would probe anyway.
    pub(super) async fn probe_plan(&self, now: Millis) -> AppResult<ProbePlan> {
        let shards = self.policy.queue.ready_shards.max(1);
        let hint = if shards as usize > HINTED_PROBES + 1 { self.ready_hint(now).await? } else { None };
        let start = (ids::random_u128() % u128::from(shards)) as u32;
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let empty = self.empty_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(plan_probes(shards, hint.as_ref(), &empty, start, rotation, now))
    }

    /// This claimer found nothing it could take in `shard` at `now`.
    pub(super) fn record_empty(&self, shard: u32, now: Millis) {
        self.empty_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(shard, now);
    }
}
