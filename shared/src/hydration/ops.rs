//! `getHydrationBundleForClaimedJob` (spec §6.3): everything a worker needs to run the job it
//! holds. Served only to the worker holding the message's live lease; anyone else gets 403 and
//! no profile, history or secret is read.

use super::model::*;
use super::rules::{candidates, telegram_token_refs};
use crate::agents::model::BridgeConfig;
use crate::app::App;
use crate::blob::media_key;
use crate::error::{AppError, AppResult};
use crate::ids::MessageRef;
use crate::queue::model::AttachmentStatus;
use crate::queue::rules;
use crate::secrets::Secrets;
use crate::workers::auth::Claimed;

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
    let (row, msg, conv) = store.job_context(claimed.worker_id(), &mref).await?;
    let p = claimed.verify(row.as_ref())?;
    let now = store.now();
    app.auth.remember(&p, now, store.policy.workers.auth_cache_ms);
    let msg = msg.ok_or_else(|| AppError::not_found(format!("message {} does not exist", mref.id())))?;
    rules::check_holder(&msg, &p.worker_id, a.lease_id.as_deref(), now)?;
    // From here on the caller is the lease holder.
    let conv = conv.ok_or_else(|| AppError::internal(format!("conversation '{}' is missing", msg.conversation_id)))?;
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
