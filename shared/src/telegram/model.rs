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

/// A text message to send (`sendMessage`). `html` sets `parse_mode` HTML (the text must be
/// sanitized already); `reply_to` answers a message of the chat (sent even if it is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingText {
    pub chat_id: String,
    pub text: String,
    pub html: bool,
    pub reply_to: Option<i64>,
}

/// An audio file to send (`sendAudio`, or `sendVoice` when `voice`) by URL: Telegram fetches it
/// (a presigned, short-lived blob URL), so the bytes never pass through the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingAudio {
    pub chat_id: String,
    pub url: String,
    pub caption: Option<String>,
    pub html: bool,
    pub reply_to: Option<i64>,
    pub voice: bool,
}

/// Why a send did not give a Telegram message id, by what the caller may do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// Telegram's flood control (429 with `parameters.retry_after`, in ms here).
    RateLimited { retry_after_ms: u64 },
    /// Nothing was delivered (no connection, Telegram's 5xx): the same send may be tried again.
    NotSent(String),
    /// Telegram refused this message (a 4xx: the chat is gone, the bot was blocked, bad
    /// markup): trying again cannot help.
    Refused(String),
    /// The request went out but its answer was lost (time-out, connection dropped): the message
    /// may have been delivered.
    Unknown(String),
}

impl SendFailure {
    /// Words safe for a caller and a log (never the token or a URL).
    pub fn describe(&self) -> String {
        match self {
            SendFailure::RateLimited { retry_after_ms } => format!("rate limited by Telegram for {retry_after_ms} ms"),
            SendFailure::NotSent(m) | SendFailure::Refused(m) | SendFailure::Unknown(m) => m.clone(),
        }
    }
}
