//! Reconcile: keeping the pool of worker machines matched to the work that waits.
//!
//! `provider` is the port every machine provider implements (Fly Machines, local processes);
//! `model` and `rules` are the cycle as a pure plan (observed rows + inventory + demand ->
//! actions).

pub mod model;
pub mod provider;
pub mod rules;
