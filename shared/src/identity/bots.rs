//! Bot identity and webhook use cases (spec §4 with W-1, W-8, W-9), and the helpers the other
//! identity use cases share.

use super::model::*;
use super::rules;
use crate::adapters::dynamo::Store;
use crate::adapters::dynamo::identity::BotClaim;
use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::queue::rules::validate_agent_key;
use crate::secrets::SecretValue;
use crate::telegram::rules::secret_token_from;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A Telegram id or bot identity from input: trimmed, 1..=64 characters of digits, `-` or
/// letters (the demo bot identity `telegram-bot-default` included).
pub fn check_id(field: &str, v: &str) -> AppResult<String> {
    let v = v.trim();
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(AppError::validation(format!("{field} must be 1 to 64 letters, digits, '-' or '_'")));
    }
    Ok(v.to_string())
}

pub(crate) fn random_bytes<const N: usize>() -> AppResult<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| AppError::internal(format!("operating system randomness: {e}")))?;
    Ok(b)
}

fn sha256_hex(v: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(v.as_bytes()))
}

/// The hook key of a webhook secret.
pub fn hook_hash(secret: &str) -> String {
    sha256_hex(secret)
}

pub(crate) async fn profile(store: &Store, agent_key: &str) -> AppResult<crate::agents::model::AgentProfile> {
    validate_agent_key(agent_key)?;
    store
        .get_agent(agent_key)
        .await?
        .ok_or_else(|| AppError::not_found(format!("Agent profile '{agent_key}' not found")))
}

/// The agent's bot record, when the agent has a bot and the bot is the agent's.
pub(crate) async fn agent_bot(store: &Store, p: &crate::agents::model::AgentProfile) -> AppResult<Option<BotRecord>> {
    let Some(bot) = p.bot_identity.as_deref() else { return Ok(None) };
    Ok(store.get_bot(bot).await?.filter(|r| r.agent_key == p.agent_key))
}

// ---------- bot identity and webhook ----------

/// `importTelegramTokenForAgent`: verify with getMe, store under the agent's own ref, claim the bot
/// for the agent (unique), flag the bindings of a previous bot.
pub async fn import_token(
    app: &App,
    agent_key: &str,
    token: &SecretValue,
    metadata: &BTreeMap<String, String>,
) -> AppResult<Value> {
    let p = profile(&app.store, agent_key).await?;
    let t = token.expose().trim();
    if !rules::is_bot_token_shaped(t) {
        return Err(AppError::validation(
            "plaintextValue is not a Telegram bot token: <bot id>:<secret> as @BotFather gives it",
        ));
    }
    let token = SecretValue::new(t);
    let info = app.telegram.get_me(&token).await?;
    claim(app, &p, &info, Some((&token, metadata))).await
}

