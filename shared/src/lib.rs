//! agent-factory's common crate: the queue and lease rules, the DynamoDB store, the op envelope
//! and the worker protocol shared by every Lambda function and the local runner.

pub mod app;
pub mod aws;
pub mod blob;
pub mod clock;
pub mod config;
pub mod error;
pub mod hydration;
pub mod ids;
pub mod media;
pub mod model;
pub mod ops;
pub mod queue;
pub mod secrets;
pub mod snapshots;
pub mod store;
pub mod telemetry;
pub mod worker_api;
pub mod worker_auth;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use error::{AppError, AppResult, ErrorCode};
pub use store::Store;
