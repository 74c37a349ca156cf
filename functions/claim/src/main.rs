use lambda_http::{Request, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init(true);
    let cfg = shared::Config::from_env()?;
    let app = Arc::new(shared::app::App::from_config(&cfg, Arc::new(shared::SystemClock)).await?);
    lambda_http::run(service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(claim::handle(&app, req).await) }
    }))
    .await
}
