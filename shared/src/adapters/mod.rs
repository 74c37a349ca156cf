//! Every call to an AWS SDK or an outside HTTP API lives here, and nowhere else (architecture §2).
//! Domains reach storage and the outside world through these adapters, or through the ports
//! (traits) they own, which the adapters implement.

pub mod aws;
pub mod blob_local;
pub mod dynamo;
pub mod s3;
pub mod secrets_file;
pub mod secrets_manager;
