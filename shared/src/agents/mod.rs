//! Agent profiles and the message runtime configuration.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
