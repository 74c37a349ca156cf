//! `claim`: the sticky path (one Query + one transaction) and the unassigned path through the
//! `ready` index; recovery of expired leases found on the way.

use super::*;

impl Store {
    /// `claim`. With `conversation_id` (a sticky worker): one Query + one TransactWriteItems.
    /// Without: per probed shard (`queue::shards`: at most 2 the ready hint lists plus this
    /// process's rotation shard; every shard while there is no usable hint), one Query of the
    /// `due` index (highest priority, then earliest due, then first enqueued, across the shard),
    /// promotion of newly due conversations at most once a second, then expired locks where the
    /// hint saw some. Scanning, it never returns `None` while a message this worker may take is
    /// claimable; probing, work the hint does not list yet is found by the rotation or after the
    /// next reconcile cycle.
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
        // At most a few shards, chosen by the ready hint (`queue::shards`), or every shard
        // while there is no usable hint.
        let plan = self.probe_plan(self.now()).await?;
        for probe in plan.probes {
            let shard = probe.shard;
            // Due conversations in their global order (`d<n>` of the `due` index). Scanning:
            // promotion first when its slot came, else when `d<n>` had nothing for this worker.
            // Probing: promotion only when `d<n>` had nothing and its slot came (reconcile's lease
            // sweep promotes every shard each cycle).
            let mut promoted = plan.scan && self.take_promotion_slot(shard, self.now());
            if promoted {
                self.promote_due(shard, READY_PAGE).await?;
            }
            loop {
                match self.claim_from_partition(worker_id, token_hash, schema::IDX_DUE, shard).await? {
                    Some(found) => return Ok(found),
                    None if promoted => break,
                    None => {
                        promoted = true;
                        let may_promote = plan.scan || (probe.promote && self.take_promotion_slot(shard, self.now()));
                        if !may_promote {
                            break;
                        }
                        if self.promote_due(shard, READY_PAGE).await? == 0 {
                            break;
                        }
                    }
                }
            }
            // Then locked conversations whose lease ran out (`l<n>` of the `ready` index).
            if probe.locked
                && let Some(found) = self.claim_from_partition(worker_id, token_hash, schema::IDX_READY, shard).await?
            {
                return Ok(found);
            }
            self.record_empty(shard, self.now());
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

    /// Try the candidates of one index partition in index order, page by page: `Some(result)` ends
    /// the claim (a job, or `None` when the worker row refuses), `None` = nothing here.
    async fn claim_from_partition(
        &self,
        worker_id: &str,
        token_hash: Option<&str>,
        index: &str,
        shard: u32,
    ) -> AppResult<Option<Option<ClaimedJob>>> {
        let partition = format!("{}{shard}", if index == schema::IDX_DUE { "d" } else { "l" });
        let by_rank = index == schema::IDX_DUE;
        let mut page_start: Option<Item> = None;
        loop {
            let now = self.now();
            let ex = Ex::new().val(":s", s(&partition)).val(":now", n(now)).val(":w", s(worker_id));
            let kc = if by_rank { "readyShard = :s" } else { "readyShard = :s AND readyAt <= :now" };
            let filter = "attribute_not_exists(ownerId) OR ownerId = :w OR ownerUntil <= :now";
            let (names, values) = ex.for_exprs(&[kc, filter]);
            let out = self
                .client
                .query()
                .table_name(self.q())
                .index_name(index)
                .key_condition_expression(kc)
                .filter_expression(filter)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .limit(READY_PAGE)
                .set_exclusive_start_key(page_start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query ready", e))?;
            // The `due` index is in claim order (`dueRank`) and projects only the conversation id
            // and its owner; expired locks (`ready`, full items) are ordered by due time.
            let items = out.items.unwrap_or_default();
            let cids: Vec<String> = if by_rank {
                items.iter().filter_map(|i| i.get("conversationId").and_then(|v| v.as_s().ok()).cloned()).collect()
            } else {
                let mut cands: Vec<ConversationItem> = items.into_iter().map(from_item).collect::<AppResult<_>>()?;
                order_candidates(&mut cands);
                cands.into_iter().map(|c| c.conversation_id).collect()
            };
            let last_page = out.last_evaluated_key.as_ref().is_none_or(|k| k.is_empty());
            let count = cids.len();
            for (i, cid) in cids.into_iter().enumerate() {
                match self.claim_in_conversation(worker_id, &cid, token_hash).await? {
                    ConvOutcome::Claimed(j) => {
                        // It took the partition's last candidate: as far as this claimer
                        // knows, the shard is empty now (its next probes go elsewhere).
                        if by_rank && last_page && i + 1 == count {
                            self.record_empty(shard, now);
                        }
                        return Ok(Some(Some(j)));
                    }
                    ConvOutcome::Nothing => {}
                    ConvOutcome::WorkerRefused(w) => {
                        let Some(w) = w else { return Ok(Some(None)) };
                        if w.status != crate::workers::model::WorkerStatus::Active {
                            return Ok(Some(None));
                        }
                        match w.assigned_conversation_id {
                            Some(a) if a != cid => {
                                return Ok(Some(match self.claim_in_conversation(worker_id, &a, token_hash).await? {
                                    ConvOutcome::Claimed(j) => Some(j),
                                    _ => None,
                                }));
                            }
                            _ => {}
                        }
                    }
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => page_start = Some(k),
                _ => return Ok(None),
            }
        }
    }

    /// The conversation item and its first open messages, strongly consistent, in one Query.
    pub(super) async fn read_open(
        &self,
        cid: &str,
        limit: i32,
    ) -> AppResult<Option<(ConversationItem, Vec<MessageItem>)>> {
        let out = self
            .client
            .query()
            .table_name(self.q())
            .index_name(schema::IDX_OPEN)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(keys::conversation_pk(cid)))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query open", e))?;
        let mut items = out.items.unwrap_or_default().into_iter();
        let Some(first) = items.next() else { return Ok(None) };
        if first.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) != Some(keys::CONV_SK) {
            return Err(AppError::internal(format!("conversation '{cid}' has open messages but no conversation item")));
        }
        let conv: ConversationItem = from_item(first)?;
        let open = items.map(from_item).collect::<AppResult<Vec<MessageItem>>>()?;
        Ok(Some((conv, open)))
    }

    pub(super) async fn claim_in_conversation(
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
                    let k = key(keys::conversation_pk(cid), &msg_sk);
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
            let next = if next_msg.is_some() {
                ", nextPr = :npr, nextSeq = :nseq, nextRank = :nrank REMOVE dueRank"
            } else {
                " REMOVE dueRank, nextPr, nextSeq, nextRank"
            };
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
                .val(":nseq", s(next_msg.map_or("", |m| keys::message_ulid(&m.sk))))
                .val(
                    ":nrank",
                    s(next_msg.map_or(String::new(), |m| {
                        keys::due_rank(m.priority, m.scheduled_for, keys::message_ulid(&m.sk))
                    })),
                )
                .val(":until", n(until))
                .val(":now", n(now))
                .val(":ou", n(now + self.policy.workers.stale_after_ms))
                .val(":sk", s(&head.sk))
                .val(":sproc", s(keys::status_part(MessageStatus::Processing, keys::message_ulid(&head.sk))))
                .val(":cid", s(cid))
                .val(":agent", s(&head.agent_key))
                .val(":one", n(1))
                .val(":zero", n(0))
                .val(":fly", s("fly"))
                .val(":expired", s(rules::LEASE_EXPIRED_ERROR))
                .val(":lshard", s(keys::locked_shard(keys::pick_shard(self.policy.queue.ready_shards))))
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
                    "SET statusPart = :sproc, claimedBy = :w, leaseId = :l, leaseExpiresAt = :until, attempts = attempts + :one, lastError = :expired",
                    format!(
                        "#st = :processing AND {old_lease_cond} AND (attribute_not_exists(leaseExpiresAt) OR leaseExpiresAt <= :now)"
                    ),
                )
            } else {
                (
                    "SET #st = :processing, statusPart = :sproc, claimedBy = :w, leaseId = :l, leaseExpiresAt = :until",
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
    pub(super) fn owner_gone_check(&self, owner: &str, cid: &str, now: Millis) -> TransactWriteItem {
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
    /// An unlocked conversation that is not due any more leaves the `due` index for `r<n>`, where
    /// promotion finds it again when its time comes.
    pub(super) async fn repair_ready_at(&self, conv: &ConversationItem, to: Option<Millis>) -> AppResult<()> {
        let now = self.now();
        let shards = self.policy.queue.ready_shards;
        let ex = Ex::new().val(":rev", n(conv.rev)).val(":one", n(1));
        let (update, ex) = match to {
            Some(t) if conv.lock_lease_id.is_none() && t > now => (
                "SET readyAt = :t, readyShard = :rshard, rev = rev + :one REMOVE dueRank",
                ex.val(":t", n(t)).val(":rshard", s(keys::ready_shard(keys::pick_shard(shards)))),
            ),
            Some(t) => ("SET readyAt = :t, rev = rev + :one", ex.val(":t", n(t))),
            None => ("SET rev = rev + :one REMOVE readyAt, dueRank", ex),
        };
        let cond = "rev = :rev";
        self.update_if(self.q(), key(&conv.pk, &conv.sk), update, cond, &ex, "UpdateItem readyAt").await.map(|_| ())
    }

    /// Put back (or dead-letter) a message whose lease expired; the expiry counts as an attempt.
    /// The sweep (`backoff`) requeues it with the same backoff as `fail`; a claim that finds it
    /// takes it at once. A message left `processing` without the conversation's lock naming it
    /// (a partial write or a hand edit) is repaired whatever its lease says: the lock is the truth
    /// (I3), and the write is conditional on the conversation's `rev`.
    /// Returns what happened, or `None` when the state moved on meanwhile.
    pub(super) async fn recover_message(
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
            .val(":ttl", n(keys::ttl_seconds(now + self.policy.queue.dead_letter_retention_ms)))
            .val(":skey", s(keys::status_key(at, keys::message_ulid(&m.sk))))
            .val(
                ":spart",
                s(keys::status_part(
                    if dead { MessageStatus::DeadLetter } else { MessageStatus::Queued },
                    keys::message_ulid(&m.sk),
                )),
            )
            .val(":rshard", s(keys::ready_shard(keys::pick_shard(self.policy.queue.ready_shards))));
        // Requeued at once (a claim's takeover), the head goes straight back into the `due` index
        // at its rank; with a backoff (or an orphan that may not be the head) it waits in `r<n>`.
        let (ushard, urank) = if !orphan && at <= now {
            (
                keys::due_shard(keys::pick_shard(self.policy.queue.ready_shards)),
                keys::due_rank(m.priority, at, keys::message_ulid(&m.sk)),
            )
        } else {
            (keys::ready_shard(keys::pick_shard(self.policy.queue.ready_shards)), String::new())
        };
        let ex = leave_vals(ex, &self.policy.queue, now).val(":ushard", s(ushard)).val(":urank", s(&urank));
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
                    "SET #st = :dead, statusPart = :spart, attempts = :n, deadLetteredAt = :now, lastError = :err, #ttl = :ttl REMOVE openKey, {CLAIM_FIELDS}"
                ),
                leave_update(v, false, Owner::Drop).0,
            )
        } else {
            (
                format!(
                    "SET #st = :queued, statusPart = :spart, attempts = :n, scheduledFor = :at, {retry}statusKey = :skey, lastError = :err REMOVE {CLAIM_FIELDS}"
                ),
                if urank.is_empty() {
                    format!(
                        "SET readyAt = {ready}, readyShard = :ushard, rev = rev + :one REMOVE dueRank, {CONV_LOCK_REMOVE}, ownerId, ownerUntil"
                    )
                } else {
                    format!(
                        "SET readyAt = {ready}, readyShard = :ushard, dueRank = :urank, rev = rev + :one REMOVE {CONV_LOCK_REMOVE}, ownerId, ownerUntil"
                    )
                },
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
    pub(super) async fn drop_dangling_lock(&self, conv: &ConversationItem) -> AppResult<()> {
        let now = self.now();
        let ex = Ex::new()
            .val(":rev", n(conv.rev))
            .val(":one", n(1))
            .val(":now", n(now))
            .val(":rshard", s(keys::ready_shard(keys::pick_shard(self.policy.queue.ready_shards))));
        let update = if conv.open_count > 0 {
            format!("SET readyAt = :now, readyShard = :rshard, rev = rev + :one REMOVE dueRank, {CONV_LOCK_REMOVE}")
        } else {
            format!("SET rev = rev + :one REMOVE readyShard, readyAt, dueRank, {CONV_LOCK_REMOVE}")
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
    pub(super) async fn release_worker_load(&self, worker_id: &str, lease: Option<&str>) -> AppResult<()> {
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
            if self
                .update_if(&self.tables.workers, worker_key(worker_id), &update, cond, &ex, "UpdateItem worker load")
                .await?
            {
                return Ok(());
            }
        }
        Ok(())
    }
}
