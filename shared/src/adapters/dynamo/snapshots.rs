//! Snapshot rows (snapshots domain's access patterns) and the `expiry` index the storage sweep reads.

use super::keys;
use super::tx::tx_update;
use super::{Ex, Reason, Store, TxError, from_item, key, n, s, schema, to_item};
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::ids::{self, MessageRef};
use crate::snapshots::model::{SnapshotItem, TOMBSTONE_RETENTION_MS};
use crate::workers::auth::Principal;
use crate::workers::model::{WorkerItem, WorkerStatus};
use serde::de::DeserializeOwned;

pub use super::keys::snapshot_sk;

/// How a finalize transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalizeWrite {
    Done,
    /// The snapshot was no longer uploading (finalized or failed meanwhile).
    SnapshotChanged,
    /// The worker row changed (status or token): read it again and decide again.
    WorkerChanged,
}

impl Store {
    /// A snapshot by id, with a precise error for a malformed or unknown id.
    pub async fn get_snapshot(&self, id: &str) -> AppResult<SnapshotItem> {
        let r = MessageRef::parse(id).map_err(|_| {
            AppError::validation(format!("snapshotId '{}' is not a snapshot id", ids::truncate(id, 80)))
        })?;
        let item = self
            .get(&self.tables.queue, key(keys::conversation_pk(&r.conversation_id), snapshot_sk(&r.ulid)))
            .await?
            .ok_or_else(|| AppError::not_found(format!("snapshot {id} does not exist")))?;
        from_item(item)
    }

