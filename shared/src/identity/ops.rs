//! Identity use cases and their op tables. `USER_TABLE` holds the ops that act for one end user
//! (each takes a [`ConsumerUserId`], which the `api` function will take from a verified token);
//! `ADMIN_TABLE` the operator ops (bot tokens, webhooks, bindings by hand, pairing by hand).

use super::model::*;
use super::rules;
use crate::adapters::dynamo::identity::BotClaim;
use crate::adapters::dynamo::{Store, TxError, conflict_pause};
use crate::app::App;
use crate::envelope::OpTable;
use crate::error::{AppError, AppResult};
use crate::op;
use crate::queue::rules::validate_agent_key;
use crate::secrets::SecretValue;
use crate::telegram::rules::secret_token_from;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

// ---------- args ----------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportTokenArgs {
    agent_key: String,
    #[serde(deserialize_with = "token")]
    plaintext_value: SecretValue,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

fn token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(SecretValue::new(s)),
        _ => Err(serde::de::Error::custom("plaintextValue must be a string")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigureWebhookArgs {
    agent_key: String,
    #[serde(default)]
    public_base_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentArgs {
    agent_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionalAgentArgs {
    #[serde(default)]
    agent_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAgentArgs {
    consumer_user_id: ConsumerUserId,
    agent_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePairingArgs {
    consumer_user_id: ConsumerUserId,
    agent_key: String,
    #[serde(default)]
    ttl_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserArgs {
    consumer_user_id: ConsumerUserId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserCodeArgs {
    consumer_user_id: ConsumerUserId,
    code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumeArgs {
    code: String,
    bot_identity: String,
    telegram_user_id: String,
    telegram_chat_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindArgs {
    consumer_user_id: ConsumerUserId,
    agent_key: String,
    #[serde(default)]
    bot_identity: Option<String>,
    #[serde(default)]
    source: Option<BindingSource>,
    #[serde(default)]
    telegram_user_id: Option<String>,
    #[serde(default)]
    telegram_chat_id: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveTelegramArgs {
    bot_identity: String,
    #[serde(default)]
    telegram_user_id: Option<String>,
    #[serde(default)]
    telegram_chat_id: Option<String>,
}

// ---------- tables ----------

/// Ops that act for one end user.
pub const USER_TABLE: OpTable<App> = OpTable {
    domain: "identity",
    ops: &[
        op!(App, "createPairingCode", |app, a: CreatePairingArgs| create_pairing(
            app,
            &a.consumer_user_id,
            &a.agent_key,
            a.ttl_ms
        )
        .await?),
        op!(App, "createUserAgentPairing", |app, a: CreatePairingArgs| {
            let (pairing, deep_link) =
                create_user_agent_pairing(app, &a.consumer_user_id, &a.agent_key, a.ttl_ms).await?;
            json!({ "pairing": crate::envelope::to_json(pairing)?, "deepLink": deep_link })
        }),
        op!(App, "getPairingCodeStatus", |app, a: UserCodeArgs| pairing_code_status(app, &a.consumer_user_id, &a.code)
            .await?),
        op!(App, "getUserAgentPairingStatus", |app, a: UserAgentArgs| user_agent_pairing_status(
            app,
            &a.consumer_user_id,
            &a.agent_key
        )
        .await?),
        op!(App, "revokeUserAgentBinding", |app, a: UserArgs| revoke(app, &a.consumer_user_id).await?),
        op!(App, "resolveAgentForUser", |app, a: UserArgs| {
            let b = active_binding(&app.store, &a.consumer_user_id).await?;
            json!({ "consumerUserId": a.consumer_user_id, "agentKey": b.map(|b| b.agent_key) })
        }),
        op!(App, "getUserAgentBinding", |app, a: UserArgs| active_binding(&app.store, &a.consumer_user_id).await?),
        op!(App, "getUserAgentOnboardingState", |app, a: UserAgentArgs| onboarding_state(
            app,
            &a.consumer_user_id,
            &a.agent_key
        )
        .await?),
        op!(App, "getTelegramAgentReadiness", |app, a: UserAgentArgs| agent_readiness(
            app,
            &a.consumer_user_id,
            &a.agent_key
        )
        .await?),
        op!(App, "getAgentOperationalReadiness", |app, a: UserAgentArgs| agent_readiness(
            app,
            &a.consumer_user_id,
            &a.agent_key
        )
        .await?),
    ],
};

/// Operator ops.
pub const ADMIN_TABLE: OpTable<App> = OpTable {
    domain: "identity-admin",
    ops: &[
        op!(App, "importTelegramTokenForAgent", |app, a: ImportTokenArgs| import_token(
            app,
            &a.agent_key,
            &a.plaintext_value,
            &a.metadata.unwrap_or_default()
        )
        .await?),
        op!(App, "configureTelegramWebhook", |app, a: ConfigureWebhookArgs| configure_webhook(
            app,
            &a.agent_key,
            a.public_base_url.as_deref()
        )
        .await?),
        op!(App, "reconcileTelegramBotIdentityForAgent", |app, a: AgentArgs| reconcile_bot(app, &a.agent_key).await?),
        op!(App, "getWebhookReadiness", |app, a: AgentArgs| webhook_readiness(app, &a.agent_key).await?),
        op!(App, "bindUserAgent", |app, a: BindArgs| bind_by_hand(app, a).await?),
        op!(App, "consumePairingCode", |app, a: ConsumeArgs| {
            let tg = TelegramIds {
                bot: check_id("botIdentity", &a.bot_identity)?,
                user: check_id("telegramUserId", &a.telegram_user_id)?,
                chat: check_id("telegramChatId", &a.telegram_chat_id)?,
                group: false,
                metadata: None,
            };
            consume_code(app, &a.code, &tg).await?
        }),
        op!(App, "resolveAgentForTelegram", |app, a: ResolveTelegramArgs| {
            let bot = check_id("botIdentity", &a.bot_identity)?;
            let user = a.telegram_user_id.as_deref().map(|u| check_id("telegramUserId", u)).transpose()?;
            let chat = a.telegram_chat_id.as_deref().map(|c| check_id("telegramChatId", c)).transpose()?;
            let t = resolve_for_telegram(&app.store, &bot, user.as_deref(), chat.as_deref(), true).await?;
            json!({
                "consumerUserId": t.as_ref().map(|t| &t.consumer_user_id),
                "agentKey": t.as_ref().map(|t| &t.agent_key),
                "conversationId": t.as_ref().map(|t| &t.conversation_id),
            })
        }),
        op!(App, "getRequiredSecretRefs", |app, a: OptionalAgentArgs| required_secret_refs(
            app,
            a.agent_key.as_deref()
        )
        .await?),
    ],
};

/// A Telegram id or bot identity from input: trimmed, 1..=64 characters of digits, `-` or
/// letters (the demo bot identity `telegram-bot-default` included).
pub fn check_id(field: &str, v: &str) -> AppResult<String> {
    let v = v.trim();
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(AppError::validation(format!("{field} must be 1 to 64 letters, digits, '-' or '_'")));
    }
    Ok(v.to_string())
}

fn random_bytes<const N: usize>() -> AppResult<[u8; N]> {
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

async fn profile(store: &Store, agent_key: &str) -> AppResult<crate::agents::model::AgentProfile> {
    validate_agent_key(agent_key)?;
    store
        .get_agent(agent_key)
        .await?
        .ok_or_else(|| AppError::not_found(format!("Agent profile '{agent_key}' not found")))
}

/// The agent's bot record, when the agent has a bot and the bot is the agent's.
async fn agent_bot(store: &Store, p: &crate::agents::model::AgentProfile) -> AppResult<Option<BotRecord>> {
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
    if t.is_empty() || t.len() > 256 || t.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(AppError::validation("Telegram token is required: one line, as @BotFather gives it"));
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
    let mut version = None;
    if let Some((t, md)) = token {
        let mut meta = md.clone();
        meta.insert("telegramBotId".into(), bot.clone());
        if let Some(u) = &info.telegram_username {
            meta.insert("telegramUsername".into(), u.clone());
        }
        version = crate::secrets::ops::import_secret(&app.secrets, &token_ref, t, &meta).await?.version;
    }
    let previous = match p.bot_identity.as_deref().filter(|b| *b != bot) {
        Some(prev) => app.store.get_bot(prev).await?.filter(|r| r.agent_key == p.agent_key),
        None => None,
    };
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
    app.store
        .claim_bot(BotClaim {
            record: &record,
            profile_seen: p.updated_at,
            secrets_ref: &refs,
            previous: previous.as_ref(),
        })
        .await?;
    let changed = p.bot_identity.as_deref().is_some_and(|b| b != bot);
    let flagged = match p.bot_identity.as_deref().filter(|_| changed) {
        Some(prev) => app.store.flag_bot_bindings(prev, "bot_changed").await?,
        None => 0,
    };
    tracing::info!(agent_key = %p.agent_key, bot_identity = %bot, changed, flagged, "telegram bot claimed");
    Ok(json!({
        "agentKey": p.agent_key,
        "secretRef": token_ref,
        "version": version,
        "botIdentity": bot,
        "telegramUsername": info.telegram_username,
        "previousBotIdentity": if changed { p.bot_identity.clone() } else { None },
        "flaggedBindings": flagged,
    }))
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

fn webhook_ready(app: &App, rec: &BotRecord) -> bool {
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

// ---------- pairing ----------

/// `createPairingCode`: a fresh code for (user, agent); the user's previous one for this agent
/// stops working.
pub async fn create_pairing(
    app: &App,
    user: &ConsumerUserId,
    agent_key: &str,
    ttl_ms: Option<i64>,
) -> AppResult<PairingView> {
    validate_agent_key(agent_key)?;
    let p = app
        .store
        .get_agent(agent_key)
        .await?
        .filter(|p| p.enabled)
        .ok_or_else(|| AppError::not_found(format!("Agent profile '{agent_key}' not found or disabled")))?;
    let Some(bot) = p.bot_identity.clone().filter(|b| !b.trim().is_empty()) else {
        return Err(AppError::validation(format!(
            "Agent '{agent_key}' is missing botIdentity. Import and verify the Telegram token first."
        )));
    };
    let ttl = rules::clamp_ttl(ttl_ms);
    if let Some(prev) = app.store.get_user_pairing(user.as_str(), agent_key).await?
        && prev.status == PairingStatus::Pending
    {
        app.store.expire_pairing(&prev.code).await?;
    }
    for _ in 0..5 {
        let now = app.now();
        let code = PairingCode {
            code: rules::code_from(&random_bytes::<{ rules::CODE_LEN }>()?),
            consumer_user_id: user.as_str().to_string(),
            agent_key: agent_key.to_string(),
            bot_identity: bot.clone(),
            status: PairingStatus::Pending,
            created_at: now,
            expires_at: now + ttl,
            used_at: None,
            telegram_user_id: None,
            telegram_chat_id: None,
        };
        // Kept a day past expiry so its status can still be read, then DynamoDB's TTL drops it.
        if app.store.put_pairing(&code, code.expires_at + 86_400_000).await? {
            return Ok(rules::view(&code, now));
        }
    }
    Err(AppError::internal("Failed to generate unique pairing code"))
}

/// `createUserAgentPairing`: the code and the deep link with the bot's real username.
pub async fn create_user_agent_pairing(
    app: &App,
    user: &ConsumerUserId,
    agent_key: &str,
    ttl_ms: Option<i64>,
) -> AppResult<(PairingView, Option<String>)> {
    let v = create_pairing(app, user, agent_key, ttl_ms).await?;
    let link =
        app.store.get_bot(&v.bot_identity).await?.and_then(|r| r.telegram_username).map(|u| deep_link(&u, &v.code));
    Ok((v, link))
}

pub fn deep_link(username: &str, code: &str) -> String {
    format!("https://t.me/{username}?start={code}")
}

/// `getPairingCodeStatus`: only the code's own user sees it.
pub async fn pairing_code_status(app: &App, user: &ConsumerUserId, code: &str) -> AppResult<Option<PairingView>> {
    let Some(c) = rules::normalize_code(code) else { return Ok(None) };
    let now = app.now();
    Ok(app.store.get_pairing(&c).await?.filter(|p| p.consumer_user_id == user.as_str()).map(|p| rules::view(&p, now)))
}

pub async fn user_agent_pairing_status(
    app: &App,
    user: &ConsumerUserId,
    agent_key: &str,
) -> AppResult<Option<PairingView>> {
    validate_agent_key(agent_key)?;
    let now = app.now();
    Ok(app.store.get_user_pairing(user.as_str(), agent_key).await?.map(|p| rules::view(&p, now)))
}

/// The Telegram side of a pairing or binding.
#[derive(Debug, Clone)]
pub struct TelegramIds {
    pub bot: String,
    pub user: String,
    pub chat: String,
    /// Paired from a group chat: the chat routes to the binding for every member.
    pub group: bool,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `consumePairingCode`: single use by a conditional write, bound in the same transaction.
pub async fn consume_code(app: &App, input: &str, tg: &TelegramIds) -> AppResult<PairingView> {
    let refuse = |r: rules::ConsumeRefusal| Err(r.into_error());
    let Some(code) = rules::normalize_code(input) else { return refuse(rules::ConsumeRefusal::NotFound) };
    for attempt in 0..5 {
        let now = app.now();
        let stored = app.store.get_pairing(&code).await?;
        if let Err(r) = rules::check_consume(stored.as_ref(), &tg.bot, now) {
            if r == rules::ConsumeRefusal::Expired {
                app.store.expire_pairing(&code).await?;
            }
            return refuse(r);
        }
        let Some(stored) = stored else { return refuse(rules::ConsumeRefusal::NotFound) };
        let input = BindInput {
            user: stored.consumer_user_id.clone(),
            agent_key: stored.agent_key.clone(),
            bot_identity: Some(tg.bot.clone()),
            source: BindingSource::TelegramPairing,
            telegram_user_id: Some(tg.user.clone()),
            telegram_chat_id: Some(tg.chat.clone()),
            group_paired: tg.group,
            metadata: tg.metadata.clone(),
        };
        let extra = app.store.consume_item(&stored, &tg.bot, &tg.user, &tg.chat, now);
        match bind_once(app, &input, vec![extra]).await {
            Ok(_) => {
                let used = PairingCode {
                    status: PairingStatus::Used,
                    used_at: Some(now),
                    telegram_user_id: Some(tg.user.clone()),
                    telegram_chat_id: Some(tg.chat.clone()),
                    ..stored
                };
                return Ok(rules::view(&used, now));
            }
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => {
                // The code changed under us (used or expired by another call): read it again.
                continue;
            }
            Err(TxError::Cancelled(_)) => conflict_pause(attempt).await,
            Err(TxError::Other(e)) => return Err(e),
        }
    }
    Err(AppError::conflict("the pairing code keeps changing; try again"))
}

// ---------- bindings ----------

struct BindInput {
    user: String,
    agent_key: String,
    bot_identity: Option<String>,
    source: BindingSource,
    telegram_user_id: Option<String>,
    telegram_chat_id: Option<String>,
    group_paired: bool,
    metadata: Option<BTreeMap<String, String>>,
}

/// One attempt at a bind (with `extra` writes in the same transaction), from fresh reads.
async fn bind_once(
    app: &App,
    i: &BindInput,
    extra: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
) -> Result<Binding, TxError> {
    let p = profile(&app.store, &i.agent_key).await.map_err(TxError::Other)?;
    let bot = match (&i.bot_identity, &p.bot_identity) {
        (Some(given), Some(own)) if given != own => {
            return Err(TxError::Other(AppError::validation(format!(
                "botIdentity '{given}' is not agent '{}''s bot ('{own}')",
                i.agent_key
            ))));
        }
        (Some(given), None) => {
            return Err(TxError::Other(AppError::validation(format!(
                "botIdentity '{given}' is not agent '{}''s bot (it has none)",
                i.agent_key
            ))));
        }
        (_, own) => own.clone(),
    };
    if bot.is_none() && (i.telegram_user_id.is_some() || i.telegram_chat_id.is_some()) {
        return Err(TxError::Other(AppError::validation(format!("Agent '{}' is missing botIdentity", i.agent_key))));
    }
    let now = app.now();
    let new = Binding {
        binding_id: crate::ids::ulid(now),
        consumer_user_id: i.user.clone(),
        agent_key: i.agent_key.clone(),
        conversation_id: rules::user_agent_conversation_id(&i.agent_key, &i.user),
        bot_identity: bot,
        status: BindingStatus::Active,
        source: i.source,
        telegram_user_id: i.telegram_user_id.clone(),
        telegram_chat_id: i.telegram_chat_id.clone(),
        group_paired: i.group_paired,
        metadata: i.metadata.clone(),
        bound_at: now,
        revoked_at: None,
        flag: None,
    };
    let own = app.store.get_binding(&i.user).await.map_err(TxError::Other)?;
    let mut holders = Vec::new();
    for g in rules::guards_of(&new) {
        let h = app.store.get_guard(&g).await.map_err(TxError::Other)?;
        holders.push((g, h));
    }
    let plan = rules::plan_bind(&new, own.as_ref(), &holders);
    app.store.apply_bind(&new, own.as_ref().map(|o| o.binding_id.as_str()), &plan, extra).await?;
    tracing::info!(agent_key = %new.agent_key, displaced = plan.revoke.len(), "binding made");
    Ok(new)
}

/// `bindUserAgent` (operator): one active binding per consumer, per (bot, Telegram user) and
/// per (bot, chat); the binding's bot must be the agent's.
async fn bind_by_hand(app: &App, a: BindArgs) -> AppResult<Binding> {
    let source = a.source.unwrap_or(BindingSource::Api);
    if source == BindingSource::TelegramPairing {
        return Err(AppError::validation("source 'telegram_pairing' is set by pairing only; use 'manual' or 'api'"));
    }
    if let Some(m) = &a.metadata {
        crate::secrets::ops::validate_metadata(m)?;
    }
    let input = BindInput {
        user: a.consumer_user_id.as_str().to_string(),
        agent_key: a.agent_key,
        bot_identity: a.bot_identity.as_deref().map(|b| check_id("botIdentity", b)).transpose()?,
        source,
        telegram_user_id: a.telegram_user_id.as_deref().map(|u| check_id("telegramUserId", u)).transpose()?,
        telegram_chat_id: a.telegram_chat_id.as_deref().map(|c| check_id("telegramChatId", c)).transpose()?,
        group_paired: false,
        metadata: a.metadata,
    };
    for attempt in 0..5 {
        match bind_once(app, &input, Vec::new()).await {
            Ok(b) => return Ok(b),
            Err(TxError::Cancelled(_)) => conflict_pause(attempt).await,
            Err(TxError::Other(e)) => return Err(e),
        }
    }
    Err(AppError::conflict("the bindings keep changing; try again"))
}

/// `revokeUserAgentBinding`: the user's active binding revoked, and their pending codes expired.
pub async fn revoke(app: &App, user: &ConsumerUserId) -> AppResult<Value> {
    let mut revoked = 0;
    for attempt in 0..5 {
        let Some(b) = app.store.get_binding(user.as_str()).await? else { break };
        match app.store.revoke_binding(&b, app.now()).await {
            Ok(()) => {
                revoked = 1;
                break;
            }
            Err(TxError::Cancelled(_)) => conflict_pause(attempt).await,
            Err(TxError::Other(e)) => return Err(e),
        }
    }
    let mut expired = 0;
    for code in app.store.user_pairing_codes(user.as_str()).await? {
        if app.store.expire_pairing(&code).await? {
            expired += 1;
        }
    }
    Ok(json!({ "revoked": revoked, "expiredPairings": expired }))
}

/// The user's active binding (a flagged one, whose bot changed, included: it says why).
pub async fn active_binding(store: &Store, user: &ConsumerUserId) -> AppResult<Option<Binding>> {
    store.get_binding(user.as_str()).await
}

/// Where a Telegram message goes by binding: (bot, user), then (bot, chat) when the chat is
/// private or was paired as a group (`any_chat`: the operator's lookup, which has no chat type).
pub async fn resolve_for_telegram(
    store: &Store,
    bot: &str,
    user: Option<&str>,
    chat: Option<&str>,
    any_chat: bool,
) -> AppResult<Option<crate::telegram::rules::BoundTarget>> {
    let target = |b: Binding| crate::telegram::rules::BoundTarget {
        consumer_user_id: b.consumer_user_id,
        agent_key: b.agent_key,
        conversation_id: b.conversation_id,
    };
    if let Some(u) = user
        && let Some(b) = store.get_guard(&rules::Guard::TgUser { bot: bot.into(), user: u.into() }).await?
        && b.flag.is_none()
    {
        return Ok(Some(target(b)));
    }
    if let Some(c) = chat
        && let Some(b) = store.get_guard(&rules::Guard::TgChat { bot: bot.into(), chat: c.into() }).await?
        && b.flag.is_none()
        && (any_chat || b.group_paired || b.telegram_user_id.as_deref() == Some(c))
    {
        return Ok(Some(target(b)));
    }
    Ok(None)
}

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

/// `getRequiredSecretRefs`: the agent's refs (with the bridge fallbacks hydration reads).
pub async fn required_secret_refs(app: &App, agent_key: Option<&str>) -> AppResult<Value> {
    let Some(k) = agent_key else {
        return Err(AppError::validation("agentKey is required (the deployment-wide list is not served)"));
    };
    validate_agent_key(k)?;
    let refs = match app.store.get_agent(k).await? {
        Some(p) => crate::secrets::ops::hydration_refs(&p),
        None => Vec::new(),
    };
    Ok(json!({ "agentKey": k, "secretRefs": refs }))
}
