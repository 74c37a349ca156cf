//! Counts DynamoDB requests per operation, and the capacity units they consume, with an SDK
//! interceptor (for the benchmark and tests).

use aws_sdk_dynamodb::operation as op;
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Read and write capacity units, as the responses report them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    pub read: f64,
    pub write: f64,
}

#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    requests: Arc<Mutex<BTreeMap<String, u64>>>,
    capacity: Arc<Mutex<Capacity>>,
    /// Whether requests ask for `ReturnConsumedCapacity=TOTAL` (off by default: DynamoDB Local
    /// takes measurably longer to answer with it, so latency figures are taken without it).
    ask: Arc<std::sync::atomic::AtomicBool>,
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask every following request for the capacity it consumes (or stop asking).
    pub fn count_capacity(&self, on: bool) {
        self.ask.store(on, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn total(&self) -> u64 {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }
    pub fn by_operation(&self) -> BTreeMap<String, u64> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Capacity units consumed by the successful requests since the last reset (a refused
    /// conditional write consumes capacity too, but its error does not report it).
    pub fn capacity(&self) -> Capacity {
        *self.capacity.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn reset(&self) {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.capacity.lock().unwrap_or_else(|p| p.into_inner()) = Capacity::default();
    }

    fn add<'a>(&self, reads: bool, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        let mut c = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
        for cc in consumed {
            // `TOTAL` reports `CapacityUnits`; where the split is absent it is the operation's kind.
            let total = cc.capacity_units().unwrap_or(0.0);
            match (cc.read_capacity_units(), cc.write_capacity_units()) {
                (None, None) if reads => c.read += total,
                (None, None) => c.write += total,
                (r, w) => {
                    c.read += r.unwrap_or(0.0);
                    c.write += w.unwrap_or(0.0);
                }
            }
        }
    }
}

/// Sets `ReturnConsumedCapacity=TOTAL` on a request that does not ask for more.
fn ask_capacity(rcc: &mut Option<ReturnConsumedCapacity>) {
    if rcc.is_none() || *rcc == Some(ReturnConsumedCapacity::None) {
        *rcc = Some(ReturnConsumedCapacity::Total);
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn modify_before_serialization(
        &self,
        ctx: &mut BeforeSerializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !self.ask.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let input = ctx.input_mut();
        macro_rules! set {
            ($($m:ident::$t:ident),*) => {
                $(if let Some(i) = input.downcast_mut::<op::$m::$t>() {
                    ask_capacity(&mut i.return_consumed_capacity);
                    return Ok(());
                })*
            };
        }
        set!(
            get_item::GetItemInput,
            query::QueryInput,
            scan::ScanInput,
            batch_get_item::BatchGetItemInput,
            transact_get_items::TransactGetItemsInput,
            put_item::PutItemInput,
            update_item::UpdateItemInput,
            delete_item::DeleteItemInput,
            batch_write_item::BatchWriteItemInput,
            transact_write_items::TransactWriteItemsInput
        );
        Ok(())
    }

    /// Runs once per attempt sent on the wire, so SDK retries count too.
    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_else(|| "unknown".into());
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry(op).or_default() += 1;
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        ctx: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(out) = ctx.output_or_error() else { return Ok(()) };
        macro_rules! one {
            ($reads:literal, $($m:ident::$t:ident),*) => {
                $(if let Some(o) = out.downcast_ref::<op::$m::$t>() {
                    self.add($reads, o.consumed_capacity());
                    return Ok(());
                })*
            };
        }
        macro_rules! many {
            ($reads:literal, $($m:ident::$t:ident),*) => {
                $(if let Some(o) = out.downcast_ref::<op::$m::$t>() {
                    self.add($reads, o.consumed_capacity());
                    return Ok(());
                })*
            };
        }
        one!(true, get_item::GetItemOutput, query::QueryOutput, scan::ScanOutput);
        one!(false, put_item::PutItemOutput, update_item::UpdateItemOutput, delete_item::DeleteItemOutput);
        many!(true, batch_get_item::BatchGetItemOutput, transact_get_items::TransactGetItemsOutput);
        many!(false, batch_write_item::BatchWriteItemOutput, transact_write_items::TransactWriteItemsOutput);
        Ok(())
    }
}
