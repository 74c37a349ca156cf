//! The user-agent aggregate APIs (spec §9), for the calling user: its agents, one agent, the
//! active one, an agent's queue items, and a message to its agent. Reads are bounded (the user's
//! 120 newest bindings, 50 latest codes); read models never carry `rawUpdateJson`.

use super::model::{BindingStatus, ConsumerUserId};
use super::views::{self, ProfileFacts, UserAgentEntry, UserAgentStatus};
use crate::access::ops::UserCtx;
use crate::app::App;
use crate::envelope::{NoArgs, OpTable};
use crate::error::{AppError, AppResult};
use crate::op;
use crate::queue::model::{MessageStatus, Payload};
use crate::queue::{EnqueueArgs, JobRow, ListConversationArgs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `getUserAgentsOverview`'s result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub agents: Vec<UserAgentEntry>,
    pub active_agent_key: Option<String>,
    pub can_create_new_agent: bool,
}

/// Every agent of `user`, newest binding first, then agents with only a pending code.
pub async fn overview(app: &App, user: &ConsumerUserId) -> AppResult<Overview> {
    let now = app.now();
    let bindings = app.store.user_bindings(user.as_str()).await?;
    let pairings = app.store.user_pairings(user.as_str()).await?;
    let active = views::active_agent_key(&bindings).map(str::to_string);
    let can_create = active.is_none();
    let mut agents = Vec::new();
    for key in views::agent_keys(&bindings, &pairings) {
        let profile = app.store.get_agent(&key).await?;
        let facts = profile.as_ref().map(|p| ProfileFacts { enabled: p.enabled, version: p.version.clone() });
        let bot = match profile.as_ref().and_then(|p| p.bot_identity.as_deref()) {
            Some(b) => app.store.get_bot(b).await?.and_then(|r| r.telegram_username),
            None => None,
        };
        let pairing = pairings.iter().find(|p| p.agent_key == key);
        agents.push(views::entry(user.as_str(), &key, &bindings, pairing, facts.as_ref(), bot, can_create, now));
    }
    Ok(Overview { agents, active_agent_key: active, can_create_new_agent: can_create })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListArgs {
    #[serde(default)]
    include_disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentArgs {
    agent_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueItemsArgs {
    agent_key: String,
    #[serde(default)]
    statuses: Option<Vec<MessageStatus>>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendArgs {
    agent_key: String,
    content: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// `listQueueItemsForUserAgent`: the newest `limit` (1..500, default 100) items of the
/// conversation the user talks to the agent in (its newest binding's, any status), then those of
/// `statuses`; `rawUpdateJson` left out.
pub async fn queue_items(app: &App, user: &ConsumerUserId, a: &QueueItemsArgs) -> AppResult<Vec<JobRow>> {
    crate::queue::rules::validate_agent_key(&a.agent_key)?;
    let limit = a.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::validation(format!("limit must be 1 to 500, got {limit}")));
    }
    let bindings = app.store.user_bindings(user.as_str()).await?;
    let cid = views::target_conversation(&bindings, user.as_str(), &a.agent_key);
    let rows =
        app.store.list_conversation_items(&ListConversationArgs { conversation_id: cid, limit: Some(limit) }).await?;
    Ok(rows
        .into_iter()
        .filter(|r| a.statuses.as_ref().is_none_or(|s| s.contains(&r.status)))
        .map(|mut r| {
            if let Some(p) = r.payload.as_mut() {
                p.raw_update_json = None;
            }
            r
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ViewArgs {
    agent_key: String,
    #[serde(default)]
    limit: Option<i64>,
}

/// How many history entries the conversation view carries at most (the newest ones; the
/// original returns the whole history, unbounded).
pub const VIEW_HISTORY_MAX: i32 = 200;

/// `getConversationViewForUserAgent`: the conversation the user talks to the agent in — its
/// newest [`VIEW_HISTORY_MAX`] history entries (oldest first; `historyTruncated` says when more
/// exist), its newest `limit` queue items (as `listQueueItemsForUserAgent`), whether work waits,
/// and when the user and the assistant last spoke. Works with a revoked binding or none.
pub async fn conversation_view(app: &App, user: &ConsumerUserId, a: &ViewArgs) -> AppResult<serde_json::Value> {
    use crate::conversations::model::HistoryRole;
    let items =
        queue_items(app, user, &QueueItemsArgs { agent_key: a.agent_key.clone(), statuses: None, limit: a.limit })
            .await?;
    let bindings = app.store.user_bindings(user.as_str()).await?;
    let cid = views::target_conversation(&bindings, user.as_str(), &a.agent_key);
    let mut history = app.store.list_history(&cid, VIEW_HISTORY_MAX + 1).await?;
    let truncated = history.len() > VIEW_HISTORY_MAX as usize;
    if truncated {
        history.remove(0);
    }
    let last = |role: HistoryRole| history.iter().rev().find(|h| h.role == role).map(|h| h.at);
    Ok(serde_json::json!({
        "conversationId": cid,
        "contextHistory": history,
        "historyTruncated": truncated,
        "queueItems": items,
        "hasQueuedJobs": items.iter().any(|i| matches!(i.status, MessageStatus::Queued | MessageStatus::Processing)),
        "latestMessageId": items.first().map(|i| i.id.clone()),
        "lastUserMessageAt": last(HistoryRole::User),
        "lastAssistantMessageAt": last(HistoryRole::Assistant),
    }))
}

/// `sendMessageToUserAgent`: a message from the user to its agent, into the conversation of its
/// active binding (Telegram chat ids carried along). Refused without an active binding.
pub async fn send_message(app: &App, user: &ConsumerUserId, a: SendArgs) -> AppResult<serde_json::Value> {
    crate::queue::rules::validate_agent_key(&a.agent_key)?;
    let bindings = app.store.user_bindings(user.as_str()).await?;
    let Some(b) = views::latest_binding(&bindings, &a.agent_key).filter(|b| b.status == BindingStatus::Active) else {
        return Err(AppError::not_found(format!(
            "No active binding found for this user and agent '{}'",
            crate::ids::truncate(&a.agent_key, 60)
        )));
    };
    let mut metadata = a.metadata.unwrap_or_default();
    metadata.insert("consumerUserId".into(), user.as_str().to_string());
    metadata.insert("source".into(), "user_agent_api".into());
    let telegram = b.telegram_chat_id.as_deref().filter(|c| !c.trim().is_empty());
    if let Some(chat) = telegram {
        metadata.insert("telegramChatId".into(), chat.to_string());
    }
    if let Some(u) = b.telegram_user_id.as_deref().filter(|u| !u.trim().is_empty()) {
        metadata.insert("telegramUserId".into(), u.to_string());
    }
    let provider_user_id = b
        .telegram_user_id
        .clone()
        .or_else(|| b.telegram_chat_id.clone())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| user.as_str().to_string());
    let args = EnqueueArgs {
        conversation_id: views::target_conversation(&bindings, user.as_str(), &a.agent_key),
        agent_key: a.agent_key,
        payload: Payload {
            provider: if telegram.is_some() { "telegram" } else { "system_push" }.into(),
            provider_user_id,
            message_text: a.content,
            external_message_id: None,
            raw_update_json: None,
            metadata: Some(metadata),
            attachments: None,
        },
        priority: None,
        scheduled_for: None,
        max_attempts: None,
    };
    crate::envelope::to_json(app.store.enqueue(args).await?)
}

/// The user-agent ops (the `api` function).
pub const TABLE: OpTable<UserCtx> = OpTable {
    domain: "user-agents",
    ops: &[
        op!(UserCtx, "getUserAgentsOverview", |c, _a: NoArgs| overview(&c.app, &c.user).await?),
        op!(UserCtx, "listUserAgents", |c, a: ListArgs| {
            let all = a.include_disabled.unwrap_or(true);
            let o = overview(&c.app, &c.user).await?;
            o.agents.into_iter().filter(|e| all || e.status != UserAgentStatus::Disabled).collect::<Vec<_>>()
        }),
        op!(UserCtx, "getUserAgent", |c, a: AgentArgs| {
            overview(&c.app, &c.user).await?.agents.into_iter().find(|e| e.agent_key == a.agent_key)
        }),
        op!(UserCtx, "getActiveUserAgent", |c, _a: NoArgs| {
            let o = overview(&c.app, &c.user).await?;
            let key = o.active_agent_key.clone();
            o.agents.into_iter().find(|e| Some(&e.agent_key) == key.as_ref())
        }),
        op!(UserCtx, "listQueueItemsForUserAgent", |c, a: QueueItemsArgs| queue_items(&c.app, &c.user, &a).await?),
        op!(UserCtx, "getConversationViewForUserAgent", |c, a: ViewArgs| conversation_view(&c.app, &c.user, &a)
            .await?),
        op!(UserCtx, "sendMessageToUserAgent", |c, a: SendArgs| send_message(&c.app, &c.user, a).await?),
        op!(UserCtx, "sendMessageTemplateToUserAgent", |c, a: SendTemplateArgs| send_template(&c.app, &c.user, a)
            .await?),
    ],
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendTemplateArgs {
    agent_key: String,
    template_id: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// How often a template send re-reads the template after a concurrent send counted a use.
const TEMPLATE_SEND_RETRIES: u32 = 8;

/// `sendMessageTemplateToUserAgent` (spec §12): the template's text from the user to its agent,
/// as `sendMessageToUserAgent` sends (the conversation of the newest binding with the agent,
/// which must be active), and the template's `usageCount` + 1 in the same transaction. Returns
/// `{messageId, usageCount}` (the new count). An unknown or disabled template: `Message template
/// not found`.
pub async fn send_template(app: &App, user: &ConsumerUserId, a: SendTemplateArgs) -> AppResult<serde_json::Value> {
    crate::queue::rules::validate_agent_key(&a.agent_key)?;
    let not_found = || AppError::not_found("Message template not found");
    for _ in 0..TEMPLATE_SEND_RETRIES {
        let t = app.store.get_message_template(&a.template_id).await?.filter(|t| t.enabled).ok_or_else(not_found)?;
        let bindings = app.store.user_bindings(user.as_str()).await?;
        let Some(b) = views::latest_binding(&bindings, &a.agent_key).filter(|b| b.status == BindingStatus::Active)
        else {
            return Err(AppError::not_found("No active binding found for consumerUserId and agentKey"));
        };
        let mut metadata = a.metadata.clone().unwrap_or_default();
        metadata.insert("consumerUserId".into(), user.as_str().to_string());
        metadata.insert("source".into(), "message_template".into());
        metadata.insert("templateId".into(), t.template_id.clone());
        metadata.insert("templateKey".into(), t.template_key.clone());
        let chat = b.telegram_chat_id.as_deref().filter(|c| !c.trim().is_empty());
        if let Some(c) = chat {
            metadata.insert("telegramChatId".into(), c.to_string());
        }
        if let Some(u) = b.telegram_user_id.as_deref().filter(|u| !u.trim().is_empty()) {
            metadata.insert("telegramUserId".into(), u.to_string());
        }
        let provider_user_id = b
            .telegram_user_id
            .clone()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| b.telegram_chat_id.clone().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| user.as_str().to_string());
        let args = EnqueueArgs {
            conversation_id: views::target_conversation(&bindings, user.as_str(), &a.agent_key),
            agent_key: a.agent_key.clone(),
            payload: Payload {
                provider: if chat.is_some() { "telegram" } else { "system_push" }.into(),
                provider_user_id,
                message_text: t.text.clone(),
                external_message_id: None,
                raw_update_json: None,
                metadata: Some(metadata),
                attachments: None,
            },
            priority: None,
            scheduled_for: None,
            max_attempts: None,
        };
        let counted = app.store.message_template_use(&t)?;
        match app.store.enqueue_with(args, |_| Ok(vec![counted])).await? {
            crate::adapters::dynamo::queue::Enqueued::Done(r) => {
                return Ok(serde_json::json!({ "messageId": r.message_id, "usageCount": t.usage_count + 1 }));
            }
            // Another send counted a use (or the template was disabled) meanwhile: read it again.
            crate::adapters::dynamo::queue::Enqueued::ExtraRefused { .. } => continue,
        }
    }
    Err(AppError::conflict("sendMessageTemplateToUserAgent: too many concurrent sends of this template; try again"))
}
