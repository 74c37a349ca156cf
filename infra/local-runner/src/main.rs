//! The local runner: every function's handler on localhost, with an embedded DynamoDB.
//!
//! - `POST /worker/<op>`: the `claim` function's routes (worker protocol).
//! - `POST /2015-03-31/functions/<name>/invocations`: the Lambda Invoke REST path, so the AWS
//!   SDK's Lambda client and `aws lambda invoke --endpoint-url` work unchanged.
//! - `PUT|GET /blobs/<key>?...`: the local blob store behind the presigned-style URLs that
//!   snapshots and media hand out (HMAC-signed, expiring).
//! - A timer runs the lease sweep (`releaseExpiredLeases`) and the storage sweep (snapshot and
//!   media expiry) the way the scheduled rules do.
//!
//! Storage: dynoxide in-process (in memory, or a file under `--data-dir`), or the endpoint in
//! `DYNAMODB_ENDPOINT`; secrets in `<data-dir>/secrets.json` (or memory); blobs in
//! `<data-dir>/blobs` (or a temporary directory).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use shared::adapters::blob_local::LocalBlobs;
use shared::adapters::secrets_file::FileSecretBackend;
use shared::app::App;
use shared::secrets::Secrets;
use shared::{Config, Store, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
local-runner: run agent-factory's functions on localhost

USAGE: local-runner [--port N] [--data-dir DIR] [--sweep-secs N] [--worker ID]...

  --port N        listen on 127.0.0.1:N (default 8787; 0 picks a free port)
  --data-dir DIR  keep the embedded DynamoDB (DIR/dynamo.sqlite), the secrets (DIR/secrets.json)
                  and the blobs (DIR/blobs) there (default: memory and a temporary directory)
  --sweep-secs N  run the lease and storage sweeps every N seconds (default 30; 0 = never)
  --worker ID     register worker ID and print its bearer token (repeatable); more tokens:
                  invoke op mintWorkerToken

ENVIRONMENT
  DYNAMODB_ENDPOINT   use this DynamoDB (e.g. DynamoDB Local) instead of the embedded one
  TABLE_PREFIX, LEASE_MS, STALE_AFTER_MS, MAX_ATTEMPTS, ...   as for the functions (README)
  RUST_LOG            log level (default info)
";

/// Largest upload the runner's blob route buffers (snapshots of a local worker).
const LOCAL_BLOB_MAX_BYTES: usize = 1024 * 1024 * 1024;

struct Args {
    port: u16,
    data_dir: Option<std::path::PathBuf>,
    sweep_secs: u64,
    workers: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { port: 8787, data_dir: None, sweep_secs: 30, workers: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--port" => a.port = val("--port")?.parse().map_err(|_| "--port takes a number".to_string())?,
            "--data-dir" => a.data_dir = Some(val("--data-dir")?.into()),
            "--worker" => a.workers.push(val("--worker")?),
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
    app: Arc<App>,
    blobs: Arc<LocalBlobs>,
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
    let clock: shared::clock::SharedClock = Arc::new(SystemClock);
    let store = Arc::new(Store::from_config(&cfg, clock.clone(), None).await);
    store.create_tables().await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .map_err(|e| format!("binding 127.0.0.1:{}: {e}", args.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (secret_backend, blob_root) = match &args.data_dir {
        Some(d) => (FileSecretBackend::open(d.join("secrets.json")).map_err(|e| e.to_string())?, d.join("blobs")),
        None => (
            FileSecretBackend::memory(),
            std::env::temp_dir().join(format!("agent-factory-blobs-{}", std::process::id())),
        ),
    };
    std::fs::create_dir_all(&blob_root).map_err(|e| format!("creating {}: {e}", blob_root.display()))?;
    let blobs = Arc::new(LocalBlobs::open(&blob_root, format!("http://{addr}")).map_err(|e| e.to_string())?);
    let secrets = Secrets::new(Arc::new(secret_backend), clock, cfg.policy.secrets.cache_ms);
    let app = Arc::new(App::new(store.clone(), secrets, blobs.clone()));
    let mut tokens = String::new();
    for w in &args.workers {
        let m = store
            .mint_worker_token(&shared::workers::model::MintTokenArgs {
                worker_id: w.clone(),
                provider: Some("local".into()),
            })
            .await
            .map_err(|e| format!("minting a token for worker '{w}': {e}"))?;
        tokens.push_str(&format!("  worker {w}: token {}\n", m.token));
    }
    let state = AppState { app: app.clone(), blobs };

    if args.sweep_secs > 0 {
        let app = app.clone();
        let every = Duration::from_secs(args.sweep_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match app.store.release_expired_leases(Some(500)).await {
                    Ok(r) if r.unlocked > 0 => tracing::info!(?r, "lease sweep"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
                }
                match shared::snapshots::ops::sweep(&app, Some(100)).await {
                    Ok(r) if r != shared::snapshots::model::SweepResult::default() => {
                        tracing::info!(?r, "storage sweep")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "storage sweep failed"),
                }
            }
        });
    }

    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/worker/{op}", post(worker).get(worker))
        .route("/blobs/{*key}", put(blob).get(blob).layer(axum::extract::DefaultBodyLimit::max(LOCAL_BLOB_MAX_BYTES)))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .with_state(state);
    // A closed stdout (a parent that stopped reading) must not stop the runner.
    let banner = format!(
        "local-runner listening on http://{addr}\n  storage: {storage}; tables {}, {}, {}\n  \
         blobs: {}\n  \
         worker routes: POST http://{addr}/worker/<op>  (Authorization: Bearer <worker token>)\n  \
         lambda invoke: POST http://{addr}/2015-03-31/functions/enqueue/invocations\n{tokens}",
        cfg.tables.queue,
        cfg.tables.workers,
        cfg.tables.control,
        blob_root.display()
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(banner.as_bytes()).and_then(|_| out.flush());
    }
    axum::serve(listener, router)
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
    let resp = claim::handle(&st.app, req).await;
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
    match enqueue::handle(&st.app, payload).await {
        Ok(v) => builder.body(Body::from(v.to_string())).unwrap_or_default(),
        Err(e) => {
            let d = lambda_runtime::Diagnostic::from(e);
            builder
                .header("x-amz-function-error", "Unhandled")
                .body(Body::from(
                    serde_json::json!({ "errorType": d.error_type, "errorMessage": d.error_message }).to_string(),
                ))
                .unwrap_or_default()
        }
    }
}

/// `/blobs/<key>`: the local blob store's presigned-style URLs.
async fn blob(State(st): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let now = shared::Clock::now_ms(&SystemClock);
    let r = st.blobs.serve(method.as_str(), pq, ct, body.to_vec(), now).await;
    Response::builder()
        .status(r.status)
        .header("content-type", r.content_type)
        .body(Body::from(r.body))
        .unwrap_or_default()
}
