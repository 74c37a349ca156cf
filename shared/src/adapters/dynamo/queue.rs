//! Queue operations on DynamoDB. Every transition two actors can race on is one
//! `TransactWriteItems` with conditions; a lost race is re-read and decided again.
//! Request counts per operation are documented in `docs/data-model.md`.

use super::{Ex, Item, Reason, Store, TxError, conflict_pause, from_item, key, n, s, to_av, to_item};
use crate::adapters::dynamo::schema;
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::conversations::model::ConversationItem;
use crate::error::{AppError, AppResult, LeaseRefusal};
use crate::ids::{self, LeaseHint, MessageRef};
use crate::queue::model::{ClaimedJob, MessageItem, MessageStatus};
use crate::queue::rules::{self, ClaimPlan, FailOutcome};
use crate::queue::*;
use crate::workers::model::WorkerItem;
use aws_sdk_dynamodb::types::{AttributeValue, Select, TransactWriteItem};
use tracing::{debug, instrument};

const MAX_TX_RETRIES: u32 = 8;
const READY_PAGE: i32 = 25;
/// The most index entries one `queueStats` figure reads (its cost bound).
pub const STATS_CAP: u64 = 1_000;

pub(crate) use super::tx::{tx_check, tx_put, tx_update};

/// The worker-row condition of a lease write: the row exists and, for an authenticated call, still
/// holds the caller's token and is not stopped.
fn worker_row_cond(a: &LeaseArgs) -> &'static str {
    if a.token_hash.is_some() { "tokenHash = :th AND #st <> :stopped" } else { "attribute_exists(workerId)" }
}

fn worker_key(worker_id: &str) -> Item {
    Item::from([("workerId".to_string(), s(worker_id))])
}

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
/// When the head leaves and others wait, the next message's priority and ULID (as the claim saw
/// them) become the conversation's: its priority is always its current head's.
const NEXT_HEAD_SET: &str = "#pr = if_not_exists(nextPr, #pr), headSeq = if_not_exists(nextSeq, :noseq)";
const NEXT_REMOVE: &str = "nextPr, nextSeq";

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
                "SET openCount = openCount - :one, readyAt = :now, readyShard = :rshard, {owner_set}{NEXT_HEAD_SET}, rev = rev + :one REMOVE {CONV_LOCK_REMOVE}, {NEXT_REMOVE}{owner_remove}"
            ),
            format!("{lock_cond}openCount > :one"),
        ),
        LeaveVariant::Last => (
            format!(
                "SET openCount = openCount - :one, readyShard = :rshard, {owner_set}rev = rev + :one REMOVE readyAt, #pr, headSeq, {NEXT_REMOVE}, {CONV_LOCK_REMOVE}{owner_remove}"
            ),
            format!("{lock_cond}openCount = :one"),
        ),
    }
}

impl Store {
    fn q(&self) -> &str {
        &self.tables.queue
    }

    // ------------------------------------------------------------------ enqueue

    /// `enqueue`: one TransactWriteItems (profile check + conversation + message [+ dedupe key]).
    #[instrument(skip(self, args), fields(conversation_id = %args.conversation_id, agent_key = %args.agent_key))]
    pub async fn enqueue(&self, args: EnqueueArgs) -> AppResult<EnqueueResult> {
        rules::validate_conversation_id(&args.conversation_id)?;
        rules::validate_agent_key(&args.agent_key)?;
        let now = self.now();
        let pol = &self.policy.queue;
        let cfg = self.message_config().await?;
        let checked = (|| {
            Ok((
                rules::resolve_priority(args.priority, pol)?,
                rules::resolve_max_attempts(args.max_attempts, pol)?,
                rules::resolve_scheduled_for(args.scheduled_for, now, pol)?,
                rules::build_payload(args.payload, cfg.as_ref(), pol)?,
            ))
        })();
        let (priority, max_attempts, due, payload) = match checked {
            Ok(v) => v,
            Err(e) => {
                // An unknown or disabled agent is reported before what is wrong with the message
                // (one GetItem, on refused enqueues only).
                return Err(self.agent_refusal(&args.agent_key).await?.unwrap_or(e));
            }
        };
        let cid = args.conversation_id;
        let msg = rules::new_message(rules::NewMessage {
            conversation_id: cid.clone(),
            agent_key: args.agent_key.clone(),
            ulid: ids::ulid(now),
            payload,
            priority,
            due,
            max_attempts,
            now,
        });
        let message_id = msg.message_id.clone();
        let external = msg.payload.external_message_id.clone();
        let msg_item = to_item(&msg)?;
        let attachment_rows = super::media::inbound_rows(&msg, now)?;
        let storage_claims = super::media::storage_claims(&msg);
        let ex = base_ex()
            .val(":a", s(&args.agent_key))
            .val(":t", AttributeValue::Bool(true))
            .val(":cid", s(&cid))
            .val(":now", n(now))
            .val(":due", n(due))
            .val(":ck", s(rules::CONV_OPEN_KEY))
            .val(":shard", s(rules::ready_shard(&cid, pol.ready_shards)))
            .val(":zero", n(0))
            .val(":one", n(1))
            .val(":seq", s(msg.sk.trim_start_matches("M#")))
            .val(":p", n(priority));
        let mut lower = false;
        for attempt in 0..MAX_TX_RETRIES {
            let mut items = vec![
                tx_check(
                    &self.tables.control,
                    key(format!("AGENT#{}", args.agent_key), "PROFILE"),
                    "attribute_exists(pk) AND enabled = :t",
                    &ex,
                ),
                self.enqueue_conv_update(&cid, lower, &ex),
                tx_put(self.q(), msg_item.clone(), "attribute_not_exists(pk)", &ex),
            ];
            if let Some(x) = &external {
                let mut d = key(rules::conversation_pk(&cid), rules::dedupe_sk(x));
                d.insert("messageId".into(), s(&message_id));
                d.insert("ttl".into(), n(rules::ttl_seconds(now + pol.dead_letter_retention_ms)));
                items.push(tx_put(self.q(), d, "attribute_not_exists(pk)", &ex));
            }
            let first_attachment = items.len();
            for row in &attachment_rows {
                items.push(tx_put(self.q(), row.clone(), "attribute_not_exists(pk)", &ex));
            }
            // Each storage id is claimed for this conversation (or already is): never another's.
            let first_claim = items.len();
            for c in &storage_claims {
                items.push(tx_put(self.q(), c.clone(), super::media::STORAGE_CLAIM_COND, &ex));
            }
            match self.transact(items).await {
                Ok(()) => {
                    debug!(%message_id, "enqueued");
                    return Ok(EnqueueResult { message_id, deduplicated: false });
                }
                Err(TxError::Cancelled(r)) => {
                    if r.first().is_some_and(Reason::failed_condition) {
                        return Err(agent_missing(&args.agent_key));
                    }
                    if let Some(dup) = external.as_ref().and(r.get(3)).filter(|r| r.failed_condition()) {
                        let first = dup
                            .item
                            .as_ref()
                            .and_then(|i| i.get("messageId"))
                            .and_then(|v| v.as_s().ok())
                            .cloned()
                            .ok_or_else(|| AppError::internal("dedupe key without messageId"))?;
                        return Ok(EnqueueResult { message_id: first, deduplicated: true });
                    }
                    // After the dedupe check: a retried enqueue carries the same attachments.
                    if let Some((i, _)) = r.iter().enumerate().skip(first_claim).find(|(_, x)| x.failed_condition()) {
                        let sid = attachment_rows
                            .get(i - first_claim)
                            .and_then(|row| row.get("storageId"))
                            .and_then(|v| v.as_s().ok())
                            .cloned()
                            .unwrap_or_default();
                        return Err(AppError::conflict(format!(
                            "storageId '{sid}' belongs to another conversation; an attachment can only be \
                             referenced from the conversation it was stored for"
                        )));
                    }
                    if r.iter().take(first_claim).skip(first_attachment).any(Reason::failed_condition) {
                        return Err(AppError::conflict(format!(
                            "an attachment storageId of this message is already attached in conversation '{cid}'"
                        )));
                    }
                    if let Some(conv) = r.get(1).filter(|r| r.failed_condition()) {
                        let old: Option<ConversationItem> = conv.item.clone().map(from_item).transpose()?;
                        if let Some(old) = old {
                            if old.agent_key != args.agent_key {
                                return Err(AppError::conflict(format!(
                                    "Conversation '{cid}' is already bound to agent '{}', cannot enqueue for '{}'.",
                                    old.agent_key, args.agent_key
                                )));
                            }
                            lower = needs_lower(&old, due);
                        }
                        continue;
                    }
                    if r.iter().any(Reason::conflict) {
                        conflict_pause(attempt).await;
                        continue;
                    }
                    return Err(TxError::Cancelled(r).into_app("enqueue"));
                }
                Err(e) => return Err(e.into_app("enqueue")),
            }
        }
        Err(AppError::conflict("enqueue: too much contention on this conversation; try again"))
    }

