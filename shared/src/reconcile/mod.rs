//! Reconcile: keeping the pool of worker machines matched to the work that waits.
//!
//! `provider` is the port every machine provider implements (Fly Machines, local processes);
//! `model` and `rules` are the cycle as a pure plan (observed rows + inventory + demand ->
//! actions); `cycle` is the thin executor with single flight and coalescing; `ops` the op table
//! of the `reconcile` function; `naming` the deterministic resource names (volumes); `fly_rules`
//! the Fly provider's pure decisions (state mapping, error classes, retry delays, rate limits).

#[cfg(feature = "aws")]
pub mod cycle;
pub mod fly_rules;
pub mod model;
pub mod naming;
#[cfg(feature = "aws")]
pub mod ops;
pub mod provider;
#[cfg(feature = "aws")]
pub mod providers;
pub mod rules;
