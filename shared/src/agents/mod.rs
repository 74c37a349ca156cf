//! Agent profiles and the message runtime configuration.

#[cfg(feature = "aws")]
pub mod ops;