    /// The refusal of an enqueue for `agent_key` when its profile is missing or disabled (one
    /// GetItem): reported before anything wrong with the message itself.
    pub(crate) async fn agent_refusal(&self, agent_key: &str) -> AppResult<Option<AppError>> {
        Ok((!self.get_agent(agent_key).await?.is_some_and(|p| p.enabled)).then(|| agent_missing(agent_key)))
    }

    /// The conversation half of enqueue/redrive. `lower` = this message makes the conversation
    /// ready earlier than its current `readyAt`.
    fn enqueue_conv_update(&self, cid: &str, lower: bool, ex: &Ex) -> TransactWriteItem {
        let common = "conversationId = if_not_exists(conversationId, :cid), agentKey = if_not_exists(agentKey, :a), \
            createdAt = if_not_exists(createdAt, :now), openKey = :ck, readyShard = if_not_exists(readyShard, :shard), \
            openCount = if_not_exists(openCount, :zero) + :one, #pr = if_not_exists(#pr, :p), headSeq = if_not_exists(headSeq, :seq), \
            rev = if_not_exists(rev, :zero) + :one";
        let (update, cond) = if lower {
            (
                format!("SET {common}, readyAt = :due"),
                "agentKey = :a AND readyAt > :due AND attribute_not_exists(lockLeaseId) AND (attribute_not_exists(ownerUntil) OR ownerUntil < readyAt)".to_string(),
            )
        } else {
            (
                format!("SET {common}, readyAt = if_not_exists(readyAt, :due)"),
                "(attribute_not_exists(agentKey) OR agentKey = :a) AND (attribute_not_exists(readyAt) OR readyAt <= :due OR attribute_exists(lockLeaseId) OR ownerUntil >= readyAt)".to_string(),
            )
        };
        tx_update(self.q(), key(rules::conversation_pk(cid), rules::CONV_SK), &update, Some(&cond), ex)
    }

    // ------------------------------------------------------------------ claim

    /// `claim`. With `conversation_id` (a sticky worker): one Query + one TransactWriteItems.
    /// Without: one Query of the `ready` index first. Never returns `None` while a message this
    /// worker may take is claimable.
    #[instrument(skip(self))]
    pub async fn claim(&self, worker_id: &str, conversation_id: Option<&str>) -> AppResult<Option<ClaimedJob>> {
        self.claim_as(worker_id, conversation_id, None).await
    }

    /// `claim` for an authenticated worker: the claim transaction also requires the worker row to
    /// hold `token_hash` (and never registers a worker). `None` = administrative/test use, where
    /// an unknown worker is registered as in the original.
    pub async fn claim_as(
        &self,
        worker_id: &str,
        conversation_id: Option<&str>,
        token_hash: Option<&str>,
    ) -> AppResult<Option<ClaimedJob>> {
        rules::validate_worker_id(worker_id)?;
        if let Some(c) = conversation_id {
            rules::validate_conversation_id(c)?;
            return Ok(match self.claim_in_conversation(worker_id, c, token_hash).await? {
                ConvOutcome::Claimed(j) => Some(j),
                _ => None,
            });
        }
        let shards = self.policy.queue.ready_shards.max(1);
        let start = (ids::random_u128() % u128::from(shards)) as u32;
        // Per shard: conversations that wait (`r`), then locked ones whose lease ran out (`l`).
        let partitions = (0..shards).flat_map(|i| {
            let n = (start + i) % shards;
            [format!("r{n}"), format!("l{n}")]
        });
        for shard in partitions {
            let mut page_start: Option<Item> = None;
            loop {
                let now = self.now();
                let ex = Ex::new().val(":s", s(&shard)).val(":now", n(now)).val(":w", s(worker_id));
                let kc = "readyShard = :s AND readyAt <= :now";
                let filter = "attribute_not_exists(ownerId) OR ownerId = :w OR ownerUntil <= :now";
                let (names, values) = ex.for_exprs(&[kc, filter]);
                let out = self
                    .client
                    .query()
                    .table_name(self.q())
                    .index_name(schema::IDX_READY)
                    .key_condition_expression(kc)
                    .filter_expression(filter)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .limit(READY_PAGE)
                    .set_exclusive_start_key(page_start.take())
                    .send()
                    .await
                    .map_err(|e| sdk_error("Query ready", e))?;
                let mut cands: Vec<ConversationItem> =
                    out.items.unwrap_or_default().into_iter().map(from_item).collect::<AppResult<_>>()?;
                order_candidates(&mut cands);
                for c in cands {
                    match self.claim_in_conversation(worker_id, &c.conversation_id, token_hash).await? {
                        ConvOutcome::Claimed(j) => return Ok(Some(j)),
                        ConvOutcome::Nothing => {}
                        ConvOutcome::WorkerRefused(w) => {
                            let Some(w) = w else { return Ok(None) };
                            if w.status != crate::workers::model::WorkerStatus::Active {
                                return Ok(None);
                            }
                            match w.assigned_conversation_id {
                                Some(a) if a != c.conversation_id => {
                                    return Ok(match self.claim_in_conversation(worker_id, &a, token_hash).await? {
                                        ConvOutcome::Claimed(j) => Some(j),
                                        _ => None,
                                    });
                                }
                                _ => {}
                            }
                        }
                    }
                }
                match out.last_evaluated_key {
                    Some(k) if !k.is_empty() => page_start = Some(k),
                    _ => break,
                }
            }
        }
        // The ready index hides a conversation from everyone but its live owner; an owner that
        // polls without a filter still gets its own work (one GetItem, on empty polls only).
        if let Some(w) = self.get_worker(worker_id).await?
            && w.status == crate::workers::model::WorkerStatus::Active
            && let Some(a) = w.assigned_conversation_id
        {
            return Ok(match self.claim_in_conversation(worker_id, &a, token_hash).await? {
                ConvOutcome::Claimed(j) => Some(j),
                _ => None,
            });
        }
        Ok(None)
    }

