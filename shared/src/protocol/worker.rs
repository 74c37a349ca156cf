//! The worker protocol: `POST /worker/<op>` with `Authorization: Bearer <worker token>`, JSON in
//! and out (README, "Worker protocol"). Request and response bodies of the job loop, and the
//! error body every non-2xx response carries.

pub use crate::conversations::model::HistoryRole;
pub use crate::error::{ErrorCode, LeaseRefusal};
pub use crate::hydration::model::{
    BridgeRuntimeConfig, ConversationState, HydrationArgs, HydrationBundle, ProfileView,
};
pub use crate::queue::model::{Attachment, AttachmentKind, AttachmentStatus, ClaimedJob, Payload};
pub use crate::queue::{
    AppendArgs, AppendResult, ClaimArgs, ConversationArgs, FailArgs, FailResult, HeartbeatResult, LeaseArgs,
    NewHistoryEntry,
};
pub use crate::usage::model::{CompleteArgs, Usage};
pub use crate::workers::model::ControlState;
use serde::{Deserialize, Serialize};

/// Every non-2xx response: `{"error": {"code", "message", "reason"?}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<LeaseRefusal>,
}

/// `POST /worker/reply`: one part of the job's reply, sent to the user by the backend with the
/// bot token of the conversation's receiving bot. Only the holder of the message's live lease may
/// call it (a `workerId` in the body must be the token's worker). Idempotent per
/// `(messageId, part)`: a repeated call returns the first call's result and sends nothing again.
///
/// Exactly one of `text` and `audio`. A text longer than Telegram's 4,096 characters is split by
/// the backend into several Telegram messages (on line or word boundaries; with `parseMode`
/// `HTML`, never inside a tag or entity, open tags closed and reopened across the cut).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplyArgs {
    pub message_id: String,
    pub lease_id: String,
    /// The worker's number for this part of its reply (0, 1, 2, ...): the idempotency key with
    /// `messageId`.
    pub part: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<ReplyAudio>,
    /// The Telegram message id (in the job's chat) the reply answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_message_id: Option<i64>,
    /// Absent: plain text, sent as is (no markup is interpreted). `HTML`: Telegram's HTML subset;
    /// the backend escapes whatever is not a supported tag or entity, so a stray `<` or `&` in
    /// model output can never make Telegram refuse the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<ParseMode>,
}

/// The markup of a reply's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParseMode {
    #[serde(rename = "HTML")]
    Html,
}

/// An audio reply: a file the worker uploaded first (`/worker/media-upload-url`), by its
/// `storageId`, sent with Telegram's `sendAudio` (or `sendVoice` when `voice`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplyAudio {
    pub storage_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// At most 1,024 characters (Telegram's caption limit); `parseMode` applies to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Send as a voice note (`sendVoice`, OGG/Opus) instead of an audio file.
    #[serde(default)]
    pub voice: bool,
}

/// The outcome of a reply part, as recorded. HTTP 200 carries a final outcome; anything the
/// worker may retry is an error status instead: 409 (lease lost: nothing sent, do not retry),
/// 429 (Telegram's flood limit: retry after `retryAfterMs`, see [`RateLimitedBody`]), 502
/// (Telegram unreachable before anything was sent: retry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyResult {
    pub message_id: String,
    pub part: u32,
    pub status: ReplyStatus,
    /// The Telegram message ids of the part's messages, in order (several when the text was split).
    pub telegram_message_ids: Vec<i64>,
    /// How many Telegram messages the part was split into.
    pub chunks: u32,
    /// Why the part was not (fully) delivered (`failed`, `unconfirmed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when this call found the part already recorded and sent nothing.
    pub replayed: bool,
}

/// A reply part's final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    /// Every chunk was accepted by Telegram.
    Sent,
    /// Telegram refused it (e.g. the user blocked the bot, the chat is gone): retrying cannot help.
    Failed,
    /// Telegram's answer was lost after the request was sent: the message may have been
    /// delivered, so it is not sent again (at most once).
    Unconfirmed,
}

/// `POST /worker/typing`: Telegram's `typing` chat action in the job's chat (it shows for about
/// 5 s or until the next message). Lease holder only (409 otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TypingArgs {
    pub message_id: String,
    pub lease_id: String,
}

/// The answer of `/worker/typing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingResult {
    pub ok: bool,
}

/// The body of a 429 (`code` `RateLimited`): [`ErrorBody`] with the wait Telegram asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimitedBody {
    pub error: RateLimitedDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitedDetail {
    pub code: String,
    pub message: String,
    pub retry_after_ms: u64,
}

#[cfg(test)]
mod reply_wire_tests {
    use super::*;

    #[test]
    fn reply_args_are_camel_case_and_strict() {
        let a: ReplyArgs = serde_json::from_str(
            r#"{"messageId":"m","leaseId":"l","part":0,"text":"hi","replyToMessageId":7,"parseMode":"HTML"}"#,
        )
        .unwrap();
        assert_eq!(a.parse_mode, Some(ParseMode::Html));
        assert_eq!(a.reply_to_message_id, Some(7));
        let back = serde_json::to_value(&a).unwrap();
        assert_eq!(back["messageId"], "m");
        assert!(back.get("audio").is_none());
        assert!(serde_json::from_str::<ReplyArgs>(r#"{"messageId":"m","leaseId":"l","part":0,"txt":"x"}"#).is_err());
        assert!(serde_json::from_str::<ReplyArgs>(r#"{"messageId":"m","leaseId":"l","part":-1}"#).is_err());
        assert!(
            serde_json::from_str::<ReplyArgs>(r#"{"messageId":"m","leaseId":"l","part":0,"parseMode":"md"}"#).is_err()
        );
        let a: ReplyArgs =
            serde_json::from_str(r#"{"messageId":"m","leaseId":"l","part":1,"audio":{"storageId":"s","voice":true}}"#)
                .unwrap();
        assert!(a.audio.unwrap().voice);
    }

    #[test]
    fn results_round_trip() {
        let r = ReplyResult {
            message_id: "m".into(),
            part: 0,
            status: ReplyStatus::Unconfirmed,
            telegram_message_ids: vec![1, 2],
            chunks: 3,
            error: None,
            replayed: true,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "unconfirmed");
        assert_eq!(v["telegramMessageIds"], serde_json::json!([1, 2]));
        assert_eq!(serde_json::from_value::<ReplyResult>(v).unwrap(), r);
        let b: RateLimitedBody =
            serde_json::from_str(r#"{"error":{"code":"RateLimited","message":"x","retryAfterMs":3000}}"#).unwrap();
        assert_eq!(b.error.retry_after_ms, 3000);
        let t: TypingArgs = serde_json::from_str(r#"{"messageId":"m","leaseId":"l"}"#).unwrap();
        assert_eq!(t.lease_id, "l");
    }
}
