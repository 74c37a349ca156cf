//! Attachment rows, storage-id claims and message metadata (media domain's access patterns).

use super::keys;
use super::tx::{tx_put, tx_update};
use super::{Ex, Item, Reason, Store, TxError, from_item, key, n, s, to_item};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::media::model::AttachmentItem;
use crate::media::rules::check_distinct_storage_ids;
use crate::queue::model::{AttachmentStatus, MessageItem};
use crate::workers::auth::Principal;
use std::collections::BTreeMap;

pub use super::keys::{attachment_sk, storage_claim_key};

/// The condition of a claim's put (`:cid` = the conversation): unclaimed, or claimed by it already.
pub const STORAGE_CLAIM_COND: &str = "attribute_not_exists(pk) OR conversationId = :cid";

/// The storage claims enqueue writes for a message's payload attachments (one per attachment,
/// in the order of [`inbound_rows`]).
pub fn storage_claims(m: &MessageItem) -> Vec<Item> {
    let atts = m.payload.attachments.as_deref().unwrap_or_default();
    atts.iter()
        .map(|a| {
            let mut k = storage_claim_key(&a.storage_id);
            k.insert("conversationId".into(), s(&m.conversation_id));
            k.insert("storageId".into(), s(&a.storage_id));
            k
        })
        .collect()
}

/// The attachment rows enqueue writes for a message's payload attachments. The same storage id
/// twice in one message is refused (it would be one row written twice).
pub fn inbound_rows(m: &MessageItem, now: Millis) -> AppResult<Vec<Item>> {
    let Some(atts) = &m.payload.attachments else { return Ok(Vec::new()) };
    check_distinct_storage_ids(atts)?;
    atts.iter()
        .map(|a| {
            to_item(&AttachmentItem {
                pk: m.pk.clone(),
                sk: attachment_sk(&a.storage_id),
                storage_id: a.storage_id.clone(),
                message_id: m.message_id.clone(),
                conversation_id: m.conversation_id.clone(),
                agent_key: m.agent_key.clone(),
                kind: a.kind,
                status: a.status,
                origin: "inbound".into(),
                mime_type: a.mime_type.clone(),
                file_name: a.file_name.clone(),
                size_bytes: a.size_bytes,
                created_at: now,
                expires_at: a.expires_at,
                expiry_kind: (a.status == AttachmentStatus::Ready).then(|| keys::media_expiry_kind(&a.storage_id)),
                expiry_at: (a.status == AttachmentStatus::Ready).then_some(a.expires_at),
                ttl: None,
            })
        })
        .collect()
}

impl Store {
    /// A worker's upload: the attachment row, the storage id's claim for its conversation, and the
    /// caller's token re-checked on its worker row, in one transaction (a replaced token or a
    /// stopped worker gets nothing).
    pub async fn record_upload(&self, p: &Principal, row: &AttachmentItem) -> AppResult<()> {
        let mut claim = storage_claim_key(&row.storage_id);
        claim.insert("conversationId".into(), s(&row.conversation_id));
        claim.insert("storageId".into(), s(&row.storage_id));
        let ex = Ex::new().val(":cid", s(&row.conversation_id));
        // The use case names the kind (`media`); its partition of the expiry index is the
        // storage id's shard.
        let mut item = to_item(row)?;
        if row.expiry_kind.as_deref() == Some("media") {
            item.insert("expiryKind".into(), s(keys::media_expiry_kind(&row.storage_id)));
        }
        let items = vec![
            tx_put(&self.tables.queue, item, "attribute_not_exists(pk)", &ex),
            tx_put(&self.tables.queue, claim, "attribute_not_exists(pk)", &ex),
            self.token_check(p),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(TxError::Cancelled(r)) if r.get(2).is_some_and(Reason::failed_condition) => {
                Err(self.token_refusal(p).await)
            }
            Err(e) => Err(e.into_app("media upload URL")),
        }
    }

    /// The attachment row of `storage_id` in the conversation of `m`, if any.
    pub async fn get_attachment(&self, m: &MessageItem, storage_id: &str) -> AppResult<Option<AttachmentItem>> {
        self.get(&self.tables.queue, key(&m.pk, attachment_sk(storage_id))).await?.map(from_item).transpose()
    }

    /// Replace `payload.metadata` of the message `p` holds, with the caller's token re-checked on
    /// its worker row, in one transaction.
    pub async fn set_message_metadata(
        &self,
        p: &Principal,
        m: &MessageItem,
        merged: &BTreeMap<String, String>,
        now: Millis,
    ) -> AppResult<()> {
        let ex = Ex::new()
            .name("#st", "status")
            .val(":m", super::to_av(merged)?)
            .val(":processing", s("processing"))
            .val(":w", s(&p.worker_id))
            .val(":l", s(m.lease_id.clone().unwrap_or_default()))
            .val(":now", n(now));
        let items = vec![
            tx_update(
                &self.tables.queue,
                key(&m.pk, &m.sk),
                "SET payload.metadata = :m",
                Some("#st = :processing AND claimedBy = :w AND leaseId = :l AND leaseExpiresAt > :now"),
                &ex,
            ),
            self.token_check(p),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(TxError::Cancelled(r)) if r.get(1).is_some_and(Reason::failed_condition) => {
                Err(self.token_refusal(p).await)
            }
            Err(TxError::Cancelled(r)) if r.first().is_some_and(Reason::failed_condition) => {
                Err(AppError::lease(crate::error::LeaseRefusal::LeaseMismatch, "the lease changed during the call"))
            }
            Err(e) => Err(e.into_app("message metadata")),
        }
    }

    /// `ready -> expired` for an attachment row past its retention; whether it moved now.
    pub async fn expire_attachment_row(&self, row: &AttachmentItem, now: Millis) -> AppResult<bool> {
        let r = self
            .client
            .update_item()
            .table_name(&self.tables.queue)
            .set_key(Some(key(&row.pk, &row.sk)))
            .update_expression("SET mediaStatus = :expired, #ttl = :ttl REMOVE expiryKind, expiryAt")
            .condition_expression("mediaStatus = :ready AND expiresAt <= :now")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":expired", s("expired"))
            .expression_attribute_values(":ready", s("ready"))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":ttl", n(keys::ttl_seconds(now + 30 * 86_400_000)))
            .send()
            .await;
        Ok(super::applied(r, "UpdateItem attachment")?.is_some())
    }

    /// Mark the payload copy of an attachment expired (spec: both copies are kept in sync). A
    /// payload that moved on (no such attachment at that place any more) is left alone.
    pub async fn expire_payload_attachment(&self, m: &MessageItem, storage_id: &str) -> AppResult<()> {
        let Some(i) =
            m.payload.attachments.as_deref().unwrap_or_default().iter().position(|x| x.storage_id == storage_id)
        else {
            return Ok(());
        };
        let path = format!("payload.attachments[{i}].#s");
        let r = self
            .client
            .update_item()
            .table_name(&self.tables.queue)
            .set_key(Some(key(&m.pk, &m.sk)))
            .update_expression(format!("SET {path} = :expired"))
            .condition_expression(format!("payload.attachments[{i}].storageId = :sid"))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":expired", s("expired"))
            .expression_attribute_values(":sid", s(storage_id))
            .send()
            .await;
        // A failed condition means the payload moved on; any other failure is reported.
        super::applied(r, "UpdateItem payload attachment status").map(|_| ())
    }
}
