//! Stats use cases: the user-agent stats of spec §11 (`api`), and the queue gauges emitted as
//! EMF metrics by the scheduled reconcile.

use crate::access::ops::UserCtx;
use crate::app::App;
use crate::envelope::OpTable;
use crate::error::AppResult;
use crate::identity::model::ConsumerUserId;
use crate::identity::views;
use crate::op;
use crate::usage::model::TokenUsage;
use serde::{Deserialize, Serialize};

/// Read the queue gauges (bounded `byStatusShard` reads, as `queueStats`, plus one Query for the
/// oldest ready message) and emit them as one EMF line.
pub async fn emit_queue_gauges(app: &App) -> AppResult<()> {
    let now = app.now();
    let q = app.store.queue_stats().await?;
    let oldest = app.store.oldest_ready_at(now).await?;
    crate::metrics::queue_gauges(now, q.queued_ready, q.processing, q.dead_letter, oldest.map_or(0, |t| now - t));
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentArgs {
    agent_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageArgs {
    agent_key: String,
    /// UTC days of token usage, ending today (1..=366, default 30).
    #[serde(default)]
    days: Option<i64>,
}

/// `getUserAgentConversationStats` (spec §11).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationStats {
    pub context_messages: u64,
    pub queued_messages: u64,
    pub failed_messages: u64,
    /// A figure reached its read bound (1,000 items): it is a lower bound.
    pub capped: bool,
}

/// `getUserAgentPushStats` (spec §11).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushStats {
    pub total_push_jobs: u64,
    pub active_push_jobs: u64,
    /// Dispatch records of the pair's jobs, capped at 200 (as the original's).
    pub total_dispatches: u64,
    pub latest_dispatch_at: Option<crate::clock::Millis>,
}

/// The most dispatch records `getUserAgentPushStats` counts (the original's cap).
pub const PUSH_DISPATCH_CAP: usize = 200;

/// `getUserAgentUsageStats`: the push and conversation figures of the pair (spec §11's seven
/// fields) and its token usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageStats {
    #[serde(flatten)]
    pub push: PushStats,
    #[serde(flatten)]
    pub conversation: ConversationStats,
    pub token_usage: TokenUsage,
}

/// Spec §11: the user's jobs for the agent (owned: same user and agent), the enabled ones, their
/// dispatch records (capped at 200) and the newest one's time.
pub async fn push_stats(app: &App, user: &ConsumerUserId, agent_key: &str) -> AppResult<PushStats> {
    crate::queue::rules::validate_agent_key(agent_key)?;
    let p = app.store.user_agent_push_counts(user.as_str(), agent_key, PUSH_DISPATCH_CAP).await?;
    Ok(PushStats {
        total_push_jobs: p.total_jobs,
        active_push_jobs: p.active_jobs,
        total_dispatches: p.total_dispatches,
        latest_dispatch_at: p.latest_dispatch_at,
    })
}

/// Spec §11: all zero unless `agent_key` is the user's active agent (R1: the active binding's
/// agent, its profile enabled); else the figures of the R2 conversation.
pub async fn conversation_stats(app: &App, user: &ConsumerUserId, agent_key: &str) -> AppResult<ConversationStats> {
    crate::queue::rules::validate_agent_key(agent_key)?;
    let bindings = app.store.user_bindings(user.as_str()).await?;
    if views::active_agent_key(&bindings) != Some(agent_key) {
        return Ok(ConversationStats::default());
    }
    if !app.store.get_agent(agent_key).await?.is_some_and(|p| p.enabled) {
        return Ok(ConversationStats::default());
    }
    let cid = views::target_conversation(&bindings, user.as_str(), agent_key);
    let c = app.store.conversation_counts(&cid).await?;
    Ok(ConversationStats {
        context_messages: c.context_messages,
        queued_messages: c.queued_messages,
        failed_messages: c.failed_messages,
        capped: c.capped,
    })
}

/// The stats ops of the calling user (`api`).
pub const USER_TABLE: OpTable<UserCtx> = OpTable {
    domain: "stats",
    ops: &[
        op!(UserCtx, "getUserAgentConversationStats", |c, a: AgentArgs| conversation_stats(
            &c.app,
            &c.user,
            &a.agent_key
        )
        .await?),
        op!(UserCtx, "getUserAgentPushStats", |c, a: AgentArgs| push_stats(&c.app, &c.user, &a.agent_key).await?),
        op!(UserCtx, "getUserAgentUsageStats", |c, a: UsageArgs| UsageStats {
            push: push_stats(&c.app, &c.user, &a.agent_key).await?,
            conversation: conversation_stats(&c.app, &c.user, &a.agent_key).await?,
            token_usage: crate::usage::ops::user_agent_usage(&c.app, c.user.as_str(), &a.agent_key, a.days).await?,
        }),
    ],
};
