//! The DynamoDB adapter: client setup, the request counter, transaction plumbing, and the
//! queue, worker and control operations (one file each).

pub mod agents;
pub mod counter;
pub mod hydration;
pub mod identity;
pub mod identity_scans;
pub mod keys;
pub mod media;
pub mod pushing;
pub mod queue;
pub mod queue_gauges;
pub mod reconcile;
pub mod replies;
pub mod schema;
pub mod skills;
pub mod snapshots;
pub mod stats;
pub mod templates;
pub mod tx;
pub mod usage;
pub mod user_agents;
pub mod worker_cleanup;
pub mod workers;

use crate::adapters::sdk_error;
use crate::agents::model::MessageConfig;
use crate::clock::{Millis, SharedClock};
use crate::config::{Config, Policies, TableNames};
use crate::error::{AppError, AppResult};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use std::collections::HashMap;
use std::sync::Mutex;

pub type Item = HashMap<String, AttributeValue>;

/// How long a Lambda instance trusts its copy of the message runtime config.
const MESSAGE_CONFIG_TTL_MS: Millis = 30_000;

/// Everything an operation needs: the client, table names, policy and clock.
#[derive(Debug)]
pub struct Store {
    pub client: Client,
    pub tables: TableNames,
    pub policy: Policies,
    pub clock: SharedClock,
    message_config: Mutex<Option<(Millis, Option<MessageConfig>)>>,
    /// When this process last promoted each shard (`queue::promote`).
    promoted_at: Mutex<HashMap<u32, queue::PromotionState>>,
    /// The ready hint as last read, and when (`queue::hint`).
    ready_hint: Mutex<Option<(Millis, Option<crate::queue::shards::ReadyHint>)>>,
    /// When this process last found each shard empty (`queue::hint`).
    empty_at: Mutex<HashMap<u32, Millis>>,
    /// This process's own rotating shard for unassigned claims.
    rotation: std::sync::atomic::AtomicU32,
    /// The `byStatusShard` shard the sweep's next orphan pass reads (`queue::recovery`).
    orphan_shard: std::sync::atomic::AtomicU32,
}

impl Store {
    pub fn new(client: Client, tables: TableNames, policy: Policies, clock: SharedClock) -> Self {
        let orphan_shard = (crate::ids::random_u128() % u128::from(keys::STATUS_SHARDS)) as u32;
        Self {
            client,
            tables,
            policy,
            clock,
            message_config: Mutex::new(None),
            promoted_at: Mutex::default(),
            ready_hint: Mutex::new(None),
            empty_at: Mutex::default(),
            rotation: std::sync::atomic::AtomicU32::new(crate::ids::random_u128() as u32),
            orphan_shard: orphan_shard.into(),
        }
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Build a store from configuration: one SDK config per process, created at init.
    pub async fn from_config(cfg: &Config, clock: SharedClock, counter: Option<counter::RequestCounter>) -> Self {
        let client = dynamo_client(cfg.dynamodb_endpoint.as_deref(), counter).await;
        Self::new(client, cfg.tables.clone(), cfg.policy.clone(), clock)
    }

    /// Create every table that does not exist yet (local runner and tests).
    pub async fn create_tables(&self) -> AppResult<()> {
        for def in schema::TABLES {
            schema::create_table(&self.client, def, self.tables.name_of(def.logical)).await.map_err(|e| {
                AppError::internal(format!(
                    "creating table {}: {}",
                    def.logical,
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ))
            })?;
        }
        Ok(())
    }

    pub(crate) fn cached_message_config(&self, now: Millis) -> Option<Option<MessageConfig>> {
        let g = self.message_config.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().filter(|(at, _)| now - *at < MESSAGE_CONFIG_TTL_MS).map(|(_, c)| c.clone())
    }

    pub(crate) fn cache_message_config(&self, now: Millis, c: Option<MessageConfig>) {
        *self.message_config.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, c));
    }
}

