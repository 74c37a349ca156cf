//! Identity items in the control table (bots, webhook hooks, pairing codes, bindings and their
//! uniqueness items, pairing-attempt counters) and accepted Telegram updates in the queue table.
//! Every invariant is one conditional write or one transaction (W-11).

use super::tx::{tx_delete, tx_put, tx_put_always, tx_update};
use super::{Ex, Item, Store, TxError, from_item, keys, n, s, to_item};
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::identity::model::{Binding, BindingStatus, BotRecord, PairingCode, PairingStatus, WebhookHook};
use crate::identity::rules::{BindPlan, Guard};
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};

fn with_key<T: serde::Serialize>(v: &T, key: Item) -> AppResult<Item> {
    let mut item = to_item(v)?;
    item.extend(key);
    Ok(item)
}

/// What a bot claim changes besides the bot item.
pub struct BotClaim<'a> {
    pub record: &'a BotRecord,
    /// The profile's `updatedAt` when it was read (the write requires it unchanged).
    pub profile_seen: Millis,
    pub secrets_ref: &'a [String],
    /// The agent's previous bot (when it changes): its bot item and hook are removed.
    pub previous: Option<&'a BotRecord>,
}

/// The outcome of the accept stage's conditional put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    New,
    Duplicate,
}

impl Store {
    pub(super) fn c(&self) -> &str {
        &self.tables.control
    }

    async fn get_as<T: serde::de::DeserializeOwned>(&self, table: &str, key: Item) -> AppResult<Option<T>> {
        self.get(table, key).await?.map(from_item).transpose()
    }

    pub async fn get_bot(&self, bot_identity: &str) -> AppResult<Option<BotRecord>> {
        self.get_as(self.c(), keys::bot_key(bot_identity)).await
    }

    pub async fn get_hook(&self, secret_sha256: &str) -> AppResult<Option<WebhookHook>> {
        self.get_as(self.c(), keys::hook_key(secret_sha256)).await
    }

    /// Claim `record.bot_identity` for `record.agent_key` (the bot item must be absent or the
    /// agent's already), point the profile at it, drop the previous bot's items: one transaction.
    pub async fn claim_bot(&self, c: BotClaim<'_>) -> AppResult<()> {
        let r = c.record;
        let ex = Ex::new()
            .val(":a", s(&r.agent_key))
            .val(":seen", n(c.profile_seen))
            .val(":b", s(&r.bot_identity))
            .val(":refs", super::to_av(&c.secrets_ref)?)
            .val(":now", n(self.now().max(c.profile_seen + 1)));
        let mut items = vec![
            tx_put(
                self.c(),
                with_key(r, keys::bot_key(&r.bot_identity))?,
                "attribute_not_exists(pk) OR agentKey = :a",
                &ex,
            ),
            tx_update(
                self.c(),
                keys::agent_profile_key(&r.agent_key),
                "SET botIdentity = :b, secretsRef = :refs, updatedAt = :now",
                Some("updatedAt = :seen"),
                &ex,
            ),
        ];
        if let Some(p) = c.previous.filter(|p| p.bot_identity != r.bot_identity) {
            items.push(tx_delete(self.c(), keys::bot_key(&p.bot_identity), "agentKey = :a", &ex));
            if let Some(h) = &p.webhook_secret_hash {
                items.push(tx_delete(self.c(), keys::hook_key(h), "agentKey = :a", &ex));
            }
        }
        self.transact(items).await.map_err(|e| match e {
            TxError::Cancelled(reasons) if reasons.first().is_some_and(|x| x.failed_condition()) => AppError::conflict(
                format!("Telegram bot identity '{}' is already assigned to another agent", r.bot_identity),
            ),
            other => other.into_app("claiming the Telegram bot"),
        })
    }

    /// Record a webhook Telegram confirmed: the bot item's webhook state, the new hook, the old
    /// hook gone (its secret stops working).
    pub async fn set_webhook_state(
        &self,
        rec: &BotRecord,
        hook: &WebhookHook,
        old_hash: Option<&str>,
    ) -> AppResult<()> {
        let hash = rec.webhook_secret_hash.as_deref().unwrap_or_default();
        let ex = Ex::new().val(":a", s(&rec.agent_key));
        let mut items = vec![
            tx_put(self.c(), with_key(rec, keys::bot_key(&rec.bot_identity))?, "agentKey = :a", &ex),
            tx_put(self.c(), with_key(hook, keys::hook_key(hash))?, "attribute_not_exists(pk)", &ex),
        ];
        if let Some(old) = old_hash.filter(|o| *o != hash) {
            items.push(tx_delete(self.c(), keys::hook_key(old), "attribute_not_exists(pk) OR agentKey = :a", &ex));
        }
        self.transact(items).await.map_err(|e| e.into_app("recording the webhook"))
    }