/// Claim `info`'s bot for the profile's agent; with a token, store it first.
async fn claim(
    app: &App,
    p: &crate::agents::model::AgentProfile,
    info: &crate::telegram::model::BotInfo,
    token: Option<(&SecretValue, &BTreeMap<String, String>)>,
) -> AppResult<Value> {
    let bot = check_id("botIdentity", &info.bot_identity)?;
    let existing = app.store.get_bot(&bot).await?;
    if let Some(r) = existing.as_ref().filter(|r| r.agent_key != p.agent_key) {
        return Err(AppError::conflict(format!(
            "Telegram bot identity '{bot}' is already assigned to agent '{}'",
            r.agent_key
        )));
    }
    let token_ref = rules::token_ref(&p.agent_key);
    let previous = match p.bot_identity.as_deref().filter(|b| *b != bot) {
        Some(prev) => app.store.get_bot(prev).await?.filter(|r| r.agent_key == p.agent_key),
        None => None,
    };
    let mut version = None;
    // The token the agent's ref held before: put back if the claim below fails, so the ref never
    // holds a bot the agent does not own (the secret store and the table share no transaction).
    let mut restore = None;
    if let Some((t, md)) = token {
        let mut meta = md.clone();
        meta.insert("telegramBotId".into(), bot.clone());
        if let Some(u) = &info.telegram_username {
            meta.insert("telegramUsername".into(), u.clone());
        }
        let before = app.secrets.backend().get(&token_ref).await?;
        version = crate::secrets::ops::import_secret(&app.secrets, &token_ref, t, &meta).await?.version;
        restore = Some(before);
    }
    let now = app.now();
    let record = BotRecord {
        bot_identity: bot.clone(),
        agent_key: p.agent_key.clone(),
        telegram_username: info.telegram_username.clone(),
        token_ref: token_ref.clone(),
        webhook_url: existing.as_ref().and_then(|r| r.webhook_url.clone()),
        webhook_configured_at: existing.as_ref().and_then(|r| r.webhook_configured_at),
        webhook_secret_hash: existing.as_ref().and_then(|r| r.webhook_secret_hash.clone()),
        updated_at: now,
    };
    let refs = rules::refs_with_token(&p.secrets_ref, &token_ref);
    let claimed = app
        .store
        .claim_bot(BotClaim {
            record: &record,
            profile_seen: p.updated_at,
            secrets_ref: &refs,
            previous: previous.as_ref(),
        })
        .await;
    if let Err(e) = claimed {
        if let Some(before) = restore {
            restore_token(app, &token_ref, before).await;
        }
        return Err(e);
    }
    let changed = p.bot_identity.as_deref().is_some_and(|b| b != bot);
    let (flagged, expired) = match p.bot_identity.as_deref().filter(|_| changed) {
        Some(prev) => {
            (app.store.flag_bot_bindings(prev, "bot_changed").await?, app.store.expire_bot_pairings(prev).await?)
        }
        None => (0, 0),
    };
    tracing::info!(agent_key = %p.agent_key, bot_identity = %bot, changed, flagged, expired, "telegram bot claimed");
    Ok(json!({
        "agentKey": p.agent_key,
        "secretRef": token_ref,
        "version": version,
        "botIdentity": bot,
        "telegramUsername": info.telegram_username,
        "previousBotIdentity": if changed { p.bot_identity.clone() } else { None },
        "flaggedBindings": flagged,
        "expiredPairings": expired,
    }))
}

/// Put back the value `token_ref` held before a token import whose bot claim failed (or remove
/// the ref when it held none). A failure here is logged (never the value) and the claim's error
/// is what the caller sees.
async fn restore_token(app: &App, token_ref: &str, before: Option<SecretValue>) {
    let res = match &before {
        Some(v) => {
            let meta = BTreeMap::from([("restoredBy".to_string(), "importTelegramTokenForAgent".to_string())]);
            crate::secrets::ops::import_secret(&app.secrets, token_ref, v, &meta).await.map(|_| ())
        }
        None => crate::secrets::ops::delete_secret(&app.secrets, token_ref).await.map(|_| ()),
    };
    match res {
        Ok(()) => tracing::warn!(token_ref, "bot claim failed: the agent's previous token was put back"),
        Err(e) => {
            tracing::error!(token_ref, error = %e, "bot claim failed and the previous token could not be put back")
        }
    }
}

/// The agent's token, or why there is none.
async fn agent_token(app: &App, agent_key: &str) -> AppResult<SecretValue> {
    let r = rules::token_ref(agent_key);
    app.secrets.get(&r).await?.ok_or_else(|| {
        AppError::validation(format!(
            "Missing Telegram token. Import an active '{r}' secret first (importTelegramTokenForAgent)."
        ))
    })
}

