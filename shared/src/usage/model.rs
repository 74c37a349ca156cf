//! Usage metering wire types: the optional `usage` of `complete`, and the usage stats.

use crate::queue::LeaseArgs;
use serde::{Deserialize, Serialize};

/// What one completed message cost, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Cost in millionths of the billing currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<u64>,
}

/// The body of `POST /worker/complete`: the lease fields and an optional `usage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteArgs {
    pub worker_id: String,
    pub message_id: String,
    pub lease_id: String,
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl CompleteArgs {
    /// The lease part, for the queue's `complete`.
    pub fn lease(&self, token_hash: Option<String>) -> LeaseArgs {
        LeaseArgs {
            worker_id: self.worker_id.clone(),
            message_id: self.message_id.clone(),
            lease_id: self.lease_id.clone(),
            token_hash,
        }
    }
}

/// Summed usage over a set of counter items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    pub completions: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

impl UsageTotals {
    pub fn add(&mut self, o: &UsageTotals) {
        self.completions += o.completions;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cost_micros += o.cost_micros;
    }
}

/// One day of usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// Token usage over a day range: totals and the days that have any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub from_day: String,
    pub to_day: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
    pub days: Vec<UsageDay>,
}
