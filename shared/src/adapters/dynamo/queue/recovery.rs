//! The lease sweep (expired leases and orphaned `processing` messages) and dead-letter redrive.

use super::*;

impl Store {
    /// `releaseExpiredLeases` / `releaseStuckJobs`: promote up to `limit` newly due conversations
    /// per shard, and recover up to `limit` expired leases found in the locked partitions
    /// (`l<shard>`) of the `ready` index. Claims do this by themselves; the sweep keeps stats and
    /// worker loads honest when nobody claims.
    pub async fn release_expired_leases(&self, limit: Option<i64>) -> AppResult<ReleaseResult> {
        let limit = limit.unwrap_or(100).clamp(1, 1000) as i32;
        let now = self.now();
        let mut res = ReleaseResult::default();
        for shard in 0..self.policy.queue.ready_shards.max(1) {
            // Conversations whose time came join the `due` index even when nobody claims.
            self.promote_due(shard, limit).await?;
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
                let cid = keys::conversation_id_of(pk);
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
    /// conversation forever; they are recovered like an expired lease. One Query of one shard of
    /// `processing` in the `byStatusShard` index (live leases filtered out, at most `limit`
    /// entries read) + per hit 2 GetItem + 1 Transact. The shards are read in turn, one a call
    /// (from a random one per process): every sweep costs one Query, as before the index was
    /// sharded (the reconcile cycle runs it), and any 32 calls of a process cover them all.
    /// Claims recover such a head themselves when they meet it.
    pub(super) async fn repair_orphans(&self, limit: i32, now: Millis, res: &mut ReleaseResult) -> AppResult<()> {
        let shard = self.orphan_shard.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % keys::STATUS_SHARDS;
        let out = self
            .status_query(MessageStatus::Processing, shard, None)
            .filter_expression("attribute_not_exists(leaseExpiresAt) OR leaseExpiresAt <= :now")
            .projection_expression("pk, sk")
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
            let Some(conv) = self.get_conversation(keys::conversation_id_of(pk)).await? else { continue };
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
                .val(":okey", s(keys::open_key(m.enqueued_for, &r.ulid)))
                .val(":skey", s(keys::status_key(now, &r.ulid)))
                .val(":spart", s(keys::status_part(MessageStatus::Queued, &r.ulid)))
                .val(":a", s(&m.agent_key))
                .val(":cid", s(&r.conversation_id))
                .val(":ck", s(keys::CONV_OPEN_KEY))
                .val(":seq", s(&r.ulid))
                .val(":p", n(m.priority));
            let ex = enqueue::head_vals(ex, self.policy.queue.ready_shards, now, now, m.priority, &r.ulid);
            let mut lower = false;
            let mut ok = false;
            for attempt in 0..MAX_TX_RETRIES {
                let items = vec![
                    tx_update(
                        self.q(),
                        self.msg_key(&r),
                        "SET #st = :queued, statusPart = :spart, attempts = :zero, scheduledFor = :now, statusKey = :skey, openKey = :okey REMOVE deadLetteredAt, nextRetryAt, #ttl",
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

    pub(super) async fn dead_letters_of(&self, cid: &str) -> AppResult<Vec<MessageRef>> {
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
                .expression_attribute_values(":pk", s(keys::conversation_pk(cid)))
                .expression_attribute_values(":m", s(keys::MESSAGE_PREFIX))
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
}
