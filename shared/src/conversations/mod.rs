//! Conversations: their history entries (appended by the lock holder or an operator).

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
