//! The reply record (one per `(messageId, part)`, in the conversation's partition of the queue
//! table) and the limits of replies.

use crate::clock::Millis;
use crate::protocol::worker::ReplyStatus;
use serde::{Deserialize, Serialize};

/// Telegram's limit on a message's text (after entity parsing; counted here before, in UTF-16
/// code units as Telegram counts, so the raw text is a safe upper bound).
pub const TELEGRAM_TEXT_LIMIT: usize = 4_096;
/// Telegram's limit on a caption.
pub const TELEGRAM_CAPTION_LIMIT: usize = 1_024;
/// The longest text one reply part may carry (UTF-16 units): at most ~10 Telegram messages.
pub const MAX_REPLY_TEXT: usize = 40_000;
/// The highest part number.
pub const MAX_PART: u32 = 999;
/// Largest audio file sent (Telegram bots may upload 50 MB; media here are capped at 20 MB).
pub const MAX_AUDIO_BYTES: u64 = 20 * 1024 * 1024;

/// Per-chat pacing (Telegram: about one message a second in a chat, 20 a minute in a group).
pub const PRIVATE_CHAT_INTERVAL_MS: Millis = 1_000;
pub const GROUP_CHAT_INTERVAL_MS: Millis = 3_000;
/// A call waits in-line for pacing up to this long; beyond it answers 429 with the wait.
pub const MAX_INLINE_WAIT_MS: Millis = 5_000;
/// How long a call owns a `sending` record; a call that died leaves it to the next one after this.
pub const SEND_CLAIM_MS: Millis = 60_000;
/// Reply records are kept this long (DynamoDB TTL), past any retry of their message.
pub const REPLY_RETENTION_MS: Millis = 14 * 86_400_000;

/// A reply record's state: `sending` (a call owns it until `claimUntil`, or it waits for a retry:
/// rate limited or Telegram unreachable), then one final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyState {
    Sending,
    Sent,
    Failed,
    Unconfirmed,
}

impl ReplyState {
    pub fn final_status(self) -> Option<ReplyStatus> {
        match self {
            ReplyState::Sending => None,
            ReplyState::Sent => Some(ReplyStatus::Sent),
            ReplyState::Failed => Some(ReplyStatus::Failed),
            ReplyState::Unconfirmed => Some(ReplyStatus::Unconfirmed),
        }
    }
}

/// A reply record (`pk = C#<conversationId>`, `sk = R#<message ULID>#<part:03>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyRecord {
    pub pk: String,
    pub sk: String,
    pub message_id: String,
    pub conversation_id: String,
    pub part: u32,
    /// The worker and lease of the call that created it.
    pub worker_id: String,
    pub lease_id: String,
    pub reply_state: ReplyState,
    /// SHA-256 of the part's content: a retry must carry the same part, not another one.
    pub body_hash: String,
    /// The Telegram chat the part went to.
    pub chat_id: String,
    /// Telegram messages the part is split into, and the ids of those sent so far (in order).
    pub chunks: u32,
    #[serde(default)]
    pub telegram_message_ids: Vec<i64>,
    /// The call that owns a `sending` record (random), and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    #[serde(default)]
    pub claim_until: Millis,
    /// Telegram asked to wait until then (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub ttl: i64,
}

/// Where a reply goes: the chat, the receiving bot, and whether the chat is a group (pacing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub chat_id: String,
    pub bot_identity: String,
    pub group: bool,
}

/// A reply part's content, checked and ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The Telegram messages of a text, in order (each within the limit, HTML balanced).
    Text { chunks: Vec<String>, html: bool },
    Audio {
        storage_id: String,
        file_name: Option<String>,
        mime_type: Option<String>,
        caption: Option<String>,
        html: bool,
        voice: bool,
    },
}

impl Content {
    pub fn chunk_count(&self) -> u32 {
        match self {
            Content::Text { chunks, .. } => chunks.len() as u32,
            Content::Audio { .. } => 1,
        }
    }
}
