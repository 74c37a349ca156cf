//! `heartbeat`, `complete`, `fail`: lease-holder writes, each one conditional transaction.

use super::*;

impl Store {
    /// A precise error for a lease call whose message condition failed.
    pub(super) fn lease_error(
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
                    key(keys::conversation_pk(&mref.conversation_id), keys::CONV_SK),
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
                .val(":spart", s(keys::status_part(MessageStatus::Done, &mref.ulid)))
                .val(":ttl", n(keys::ttl_seconds(now + self.policy.queue.done_retention_ms)));
            let (cu, cc) = leave_update(variant, true, Owner::Refresh);
            let items = vec![
                tx_update(
                    self.q(),
                    self.msg_key(&mref),
                    &format!(
                        "SET #st = :done, statusPart = :spart, completedAt = :now, #ttl = :ttl REMOVE openKey, lastError, nextRetryAt, {CLAIM_FIELDS}"
                    ),
                    Some(LEASE_HELD),
                    &ex,
                ),
                tx_update(
                    self.q(),
                    key(keys::conversation_pk(&mref.conversation_id), keys::CONV_SK),
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
                .val(":ttl", n(keys::ttl_seconds(now + self.policy.queue.dead_letter_retention_ms)));
            let msg_cond = format!("{LEASE_HELD} AND attempts = :seen");
            let ck = key(keys::conversation_pk(&mref.conversation_id), keys::CONV_SK);
            let (msg_item, conv_item, result) = match outcome {
                FailOutcome::Requeue { at } => {
                    let ex = ex
                        .clone()
                        .val(":at", n(at))
                        .val(":skey", s(keys::status_key(at, &mref.ulid)))
                        .val(":spart", s(keys::status_part(MessageStatus::Queued, &mref.ulid)));
                    (
                        tx_update(
                            self.q(),
                            self.msg_key(&mref),
                            &format!(
                                "SET #st = :queued, statusPart = :spart, attempts = :n, scheduledFor = :at, nextRetryAt = :at, lastError = :err, statusKey = :skey REMOVE {CLAIM_FIELDS}"
                            ),
                            Some(&msg_cond),
                            &ex,
                        ),
                        tx_update(
                            self.q(),
                            ck,
                            &format!(
                                "SET readyAt = :at, readyShard = :rshard, ownerUntil = :ou, rev = rev + :one REMOVE dueRank, {CONV_LOCK_REMOVE}"
                            ),
                            Some("lockLeaseId = :l"),
                            &ex,
                        ),
                        FailResult { requeued: true, dead_lettered: false, next_scheduled_for: Some(at) },
                    )
                }
                FailOutcome::DeadLetter => {
                    let (cu, cc) = leave_update(variant, true, Owner::Refresh);
                    let ex = ex.clone().val(":spart", s(keys::status_part(MessageStatus::DeadLetter, &mref.ulid)));
                    (
                        tx_update(
                            self.q(),
                            self.msg_key(&mref),
                            &format!(
                                "SET #st = :dead, statusPart = :spart, attempts = :n, deadLetteredAt = :now, lastError = :err, #ttl = :ttl REMOVE openKey, {CLAIM_FIELDS}"
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

    pub(super) fn msg_key(&self, m: &MessageRef) -> Item {
        key(keys::conversation_pk(&m.conversation_id), keys::message_sk(&m.ulid))
    }

    pub(super) fn lease_ex(&self, a: &LeaseArgs, now: Millis) -> Ex {
        leave_vals(base_ex(), &self.policy.queue, now)
            .val(":rshard", s(keys::ready_shard(keys::pick_shard(self.policy.queue.ready_shards))))
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

    pub(super) fn worker_release_item(&self, a: &LeaseArgs, ex: &Ex) -> TransactWriteItem {
        tx_update(
            &self.tables.workers,
            worker_key(&a.worker_id),
            "SET #ld = if_not_exists(#ld, :zero) - :one, heartbeatAt = :now, lastCompleteAt = :now",
            Some(worker_row_cond(a)),
            ex,
        )
    }

    /// Map a failed lease transaction to its precise error, or pause for a retry (Ok).
    pub(super) async fn lease_tx_error(
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
}