/// A DynamoDB client. With an endpoint (DynamoDB Local, dynoxide) it uses dummy credentials.
pub async fn dynamo_client(endpoint: Option<&str>, counter: Option<counter::RequestCounter>) -> Client {
    dynamo_client_with(&crate::adapters::aws::sdk_config(endpoint).await, counter)
}

/// A DynamoDB client on a loaded SDK configuration.
pub fn dynamo_client_with(sdk: &aws_config::SdkConfig, counter: Option<counter::RequestCounter>) -> Client {
    let mut b = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(c) = counter {
        b = b.interceptor(c);
    }
    Client::from_conf(b.build())
}

// ---------- attribute value helpers ----------

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
pub use keys::key;
/// A boolean attribute value.
pub fn b(v: bool) -> AttributeValue {
    AttributeValue::Bool(v)
}
/// A string attribute of a raw item.
pub fn item_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}
/// One write of a transaction, built by an adapter and passed through by a use case.
pub type TxItem = aws_sdk_dynamodb::types::TransactWriteItem;

pub fn to_item<T: serde::Serialize>(v: &T) -> AppResult<Item> {
    serde_dynamo::to_item(v).map_err(|e| AppError::internal(format!("encoding item: {e}")))
}
pub fn from_item<T: serde::de::DeserializeOwned>(item: Item) -> AppResult<T> {
    serde_dynamo::from_item(item).map_err(|e| AppError::internal(format!("decoding item: {e}")))
}
pub fn to_av<T: serde::Serialize>(v: &T) -> AppResult<AttributeValue> {
    serde_dynamo::to_attribute_value(v).map_err(|e| AppError::internal(format!("encoding value: {e}")))
}

/// Expression attribute names and values, as the SDK builders take them.
pub type ExprMaps = (Option<HashMap<String, String>>, Option<HashMap<String, AttributeValue>>);

