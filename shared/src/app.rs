//! Everything a handler needs, built once per process: the DynamoDB store, the secret store,
//! the blob store and the worker authenticator.

use crate::adapters::dynamo::Store;
use crate::blob::BlobBackend;
use crate::error::AppResult;
use crate::secrets::Secrets;
use crate::workers::auth::Authenticator;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct App {
    pub store: Arc<Store>,
    pub secrets: Secrets,
    pub blobs: Arc<dyn BlobBackend>,
    pub auth: Arc<Authenticator>,
    /// End users' token keys from `USER_TOKEN_JWKS_URL` (the `api` function).
    pub jwks: Arc<crate::adapters::jwks::JwksCache>,
    /// The Telegram Bot API (`TELEGRAM_API_BASE`; tests point it at a fake).
    pub telegram: Arc<dyn crate::telegram::port::BotApi>,
    /// The deployment's public base URL (`PUBLIC_BASE_URL`): the Telegram webhook is registered
    /// at `<it>/telegram/webhook`.
    pub public_base_url: Option<String>,
    /// The per-job push wake-ups (`PUSH_SCHEDULE_GROUP`: EventBridge Scheduler; none by default).
    pub push_scheduler: Arc<dyn crate::pushing::port::JobScheduler>,
}

impl App {
    pub fn new(store: Arc<Store>, secrets: Secrets, blobs: Arc<dyn BlobBackend>) -> Self {
        let jwks = Arc::new(crate::adapters::jwks::JwksCache::new(store.policy.access.jwks_url.clone()));
        let telegram = Arc::new(
            crate::adapters::telegram::HttpBotApi::new(crate::config::DEFAULT_TELEGRAM_API_BASE)
                .expect("an HTTP client with default settings builds"),
        );
        Self {
            store,
            secrets,
            blobs,
            auth: Arc::new(Authenticator::new()),
            jwks,
            telegram,
            public_base_url: None,
            push_scheduler: Arc::new(crate::pushing::port::NoScheduler),
        }
    }

    /// The same application keeping per-job push schedules with `s`.
    pub fn with_push_scheduler(mut self, s: Arc<dyn crate::pushing::port::JobScheduler>) -> Self {
        self.push_scheduler = s;
        self
    }

    /// The same application talking to another Bot API (a fake in tests, a configured base URL).
    pub fn with_telegram(
        mut self,
        api: Arc<dyn crate::telegram::port::BotApi>,
        public_base_url: Option<String>,
    ) -> Self {
        self.telegram = api;
        self.public_base_url = public_base_url;
        self
    }

    pub fn now(&self) -> crate::clock::Millis {
        self.store.now()
    }
}

impl App {
    /// The deployed wiring: DynamoDB, Secrets Manager (`SECRETS_PREFIX`) and S3 (`BLOB_BUCKET`).
    /// One SDK config per process (per distinct endpoint), created at init.
    pub async fn from_config(cfg: &crate::config::Config, clock: crate::clock::SharedClock) -> AppResult<Self> {
        let mut sdk = crate::adapters::aws::SdkConfigs::default();
        let dynamo =
            crate::adapters::dynamo::dynamo_client_with(&sdk.get(cfg.dynamodb_endpoint.as_deref()).await, None);
        let store = Arc::new(Store::new(dynamo, cfg.tables.clone(), cfg.policy.clone(), clock.clone()));
        let sm = sdk.get(cfg.secrets_endpoint.as_deref()).await;
        let backend = Arc::new(crate::adapters::secrets_manager::SecretsManagerBackend::from_config(cfg, &sm));
        let secrets = Secrets::new(backend, clock, cfg.policy.secrets.cache_ms);
        let s3 = sdk.get(cfg.s3_endpoint.as_deref()).await;
        let blobs = Arc::new(crate::adapters::s3::S3Blobs::from_config(cfg, &s3)?);
        let telegram = Arc::new(crate::adapters::telegram::HttpBotApi::new(&cfg.telegram_api_base)?);
        let app = Self::new(store, secrets, blobs).with_telegram(telegram, cfg.public_base_url.clone());
        // Per-job push schedules, when the deployment names its schedule group (`SCHEDULER_ENDPOINT`: moto).
        let sched = sdk.get(std::env::var("SCHEDULER_ENDPOINT").ok().as_deref()).await;
        Ok(match crate::adapters::scheduler::EventBridgeScheduler::from_env(&sched) {
            Some(s) => app.with_push_scheduler(Arc::new(s)),
            None => app,
        })
    }
}

/// The `main` of a function invoked with a JSON payload (the op-envelope functions): telemetry,
/// configuration and the [`App`] once per process, then every invocation through `handle`, its
/// errors reported as Lambda function errors with a stable `errorType`.
pub async fn run_invoked_function<H, Fut>(handle: H) -> Result<(), lambda_runtime::Error>
where
    H: Fn(Arc<App>, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = AppResult<serde_json::Value>> + Send,
{
    crate::telemetry::init(true);
    let cfg = crate::Config::from_env()?;
    let app = Arc::new(App::from_config(&cfg, Arc::new(crate::SystemClock)).await?);
    let handle = Arc::new(handle);
    lambda_runtime::run(lambda_runtime::service_fn(move |ev: lambda_runtime::LambdaEvent<serde_json::Value>| {
        let (app, handle) = (app.clone(), handle.clone());
        async move { handle(app, ev.payload).await.map_err(lambda_runtime::Diagnostic::from) }
    }))
    .await
}