    /// The conversation item and its first open messages, strongly consistent, in one Query.
    async fn read_open(&self, cid: &str, limit: i32) -> AppResult<Option<(ConversationItem, Vec<MessageItem>)>> {
        let out = self
            .client
            .query()
            .table_name(self.q())
            .index_name(schema::IDX_OPEN)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(rules::conversation_pk(cid)))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query open", e))?;
        let mut items = out.items.unwrap_or_default().into_iter();
        let Some(first) = items.next() else { return Ok(None) };
        if first.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) != Some(rules::CONV_SK) {
            return Err(AppError::internal(format!("conversation '{cid}' has open messages but no conversation item")));
        }
        let conv: ConversationItem = from_item(first)?;
        let open = items.map(from_item).collect::<AppResult<Vec<MessageItem>>>()?;
        Ok(Some((conv, open)))
    }

    async fn claim_in_conversation(
        &self,
        worker_id: &str,
        cid: &str,
        token_hash: Option<&str>,
    ) -> AppResult<ConvOutcome> {
        for attempt in 0..MAX_TX_RETRIES {
            let now = self.now();
            let Some((conv, open)) = self.read_open(cid, 3).await? else { return Ok(ConvOutcome::Nothing) };
            let plan = rules::plan_claim(&conv, &open, worker_id, now);
            let (head, hint, reclaim) = match plan {
                ClaimPlan::Nothing { why, repair_ready_at } => {
                    debug!(?why, cid, "nothing to claim");
                    if let Some(r) = repair_ready_at {
                        self.repair_ready_at(&conv, r).await?;
                    }
                    return Ok(ConvOutcome::Nothing);
                }
                ClaimPlan::DeadLetterExpired { head } => {
                    self.recover_message(&conv, &head, now, false).await?;
                    continue;
                }
                ClaimPlan::RecoverLocked { msg_sk } => {
                    let k = key(rules::conversation_pk(cid), &msg_sk);
                    match self.get(self.q(), k).await?.map(from_item::<MessageItem>).transpose()? {
                        Some(m) => {
                            self.recover_message(&conv, &m, now, false).await?;
                        }
                        None => self.drop_dangling_lock(&conv).await?,
                    }
                    continue;
                }
                ClaimPlan::Claim { head, hint } => (head, hint, false),
                ClaimPlan::Reclaim { head, hint } => (head, hint, true),
            };
            // What the claim sees behind the head becomes the conversation's rank when it leaves.
            let next_msg = open.get(1).filter(|m| m.sk != head.sk);
            let next = if next_msg.is_some() { ", nextPr = :npr, nextSeq = :nseq" } else { " REMOVE nextPr, nextSeq" };
            let lease = ids::lease_id(now, hint);
            let until = now + self.policy.queue.lease_ms;
            let ex = base_ex()
                .val(":queued", s("queued"))
                .val(":processing", s("processing"))
                .val(":active", s("active"))
                .val(":w", s(worker_id))
                .val(":l", s(&lease))
                .val(":old", s(head.lease_id.clone().unwrap_or_default()))
                .val(":oldlock", s(conv.lock_lease_id.clone().unwrap_or_default()))
                .val(":npr", n(next_msg.map_or(0.0, |m| m.priority)))
                .val(":nseq", s(next_msg.map_or("", |m| m.sk.trim_start_matches("M#"))))
                .val(":until", n(until))
                .val(":now", n(now))
                .val(":ou", n(now + self.policy.workers.stale_after_ms))
                .val(":sk", s(&head.sk))
                .val(":cid", s(cid))
                .val(":agent", s(&head.agent_key))
                .val(":one", n(1))
                .val(":zero", n(0))
                .val(":fly", s("fly"))
                .val(":expired", s(rules::LEASE_EXPIRED_ERROR))
                .val(":lshard", s(rules::locked_shard(cid, self.policy.queue.ready_shards)))
                .val(":th", s(token_hash.unwrap_or_default()));
            let worker_cond = if token_hash.is_some() {
                "#st = :active AND tokenHash = :th AND (attribute_not_exists(assignedConversationId) OR assignedConversationId = :cid)"
            } else {
                "(attribute_not_exists(workerId) OR #st = :active) AND (attribute_not_exists(assignedConversationId) OR assignedConversationId = :cid)"
            };
            // A head left processing without a lock (a partial write, a hand edit) is reclaimed
            // like an expired one, on the condition that the conversation is still unlocked.
            let old_lease_cond =
                if head.lease_id.is_some() { "leaseId = :old" } else { "attribute_not_exists(leaseId)" };
            let (msg_update, msg_cond) = if reclaim {
                (
                    "SET claimedBy = :w, leaseId = :l, leaseExpiresAt = :until, attempts = attempts + :one, lastError = :expired",
                    format!(
                        "#st = :processing AND {old_lease_cond} AND (attribute_not_exists(leaseExpiresAt) OR leaseExpiresAt <= :now)"
                    ),
                )
            } else {
                (
                    "SET #st = :processing, claimedBy = :w, leaseId = :l, leaseExpiresAt = :until",
                    "#st = :queued AND scheduledFor <= :now".to_string(),
                )
            };
            let owner_ok = "(attribute_not_exists(ownerId) OR ownerId = :w OR ownerUntil <= :now)";
            let conv_cond = match (&conv.lock_lease_id, reclaim) {
                (Some(_), true) => format!("lockLeaseId = :oldlock AND lockUntil <= :now AND {owner_ok}"),
                _ => format!("attribute_not_exists(lockLeaseId) AND {owner_ok}"),
            };
            let items = vec![
                tx_update(self.q(), key(&head.pk, &head.sk), msg_update, Some(&msg_cond), &ex),
                tx_update(
                    self.q(),
                    key(&conv.pk, &conv.sk),
                    &format!(
                        "SET lockLeaseId = :l, lockWorkerId = :w, lockMsgSk = :sk, lockUntil = :until, lockHeartbeatAt = :now, \
                         readyAt = :until, readyShard = :lshard, ownerId = :w, ownerUntil = :ou, rev = rev + :one{next}"
                    ),
                    Some(&conv_cond),
                    &ex,
                ),
                tx_update(
                    &self.tables.workers,
                    worker_key(worker_id),
                    "SET provider = if_not_exists(provider, :fly), #st = :active, #ld = if_not_exists(#ld, :zero) + :one, \
                     heartbeatAt = :now, lastClaimAt = :now, assignedConversationId = :cid, assignedAgentKey = :agent, \
                     assignedLeaseId = :l, assignedAt = if_not_exists(assignedAt, :now) REMOVE scheduledShutdownAt, stoppedAt",
                    Some(worker_cond),
                    &ex,
                ),
            ];
            // I6 by the owner's own row: an owner whose lease calls went quiet keeps its
            // conversation while its row says it is alive (the idle `worker-heartbeat`) and still
            // assigned here — whether the assignment came from a claim or from `upsertWorkerState`.
            let mut items = items;
            if let Some(owner) = conv.owner_id.as_deref().filter(|o| *o != worker_id) {
                items.push(self.owner_gone_check(owner, cid, now));
            }
            match self.transact(items).await {
                Ok(()) => {
                    // The holder of the recovered lease has one job less (it may be this worker,
                    // whose load the claim just raised again).
                    if reclaim && let Some(old) = &head.claimed_by {
                        self.release_worker_load(old, head.lease_id.as_deref()).await?;
                    }
                    let attempts = head.attempts + u32::from(reclaim);
                    return Ok(ConvOutcome::Claimed(ClaimedJob {
                        message_id: head.message_id,
                        conversation_id: head.conversation_id,
                        agent_key: head.agent_key,
                        lease_id: lease,
                        lease_expires_at: until,
                        attempts,
                        payload: head.payload,
                    }));
                }
                Err(TxError::Cancelled(r)) => {
                    if let Some(w) = r.get(2).filter(|r| r.failed_condition()) {
                        let row = w.item.clone().map(from_item::<WorkerItem>).transpose()?;
                        if let Some(th) = token_hash {
                            crate::workers::auth::check_row(row.as_ref(), th)?;
                        }
                        return Ok(ConvOutcome::WorkerRefused(row));
                    }
                    if let Some(o) = r.get(3).filter(|r| r.failed_condition()) {
                        // The owner is alive: hide the conversation from the ready index until
                        // its heartbeat would go stale.
                        let hb = o
                            .item
                            .as_ref()
                            .and_then(|i| i.get("heartbeatAt"))
                            .and_then(|v| v.as_n().ok())
                            .and_then(|v| v.parse::<i64>().ok())
                            .unwrap_or(now);
                        let until = hb + self.policy.workers.stale_after_ms;
                        if conv.ready_at.is_some_and(|r| r < until) && conv.lock_lease_id.is_none() {
                            self.repair_ready_at(&conv, Some(until)).await?;
                        }
                        return Ok(ConvOutcome::Nothing);
                    }
                    // Lost the race to another claimer: the conversation as it is now (returned
                    // by the failed condition) is locked or owned by someone else, so move on to
                    // the next candidate without reading it again.
                    let taken = r
                        .get(1)
                        .filter(|x| x.failed_condition())
                        .and_then(|x| x.item.clone())
                        .and_then(|i| from_item::<ConversationItem>(i).ok())
                        .is_some_and(|c| {
                            c.lock_until.is_some_and(|t| t > now) && c.lock_worker_id.as_deref() != Some(worker_id)
                        });
                    if taken {
                        return Ok(ConvOutcome::Nothing);
                    }
                    // Otherwise read again and decide again.
                    if r.iter().any(Reason::conflict) {
                        conflict_pause(attempt).await;
                    }
                    continue;
                }
                Err(e) => return Err(e.into_app("claim")),
            }
        }
        Ok(ConvOutcome::Nothing)
    }

    /// A ConditionCheck that passes unless `owner` is alive and assigned to `cid`: row present,
    /// `active`, heartbeat fresh (lease calls and the idle `worker-heartbeat` both refresh it).
    fn owner_gone_check(&self, owner: &str, cid: &str, now: Millis) -> TransactWriteItem {
        let cond = "attribute_not_exists(workerId) OR #st <> :active OR heartbeatAt <= :stale \
            OR attribute_not_exists(assignedConversationId) OR assignedConversationId <> :cid";
        let ex = Ex::new()
            .name("#st", "status")
            .val(":active", s("active"))
            .val(":stale", n(now - self.policy.workers.stale_after_ms))
            .val(":cid", s(cid));
        tx_check(&self.tables.workers, worker_key(owner), cond, &ex)
    }

    /// Move `readyAt` to what a claimer just learnt, unless the conversation changed meanwhile.
    async fn repair_ready_at(&self, conv: &ConversationItem, to: Option<Millis>) -> AppResult<()> {
        let ex = Ex::new().val(":rev", n(conv.rev)).val(":one", n(1));
        let (update, ex) = match to {
            Some(t) => ("SET readyAt = :t, rev = rev + :one", ex.val(":t", n(t))),
            None => ("SET rev = rev + :one REMOVE readyAt", ex),
        };
        let cond = "rev = :rev";
        let (names, values) = ex.for_exprs(&[update, cond]);
        let r = self
            .client
            .update_item()
            .table_name(self.q())
            .set_key(Some(key(&conv.pk, &conv.sk)))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await;
        super::applied(r, "UpdateItem readyAt").map(|_| ())
    }

    /// Put back (or dead-letter) a message whose lease expired; the expiry counts as an attempt.
    /// The sweep (`backoff`) requeues it with the same backoff as `fail`; a claim that finds it
    /// takes it at once. A message left `processing` without the conversation's lock naming it
    /// (a partial write or a hand edit) is repaired whatever its lease says: the lock is the truth
    /// (I3), and the write is conditional on the conversation's `rev`.
    /// Returns what happened, or `None` when the state moved on meanwhile.
    async fn recover_message(
        &self,
        conv: &ConversationItem,
        m: &MessageItem,
        now: Millis,
        backoff: bool,
    ) -> AppResult<Option<FailOutcome>> {
        let orphan = conv.lock_msg_sk.as_deref() != Some(m.sk.as_str());
        if m.status != MessageStatus::Processing || (!orphan && m.lease_expires_at.is_some_and(|t| t > now)) {
            if !orphan && m.status != MessageStatus::Processing {
                self.drop_dangling_lock(conv).await?;
            }
            return Ok(None);
        }
        if orphan && conv.lock_lease_id.is_some() && conv.lock_until.is_some_and(|t| t > now) {
            // Another message holds the conversation's live lock: repaired once it is released.
            return Ok(None);
        }
        let (attempts, outcome) = if backoff {
            rules::plan_fail(m.attempts, m.max_attempts, now, ids::random_unit(), &self.policy.queue)
        } else {
            let n = m.attempts + 1;
            (n, if n >= m.max_attempts { FailOutcome::DeadLetter } else { FailOutcome::Requeue { at: now } })
        };
        let dead = outcome == FailOutcome::DeadLetter;
        let at = match outcome {
            FailOutcome::Requeue { at } => at,
            FailOutcome::DeadLetter => now,
        };
        let ex = base_ex()
            .val(":processing", s("processing"))
            .val(":old", s(m.lease_id.clone().unwrap_or_default()))
            .val(":now", n(now))
            .val(":at", n(at))
            .val(":n", n(attempts))
            .val(":err", s(rules::LEASE_EXPIRED_ERROR))
            .val(":rev", n(conv.rev))
            .val(":one", n(1))
            .val(":ou", n(now))
            .val(":dead", s("dead_letter"))
            .val(":queued", s("queued"))
            .val(":ttl", n(rules::ttl_seconds(now + self.policy.queue.dead_letter_retention_ms)))
            .val(":skey", s(rules::status_key(at, m.sk.trim_start_matches("M#"))))
            .val(":rshard", s(rules::ready_shard(&conv.conversation_id, self.policy.queue.ready_shards)));
        let lease_cond = if m.lease_id.is_some() { "leaseId = :old" } else { "attribute_not_exists(leaseId)" };
        let msg_cond = if orphan {
            format!("#st = :processing AND {lease_cond}")
        } else {
            format!("#st = :processing AND {lease_cond} AND leaseExpiresAt <= :now")
        };
        let retry = if backoff { "nextRetryAt = :at, " } else { "" };
        // The lock's message is the head; an orphan may not be, and readyAt stays a lower bound.
        let ready = if orphan { ":now" } else { ":at" };
        let (msg_update, conv_update) = if dead {
            let v = if conv.open_count > 1 { LeaveVariant::More } else { LeaveVariant::Last };
            (
                format!(
                    "SET #st = :dead, attempts = :n, deadLetteredAt = :now, lastError = :err, #ttl = :ttl REMOVE openKey, {CLAIM_FIELDS}"
                ),
                leave_update(v, false, Owner::Drop).0,
            )
        } else {
            (
                format!(
                    "SET #st = :queued, attempts = :n, scheduledFor = :at, {retry}statusKey = :skey, lastError = :err REMOVE {CLAIM_FIELDS}"
                ),
                format!(
                    "SET readyAt = {ready}, readyShard = :rshard, rev = rev + :one REMOVE {CONV_LOCK_REMOVE}, ownerId, ownerUntil"
                ),
            )
        };
        let items = vec![
            tx_update(self.q(), key(&m.pk, &m.sk), &msg_update, Some(&msg_cond), &ex),
            tx_update(self.q(), key(&conv.pk, &conv.sk), &conv_update, Some("rev = :rev"), &ex),
        ];
        match self.transact(items).await {
            Ok(()) => {
                if let Some(w) = &m.claimed_by {
                    self.release_worker_load(w, m.lease_id.as_deref()).await?;
                }
                Ok(Some(outcome))
            }
            Err(TxError::Cancelled(_)) => Ok(None),
            Err(e) => Err(e.into_app("recover expired lease")),
        }
    }

    /// A lock naming a message that is gone or no longer processing: remove it.
    async fn drop_dangling_lock(&self, conv: &ConversationItem) -> AppResult<()> {
        let now = self.now();
        let ex = Ex::new()
            .val(":rev", n(conv.rev))
            .val(":one", n(1))
            .val(":now", n(now))
            .val(":rshard", s(rules::ready_shard(&conv.conversation_id, self.policy.queue.ready_shards)));
        let update = if conv.open_count > 0 {
            format!("SET readyAt = :now, readyShard = :rshard, rev = rev + :one REMOVE {CONV_LOCK_REMOVE}")
        } else {
            format!("SET readyShard = :rshard, rev = rev + :one REMOVE readyAt, {CONV_LOCK_REMOVE}")
        };
        let items = vec![tx_update(self.q(), key(&conv.pk, &conv.sk), &update, Some("rev = :rev"), &ex)];
        match self.transact(items).await {
            Ok(()) | Err(TxError::Cancelled(_)) => Ok(()),
            Err(e) => Err(e.into_app("drop lock")),
        }
    }

    /// The holder of a recovered lease has one job less; its heartbeat is not touched (W7). When
    /// `lease` is given and the row still records that lease as its assignment, the worker holds
    /// no lock any more (a worker holds at most one) and its assignment is released too, so a slow
    /// but alive worker can claim again. A stopped worker's row is left alone. One consistent
    /// GetItem, then one UpdateItem conditional on what was read.
    async fn release_worker_load(&self, worker_id: &str, lease: Option<&str>) -> AppResult<()> {
        for _ in 0..MAX_TX_RETRIES {
            let Some(w) = self.get_worker(worker_id).await? else { return Ok(()) };
            let plan = rules::plan_release(&w, lease);
            if plan == rules::ReleasePlan::default() {
                return Ok(());
            }
            let mut sets = Vec::new();
            if plan.lower_load {
                sets.push("SET #ld = #ld - :one");
            }
            if plan.unassign {
                sets.push("REMOVE assignedConversationId, assignedAgentKey, assignedLeaseId, assignedAt");
            }
            let update = sets.join(" ");
            let cond = "#st = :st AND #ld = :ld AND (assignedLeaseId = :al OR (attribute_not_exists(assignedLeaseId) AND :al = :none))";
            let ex = Ex::new()
                .name("#ld", "load")
                .name("#st", "status")
                .val(":one", n(1))
                .val(":st", s(w.status.as_str()))
                .val(":ld", n(w.load))
                .val(":al", s(w.assigned_lease_id.clone().unwrap_or_default()))
                .val(":none", s(""));
            let (names, values) = ex.for_exprs(&[&update, cond]);
            let r = self
                .client
                .update_item()
                .table_name(&self.tables.workers)
                .set_key(Some(worker_key(worker_id)))
                .update_expression(update)
                .condition_expression(cond)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await;
            if super::applied(r, "UpdateItem worker load")?.is_some() {
                return Ok(());
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ heartbeat / complete / fail

    /// A precise error for a lease call whose message condition failed.
    fn lease_error(
        &self,
        args_worker: &str,
        lease: &str,
        mref: &MessageRef,
        old: Option<Item>,
        now: Millis,
    ) -> AppError {
        match old.map(from_item::<MessageItem>) {
            None => AppError::not_found(format!("message {} does not exist", mref.id())),
            Some(Err(e)) => e,
            Some(Ok(m)) => rules::check_lease(&m, args_worker, lease, now).err().unwrap_or_else(|| {
                AppError::lease(LeaseRefusal::LeaseMismatch, format!("lease '{lease}' changed during the call"))
            }),
        }
    }

    /// `heartbeat`: extend a live lease. One TransactWriteItems.
    #[instrument(skip(self, a), fields(worker_id = %a.worker_id, message_id = %a.message_id))]
    pub async fn heartbeat(&self, a: &LeaseArgs) -> AppResult<HeartbeatResult> {
        rules::validate_worker_id(&a.worker_id)?;
        let mref = MessageRef::parse(&a.message_id)?;
        for attempt in 0..MAX_TX_RETRIES {
            let now = self.now();
            let until = now + self.policy.queue.lease_ms;
            let ex = self.lease_ex(a, now).val(":until", n(until));
            let items = vec![
                tx_update(self.q(), self.msg_key(&mref), "SET leaseExpiresAt = :until", Some(LEASE_HELD), &ex),
                tx_update(
                    self.q(),
                    key(rules::conversation_pk(&mref.conversation_id), rules::CONV_SK),
                    "SET lockUntil = :until, readyAt = :until, lockHeartbeatAt = :now, ownerUntil = :ou, rev = rev + :one",
                    Some("lockLeaseId = :l"),
                    &ex,
                ),
                tx_update(
                    &self.tables.workers,
                    worker_key(&a.worker_id),
                    "SET heartbeatAt = :now",
                    Some(worker_row_cond(a)),
                    &ex,
                ),
            ];
            match self.transact(items).await {
                Ok(()) => return Ok(HeartbeatResult { ok: true, lease_expires_at: until }),
                Err(e) => self.lease_tx_error(e, a, &mref, now, attempt).await?,
            }
        }
        Err(AppError::conflict("heartbeat: too much contention; try again"))
    }

    /// `complete`: the message is done. One TransactWriteItems (two when the lease id's hint about
    /// the rest of the conversation is stale).
    #[instrument(skip(self, a), fields(worker_id = %a.worker_id, message_id = %a.message_id))]
    pub async fn complete(&self, a: &LeaseArgs) -> AppResult<()> {
        rules::validate_worker_id(&a.worker_id)?;
        let mref = MessageRef::parse(&a.message_id)?;
        let mut variant = LeaveVariant::from(ids::lease_hint(&a.lease_id));
        for attempt in 0..MAX_TX_RETRIES {
            let now = self.now();
            let ex = self
                .lease_ex(a, now)
                .val(":done", s("done"))
                .val(":ttl", n(rules::ttl_seconds(now + self.policy.queue.done_retention_ms)));
            let (cu, cc) = leave_update(variant, true, Owner::Refresh);
            let items = vec![
                tx_update(
                    self.q(),
                    self.msg_key(&mref),
                    &format!(
                        "SET #st = :done, completedAt = :now, #ttl = :ttl REMOVE openKey, lastError, nextRetryAt, {CLAIM_FIELDS}"
                    ),
                    Some(LEASE_HELD),
                    &ex,
                ),
                tx_update(
                    self.q(),
                    key(rules::conversation_pk(&mref.conversation_id), rules::CONV_SK),
                    &cu,
                    Some(&cc),
                    &ex,
                ),
                self.worker_release_item(a, &ex),
            ];
            match self.transact(items).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(v) = flip_variant(&e, &a.lease_id) {
                        variant = v;
                        continue;
                    }
                    self.lease_tx_error(e, a, &mref, now, attempt).await?
                }
            }
        }
        Err(AppError::conflict("complete: too much contention; try again"))
    }

    /// `fail`: retry with backoff, or dead-letter after `maxAttempts`. One GetItem + one
    /// TransactWriteItems.
    #[instrument(skip(self, a), fields(worker_id = %a.worker_id, message_id = %a.message_id))]
    pub async fn fail(&self, a: &FailArgs) -> AppResult<FailResult> {
        rules::validate_worker_id(&a.worker_id)?;
        let mref = MessageRef::parse(&a.message_id)?;
        let la = LeaseArgs {
            worker_id: a.worker_id.clone(),
            message_id: a.message_id.clone(),
            lease_id: a.lease_id.clone(),
            token_hash: a.token_hash.clone(),
        };
        let mut variant = LeaveVariant::from(ids::lease_hint(&a.lease_id));
        for attempt in 0..MAX_TX_RETRIES {
            let now = self.now();
            let m: MessageItem = match self.get(self.q(), self.msg_key(&mref)).await? {
                None => return Err(AppError::not_found(format!("message {} does not exist", mref.id()))),
                Some(i) => from_item(i)?,
            };
            rules::check_lease(&m, &a.worker_id, &a.lease_id, now)?;
            let (attempts, outcome) =
                rules::plan_fail(m.attempts, m.max_attempts, now, ids::random_unit(), &self.policy.queue);
            let ex = self
                .lease_ex(&la, now)
                .val(":seen", n(m.attempts))
                .val(":n", n(attempts))
                .val(":err", s(rules::bounded_error(&a.error_message)))
                .val(":queued", s("queued"))
                .val(":dead", s("dead_letter"))
                .val(":ttl", n(rules::ttl_seconds(now + self.policy.queue.dead_letter_retention_ms)));
            let msg_cond = format!("{LEASE_HELD} AND attempts = :seen");
            let ck = key(rules::conversation_pk(&mref.conversation_id), rules::CONV_SK);
            let (msg_item, conv_item, result) = match outcome {
                FailOutcome::Requeue { at } => {
                    let ex = ex.clone().val(":at", n(at)).val(":skey", s(rules::status_key(at, &mref.ulid)));
                    (
                        tx_update(
                            self.q(),
                            self.msg_key(&mref),
                            &format!(
                                "SET #st = :queued, attempts = :n, scheduledFor = :at, nextRetryAt = :at, lastError = :err, statusKey = :skey REMOVE {CLAIM_FIELDS}"
                            ),
                            Some(&msg_cond),
                            &ex,
                        ),
                        tx_update(
                            self.q(),
                            ck,
                            &format!(
                                "SET readyAt = :at, readyShard = :rshard, ownerUntil = :ou, rev = rev + :one REMOVE {CONV_LOCK_REMOVE}"
                            ),
                            Some("lockLeaseId = :l"),
                            &ex,
                        ),
                        FailResult { requeued: true, dead_lettered: false, next_scheduled_for: Some(at) },
                    )
                }
                FailOutcome::DeadLetter => {
                    let (cu, cc) = leave_update(variant, true, Owner::Refresh);
                    (
                        tx_update(
                            self.q(),
                            self.msg_key(&mref),
                            &format!(
                                "SET #st = :dead, attempts = :n, deadLetteredAt = :now, lastError = :err, #ttl = :ttl REMOVE openKey, {CLAIM_FIELDS}"
                            ),
                            Some(&msg_cond),
                            &ex,
                        ),
                        tx_update(self.q(), ck, &cu, Some(&cc), &ex),
                        FailResult { requeued: false, dead_lettered: true, next_scheduled_for: None },
                    )
                }
            };
            let items = vec![msg_item, conv_item, self.worker_release_item(&la, &ex)];
            match self.transact(items).await {
                Ok(()) => return Ok(result),
                Err(e) => {
                    if let Some(v) = flip_variant(&e, &a.lease_id) {
                        variant = v;
                        continue;
                    }
                    self.lease_tx_error(e, &la, &mref, now, attempt).await?
                }
            }
        }
        Err(AppError::conflict("fail: too much contention; try again"))
    }

    fn msg_key(&self, m: &MessageRef) -> Item {
        key(rules::conversation_pk(&m.conversation_id), rules::message_sk(&m.ulid))
    }

    fn lease_ex(&self, a: &LeaseArgs, now: Millis) -> Ex {
        let cid = a.message_id.split_once(':').map(|(_, c)| c).unwrap_or_default();
        base_ex()
            .val(":rshard", s(rules::ready_shard(cid, self.policy.queue.ready_shards)))
            .val(":processing", s("processing"))
            .val(":l", s(&a.lease_id))
            .val(":w", s(&a.worker_id))
            .val(":now", n(now))
            .val(":ou", n(now + self.policy.workers.stale_after_ms))
            .val(":one", n(1))
            .val(":zero", n(0))
            .val(":th", s(a.token_hash.clone().unwrap_or_default()))
            .val(":stopped", s("stopped"))
    }

    fn worker_release_item(&self, a: &LeaseArgs, ex: &Ex) -> TransactWriteItem {
        tx_update(
            &self.tables.workers,
            worker_key(&a.worker_id),
            "SET #ld = if_not_exists(#ld, :zero) - :one, heartbeatAt = :now, lastCompleteAt = :now",
            Some(worker_row_cond(a)),
            ex,
        )
    }

    /// Map a failed lease transaction to its precise error, or pause for a retry (Ok).
    async fn lease_tx_error(
        &self,
        e: TxError,
        a: &LeaseArgs,
        mref: &MessageRef,
        now: Millis,
        attempt: u32,
    ) -> AppResult<()> {
        match e {
            TxError::Cancelled(r) => {
                if let Some(m) = r.first().filter(|r| r.failed_condition()) {
                    return Err(self.lease_error(&a.worker_id, &a.lease_id, mref, m.item.clone(), now));
                }
                if r.get(1).is_some_and(Reason::failed_condition) {
                    return Err(AppError::lease(
                        LeaseRefusal::LeaseMismatch,
                        format!(
                            "conversation '{}' is no longer locked by lease '{}'",
                            mref.conversation_id, a.lease_id
                        ),
                    ));
                }
                if let Some(w) = r.get(2).filter(|r| r.failed_condition()) {
                    if let Some(th) = &a.token_hash {
                        let row = w.item.clone().map(from_item::<WorkerItem>).transpose()?;
                        crate::workers::auth::check_row(row.as_ref(), th)?;
                    }
                    return Err(AppError::not_found(format!("worker '{}' is not registered", a.worker_id)));
                }
                if r.iter().any(Reason::conflict) {
                    conflict_pause(attempt).await;
                    return Ok(());
                }
                Err(TxError::Cancelled(r).into_app("lease call"))
            }
            other => Err(other.into_app("lease call")),
        }
    }

    // ------------------------------------------------------------------ conversation reads

    /// `hasQueuedJobsForConversation`: queued messages (due or not). One GetItem.
    pub async fn has_queued(&self, cid: &str) -> AppResult<bool> {
        rules::validate_conversation_id(cid)?;
        let Some(i) = self.get(self.q(), key(rules::conversation_pk(cid), rules::CONV_SK)).await? else {
            return Ok(false);
        };
        let c: ConversationItem = from_item(i)?;
        let processing = i64::from(c.lock_lease_id.is_some());
        Ok(c.open_count - processing > 0)
    }

    /// A worker assigned to `cid` by `upsertWorkerState` (reconcile pre-assigns every machine it
    /// spawns) becomes the conversation's sticky owner, as a claim would make it, unless another
    /// live owner holds it. Creates the (empty) conversation item when there is none yet, bound to
    /// the assignment's agent. One UpdateItem.
    pub(crate) async fn own_assigned_conversation(&self, worker_id: &str, cid: &str, agent_key: &str) -> AppResult<()> {
        rules::validate_conversation_id(cid)?;
        rules::validate_agent_key(agent_key)?;
        let now = self.now();
        let update = "SET conversationId = if_not_exists(conversationId, :cid), agentKey = if_not_exists(agentKey, :a), \
            createdAt = if_not_exists(createdAt, :now), openKey = :ck, readyShard = if_not_exists(readyShard, :shard), \
            openCount = if_not_exists(openCount, :zero), rev = if_not_exists(rev, :zero) + :one, ownerId = :w, ownerUntil = :ou";
        let cond = "attribute_not_exists(ownerId) OR ownerId = :w OR ownerUntil <= :now";
        let ex = Ex::new()
            .val(":cid", s(cid))
            .val(":a", s(agent_key))
            .val(":now", n(now))
            .val(":ck", s(rules::CONV_OPEN_KEY))
            .val(":shard", s(rules::ready_shard(cid, self.policy.queue.ready_shards)))
            .val(":zero", n(0))
            .val(":one", n(1))
            .val(":w", s(worker_id))
            .val(":ou", n(now + self.policy.workers.stale_after_ms));
        let (names, values) = ex.for_exprs(&[update, cond]);
        let r = self
            .client
            .update_item()
            .table_name(self.q())
            .set_key(Some(key(rules::conversation_pk(cid), rules::CONV_SK)))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await;
        super::applied(r, "UpdateItem conversation owner").map(|_| ())
    }

    pub async fn get_conversation(&self, cid: &str) -> AppResult<Option<ConversationItem>> {
        self.get(self.q(), key(rules::conversation_pk(cid), rules::CONV_SK)).await?.map(from_item).transpose()
    }

    pub async fn get_message(&self, message_id: &str) -> AppResult<Option<MessageItem>> {
        let m = MessageRef::parse(message_id)?;
        self.get(self.q(), self.msg_key(&m)).await?.map(from_item).transpose()
    }

    /// `appendConversationMessages`: one TransactWriteItems (conversation check + one item per entry).
    pub async fn append_messages(&self, a: AppendArgs) -> AppResult<AppendResult> {
        rules::validate_conversation_id(&a.conversation_id)?;
        const MAX_ENTRIES: usize = 50;
        const MAX_ENTRY_BYTES: usize = 64 * 1024;
        if a.messages.len() > MAX_ENTRIES {
            return Err(AppError::validation(format!(
                "messages has {} entries; at most {MAX_ENTRIES} per call",
                a.messages.len()
            )));
        }
        if let Some((i, _)) = a.messages.iter().enumerate().find(|(_, m)| m.content.len() > MAX_ENTRY_BYTES) {
            return Err(AppError::PayloadTooLarge(format!(
                "messages[{i}].content is longer than {MAX_ENTRY_BYTES} bytes"
            )));
        }
        if let Some((i, _)) = a.messages.iter().enumerate().find(|(_, m)| m.at.is_some_and(|at| at < 0)) {
            return Err(AppError::validation(format!("messages[{i}].at must not be negative (epoch milliseconds)")));
        }
        let workspace = a.workspace_id.clone().unwrap_or_else(|| "default".into());
        rules::validate_workspace_id(&workspace)?;
        let now = self.now();
        let pk = rules::conversation_pk(&a.conversation_id);
        if a.messages.is_empty() {
            if let Some(p) = &a.holder {
                let row = self.get_worker(&p.worker_id).await?;
                crate::workers::auth::check_row(row.as_ref(), &p.token_hash)?;
            }
            let conv = self.get_conversation(&a.conversation_id).await?;
            if let (Some(c), Some(p)) = (&conv, &a.holder) {
                rules::check_lock_holder(c, &p.worker_id, now)?;
            }
            return Ok(AppendResult { updated: conv.is_some(), message_count: 0 });
        }
        // The conversation remembers the workspace of the last append: with its (fixed) agentKey
        // that is the hydration cache key `<workspaceId>:<agentKey>` of spec §3.3. The entries are
        // items of their own, so nothing grows without bound.
        let holder_id = a.holder.as_ref().map(|p| p.worker_id.clone()).unwrap_or_default();
        let ex = Ex::new().val(":ws", s(&workspace)).val(":now", n(now)).val(":w", s(&holder_id));
        let cond = if a.holder.is_some() {
            "attribute_exists(pk) AND lockWorkerId = :w AND lockUntil > :now"
        } else {
            "attribute_exists(pk)"
        };
        let mut items = vec![tx_update(
            self.q(),
            key(&pk, rules::CONV_SK),
            "SET historyWorkspaceId = :ws, historyAt = :now",
            Some(cond),
            &ex,
        )];
        // A worker's append also re-checks its token on the worker row (item 1).
        if let Some(p) = &a.holder {
            items.push(self.token_check(p));
        }
        for (i, m) in a.messages.iter().enumerate() {
            let mut it = key(&pk, rules::history_sk(&ids::ulid(now)));
            it.insert("role".into(), to_av(&m.role)?);
            it.insert("content".into(), s(&m.content));
            it.insert("at".into(), n(m.at.unwrap_or(now + i as i64)));
            it.insert("workspaceId".into(), s(&workspace));
            items.push(tx_put(self.q(), it, "attribute_not_exists(pk)", &ex));
        }
        match self.transact(items).await {
            Ok(()) => Ok(AppendResult { updated: true, message_count: a.messages.len() }),
            Err(TxError::Cancelled(r)) => {
                if let Some(p) = &a.holder
                    && r.get(1).is_some_and(Reason::failed_condition)
                {
                    return Err(self.token_refusal(p).await);
                }
                if !r.first().is_some_and(Reason::failed_condition) {
                    return Err(TxError::Cancelled(r).into_app("appendConversationMessages"));
                }
                let old: Option<ConversationItem> =
                    r.first().and_then(|x| x.item.clone()).map(from_item).transpose()?;
                match (old, &a.holder) {
                    (Some(c), Some(p)) => {
                        rules::check_lock_holder(&c, &p.worker_id, now)?;
                        Err(AppError::conflict("the conversation changed during the append; try again"))
                    }
                    _ => Ok(AppendResult { updated: false, message_count: 0 }),
                }
            }
            Err(e) => Err(e.into_app("appendConversationMessages")),
        }
    }

    /// History entries of a conversation, oldest first (newest `limit`).
    pub async fn list_history(
        &self,
        cid: &str,
        limit: i32,
    ) -> AppResult<Vec<crate::conversations::model::HistoryEntry>> {
        let out = self
            .client
            .query()
            .table_name(self.q())
            .key_condition_expression("pk = :pk AND begins_with(sk, :h)")
            .expression_attribute_values(":pk", s(rules::conversation_pk(cid)))
            .expression_attribute_values(":h", s("H#"))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit.clamp(1, 2000))
            .send()
            .await
            .map_err(|e| sdk_error("Query history", e))?;
        let mut v = out.items.unwrap_or_default().into_iter().map(from_item).collect::<AppResult<Vec<_>>>()?;
        v.reverse();
        Ok(v)
    }

    // ------------------------------------------------------------------ recovery

    /// `releaseExpiredLeases` / `releaseStuckJobs`: recover up to `limit` expired leases found
    /// in the locked partitions (`l<shard>`) of the `ready` index. Claims do this by themselves; the sweep keeps stats and
    /// worker loads honest when nobody claims.
    pub async fn release_expired_leases(&self, limit: Option<i64>) -> AppResult<ReleaseResult> {
        let limit = limit.unwrap_or(100).clamp(1, 1000) as i32;
        let now = self.now();
        let mut res = ReleaseResult::default();
        for shard in 0..self.policy.queue.ready_shards.max(1) {
            let out = self
                .client
                .query()
                .table_name(self.q())
                .index_name(schema::IDX_READY)
                .key_condition_expression("readyShard = :s AND readyAt <= :now")
                .projection_expression("pk")
                .expression_attribute_values(":s", s(format!("l{shard}")))
                .expression_attribute_values(":now", n(now))
                .limit(limit)
                .send()
                .await
                .map_err(|e| sdk_error("Query leases", e))?;
            for k in out.items.unwrap_or_default() {
                let Some(pk) = k.get("pk").and_then(|v| v.as_s().ok()) else { continue };
                let cid = pk.trim_start_matches("C#");
                let Some(conv) = self.get_conversation(cid).await? else { continue };
                let (Some(sk), Some(until)) = (conv.lock_msg_sk.clone(), conv.lock_until) else { continue };
                if until > now {
                    continue;
                }
                match self.get(self.q(), key(&conv.pk, &sk)).await?.map(from_item::<MessageItem>).transpose()? {
                    Some(m) => match self.recover_message(&conv, &m, now, true).await? {
                        Some(FailOutcome::DeadLetter) => {
                            res.dead_lettered += 1;
                            res.unlocked += 1;
                        }
                        Some(FailOutcome::Requeue { .. }) => {
                            res.requeued += 1;
                            res.unlocked += 1;
                        }
                        None => {}
                    },
                    None => {
                        self.drop_dangling_lock(&conv).await?;
                        res.unlocked += 1;
                    }
                }
            }
        }
        self.repair_orphans(limit, now, &mut res).await?;
        Ok(res)
    }

    /// The sweep's second pass: messages `processing` whose lease is over (or absent) but whose
    /// conversation holds no lock naming them (a partial write, a hand edit) would block their
    /// conversation forever; they are recovered like an expired lease. One Query of the
    /// `byStatus` partition `processing` (live leases filtered out, at most `limit` read) + per
    /// hit 2 GetItem + 1 Transact.
    async fn repair_orphans(&self, limit: i32, now: Millis, res: &mut ReleaseResult) -> AppResult<()> {
        let out = self
            .client
            .query()
            .table_name(self.q())
            .index_name(schema::IDX_BY_STATUS)
            .key_condition_expression("#st = :p")
            .filter_expression("attribute_not_exists(leaseExpiresAt) OR leaseExpiresAt <= :now")
            .projection_expression("pk, sk")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":p", s("processing"))
            .expression_attribute_values(":now", n(now))
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query processing", e))?;
        for k in out.items.unwrap_or_default() {
            let (Some(pk), Some(sk)) =
                (k.get("pk").and_then(|v| v.as_s().ok()), k.get("sk").and_then(|v| v.as_s().ok()))
            else {
                continue;
            };
            let Some(conv) = self.get_conversation(pk.trim_start_matches("C#")).await? else { continue };
            let Some(m) = self.get(self.q(), key(pk, sk)).await?.map(from_item::<MessageItem>).transpose()? else {
                continue;
            };
            match self.recover_message(&conv, &m, now, true).await? {
                Some(FailOutcome::DeadLetter) => res.dead_lettered += 1,
                Some(FailOutcome::Requeue { .. }) => res.requeued += 1,
                None => {}
            }
        }
        Ok(())
    }

    /// `redriveDeadLetters`: dead-lettered messages (by id, or all of a conversation) back to
    /// queued with attempts reset, in their original place in the conversation.
    pub async fn redrive(&self, a: RedriveArgs) -> AppResult<RedriveResult> {
        let refs: Vec<MessageRef> = match (&a.conversation_id, &a.message_ids) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(AppError::validation("give exactly one of conversationId or messageIds"));
            }
            (None, Some(ids)) => {
                if ids.is_empty() || ids.len() > 100 {
                    return Err(AppError::validation("messageIds must hold 1 to 100 ids"));
                }
                ids.iter().map(|i| MessageRef::parse(i)).collect::<AppResult<_>>()?
            }
            (Some(cid), None) => {
                rules::validate_conversation_id(cid)?;
                self.dead_letters_of(cid).await?
            }
        };
        let mut done = Vec::new();
        for r in refs {
            let Some(m) = self.get(self.q(), self.msg_key(&r)).await?.map(from_item::<MessageItem>).transpose()? else {
                return Err(AppError::not_found(format!("message {} does not exist", r.id())));
            };
            if m.status != MessageStatus::DeadLetter {
                return Err(AppError::conflict(format!(
                    "message {} is {}, not dead_letter; nothing was redriven after it",
                    r.id(),
                    m.status.as_str()
                )));
            }
            let now = self.now();
            let ex = base_ex()
                .val(":dead", s("dead_letter"))
                .val(":queued", s("queued"))
                .val(":zero", n(0))
                .val(":one", n(1))
                .val(":now", n(now))
                .val(":due", n(now))
                .val(":okey", s(rules::open_key(m.enqueued_for, &r.ulid)))
                .val(":skey", s(rules::status_key(now, &r.ulid)))
                .val(":a", s(&m.agent_key))
                .val(":cid", s(&r.conversation_id))
                .val(":ck", s(rules::CONV_OPEN_KEY))
                .val(":shard", s(rules::ready_shard(&r.conversation_id, self.policy.queue.ready_shards)))
                .val(":seq", s(&r.ulid))
                .val(":p", n(m.priority));
            let mut lower = false;
            let mut ok = false;
            for attempt in 0..MAX_TX_RETRIES {
                let items = vec![
                    tx_update(
                        self.q(),
                        self.msg_key(&r),
                        "SET #st = :queued, attempts = :zero, scheduledFor = :now, statusKey = :skey, openKey = :okey REMOVE deadLetteredAt, nextRetryAt, #ttl",
                        Some("#st = :dead"),
                        &ex,
                    ),
                    self.enqueue_conv_update(&r.conversation_id, lower, &ex),
                ];
                match self.transact(items).await {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(TxError::Cancelled(rs)) => {
                        if rs.first().is_some_and(Reason::failed_condition) {
                            break;
                        }
                        if let Some(c) = rs.get(1).filter(|x| x.failed_condition()) {
                            if let Some(old) = c.item.clone().map(from_item::<ConversationItem>).transpose()? {
                                lower = needs_lower(&old, now);
                            }
                            continue;
                        }
                        conflict_pause(attempt).await;
                    }
                    Err(e) => return Err(e.into_app("redrive")),
                }
            }
            if ok {
                done.push(r.id());
            }
        }
        Ok(RedriveResult { redriven: done.len() as u32, message_ids: done })
    }

    async fn dead_letters_of(&self, cid: &str) -> AppResult<Vec<MessageRef>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(self.q())
                .key_condition_expression("pk = :pk AND begins_with(sk, :m)")
                .filter_expression("#st = :dead")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":pk", s(rules::conversation_pk(cid)))
                .expression_attribute_values(":m", s("M#"))
                .expression_attribute_values(":dead", s("dead_letter"))
                .projection_expression("messageId")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query dead letters", e))?;
            for i in page.items.unwrap_or_default() {
                if let Some(id) = i.get("messageId").and_then(|v| v.as_s().ok()) {
                    out.push(MessageRef::parse(id)?);
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    // ------------------------------------------------------------------ read models

    /// Count the `byStatus` entries of `status` whose `statusKey` is below (`Some((t, true))`) or
    /// at/above (`Some((t, false))`) time `t`, reading at most [`STATS_CAP`] entries: the count,
    /// and whether more were left unread.
    async fn count_status(&self, status: &str, split: Option<(Millis, bool)>) -> AppResult<(u64, bool)> {
        let mut total = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(self.q())
                .index_name(schema::IDX_BY_STATUS)
                .select(Select::Count)
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":st", s(status))
                .limit((STATS_CAP - total) as i32)
                .set_exclusive_start_key(start.take());
            q = match split {
                Some((t, below)) => q
                    .key_condition_expression(if below {
                        "#st = :st AND statusKey < :t"
                    } else {
                        "#st = :st AND statusKey >= :t"
                    })
                    .expression_attribute_values(":t", s(format!("{t:013}$"))),
                None => q.key_condition_expression("#st = :st"),
            };
            let out = q.send().await.map_err(|e| sdk_error("Query count", e))?;
            total += out.count as u64;
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => {
                    if total >= STATS_CAP {
                        return Ok((total, true));
                    }
                    start = Some(k)
                }
                _ => return Ok((total, false)),
            }
        }
    }

    /// `queueStats`: bounded reads of the `byStatus` index. Each figure reads at most
    /// [`STATS_CAP`] index entries (queued due, queued scheduled, processing — split into live and
    /// expired leases from the same read —, dead-letter), so its cost does not grow with the
    /// queue's depth; a figure that reached the cap is a lower bound and `capped` says so.
    pub async fn queue_stats(&self) -> AppResult<QueueStats> {
        let now = self.now();
        let (queued_ready, c1) = self.count_status("queued", Some((now, true))).await?;
        let (queued_scheduled, c2) = self.count_status("queued", Some((now, false))).await?;
        let (dead_letter, c3) = self.count_status("dead_letter", None).await?;
        let (mut processing, mut processing_expired, mut c4) = (0u64, 0u64, false);
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(self.q())
                .index_name(schema::IDX_BY_STATUS)
                .key_condition_expression("#st = :st")
                .projection_expression("leaseExpiresAt")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":st", s("processing"))
                .limit((STATS_CAP - processing - processing_expired) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query processing", e))?;
            for i in out.items.unwrap_or_default() {
                let until = i.get("leaseExpiresAt").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
                if until.is_some_and(|t| t > now) {
                    processing += 1;
                } else {
                    processing_expired += 1;
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => {
                    if processing + processing_expired >= STATS_CAP {
                        c4 = true;
                        break;
                    }
                    start = Some(k)
                }
                _ => break,
            }
        }
        Ok(QueueStats {
            queued_ready,
            queued_scheduled,
            processing,
            processing_expired,
            dead_letter,
            capped: c1 || c2 || c3 || c4,
        })
    }

    /// `listJobsByStatus`: by due time, oldest first; limit default 100, clamped to 1..=500.
    pub async fn list_jobs_by_status(&self, a: &ListByStatusArgs) -> AppResult<Vec<JobRow>> {
        let st = MessageStatus::parse(&a.status).ok_or_else(|| {
            AppError::validation(format!(
                "status '{}' is not one of queued, processing, done, dead_letter",
                ids::truncate(&a.status, 40)
            ))
        })?;
        let limit = a.limit.unwrap_or(100).clamp(1, 500) as i32;
        let out = self
            .client
            .query()
            .table_name(self.q())
            .index_name(schema::IDX_BY_STATUS)
            .key_condition_expression("#st = :st")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(st.as_str()))
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query byStatus", e))?;
        out.items.unwrap_or_default().into_iter().map(|i| job_row(&i, st)).collect()
    }

    /// `listQueueItemsForConversation`: newest first by due time (`scheduledFor`, then newest
    /// enqueued); limit default 100, clamped to 1..=500. Due times do not follow the key order
    /// (scheduled messages, retries), so the conversation's messages are read (Query pages of
    /// `M#` items; done ones expire after `DONE_RETENTION_DAYS`) and sorted.
    pub async fn list_conversation_items(&self, a: &ListConversationArgs) -> AppResult<Vec<JobRow>> {
        rules::validate_conversation_id(&a.conversation_id)?;
        let limit = a.limit.unwrap_or(100).clamp(1, 500) as usize;
        let mut all: Vec<MessageItem> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(self.q())
                .key_condition_expression("pk = :pk AND begins_with(sk, :m)")
                .expression_attribute_values(":pk", s(rules::conversation_pk(&a.conversation_id)))
                .expression_attribute_values(":m", s("M#"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query conversation", e))?;
            for i in out.items.unwrap_or_default() {
                all.push(from_item(i)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        all.sort_by(|x, y| y.scheduled_for.cmp(&x.scheduled_for).then_with(|| y.sk.cmp(&x.sk)));
        Ok(all
            .into_iter()
            .take(limit)
            .map(|m| JobRow {
                id: m.message_id,
                creation_time: m.created_at,
                conversation_id: m.conversation_id,
                agent_key: m.agent_key,
                status: m.status,
                priority: m.priority,
                scheduled_for: m.scheduled_for,
                attempts: m.attempts,
                max_attempts: m.max_attempts,
                last_error: m.last_error,
                payload: Some(m.payload),
            })
            .collect())
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
