//! Media attachments (spec §6.10, identity §8): blobs under `media/<storageId>`, one attachment row
//! per blob (`pk = C#<conversationId>`, `sk = A#<storageId>`, the side table of spec §3.8) with its
//! retention deadline in the `expiry` index. Workers get short-lived presigned URLs, and only for
//! the job they hold (W-7); Telegram's 20 MB download ceiling is enforced up front.

use crate::adapters::dynamo::queue::{tx_put, tx_update};
use crate::adapters::dynamo::{Ex, Item, Reason, TxError, from_item, key, n, s, to_item};
use crate::app::App;
use crate::blob::{UploadTarget, media_key};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::ids::{self, MessageRef};
use crate::queue::model::{AttachmentKind, AttachmentStatus, MessageItem};
use crate::queue::rules;
use crate::workers::auth::Principal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Metadata keys a worker may not overwrite: they route replies and identify the user.
pub const PROTECTED_METADATA_KEYS: &[&str] =
    &["providerUserId", "telegramChatId", "telegramUserId", "telegramMessageId", "botIdentity", "consumerUserId"];

/// An attachment row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentItem {
    pub pk: String,
    pub sk: String,
    pub storage_id: String,
    pub message_id: String,
    pub conversation_id: String,
    pub agent_key: String,
    pub kind: AttachmentKind,
    /// Stored under `mediaStatus` (`status` belongs to messages).
    #[serde(rename = "mediaStatus")]
    pub status: AttachmentStatus,
    /// `inbound` (came with the message) or `worker` (uploaded by a worker).
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    pub created_at: Millis,
    pub expires_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

pub fn attachment_sk(storage_id: &str) -> String {
    format!("A#{storage_id}")
}