    // ---------- pairing codes ----------

    pub async fn get_pairing(&self, code: &str) -> AppResult<Option<PairingCode>> {
        self.get_as(self.c(), keys::pairing_key(code)).await
    }

    /// The consumer's latest code for an agent.
    pub async fn get_user_pairing(&self, consumer_user_id: &str, agent_key: &str) -> AppResult<Option<PairingCode>> {
        let Some(p) = self.get(self.c(), keys::user_pairing_key(consumer_user_id, agent_key)).await? else {
            return Ok(None);
        };
        match p.get("code") {
            Some(AttributeValue::S(code)) => self.get_pairing(code).await,
            _ => Ok(None),
        }
    }

    /// Pending -> expired, if still pending. Whether it changed.
    pub async fn expire_pairing(&self, code: &str) -> AppResult<bool> {
        let ex = Ex::new().name("#st", "status").val(":e", s("expired")).val(":p", s("pending"));
        self.update_if(self.c(), keys::pairing_key(code), "SET #st = :e", "#st = :p", &ex, "expiring a pairing code")
            .await
    }

    /// Expire every pending code of `bot` (the agent's bot changed: they can no longer be used).
    /// One Query page of the bot's code pointers at a time, one conditional UpdateItem per code.
    /// How many were pending.
    pub async fn expire_bot_pairings(&self, bot: &str) -> AppResult<u32> {
        let mut expired = 0;
        let mut start = None;
        loop {
            let (items, next) =
                self.partition_page(self.c(), keys::bot_pairings_pk(bot), start, "Query bot pairing codes").await?;
            for item in items {
                if let Some(AttributeValue::S(code)) = item.get("sk")
                    && self.expire_pairing(code).await?
                {
                    expired += 1;
                }
            }
            match next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok(expired)
    }

    /// Store a new code (unique: the put fails if it exists) and point the user at it. `false`
    /// when the code already exists (generate another).
    pub async fn put_pairing(&self, p: &PairingCode, ttl_at: Millis) -> AppResult<bool> {
        let mut item = with_key(p, keys::pairing_key(&p.code))?;
        item.insert("ttl".into(), n(keys::ttl_seconds(ttl_at)));
        let mut ptr = keys::user_pairing_key(&p.consumer_user_id, &p.agent_key);
        ptr.insert("code".into(), s(&p.code));
        ptr.insert("createdAt".into(), n(p.created_at));
        let mut by_bot = keys::bot_pairing_key(&p.bot_identity, &p.code);
        by_bot.insert("ttl".into(), n(keys::ttl_seconds(ttl_at)));
        let ex = Ex::new();
        let items = vec![
            tx_put(self.c(), item, "attribute_not_exists(pk)", &ex),
            tx_put_always(self.c(), by_bot),
            tx_put_always(self.c(), ptr),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("storing the pairing code")),
        }
    }

