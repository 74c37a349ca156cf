//! The hydration bundle (spec §6.3): everything a worker needs to run one job.

pub mod ops;
