//! Agent profiles and the message runtime configuration.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BridgeConfig {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_key_secret_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_base_url_map_json_secret_ref: Option<String>,
}

/// An agent profile (control table, `pk = AGENT#<agentKey>`, `sk = PROFILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProfile {
    pub agent_key: String,
    pub version: String,
    pub secrets_ref: Vec<String>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_config: Option<BridgeConfig>,
    pub updated_at: Millis,
}

/// Runtime message configuration (spec §7.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_attachment_retention_ms: Option<i64>,
}

/// `configureAgent` (`upsertAgentProfile`). Unlike the original (W22), optional fields can be
/// cleared with `null`, and no platform secret refs are injected into the profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigureAgentArgs {
    pub agent_key: String,
    pub version: String,
    pub secrets_ref: Vec<String>,
    pub enabled: bool,
    #[serde(default, deserialize_with = "double_option")]
    pub bot_identity: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub bridge_config: Option<Option<BridgeConfig>>,
}

fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}