/// `configureTelegramWebhook`: a new random secret, setWebhook, verified with getWebhookInfo;
/// only then the secret is stored and the bot's webhook state recorded (the old secret stops
/// working).
pub async fn configure_webhook(app: &App, agent_key: &str, base: Option<&str>) -> AppResult<Value> {
    let p = profile(&app.store, agent_key).await?;
    let Some(bot) = p.bot_identity.clone() else {
        return Err(AppError::validation(format!(
            "Agent '{agent_key}' is missing botIdentity. Import and verify the Telegram token first."
        )));
    };
    let Some(rec) = agent_bot(&app.store, &p).await? else {
        return Err(AppError::conflict(format!(
            "Telegram bot '{bot}' is not claimed by agent '{agent_key}'; import its token again"
        )));
    };
    let url = rules::webhook_url(base.or(app.public_base_url.as_deref()).unwrap_or(""))?;
    let token = agent_token(app, agent_key).await?;
    let me = app.telegram.get_me(&token).await?;
    if me.bot_identity != bot {
        return Err(AppError::conflict(format!(
            "the stored token belongs to bot '{}', not to the agent's bot '{bot}'; run importTelegramTokenForAgent",
            me.bot_identity
        )));
    }
    let secret = SecretValue::new(secret_token_from(&random_bytes::<48>()?));
    let allowed = crate::telegram::rules::ALLOWED_UPDATES;
    app.telegram.set_webhook(&token, &url, &secret, allowed).await?;
    let info = app.telegram.get_webhook_info(&token).await?;
    if info.current_url.as_deref() != Some(url.as_str()) {
        return Err(AppError::Provider(format!(
            "Telegram reports the webhook URL {:?} after setWebhook to {url}",
            info.current_url
        )));
    }
    let secret_ref = rules::webhook_secret_ref(&bot);
    let md = BTreeMap::from([("telegramBotId".to_string(), bot.clone())]);
    crate::secrets::ops::import_secret(&app.secrets, &secret_ref, &secret, &md).await?;
    let hash = hook_hash(secret.expose());
    let old = rec.webhook_secret_hash.clone();
    let now = app.now();
    let updated = BotRecord {
        webhook_url: Some(url.clone()),
        webhook_configured_at: Some(now),
        webhook_secret_hash: Some(hash),
        updated_at: now,
        telegram_username: me.telegram_username.clone().or(rec.telegram_username.clone()),
        ..rec
    };
    let hook = WebhookHook {
        bot_identity: bot.clone(),
        agent_key: agent_key.to_string(),
        secret_ref,
        token_ref: updated.token_ref.clone(),
    };
    app.store.set_webhook_state(&updated, &hook, old.as_deref()).await?;
    tracing::info!(agent_key, bot_identity = %bot, rotated = old.is_some(), "telegram webhook configured");
    Ok(json!({
        "ok": true,
        "agentKey": agent_key,
        "botIdentity": bot,
        "webhookUrl": url,
        "currentUrl": info.current_url,
        "allowedUpdates": allowed,
        "pendingUpdateCount": info.pending_update_count,
        "lastErrorMessage": info.last_error_message,
        "lastErrorDate": info.last_error_date,
        "secretRotated": old.is_some(),
        "isReady": true,
        "description": "Telegram webhook configured and verified.",
    }))
}

/// `reconcileTelegramBotIdentityForAgent`: ask Telegram whose token the agent holds and claim
/// that bot (flagging the old bot's bindings when it changed).
pub async fn reconcile_bot(app: &App, agent_key: &str) -> AppResult<Value> {
    let p = profile(&app.store, agent_key).await?;
    let token = agent_token(app, agent_key).await?;
    let info = app.telegram.get_me(&token).await?;
    claim(app, &p, &info, None).await
}

pub(crate) fn webhook_ready(app: &App, rec: &BotRecord) -> bool {
    let expected = app.public_base_url.as_deref().and_then(|b| rules::webhook_url(b).ok());
    rec.webhook_secret_hash.is_some()
        && rec.webhook_url.is_some()
        && expected.is_none_or(|e| rec.webhook_url.as_deref() == Some(e.as_str()))
}

/// `getWebhookReadiness`: what Telegram reports now, against what we configured.
pub async fn webhook_readiness(app: &App, agent_key: &str) -> AppResult<Value> {
    let p = profile(&app.store, agent_key).await?;
    let r = rules::token_ref(agent_key);
    let rec = agent_bot(&app.store, &p).await?;
    let Some(token) = app.secrets.get(&r).await? else {
        return Ok(json!({"agentKey": agent_key, "secretRef": null, "currentUrl": null, "expectedUrl": null,
            "pendingUpdateCount": 0, "lastErrorMessage": null, "lastErrorDate": null, "webhookReady": false}));
    };
    let info = app.telegram.get_webhook_info(&token).await?;
    let expected = rec.as_ref().filter(|r| webhook_ready(app, r)).and_then(|r| r.webhook_url.clone());
    let ready = expected.is_some() && info.current_url == expected;
    Ok(json!({
        "agentKey": agent_key,
        "secretRef": r,
        "botIdentity": p.bot_identity,
        "currentUrl": info.current_url,
        "expectedUrl": expected,
        "pendingUpdateCount": info.pending_update_count,
        "lastErrorMessage": info.last_error_message,
        "lastErrorDate": info.last_error_date,
        "webhookReady": ready,
    }))
}
