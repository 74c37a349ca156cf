//! The hydration bundle and its request, as the worker protocol carries them.

use crate::conversations::model::HistoryEntry;
use crate::queue::model::Payload;
use serde::{Deserialize, Serialize};

/// `POST /worker/hydration` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HydrationArgs {
    pub message_id: String,
    /// Optional extra check: the lease the worker believes it holds.
    #[serde(default)]
    pub lease_id: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationState {
    /// Oldest first.
    pub context_history: Vec<HistoryEntry>,
    /// Always empty (nothing writes tool calls; kept for the wire shape).
    pub pending_tool_calls: Vec<serde_json::Value>,
    /// `delta`: the last `historyWindow` entries (the cache key matched); `full`: the conversation's
    /// history up to the bound `fullHistoryMax`.
    pub history_mode: &'static str,
    /// True when older entries exist than the ones returned.
    pub history_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeRuntimeConfig {
    pub service_key: Option<String>,
    pub service_key_secret_ref: Option<String>,
    pub base_url: Option<String>,
    pub app_base_url_map_json: Option<String>,
    pub service_id: Option<String>,
    pub app_key: Option<String>,
    pub bot_identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    pub agent_key: String,
    pub version: String,
    pub enabled: bool,
    pub bot_identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HydrationBundle {
    pub message_id: String,
    pub conversation_id: String,
    pub agent_key: String,
    pub workspace_id: String,
    pub lease_id: String,
    pub lease_expires_at: i64,
    pub attempts: u32,
    /// The stored payload; ready attachments carry a fresh presigned `downloadUrl`.
    pub payload: Payload,
    pub conversation_state: ConversationState,
    pub profile: ProfileView,
    /// Plaintext of the first Telegram token ref of the profile with an active secret.
    pub telegram_bot_token: Option<String>,
    pub bridge_runtime_config: Option<BridgeRuntimeConfig>,
}
