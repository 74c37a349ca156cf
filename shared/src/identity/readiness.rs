//! Onboarding state, readiness, required secret refs and the soft reset of legacy bindings
//! (spec §6.5, §10 with W-5).

use super::bots::{agent_bot, webhook_ready};
use super::model::*;
use super::pairing::deep_link;
use super::rules;
use crate::app::App;
use crate::error::AppResult;
use crate::queue::rules::validate_agent_key;
use serde_json::{Value, json};
use std::collections::BTreeMap;

// ---------- onboarding and readiness ----------

struct AgentFacts {
    profile: Option<crate::agents::model::AgentProfile>,
    bot: Option<BotRecord>,
    token_ref: String,
    token_imported: bool,
    webhook_ready: bool,
}

async fn facts(app: &App, agent_key: &str) -> AppResult<AgentFacts> {
    validate_agent_key(agent_key)?;
    let profile = app.store.get_agent(agent_key).await?;
    let bot = match &profile {
        Some(p) => agent_bot(&app.store, p).await?,
        None => None,
    };
    let token_ref = rules::token_ref(agent_key);
    let token_imported = app.secrets.backend().info(&token_ref).await?.has_active;
    let webhook_ready = bot.as_ref().is_some_and(|b| webhook_ready(app, b));
    Ok(AgentFacts { profile, bot, token_ref, token_imported, webhook_ready })
}

/// `getUserAgentOnboardingState` (W-5): token verified, webhook confirmed, pairing state.
pub async fn onboarding_state(app: &App, user: &ConsumerUserId, agent_key: &str) -> AppResult<Value> {
    let f = facts(app, agent_key).await?;
    let now = app.now();
    let binding = app.store.get_binding(user.as_str()).await?.filter(|b| b.agent_key == agent_key);
    let bound = binding.as_ref().is_some_and(|b| b.flag.is_none() && b.telegram_user_id.is_some());
    let latest = app.store.get_user_pairing(user.as_str(), agent_key).await?;
    let pairing_status =
        if bound { Some(PairingStatus::Used) } else { latest.as_ref().map(|c| rules::derived_status(c, now)) };
    let pending = pairing_status == Some(PairingStatus::Pending);
    let code = latest.as_ref().filter(|_| pending).map(|c| c.code.clone());
    let username = f.bot.as_ref().and_then(|b| b.telegram_username.clone());
    let token_verified = f.token_imported && f.bot.is_some();
    Ok(json!({
        "agentKey": agent_key,
        "botIdentity": f.profile.as_ref().and_then(|p| p.bot_identity.clone()),
        "telegramUsername": username,
        "tokenSecretRef": f.token_ref,
        "tokenImported": f.token_imported,
        "tokenVerified": token_verified,
        "webhookReady": f.webhook_ready,
        "webhookUrl": f.bot.as_ref().and_then(|b| b.webhook_url.clone()),
        "pairingStatus": pairing_status,
        "pairingCode": code,
        "pairingDeepLink": match (&username, &code) { (Some(u), Some(c)) => Some(deep_link(u, c)), _ => None },
        "bindingStatus": binding.as_ref().map(|b| if b.flag.is_some() { "flagged" } else { "active" }),
        "nextAction": rules::next_action(token_verified, f.webhook_ready, bound, pending),
    }))
}

/// `getTelegramAgentReadiness` / `getAgentOperationalReadiness`: missing secrets checked against
/// the real fallback (a per-agent bridge ref is present when its global ref is), and the
/// Telegram facts.
pub async fn agent_readiness(app: &App, user: &ConsumerUserId, agent_key: &str) -> AppResult<Value> {
    let f = facts(app, agent_key).await?;
    let mut missing = Vec::new();
    if let Some(p) = &f.profile {
        for r in crate::secrets::ops::hydration_refs(p) {
            if crate::secrets::validate_ref(&r).is_ok() && app.secrets.backend().info(&r).await?.has_active {
                continue;
            }
            let global = r.strip_suffix(&format!(".{agent_key}")).filter(|g| g.starts_with("agent-bridge."));
            if let Some(g) = global
                && app.secrets.backend().info(g).await?.has_active
            {
                continue;
            }
            // A global bridge ref is only a fallback: its absence is not a gap when the agent's own is set.
            let own = format!("{r}.{agent_key}");
            if r.starts_with("agent-bridge.")
                && !r.ends_with(&format!(".{agent_key}"))
                && crate::secrets::validate_ref(&own).is_ok()
                && app.secrets.backend().info(&own).await?.has_active
            {
                continue;
            }
            if !missing.contains(&r) {
                missing.push(r);
            }
        }
    }
    let bot_identity = f.profile.as_ref().and_then(|p| p.bot_identity.clone());
    let mut issues = Vec::new();
    if f.profile.is_none() {
        issues.push("missing_agent_profile");
    }
    if !f.token_imported {
        issues.push("missing_telegram_token");
    }
    if bot_identity.is_none() || f.bot.is_none() {
        issues.push("missing_bot_identity");
    }
    if !f.webhook_ready {
        issues.push("webhook_not_verified");
    }
    if f.profile.as_ref().is_some_and(|p| !p.enabled) {
        issues.push("agent_disabled");
    }
    let binding = app.store.get_binding(user.as_str()).await?.filter(|b| b.agent_key == agent_key);
    Ok(json!({
        "agentKey": agent_key,
        "missingSecrets": missing,
        "hasTelegramToken": f.token_imported,
        "botIdentity": bot_identity,
        "webhookReady": f.webhook_ready,
        "bindingActive": binding.as_ref().is_some_and(|b| b.flag.is_none()),
        "issues": issues,
        "ready": issues.is_empty() && missing.is_empty(),
    }))
}