/// Expression attribute names and values for one request.
#[derive(Debug, Default, Clone)]
pub struct Ex {
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Ex {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn name(mut self, alias: &str, attr: &str) -> Self {
        self.names.insert(alias.to_string(), attr.to_string());
        self
    }
    pub fn val(mut self, alias: &str, v: AttributeValue) -> Self {
        self.values.insert(alias.to_string(), v);
        self
    }
    /// Keep only the names and values the expressions use (DynamoDB refuses unused ones).
    pub fn for_exprs(&self, exprs: &[&str]) -> ExprMaps {
        let used = |k: &str| exprs.iter().any(|e| contains_token(e, k));
        let names: HashMap<_, _> =
            self.names.iter().filter(|(k, _)| used(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let values: HashMap<_, _> =
            self.values.iter().filter(|(k, _)| used(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        ((!names.is_empty()).then_some(names), (!values.is_empty()).then_some(values))
    }
}

/// Whether `expr` uses the placeholder `tok` as a whole token (`:one` is not in `:onex`).
fn contains_token(expr: &str, tok: &str) -> bool {
    let mut start = 0;
    while let Some(i) = expr[start..].find(tok) {
        let end = start + i + tok.len();
        let next = expr[end..].chars().next();
        if !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            return true;
        }
        start = end;
    }
    false
}

/// One cancellation reason of a transaction, in item order.
#[derive(Debug, Clone)]
pub struct Reason {
    pub code: String,
    pub item: Option<Item>,
}

impl Reason {
    pub fn failed_condition(&self) -> bool {
        self.code == "ConditionalCheckFailed"
    }
    pub fn conflict(&self) -> bool {
        self.code == "TransactionConflict"
    }
}

#[derive(Debug)]
pub enum TxError {
    Cancelled(Vec<Reason>),
    Other(AppError),
}

impl TxError {
    pub fn into_app(self, what: &str) -> AppError {
        match self {
            TxError::Other(e) => e,
            TxError::Cancelled(r) => AppError::conflict(format!(
                "{what}: the write lost a race ({}); try again",
                r.iter().map(|r| r.code.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

impl Store {
    pub async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TxError> {
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                TransactWriteItemsError::TransactionCanceledException(c) => Err(TxError::Cancelled(
                    c.cancellation_reasons()
                        .iter()
                        .map(|r| Reason { code: r.code().unwrap_or("None").to_string(), item: r.item().cloned() })
                        .collect(),
                )),
                other => Err(TxError::Other(AppError::internal_from(
                    "TransactWriteItems failed",
                    std::io::Error::other(aws_smithy_types::error::display::DisplayErrorContext(&other).to_string()),
                ))),
            },
        }
    }

    /// Strongly consistent reads of several items, in one BatchGetItem (more only when DynamoDB
    /// leaves keys unprocessed). Results are in the order of `keys`.
    pub async fn batch_get(&self, keys: &[(&str, Item)]) -> AppResult<Vec<Option<Item>>> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut found: Vec<Option<Item>> = vec![None; keys.len()];
        let mut pending: HashMap<String, Vec<Item>> = HashMap::new();
        for (t, k) in keys {
            pending.entry((*t).to_string()).or_default().push(k.clone());
        }
        for _ in 0..5 {
            if pending.is_empty() {
                break;
            }
            let mut req = HashMap::new();
            for (t, ks) in pending.drain() {
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(ks))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| AppError::internal(format!("BatchGetItem request: {e}")))?;
                req.insert(t, ka);
            }
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(req))
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem", e))?;
            for (t, items) in out.responses.unwrap_or_default() {
                for item in items {
                    let slot = keys
                        .iter()
                        .position(|(kt, k)| *kt == t.as_str() && k.iter().all(|(name, v)| item.get(name) == Some(v)));
                    if let Some(i) = slot {
                        found[i] = Some(item);
                    }
                }
            }
            for (t, ka) in out.unprocessed_keys.unwrap_or_default() {
                pending.insert(t, ka.keys);
            }
        }
        if !pending.is_empty() {
            return Err(AppError::internal("BatchGetItem left keys unprocessed after 5 rounds; try again"));
        }
        Ok(found)
    }

    pub async fn get(&self, table: &str, key: Item) -> AppResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item)
    }

    /// One page of the items of partition `pk` (every sort key), from `start`: the items and
    /// where the next page starts (`None` after the last). For walks over a whole partition that
    /// act page by page.
    pub async fn partition_page(
        &self,
        table: &str,
        pk: String,
        start: Option<Item>,
        what: &str,
    ) -> AppResult<(Vec<Item>, Option<Item>)> {
        let out = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error(what, e))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key.filter(|k| !k.is_empty())))
    }
}

/// The outcome of a conditional UpdateItem: the output when it was applied, `None` when its
/// condition failed (a normal outcome of a race), an error otherwise.
pub fn applied(
    r: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    >,
    what: &str,
) -> AppResult<Option<aws_sdk_dynamodb::operation::update_item::UpdateItemOutput>> {
    match r {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => Ok(None),
        Err(e) => Err(sdk_error(what, e)),
    }
}

impl Store {
    /// One conditional UpdateItem carrying the names and values its expressions use: whether it
    /// applied (a failed condition is a normal outcome of a race, not an error).
    pub async fn update_if(
        &self,
        table: &str,
        key: Item,
        update: &str,
        cond: &str,
        ex: &Ex,
        what: &str,
    ) -> AppResult<bool> {
        let (names, values) = ex.for_exprs(&[update, cond]);
        let r = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await;
        Ok(applied(r, what)?.is_some())
    }
}

/// A short random pause before retrying a conflicted transaction.
pub async fn conflict_pause(attempt: u32) {
    let ms = 5 + (crate::ids::random_unit() * 20.0 * f64::from(attempt + 1)) as u64;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_whole_placeholders_only() {
        assert!(contains_token("SET a = :one", ":one"));
        assert!(!contains_token("SET a = :onex", ":one"));
        assert!(contains_token("a = :one AND b = :onex", ":onex"));
        assert!(contains_token("#st = :q", "#st"));
        let ex = Ex::new().val(":a", n(1)).val(":b", n(2)).name("#st", "status");
        let (names, values) = ex.for_exprs(&["x = :a"]);
        assert!(names.is_none());
        assert_eq!(values.unwrap().len(), 1);
    }
}
