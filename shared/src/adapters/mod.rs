//! Every call to an AWS SDK or an outside HTTP API lives here, and nowhere else (architecture §2).
//! Domains reach storage and the outside world through these adapters, or through the ports
//! (traits) they own, which the adapters implement.

pub mod aws;
pub mod blob_local;
pub mod dynamo;
pub mod fly;
pub mod jwks;
pub mod process;
pub mod s3;
pub mod scheduler;
pub mod secrets_file;
pub mod secrets_manager;
pub mod telegram;

use crate::error::AppError;

/// An SDK error as an internal error: the caller sees what failed, the log (through
/// [`AppError::chain`]) the SDK's full context (its `Display` alone says only "service error").
pub fn sdk_error<E, R>(what: &str, e: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> AppError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let ctx = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
    AppError::internal_from(format!("{what} failed"), std::io::Error::other(ctx))
}
