use lambda_http::{Request, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init(true);
    let cfg = shared::Config::from_env()?;
    let store = Arc::new(shared::Store::from_config(&cfg, Arc::new(shared::SystemClock), None).await);
    let auth = Arc::new(shared::worker_api::WorkerAuth::from_env());
    lambda_http::run(service_fn(move |req: Request| {
        let (store, auth) = (store.clone(), auth.clone());
        async move { Ok::<_, std::convert::Infallible>(claim::handle(&store, &auth, req).await) }
    }))
    .await
}
