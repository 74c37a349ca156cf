//! Reconcile: keeping the pool of worker machines matched to the work that waits.
//!
//! `provider` is the port every machine provider implements (Fly Machines, local processes).

pub mod provider;
