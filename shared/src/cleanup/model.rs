//! `runFlyCleanup`'s arguments and report.

use serde::{Deserialize, Serialize};

/// Default number of machines torn down at once (spec §1.2).
pub const MACHINE_CONCURRENCY: u32 = 6;
/// Default number of volumes deleted at once (spec §1.2).
pub const VOLUME_CONCURRENCY: u32 = 16;
/// Upper bound of both concurrencies.
pub const MAX_CONCURRENCY: u32 = 32;

/// `runFlyCleanup` arguments (all optional).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunFlyCleanupArgs {
    /// The Fly app; default: the function's `FLY_APP_NAME`.
    #[serde(default)]
    pub app_name: Option<String>,
    /// Report what would be deleted; delete nothing, write no row.
    #[serde(default)]
    pub dry_run: bool,
    /// Every machine and volume of the app, whoever made them. Default: only those tagged with
    /// this deployment's id (and volumes mounted by them).
    #[serde(default)]
    pub all_machines_in_app: bool,
    #[serde(default)]
    pub machine_concurrency: Option<u32>,
    #[serde(default)]
    pub volume_concurrency: Option<u32>,
}

/// What one cleanup run found, did and left. Counts are in listing order; the `*Remaining`
/// figures are `null` when the verification listing failed (then a warning says so).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FlyCleanupReport {
    pub app_name: String,
    pub deployment_id: String,
    /// `deployment` (tagged with this deployment's id) or `app` (everything in the app).
    pub scope: &'static str,
    pub dry_run: bool,
    /// Machines in the app (first listing), in scope, and out of scope (kept).
    pub machines_found: usize,
    pub machines_skipped: usize,
    /// In scope: what was (or, in a dry run, would be) deleted.
    pub machine_ids_targeted: Vec<String>,
    pub machines_deleted: usize,
    pub machine_ids_deleted: Vec<String>,
    pub machines_remaining: Option<usize>,
    pub machine_ids_remaining: Vec<String>,
    pub volumes_found: usize,
    pub volumes_skipped: usize,
    pub volume_ids_targeted: Vec<String>,
    pub volumes_deleted: usize,
    pub volume_ids_deleted: Vec<String>,
    pub volumes_remaining: Option<usize>,
    pub volume_ids_remaining: Vec<String>,
    /// Worker rows set to `stopped` because their machine was destroyed.
    pub workers_stopped: usize,
    pub worker_ids_stopped: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}
