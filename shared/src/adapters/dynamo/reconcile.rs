//! Reconcile's reads and writes: the stored (versioned) policy and provider config, the
//! single-flight lease with its coalescing flag, the live worker rows by status, demand from the
//! `ready` index, and the worker transitions reconcile makes. Every read is bounded: nothing
//! here scans a table or reads the history of stopped workers.

use super::keys;
use super::{Ex, Item, Store, applied, from_item, n, s, schema, to_item};
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::queue::shards::{HintBuilder, PartKind, ReadyHint};
use crate::reconcile::model::{BootstrapCode, Demand, Versioned, WarmMachine};
use crate::workers::model::{MintTokenArgs, MintedToken};
use crate::workers::model::{WorkerItem, WorkerStatus};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    ScalingPolicy,
    ProviderConfig,
}

impl Stored {
    fn key(self) -> Item {
        match self {
            Stored::ScalingPolicy => keys::scaling_policy_key(),
            Stored::ProviderConfig => keys::provider_config_key(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Stored::ScalingPolicy => "scaling policy",
            Stored::ProviderConfig => "provider runtime config",
        }
    }
}

/// The outcome of trying to take the reconcile lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Acquired,
    /// Another cycle holds it.
    Busy,
    /// The last cycle ended less than the minimum interval ago: try again after this long.
    TooSoon(Millis),
}

/// Reconcile's state item, as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileState {
    #[serde(default)]
    pub lease_owner: Option<String>,
    #[serde(default)]
    pub lease_until: Option<Millis>,
    #[serde(default)]
    pub dirty: bool,
    #[serde(default)]
    pub last_cycle_at: Option<Millis>,
    /// Cycles started, ever.
    #[serde(default)]
    pub cycles: u64,
}

/// Work due this soon counts as demand (a retry's backoff, a recovered lease): its machine is
/// started before it is due (the original waited for the next trigger, W-L6).
pub const DEMAND_HORIZON_MS: Millis = 30_000;

/// Statuses whose rows a cycle reads (stopped rows are never read).
pub const LIVE_STATUSES: [WorkerStatus; 3] = [WorkerStatus::Active, WorkerStatus::Draining, WorkerStatus::Stopping];

impl Store {
    /// A stored record and its version, or `None`.
    pub async fn get_versioned<T: DeserializeOwned>(&self, which: Stored) -> AppResult<Option<Versioned<T>>> {
        let Some(i) = self.get(&self.tables.control, which.key()).await? else { return Ok(None) };
        Ok(Some(from_item(i)?))
    }

