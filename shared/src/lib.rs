//! agent-factory's common crate: the domains (queue, conversations, workers, agents, secrets,
//! snapshots, media, hydration), the adapters that reach DynamoDB, Secrets Manager, S3 and
//! outside HTTP APIs, the op envelope and the worker protocol, shared by every Lambda function,
//! the local runner, the reference worker and the CLI.

pub mod access;
#[cfg(feature = "aws")]
pub mod adapters;
pub mod agents;
#[cfg(feature = "aws")]
pub mod app;
pub mod blob;
pub mod cleanup;
pub mod clock;
#[cfg(feature = "aws")]
pub mod config;
pub mod conversations;
#[cfg(feature = "aws")]
pub mod envelope;
pub mod error;
pub mod hydration;
pub mod identity;
pub mod ids;
#[cfg(feature = "aws")]
pub mod ingress;
pub mod media;
pub mod metrics;
pub mod paging;
pub mod protocol;
pub mod pushing;
pub mod queue;
pub mod reconcile;
pub mod replies;
#[cfg(feature = "aws")]
pub mod secrets;
pub mod skills;
pub mod snapshots;
pub mod stats;
pub mod telegram;
#[cfg(feature = "aws")]
pub mod telemetry;
pub mod templates;
pub mod usage;
#[cfg(feature = "aws")]
pub mod worker_api;
pub mod workers;

#[cfg(feature = "aws")]
pub use adapters::dynamo::Store;
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "aws")]
pub use config::Config;
pub use error::{AppError, AppResult, ErrorCode};

/// A boxed future: what the port traits return, so they can be used as `dyn`.
pub type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
