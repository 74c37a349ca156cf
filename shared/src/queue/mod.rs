//! The queue's public operations: argument and result types (the wire shapes) and the rules.
//! The DynamoDB store (`crate::adapters::dynamo::queue`) carries them out.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
pub mod shards;

use crate::clock::Millis;
use crate::conversations::model::HistoryRole;
use crate::queue::model::{MessageStatus, Payload};
use serde::{Deserialize, Serialize};

/// `enqueue` (spec §7.1). `nowMs` and `providerConfig` are refused (W16, W17).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnqueueArgs {
    pub conversation_id: String,
    pub agent_key: String,
    pub payload: Payload,
    #[serde(default)]
    pub priority: Option<f64>,
    #[serde(default)]
    pub scheduled_for: Option<i64>,
    #[serde(default)]
    pub max_attempts: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnqueueResult {
    pub message_id: String,
    /// True when `payload.externalMessageId` matched an earlier message: nothing was written.
    pub deduplicated: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimArgs {
    pub worker_id: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseArgs {
    pub worker_id: String,
    pub message_id: String,
    pub lease_id: String,
    /// Set by the worker API (never from input): the write re-checks the worker's token.
    #[serde(skip)]
    pub token_hash: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailArgs {
    pub worker_id: String,
    pub message_id: String,
    pub lease_id: String,
    pub error_message: String,
    /// Set by the worker API (never from input): the write re-checks the worker's token.
    #[serde(skip)]
    pub token_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResult {
    pub ok: bool,
    pub lease_expires_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailResult {
    pub requeued: bool,
    pub dead_lettered: bool,
    pub next_scheduled_for: Option<Millis>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewHistoryEntry {
    pub role: HistoryRole,
    pub content: String,
    #[serde(default)]
    pub at: Option<Millis>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppendArgs {
    pub conversation_id: String,
    #[serde(default)]
    pub workspace_id: Option<String>,
    pub messages: Vec<NewHistoryEntry>,
    /// Set by the worker API (never from input): only the worker holding the conversation's live
    /// lock may append, and only while its token is current (re-checked in the same write).
    #[serde(skip)]
    pub holder: Option<crate::workers::model::Principal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendResult {
    pub updated: bool,
    pub message_count: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversationArgs {
    pub conversation_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListByStatusArgs {
    pub status: String,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListConversationArgs {
    pub conversation_id: String,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseArgs {
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseResult {
    /// Messages put back to queued.
    pub requeued: u32,
    /// Messages whose expired lease used their last attempt.
    pub dead_lettered: u32,
    /// Conversation locks removed.
    pub unlocked: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedriveArgs {
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub message_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveResult {
    pub redriven: u32,
    pub message_ids: Vec<String>,
}

/// `backfillStatusShards` (migration to the `byStatusShard` index): one Scan page of the queue
/// table, `limit` items evaluated (default 100, 1..=1,000), from `cursor` (a `nextCursor`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackfillArgs {
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// What one `backfillStatusShards` page did: items read, messages given their `statusPart`, and
/// where the next page starts (`None`: the table has been scanned to its end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillResult {
    pub scanned: u64,
    pub updated: u64,
    pub next_cursor: Option<String>,
}

/// `queueStats`: bounded counts from the `byStatusShard` index (W21: live and expired leases apart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    pub queued_ready: u64,
    pub queued_scheduled: u64,
    pub processing: u64,
    pub processing_expired: u64,
    pub dead_letter: u64,
    /// A figure reached the read bound (`STATS_CAP`, 1,000 index entries): it is a lower bound.
    #[serde(default)]
    pub capped: bool,
}

/// A row of `listJobsByStatus` / `listQueueItemsForConversation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRow {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "_creationTime")]
    pub creation_time: Millis,
    pub conversation_id: String,
    pub agent_key: String,
    pub status: MessageStatus,
    pub priority: f64,
    pub scheduled_for: Millis,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Absent fields are omitted, never `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
}
