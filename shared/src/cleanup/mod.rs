//! Cleanup: the billing-protection wipe of Fly machines and volumes (`runFlyCleanup`, spec §9,
//! scoped to this deployment's tag and reflected in worker rows) and the function that serves
//! the expiry sweeps with side effects (their ops stay in their domains: `queue::ops::SWEEPS`,
//! `snapshots::ops::SWEEPS`).
//!
//! `model` holds the args and the report, `rules` the pure scoping and verification decisions,
//! `ops` the executor over the `WorkerProvider` port and the worker rows.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