    /// A new snapshot row (its key must be new).
    pub async fn put_snapshot(&self, item: &SnapshotItem) -> AppResult<()> {
        self.client
            .put_item()
            .table_name(&self.tables.queue)
            .set_item(Some(to_item(item)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| sdk_error("PutItem snapshot", e))?;
        Ok(())
    }

    /// Snapshot `uploading -> ready` and the worker row (`lastSnapshotId`, and `next` status when
    /// given) in one transaction, conditional on the worker row still being as `w` was seen with
    /// the caller's token.
    #[allow(clippy::too_many_arguments)]
    pub async fn finalize_snapshot(
        &self,
        p: &Principal,
        w: &WorkerItem,
        snap: &SnapshotItem,
        sha256: &str,
        size_bytes: u64,
        next: Option<WorkerStatus>,
        now: Millis,
        expires_at: Millis,
    ) -> AppResult<FinalizeWrite> {
        let ex = Ex::new()
            .name("#ss", "snapStatus")
            .name("#st", "status")
            .val(":uploading", s("uploading"))
            .val(":ready", s("ready"))
            .val(":w", s(&p.worker_id))
            .val(":sha", s(sha256))
            .val(":size", n(size_bytes))
            .val(":now", n(now))
            .val(":exp", n(expires_at))
            .val(":kind", s("snapshot"))
            .val(":sid", s(&snap.snapshot_id))
            .val(":seen", s(w.status.as_str()))
            .val(":th", s(&p.token_hash))
            .val(":stopping", s("stopping"));
        let snap_update = tx_update(
            &self.tables.queue,
            key(&snap.pk, &snap.sk),
            "SET #ss = :ready, sha256 = :sha, sizeBytes = :size, completedAt = :now, expiresAt = :exp, \
             expiryKind = :kind, expiryAt = :exp",
            Some("#ss = :uploading AND workerId = :w"),
            &ex,
        );
        let worker_update = match next {
            Some(_) => {
                "SET lastSnapshotId = :sid, #st = :stopping, stoppedAt = if_not_exists(stoppedAt, :now), heartbeatAt = :now"
            }
            None => "SET lastSnapshotId = :sid",
        };
        let worker_item = tx_update(
            &self.tables.workers,
            keys::worker_key(&p.worker_id),
            worker_update,
            Some("#st = :seen AND tokenHash = :th"),
            &ex,
        );
        match self.transact(vec![snap_update, worker_item]).await {
            Ok(()) => Ok(FinalizeWrite::Done),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(Reason::failed_condition) => {
                Ok(FinalizeWrite::SnapshotChanged)
            }
            Err(TxError::Cancelled(_)) => Ok(FinalizeWrite::WorkerChanged),
            Err(e) => Err(e.into_app("finalize snapshot")),
        }
    }

    /// `uploading -> failed`; the row afterwards, or `None` when it was no longer uploading.
    pub async fn mark_snapshot_failed(
        &self,
        snap: &SnapshotItem,
        error: &str,
        now: Millis,
    ) -> AppResult<Option<SnapshotItem>> {
        let r = self
            .client
            .update_item()
            .table_name(&self.tables.queue)
            .set_key(Some(key(&snap.pk, &snap.sk)))
            .update_expression(
                "SET #ss = :failed, #err = :e, completedAt = :now, #ttl = :ttl REMOVE expiryKind, expiryAt",
            )
            .condition_expression("#ss = :uploading")
            .expression_attribute_names("#ss", "snapStatus")
            .expression_attribute_names("#err", "error")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":failed", s("failed"))
            .expression_attribute_values(":uploading", s("uploading"))
            .expression_attribute_values(":e", s(error))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":ttl", n(keys::ttl_seconds(now + TOMBSTONE_RETENTION_MS)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        super::applied(r, "UpdateItem snapshot")?.map(|o| from_item(o.attributes.unwrap_or_default())).transpose()
    }

    /// Snapshots of a conversation, newest first (`limit` rows read).
    pub async fn list_snapshots(&self, cid: &str, limit: i32) -> AppResult<Vec<SnapshotItem>> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.queue)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(keys::conversation_pk(cid)))
            .expression_attribute_values(":p", s(keys::SNAPSHOT_PREFIX))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query snapshots", e))?;
        out.items.unwrap_or_default().into_iter().map(from_item).collect()
    }

    /// `ready -> expired` for a snapshot past its retention; whether it moved now.
    pub async fn expire_snapshot(&self, snap: &SnapshotItem, now: Millis) -> AppResult<bool> {
        let r = self
            .client
            .update_item()
            .table_name(&self.tables.queue)
            .set_key(Some(key(&snap.pk, &snap.sk)))
            .update_expression("SET #ss = :expired, #ttl = :ttl REMOVE expiryKind, expiryAt")
            .condition_expression("#ss = :ready AND expiresAt <= :now")
            .expression_attribute_names("#ss", "snapStatus")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":expired", s("expired"))
            .expression_attribute_values(":ready", s("ready"))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":ttl", n(keys::ttl_seconds(now + TOMBSTONE_RETENTION_MS)))
            .send()
            .await;
        Ok(super::applied(r, "UpdateItem snapshot")?.is_some())
    }

    /// Up to `limit` items of one expiry kind (`snapshot`, `snapshot_upload`, `media`) whose
    /// deadline has passed: one Query of the keys-only `expiry` index per partition of the kind
    /// (`keys::expiry_partitions`: `media` has 17) until `limit` keys, then each item read.
    pub async fn due_expiries<T: DeserializeOwned>(&self, kind: &str, now: Millis, limit: i32) -> AppResult<Vec<T>> {
        let mut found = Vec::new();
        for part in keys::expiry_partitions(kind) {
            let left = limit - found.len() as i32;
            if left <= 0 {
                break;
            }
            let out = self
                .client
                .query()
                .table_name(&self.tables.queue)
                .index_name(schema::IDX_EXPIRY)
                .key_condition_expression("expiryKind = :k AND expiryAt <= :now")
                .expression_attribute_values(":k", s(part))
                .expression_attribute_values(":now", n(now))
                .limit(left)
                .send()
                .await
                .map_err(|e| sdk_error("Query expiry", e))?;
            found.extend(out.items.unwrap_or_default());
        }
        let mut items = Vec::new();
        for k in found {
            let (Some(pk), Some(sk)) = (k.get("pk").cloned(), k.get("sk").cloned()) else { continue };
            if let Some(item) =
                self.get(&self.tables.queue, super::Item::from([("pk".into(), pk), ("sk".into(), sk)])).await?
            {
                items.push(from_item(item)?);
            }
        }
        Ok(items)
    }
}
