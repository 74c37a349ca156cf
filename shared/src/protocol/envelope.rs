//! The consumer invocation envelope `{"op": "<name>", "args": {...}}` and its error shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One invocation of an envelope function (`enqueue`, and later `api`, `admin`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

impl Envelope {
    pub fn new(op: impl Into<String>, args: Value) -> Self {
        Self { op: op.into(), args: Some(args) }
    }
}

/// A refused invocation, as the Lambda Invoke API reports it: `errorType` is a stable code
/// (`ValidationError`, `NotFound`, `Conflict`, ...), `errorMessage` says what was wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionError {
    pub error_type: String,
    pub error_message: String,
}