/// The claim of a storage id for one conversation (`pk = MEDIA#<storageId>`, `sk = MEDIA`): written
/// with every attachment row, so a storage id belongs to one conversation for good and a message
/// of another conversation cannot reference (download, or expire) its blob.
pub fn storage_claim_key(storage_id: &str) -> Item {
    key(format!("MEDIA#{storage_id}"), "MEDIA")
}

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
    for (i, a) in atts.iter().enumerate() {
        if atts[..i].iter().any(|b| b.storage_id == a.storage_id) {
            return Err(AppError::validation(format!(
                "payload.attachments[{i}].storageId '{}' appears twice in this message",
                ids::truncate(&a.storage_id, 60)
            )));
        }
    }
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
                expiry_kind: (a.status == AttachmentStatus::Ready).then(|| "media".to_string()),
                expiry_at: (a.status == AttachmentStatus::Ready).then_some(a.expires_at),
                ttl: None,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadUrlArgs {
    pub message_id: String,
    #[serde(default)]
    pub lease_id: Option<String>,
    pub size_bytes: u64,
    pub mime_type: String,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub kind: Option<AttachmentKind>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadUrlResult {
    pub storage_id: String,
    #[serde(flatten)]
    pub upload: UploadTarget,
    /// When the blob is deleted.
    pub expires_at: Millis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileUrlArgs {
    pub message_id: String,
    #[serde(default)]
    pub lease_id: Option<String>,
    pub storage_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileUrlResult {
    pub storage_id: String,
    pub url: String,
    pub expires_at: Millis,
    pub mime_type: Option<String>,
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataArgs {
    pub message_id: String,
    #[serde(default)]
    pub lease_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// The live-lease check shared by the media ops: the message, read strongly consistent.
async fn held_message(app: &App, p: &Principal, message_id: &str, lease_id: Option<&str>) -> AppResult<MessageItem> {
    let mref = MessageRef::parse(message_id)?;
    let m = app
        .store
        .get_message(message_id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("message {} does not exist", mref.id())))?;
    rules::check_holder(&m, &p.worker_id, lease_id, app.now())?;
    Ok(m)
}

fn check_mime(v: &str) -> AppResult<()> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.contains('/')
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '+' | '-' | '_'));
    if ok { Ok(()) } else { Err(AppError::validation("mimeType must look like type/subtype (e.g. audio/mpeg)")) }
}

/// `generateMediaUploadUrl`: a one-time upload URL for outbound media of the job the worker holds.
pub async fn upload_url(app: &App, p: &Principal, a: &UploadUrlArgs) -> AppResult<UploadUrlResult> {
    let pol = &app.store.policy;
    if a.size_bytes == 0 {
        return Err(AppError::validation("sizeBytes must be at least 1"));
    }
    if a.size_bytes > pol.media.max_bytes {
        return Err(AppError::PayloadTooLarge(format!(
            "sizeBytes {} is over {} bytes: media is capped at 20 MB, the most a Telegram bot can download",
            a.size_bytes, pol.media.max_bytes
        )));
    }
    check_mime(&a.mime_type)?;
    if let Some(f) = &a.file_name
        && (f.is_empty() || f.len() > 255)
    {
        return Err(AppError::validation("fileName must be 1 to 255 characters"));
    }
    let m = held_message(app, p, &a.message_id, a.lease_id.as_deref()).await?;
    let now = app.now();
    let storage_id = format!("m{}", ids::ulid(now));
    let retention = app
        .store
        .message_config()
        .await?
        .and_then(|c| c.telegram_attachment_retention_ms)
        .filter(|v| *v > 0)
        .unwrap_or(pol.media.retention_ms);
    let expires_at = now + retention;
    let upload_until = now + pol.media.download_url_ttl_ms;
    let put = app.blobs.presign_put(&media_key(&storage_id), &a.mime_type, Some(a.size_bytes), upload_until).await?;
    let row = AttachmentItem {
        pk: m.pk.clone(),
        sk: attachment_sk(&storage_id),
        storage_id: storage_id.clone(),
        message_id: m.message_id.clone(),
        conversation_id: m.conversation_id.clone(),
        agent_key: m.agent_key.clone(),
        kind: a.kind.unwrap_or(AttachmentKind::Document),
        status: AttachmentStatus::Ready,
        origin: "worker".into(),
        mime_type: Some(a.mime_type.clone()),
        file_name: a.file_name.clone(),
        size_bytes: Some(a.size_bytes),
        created_at: now,
        expires_at,
        expiry_kind: Some("media".into()),
        expiry_at: Some(expires_at),
        ttl: None,
    };
    // One transaction: the row, the storage id's claim for this conversation, and the caller's
    // token re-checked on its worker row (a replaced token or a stopped worker gets nothing).
    let mut claim = storage_claim_key(&storage_id);
    claim.insert("conversationId".into(), s(&m.conversation_id));
    claim.insert("storageId".into(), s(&storage_id));
    let ex = Ex::new().val(":cid", s(&m.conversation_id));
    let items = vec![
        tx_put(&app.store.tables.queue, to_item(&row)?, "attribute_not_exists(pk)", &ex),
        tx_put(&app.store.tables.queue, claim, "attribute_not_exists(pk)", &ex),
        app.store.token_check(p),
    ];
    match app.store.transact(items).await {
        Ok(()) => Ok(UploadUrlResult { storage_id, upload: put.into(), expires_at }),
        Err(TxError::Cancelled(r)) if r.get(2).is_some_and(Reason::failed_condition) => {
            Err(app.store.token_refusal(p).await)
        }
        Err(e) => Err(e.into_app("media upload URL")),
    }
}

/// `getStorageFileUrl`: a short-lived download URL for a blob of the conversation whose job the
/// worker holds (its inbound attachments and its own uploads); nothing else (W-7).
pub async fn file_url(app: &App, p: &Principal, a: &FileUrlArgs) -> AppResult<FileUrlResult> {
    rules::validate_storage_id(&a.storage_id)?;
    let m = held_message(app, p, &a.message_id, a.lease_id.as_deref()).await?;
    let row = app
        .store
        .get(&app.store.tables.queue, key(&m.pk, attachment_sk(&a.storage_id)))
        .await?
        .map(from_item::<AttachmentItem>)
        .transpose()?
        .ok_or_else(|| {
            AppError::not_found(format!(
                "storage id '{}' is not an attachment of conversation '{}'",
                a.storage_id, m.conversation_id
            ))
        })?;
    let now = app.now();
    if row.status == AttachmentStatus::Expired || row.expires_at <= now {
        return Err(AppError::not_found(format!("attachment '{}' has expired", a.storage_id)));
    }
    let until = now + app.store.policy.media.download_url_ttl_ms;
    Ok(FileUrlResult {
        storage_id: row.storage_id.clone(),
        url: app.blobs.presign_get(&media_key(&row.storage_id), until).await?,
        expires_at: until,
        mime_type: row.mime_type,
        size_bytes: row.size_bytes,
    })
}

/// `attachMessageMetadata`: merge keys into `payload.metadata` of the job the worker holds.
/// Routing keys are protected; sizes are capped. One GetItem + one conditional UpdateItem.
pub async fn attach_metadata(app: &App, p: &Principal, a: &MetadataArgs) -> AppResult<BTreeMap<String, String>> {
    if a.metadata.is_empty() || a.metadata.len() > 50 {
        return Err(AppError::validation("metadata must have 1 to 50 keys"));
    }
    for (k, v) in &a.metadata {
        if k.is_empty() || k.len() > 128 || v.len() > 4096 {
            return Err(AppError::validation(format!(
                "metadata key '{}': keys are 1 to 128 characters, values at most 4096 bytes",
                ids::truncate(k, 40)
            )));
        }
        if PROTECTED_METADATA_KEYS.contains(&k.as_str()) {
            return Err(AppError::validation(format!("metadata key '{k}' is set at enqueue and cannot be changed")));
        }
    }
    let m = held_message(app, p, &a.message_id, a.lease_id.as_deref()).await?;
    let mut merged = m.payload.metadata.clone().unwrap_or_default();
    merged.extend(a.metadata.clone());
    let mut payload = m.payload.clone();
    payload.metadata = Some(merged.clone());
    let size = serde_json::to_vec(&payload).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > app.store.policy.queue.max_payload_bytes {
        return Err(AppError::PayloadTooLarge(format!(
            "the payload would be {size} bytes; the limit is {}",
            app.store.policy.queue.max_payload_bytes
        )));
    }
    let now = app.now();
    let ex = Ex::new()
        .name("#st", "status")
        .val(":m", crate::adapters::dynamo::to_av(&merged)?)
        .val(":processing", s("processing"))
        .val(":w", s(&p.worker_id))
        .val(":l", s(m.lease_id.clone().unwrap_or_default()))
        .val(":now", n(now));
    // The update and the caller's token, re-checked on its worker row, in one transaction.
    let items = vec![
        tx_update(
            &app.store.tables.queue,
            key(&m.pk, &m.sk),
            "SET payload.metadata = :m",
            Some("#st = :processing AND claimedBy = :w AND leaseId = :l AND leaseExpiresAt > :now"),
            &ex,
        ),
        app.store.token_check(p),
    ];
    match app.store.transact(items).await {
        Ok(()) => Ok(merged),
        Err(TxError::Cancelled(r)) if r.get(1).is_some_and(Reason::failed_condition) => {
            Err(app.store.token_refusal(p).await)
        }
        Err(TxError::Cancelled(r)) if r.first().is_some_and(Reason::failed_condition) => {
            Err(AppError::lease(crate::error::LeaseRefusal::LeaseMismatch, "the lease changed during the call"))
        }
        Err(e) => Err(e.into_app("message metadata")),
    }
}

/// Expire one attachment row found by the sweep: delete the blob, mark the row expired, and mark
/// the same storage id expired in the message payload. Returns whether the row was expired now.
pub(crate) async fn expire_attachment(app: &App, item: Item, now: Millis) -> AppResult<bool> {
    let row: AttachmentItem = from_item(item)?;
    app.blobs.delete(&media_key(&row.storage_id)).await?;
    let store = &app.store;
    let r = store
        .client
        .update_item()
        .table_name(&store.tables.queue)
        .set_key(Some(key(&row.pk, &row.sk)))
        .update_expression("SET mediaStatus = :expired, #ttl = :ttl REMOVE expiryKind, expiryAt")
        .condition_expression("mediaStatus = :ready AND expiresAt <= :now")
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_values(":expired", s("expired"))
        .expression_attribute_values(":ready", s("ready"))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":ttl", n(rules::ttl_seconds(now + 30 * 86_400_000)))
        .send()
        .await;
    if crate::adapters::dynamo::applied(r, "UpdateItem attachment")?.is_none() {
        return Ok(false);
    }
    // The payload copy (spec: both copies are kept in sync on expiry).
    if let Some(m) = store.get_message(&row.message_id).await?
        && let Some(atts) = &m.payload.attachments
        && let Some(i) = atts.iter().position(|x| x.storage_id == row.storage_id)
    {
        let path = format!("payload.attachments[{i}].#s");
        let r = store
            .client
            .update_item()
            .table_name(&store.tables.queue)
            .set_key(Some(key(&m.pk, &m.sk)))
            .update_expression(format!("SET {path} = :expired"))
            .condition_expression(format!("payload.attachments[{i}].storageId = :sid"))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":expired", s("expired"))
            .expression_attribute_values(":sid", s(&row.storage_id))
            .send()
            .await;
        // A failed condition means the payload moved on (nothing to mark); any other failure is
        // reported, so the sweep's caller sees it instead of a silently stale payload copy.
        crate::adapters::dynamo::applied(r, "UpdateItem payload attachment status")?;
    }
    Ok(true)
}
