//! Wire and storage types, with the original's field names (camelCase).

use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    Photo,
    Video,
    Audio,
    Voice,
    Document,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentStatus {
    Ready,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachment {
    pub kind: AttachmentKind,
    pub status: AttachmentStatus,
    pub storage_id: String,
    pub telegram_file_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    pub expires_at: Millis,
    /// Never stored: download URLs are made fresh when a job is hydrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
}

/// The message payload (spec §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Payload {
    pub provider: String,
    pub provider_user_id: String,
    pub message_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_update_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    Processing,
    Done,
    DeadLetter,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Processing => "processing",
            MessageStatus::Done => "done",
            MessageStatus::DeadLetter => "dead_letter",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => MessageStatus::Queued,
            "processing" => MessageStatus::Processing,
            "done" => MessageStatus::Done,
            "dead_letter" => MessageStatus::DeadLetter,
            _ => return None,
        })
    }
}

/// A message as stored in the queue table (`pk = C#<conversationId>`, `sk = M#<ULID>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageItem {
    pub pk: String,
    pub sk: String,
    /// Present while the message is open (queued or processing): `Q#<enqueuedFor:013>#<ULID>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_key: Option<String>,
    pub message_id: String,
    pub conversation_id: String,
    pub agent_key: String,
    pub payload: Payload,
    pub status: MessageStatus,
    /// Sort key of the `byStatus` index: `<scheduledFor:013>#<ULID>`.
    pub status_key: String,
    pub priority: f64,
    pub scheduled_for: Millis,
    /// The due time given at enqueue; fixes the message's place in its conversation.
    pub enqueued_for: Millis,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    pub created_at: Millis,
    /// DynamoDB TTL (epoch seconds), set when the message reaches done or dead_letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

/// A conversation as stored in the queue table (`pk = C#<conversationId>`, `sk = CONV`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationItem {
    pub pk: String,
    pub sk: String,
    /// Always `!CONV`, so the conversation sorts first in the `open` index.
    pub open_key: String,
    pub conversation_id: String,
    pub agent_key: String,
    pub created_at: Millis,
    /// Open (queued + processing) messages.
    pub open_count: i64,
    pub ready_shard: String,
    /// Earliest time a claim can succeed (never later than the truth); absent when nothing is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Millis>,
    /// Priority of the message that opened the current busy period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_msg_sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_until: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_heartbeat_at: Option<Millis>,
    /// The sticky worker and until when its claim on the conversation holds without news from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_until: Option<Millis>,
    #[serde(default)]
    pub rev: i64,
    /// Workspace of the last history append; with `agentKey` the hydration cache key (spec §3.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_at: Option<Millis>,
    /// ULID of the current head (set with `priority`): the insertion-order tie-break of claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<String>,
    /// Priority and ULID of the message behind the claimed head, as the claim saw it: they become
    /// `priority`/`headSeq` when the head leaves.
    #[serde(default, rename = "nextPr", skip_serializing_if = "Option::is_none")]
    pub next_priority: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_seq: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    Active,
    Draining,
    Stopping,
    Stopped,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Active => "active",
            WorkerStatus::Draining => "draining",
            WorkerStatus::Stopping => "stopping",
            WorkerStatus::Stopped => "stopped",
        }
    }

    /// The statuses a worker may be in before moving to `self` (spec §5.2).
    pub fn allowed_from(self) -> &'static [WorkerStatus] {
        match self {
            WorkerStatus::Active => &[WorkerStatus::Active],
            WorkerStatus::Draining => &[WorkerStatus::Active, WorkerStatus::Draining],
            WorkerStatus::Stopping => &[WorkerStatus::Draining, WorkerStatus::Stopping],
            WorkerStatus::Stopped => &[WorkerStatus::Stopping, WorkerStatus::Stopped],
        }
    }
}

/// A worker row (workers table, key `workerId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerItem {
    pub worker_id: String,
    pub provider: String,
    pub status: WorkerStatus,
    /// In-flight jobs. Stored as a running sum (it may dip below zero when a lease is recovered
    /// by someone else); always read through [`WorkerItem::load`].
    #[serde(default)]
    pub load: i64,
    pub heartbeat_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_claim_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_complete_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_shutdown_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_agent_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Millis>,
    /// When the row was first written (mint, spawn or upsert); base of the idle deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Millis>,
    /// Lowercase hex SHA-256 of the worker's bearer token; the token itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_issued_at: Option<Millis>,
}

impl WorkerItem {
    pub fn load(&self) -> i64 {
        self.load.max(0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BridgeConfig {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_key_secret_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_base_url_map_json_secret_ref: Option<String>,
}

/// An agent profile (control table, `pk = AGENT#<agentKey>`, `sk = PROFILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProfile {
    pub agent_key: String,
    pub version: String,
    pub secrets_ref: Vec<String>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_config: Option<BridgeConfig>,
    pub updated_at: Millis,
}

/// Runtime message configuration (spec §7.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_attachment_retention_ms: Option<i64>,
}

/// What a successful claim hands the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedJob {
    pub message_id: String,
    pub conversation_id: String,
    pub agent_key: String,
    pub lease_id: String,
    pub lease_expires_at: Millis,
    pub attempts: u32,
    pub payload: Payload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryRole {
    System,
    User,
    Assistant,
    Tool,
}

/// One conversation history entry (`sk = H#<ULID>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub role: HistoryRole,
    pub content: String,
    pub at: Millis,
}
