//! Usage metering use cases: count a completed message's usage (a best-effort follow-up of
//! `complete`, idempotent per messageId), and the usage reads.

use super::model::{TokenUsage, Usage, UsageTotals};
use super::rules;
use crate::adapters::dynamo::keys;
use crate::adapters::dynamo::usage::UsageTarget;
use crate::app::App;
use crate::envelope::OpTable;
use crate::error::AppResult;
use crate::ids::MessageRef;
use crate::op;
use serde::Deserialize;

/// Count `usage` for the message `message_id`, which its worker just completed.
///
/// Why a follow-up write and not a part of `complete`'s transaction: the counters are shared
/// (every complete of an agent on a day touches one of its shard items), and a transaction that
/// touches them can be cancelled by another one's conflict; kept apart, counter contention can
/// never fail or delay a complete, and the queue's complete code stays as it is. The write is
/// one transaction of a per-message record (put only if absent) and the counter updates, so a
/// replay of it counts nothing twice. The cost: usage can be lost if the process dies between
/// the complete and this write (it is logged when the write fails).
pub async fn record_after_complete(app: &App, message_id: &str, usage: &Usage) {
    if let Err(e) = record(app, message_id, usage).await {
        tracing::warn!(message_id, error = %e, "usage not recorded");
    }
}

/// Count `usage` for `message_id`: `false` when it was already counted or there is no message.
pub async fn record(app: &App, message_id: &str, usage: &Usage) -> AppResult<bool> {
    rules::validate(usage)?;
    let m = MessageRef::parse(message_id)?;
    let pk = keys::conversation_pk(&m.conversation_id);
    let Some(owner) = app.store.message_owner(&pk, &keys::message_sk(&m.ulid)).await? else {
        return Ok(false);
    };
    let user = rules::consumer_user_of(&owner.conversation_id, &owner.agent_key, owner.metadata_user.as_deref());
    let now = app.now();
    let day = rules::day_of(now);
    let t = UsageTarget {
        message_id,
        agent_key: &owner.agent_key,
        consumer_user_id: user.as_deref(),
        shard: keys::shard_of(message_id, rules::AGENT_SHARDS),
        day: &day,
    };
    app.store.record_usage(&t, usage, now).await
}

fn total(days: &[super::model::UsageDay]) -> UsageTotals {
    let mut t = UsageTotals::default();
    for d in days {
        t.add(&d.totals);
    }
    t
}

/// A (consumer user, agent) pair's token usage over the last `days` UTC days (one Query).
pub async fn user_agent_usage(app: &App, user: &str, agent: &str, days: Option<i64>) -> AppResult<TokenUsage> {
    let (from, to) = rules::day_range(app.now(), days);
    let rows = app.store.user_agent_usage(user, agent, &from, &to).await?;
    Ok(TokenUsage { totals: total(&rows), from_day: from, to_day: to, days: rows })
}

/// An agent's token usage over the last `days` UTC days (one Query per counter shard).
pub async fn agent_usage(app: &App, agent: &str, days: Option<i64>) -> AppResult<TokenUsage> {
    let (from, to) = rules::day_range(app.now(), days);
    let rows = app.store.agent_usage(agent, rules::AGENT_SHARDS, &from, &to).await?;
    Ok(TokenUsage { totals: total(&rows), from_day: from, to_day: to, days: rows })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentUsageArgs {
    agent_key: String,
    #[serde(default)]
    days: Option<i64>,
}

/// `getAgentUsageStats` (operator op): an agent's token usage per day.
pub const TABLE: OpTable<App> = OpTable {
    domain: "usage",
    ops: &[op!(App, "getAgentUsageStats", |app, a: AgentUsageArgs| {
        crate::queue::rules::validate_agent_key(&a.agent_key)?;
        agent_usage(app, &a.agent_key, a.days).await?
    })],
};
