//! The user-agent aggregate APIs (spec §9), for the calling user: its agents, one agent, the
//! active one, an agent's queue items, and a message to its agent. Listings are pages with a
//! `nextCursor` (never a silent truncation); read models never carry `rawUpdateJson`.

use super::model::{BindingStatus, ConsumerUserId};
use super::views::{self, ProfileFacts, UserAgentEntry, UserAgentStatus};
use crate::access::ops::UserCtx;
use crate::app::App;
use crate::envelope::{NoArgs, OpTable};
use crate::error::{AppError, AppResult};
use crate::op;
use crate::paging::{self, Page};
use crate::queue::JobRow;
use crate::queue::model::MessageStatus;
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
    let (agents, _) = agents_page(app, user, None, usize::MAX).await?;
    let bindings = app.store.user_bindings(user.as_str()).await?;
    let active = views::active_agent_key(&bindings).map(str::to_string);
    Ok(Overview { can_create_new_agent: active.is_none(), agents, active_agent_key: active })
}

/// The user's agents in the overview's order, starting after the agent `after`, at most `limit`
/// of them: the entries and whether more follow. Reads the profile and bot of the returned
/// agents only.
async fn agents_page(
    app: &App,
    user: &ConsumerUserId,
    after: Option<&str>,
    limit: usize,
) -> AppResult<(Vec<UserAgentEntry>, bool)> {
    let now = app.now();
    let bindings = app.store.user_bindings(user.as_str()).await?;
    let pairings = app.store.user_pairings(user.as_str()).await?;
    let can_create = views::active_agent_key(&bindings).is_none();
    let keys = views::agent_keys(&bindings, &pairings);
    let start = match after {
        None => 0,
        // An agent gone from the list since the cursor was made: start over at the first agent
        // after it in key order would reorder the list, so the page starts at the beginning.
        Some(a) => keys.iter().position(|k| k == a).map_or(0, |i| i + 1),
    };
    let mut agents = Vec::new();
    for key in keys.iter().skip(start).take(limit) {
        let profile = app.store.get_agent(key).await?;
        let facts = profile.as_ref().map(|p| ProfileFacts { enabled: p.enabled, version: p.version.clone() });
        let bot = match profile.as_ref().and_then(|p| p.bot_identity.as_deref()) {
            Some(b) => app.store.get_bot(b).await?.and_then(|r| r.telegram_username),
            None => None,
        };
        let pairing = pairings.iter().find(|p| &p.agent_key == key);
        agents.push(views::entry(user.as_str(), key, &bindings, pairing, facts.as_ref(), bot, can_create, now));
    }
    Ok((agents, start.saturating_add(limit) < keys.len()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListArgs {
    #[serde(default)]
    include_disabled: Option<bool>,
    /// 1..100, default 50.
    #[serde(default)]
    limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// `listUserAgents`: a page of the overview's agents (disabled ones left out unless
/// `includeDisabled`, default true), `{items, nextCursor}`.
pub async fn list_agents(app: &App, user: &ConsumerUserId, a: &ListArgs) -> AppResult<Page<UserAgentEntry>> {
    const LISTING: &str = "listUserAgents";
    let limit = paging::limit("limit", a.limit, 50, 100)?;
    let after = a.cursor.as_deref().map(|c| paging::decode(LISTING, "", c)).transpose()?;
    let (agents, more) = agents_page(app, user, after.as_deref(), limit as usize).await?;
    let next_cursor = agents.last().filter(|_| more).map(|e| paging::encode(LISTING, &e.agent_key));
    let all = a.include_disabled.unwrap_or(true);
    Ok(Page {
        items: agents.into_iter().filter(|e| all || e.status != UserAgentStatus::Disabled).collect(),
        next_cursor,
    })
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
    /// The `nextCursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendArgs {
    agent_key: String,
    content: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

const QUEUE_LISTING: &str = "listQueueItemsForUserAgent";

/// `listQueueItemsForUserAgent`: a page of the messages of the conversation the user talks to
/// the agent in (its newest binding's), newest first, `limit` (1..500, default 100) read per page,
/// only those in `statuses` when given; `rawUpdateJson` left out. `{items, nextCursor}`: a page
/// can hold fewer than `limit` items when `statuses` filters, and `nextCursor` is `null` only on
/// the last page. One Query per page, whatever the conversation's length.
pub async fn queue_items(app: &App, user: &ConsumerUserId, a: &QueueItemsArgs) -> AppResult<Page<JobRow>> {
    crate::queue::rules::validate_agent_key(&a.agent_key)?;
    let limit = paging::limit("limit", a.limit, 100, 500)?;
    let after = a.cursor.as_deref().map(|c| paging::decode(QUEUE_LISTING, "M#", c)).transpose()?;
    let bindings = app.store.user_bindings(user.as_str()).await?;
    let cid = views::target_conversation(&bindings, user.as_str(), &a.agent_key);
    let (rows, next) = app.store.page_conversation_items(&cid, a.statuses.as_deref(), limit, after.as_deref()).await?;
    Ok(Page {
        items: rows
            .into_iter()
            .map(|mut r| {
                if let Some(p) = r.payload.as_mut() {
                    p.raw_update_json = None;
                }
                r
            })
            .collect(),
        next_cursor: next.map(|sk| paging::encode(QUEUE_LISTING, &sk)),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ViewArgs {
    agent_key: String,
    /// The queue items' page size (as `listQueueItemsForUserAgent`).
    #[serde(default)]
    limit: Option<i64>,
    /// How many history entries (1..500, default 200): the newest ones, or those before
    /// `historyCursor`.
    #[serde(default)]
    history_limit: Option<i64>,
    /// The `historyNextCursor` of a previous view: the page of older history.
    #[serde(default)]
    history_cursor: Option<String>,
}

const HISTORY_LISTING: &str = "getConversationViewForUserAgent.history";

/// `getConversationViewForUserAgent`: the conversation the user talks to the agent in — a page
/// of its history (the newest `historyLimit` entries, oldest first, or the page before
/// `historyCursor`; `historyNextCursor` continues into older entries and `historyTruncated` says
/// there are some; the original returns the whole history, unbounded), the first page of its
/// queue items (as `listQueueItemsForUserAgent`, `queueItemsNextCursor`), whether work waits, and
/// when the user and the assistant last spoke (in the newest history page). Works with a revoked
/// binding or none.
pub async fn conversation_view(app: &App, user: &ConsumerUserId, a: &ViewArgs) -> AppResult<serde_json::Value> {
    use crate::conversations::model::HistoryRole;
    let history_limit = paging::limit("historyLimit", a.history_limit, 200, 500)?;
    let before = a.history_cursor.as_deref().map(|c| paging::decode(HISTORY_LISTING, "H#", c)).transpose()?;
    let items = queue_items(
        app,
        user,
        &QueueItemsArgs { agent_key: a.agent_key.clone(), statuses: None, limit: a.limit, cursor: None },
    )
    .await?;
    let bindings = app.store.user_bindings(user.as_str()).await?;
    let cid = views::target_conversation(&bindings, user.as_str(), &a.agent_key);
    let (history, older) = app.store.page_history(&cid, history_limit, before.as_deref()).await?;
    let newest = match before {
        None => None,
        Some(_) => Some(app.store.page_history(&cid, history_limit, None).await?.0),
    };
    let last =
        |role: HistoryRole| newest.as_ref().unwrap_or(&history).iter().rev().find(|h| h.role == role).map(|h| h.at);
    Ok(serde_json::json!({
        "conversationId": cid,
        "contextHistory": history,
        "historyTruncated": older.is_some(),
        "historyNextCursor": older.map(|sk| paging::encode(HISTORY_LISTING, &sk)),
        "hasQueuedJobs": app.store.has_queued(&cid).await?
            || items.items.iter().any(|i| i.status == MessageStatus::Processing),
        "latestMessageId": items.items.first().map(|i| i.id.clone()),
        "lastUserMessageAt": last(HistoryRole::User),
        "lastAssistantMessageAt": last(HistoryRole::Assistant),
        "queueItems": items.items,
        "queueItemsNextCursor": items.next_cursor,
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
    metadata.insert("source".into(), "user_agent_api".into());
    let args = views::message_to_binding(&bindings, b, user.as_str(), &a.agent_key, a.content, metadata);
    crate::envelope::to_json(app.store.enqueue(args).await?)
}

/// The user-agent ops (the `api` function).
pub const TABLE: OpTable<UserCtx> = OpTable {
    domain: "user-agents",
    ops: &[
        op!(UserCtx, "getUserAgentsOverview", |c, _a: NoArgs| overview(&c.app, &c.user).await?),
        op!(UserCtx, "listUserAgents", |c, a: ListArgs| list_agents(&c.app, &c.user, &a).await?),
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
        metadata.insert("source".into(), "message_template".into());
        metadata.insert("templateId".into(), t.template_id.clone());
        metadata.insert("templateKey".into(), t.template_key.clone());
        let args = views::message_to_binding(&bindings, b, user.as_str(), &a.agent_key, t.text.clone(), metadata);
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
