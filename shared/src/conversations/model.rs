//! The conversation item (lock, sticky owner, ready-index attributes) and history entries.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};

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
    /// Index partition: `d<n>` unlocked and due when written (also in the `due` index), `r<n>`
    /// unlocked and waiting for its time, `l<n>` locked; absent while nothing is open.
    #[serde(default)]
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
    /// The `due` index sort key (see `keys::due_rank`); meaningful while `readyShard` is `d<n>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_rank: Option<String>,
    /// The rank the conversation takes when the claimed head leaves (set with `nextPr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rank: Option<String>,
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

/// How much history the hydration bundle carries.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPolicy {
    /// Entries when the cache key matches (spec: 64) ...
    pub window: i32,
    /// ... and the bound on the "full history" the original returns otherwise.
    pub full_max: i32,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        Self { window: 64, full_max: 1000 }
    }
}