    /// Every latest-code pointer of a consumer (one per agent).
    pub async fn user_pairing_codes(&self, consumer_user_id: &str) -> AppResult<Vec<String>> {
        let out = self
            .client
            .query()
            .table_name(self.c())
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(keys::user_pk(consumer_user_id)))
            .expression_attribute_values(":p", s(keys::USER_PAIRING_PREFIX))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("Query pairing pointers", e))?;
        Ok(out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut i| match i.remove("code") {
                Some(AttributeValue::S(c)) => Some(c),
                _ => None,
            })
            .collect())
    }

    /// Count one pairing attempt in `key`'s window: `false` when the limit is reached (nothing
    /// counted then).
    pub async fn count_attempt(
        &self,
        scope: &str,
        id: &str,
        window: i64,
        drop_at: Millis,
        limit: u32,
    ) -> AppResult<bool> {
        let ex = Ex::new()
            .name("#n", "n")
            .name("#ttl", "ttl")
            .val(":one", n(1))
            .val(":lim", n(limit))
            .val(":ttl", n(keys::ttl_seconds(drop_at)));
        self.update_if(
            self.c(),
            keys::attempt_key(scope, id, window),
            "ADD #n :one SET #ttl = :ttl",
            "attribute_not_exists(#n) OR #n < :lim",
            &ex,
            "counting a pairing attempt",
        )
        .await
    }

    // ---------- bindings ----------

    pub async fn get_binding(&self, consumer_user_id: &str) -> AppResult<Option<Binding>> {
        self.get_as(self.c(), keys::binding_pointer_key(consumer_user_id)).await
    }

    pub async fn get_guard(&self, g: &Guard) -> AppResult<Option<Binding>> {
        self.get_as(self.c(), keys::guard_key(g)).await
    }

    /// Apply a bind plan and `extra` writes (a code's consumption) in one transaction. A lost race
    /// is a `Conflict` (`TxError`), which the caller retries from fresh reads.
    pub async fn apply_bind(
        &self,
        new: &Binding,
        own_seen: Option<&str>,
        plan: &BindPlan,
        extra: Vec<TransactWriteItem>,
    ) -> Result<(), TxError> {
        let now = new.bound_at;
        let mut ex =
            Ex::new().name("#st", "status").val(":rev", s("revoked")).val(":now", n(now)).val(":act", s("active"));
        let mut items = extra;
        let put = |items: &mut Vec<TransactWriteItem>,
                   key: Item,
                   b: &Binding,
                   expect: Option<&str>,
                   ex: &mut Ex,
                   tag: &str| {
            let item = match with_key(b, key) {
                Ok(i) => i,
                Err(e) => return Err(TxError::Other(e)),
            };
            let cond = match expect {
                None => "attribute_not_exists(pk)".to_string(),
                Some(id) => {
                    let alias = format!(":id{tag}");
                    *ex = std::mem::take(ex).val(&alias, s(id));
                    format!("bindingId = {alias}")
                }
            };
            items.push(tx_put(self.c(), item, &cond, ex));
            Ok(())
        };
        // The user's pointer: the displaced own binding's id must still be there.
        put(&mut items, keys::binding_pointer_key(&new.consumer_user_id), new, own_seen, &mut ex, "own")?;
        let hist = keys::binding_history_key(&new.consumer_user_id, new.bound_at, &new.binding_id);
        put(&mut items, hist, new, None, &mut ex, "h")?;
        for (i, (g, holder)) in plan.put_guards.iter().enumerate() {
            put(&mut items, keys::guard_key(g), new, holder.as_deref(), &mut ex, &format!("g{i}"))?;
        }
        for (i, r) in plan.revoke.iter().enumerate() {
            let alias = format!(":r{i}");
            ex = ex.val(&alias, s(&r.binding_id));
            if r.consumer_user_id != new.consumer_user_id {
                items.push(tx_delete(
                    self.c(),
                    keys::binding_pointer_key(&r.consumer_user_id),
                    &format!("bindingId = {alias}"),
                    &ex,
                ));
            }
            items.push(tx_update(
                self.c(),
                keys::binding_history_key(&r.consumer_user_id, r.bound_at, &r.binding_id),
                "SET #st = :rev, revokedAt = :now",
                Some("attribute_exists(pk)"),
                &ex,
            ));
        }
        for (i, (g, holder)) in plan.delete_guards.iter().enumerate() {
            let alias = format!(":d{i}");
            ex = ex.val(&alias, s(holder));
            items.push(tx_delete(self.c(), keys::guard_key(g), &format!("bindingId = {alias}"), &ex));
        }
        self.transact(items).await
    }

    /// Revoke the consumer's active binding: pointer and guards gone, history row revoked.
    pub async fn revoke_binding(&self, b: &Binding, now: Millis) -> Result<(), TxError> {
        let ex =
            Ex::new().name("#st", "status").val(":id", s(&b.binding_id)).val(":rev", s("revoked")).val(":now", n(now));
        let mut items = vec![
            tx_delete(self.c(), keys::binding_pointer_key(&b.consumer_user_id), "bindingId = :id", &ex),
            tx_update(
                self.c(),
                keys::binding_history_key(&b.consumer_user_id, b.bound_at, &b.binding_id),
                "SET #st = :rev, revokedAt = :now",
                Some("attribute_exists(pk)"),
                &ex,
            ),
        ];
        for g in crate::identity::rules::guards_of(b) {
            items.push(tx_delete(self.c(), keys::guard_key(&g), "bindingId = :id", &ex));
        }
        self.transact(items).await
    }

    /// The consumption of a code, as a transaction item: pending, not expired, this bot.
    pub fn consume_item(
        &self,
        code: &PairingCode,
        bot: &str,
        tg_user: &str,
        tg_chat: &str,
        now: Millis,
    ) -> TransactWriteItem {
        let ex = Ex::new()
            .name("#st", "status")
            .val(":used", s("used"))
            .val(":p", s("pending"))
            .val(":now", n(now))
            .val(":bot", s(bot))
            .val(":u", s(tg_user))
            .val(":c", s(tg_chat));
        tx_update(
            self.c(),
            keys::pairing_key(&code.code),
            "SET #st = :used, usedAt = :now, telegramUserId = :u, telegramChatId = :c",
            Some("#st = :p AND expiresAt > :now AND botIdentity = :bot"),
            &ex,
        )
    }

    /// Flag every binding routed through `bot` (its bot changed): how many were flagged.
    pub async fn flag_bot_bindings(&self, bot: &str, flag: &str) -> AppResult<u32> {
        let mut flagged = 0;
        let mut seen: Vec<String> = Vec::new();
        let mut start = None;
        loop {
            let (items, next) =
                self.partition_page(self.c(), keys::bot_bindings_pk(bot), start, "Query bot bindings").await?;
            for item in items {
                let guard_key = keys::key(
                    match item.get("pk") {
                        Some(AttributeValue::S(v)) => v.clone(),
                        _ => continue,
                    },
                    match item.get("sk") {
                        Some(AttributeValue::S(v)) => v.clone(),
                        _ => continue,
                    },
                );
                let b: Binding = from_item(item)?;
                let ex = Ex::new().name("#f", "flag").val(":id", s(&b.binding_id)).val(":f", s(flag));
                // The guard's copy too: routing reads it.
                self.update_if(self.c(), guard_key, "SET #f = :f", "bindingId = :id", &ex, "flagging a guard").await?;
                if seen.contains(&b.binding_id) {
                    continue;
                }
                seen.push(b.binding_id.clone());
                if self
                    .update_if(
                        self.c(),
                        keys::binding_pointer_key(&b.consumer_user_id),
                        "SET #f = :f",
                        "bindingId = :id",
                        &ex,
                        "flagging a binding",
                    )
                    .await?
                {
                    flagged += 1;
                }
            }
            match next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok(flagged)
    }

    // ---------- accepted updates (queue table) ----------

    /// Deduplicate and persist an update in one conditional put.
    pub async fn accept_update(
        &self,
        bot: &str,
        update_id: i64,
        agent_key: &str,
        raw: &str,
        ttl_at: Millis,
    ) -> AppResult<Accepted> {
        let mut item = keys::update_key(bot, update_id);
        item.insert("botIdentity".into(), s(bot));
        item.insert("updateId".into(), n(update_id));
        item.insert("agentKey".into(), s(agent_key));
        item.insert("rawUpdate".into(), s(raw));
        item.insert("receivedAt".into(), n(self.now()));
        item.insert("ttl".into(), n(keys::ttl_seconds(ttl_at)));
        let r = self
            .client
            .put_item()
            .table_name(&self.tables.queue)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match r {
            Ok(_) => Ok(Accepted::New),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => {
                Ok(Accepted::Duplicate)
            }
            Err(e) => Err(sdk_error("PutItem update", e)),
        }
    }

    /// An accepted update's raw JSON and whether it was processed already.
    pub async fn get_update(&self, bot: &str, update_id: i64) -> AppResult<Option<(String, Option<String>)>> {
        let Some(mut i) = self.get(&self.tables.queue, keys::update_key(bot, update_id)).await? else {
            return Ok(None);
        };
        let raw = match i.remove("rawUpdate") {
            Some(AttributeValue::S(r)) => r,
            _ => return Ok(None),
        };
        let outcome = match i.remove("outcome") {
            Some(AttributeValue::S(o)) => Some(o),
            _ => None,
        };
        Ok(Some((raw, outcome)))
    }

    /// Record what processing did with an update (first outcome wins). The raw update is dropped
    /// once processed (W-13: the message holds what the agent needs).
    pub async fn record_update(&self, bot: &str, update_id: i64, outcome: &str, detail: &str) -> AppResult<bool> {
        let ex = Ex::new()
            .name("#o", "outcome")
            .name("#d", "detail")
            .name("#raw", "rawUpdate")
            .val(":o", s(outcome))
            .val(":d", s(crate::ids::truncate(detail, 500)))
            .val(":now", n(self.now()));
        self.update_if(
            &self.tables.queue,
            keys::update_key(bot, update_id),
            "SET #o = :o, #d = :d, processedAt = :now REMOVE #raw",
            "attribute_exists(pk) AND attribute_not_exists(#o)",
            &ex,
            "recording an update's outcome",
        )
        .await
    }
}

/// Is this binding active (a pointer item is always active; history rows may not be).
pub fn is_active(b: &Binding) -> bool {
    b.status == BindingStatus::Active
}

/// Is this code still waiting.
pub fn is_pending(p: &PairingCode) -> bool {
    p.status == PairingStatus::Pending
}
