//! Queue operations on DynamoDB. Every transition two actors can race on is one
//! `TransactWriteItems` with conditions; a lost race is re-read and decided again.
//! Request counts per operation are documented in `docs/data-model.md`.

mod claim;
mod conversation;
mod enqueue;
mod hint;
pub use enqueue::Enqueued;
mod lease;
mod promote;
pub(crate) use promote::PromotionState;
mod reads;
mod recovery;
mod status_index;
pub(crate) use status_index::all_status_shards;

use super::keys;
use super::{Ex, Item, Reason, Store, TxError, conflict_pause, from_item, key, n, s, to_av, to_item};
use crate::adapters::dynamo::schema;
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::conversations::model::ConversationItem;
use crate::error::{AppError, AppResult, LeaseRefusal};
use crate::ids::{self, LeaseHint, MessageRef};
use crate::queue::model::{ClaimedJob, MessageItem, MessageStatus, QueuePolicy};
use crate::queue::rules::{self, ClaimPlan, FailOutcome};
use crate::queue::*;
use crate::workers::model::WorkerItem;
use aws_sdk_dynamodb::types::{AttributeValue, Select, TransactWriteItem};
use tracing::{debug, instrument};

const MAX_TX_RETRIES: u32 = 8;
const READY_PAGE: i32 = 25;
/// The most index entries one `queueStats` figure reads (its cost bound).
pub const STATS_CAP: u64 = 1_000;

use super::tx::{tx_check, tx_put, tx_update};

/// The worker-row condition of a lease write: the row exists and, for an authenticated call, still
/// holds the caller's token and is not stopped.
fn worker_row_cond(a: &LeaseArgs) -> &'static str {
    if a.token_hash.is_some() { "tokenHash = :th AND #st <> :stopped" } else { "attribute_exists(workerId)" }
}

use keys::worker_key;

/// Names used by queue expressions (reserved words and all).
fn base_ex() -> Ex {
    Ex::new()
        .name("#st", "status")
        .name("#ttl", "ttl")
        .name("#ld", "load")
        .name("#pr", "priority")
        .val(":noseq", s("~"))
}

const CONV_LOCK_REMOVE: &str = "lockLeaseId, lockWorkerId, lockMsgSk, lockUntil, lockHeartbeatAt";
const CLAIM_FIELDS: &str = "claimedBy, leaseId, leaseExpiresAt";
/// When the head leaves and others wait, the next message's priority, ULID and rank (as the claim
/// saw them, or as the first enqueue after the claim planted them) become the conversation's: its
/// priority is always its current head's, and it enters the `due` index at the head's rank
/// (`:frank` only for items written before ranks existed).
const NEXT_HEAD_SET: &str = "#pr = if_not_exists(nextPr, #pr), headSeq = if_not_exists(nextSeq, :noseq), \
    dueRank = if_not_exists(nextRank, :frank)";
const NEXT_REMOVE: &str = "nextPr, nextSeq, nextRank";

/// The values every `leave_update` needs besides the lease's: `:dshard`, `:frank`.
fn leave_vals(ex: Ex, pol: &QueuePolicy, now: Millis) -> Ex {
    ex.val(":dshard", s(keys::due_shard(keys::pick_shard(pol.ready_shards))))
        .val(":frank", s(keys::due_rank(pol.default_priority, now, "~")))
}

/// The outcome of trying one conversation.
enum ConvOutcome {
    Claimed(ClaimedJob),
    /// The worker row refused the claim (not active, or assigned elsewhere).
    WorkerRefused(Option<WorkerItem>),
    Nothing,
}

/// How the conversation item changes when an open message leaves (complete, dead-letter).
#[derive(Debug, Clone, Copy, PartialEq)]
enum LeaveVariant {
    /// Other open messages remain: the conversation stays in the ready index.
    More,
    /// It was the last open message: the conversation leaves the ready index.
    Last,
}

impl From<LeaseHint> for LeaveVariant {
    fn from(h: LeaseHint) -> Self {
        match h {
            LeaseHint::More => LeaveVariant::More,
            LeaseHint::Last => LeaveVariant::Last,
        }
    }
}

/// What happens to the conversation's sticky owner when an open message leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Owner {
    /// The owner finished the message: its claim on the conversation is refreshed (`:ou`).
    Refresh,
    /// The message was taken from a vanished owner: the conversation is free for anyone.
    Drop,
}

