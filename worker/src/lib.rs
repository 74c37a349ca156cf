//! The reference worker of agent-factory (README, "The reference worker"): the library behind
//! the `agent-worker` binary. `rules` holds its pure decisions; `runtime` its life.

pub mod client;
pub mod config;
pub mod engine;
pub mod rules;
pub mod runtime;
pub mod skills;
pub mod snapshot;
pub mod wire;
