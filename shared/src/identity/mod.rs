//! Identity: which Telegram bot belongs to which agent, its webhook, pairing codes and the
//! bindings between a consumer's user, an agent and a Telegram identity (spec §4–§6, §10, with
//! §15's fixes). `model.rs` holds the items and views, `rules.rs` the pure decisions (codes, TTLs,
//! rate limits, the bind plan, onboarding); the use cases are split by concern (`bots.rs`: bot
//! identity and webhook; `pairing.rs`: codes and bindings; `readiness.rs`: onboarding, readiness,
//! soft reset) and `ops.rs` holds their op tables (`USER_TABLE` for user-scoped ops,
//! `ADMIN_TABLE` for operator ops).

#[cfg(feature = "aws")]
pub mod bots;
pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
#[cfg(feature = "aws")]
pub mod pairing;
#[cfg(feature = "aws")]
pub mod readiness;
pub mod rules;
#[cfg(feature = "aws")]
pub mod user_agents;
pub mod views;
