//! The Bot API as the domains see it. Every method takes the bot token as a [`SecretValue`]; an
//! implementation never puts it in an error or a log line (it sits in the request URL).
//! Errors are `ProviderError`s with stable texts (`Telegram <method> failed: ...`), except a token
//! Telegram refuses (401/404 on `getMe`), which is the caller's input: a `ValidationError`.

use super::model::{BotInfo, Downloaded, FileInfo, OutgoingAudio, OutgoingText, SendFailure, WebhookInfo};
use crate::BoxFut;
use crate::error::AppResult;
use crate::secrets::SecretValue;

pub trait BotApi: Send + Sync + std::fmt::Debug {
    fn get_me<'a>(&'a self, token: &'a SecretValue) -> BoxFut<'a, AppResult<BotInfo>>;
    /// `setWebhook` with `secret_token` and `allowed_updates`.
    fn set_webhook<'a>(
        &'a self,
        token: &'a SecretValue,
        url: &'a str,
        secret_token: &'a SecretValue,
        allowed_updates: &'a [&'a str],
    ) -> BoxFut<'a, AppResult<()>>;
    fn get_webhook_info<'a>(&'a self, token: &'a SecretValue) -> BoxFut<'a, AppResult<WebhookInfo>>;
    fn get_file<'a>(&'a self, token: &'a SecretValue, file_id: &'a str) -> BoxFut<'a, AppResult<FileInfo>>;
    /// Download `file_path`; more than `max_bytes` is a `PayloadTooLarge` (the body is read as a
    /// stream and abandoned at the limit, never buffered past it).
    fn download<'a>(
        &'a self,
        token: &'a SecretValue,
        file_path: &'a str,
        max_bytes: u64,
    ) -> BoxFut<'a, AppResult<Downloaded>>;
    fn send_message<'a>(&'a self, token: &'a SecretValue, chat_id: &'a str, text: &'a str)
    -> BoxFut<'a, AppResult<()>>;
    /// `sendMessage` of a reply: the new message's id, or why there is none (by what the caller
    /// may do about it).
    fn send_text<'a>(&'a self, token: &'a SecretValue, m: &'a OutgoingText) -> BoxFut<'a, Result<i64, SendFailure>>;
    /// `sendAudio` / `sendVoice` by URL: the new message's id.
    fn send_audio<'a>(&'a self, token: &'a SecretValue, m: &'a OutgoingAudio) -> BoxFut<'a, Result<i64, SendFailure>>;
    /// `sendChatAction` (`typing`, ...).
    fn send_chat_action<'a>(
        &'a self,
        token: &'a SecretValue,
        chat_id: &'a str,
        action: &'a str,
    ) -> BoxFut<'a, Result<(), SendFailure>>;
    /// `deleteWebhook` (Telegram refuses `getUpdates` while a webhook is set).
    fn delete_webhook<'a>(&'a self, token: &'a SecretValue) -> BoxFut<'a, AppResult<()>>;
    /// `getUpdates` from `offset` on (those before are confirmed), waiting up to `timeout_s` for
    /// one (long polling): the raw updates.
    fn get_updates<'a>(
        &'a self,
        token: &'a SecretValue,
        offset: i64,
        timeout_s: u64,
    ) -> BoxFut<'a, AppResult<Vec<serde_json::Value>>>;
}
