//! Stats (spec §11) and the queue gauges published as metrics: read models computed from
//! counters or bounded queries, never full scans.

#[cfg(feature = "aws")]
pub mod ops;
