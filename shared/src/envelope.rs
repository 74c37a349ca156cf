//! The consumer invocation envelope `{"op": "<name>", "args": {...}}` (architecture §3) and its
//! dispatch over op tables. Each domain owns a table of its ops ([`OpTable`]); each function
//! serves the tables it lists (so `api` can serve user ops without operator ops). This module
//! knows no domain: it is generic over the context `C` the ops run with.

use crate::BoxFut;
use crate::error::{AppError, AppResult};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use crate::protocol::envelope::Envelope;

/// The body of one op: parses its args, runs, returns its result as JSON.
pub type OpFn<C> = for<'a> fn(&'a C, Option<Value>) -> BoxFut<'a, AppResult<Value>>;

/// One op of the envelope.
pub struct Op<C: 'static> {
    pub name: &'static str,
    pub run: OpFn<C>,
}

/// The ops of one domain.
pub struct OpTable<C: 'static> {
    pub domain: &'static str,
    pub ops: &'static [Op<C>],
}

/// Declare one op: `op!(App, "name", |app, a: ArgsType| expression_returning_serializable)`.
/// The args are parsed into `ArgsType` (unknown fields refused with the op's name in the error),
/// and the expression's value is returned as JSON. `.await` and `?` may be used in it.
#[macro_export]
macro_rules! op {
    ($ctx:ty, $name:literal, |$app:ident, $a:ident : $T:ty| $body:expr) => {
        $crate::envelope::Op::<$ctx> {
            name: $name,
            run: {
                fn run<'a>(
                    $app: &'a $ctx,
                    args: ::core::option::Option<::serde_json::Value>,
                ) -> $crate::BoxFut<'a, $crate::AppResult<::serde_json::Value>> {
                    ::std::boxed::Box::pin(async move {
                        let $a: $T = $crate::envelope::args($name, args)?;
                        $crate::envelope::to_json($body)
                    })
                }
                run
            },
        }
    };
}

/// The names of every op the tables serve, in table order.
pub fn op_names<C>(tables: &[&OpTable<C>]) -> Vec<&'static str> {
    tables.iter().flat_map(|t| t.ops.iter().map(|o| o.name)).collect()
}

/// Run the op `env` names, from the first table that has it.
pub async fn dispatch<C>(ctx: &C, tables: &[&OpTable<C>], env: Envelope) -> AppResult<Value> {
    let Some(op) = tables.iter().flat_map(|t| t.ops.iter()).find(|o| o.name == env.op) else {
        return Err(AppError::validation(format!(
            "unknown op '{}'; this function serves: {}",
            crate::ids::truncate(&env.op, 60),
            op_names(tables).join(", ")
        )));
    };
    (op.run)(ctx, env.args).await
}

/// Parse an invocation payload, run its op, and log the outcome once (the edge): client errors
/// at info with their code, internal errors at error with their cause chain.
pub async fn handle<C>(ctx: &C, tables: &[&OpTable<C>], payload: Value) -> AppResult<Value> {
    let env = parse_envelope(payload)?;
    let op = crate::ids::truncate(&env.op, 60);
    let r = dispatch(ctx, tables, env).await;
    if let Err(e) = &r {
        e.log(&op);
    }
    r
}

/// Parse an invocation payload into an envelope, with a precise error.
pub fn parse_envelope(event: Value) -> AppResult<Envelope> {
    if !event.is_object() {
        return Err(AppError::validation("the payload must be a JSON object {\"op\": ..., \"args\": {...}}"));
    }
    serde_json::from_value(event).map_err(|e| AppError::validation(format!("invalid envelope: {e}")))
}

/// The `args` of an op as `T`, with a precise error.
pub fn args<T: DeserializeOwned>(op: &str, v: Option<Value>) -> AppResult<T> {
    let v = v.unwrap_or_else(|| json!({}));
    if !v.is_object() {
        return Err(AppError::validation(format!("args of op '{op}' must be a JSON object")));
    }
    serde_json::from_value(v).map_err(|e| AppError::validation(format!("invalid args for op '{op}': {e}")))
}

/// A result as JSON.
pub fn to_json<T: serde::Serialize>(v: T) -> AppResult<Value> {
    serde_json::to_value(v).map_err(|e| AppError::internal(format!("encoding the result: {e}")))
}

/// Args of ops that take none: unknown ones are still refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx(u32);

    const T: OpTable<Ctx> = OpTable {
        domain: "test",
        ops: &[crate::op!(Ctx, "double", |c, a: Value| c.0 * a["n"].as_u64().unwrap_or(0) as u32 * 2)],
    };

    #[tokio::test]
    async fn dispatches_by_name_and_refuses_unknown_ops_and_args() {
        let c = Ctx(3);
        let v = dispatch(&c, &[&T], parse_envelope(json!({"op": "double", "args": {"n": 5}})).unwrap()).await.unwrap();
        assert_eq!(v, json!(30));
        let e = dispatch(&c, &[&T], parse_envelope(json!({"op": "nope"})).unwrap()).await.unwrap_err();
        assert!(e.to_string().contains("serves: double"), "{e}");
        let e = dispatch(&c, &[&T], parse_envelope(json!({"op": "double", "args": [1]})).unwrap()).await.unwrap_err();
        assert_eq!(e.code().as_str(), "ValidationError");
        assert!(parse_envelope(json!([1])).is_err());
        assert!(parse_envelope(json!({"op": "x", "extra": 1})).is_err());
        assert_eq!(op_names(&[&T]), vec!["double"]);
    }
}
