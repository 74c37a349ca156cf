//! The `byStatusShard` index: a status is spread over `keys::STATUS_SHARDS` partitions
//! (`statusPart = <status>#<nn>`), so its readers query every shard — concurrently where each
//! shard's read stands alone — and the bounded ones share one bound over all shards. And the
//! migration's backfill of `statusPart` on messages written before the index.

use super::*;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use std::future::Future;

/// What a bounded read of one status found: entries counted, the entries themselves (when a
/// projection was asked for), and whether entries were left unread at the bound.
pub(super) struct Bounded {
    pub count: u64,
    pub items: Vec<Item>,
    pub capped: bool,
}

/// The listing tag of `backfillStatusShards` cursors.
const BACKFILL: &str = "backfillStatusShards";

/// Run `f(shard)` for every shard concurrently; the results in shard order.
pub(crate) async fn all_status_shards<T, Fut>(f: impl Fn(u32) -> Fut) -> AppResult<Vec<T>>
where
    T: Send + 'static,
    Fut: Future<Output = AppResult<T>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for shard in 0..keys::STATUS_SHARDS {
        let fut = f(shard);
        set.spawn(async move { (shard, fut.await) });
    }
    let mut out: Vec<Option<T>> = (0..keys::STATUS_SHARDS).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (shard, v) = r.map_err(|e| AppError::internal(format!("status shard read: {e}")))?;
        out[shard as usize] = Some(v?);
    }
    Ok(out.into_iter().flatten().collect())
}

fn last_key(k: Option<Item>) -> Option<Item> {
    k.filter(|k| !k.is_empty())
}

impl Store {
    /// A Query of one shard of `status` in the `byStatusShard` index; with `split = (t, below)`
    /// only the entries due before `t` (`below`) or at/after it.
    pub(crate) fn status_query(
        &self,
        status: MessageStatus,
        shard: u32,
        split: Option<(Millis, bool)>,
    ) -> QueryFluentBuilder {
        let q = self
            .client
            .query()
            .table_name(&self.tables.queue)
            .index_name(schema::IDX_BY_STATUS_SHARD)
            .expression_attribute_values(":sp", s(keys::status_partition(status, shard)));
        match split {
            Some((t, below)) => q
                .key_condition_expression(if below {
                    "statusPart = :sp AND statusKey < :t"
                } else {
                    "statusPart = :sp AND statusKey >= :t"
                })
                .expression_attribute_values(":t", s(format!("{t:013}$"))),
            None => q.key_condition_expression("statusPart = :sp"),
        }
    }

    /// Read the entries of `status` (all, or split at a time) over every shard, at most
    /// [`STATS_CAP`] entries in all: first every shard at once up to its share of the bound, then
    /// the shards that had more, one after the other, with what is left of it. `projection`
    /// `None` only counts (`Select = COUNT`).
    pub(super) async fn bounded_status_read(
        &self,
        status: MessageStatus,
        split: Option<(Millis, bool)>,
        projection: Option<&'static str>,
    ) -> AppResult<Bounded> {
        let shards = u64::from(keys::STATUS_SHARDS);
        let page = |q: QueryFluentBuilder, limit: u64| {
            let q = q.limit(limit.max(1) as i32);
            let q = match projection {
                Some(p) => q.projection_expression(p),
                None => q.select(Select::Count),
            };
            async move {
                let out = q.send().await.map_err(|e| sdk_error("Query byStatusShard", e))?;
                Ok((out.count.max(0) as u64, out.items.unwrap_or_default(), last_key(out.last_evaluated_key)))
            }
        };
        let first = all_status_shards(|shard| {
            let share = STATS_CAP / shards + u64::from(u64::from(shard) < STATS_CAP % shards);
            page(self.status_query(status, shard, split), share)
        })
        .await?;
        let mut res = Bounded { count: 0, items: Vec::new(), capped: false };
        let mut more = Vec::new();
        for (shard, (count, items, next)) in first.into_iter().enumerate() {
            res.count += count;
            res.items.extend(items);
            if let Some(k) = next {
                more.push((shard as u32, k));
            }
        }
        for (shard, k) in more {
            let mut start = Some(k);
            while let Some(k) = start.take() {
                if res.count >= STATS_CAP {
                    res.capped = true;
                    return Ok(res);
                }
                let q = self.status_query(status, shard, split).set_exclusive_start_key(Some(k));
                let (count, items, next) = page(q, STATS_CAP - res.count).await?;
                res.count += count;
                res.items.extend(items);
                start = next;
            }
        }
        Ok(res)
    }

