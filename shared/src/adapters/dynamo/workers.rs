//! Worker rows: reads and `upsertWorkerState` with the allowed status transitions (spec §5.2, §14).

use super::keys;
use super::{Store, from_item, s, to_item};
use crate::adapters::sdk_error;
use crate::error::{AppError, AppResult};
use crate::queue::rules;
use crate::workers::model::{ControlState, MintTokenArgs, MintedToken, UpsertWorkerArgs, WorkerItem, WorkerStatus};
use crate::workers::rules::{apply_upsert, control_state, validate_upsert};
use aws_sdk_dynamodb::types::AttributeValue;

impl Store {
    pub async fn get_worker(&self, worker_id: &str) -> AppResult<Option<WorkerItem>> {
        rules::validate_worker_id(worker_id)?;
        let k = keys::worker_key(worker_id);
        self.get(&self.tables.workers, k).await?.map(from_item).transpose()
    }

    /// `upsertWorkerState`: read, apply the rules, write back only if nobody changed the row.
    pub async fn upsert_worker_state(&self, a: &UpsertWorkerArgs) -> AppResult<WorkerItem> {
        validate_upsert(a)?;
        for _ in 0..5 {
            let now = self.now();
            let prev = self.get_worker(&a.worker_id).await?;
            let next = apply_upsert(prev.as_ref(), a, now)?;
            let mut req = self.client.put_item().table_name(&self.tables.workers).set_item(Some(to_item(&next)?));
            req = match &prev {
                None => req.condition_expression("attribute_not_exists(workerId)"),
                Some(p) => req
                    .condition_expression("#st = :st AND heartbeatAt = :hb AND #ld = :ld")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_names("#ld", "load")
                    .expression_attribute_values(":st", s(p.status.as_str()))
                    .expression_attribute_values(":hb", AttributeValue::N(p.heartbeat_at.to_string()))
                    .expression_attribute_values(":ld", AttributeValue::N(p.load.to_string())),
            };
            match req.send().await {
                Ok(_) => {
                    // An assignment keeps other workers out of its conversation (I6), like a claim.
                    if let (Some(Some(x)), WorkerStatus::Active) = (&a.assignment, next.status) {
                        self.own_assigned_conversation(&a.worker_id, &x.conversation_id, &x.agent_key).await?;
                    }
                    // Leaving the pool lets go of it.
                    if matches!(next.status, WorkerStatus::Stopping | WorkerStatus::Stopped)
                        && let Some(cid) = prev.as_ref().and_then(|p| p.assigned_conversation_id.as_deref())
                    {
                        self.release_conversation_owner(&a.worker_id, cid).await?;
                    }
                    return Ok(next);
                }
                Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => continue,
                Err(e) => return Err(sdk_error("PutItem worker", e)),
            }
        }
        Err(AppError::conflict(format!("worker '{}' changed during the update; try again", a.worker_id)))
    }
}