/// Most profiles the deployment-wide `getRequiredSecretRefs` reads (spec §10.5).
pub const MAX_PROFILES_SCANNED: usize = 200;

/// `getRequiredSecretRefs`: the agent's refs (with the bridge fallbacks hydration reads); without
/// an agent, the sorted union over up to 200 enabled profiles.
pub async fn required_secret_refs(app: &App, agent_key: Option<&str>) -> AppResult<Value> {
    let Some(k) = agent_key else {
        let mut refs = std::collections::BTreeSet::new();
        for p in app.store.scan_enabled_profiles(MAX_PROFILES_SCANNED).await? {
            refs.extend(crate::secrets::ops::hydration_refs(&p));
        }
        return Ok(json!({ "agentKey": null, "secretRefs": refs }));
    };
    validate_agent_key(k)?;
    let refs = match app.store.get_agent(k).await? {
        Some(p) => crate::secrets::ops::hydration_refs(&p),
        None => Vec::new(),
    };
    Ok(json!({ "agentKey": k, "secretRefs": refs }))
}

/// `softResetTelegramBindingsMissingBotIdentity` (migration helper for data brought over from
/// the original): Telegram-paired bindings without a bot identity are annotated
/// (`softResetReason`, `softResetAt`, `softResetMode`) and, when active, revoked; pending codes
/// without a bot identity are expired; profiles without one are counted. Full scans of the
/// control table: an operator op, run once after a migration.
pub async fn soft_reset(app: &App, revoke_active: bool, expire_pending: bool) -> AppResult<Value> {
    let now = app.now();
    let (mut revoked, mut annotated, mut expired) = (0u32, 0u32, 0u32);
    let legacy = app.store.scan_legacy_bindings().await?;
    let legacy_count = legacy.iter().filter(|l| !l.pointer).count();
    let md = BTreeMap::from([
        ("softResetReason".to_string(), "missing_bot_identity".to_string()),
        ("softResetAt".to_string(), now.to_string()),
        ("softResetMode".to_string(), "telegram_bot_identity_v1".to_string()),
    ]);
    for l in legacy {
        let b = l.binding;
        let mut m = b.metadata.clone().unwrap_or_default();
        m.append(&mut md.clone());
        if l.pointer {
            app.store.annotate_legacy_binding(&b, true, &m).await?;
            if revoke_active {
                app.store.annotate_legacy_binding(&b, false, &m).await?;
                let b = Binding { metadata: Some(m), ..b };
                match app.store.revoke_binding(&b, now).await {
                    Ok(()) => revoked += 1,
                    Err(e) => return Err(e.into_app("revoking a legacy binding")),
                }
            } else {
                annotated += 1;
            }
        } else if !(revoke_active && b.status == BindingStatus::Active)
            && app.store.annotate_legacy_binding(&b, false, &m).await?
            && b.status != BindingStatus::Active
        {
            annotated += 1;
        }
    }
    let codes = app.store.scan_pending_codes_without_bot().await?;
    if expire_pending {
        for code in &codes {
            if app.store.expire_pairing(code).await? {
                expired += 1;
            }
        }
    }
    let profiles = app.store.count_profiles_without_bot().await?;
    tracing::info!(revoked, annotated, expired, "soft reset of bindings without a bot identity");
    Ok(json!({
        "revokedBindings": revoked,
        "annotatedBindings": annotated,
        "expiredPairings": expired,
        "pendingPairingsMissingBotIdentity": codes.len(),
        "legacyBindingsMissingBotIdentity": legacy_count,
        "profilesMissingBotIdentity": profiles,
    }))
}

/// `getProviderOperationalReadiness`: whether the worker pool can run — a stored provider config
/// (and, for `fly`, an active `fly.apiToken`), a message runtime config — and how `api` learns
/// its users (`userToken` or `trustedBackend`).
pub async fn provider_readiness(app: &App) -> AppResult<Value> {
    use crate::adapters::dynamo::reconcile::Stored;
    let provider = app
        .store
        .get_versioned::<crate::reconcile::model::ProviderRuntimeConfig>(Stored::ProviderConfig)
        .await?
        .map(|v| v.value);
    let message = app.store.message_config().await?;
    let mut issues = Vec::new();
    if provider.is_none() {
        issues.push("missing_provider_runtime_config");
    }
    if message.is_none() {
        issues.push("missing_message_runtime_config");
    }
    if provider.as_ref().is_some_and(|p| p.kind == "fly")
        && !app.secrets.backend().info(crate::adapters::fly::TOKEN_REF).await?.has_active
    {
        issues.push("missing_fly_token");
    }
    Ok(json!({
        "providerRuntimeConfigPresent": provider.is_some(),
        "providerKind": provider.map(|p| p.kind),
        "workerRuntimeConfigPresent": message.is_some(),
        "userAuthMode": app.store.policy.access.mode(),
        "issues": issues,
    }))
}
