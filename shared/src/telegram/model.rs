//! What the Bot API returns, and what ingress reads from an update.

use crate::queue::model::AttachmentKind;
use serde::{Deserialize, Serialize};

/// `getMe`: the bot's numeric id (as a decimal string) and its username.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BotInfo {
    pub bot_identity: String,
    pub telegram_username: Option<String>,
}

/// `getWebhookInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebhookInfo {
    pub current_url: Option<String>,
    pub pending_update_count: u64,
    pub last_error_message: Option<String>,
    /// Telegram unix seconds.
    pub last_error_date: Option<i64>,
    pub allowed_updates: Vec<String>,
}

/// `getFile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub file_path: String,
    pub file_size: Option<u64>,
}

/// A downloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// A media item of a message, before any download (spec §8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub kind: AttachmentKind,
    pub file_id: String,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    pub size_bytes: Option<u64>,
}

/// The parts of a `message` update that ingress reads (spec §7.2 step 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    pub update_id: i64,
    pub message_id: Option<i64>,
    pub telegram_user_id: String,
    pub telegram_chat_id: String,
    /// `private`, `group`, `supergroup` or `channel`.
    pub chat_type: String,
    pub text: Option<String>,
    pub caption: Option<String>,
    pub telegram_username: Option<String>,
    pub display_name: Option<String>,
    pub candidates: Vec<Candidate>,
}

impl IncomingMessage {
    pub fn is_private(&self) -> bool {
        self.chat_type == "private"
    }
}
