#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::app::run_invoked_function(|app, payload| async move { api::handle(&app, payload).await }).await
}
