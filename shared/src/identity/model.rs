//! Identity items (control table, `docs/data-model.md` §identity) and the views ops return.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::access::model::ConsumerUserId;

/// Rate limits and switches of Telegram ingress and pairing.
#[derive(Debug, Clone, PartialEq)]
pub struct TelegramPolicy {
    /// Pairing attempts (`/start <code>`) per chat per window.
    pub attempts_per_chat: u32,
    /// Pairing attempts per bot per window.
    pub attempts_per_bot: u32,
    pub attempt_window_ms: Millis,
    /// Reject messages from Telegram users with no binding (else: the bot's agent serves them).
    pub require_binding: bool,
    /// Send short replies (paired, invalid code, not linked yet).
    pub replies: bool,
    /// How long an accepted update (and its dedupe key) is kept.
    pub update_retention_ms: Millis,
}

impl Default for TelegramPolicy {
    fn default() -> Self {
        Self {
            attempts_per_chat: 5,
            attempts_per_bot: 200,
            attempt_window_ms: 600_000,
            require_binding: false,
            replies: true,
            update_retention_ms: 3 * 86_400_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingStatus {
    Active,
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingSource {
    Manual,
    TelegramPairing,
    Api,
}

/// A binding: consumer user ↔ agent (↔ Telegram identity on one bot). The active one is kept as
/// the user's pointer item; every binding also has a history row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    pub binding_id: String,
    pub consumer_user_id: String,
    pub agent_key: String,
    pub conversation_id: String,
    pub bot_identity: Option<String>,
    pub status: BindingStatus,
    pub source: BindingSource,
    pub telegram_user_id: Option<String>,
    pub telegram_chat_id: Option<String>,
    /// The pairing was done in a group chat: any member of that chat routes to this binding.
    #[serde(default)]
    pub group_paired: bool,
    pub metadata: Option<BTreeMap<String, String>>,
    pub bound_at: Millis,
    pub revoked_at: Option<Millis>,
    /// Set when the agent's bot changed after this binding was made (W-9): it cannot be routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairingStatus {
    Pending,
    Used,
    Expired,
}

/// A pairing code (`pk = PAIR#<code>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingCode {
    pub code: String,
    pub consumer_user_id: String,
    pub agent_key: String,
    pub bot_identity: String,
    pub status: PairingStatus,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub used_at: Option<Millis>,
    pub telegram_user_id: Option<String>,
    pub telegram_chat_id: Option<String>,
}

/// A bot and the agent it belongs to (`pk = BOT#<botIdentity>`): the uniqueness record of W-9,
/// and the webhook state Telegram last confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BotRecord {
    pub bot_identity: String,
    pub agent_key: String,
    pub telegram_username: Option<String>,
    pub token_ref: String,
    /// The URL Telegram confirmed, with our secret, at `webhookConfiguredAt`.
    pub webhook_url: Option<String>,
    pub webhook_configured_at: Option<Millis>,
    /// SHA-256 (hex) of the current webhook secret: the key of its hook item.
    pub webhook_secret_hash: Option<String>,
    pub updated_at: Millis,
}

/// What the webhook's accept stage looks up by the SHA-256 of the secret header
/// (`pk = HOOK#<sha256>`): the bot, its agent, and where the secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookHook {
    pub bot_identity: String,
    pub agent_key: String,
    pub secret_ref: String,
    pub token_ref: String,
}

/// A pairing code as ops return it: the status derived from time. The `/start` path never
/// shows it to Telegram.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingView {
    pub code: String,
    pub consumer_user_id: String,
    pub agent_key: String,
    pub bot_identity: String,
    pub status: PairingStatus,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub used_at: Option<Millis>,
    pub telegram_user_id: Option<String>,
    pub telegram_chat_id: Option<String>,
}

/// `getUserAgentOnboardingState.nextAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NextAction {
    ImportToken,
    ConfigureWebhook,
    CreatePairing,
    CompletePairing,
    Ready,
}
