//! Pairing codes and bindings (spec §5, §6 with W-4, W-10, W-11): codes made from a CSPRNG,
//! consumed once by a conditional write inside the bind transaction; one active binding per
//! consumer, per (bot, Telegram user) and per (bot, chat).

use super::bots::{check_id, profile, random_bytes};
use super::model::*;
use super::rules;
use crate::adapters::dynamo::{Store, TxError, conflict_pause};
use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::queue::rules::validate_agent_key;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `bindUserAgent`'s args.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindArgs {
    pub(crate) consumer_user_id: ConsumerUserId,
    pub(crate) agent_key: String,
    #[serde(default)]
    pub(crate) bot_identity: Option<String>,
    #[serde(default)]
    pub(crate) source: Option<BindingSource>,
    #[serde(default)]
    pub(crate) telegram_user_id: Option<String>,
    #[serde(default)]
    pub(crate) telegram_chat_id: Option<String>,
    #[serde(default)]
    pub(crate) metadata: Option<BTreeMap<String, String>>,
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
async fn bind_once(app: &App, i: &BindInput, extra: Vec<crate::adapters::dynamo::TxItem>) -> Result<Binding, TxError> {
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
pub async fn bind_by_hand(app: &App, a: BindArgs) -> AppResult<Binding> {
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
