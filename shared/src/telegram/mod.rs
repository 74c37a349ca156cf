//! Telegram: the Bot API port (`port.rs`, implemented by `adapters/telegram.rs`), the shapes the
//! Bot API returns and the ingress update (`model.rs`), and the pure ingress rules of spec §7.2
//! and §8 (`rules.rs`: update parsing, `/start` codes, text, metadata, routing, media limits).

pub mod model;
#[cfg(feature = "aws")]
pub mod port;
pub mod rules;
