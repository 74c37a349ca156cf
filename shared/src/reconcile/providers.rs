//! Which provider a stored runtime config gets: built once per distinct config and reused (the
//! process provider owns its child processes, the Fly client its rate limiter).

use super::cycle::ProviderFactory;
use super::model::ProviderRuntimeConfig;
use super::provider::WorkerProvider;
use crate::error::{AppError, AppResult};
use std::sync::{Arc, Mutex};

type Builder = dyn Fn(&ProviderRuntimeConfig) -> AppResult<Arc<dyn WorkerProvider>> + Send + Sync;

/// A factory that builds with `build` and keeps the last instance while the config is unchanged.
pub struct Cached {
    build: Box<Builder>,
    last: Mutex<Option<(ProviderRuntimeConfig, Arc<dyn WorkerProvider>)>>,
}

impl Cached {
    pub fn new(
        build: impl Fn(&ProviderRuntimeConfig) -> AppResult<Arc<dyn WorkerProvider>> + Send + Sync + 'static,
    ) -> Self {
        Self { build: Box::new(build), last: Mutex::new(None) }
    }
}

impl ProviderFactory for Cached {
    fn provider(&self, cfg: &ProviderRuntimeConfig) -> AppResult<Arc<dyn WorkerProvider>> {
        let mut g = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, p)) = g.as_ref()
            && c == cfg
        {
            return Ok(p.clone());
        }
        let p = (self.build)(cfg)?;
        *g = Some((cfg.clone(), p.clone()));
        Ok(p)
    }
}

/// The deployed factory (Lambda): `fly` is the Fly Machines adapter on the stored provider
/// config's app, its token read from the `fly.apiToken` secret when it calls Fly; `process`
/// exists only where workers can be child processes (the local runner builds its own, [`local`]).
pub fn deployed(cfg: &crate::config::Config, secrets: crate::secrets::Secrets) -> Arc<dyn ProviderFactory> {
    let settings = crate::adapters::fly::FlySettings::from_config(cfg, None);
    Arc::new(Cached::new(move |pc: &ProviderRuntimeConfig| match pc.kind.as_str() {
        "fly" => Ok(Arc::new(crate::adapters::fly::FlyProvider::with_secret_store(
            &settings,
            &pc.app_name,
            secrets.clone(),
        )?) as Arc<dyn WorkerProvider>),
        kind => Err(AppError::validation(format!("provider kind '{kind}' is not available on AWS (use 'fly')"))),
    }))
}

/// The local runner's factory: `process` runs `command` as child processes with their volumes
/// under `root`.
pub fn local(command: String, root: std::path::PathBuf) -> Arc<dyn ProviderFactory> {
    Arc::new(Cached::new(move |pc: &ProviderRuntimeConfig| match pc.kind.as_str() {
        "process" => Ok(Arc::new(crate::adapters::process::ProcessProvider::new(&pc.app_name, &command, &root))
            as Arc<dyn WorkerProvider>),
        kind => Err(AppError::validation(format!("provider kind '{kind}' is not available in the local runner"))),
    }))
}
