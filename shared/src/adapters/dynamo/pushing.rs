//! Push templates, jobs, dispatch records and broadcasts in the control table
//! (`docs/data-model.md` §pushing). The dispatch writes are built here and handed to the use case,
//! which runs them in the enqueue's transaction (`Store::enqueue_with`).

use super::tx::{tx_delete, tx_put, tx_update};
use super::{Ex, Item, Store, TxError, TxItem, from_item, keys, n, s, schema, to_item};
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::pushing::model::{Broadcast, PushDispatch, PushJob, PushTemplate};
use crate::pushing::rules::split_id;

/// The most items a per-company or per-user listing reads.
pub const MAX_LISTED: usize = 1_000;

/// How a dispatch moves its job on (the job write of a dispatch).
#[derive(Debug, Clone)]
pub struct Advance {
    /// Scheduled: the slot the job must still be at (`nextRunAt = slot`); manual: none.
    pub slot: Option<Millis>,
    /// The new `nextRunAt` (`None` = removed), or unchanged when not given.
    pub next: Option<Option<Millis>>,
    /// The agent the attempt used (kept as the job's `agentKey`).
    pub agent_key: Option<String>,
}

fn no_nulls(mut item: Item) -> Item {
    item.retain(|_, v| !v.is_null());
    item
}

fn bad_id() -> AppError {
    AppError::internal("a push item with a malformed id")
}

impl Store {
    fn ctl(&self) -> &str {
        &self.tables.control
    }

