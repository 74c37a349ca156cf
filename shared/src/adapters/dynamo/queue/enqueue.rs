//! `enqueue`: one transaction per message, deduplicated on the external message id.

use super::*;

impl Store {
    /// `enqueue`: one TransactWriteItems (profile check + conversation + message [+ dedupe key]).
    pub async fn enqueue(&self, args: EnqueueArgs) -> AppResult<EnqueueResult> {
        match self.enqueue_with(args, |_| Ok(Vec::new())).await? {
            Enqueued::Done(r) => Ok(r),
            Enqueued::ExtraRefused { .. } => Err(AppError::internal("enqueue: no extra write to refuse")),
        }
    }

    /// `enqueue` with extra writes of the caller in the same transaction (appended after the
    /// enqueue's own; `extra` builds them from the new message's id): all happen or none. When an
    /// extra write's condition fails, nothing is written and its index among the extra writes is
    /// returned with the item it saw.
    #[instrument(skip(self, args, extra), fields(conversation_id = %args.conversation_id, agent_key = %args.agent_key))]
    pub async fn enqueue_with(
        &self,
        args: EnqueueArgs,
        extra: impl FnOnce(&str) -> AppResult<Vec<TransactWriteItem>>,
    ) -> AppResult<Enqueued> {
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
        let ulid = ids::ulid(now);
        let msg = rules::new_message(rules::NewMessage {
            keys: keys::message_keys(&cid, &ulid, due),
            conversation_id: cid.clone(),
            agent_key: args.agent_key.clone(),
            ulid,
            payload,
            priority,
            due,
            max_attempts,
            now,
        });
        let message_id = msg.message_id.clone();
        let extra = extra(&message_id)?;
        let external = msg.payload.external_message_id.clone();
        let msg_item = to_item(&msg)?;
        let attachment_rows = crate::adapters::dynamo::media::inbound_rows(&msg, now)?;
        let storage_claims = crate::adapters::dynamo::media::storage_claims(&msg);
        let ex = base_ex()
            .val(":a", s(&args.agent_key))
            .val(":t", AttributeValue::Bool(true))
            .val(":cid", s(&cid))
            .val(":now", n(now))
            .val(":due", n(due))
            .val(":ck", s(keys::CONV_OPEN_KEY))
            .val(":zero", n(0))
            .val(":one", n(1))
            .val(":seq", s(keys::message_ulid(&msg.sk)))
            .val(":p", n(priority));
        let ex = head_vals(ex, pol.ready_shards, due, now, priority, keys::message_ulid(&msg.sk));
        let mut lower = false;
        for attempt in 0..MAX_TX_RETRIES {
            let mut items = vec![
                tx_check(
                    &self.tables.control,
                    keys::agent_profile_key(&args.agent_key),
                    "attribute_exists(pk) AND enabled = :t",
                    &ex,
                ),
                self.enqueue_conv_update(&cid, lower, &ex),
                tx_put(self.q(), msg_item.clone(), "attribute_not_exists(pk)", &ex),
            ];
            if let Some(x) = &external {
                let mut d = key(keys::conversation_pk(&cid), keys::dedupe_sk(x));
                d.insert("messageId".into(), s(&message_id));
                d.insert("ttl".into(), n(keys::ttl_seconds(now + pol.dead_letter_retention_ms)));
                items.push(tx_put(self.q(), d, "attribute_not_exists(pk)", &ex));
            }
            let first_attachment = items.len();
            for row in &attachment_rows {
                items.push(tx_put(self.q(), row.clone(), "attribute_not_exists(pk)", &ex));
            }
            // Each storage id is claimed for this conversation (or already is): never another's.
            let first_claim = items.len();
            for c in &storage_claims {
                items.push(tx_put(self.q(), c.clone(), crate::adapters::dynamo::media::STORAGE_CLAIM_COND, &ex));
            }
            let first_extra = items.len();
            items.extend(extra.iter().cloned());
            match self.transact(items).await {
                Ok(()) => {
                    debug!(%message_id, "enqueued");
                    return Ok(Enqueued::Done(EnqueueResult { message_id, deduplicated: false }));
                }
                Err(TxError::Cancelled(r)) => {
                    if r.first().is_some_and(Reason::failed_condition) {
                        return Err(agent_missing(&args.agent_key));
                    }
                    if let Some((i, x)) = r.iter().enumerate().skip(first_extra).find(|(_, x)| x.failed_condition()) {
                        return Ok(Enqueued::ExtraRefused { index: i - first_extra, item: x.item.clone() });
                    }
                    if let Some(dup) = external.as_ref().and(r.get(3)).filter(|r| r.failed_condition()) {
                        let first = dup
                            .item
                            .as_ref()
                            .and_then(|i| i.get("messageId"))
                            .and_then(|v| v.as_s().ok())
                            .cloned()
                            .ok_or_else(|| AppError::internal("dedupe key without messageId"))?;
                        return Ok(Enqueued::Done(EnqueueResult { message_id: first, deduplicated: true }));
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
    ///
    /// Uses `:shard` and `:rank` from [`head_vals`]. A conversation that had nothing open takes the
    /// new message as its head: partition `d<n>` at the message's rank when it is due, `r<n>` when
    /// not. One that has open messages keeps its partition and head; the message is planted as the
    /// "next head" (`nextPr`, `nextSeq`, `nextRank`, only if absent), which a claim overwrites with
    /// what it sees, so a message enqueued while the head is being processed, into a conversation
    /// with nothing else open, still gives the conversation its priority when the head leaves.
    /// (On an unlocked conversation `dueRank` may be planted on an `r<n>`/`l<n>` item, which the
    /// claimers' `d<n>` queries never read.)
    pub(super) fn enqueue_conv_update(&self, cid: &str, lower: bool, ex: &Ex) -> TransactWriteItem {
        let base = "conversationId = if_not_exists(conversationId, :cid), agentKey = if_not_exists(agentKey, :a), \
            createdAt = if_not_exists(createdAt, :now), openKey = :ck, \
            openCount = if_not_exists(openCount, :zero) + :one, rev = if_not_exists(rev, :zero) + :one, \
            nextPr = if_not_exists(nextPr, :p), nextSeq = if_not_exists(nextSeq, :seq), nextRank = if_not_exists(nextRank, :rank)";
        let keep_head = "readyShard = if_not_exists(readyShard, :shard), dueRank = if_not_exists(dueRank, :rank), \
            #pr = if_not_exists(#pr, :p), headSeq = if_not_exists(headSeq, :seq)";
        // Due earlier than the unlocked conversation's head: the message becomes the head.
        let new_head = "readyShard = :shard, dueRank = :rank, #pr = :p, headSeq = :seq";
        let (update, cond) = if lower {
            (
                format!("SET {base}, {new_head}, readyAt = :due"),
                "agentKey = :a AND readyAt > :due AND attribute_not_exists(lockLeaseId) AND (attribute_not_exists(ownerUntil) OR ownerUntil < readyAt)".to_string(),
            )
        } else {
            (
                format!("SET {base}, {keep_head}, readyAt = if_not_exists(readyAt, :due)"),
                "(attribute_not_exists(agentKey) OR agentKey = :a) AND (attribute_not_exists(readyAt) OR readyAt <= :due OR attribute_exists(lockLeaseId) OR ownerUntil >= readyAt)".to_string(),
            )
        };
        tx_update(self.q(), key(keys::conversation_pk(cid), keys::CONV_SK), &update, Some(&cond), ex)
    }
}

/// The outcome of [`Store::enqueue_with`].
#[derive(Debug)]
pub enum Enqueued {
    /// The message and the extra writes were written (or the message was a duplicate).
    Done(EnqueueResult),
    /// The extra write at `index` refused its condition: nothing was written.
    ExtraRefused { index: usize, item: Option<Item> },
}

/// `:shard` and `:rank` of [`Store::enqueue_conv_update`] for a message due at `due`,
/// with priority `p` and ULID `seq`, written at `now`.
pub(super) fn head_vals(ex: Ex, shards: u32, due: Millis, now: Millis, p: f64, seq: &str) -> Ex {
    ex.val(":shard", s(keys::unlocked_shard(keys::pick_shard(shards), due, now)))
        .val(":rank", s(keys::due_rank(p, due, seq)))
}
