//! Media attachments (spec §6.10, identity §8): blobs under `media/<storageId>`, one attachment row
//! per blob (`pk = C#<conversationId>`, `sk = A#<storageId>`, the side table of spec §3.8) with its
//! retention deadline in the `expiry` index. Workers get short-lived presigned URLs, and only for
//! the job they hold (W-7); Telegram's 20 MB download ceiling is enforced up front.

use super::model::*;
use super::rules::{check_metadata, check_mime};
use crate::adapters::dynamo::media::attachment_sk;
use crate::app::App;
use crate::blob::media_key;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::ids::{self, MessageRef};
use crate::queue::model::{AttachmentKind, AttachmentStatus, MessageItem};
use crate::queue::rules;
use crate::workers::auth::Principal;
use std::collections::BTreeMap;

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
    app.store.record_upload(p, &row).await?;
    Ok(UploadUrlResult { storage_id, upload: put.into(), expires_at })
}

/// `getStorageFileUrl`: a short-lived download URL for a blob of the conversation whose job the
/// worker holds (its inbound attachments and its own uploads); nothing else (W-7).
pub async fn file_url(app: &App, p: &Principal, a: &FileUrlArgs) -> AppResult<FileUrlResult> {
    rules::validate_storage_id(&a.storage_id)?;
    let m = held_message(app, p, &a.message_id, a.lease_id.as_deref()).await?;
    let row = app.store.get_attachment(&m, &a.storage_id).await?.ok_or_else(|| {
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
    check_metadata(&a.metadata)?;
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
    app.store.set_message_metadata(p, &m, &merged, app.now()).await?;
    Ok(merged)
}

/// Expire one attachment row found by the sweep: delete the blob, mark the row expired, and mark
/// the same storage id expired in the message payload. Returns whether the row was expired now.
pub(crate) async fn expire_attachment(app: &App, row: AttachmentItem, now: Millis) -> AppResult<bool> {
    app.blobs.delete(&media_key(&row.storage_id)).await?;
    if !app.store.expire_attachment_row(&row, now).await? {
        return Ok(false);
    }
    if let Some(m) = app.store.get_message(&row.message_id).await? {
        app.store.expire_payload_attachment(&m, &row.storage_id).await?;
    }
    Ok(true)
}
