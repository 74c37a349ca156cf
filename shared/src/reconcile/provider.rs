//! The `WorkerProvider` port: what reconcile and cleanup need from a machine provider.
//!
//! Implementations: the Fly Machines adapter (`adapters::fly`) and the local process adapter
//! (`adapters::process`). One provider instance is bound to one app (Fly) or one working
//! directory (processes); its credentials are the adapter's business, never part of these types.
//!
//! Errors are classified by the adapter from the HTTP status (never from body text):
//! [`ProviderError::NotFound`] means the provider confirmed the thing does not exist;
//! [`ProviderError::Retryable`] means nothing may be concluded (the caller keeps its rows and
//! tries again later); [`ProviderError::Fatal`] is a refusal that retrying will not fix.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::BoxFut;

/// Fly metadata key carrying the deployment id; untagged machines are never touched.
pub const DEPLOYMENT_TAG: &str = "agent_factory_deployment";
/// Fly metadata key carrying the worker id the machine was created for.
pub const WORKER_TAG: &str = "agent_factory_worker";

/// A provider's view of a machine's state, mapped from its own vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MachineState {
    /// Creating, starting, started, restarting, updating, replacing.
    Active,
    /// Stopping, suspending, destroying: on the way down, not yet confirmed.
    Stopping,
    /// Stopped or suspended: exists (and bills for its volume) but does not run.
    Stopped,
    /// Destroyed, failed, launch_failed, replaced, migrated, absent, anything unknown.
    Gone,
}

/// A machine as listed by the provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub id: String,
    /// The name it was created with (the worker id for machines this system creates).
    pub name: String,
    pub region: String,
    pub image: String,
    pub state: MachineState,
    /// The provider's own state word, for logs and reports.
    pub raw_state: String,
    /// Provider metadata (`DEPLOYMENT_TAG`, `WORKER_TAG`, ...).
    pub metadata: BTreeMap<String, String>,
    /// Volumes mounted on it.
    pub volume_ids: Vec<String>,
}

impl Machine {
    /// Whether this deployment created it (carries its tag).
    pub fn tagged_for(&self, deployment: &str) -> bool {
        self.metadata.get(DEPLOYMENT_TAG).map(String::as_str) == Some(deployment)
    }
}

/// A volume as listed by the provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub region: String,
    /// The machine it is attached to, if any.
    pub attached_machine: Option<String>,
    /// Provider metadata (`DEPLOYMENT_TAG`, `WORKER_TAG`), where the provider keeps any.
    pub metadata: BTreeMap<String, String>,
}

/// What to create: one volume (optional) and one machine mounting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// Deterministic name (≤ 30 chars for Fly): creating twice returns the same volume.
    pub name: String,
    pub region: String,
    pub size_gb: u32,
    pub metadata: BTreeMap<String, String>,
}

/// A machine to create. `name` is deterministic (the worker id), so a retried create after a
/// timeout finds the machine instead of making a second one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    pub name: String,
    pub region: String,
    pub image: String,
    /// The spawn env (section 7 of the spec): blank values already dropped. Never logged.
    pub env: BTreeMap<String, String>,
    /// Volume id and mount path, when the machine gets a volume.
    pub mount: Option<(String, String)>,
    pub metadata: BTreeMap<String, String>,
}

/// A provider failure, classified by status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider confirmed the machine, volume or app does not exist (404).
    #[error("not found: {what}")]
    NotFound { what: String },
    /// 408/409/412/429, 5xx, timeouts, connection errors: nothing may be concluded.
    #[error("provider unavailable ({}): {message}", status.map_or("no status".to_owned(), |s| s.to_string()))]
    Retryable {
        status: Option<u16>,
        /// The provider's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
        message: String,
    },
    /// Any other refusal (400, 401, 403, 422, ...): retrying will not help.
    #[error("provider refused ({status}): {message}")]
    Fatal { status: u16, message: String },
}

impl ProviderError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// The port. Every call is bounded in time by the adapter; retries with backoff live in the
/// adapter too, so a `Retryable` reaching the caller means "gave up for this cycle".
pub trait WorkerProvider: Send + Sync {
    /// Short name for rows and logs: `"fly"`, `"process"`.
    fn kind(&self) -> &'static str;
    /// The app (Fly) or pool (processes) this instance manages, recorded in worker rows.
    fn app(&self) -> &str;

    fn list_machines(&self) -> BoxFut<'_, ProviderResult<Vec<Machine>>>;
    fn get_machine<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<Machine>>;
    /// Idempotent by `spec.name`: an existing machine of that name is returned as is.
    fn create_machine<'a>(&'a self, spec: &'a MachineSpec) -> BoxFut<'a, ProviderResult<Machine>>;
    /// Starts a stopped machine (warm restart), replacing its env with `env` first.
    fn start_machine<'a>(&'a self, id: &'a str, env: &'a BTreeMap<String, String>) -> BoxFut<'a, ProviderResult<()>>;
    fn stop_machine<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<()>>;
    /// `force` destroys a machine that is not stopped yet. NotFound means already gone.
    fn destroy_machine<'a>(&'a self, id: &'a str, force: bool) -> BoxFut<'a, ProviderResult<()>>;

    fn list_volumes(&self) -> BoxFut<'_, ProviderResult<Vec<Volume>>>;
    /// Idempotent by name and region.
    fn create_volume<'a>(&'a self, spec: &'a VolumeSpec) -> BoxFut<'a, ProviderResult<Volume>>;
    /// NotFound means already gone.
    fn delete_volume<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<()>>;
}
