//! Worker rows, their status transitions, control state and bearer tokens.

#[cfg(feature = "aws")]
pub mod auth;
pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
