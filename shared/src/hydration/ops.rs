//! `getHydrationBundleForClaimedJob` (spec §6.3): everything a worker needs to run the job it
//! holds. Served only to the worker holding the message's live lease; anyone else gets 403 and
//! no profile, history or secret is read.

use crate::adapters::dynamo::{Item, from_item, key, s};
use crate::agents::model::{AgentProfile, BridgeConfig};
use crate::app::App;
use crate::blob::media_key;
use crate::conversations::model::{ConversationItem, HistoryEntry};
use crate::error::{AppError, AppResult};
use crate::ids::MessageRef;
use crate::queue::model::{AttachmentStatus, MessageItem, Payload};
use crate::queue::rules;
use crate::secrets::Secrets;
use crate::workers::auth::Claimed;
use crate::workers::model::WorkerItem;
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

/// Telegram token refs of a profile, in list order (spec §3.4, hydration rule).
pub fn telegram_token_refs(p: &AgentProfile) -> Vec<String> {
    p.secrets_ref.iter().filter(|r| *r == "telegram.botToken" || r.starts_with("telegram.botToken.")).cloned().collect()
}

/// `[preferred (trimmed, if non-blank), <prefix>.<agentKey>, <prefix>]` without duplicates.
pub fn candidates(preferred: Option<&str>, prefix: &str, agent_key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let pref = preferred.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    for r in pref.into_iter().chain([format!("{prefix}.{agent_key}"), prefix.to_string()]) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The bridge runtime config (spec §6.3 / identity §11.1): profile fields win ("present" includes
/// an empty string); secrets only fill the gaps, per agent first, then global.
pub async fn bridge_config(
    secrets: &Secrets,
    agent_key: &str,
    b: &BridgeConfig,
    bot_identity: Option<&str>,
) -> AppResult<BridgeRuntimeConfig> {
    let val = |x: Option<(String, crate::secrets::SecretValue)>| x.map(|(_, v)| v.expose().to_string());
    let service = secrets
        .first_active(&candidates(b.service_key_secret_ref.as_deref(), "agent-bridge.serviceKey", agent_key))
        .await?;
    let (service_key_secret_ref, service_key) = match service {
        Some((r, v)) => (Some(r), Some(v.expose().to_string())),
        None => (None, None),
    };
    let base_url = match &b.base_url {
        Some(v) => Some(v.clone()),
        None => val(secrets.first_active(&candidates(None, "agent-bridge.baseUrl", agent_key)).await?),
    };
    let app_base_url_map_json = val(secrets
        .first_active(&candidates(
            b.app_base_url_map_json_secret_ref.as_deref(),
            "agent-bridge.baseUrlMapJson",
            agent_key,
        ))
        .await?);
    let service_id = match &b.service_id {
        Some(v) => Some(v.clone()),
        None => val(secrets.first_active(&candidates(None, "agent-bridge.serviceId", agent_key)).await?),
    };
    let app_key = match &b.app_key {
        Some(v) => Some(v.clone()),
        None => val(secrets.first_active(&candidates(None, "agent-bridge.appKey", agent_key)).await?),
    };
    Ok(BridgeRuntimeConfig {
        service_key,
        service_key_secret_ref,
        base_url,
        app_base_url_map_json,
        service_id,
        app_key,
        bot_identity: bot_identity.map(str::to_string),
    })
}

/// Build the bundle for the caller, which must hold the live lease of the message. The token is
/// checked against the worker row read in the same BatchGetItem as the message and its
/// conversation (never from a cache: the bundle holds secrets); nothing else is read before
/// both checks pass. Requests: 1 BatchGetItem + 1 GetItem (profile) + 1 Query (history).
pub async fn hydrate(app: &App, claimed: Claimed, a: &HydrationArgs) -> AppResult<HydrationBundle> {
    let store = &app.store;
    let workspace = a.workspace_id.clone().unwrap_or_else(|| "default".into());
    rules::validate_workspace_id(&workspace)?;
    let mref = MessageRef::parse(&a.message_id)?;
    let pk = rules::conversation_pk(&mref.conversation_id);
    let keys = [
        (store.tables.workers.as_str(), Item::from([("workerId".to_string(), s(claimed.worker_id()))])),
        (store.tables.queue.as_str(), key(&pk, rules::message_sk(&mref.ulid))),
        (store.tables.queue.as_str(), key(&pk, rules::CONV_SK)),
    ];
    let mut got = store.batch_get(&keys).await?.into_iter();
    let (row, msg, conv) = (got.next().flatten(), got.next().flatten(), got.next().flatten());
    let row: Option<WorkerItem> = row.map(from_item).transpose()?;
    let p = claimed.verify(row.as_ref())?;
    let now = store.now();
    app.auth.remember(&p, now, store.policy.workers.auth_cache_ms);
    let msg: MessageItem =
        from_item(msg.ok_or_else(|| AppError::not_found(format!("message {} does not exist", mref.id())))?)?;
    rules::check_holder(&msg, &p.worker_id, a.lease_id.as_deref(), now)?;
    // From here on the caller is the lease holder.
    let conv: ConversationItem = from_item(
        conv.ok_or_else(|| AppError::internal(format!("conversation '{}' is missing", msg.conversation_id)))?,
    )?;
    let profile = store
        .get_agent(&msg.agent_key)
        .await?
        .ok_or_else(|| AppError::not_found(format!("Agent profile '{}' not found", msg.agent_key)))?;
    let pol = &store.policy;
    let (window, mode) = if conv.history_workspace_id.as_deref() == Some(workspace.as_str()) {
        (pol.history.window, "delta")
    } else {
        (pol.history.full_max, "full")
    };
    let mut history = store.list_history(&msg.conversation_id, window + 1).await?;
    let truncated = history.len() > window as usize;
    if truncated {
        history.remove(0);
    }
    let mut payload = msg.payload;
    let lease_until = msg.lease_expires_at.unwrap_or(now);
    // Media URLs last the download TTL, or to the lease's end when that is later (at most 1 h).
    let url_until = (now + pol.media.download_url_ttl_ms).max(lease_until.min(now + 3_600_000));
    if let Some(atts) = payload.attachments.as_mut() {
        for att in atts.iter_mut() {
            att.download_url = match att.status {
                AttachmentStatus::Ready => Some(app.blobs.presign_get(&media_key(&att.storage_id), url_until).await?),
                AttachmentStatus::Expired => None,
            };
        }
    }
    let telegram_bot_token =
        app.secrets.first_active(&telegram_token_refs(&profile)).await?.map(|(_, v)| v.expose().to_string());
    let bridge_runtime_config = match profile.bridge_config.as_ref().filter(|b| b.enabled) {
        Some(b) => Some(bridge_config(&app.secrets, &profile.agent_key, b, profile.bot_identity.as_deref()).await?),
        None => None,
    };
    Ok(HydrationBundle {
        message_id: msg.message_id,
        conversation_id: msg.conversation_id,
        agent_key: msg.agent_key,
        workspace_id: workspace,
        lease_id: msg.lease_id.unwrap_or_default(),
        lease_expires_at: lease_until,
        attempts: msg.attempts,
        payload,
        conversation_state: ConversationState {
            context_history: history,
            pending_tool_calls: Vec::new(),
            history_mode: mode,
            history_truncated: truncated,
        },
        profile: ProfileView {
            agent_key: profile.agent_key,
            version: profile.version,
            enabled: profile.enabled,
            bot_identity: profile.bot_identity,
        },
        telegram_bot_token,
        bridge_runtime_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_chains_follow_the_spec() {
        assert_eq!(
            candidates(Some(" custom.key "), "agent-bridge.serviceKey", "bot"),
            vec!["custom.key", "agent-bridge.serviceKey.bot", "agent-bridge.serviceKey"]
        );
        assert_eq!(candidates(Some("  "), "p", "a"), vec!["p.a", "p"]);
        assert_eq!(candidates(Some("p"), "p", "a"), vec!["p", "p.a"], "duplicates removed, first place kept");
        let profile = AgentProfile {
            agent_key: "bot".into(),
            version: "1".into(),
            secrets_ref: vec![
                "fly.apiToken".into(),
                "telegram.botTokenX".into(),
                "telegram.botToken.bot".into(),
                "telegram.botToken".into(),
            ],
            enabled: true,
            bot_identity: None,
            bridge_config: None,
            updated_at: 0,
        };
        assert_eq!(telegram_token_refs(&profile), vec!["telegram.botToken.bot", "telegram.botToken"]);
    }
}
