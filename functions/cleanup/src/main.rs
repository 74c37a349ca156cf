use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init(true);
    let cfg = shared::Config::from_env()?;
    let app = shared::app::App::from_config(&cfg, Arc::new(shared::SystemClock)).await?;
    let ctx = Arc::new(shared::cleanup::ops::CleanupCtx::new(app, cleanup::settings_from_env(&cfg)));
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| {
        let ctx = ctx.clone();
        async move { cleanup::handle(&ctx, ev.payload).await.map_err(lambda_runtime::Diagnostic::from) }
    }))
    .await
}
