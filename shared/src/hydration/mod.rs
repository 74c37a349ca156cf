//! The hydration bundle (spec §6.3): everything a worker needs to run one job.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
