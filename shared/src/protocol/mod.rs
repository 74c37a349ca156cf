//! The wire types of agent-factory's two public interfaces, for the programs that speak them
//! without running the backend: the reference worker (the worker protocol) and the CLI (the op
//! envelope). This module, the errors, the ids and the domains' models and rules build without
//! the AWS SDKs: depend on `shared` with `default-features = false`.

pub mod envelope;
pub mod skills;
pub mod worker;
