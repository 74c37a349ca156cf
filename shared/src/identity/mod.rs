//! Identity: which Telegram bot belongs to which agent, its webhook, pairing codes and the
//! bindings between a consumer's user, an agent and a Telegram identity (spec §4–§6, §10, with
//! §15's fixes). `model.rs` holds the items and views, `rules.rs` the pure decisions (codes, TTLs,
//! rate limits, the bind plan, onboarding), `ops.rs` the use cases and their op tables
//! (`USER_TABLE` for user-scoped ops, `ADMIN_TABLE` for operator ops).

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
