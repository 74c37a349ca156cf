//! The integration tests, one binary (one link of the AWS SDKs) with a module per area. They run
//! against DynamoDB Local and moto_server (`bash infra/scripts/test.sh` starts both); the tests
//! that capture logs have a binary of their own (`logs.rs`), since a log subscriber is global.

mod access;
mod blobs;
mod concurrency;
mod fly;
mod fly_cleanup;
mod functions;
mod partitions;
mod polling;
mod pushing;
mod queue_store;
mod reconcile;
mod replies;
mod secrets;
mod skills;
mod stats;
mod status_shards;
mod telegram;
mod template;
mod usage;
mod worker_protocol;
