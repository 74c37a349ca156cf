//! Reconcile: keeping the pool of worker machines matched to the work that waits.
//!
//! `provider` is the port every machine provider implements (Fly Machines, local processes);
//! `naming` the deterministic resource names (volumes); `fly_rules` the Fly provider's pure
//! decisions (state mapping, error classes, retry delays, rate limits).

pub mod fly_rules;
pub mod naming;
pub mod provider;
