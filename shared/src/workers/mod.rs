//! Worker rows, their status transitions, control state and bearer tokens.

pub mod auth;
