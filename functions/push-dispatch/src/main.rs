#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::app::run_invoked_function(|app, payload| async move { push_dispatch::handle(&app, payload).await }).await
}
