use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init(true);
    let cfg = shared::Config::from_env()?;
    let app = shared::app::App::from_config(&cfg, Arc::new(shared::SystemClock)).await?;
    let providers = shared::reconcile::providers::deployed(&cfg, app.secrets.clone());
    let r = Arc::new(shared::reconcile::cycle::Reconciler { app, deployment: cfg.deployment_id.clone(), providers });
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| {
        let r = r.clone();
        async move { Box::pin(reconcile::handle(&r, ev.payload)).await.map_err(lambda_runtime::Diagnostic::from) }
    }))
    .await
}
