//! Conversation reads, the sticky owner of an assignment, and history appends.

use super::*;

impl Store {
    /// `hasQueuedJobsForConversation`: queued messages (due or not). One GetItem.
    pub async fn has_queued(&self, cid: &str) -> AppResult<bool> {
        rules::validate_conversation_id(cid)?;
        let Some(i) = self.get(self.q(), key(keys::conversation_pk(cid), keys::CONV_SK)).await? else {
            return Ok(false);
        };
        let c: ConversationItem = from_item(i)?;
        let processing = i64::from(c.lock_lease_id.is_some());
        Ok(c.open_count - processing > 0)
    }

    /// A worker leaving the pool (`stopping`/`stopped`) lets go of the conversation it owned, so
    /// the next worker claims it at once instead of after `STALE_AFTER_MS`. Only if it is still
    /// the owner. One conditional UpdateItem; whether it owned it.
    pub(crate) async fn release_conversation_owner(&self, worker_id: &str, cid: &str) -> AppResult<bool> {
        rules::validate_conversation_id(cid)?;
        let ex = Ex::new().val(":w", s(worker_id)).val(":one", n(1));
        self.update_if(
            self.q(),
            key(keys::conversation_pk(cid), keys::CONV_SK),
            "SET rev = rev + :one REMOVE ownerId, ownerUntil",
            "ownerId = :w",
            &ex,
            "releasing a stopped worker's conversation",
        )
        .await
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
            createdAt = if_not_exists(createdAt, :now), openKey = :ck, \
            openCount = if_not_exists(openCount, :zero), rev = if_not_exists(rev, :zero) + :one, ownerId = :w, ownerUntil = :ou";
        let cond = "attribute_not_exists(ownerId) OR ownerId = :w OR ownerUntil <= :now";
        let ex = Ex::new()
            .val(":cid", s(cid))
            .val(":a", s(agent_key))
            .val(":now", n(now))
            .val(":ck", s(keys::CONV_OPEN_KEY))
            .val(":zero", n(0))
            .val(":one", n(1))
            .val(":w", s(worker_id))
            .val(":ou", n(now + self.policy.workers.stale_after_ms));
        self.update_if(
            self.q(),
            key(keys::conversation_pk(cid), keys::CONV_SK),
            update,
            cond,
            &ex,
            "UpdateItem conversation owner",
        )
        .await
        .map(|_| ())
    }

    pub async fn get_conversation(&self, cid: &str) -> AppResult<Option<ConversationItem>> {
        self.get(self.q(), key(keys::conversation_pk(cid), keys::CONV_SK)).await?.map(from_item).transpose()
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
        let pk = keys::conversation_pk(&a.conversation_id);
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
            key(&pk, keys::CONV_SK),
            "SET historyWorkspaceId = :ws, historyAt = :now",
            Some(cond),
            &ex,
        )];
        // A worker's append also re-checks its token on the worker row (item 1).
        if let Some(p) = &a.holder {
            items.push(self.token_check(p));
        }
        for (i, m) in a.messages.iter().enumerate() {
            let mut it = key(&pk, keys::history_sk(&ids::ulid(now)));
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
            .expression_attribute_values(":pk", s(keys::conversation_pk(cid)))
            .expression_attribute_values(":h", s(keys::HISTORY_PREFIX))
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
}
