//! Media attachments: inbound rows written with the message, worker uploads, download URLs and
//! message metadata.

pub mod ops;