    /// The first `limit` entries of `status` in `statusKey` order (due time, then insertion)
    /// over every shard: each shard's first `limit` entries (concurrently; pages over 1 MB are
    /// followed), merged and cut. Reads at most `STATUS_SHARDS × limit` index entries.
    pub(super) async fn first_by_status(&self, status: MessageStatus, limit: usize) -> AppResult<Vec<Item>> {
        let per_shard = all_status_shards(|shard| {
            let q = self.status_query(status, shard, None);
            async move {
                let mut items: Vec<Item> = Vec::new();
                let mut start: Option<Item> = None;
                loop {
                    let out = q
                        .clone()
                        .limit((limit - items.len()) as i32)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| sdk_error("Query byStatusShard", e))?;
                    items.extend(out.items.unwrap_or_default());
                    match last_key(out.last_evaluated_key) {
                        Some(k) if items.len() < limit => start = Some(k),
                        _ => return Ok(items),
                    }
                }
            }
        })
        .await?;
        let sort_key = |i: &Item| i.get("statusKey").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let mut all: Vec<(String, Item)> = per_shard.into_iter().flatten().map(|i| (sort_key(&i), i)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.truncate(limit);
        Ok(all.into_iter().map(|(_, i)| i).collect())
    }

    /// `backfillStatusShards`: one Scan page of the queue table (`limit` items evaluated) that
    /// gives every message with a `status` but no `statusPart` (written before the
    /// `byStatusShard` index) its `statusPart`, each with one UpdateItem conditional on the
    /// status read and on `statusPart` still being absent (a message that moved on meanwhile got
    /// it from that write). Run until `nextCursor` is `None`; a second run updates nothing.
    pub async fn backfill_status_shards(&self, a: &BackfillArgs) -> AppResult<BackfillResult> {
        let limit = crate::paging::limit("limit", a.limit, 100, 1_000)?;
        let start = match &a.cursor {
            Some(c) => {
                let (pk, sk) = crate::paging::decode_table_key(BACKFILL, c)?;
                Some(key(pk, sk))
            }
            None => None,
        };
        let out = self
            .client
            .scan()
            .table_name(self.q())
            .filter_expression("begins_with(sk, :m) AND attribute_exists(#st) AND attribute_not_exists(statusPart)")
            .projection_expression("pk, sk, #st")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":m", s(keys::MESSAGE_PREFIX))
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error("Scan queue", e))?;
        let mut updated = 0u64;
        for i in out.items.unwrap_or_default() {
            let gs = |k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
            let (Some(pk), Some(sk), Some(st)) = (gs("pk"), gs("sk"), gs("status")) else { continue };
            let Some(status) = MessageStatus::parse(&st) else { continue };
            let ex = Ex::new()
                .name("#st", "status")
                .val(":st", s(status.as_str()))
                .val(":sp", s(keys::status_part(status, keys::message_ulid(&sk))));
            let cond = "#st = :st AND attribute_not_exists(statusPart)";
            if self.update_if(self.q(), key(pk, sk), "SET statusPart = :sp", cond, &ex, "UpdateItem statusPart").await?
            {
                updated += 1;
            }
        }
        let next_cursor = last_key(out.last_evaluated_key).and_then(|k| {
            let gs = |a: &str| k.get(a).and_then(|v| v.as_s().ok()).cloned();
            Some(crate::paging::encode_table_key(BACKFILL, &gs("pk")?, &gs("sk")?))
        });
        Ok(BackfillResult { scanned: out.scanned_count.max(0) as u64, updated, next_cursor })
    }
}
