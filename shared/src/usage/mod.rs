//! Usage metering: the token usage a worker reports with `complete`, aggregated per agent, per
//! consumer user and per UTC day (sharded per-day counter items, no hot single item).

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
