//! Conversations: their history entries (appended by the lock holder or an operator).

#[cfg(feature = "aws")]
pub mod ops;
