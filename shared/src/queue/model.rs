//! Messages (jobs) and their payloads, as stored and as handed to workers.

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
    /// Sort key of the `byStatusShard` index: `<scheduledFor:013>#<ULID>`.
    pub status_key: String,
    /// Partition key of the `byStatusShard` index: `<status>#<nn>` (the message's shard, for
    /// life). Absent only on items written before the index (until `backfillStatusShards`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_part: Option<String>,
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

/// Queue, lease and retry policy. Defaults are the original's constants (spec §2).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePolicy {
    pub lease_ms: i64,
    pub default_priority: f64,
    pub max_priority: f64,
    pub default_max_attempts: u32,
    pub retry_base_delay_ms: i64,
    pub retry_max_delay_ms: i64,
    pub retry_jitter_ratio: f64,
    /// How long done messages stay readable before DynamoDB TTL removes them.
    pub done_retention_ms: i64,
    /// How long dead-lettered messages stay (for inspection and redrive).
    pub dead_letter_retention_ms: i64,
    /// How far ahead `scheduledFor` may be.
    pub max_schedule_ahead_ms: i64,
    /// Partitions of the `ready` index (constant per deployment).
    pub ready_shards: u32,
    /// Largest accepted payload, as JSON bytes (a DynamoDB item stops at 400 KB).
    pub max_payload_bytes: usize,
    /// Largest attachment a payload may announce (Telegram bots download at most 20 MB).
    pub max_attachment_bytes: u64,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            lease_ms: 360_000,
            default_priority: 50.0,
            max_priority: 100.0,
            default_max_attempts: 5,
            retry_base_delay_ms: 1_000,
            retry_max_delay_ms: 120_000,
            retry_jitter_ratio: 0.1,
            done_retention_ms: 7 * 86_400_000,
            dead_letter_retention_ms: 30 * 86_400_000,
            max_schedule_ahead_ms: 366 * 86_400_000,
            ready_shards: 64,
            max_payload_bytes: 256 * 1024,
            max_attachment_bytes: 20 * 1024 * 1024,
        }
    }
}

/// Where the store keeps a message: its item key and its sort keys in the conversation's open
/// messages and in the status index (formats: `adapters/dynamo/keys.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageKeys {
    pub pk: String,
    pub sk: String,
    pub open_key: String,
    pub status_key: String,
    /// `statusPart` of the new (queued) message.
    pub status_part: String,
}
