//! Replies through the backend (issue 10): `POST /worker/reply` sends one part of a job's reply
//! to the job's Telegram chat with the receiving bot's token, idempotently per
//! `(messageId, part)` (a reply record written before Telegram is called and finished after);
//! `POST /worker/typing` shows the typing indicator. Only the holder of the message's live lease
//! may do either. The decisions (checking, HTML escaping, splitting, pacing, what a call does
//! with the record it finds) are pure (`rules.rs`); `ops.rs` carries them out.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