impl Store {
    /// `mintWorkerToken`: a new token for the worker (registering it as `active` when the row does
    /// not exist). The previous token stops working. Refused for stopping/stopped workers.
    pub async fn mint_worker_token(&self, a: &MintTokenArgs) -> AppResult<MintedToken> {
        rules::validate_worker_id(&a.worker_id)?;
        let provider = a.provider.as_deref().map(str::trim).unwrap_or("self-hosted");
        if provider.is_empty() || provider.len() > 64 || provider.chars().any(char::is_control) {
            return Err(AppError::validation("provider must be 1 to 64 characters, without control characters"));
        }
        let token = crate::workers::auth::new_token(&a.worker_id);
        let now = self.now();
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.workers)
            .set_key(Some(keys::worker_key(&a.worker_id)))
            .update_expression(
                "SET tokenHash = :h, tokenIssuedAt = :now, provider = if_not_exists(provider, :p), \
                 #st = if_not_exists(#st, :active), heartbeatAt = if_not_exists(heartbeatAt, :now), \
                 registeredAt = if_not_exists(registeredAt, :now), #ld = if_not_exists(#ld, :zero)",
            )
            .condition_expression("attribute_not_exists(workerId) OR #st IN (:active, :draining)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#ld", "load")
            .expression_attribute_values(":h", s(crate::workers::auth::token_hash(token.expose())))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":p", s(provider))
            .expression_attribute_values(":active", s("active"))
            .expression_attribute_values(":draining", s("draining"))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let Some(o) = super::applied(out, "UpdateItem worker token")? else {
            return Err(AppError::conflict(format!(
                "worker '{}' is stopping or stopped and gets no new token; register a new workerId",
                a.worker_id
            )));
        };
        let w: WorkerItem = from_item(o.attributes.unwrap_or_default())?;
        Ok(MintedToken {
            worker_id: a.worker_id.clone(),
            token: token.expose().to_string(),
            issued_at: now,
            status: w.status,
        })
    }

    /// `revokeWorkerToken`: the worker's token stops working at once for every write and for the
    /// reads that hand out data; `has-queued` may still trust it for the authentication cache time
    /// (`WORKER_AUTH_CACHE_MS`). Returns whether one existed.
    pub async fn revoke_worker_token(&self, worker_id: &str) -> AppResult<bool> {
        rules::validate_worker_id(worker_id)?;
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.workers)
            .set_key(Some(keys::worker_key(worker_id)))
            .update_expression("REMOVE tokenHash, tokenIssuedAt")
            .condition_expression("attribute_exists(tokenHash)")
            .send()
            .await;
        Ok(super::applied(out, "UpdateItem worker token")?.is_some())
    }

    /// The condition a worker's write carries on its own worker row, in the same transaction: the
    /// token is still the worker's (not replaced or revoked) and the worker is not stopped. So a
    /// token change takes effect at once for every write, whatever the authentication cache says.
    pub(crate) fn token_check(
        &self,
        p: &crate::workers::auth::Principal,
    ) -> aws_sdk_dynamodb::types::TransactWriteItem {
        let ex = super::Ex::new().name("#st", "status").val(":th", s(&p.token_hash)).val(":stopped", s("stopped"));
        super::tx::tx_check(
            &self.tables.workers,
            keys::worker_key(&p.worker_id),
            "tokenHash = :th AND #st <> :stopped",
            &ex,
        )
    }

    /// Why [`Store::token_check`] failed, read from the row: the 401 the caller gets (or a
    /// conflict when the row accepts the token again by now).
    pub(crate) async fn token_refusal(&self, p: &crate::workers::auth::Principal) -> AppError {
        match self.get_worker(&p.worker_id).await {
            Ok(row) => match crate::workers::auth::check_row(row.as_ref(), &p.token_hash) {
                Err(e) => e,
                Ok(_) => AppError::conflict("the worker row changed during the call; try again"),
            },
            Err(e) => e,
        }
    }

    /// `getWorkerControlState` on the server clock.
    pub async fn worker_control_state(&self, worker_id: &str) -> AppResult<ControlState> {
        rules::validate_worker_id(worker_id)?;
        let w = self.get_worker(worker_id).await?;
        let st = control_state(w.as_ref(), self.now(), &self.policy.workers);
        if st.should_stop {
            tracing::info!(worker_id, reasons = ?st.reasons, "worker should stop");
        }
        Ok(st)
    }

    /// The worker-level heartbeat (the original has none, W8): an idle worker proves it is alive.
    /// One UpdateItem that also re-checks the token; returns the control state.
    pub async fn worker_heartbeat(&self, p: &crate::workers::auth::Principal) -> AppResult<ControlState> {
        let now = self.now();
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.workers)
            .set_key(Some(keys::worker_key(&p.worker_id)))
            .update_expression("SET heartbeatAt = :now")
            .condition_expression("tokenHash = :h AND #st IN (:active, :draining, :stopping)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":h", s(&p.token_hash))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":active", s("active"))
            .expression_attribute_values(":draining", s("draining"))
            .expression_attribute_values(":stopping", s("stopping"))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let Some(o) = super::applied(out, "UpdateItem worker heartbeat")? else {
            return Err(self.token_refusal(p).await);
        };
        let w: WorkerItem = from_item(o.attributes.unwrap_or_default())?;
        Ok(control_state(Some(&w), now, &self.policy.workers))
    }
}