    /// Every item of `pk` whose sort key begins with `prefix` (Query pages, at most `max`).
    async fn query_prefix(&self, pk: String, prefix: &str, max: usize, newest_first: bool) -> AppResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(self.ctl())
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":p", s(prefix))
                .scan_index_forward(!newest_first)
                .limit((max - out.len()).clamp(1, 500) as i32)
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error("Query control", e))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() && out.len() < max => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    // ---------- push templates ----------

    fn push_template_item(&self, t: &PushTemplate) -> AppResult<Item> {
        let (ulid, company) = split_id(&t.template_id).ok_or_else(bad_id)?;
        let mut item = no_nulls(to_item(t)?);
        item.extend(keys::push_template_key(company, ulid));
        Ok(item)
    }

    /// Insert a push template and its key guard; `false` when the key exists for the company.
    pub async fn insert_push_template(&self, t: &PushTemplate) -> AppResult<bool> {
        let ex = Ex::new();
        let mut guard = keys::push_template_key_guard(&t.company_id, &t.template_key);
        guard.insert("templateId".into(), s(&t.template_id));
        let items = vec![
            tx_put(self.ctl(), guard, "attribute_not_exists(pk)", &ex),
            tx_put(self.ctl(), self.push_template_item(t)?, "attribute_not_exists(pk)", &ex),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("createPushTemplate")),
        }
    }

    pub async fn get_push_template(&self, template_id: &str) -> AppResult<Option<PushTemplate>> {
        let Some((ulid, company)) = split_id(template_id) else { return Ok(None) };
        self.get(self.ctl(), keys::push_template_key(company, ulid)).await?.map(from_item).transpose()
    }

    /// Write `new` over `old` if the item is still at `old.updatedAt`; `false` when it is not.
    pub async fn replace_push_template(&self, old: &PushTemplate, new: &PushTemplate) -> AppResult<bool> {
        let ex = Ex::new().val(":u", n(old.updated_at));
        let put = tx_put(self.ctl(), self.push_template_item(new)?, "updatedAt = :u", &ex);
        match self.transact(vec![put]).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("updatePushTemplate")),
        }
    }

    pub async fn delete_push_template(&self, t: &PushTemplate) -> AppResult<bool> {
        let (ulid, company) = split_id(&t.template_id).ok_or_else(bad_id)?;
        let ex = Ex::new();
        let items = vec![
            tx_delete(self.ctl(), keys::push_template_key(company, ulid), "attribute_exists(pk)", &ex),
            tx_delete(self.ctl(), keys::push_template_key_guard(company, &t.template_key), "attribute_exists(pk)", &ex),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("deletePushTemplate")),
        }
    }

    pub async fn company_push_templates(&self, company_id: &str) -> AppResult<Vec<PushTemplate>> {
        let items =
            self.query_prefix(keys::company_pk(company_id), keys::PUSH_TEMPLATE_PREFIX, MAX_LISTED, false).await?;
        items.into_iter().map(from_item).collect()
    }

    // ---------- push jobs ----------

    /// A job's item: its fields, its key, and the `pushDue` index attributes while it has a next run.
    fn push_job_item(&self, j: &PushJob) -> AppResult<Item> {
        let (ulid, user) = split_id(&j.job_id).ok_or_else(bad_id)?;
        let mut item = no_nulls(to_item(j)?);
        item.extend(keys::push_job_key(user, ulid));
        if j.next_run_at.is_some() {
            item.insert("pushDueShard".into(), s(keys::PUSH_DUE_SHARD));
        }
        Ok(item)
    }

    /// Insert a job (and its agent into the company's roster, the broadcasts' targets).
    pub async fn insert_push_job(&self, j: &PushJob) -> AppResult<()> {
        let ex = Ex::new();
        let mut items = vec![tx_put(self.ctl(), self.push_job_item(j)?, "attribute_not_exists(pk)", &ex)];
        if let Some(a) = &j.agent_key {
            items.push(tx_update(
                self.ctl(),
                keys::company_agent_key(&j.company_id, a),
                "SET agentKey = :a, addedAt = if_not_exists(addedAt, :t)",
                None,
                &Ex::new().val(":a", s(a)).val(":t", n(j.created_at)),
            ));
        }
        self.transact(items).await.map_err(|e| e.into_app("createPushJob"))
    }

    pub async fn get_push_job(&self, job_id: &str) -> AppResult<Option<PushJob>> {
        let Some((ulid, user)) = split_id(job_id) else { return Ok(None) };
        self.get(self.ctl(), keys::push_job_key(user, ulid)).await?.map(from_item).transpose()
    }

    /// Write `new` over `old` if the job is still at `old.updatedAt` (a dispatch moves it too);
    /// `false` when it is not.
    pub async fn replace_push_job(&self, old: &PushJob, new: &PushJob) -> AppResult<bool> {
        let ex = Ex::new().val(":u", n(old.updated_at));
        let put = tx_put(self.ctl(), self.push_job_item(new)?, "updatedAt = :u", &ex);
        match self.transact(vec![put]).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("updatePushJob")),
        }
    }

    pub async fn delete_push_job(&self, j: &PushJob) -> AppResult<bool> {
        let (ulid, user) = split_id(&j.job_id).ok_or_else(bad_id)?;
        let ex = Ex::new();
        match self
            .transact(vec![tx_delete(self.ctl(), keys::push_job_key(user, ulid), "attribute_exists(pk)", &ex)])
            .await
        {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("deletePushJob")),
        }
    }

    /// A user's jobs (one partition, at most [`MAX_LISTED`]).
    pub async fn user_push_jobs(&self, consumer_user_id: &str) -> AppResult<Vec<PushJob>> {
        let items =
            self.query_prefix(keys::push_user_pk(consumer_user_id), keys::PUSH_JOB_PREFIX, MAX_LISTED, false).await?;
        items.into_iter().map(from_item).collect()
    }

    /// Ids of jobs due at `now` (`nextRunAt <= now`), oldest slot first: one Query page of the
    /// sparse `pushDue` index (at most `limit`), and where the next page starts.
    pub async fn due_push_jobs(
        &self,
        now: Millis,
        limit: usize,
        start: Option<Item>,
    ) -> AppResult<(Vec<String>, Option<Item>)> {
        let page = self
            .client
            .query()
            .table_name(self.ctl())
            .index_name(schema::IDX_PUSH_DUE)
            .key_condition_expression("pushDueShard = :d AND nextRunAt <= :now")
            .expression_attribute_values(":d", s(keys::PUSH_DUE_SHARD))
            .expression_attribute_values(":now", n(now))
            .limit(limit.clamp(1, 1000) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error("Query pushDue", e))?;
        let ids = page
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| {
                let user = super::item_s(i, "pk")?.strip_prefix("PJ#")?;
                let ulid = super::item_s(i, "sk")?.strip_prefix(keys::PUSH_JOB_PREFIX)?;
                Some(crate::pushing::rules::make_id(ulid, user))
            })
            .collect();
        Ok((ids, page.last_evaluated_key.filter(|k| !k.is_empty())))
    }

    // ---------- dispatches ----------

    /// The writes of one dispatch: the (jobId, runKey) guard (put if absent), the record, and the
    /// job's advance (conditional on its slot for scheduled runs, on its existence for manual ones).
    pub fn push_dispatch_writes(&self, job: &PushJob, d: &PushDispatch, adv: &Advance) -> AppResult<Vec<TxItem>> {
        let (ulid, user) = split_id(&job.job_id).ok_or_else(bad_id)?;
        let d_ulid = d.dispatch_id.rsplit(':').next().unwrap_or(&d.dispatch_id);
        let mut guard = keys::push_run_guard_key(&job.job_id, &d.run_key);
        guard.insert("dispatchId".into(), s(&d.dispatch_id));
        guard.insert("createdAt".into(), n(d.created_at));
        if let Some(m) = &d.enqueued_message_id {
            guard.insert("enqueuedMessageId".into(), s(m));
        }
        let mut record = no_nulls(to_item(d)?);
        record.extend(keys::push_dispatch_key(&job.job_id, d.created_at, d_ulid));
        let ex = Ex::new().val(":now", n(d.created_at)).val(":rk", s(&d.run_key)).val(":d", s(keys::PUSH_DUE_SHARD));
        let mut set = vec!["lastRunAt = :now", "lastRunKey = :rk", "updatedAt = :now"];
        let mut remove = Vec::new();
        let mut ex = ex;
        if let Some(a) = &adv.agent_key {
            set.push("agentKey = :a");
            ex = ex.val(":a", s(a));
        }
        match adv.next {
            Some(Some(next)) => {
                set.extend(["nextRunAt = :next", "pushDueShard = :d"]);
                ex = ex.val(":next", n(next));
            }
            Some(None) => remove.extend(["nextRunAt", "pushDueShard"]),
            None => {}
        }
        let cond = match adv.slot {
            Some(slot) => {
                ex = ex.val(":slot", n(slot));
                "nextRunAt = :slot"
            }
            None => "attribute_exists(pk)",
        };
        let mut update = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        Ok(vec![
            tx_put(self.ctl(), guard, "attribute_not_exists(pk)", &ex),
            tx_put(self.ctl(), record, "attribute_not_exists(pk)", &ex),
            tx_update(self.ctl(), keys::push_job_key(user, ulid), &update, Some(cond), &ex),
        ])
    }

    /// Run dispatch writes without a message (a failed or skipped attempt): `false` when a
    /// condition refused them (another dispatcher took the slot, the job changed).
    pub async fn write_push_dispatch(&self, writes: Vec<TxItem>) -> AppResult<bool> {
        match self.transact(writes).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.iter().any(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("push dispatch")),
        }
    }

    /// The (jobId, runKey) guard: the dispatch and the message it made, if that run happened.
    pub async fn push_run_guard(&self, job_id: &str, run_key: &str) -> AppResult<Option<Item>> {
        self.get(self.ctl(), keys::push_run_guard_key(job_id, run_key)).await
    }

    /// A job's newest `limit` dispatch records, newest first (one Query).
    pub async fn job_dispatches(&self, job_id: &str, limit: usize) -> AppResult<Vec<PushDispatch>> {
        let items = self.query_prefix(keys::push_dispatch_pk(job_id), keys::PUSH_DISPATCH_PREFIX, limit, true).await?;
        items.into_iter().map(from_item).collect()
    }

    // ---------- broadcasts ----------

    pub async fn get_broadcast(&self, company_id: &str, idempotency_key: &str) -> AppResult<Option<Broadcast>> {
        self.get(self.ctl(), keys::broadcast_key(company_id, idempotency_key)).await?.map(from_item).transpose()
    }

    /// Insert a broadcast with its targets; `false` when one exists for the key.
    pub async fn insert_broadcast(&self, b: &Broadcast, targets: &[String]) -> AppResult<bool> {
        let mut item = no_nulls(to_item(b)?);
        item.extend(keys::broadcast_key(&b.company_id, &b.idempotency_key));
        item.insert("targets".into(), super::to_av(&targets)?);
        match self.transact(vec![tx_put(self.ctl(), item, "attribute_not_exists(pk)", &Ex::new())]).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("sendBroadcastToAllActiveAgents")),
        }
    }

    /// The targets a broadcast was started with.
    pub async fn broadcast_targets(&self, company_id: &str, idempotency_key: &str) -> AppResult<Vec<String>> {
        let item = self.get(self.ctl(), keys::broadcast_key(company_id, idempotency_key)).await?;
        Ok(item
            .and_then(|i| i.get("targets").cloned())
            .map(serde_dynamo::from_attribute_value::<_, Vec<String>>)
            .transpose()
            .map_err(|e| AppError::internal(format!("decoding broadcast targets: {e}")))?
            .unwrap_or_default())
    }

    /// A broadcast dispatch row's write (put if absent: one per (broadcast, agent)).
    pub fn broadcast_row_write(
        &self,
        row: &serde_json::Value,
        broadcast_id: &str,
        agent_key: &str,
    ) -> AppResult<TxItem> {
        let mut item = no_nulls(to_item(row)?);
        item.extend(keys::broadcast_dispatch_key(broadcast_id, agent_key));
        Ok(tx_put(self.ctl(), item, "attribute_not_exists(pk)", &Ex::new()))
    }

    /// A broadcast's dispatch rows (one partition, at most [`MAX_LISTED`]).
    pub async fn broadcast_rows(&self, broadcast_id: &str) -> AppResult<Vec<serde_json::Value>> {
        let items = self.query_prefix(keys::broadcast_dispatch_pk(broadcast_id), "A#", MAX_LISTED, false).await?;
        items
            .into_iter()
            .map(|mut i| {
                i.remove("pk");
                i.remove("sk");
                from_item(i)
            })
            .collect()
    }

    /// Close a running broadcast with its counts.
    pub async fn finish_broadcast(&self, b: &Broadcast) -> AppResult<()> {
        let ex = Ex::new()
            .name("#st", "status")
            .val(":st", s(&b.status))
            .val(":e", n(b.enqueued_count))
            .val(":f", n(b.failed_count))
            .val(":c", n(b.completed_at.unwrap_or_default()))
            .val(":r", s("running"));
        self.update_if(
            self.ctl(),
            keys::broadcast_key(&b.company_id, &b.idempotency_key),
            "SET #st = :st, enqueuedCount = :e, failedCount = :f, completedAt = :c",
            "#st = :r",
            &ex,
            "finish broadcast",
        )
        .await
        .map(drop)
    }

    /// The agents of a company's roster (added when a push job is made for an agent).
    pub async fn company_agents(&self, company_id: &str) -> AppResult<Vec<String>> {
        let items =
            self.query_prefix(keys::company_pk(company_id), keys::COMPANY_AGENT_PREFIX, MAX_LISTED, false).await?;
        Ok(items.iter().filter_map(|i| super::item_s(i, "agentKey").map(str::to_string)).collect())
    }
}
