//! Attachment rows, the media routes' arguments and results, and the media policy.

use crate::blob::UploadTarget;
use crate::clock::Millis;
use crate::queue::model::{AttachmentKind, AttachmentStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Media retention, size and URL lifetimes.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPolicy {
    /// Default retention of media (message config `telegramAttachmentRetentionMs` overrides it).
    pub retention_ms: Millis,
    /// Telegram bots can download at most 20 MB: larger media are refused.
    pub max_bytes: u64,
    /// Lifetime of presigned download URLs handed to workers.
    pub download_url_ttl_ms: Millis,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        Self { retention_ms: 7 * 86_400_000, max_bytes: 20 * 1024 * 1024, download_url_ttl_ms: 900_000 }
    }
}

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
