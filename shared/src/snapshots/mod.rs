//! Workspace snapshots (spec §10): prepare, finalize, fail, restore, list, and the expiry sweep.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
