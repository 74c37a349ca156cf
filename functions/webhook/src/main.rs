use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init(true);
    let cfg = shared::Config::from_env()?;
    let app = Arc::new(shared::app::App::from_config(&cfg, Arc::new(shared::SystemClock)).await?);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| {
        let app = app.clone();
        async move { webhook::dispatch(&app, ev.payload).await }
    }))
    .await
}
