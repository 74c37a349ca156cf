//! Global skills (spec §13): versioned bundles with stable/canary releases, deployed by
//! operators (`admin`) and materialized by workers from the manifest (`POST /worker/skills-manifest`).

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
