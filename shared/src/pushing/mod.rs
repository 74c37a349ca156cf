//! Scheduled pushes (spec §1–§11): company push templates, push jobs (one scheduled or manual
//! message for one user, optionally tied to an agent), their dispatch (the due-job sweep, per-job
//! EventBridge Scheduler invocations, manual triggers) with a dispatch record per attempt, and
//! company broadcasts. `model.rs` holds the items and op args, `rules.rs` the pure schedule
//! arithmetic (IANA zones, DST, lateness) and validation; `ops.rs` the job and template use cases and the op tables, `ops/dispatch.rs` the dispatch.

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod port;
pub mod rules;
