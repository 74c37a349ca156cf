//! Reusable message templates (spec §12), scoped to a company (the original's are global despite
//! the "ByCompany" name, §16.12): a title, a text and tags, with a key derived from the title that
//! is unique within the company, and a usage counter. Operators manage them (`admin`); end users
//! send one to their agent with `sendMessageTemplateToUserAgent` (`api`, in
//! `identity/user_agents.rs`). `model.rs` holds the item and the op args, `rules.rs` the pure
//! normalization and validation, `ops.rs` the use cases and their op table.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