/// The conversation update (and its condition) for an open message leaving: lock removed,
/// `openCount - 1`, and the conversation stays in (`More`) or leaves (`Last`) the ready index.
/// `require_lock` checks the lock is still lease `:l`.
fn leave_update(v: LeaveVariant, require_lock: bool, owner: Owner) -> (String, String) {
    let lock_cond = if require_lock { "lockLeaseId = :l AND " } else { "" };
    let (owner_set, owner_remove) = match owner {
        Owner::Refresh => ("ownerUntil = :ou, ", ""),
        Owner::Drop => ("", ", ownerId, ownerUntil"),
    };
    match v {
        LeaveVariant::More => (
            format!(
                "SET openCount = openCount - :one, readyAt = :now, readyShard = :dshard, {owner_set}{NEXT_HEAD_SET}, rev = rev + :one REMOVE {CONV_LOCK_REMOVE}, {NEXT_REMOVE}{owner_remove}"
            ),
            format!("{lock_cond}openCount > :one"),
        ),
        LeaveVariant::Last => (
            format!(
                "SET openCount = openCount - :one, {owner_set}rev = rev + :one REMOVE readyShard, readyAt, dueRank, #pr, headSeq, {NEXT_REMOVE}, {CONV_LOCK_REMOVE}{owner_remove}"
            ),
            format!("{lock_cond}openCount = :one"),
        ),
    }
}

impl Store {
    pub(super) fn q(&self) -> &str {
        &self.tables.queue
    }
}

fn agent_missing(agent_key: &str) -> AppError {
    AppError::not_found(format!("Agent profile '{agent_key}' not found or disabled"))
}

/// The message condition that proves the caller holds a live lease (`:w`, `:l`, `:now`).
const LEASE_HELD: &str = "#st = :processing AND leaseId = :l AND claimedBy = :w AND leaseExpiresAt > :now";

/// Whether enqueueing a message due at `due` must lower the conversation's `readyAt`.
fn needs_lower(old: &ConversationItem, due: Millis) -> bool {
    match old.ready_at {
        Some(r) => r > due && old.lock_lease_id.is_none() && old.owner_until.is_none_or(|o| o < r),
        None => false,
    }
}

/// When a complete/dead-letter was refused only because the hint about the rest of the
/// conversation was stale, the variant to try next.
fn flip_variant(e: &TxError, lease: &str) -> Option<LeaveVariant> {
    let TxError::Cancelled(r) = e else { return None };
    if r.first().is_some_and(Reason::failed_condition) {
        return None;
    }
    let conv = r.get(1).filter(|x| x.failed_condition())?;
    let old: ConversationItem = conv.item.clone().and_then(|i| from_item(i).ok())?;
    if old.lock_lease_id.as_deref() != Some(lease) {
        return None;
    }
    Some(if old.open_count > 1 { LeaveVariant::More } else { LeaveVariant::Last })
}

/// Candidates from the ready index: highest priority first, then earliest ready, then the head
/// enqueued first (insertion order), then the conversation id: the same order every time. Racing
/// claimers spread by moving on to the next candidate after a lost race.
fn order_candidates(c: &mut [ConversationItem]) {
    c.sort_by(|a, b| {
        b.priority
            .unwrap_or(50.0)
            .total_cmp(&a.priority.unwrap_or(50.0))
            .then(a.ready_at.cmp(&b.ready_at))
            .then_with(|| a.head_seq.cmp(&b.head_seq))
            .then_with(|| a.conversation_id.cmp(&b.conversation_id))
    });
}

fn job_row(i: &Item, st: MessageStatus) -> AppResult<JobRow> {
    let gs = |k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let gn = |k: &str| i.get(k).and_then(|v| v.as_n().ok()).and_then(|x| x.parse::<f64>().ok());
    Ok(JobRow {
        id: gs("messageId"),
        creation_time: gn("createdAt").unwrap_or(0.0) as i64,
        conversation_id: gs("conversationId"),
        agent_key: gs("agentKey"),
        status: st,
        priority: gn("priority").unwrap_or(0.0),
        scheduled_for: gn("scheduledFor").unwrap_or(0.0) as i64,
        attempts: gn("attempts").unwrap_or(0.0) as u32,
        max_attempts: gn("maxAttempts").unwrap_or(0.0) as u32,
        last_error: i.get("lastError").and_then(|v| v.as_s().ok()).cloned(),
        payload: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(cid: &str, priority: f64, ready_at: Millis, seq: &str) -> ConversationItem {
        serde_json::from_value(serde_json::json!({
            "pk": format!("C#{cid}"), "sk": "CONV", "openKey": "!CONV", "conversationId": cid,
            "agentKey": "a", "createdAt": 0, "openCount": 1, "readyShard": "r0",
            "readyAt": ready_at, "priority": priority, "headSeq": seq
        }))
        .unwrap()
    }

    #[test]
    fn candidates_are_ordered_the_same_way_every_time() {
        let base = vec![
            cand("z", 50.0, 10, "01B"),
            cand("y", 50.0, 10, "01A"),
            cand("x", 50.0, 5, "01C"),
            cand("w", 90.0, 20, "01D"),
            cand("v", 50.0, 10, "01A"),
        ];
        for _ in 0..20 {
            let mut c = base.clone();
            order_candidates(&mut c);
            let ids: Vec<_> = c.iter().map(|x| x.conversation_id.as_str()).collect();
            // Priority first, then due time, then insertion order (head ULID), then the id.
            assert_eq!(ids, vec!["w", "x", "v", "y", "z"]);
        }
    }
}
