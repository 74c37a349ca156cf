//! Snapshot rows, the snapshot routes' and ops' arguments and results, and the policy.

use crate::blob::UploadTarget;
use crate::clock::Millis;
use crate::workers::model::WorkerStatus;
use serde::{Deserialize, Serialize};

/// Snapshot retention, upload window and size.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPolicy {
    /// Ready snapshots are kept this long after finalize, then expired (object deleted).
    pub retention_ms: Millis,
    /// An upload not finalized within this time fails (its URL expires at the same moment).
    pub upload_timeout_ms: Millis,
    /// Largest snapshot archive. Finalize reads the object once to verify it inside the claim
    /// function's 30 s, so raise this together with that function's memory and timeout.
    pub max_bytes: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self { retention_ms: 7 * 86_400_000, upload_timeout_ms: 3_600_000, max_bytes: 512 * 1024 * 1024 }
    }
}

pub const FORMAT_VERSION: u32 = 1;
/// Failed and expired rows stay readable this long, then DynamoDB TTL removes them.
pub const TOMBSTONE_RETENTION_MS: Millis = 30 * 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotReason {
    Drain,
    Signal,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotStatus {
    Uploading,
    Ready,
    Failed,
    Expired,
}

impl SnapshotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Uploading => "uploading",
            SnapshotStatus::Ready => "ready",
            SnapshotStatus::Failed => "failed",
            SnapshotStatus::Expired => "expired",
        }
    }
}

/// A snapshot row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotItem {
    pub pk: String,
    pub sk: String,
    pub snapshot_id: String,
    pub workspace_id: String,
    pub agent_key: String,
    pub worker_id: String,
    pub conversation_id: String,
    pub reason: SnapshotReason,
    pub format_version: u32,
    pub object_key: String,
    /// Stored under `snapStatus`: `status` belongs to messages (and their `byStatusShard` index).
    #[serde(rename = "snapStatus")]
    pub status: SnapshotStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The size announced at prepare (then signed into the upload URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    /// Until when a ready snapshot is kept (set again at finalize: completion + retention).
    pub expires_at: Millis,
    /// Until when the upload may happen.
    pub upload_expires_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrepareArgs {
    pub workspace_id: String,
    pub agent_key: String,
    pub conversation_id: String,
    pub reason: SnapshotReason,
    /// When given, the upload must be exactly this many bytes (the length is signed).
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareResult {
    pub snapshot_id: String,
    #[serde(flatten)]
    pub upload: UploadTarget,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinalizeArgs {
    pub snapshot_id: String,
    /// Lowercase hex SHA-256 of the uploaded bytes.
    pub sha256: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizeResult {
    pub snapshot_id: String,
    pub status: SnapshotStatus,
    pub expires_at: Millis,
    /// The worker's status afterwards (a draining worker whose final snapshot this is: stopping).
    pub worker_status: Option<WorkerStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailSnapshotArgs {
    pub snapshot_id: String,
    pub error: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreArgs {
    pub workspace_id: String,
    pub agent_key: String,
    pub conversation_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    pub snapshot_id: String,
    pub download_url: String,
    pub download_expires_at: Millis,
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    pub created_at: Millis,
    pub reason: SnapshotReason,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSnapshotsArgs {
    pub conversation_id: String,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAgentSnapshotsArgs {
    pub agent_key: String,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    pub snapshot_id: String,
    pub conversation_id: String,
    pub workspace_id: String,
    pub agent_key: String,
    pub worker_id: String,
    pub reason: SnapshotReason,
    pub status: SnapshotStatus,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
    pub expires_at: Millis,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    /// Only for a ready, unexpired snapshot.
    pub download_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepResult {
    pub snapshots_expired: u32,
    pub uploads_timed_out: u32,
    pub media_expired: u32,
}
