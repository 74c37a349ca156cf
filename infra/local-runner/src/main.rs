//! The local runner: every function's handler on localhost, with an embedded DynamoDB.
//!
//! - `POST /worker/<op>`: the `claim` function's routes (worker protocol).
//! - `POST /2015-03-31/functions/<name>/invocations`: the Lambda Invoke REST path, so the AWS
//!   SDK's Lambda client and `aws lambda invoke --endpoint-url` work unchanged.
//! - A timer runs the lease sweep (`releaseExpiredLeases`) the way the scheduled rule does.
//!
//! Storage: dynoxide in-process (in memory, or a file under `--data-dir`), or the endpoint in
//! `DYNAMODB_ENDPOINT`.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shared::worker_api::WorkerAuth;
use shared::{Config, Store, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
local-runner: run agent-factory's functions on localhost

USAGE: local-runner [--port N] [--data-dir DIR] [--sweep-secs N]

  --port N        listen on 127.0.0.1:N (default 8787; 0 picks a free port)
  --data-dir DIR  keep the embedded DynamoDB in DIR/dynamo.sqlite (default: in memory)
  --sweep-secs N  run the expired-lease sweep every N seconds (default 30; 0 = never)

ENVIRONMENT
  DYNAMODB_ENDPOINT   use this DynamoDB (e.g. DynamoDB Local) instead of the embedded one
  WORKER_AUTH_TOKEN   bearer token for /worker/* (default: local-dev-token)
  TABLE_PREFIX, LEASE_MS, STALE_AFTER_MS, MAX_ATTEMPTS, ...   as for the functions (README)
  RUST_LOG            log level (default info)
";

struct Args {
    port: u16,
    data_dir: Option<std::path::PathBuf>,
    sweep_secs: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { port: 8787, data_dir: None, sweep_secs: 30 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--port" => a.port = val("--port")?.parse().map_err(|_| "--port takes a number".to_string())?,
            "--data-dir" => a.data_dir = Some(val("--data-dir")?.into()),
            "--sweep-secs" => {
                a.sweep_secs = val("--sweep-secs")?.parse().map_err(|_| "--sweep-secs takes a number".to_string())?
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'\n\n{USAGE}")),
        }
    }
    Ok(a)
}

#[derive(Clone)]
struct AppState {
    store: Arc<Store>,
    auth: Arc<WorkerAuth>,
}

#[tokio::main]
async fn main() {
    shared::telemetry::init(false);
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("local-runner: {e}");
        std::process::exit(1);
    }
}

async fn start_embedded_dynamodb(data_dir: Option<&std::path::Path>) -> Result<String, String> {
    let db = match data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let path = dir.join("dynamo.sqlite");
            dynoxide::Database::new(&path.to_string_lossy()).map_err(|e| format!("opening {}: {e}", path.display()))?
        }
        None => dynoxide::Database::memory().map_err(|e| format!("starting embedded DynamoDB: {e}"))?,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(dynoxide::server::serve_on(listener, db));
    Ok(format!("http://{addr}"))
}

async fn run(args: Args) -> Result<(), String> {
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    let storage = match &cfg.dynamodb_endpoint {
        Some(ep) => format!("DynamoDB at {ep}"),
        None => {
            let ep = start_embedded_dynamodb(args.data_dir.as_deref()).await?;
            cfg.dynamodb_endpoint = Some(ep);
            match &args.data_dir {
                Some(d) => format!("embedded DynamoDB (dynoxide) in {}", d.display()),
                None => "embedded DynamoDB (dynoxide) in memory".to_string(),
            }
        }
    };
    let store = Arc::new(Store::from_config(&cfg, Arc::new(SystemClock), None).await);
    store.create_tables().await.map_err(|e| e.to_string())?;
    let token = std::env::var("WORKER_AUTH_TOKEN").ok().filter(|t| !t.is_empty());
    if token.is_none() {
        tracing::warn!("WORKER_AUTH_TOKEN is not set: /worker/* accepts the development token 'local-dev-token'");
    }
    let auth = Arc::new(WorkerAuth::new(Some(token.unwrap_or_else(|| "local-dev-token".into()))));
    let state = AppState { store: store.clone(), auth };

    if args.sweep_secs > 0 {
        let s = store.clone();
        let every = Duration::from_secs(args.sweep_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match s.release_expired_leases(Some(500)).await {
                    Ok(r) if r.unlocked > 0 => tracing::info!(?r, "lease sweep"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
                }
            }
        });
    }

    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/worker/{op}", post(worker).get(worker))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .map_err(|e| format!("binding 127.0.0.1:{}: {e}", args.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // A closed stdout (a parent that stopped reading) must not stop the runner.
    let banner = format!(
        "local-runner listening on http://{addr}\n  storage: {storage}; tables {}, {}, {}\n  \
         worker routes: POST http://{addr}/worker/<op>  (Authorization: Bearer <WORKER_AUTH_TOKEN>)\n  \
         lambda invoke: POST http://{addr}/2015-03-31/functions/enqueue/invocations\n",
        cfg.tables.queue, cfg.tables.workers, cfg.tables.control
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(banner.as_bytes()).and_then(|_| out.flush());
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

/// `/worker/<op>`: hand the request to the `claim` function's handler as API Gateway would.
async fn worker(State(st): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let req = match req.body(lambda_http::Body::Binary(body.to_vec())) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let resp = claim::handle(&st.store, &st.auth, req).await;
    let (parts, body) = resp.into_parts();
    let bytes: Vec<u8> = match body {
        lambda_http::Body::Text(t) => t.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    Response::from_parts(parts, Body::from(bytes))
}

/// The Lambda Invoke API: 200 with the result, or 200 with `X-Amz-Function-Error` and
/// `{"errorType","errorMessage"}` as Lambda reports a function error.
async fn invoke(State(st): State<AppState>, Path(name): Path<String>, body: Bytes) -> Response {
    let fname = name.rsplit(':').next().unwrap_or(&name).to_string();
    if fname != "enqueue" {
        let msg =
            format!("Function not found: {name} (this runner invokes: enqueue; the worker routes are under /worker/)");
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("x-amzn-ErrorType", "ResourceNotFoundException")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::json!({ "Type": "User", "message": msg }).to_string()))
            .unwrap_or_default();
    }
    let payload: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .header("x-amzn-ErrorType", "InvalidRequestContentException")
                    .header("content-type", "application/json")
                    .body(Body::from(
                        serde_json::json!({ "Type": "User", "message": format!("Could not parse request body into json: {e}") })
                            .to_string(),
                    ))
                    .unwrap_or_default();
            }
        }
    };
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-amz-executed-version", "$LATEST");
    match enqueue::handle(&st.store, payload).await {
        Ok(v) => builder.body(Body::from(v.to_string())).unwrap_or_default(),
        Err(e) => {
            let d = enqueue::diagnostic(e);
            builder
                .header("x-amz-function-error", "Unhandled")
                .body(Body::from(
                    serde_json::json!({ "errorType": d.error_type, "errorMessage": d.error_message }).to_string(),
                ))
                .unwrap_or_default()
        }
    }
}
