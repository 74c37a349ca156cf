//! Media attachments: inbound rows written with the message, worker uploads, download URLs and
//! message metadata.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
