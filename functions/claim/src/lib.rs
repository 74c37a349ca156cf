//! The `claim` function: the worker protocol, `POST /worker/<op>` through API Gateway.

use lambda_http::{Body, Request, Response};
use shared::app::App;
use shared::worker_api::{self, WorkerRequest, WorkerResponse};

/// Handle one HTTP request; every outcome, errors included, is a JSON response.
#[tracing::instrument(skip_all, fields(path = %req.uri().path()))]
pub async fn handle(app: &App, req: Request) -> Response<Body> {
    // Behind a named API Gateway stage the path carries the stage first: route on `/worker/...`.
    let full = req.uri().path();
    let path = full.find("/worker/").map_or(full, |i| &full[i..]).to_string();
    let authorization =
        req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let method = req.method().as_str().to_string();
    let body: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    let call = WorkerRequest { method: &method, path: &path, authorization: authorization.as_deref(), body };
    let r = Box::pin(worker_api::handle(app, call)).await;
    to_response(r)
}

pub fn to_response(r: WorkerResponse) -> Response<Body> {
    Response::builder()
        .status(r.status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::Text(r.body.to_string()))
        .expect("valid response parts")
}
