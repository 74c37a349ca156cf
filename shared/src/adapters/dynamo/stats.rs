//! Bounded reads for the user-agent stats (spec §11): one conversation's messages and history
//! entries, each read capped at [`CONVERSATION_STATS_CAP`] items (a figure that reached it is a
//! lower bound, and `capped` says so).

use super::{Item, Store, keys, s};
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::error::AppResult;

/// The most items one figure reads.
pub const CONVERSATION_STATS_CAP: usize = 1_000;

/// One conversation's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationCounts {
    /// History entries.
    pub context_messages: u64,
    /// Queued and processing messages.
    pub queued_messages: u64,
    /// Messages awaiting a retry after a failure, and dead-lettered ones.
    pub failed_messages: u64,
    pub capped: bool,
}

impl Store {
    /// The figures of `conversation_id`: its message items (status and last error only) and
    /// its history entries (counted), each read capped.
    pub async fn conversation_counts(&self, conversation_id: &str) -> AppResult<ConversationCounts> {
        let pk = keys::conversation_pk(conversation_id);
        let mut c = ConversationCounts::default();
        let (history, capped_h) = self.count_prefix(&pk, keys::HISTORY_PREFIX).await?;
        c.context_messages = history;
        let mut start: Option<Item> = None;
        let mut read = 0usize;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.queue)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .projection_expression("#st, lastError")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":p", s(keys::MESSAGE_PREFIX))
                .limit((CONVERSATION_STATS_CAP - read) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query conversation messages", e))?;
            for i in out.items.unwrap_or_default() {
                read += 1;
                let retrying = i.contains_key("lastError");
                match super::item_s(&i, "status") {
                    Some("queued") if retrying => {
                        c.queued_messages += 1;
                        c.failed_messages += 1;
                    }
                    Some("queued" | "processing") => c.queued_messages += 1,
                    Some("dead_letter") => c.failed_messages += 1,
                    _ => {}
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() && read < CONVERSATION_STATS_CAP => start = Some(k),
                Some(k) if !k.is_empty() => {
                    c.capped = true;
                    break;
                }
                _ => break,
            }
        }
        c.capped |= capped_h;
        Ok(c)
    }

    /// Count the items of partition `pk` whose sort key starts with `prefix`, capped.
    async fn count_prefix(&self, pk: &str, prefix: &str) -> AppResult<(u64, bool)> {
        let mut total = 0usize;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.queue)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .select(aws_sdk_dynamodb::types::Select::Count)
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":p", s(prefix))
                .limit((CONVERSATION_STATS_CAP - total) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query count", e))?;
            total += out.count as usize;
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() && total < CONVERSATION_STATS_CAP => start = Some(k),
                Some(k) if !k.is_empty() => return Ok((total as u64, true)),
                _ => return Ok((total as u64, false)),
            }
        }
    }
}

/// A (user, agent) pair's push figures (spec §11, `getUserAgentPushStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// The user's jobs for the agent, disabled ones included.
    pub total_jobs: u64,
    pub active_jobs: u64,
    /// Dispatch records of those jobs, at most `cap`.
    pub total_dispatches: u64,
    pub latest_dispatch_at: Option<Millis>,
}

impl Store {
    /// The push figures of (`user`, `agent`): one Query of the user's jobs (`PJ#<user>`, `JOB#`),
    /// then per job of the agent one Query of its newest dispatch records (`PJD#<jobId>`, `D#`,
    /// newest first, at most `cap`, projection `createdAt`). Run-key guards (`R#`) are not read.
    pub async fn user_agent_push_counts(&self, user: &str, agent: &str, cap: usize) -> AppResult<PushCounts> {
        let c = &self.tables.control;
        let mut jobs: Vec<String> = Vec::new();
        let mut p = PushCounts::default();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(c)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .projection_expression("#id, agentKey, enabled")
                .expression_attribute_names("#id", "_id")
                .expression_attribute_values(":pk", s(keys::push_user_pk(user)))
                .expression_attribute_values(":p", s(keys::PUSH_JOB_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query push jobs", e))?;
            for i in out.items.unwrap_or_default() {
                if super::item_s(&i, "agentKey") != Some(agent) {
                    continue;
                }
                p.total_jobs += 1;
                if i.get("enabled").and_then(|v| v.as_bool().ok()) == Some(&true) {
                    p.active_jobs += 1;
                }
                if let Some(id) = super::item_s(&i, "_id") {
                    jobs.push(id.to_string());
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        let mut total = 0usize;
        for job in jobs {
            let out = self
                .client
                .query()
                .table_name(c)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .projection_expression("createdAt")
                .expression_attribute_values(":pk", s(keys::push_dispatch_pk(&job)))
                .expression_attribute_values(":p", s(keys::PUSH_DISPATCH_PREFIX))
                .scan_index_forward(false)
                .limit(cap.max(1) as i32)
                .send()
                .await
                .map_err(|e| sdk_error("Query push dispatches", e))?;
            let items = out.items.unwrap_or_default();
            total += items.len();
            let newest = items
                .first()
                .and_then(|i| i.get("createdAt"))
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<Millis>().ok());
            p.latest_dispatch_at = p.latest_dispatch_at.max(newest);
        }
        p.total_dispatches = total.min(cap) as u64;
        Ok(p)
    }
}
