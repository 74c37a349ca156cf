//! Usage metering in the control table (data model: "Usage metering"): a once-per-message record
//! and per-day counters, per agent (sharded) and per (consumer user, agent).

use super::tx::{tx_put, tx_update};
use super::{Ex, Item, Store, TxError, conflict_pause, from_item, keys, n, s};
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::error::AppResult;
use crate::usage::model::{Usage, UsageDay, UsageTotals};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Deserialize;

/// How long the per-message record is kept (it only has to outlive a retried write).
const MARKER_RETENTION_MS: Millis = 7 * 86_400_000;
const MAX_TX_ATTEMPTS: u32 = 8;

/// Who a message belongs to, as stored on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOwner {
    pub agent_key: String,
    pub conversation_id: String,
    pub metadata_user: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerItem {
    agent_key: String,
    conversation_id: String,
    #[serde(default)]
    payload: Option<OwnerPayload>,
}

#[derive(Deserialize)]
struct OwnerPayload {
    #[serde(default)]
    metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CounterItem {
    sk: String,
    #[serde(default)]
    completions: u64,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cost_micros: u64,
}

impl CounterItem {
    fn totals(&self) -> UsageTotals {
        UsageTotals {
            completions: self.completions,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_micros: self.cost_micros,
        }
    }
}

/// Where one message's usage is counted.
#[derive(Debug, Clone)]
pub struct UsageTarget<'a> {
    pub message_id: &'a str,
    pub agent_key: &'a str,
    pub consumer_user_id: Option<&'a str>,
    pub shard: u32,
    pub day: &'a str,
}

impl Store {
    /// The agent, conversation and `metadata.consumerUserId` of a message (one GetItem with a
    /// projection), or `None` if there is no such message.
    pub async fn message_owner(&self, pk: &str, sk: &str) -> AppResult<Option<MessageOwner>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.queue)
            .set_key(Some(keys::key(pk, sk)))
            .projection_expression("agentKey, conversationId, payload.metadata.consumerUserId")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem message owner", e))?;
        let Some(item) = out.item else { return Ok(None) };
        let o: OwnerItem = from_item(item)?;
        Ok(Some(MessageOwner {
            agent_key: o.agent_key,
            conversation_id: o.conversation_id,
            metadata_user: o.payload.and_then(|p| p.metadata).and_then(|mut m| m.remove("consumerUserId")),
        }))
    }

    /// Count one message's usage: the per-message record (put only if absent) and the counters,
    /// in one transaction, so a replay counts nothing twice. `false` when it was already counted.
    pub async fn record_usage(&self, t: &UsageTarget<'_>, u: &Usage, now: Millis) -> AppResult<bool> {
        let c = &self.tables.control;
        let ex = Ex::new()
            .val(":one", n(1))
            .val(":in", n(u.input_tokens))
            .val(":out", n(u.output_tokens))
            .val(":cost", n(u.cost_micros.unwrap_or(0)))
            .val(":now", n(now));
        let add = "ADD completions :one, inputTokens :in, outputTokens :out, costMicros :cost SET updatedAt = :now";
        let mut marker: Item = keys::usage_marker_key(t.message_id);
        marker.insert("messageId".into(), s(t.message_id));
        marker.insert("agentKey".into(), s(t.agent_key));
        marker.insert("day".into(), s(t.day));
        marker.insert("inputTokens".into(), n(u.input_tokens));
        marker.insert("outputTokens".into(), n(u.output_tokens));
        marker.insert("costMicros".into(), n(u.cost_micros.unwrap_or(0)));
        marker.insert("createdAt".into(), n(now));
        marker.insert("ttl".into(), n(keys::ttl_seconds(now + MARKER_RETENTION_MS)));
        if let Some(m) = &u.model {
            marker.insert("model".into(), s(m));
        }
        if let Some(user) = t.consumer_user_id {
            marker.insert("consumerUserId".into(), AttributeValue::S(user.to_string()));
        }
        for attempt in 0..MAX_TX_ATTEMPTS {
            let mut items = vec![
                tx_put(c, marker.clone(), "attribute_not_exists(pk)", &Ex::new()),
                tx_update(c, keys::usage_agent_key(t.agent_key, t.shard, t.day), add, None, &ex),
            ];
            if let Some(user) = t.consumer_user_id {
                items.push(tx_update(c, keys::usage_user_key(user, t.agent_key, t.day), add, None, &ex));
            }
            match self.transact(items).await {
                Ok(()) => return Ok(true),
                Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => return Ok(false),
                Err(TxError::Cancelled(r)) if r.iter().any(|x| x.conflict()) => conflict_pause(attempt).await,
                Err(e) => return Err(e.into_app("recording usage")),
            }
        }
        Err(crate::error::AppError::conflict("recording usage: too much contention"))
    }

    /// A (consumer user, agent) pair's usage per day in `[from, to]`: one Query (at most 366 items).
    pub async fn user_agent_usage(&self, user: &str, agent: &str, from: &str, to: &str) -> AppResult<Vec<UsageDay>> {
        let prefix = keys::usage_user_agent_prefix(agent);
        self.usage_days(keys::usage_user_pk(user), format!("{prefix}{from}"), format!("{prefix}{to}"), &prefix).await
    }

    /// An agent's usage per day in `[from, to]`: one Query per counter shard, summed.
    pub async fn agent_usage(&self, agent: &str, shards: u32, from: &str, to: &str) -> AppResult<Vec<UsageDay>> {
        let p = keys::USAGE_DAY_PREFIX;
        let mut days: std::collections::BTreeMap<String, UsageTotals> = Default::default();
        for shard in 0..shards {
            let rows = self
                .usage_days(keys::usage_agent_pk(agent, shard), format!("{p}{from}"), format!("{p}{to}"), p)
                .await?;
            for r in rows {
                days.entry(r.day).or_default().add(&r.totals);
            }
        }
        Ok(days.into_iter().map(|(day, totals)| UsageDay { day, totals }).collect())
    }

    async fn usage_days(&self, pk: String, lo: String, hi: String, prefix: &str) -> AppResult<Vec<UsageDay>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let r = self
                .client
                .query()
                .table_name(&self.tables.control)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":lo", s(&lo))
                .expression_attribute_values(":hi", s(&hi))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query usage", e))?;
            for i in r.items.unwrap_or_default() {
                let c: CounterItem = from_item(i)?;
                let day = c.sk.strip_prefix(prefix).unwrap_or(&c.sk).to_string();
                out.push(UsageDay { day, totals: c.totals() });
            }
            start = r.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }
}