    /// Write a record if its stored version is still `expected` (0 = none stored yet): the
    /// written record has version `expected + 1`. A lost race or a stale `expected` is a
    /// `Conflict` and writes nothing.
    pub async fn put_versioned<T: Serialize + Clone>(
        &self,
        which: Stored,
        value: &T,
        expected: u64,
    ) -> AppResult<Versioned<T>> {
        let rec = Versioned { value: value.clone(), version: expected + 1, updated_at: self.now() };
        let mut item = to_item(&rec)?;
        item.extend(which.key());
        let mut req = self.client.put_item().table_name(&self.tables.control).set_item(Some(item));
        req = if expected == 0 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("version = :v").expression_attribute_values(":v", n(expected))
        };
        match req.send().await {
            Ok(_) => Ok(rec),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => {
                Err(AppError::conflict(format!(
                    "the stored {} is not at version {expected}; read it again (its current version) and retry",
                    which.name()
                )))
            }
            Err(e) => Err(sdk_error("PutItem config", e)),
        }
    }

    /// Every worker row in a running status, one paginated Query of the `byStatus` index per
    /// status: the cost follows the live pool, never the stopped history.
    pub async fn live_workers(&self) -> AppResult<Vec<WorkerItem>> {
        let mut out = Vec::new();
        for st in LIVE_STATUSES {
            let mut start = None;
            loop {
                let (mut rows, next) = self.workers_by_status(st, 500, start).await?;
                out.append(&mut rows);
                match next {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
        }
        // Per status, oldest heartbeat first (the index orders by worker id).
        out.sort_by(|a, b| {
            (a.status.as_str(), a.heartbeat_at, &a.worker_id).cmp(&(b.status.as_str(), b.heartbeat_at, &b.worker_id))
        });
        Ok(out)
    }

    /// One page of the workers of a status, by worker id: one Query of the keys-only
    /// `byStatusKey` index, then the rows themselves (strongly consistent BatchGetItem, 100 a
    /// request). A row whose status moved on since the index saw it is left out.
    pub async fn workers_by_status(
        &self,
        st: WorkerStatus,
        limit: i32,
        start: Option<Item>,
    ) -> AppResult<(Vec<WorkerItem>, Option<Item>)> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.workers)
            .index_name(schema::IDX_WORKERS_BY_STATUS)
            .key_condition_expression("#st = :st")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(st.as_str()))
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error("Query workers byStatusKey", e))?;
        let keys: Vec<(&str, Item)> = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.get("workerId").and_then(|v| v.as_s().ok()))
            .map(|id| (self.tables.workers.as_str(), keys::worker_key(id)))
            .collect();
        let mut rows = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            for item in self.batch_get(chunk).await?.into_iter().flatten() {
                let w: WorkerItem = from_item(item)?;
                if w.status == st {
                    rows.push(w);
                }
            }
        }
        Ok((rows, out.last_evaluated_key.filter(|k| !k.is_empty())))
    }

    /// Conversations with work now, from the `ready` index: per shard, the due ones (`d<n>`), the
    /// waiting ones (`r<n>`, `readyAt <= now +` [`DEMAND_HORIZON_MS`], oldest first) and the locked
    /// ones (`l<n>`), at most `limit` each. The second value says a bound was hit (more demand
    /// exists than was read); the third is the ready hint this read observed (`queue::shards`).
    pub async fn ready_demand(&self, now: Millis, limit: i32) -> AppResult<(Vec<Demand>, bool, ReadyHint)> {
        let mut out = Vec::new();
        let mut capped = false;
        let shards = self.policy.queue.ready_shards.max(1);
        let mut hint = HintBuilder::default();
        // `d<n>`: unlocked and due (the claim order's partition, also in `ready`); `r<n>`: waiting
        // for their time; `l<n>`: locked.
        for (prefix, kind) in [("d", PartKind::Due), ("r", PartKind::Waiting), ("l", PartKind::Locked)] {
            let locked = kind == PartKind::Locked;
            for shard in 0..shards {
                let part = format!("{prefix}{shard}");
                let r = self
                    .client
                    .query()
                    .table_name(&self.tables.queue)
                    .index_name(schema::IDX_READY)
                    .key_condition_expression("readyShard = :p AND readyAt <= :now")
                    .projection_expression("conversationId, agentKey, lockWorkerId, readyAt, ownerUntil")
                    .expression_attribute_values(":p", s(part))
                    .expression_attribute_values(":now", n(if locked { i64::MAX / 2 } else { now + DEMAND_HORIZON_MS }))
                    .limit(limit)
                    .send()
                    .await
                    .map_err(|e| sdk_error("Query ready demand", e))?;
                capped |= r.last_evaluated_key.is_some_and(|k| !k.is_empty());
                for i in r.items.unwrap_or_default() {
                    let get = |k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
                    let num = |k: &str| i.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<Millis>().ok());
                    hint.observe(kind, shard, num("readyAt"), num("ownerUntil"), now);
                    let (Some(cid), Some(agent)) = (get("conversationId"), get("agentKey")) else { continue };
                    out.push(Demand {
                        conversation_id: cid,
                        agent_key: agent,
                        locked,
                        lock_worker_id: get("lockWorkerId"),
                    });
                }
            }
        }
        Ok((out, capped, hint.build(shards, now)))
    }

    /// The reconcile state item (lease, coalescing flag, counters).
    pub async fn reconcile_state(&self) -> AppResult<ReconcileState> {
        Ok(match self.get(&self.tables.control, keys::reconcile_state_key()).await? {
            Some(i) => from_item(i)?,
            None => ReconcileState::default(),
        })
    }

    /// Take the single-flight lease for `ttl_ms` unless another cycle holds it or the last one
    /// ended less than `min_interval_ms` ago. Taking it clears the coalescing flag: the cycle
    /// that starts now sees everything that set it. One UpdateItem (+ 1 GetItem when refused).
    pub async fn reconcile_acquire(&self, owner: &str, ttl_ms: Millis, min_interval_ms: Millis) -> AppResult<Acquire> {
        let now = self.now();
        let ex = Ex::new()
            .val(":o", s(owner))
            .val(":until", n(now + ttl_ms))
            .val(":now", n(now))
            .val(":f", AttributeValue::Bool(false))
            .val(":zero", n(0))
            .val(":one", n(1))
            .val(":since", n(now - min_interval_ms));
        let ok = self
            .update_if(
                &self.tables.control,
                keys::reconcile_state_key(),
                "SET leaseOwner = :o, leaseUntil = :until, dirty = :f, cycles = if_not_exists(cycles, :zero) + :one",
                "(attribute_not_exists(leaseUntil) OR leaseUntil <= :now) AND \
                 (attribute_not_exists(lastCycleAt) OR lastCycleAt <= :since)",
                &ex,
                "UpdateItem reconcile lease",
            )
            .await?;
        if ok {
            return Ok(Acquire::Acquired);
        }
        let st = self.reconcile_state().await?;
        if st.lease_until.is_some_and(|u| u > now) {
            return Ok(Acquire::Busy);
        }
        let wait = st.last_cycle_at.map_or(0, |t| t + min_interval_ms - now).max(1);
        Ok(Acquire::TooSoon(wait))
    }

    /// Ask for a cycle: sets the coalescing flag (one UpdateItem). The lease holder runs
    /// another round when it finds the flag set as it finishes.
    pub async fn reconcile_mark_dirty(&self) -> AppResult<()> {
        self.client
            .update_item()
            .table_name(&self.tables.control)
            .set_key(Some(keys::reconcile_state_key()))
            .update_expression("SET dirty = :t")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem reconcile dirty", e))?;
        Ok(())
    }

    /// End a round. Releases the lease unless the flag was set meanwhile: then it keeps the
    /// lease (clearing the flag, extending it by `ttl_ms`) and returns `true` (run again).
    pub async fn reconcile_finish(&self, owner: &str, ttl_ms: Millis, keep_if_dirty: bool) -> AppResult<bool> {
        let now = self.now();
        let ex = Ex::new()
            .val(":o", s(owner))
            .val(":now", n(now))
            .val(":until", n(now + ttl_ms))
            .val(":f", AttributeValue::Bool(false))
            .val(":t", AttributeValue::Bool(true));
        let key = keys::reconcile_state_key;
        let cond = if keep_if_dirty { "leaseOwner = :o AND dirty <> :t" } else { "leaseOwner = :o" };
        let released = self
            .update_if(
                &self.tables.control,
                key(),
                "SET leaseUntil = :now, lastCycleAt = :now",
                cond,
                &ex,
                "UpdateItem reconcile release",
            )
            .await?;
        if released {
            return Ok(false);
        }
        // Flagged meanwhile (or the lease was lost): keep it for another round if still ours.
        self.update_if(
            &self.tables.control,
            key(),
            "SET dirty = :f, leaseUntil = :until, cycles = cycles + :one",
            "leaseOwner = :o AND leaseUntil > :now",
            &ex.clone().val(":one", n(1)),
            "UpdateItem reconcile keep",
        )
        .await
    }

    /// Pre-register a spawned worker (before its machine exists): `active`, assigned to its
    /// conversation (which it then owns, as after a claim), with its provider and app. Refused
    /// (Conflict) if the id exists. One PutItem (+ 1 UpdateItem of the conversation).
    pub async fn register_spawn(
        &self,
        worker_id: &str,
        provider: &str,
        app: &str,
        assignment: Option<(&str, &str)>,
    ) -> AppResult<WorkerItem> {
        let now = self.now();
        let w = WorkerItem {
            worker_id: worker_id.into(),
            provider: provider.into(),
            status: WorkerStatus::Active,
            load: 0,
            heartbeat_at: now,
            last_claim_at: None,
            last_complete_at: None,
            scheduled_shutdown_at: None,
            stopped_at: None,
            machine_id: None,
            app_name: Some(app.into()),
            region: None,
            volume_id: None,
            last_snapshot_id: None,
            assigned_conversation_id: assignment.map(|a| a.0.into()),
            assigned_agent_key: assignment.map(|a| a.1.into()),
            assigned_lease_id: assignment.map(|_| format!("spawn:{worker_id}")),
            assigned_at: assignment.map(|_| now),
            drain_started_at: None,
            registered_at: Some(now),
            token_hash: None,
            token_issued_at: None,
            ttl: None,
        };
        let r = self
            .client
            .put_item()
            .table_name(&self.tables.workers)
            .set_item(Some(to_item(&w)?))
            .condition_expression("attribute_not_exists(workerId)")
            .send()
            .await;
        match r {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => {
                return Err(AppError::conflict(format!("worker '{worker_id}' exists")));
            }
            Err(e) => return Err(sdk_error("PutItem worker spawn", e)),
        }
        if let Some((cid, agent)) = assignment {
            self.own_assigned_conversation(worker_id, cid, agent).await?;
        }
        Ok(w)
    }

    /// Record a worker's machine (and volume) once the provider created it.
    pub async fn attach_machine(
        &self,
        worker_id: &str,
        machine_id: &str,
        region: Option<&str>,
        volume_id: Option<&str>,
    ) -> AppResult<bool> {
        let mut set = vec!["machineId = :m"];
        let mut ex = Ex::new().val(":m", s(machine_id)).name("#st", "status").val(":stopped", s("stopped"));
        if let Some(r) = region.filter(|r| !r.is_empty()) {
            set.push("#rg = :r");
            ex = ex.name("#rg", "region").val(":r", s(r));
        }
        if let Some(v) = volume_id {
            set.push("volumeId = :v");
            ex = ex.val(":v", s(v));
        }
        let update = format!("SET {}", set.join(", "));
        self.update_if(
            &self.tables.workers,
            keys::worker_key(worker_id),
            &update,
            "attribute_exists(workerId) AND #st <> :stopped",
            &ex,
            "UpdateItem worker machine",
        )
        .await
    }

    /// Record a worker's volume before its machine exists (so a failed create leaves nothing
    /// untracked).
    pub async fn attach_volume(&self, worker_id: &str, volume_id: &str) -> AppResult<bool> {
        let ex = Ex::new().val(":v", s(volume_id));
        self.update_if(
            &self.tables.workers,
            keys::worker_key(worker_id),
            "SET volumeId = :v",
            "attribute_exists(workerId)",
            &ex,
            "UpdateItem worker volume",
        )
        .await
    }

    /// A reconcile transition, conditional on the status the plan saw: `active -> draining`
    /// (drain starts now; an earlier snapshot no longer counts as the final one), `draining ->
    /// stopping`, `stopping -> stopped` (machine and volume references and the token removed).
    /// Never touches `heartbeatAt` (liveness is the worker's). `false` when the row moved on.
    pub async fn reconcile_transition(&self, worker_id: &str, from: WorkerStatus) -> AppResult<bool> {
        let now = self.now();
        let (to, update) = match from {
            WorkerStatus::Active => (
                WorkerStatus::Draining,
                "SET #st = :to, drainStartedAt = :now REMOVE lastSnapshotId, scheduledShutdownAt",
            ),
            WorkerStatus::Draining => {
                (WorkerStatus::Stopping, "SET #st = :to, stoppedAt = if_not_exists(stoppedAt, :now)")
            }
            WorkerStatus::Stopping => (
                WorkerStatus::Stopped,
                "SET #st = :to, stoppedAt = if_not_exists(stoppedAt, :now), #ttl = :ttl REMOVE machineId, volumeId, tokenHash, tokenIssuedAt",
            ),
            WorkerStatus::Stopped => return Ok(false),
        };
        let ex = Ex::new()
            .name("#st", "status")
            .name("#ttl", "ttl")
            .val(":from", s(from.as_str()))
            .val(":to", s(to.as_str()))
            .val(":now", n(now))
            .val(":ttl", n(crate::workers::model::stopped_ttl(now)));
        let r = self
            .client
            .update_item()
            .table_name(&self.tables.workers)
            .set_key(Some(keys::worker_key(worker_id)))
            .update_expression(update)
            .condition_expression("#st = :from")
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        let (names, values) = ex.for_exprs(&[update, "#st = :from"]);
        let r = r.set_expression_attribute_names(names).set_expression_attribute_values(values).send().await;
        let Some(out) = applied(r, "UpdateItem worker transition")? else { return Ok(false) };
        // Leaving the pool lets go of its conversation (the next worker need not wait for
        // `STALE_AFTER_MS`).
        if to == WorkerStatus::Stopping
            && let Some(cid) = out.attributes.as_ref().and_then(|a| super::item_s(a, "assignedConversationId"))
        {
            self.release_conversation_owner(worker_id, cid).await?;
        }
        Ok(true)
    }

    /// A new single-use bootstrap code for `worker_id`, redeemable for `ttl_ms`. Only its
    /// SHA-256 is stored (control table, `BOOT#<hash>`, with a DynamoDB TTL). One PutItem.
    pub async fn create_bootstrap_code(&self, worker_id: &str, ttl_ms: Millis) -> AppResult<BootstrapCode> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| AppError::internal(format!("randomness: {e}")))?;
        let code = BootstrapCode(format!("afb1.{}", hex::encode(secret)));
        let now = self.now();
        let mut item = keys::bootstrap_key(&crate::workers::auth::token_hash(code.expose()));
        item.insert("workerId".into(), s(worker_id));
        item.insert("expiresAt".into(), n(now + ttl_ms));
        item.insert("ttl".into(), n(keys::ttl_seconds(now + ttl_ms) + 86_400));
        self.client
            .put_item()
            .table_name(&self.tables.control)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem bootstrap code", e))?;
        Ok(code)
    }

    /// Exchange a bootstrap code for the worker's token: the code is deleted in the same
    /// conditional write that checks it is unexpired, so it works once; then a token is minted
    /// (replacing any earlier one). A used, expired or unknown code is `Unauthorized` and
    /// changes nothing.
    pub async fn redeem_bootstrap_code(&self, code: &str) -> AppResult<MintedToken> {
        let refused = || AppError::Unauthorized("the bootstrap code is unknown, used or expired".into());
        if !code.starts_with("afb1.") || code.len() != 69 {
            return Err(refused());
        }
        let now = self.now();
        let r = self
            .client
            .delete_item()
            .table_name(&self.tables.control)
            .set_key(Some(keys::bootstrap_key(&crate::workers::auth::token_hash(code))))
            .condition_expression("attribute_exists(pk) AND expiresAt > :now")
            .expression_attribute_values(":now", n(now))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        let old = match r {
            Ok(o) => o.attributes.unwrap_or_default(),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => {
                return Err(refused());
            }
            Err(e) => return Err(sdk_error("DeleteItem bootstrap code", e)),
        };
        let Some(worker_id) = old.get("workerId").and_then(|v| v.as_s().ok()).cloned() else {
            return Err(refused());
        };
        self.mint_worker_token(&MintTokenArgs { worker_id, provider: None }).await
    }

    /// The warm machines (one Query of the `WARM` partition, at most `limit`).
    pub async fn warm_machines(&self, limit: i32) -> AppResult<Vec<WarmMachine>> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.control)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(keys::WARM_PK))
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query warm machines", e))?;
        out.items.unwrap_or_default().into_iter().map(from_item).collect()
    }

    /// Remember a parked machine. One PutItem.
    pub async fn put_warm(&self, w: &WarmMachine) -> AppResult<()> {
        let mut item = to_item(w)?;
        item.extend(keys::warm_key(&w.machine_id));
        self.put_control(item, "PutItem warm machine").await
    }

    /// Take (or forget) a warm machine: `false` when someone else took it. One DeleteItem.
    pub async fn take_warm(&self, machine_id: &str) -> AppResult<bool> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.tables.control)
            .set_key(Some(keys::warm_key(machine_id)))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(sdk_error("DeleteItem warm machine", e)),
        }
    }
}
