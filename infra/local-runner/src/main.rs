//! The local runner: every function's handler on localhost, with an embedded DynamoDB.
//!
//! - `POST /worker/<op>`: the `claim` function's routes (worker protocol).
//! - `POST /telegram/webhook`: the `webhook` function (accept; a background task processes).
//! - `POST /2015-03-31/functions/<name>/invocations`: the Lambda Invoke REST path (qualified
//!   names, ARNs, `Event` and `DryRun` invocations), so the AWS SDK's Lambda client and
//!   `aws lambda invoke --endpoint-url` work unchanged; the functions are the `FUNCTIONS` table.
//! - `PUT|GET /blobs/<key>?...`: the local blob store behind the presigned-style URLs that
//!   snapshots and media hand out (HMAC-signed, expiring).
//! - A timer invokes the `cleanup` function's lease sweep (`releaseExpiredLeases`) and storage
//!   sweep (`expireStorage`: snapshot and media expiry) the way the scheduled rules do, and the
//!   push sweep (`push-dispatch`'s `dispatchDuePushJobs`); per-job push timers
//!   (`push_timers.rs`) stand in for EventBridge Scheduler. The
//!   nightly Fly cleanup (disabled by default on AWS) is not run by a timer here.
//!
//! Storage: dynoxide in-process, reached through an in-process connector with no listening port
//! (in memory, or a file under `--data-dir`, which one runner at a time holds), or the endpoint in
//! `DYNAMODB_ENDPOINT`; secrets in `<data-dir>/secrets.json` (or memory); blobs in
//! `<data-dir>/blobs` (or a temporary directory).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use shared::adapters::blob_local::LocalBlobs;
use shared::adapters::secrets_file::FileSecretBackend;
use shared::app::App;
use shared::secrets::Secrets;
use shared::{Config, Store, SystemClock};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

mod demo;
mod embedded;
mod fake_bot_api;
mod push_timers;

const USAGE: &str = "\
local-runner: run agent-factory's functions on localhost

USAGE: local-runner [--port N] [--data-dir DIR] [--sweep-secs N] [--read-timeout-ms N] [--worker ID]...
                    [--worker-command CMD] [--reconcile-secs N]

  --port N        listen on 127.0.0.1:N (default 8787; 0 picks a free port)
  --data-dir DIR  keep the embedded DynamoDB (DIR/dynamo.sqlite), the secrets (DIR/secrets.json)
                  and the blobs (DIR/blobs) there (default: memory and a temporary directory);
                  one runner at a time holds DIR (DIR/runner.lock), a second one is refused
  --sweep-secs N  run the lease and storage sweeps every N seconds (default 30; 0 = never)
  --read-timeout-ms N
                  a request's headers, and its body, must arrive within N ms (default 10000;
                  blob uploads get 60 times as long)
  --worker ID     register worker ID and print its bearer token (repeatable); more tokens:
                  invoke op mintWorkerToken
  --worker-command CMD
                  reconcile starts workers as local child processes running `sh -c CMD`
                  (with the spawn env: WORKER_ID, AGENT_FACTORY_URL, AGENT_FACTORY_BOOTSTRAP_CODE,
                  ...; a volume is a directory under the data dir); stores the `process`
                  provider config unless one is stored already
  --reconcile-secs N
                  run a reconcile cycle every N seconds (default 15; 0 = only after enqueues)
  --engine CMD    the engine of the default worker (agent-worker, found next to this binary):
                  `echo` (default) or a command (the job as JSON on stdin, the reply on stdout)
  --no-workers    no process provider: reconcile starts no workers (claim with --worker tokens)
  --demo          post a Telegram update to the demo bot, narrate the pipeline until the worker
                  has stopped, then exit (0 when every step happened)

Without --worker-command, reconcile starts the reference worker (agent-worker) with the echo
engine. Without TELEGRAM_API_BASE and --telegram-token, the runner serves a fake Telegram Bot API at
/fake-telegram (it prints what the bot sends) and seeds a demo agent, bot and webhook.
  --telegram-token TOKEN
                  long-poll Telegram's getUpdates for this bot (its webhook is deleted first) and
                  feed each update to the ingress pipeline, as the webhook would: chat with a local
                  agent from a phone without a public URL (import the token for an agent first)

ENVIRONMENT
  DYNAMODB_ENDPOINT   use this DynamoDB (e.g. DynamoDB Local) instead of the embedded one
  TABLE_PREFIX, LEASE_MS, STALE_AFTER_MS, MAX_ATTEMPTS, ...   as for the functions (README)
  RUST_LOG            log level (default info)
";

/// Largest upload the runner's blob route buffers (snapshots of a local worker).
const LOCAL_BLOB_MAX_BYTES: usize = 1024 * 1024 * 1024;
/// Largest request body of the Invoke path and the worker routes: Lambda's synchronous
/// invocation payload limit.
const API_MAX_BYTES: usize = 6 * 1024 * 1024;
/// Blob uploads get this many read timeouts to arrive (a large snapshot takes a while).
const BLOB_TIMEOUT_FACTOR: u32 = 60;

struct Args {
    port: u16,
    data_dir: Option<std::path::PathBuf>,
    sweep_secs: u64,
    read_timeout: Duration,
    workers: Vec<String>,
    worker_command: Option<String>,
    reconcile_secs: u64,
    /// No process provider (reconcile starts no workers).
    no_workers: bool,
    /// The engine of the default worker (`echo` unless given).
    engine: Option<String>,
    /// Post a demo update and narrate the pipeline, then exit.
    demo: bool,
    telegram_token: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        port: 8787,
        data_dir: None,
        sweep_secs: 30,
        read_timeout: Duration::from_secs(10),
        workers: Vec::new(),
        worker_command: None,
        reconcile_secs: 15,
        no_workers: false,
        engine: None,
        demo: false,
        telegram_token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--port" => a.port = val("--port")?.parse().map_err(|_| "--port takes a number".to_string())?,
            "--data-dir" => a.data_dir = Some(val("--data-dir")?.into()),
            "--worker" => a.workers.push(val("--worker")?),
            "--worker-command" => a.worker_command = Some(val("--worker-command")?),
            "--no-workers" => a.no_workers = true,
            "--engine" => a.engine = Some(val("--engine")?),
            "--demo" => a.demo = true,
            "--reconcile-secs" => {
                a.reconcile_secs =
                    val("--reconcile-secs")?.parse().map_err(|_| "--reconcile-secs takes a number".to_string())?
            }
            "--sweep-secs" => {
                a.sweep_secs = val("--sweep-secs")?.parse().map_err(|_| "--sweep-secs takes a number".to_string())?
            }
            "--read-timeout-ms" => {
                let ms: u64 = val("--read-timeout-ms")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| "--read-timeout-ms takes a positive number".to_string())?;
                a.read_timeout = Duration::from_millis(ms);
            }
            "--telegram-token" => a.telegram_token = Some(val("--telegram-token")?),
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

/// What a hosted function returns: its result, or the Lambda function error
/// `(errorType, errorMessage)`.
type FnResult = Result<Value, (String, String)>;
type Handler = fn(Arc<App>, Value) -> Pin<Box<dyn Future<Output = FnResult> + Send>>;

/// A function error as the Lambda runtime reports it.
fn function_error(e: shared::AppError) -> (String, String) {
    let d = lambda_runtime::Diagnostic::from(e);
    (d.error_type, d.error_message)
}

/// The functions the Invoke path hosts, by name: a new function is one line here.
const FUNCTIONS: &[(&str, Handler)] = &[
    ("enqueue", |app, payload| {
        Box::pin(async move {
            let is_enqueue = payload.get("op").and_then(Value::as_str) == Some("enqueue");
            let r = enqueue::handle(&app, payload).await.map_err(function_error);
            if is_enqueue && r.is_ok() {
                // What the queue table's stream does on AWS: ask for a reconcile cycle.
                RECONCILE_WANTED.notify_one();
            }
            r
        })
    }),
    ("admin", |app, payload| Box::pin(async move { admin::handle(&app, payload).await.map_err(function_error) })),
    ("api", |app, payload| Box::pin(async move { api::handle(&app, payload).await.map_err(function_error) })),
    ("reconcile", |_app, payload| {
        Box::pin(async move {
            let Some(r) = RECONCILER.get() else {
                return Err(("Internal".to_string(), "reconcile is not set up".to_string()));
            };
            Box::pin(reconcile::handle(r, payload)).await.map_err(function_error)
        })
    }),
    ("cleanup", |app, payload| {
        Box::pin(async move {
            let ctx = shared::cleanup::ops::CleanupCtx::new((*app).clone(), fly_settings().clone());
            cleanup::handle(&ctx, payload).await.map_err(function_error)
        })
    }),
    // The push sweep and each job's timer (EventBridge rule and Scheduler on AWS).
    ("push-dispatch", |app, payload| {
        Box::pin(async move { push_dispatch::handle(&app, payload).await.map_err(function_error) })
    }),
    // A stream batch (`{"Records": [...]}`) or an API Gateway event, as on AWS.
    ("webhook", |app, payload| {
        Box::pin(
            async move { webhook::dispatch(&app, payload).await.map_err(|e| ("Internal".to_string(), e.to_string())) },
        )
    }),
];

/// The reconcile function's context (its provider factory runs workers as child processes).
static RECONCILER: std::sync::OnceLock<shared::reconcile::cycle::Reconciler> = std::sync::OnceLock::new();
/// Set after every successful enqueue; one background task turns it into cycles (coalesced:
/// a burst of enqueues wakes it once).
static RECONCILE_WANTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The cleanup function's Fly settings (`DEPLOYMENT_ID`, `FLY_API_BASE`, `FLY_APP_NAME`), read once.
fn fly_settings() -> &'static shared::adapters::fly::FlySettings {
    static FLY: std::sync::OnceLock<shared::adapters::fly::FlySettings> = std::sync::OnceLock::new();
    FLY.get_or_init(|| {
        let cfg = Config::from_env().or_else(|_| Config::from_lookup(&|_| None));
        match cfg {
            Ok(c) => cleanup::settings_from_env(&c),
            Err(_) => shared::adapters::fly::FlySettings {
                api_base: String::new(),
                deployment_id: "local".into(),
                app_name: None,
                options: Default::default(),
            },
        }
    })
}

/// Run one op of a hosted function, as its EventBridge schedule would (the runner's timers).
async fn run_scheduled(app: &Arc<App>, function: &str, payload: Value) {
    let Some((_, h)) = FUNCTIONS.iter().find(|(n, _)| *n == function) else { return };
    let op = payload["op"].as_str().unwrap_or("?").to_string();
    match h(app.clone(), payload).await {
        Ok(r) if r.as_object().is_some_and(|o| o.values().any(|v| v.as_u64().is_some_and(|n| n > 0))) => {
            tracing::info!(%op, result = %r, "scheduled {function}")
        }
        Ok(_) => {}
        Err((t, m)) => tracing::warn!(%op, error_type = %t, error = %m, "scheduled {function} failed"),
    }
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

/// Take the data dir for this process: an exclusive OS lock on `DIR/runner.lock`, held until
/// the process ends (the OS drops it on any exit, `kill -9` included).
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("runner.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "the data dir {} is in use by another local-runner (it holds {}); stop that one or pass another --data-dir",
            dir.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("locking {}: {e}", path.display())),
    }
}

/// The embedded DynamoDB: a dynoxide database reached through an in-process connector (no
/// listening port, see `embedded`).
fn embedded_dynamodb(data_dir: Option<&std::path::Path>) -> Result<dynoxide::Database, String> {
    match data_dir {
        Some(dir) => {
            let path = dir.join("dynamo.sqlite");
            dynoxide::Database::new(&path.to_string_lossy()).map_err(|e| format!("opening {}: {e}", path.display()))
        }
        None => dynoxide::Database::memory().map_err(|e| format!("starting embedded DynamoDB: {e}")),
    }
}

async fn embedded_client(db: dynoxide::Database) -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new("embedded", "embedded", None, None, "static"))
        .endpoint_url("http://embedded-dynamodb.invalid")
        .http_client(embedded::InProcess(db))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

/// Turns off the DynamoDB Streams of the embedded tables (the schema enables one on the queue
/// table for AWS): nothing reads a stream locally, and dynoxide numbers each stream record with
/// `MAX(CAST(sequence_number AS INTEGER))` over all of the table's records, a scan on every
/// write that made each enqueue slower the more the runner had written.
async fn disable_streams(client: &aws_sdk_dynamodb::Client, tables: &[&str]) -> Result<(), String> {
    use aws_sdk_dynamodb::types::StreamSpecification;
    for t in tables {
        let d = client.describe_table().table_name(*t).send().await.map_err(|e| format!("describing {t}: {e:?}"))?;
        let on = d.table().and_then(|t| t.stream_specification()).is_some_and(|s| s.stream_enabled());
        if on {
            let off = StreamSpecification::builder().stream_enabled(false).build().map_err(|e| e.to_string())?;
            client
                .update_table()
                .table_name(*t)
                .stream_specification(off)
                .send()
                .await
                .map_err(|e| format!("turning off the stream of {t}: {e:?}"))?;
        }
    }
    Ok(())
}

async fn run(args: Args) -> Result<(), String> {
    // Before anything opens a file in the data dir.
    let _lock = args.data_dir.as_deref().map(lock_data_dir).transpose()?;
    let mut cfg = Config::from_env().map_err(|e| e.to_string())?;
    let clock: shared::clock::SharedClock = Arc::new(SystemClock);
    let (store, storage) = match &cfg.dynamodb_endpoint {
        Some(ep) => {
            let store = Store::from_config(&cfg, clock.clone(), None).await;
            store.create_tables().await.map_err(|e| e.to_string())?;
            (store, format!("DynamoDB at {ep}"))
        }
        None => {
            let db = embedded_dynamodb(args.data_dir.as_deref())?;
            let client = embedded_client(db).await;
            let label = match &args.data_dir {
                Some(d) => format!("embedded DynamoDB (dynoxide, in process) in {}", d.display()),
                None => "embedded DynamoDB (dynoxide, in process) in memory".to_string(),
            };
            let store = Store::new(client.clone(), cfg.tables.clone(), cfg.policy.clone(), clock.clone());
            store.create_tables().await.map_err(|e| e.to_string())?;
            disable_streams(&client, &[&cfg.tables.queue, &cfg.tables.workers, &cfg.tables.control]).await?;
            (store, label)
        }
    };
    let store = Arc::new(store);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .map_err(|e| format!("binding 127.0.0.1:{}: {e}", args.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Without TELEGRAM_API_BASE: the fake Bot API served by this runner (offline, prints what
    // the bot sends).
    let fake_telegram = (std::env::var_os("TELEGRAM_API_BASE").is_none() && args.telegram_token.is_none())
        .then(fake_bot_api::FakeBotApi::default);
    if fake_telegram.is_some() {
        cfg.telegram_api_base = format!("http://{addr}{}", fake_bot_api::PREFIX);
    }
    let reconcile_secs = if args.demo { 1 } else { args.reconcile_secs };
    // Reconcile starts the reference worker unless told otherwise.
    let worker_command = match (&args.worker_command, args.no_workers) {
        (Some(c), _) => Some(c.clone()),
        (None, true) => None,
        (None, false) => Some(demo::default_worker_command(args.engine.as_deref(), args.demo)?),
    };
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
    // Telegram: TELEGRAM_API_BASE (a fake in tests); the webhook URL defaults to this runner's.
    let telegram =
        Arc::new(shared::adapters::telegram::HttpBotApi::new(&cfg.telegram_api_base).map_err(|e| e.to_string())?);
    let public = cfg.public_base_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let app = Arc::new(
        App::new(store.clone(), secrets, blobs.clone())
            .with_telegram(telegram, Some(public))
            .with_push_scheduler(Arc::new(push_timers::LocalPushTimers::default())),
    );
    let _ = push_timers::PUSH_APP.set(app.clone());
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
    let fake_routes = fake_telegram.clone().map(|f| {
        Router::new()
            .route("/sent", get(fake_bot_api::sent))
            .route("/{bot}/{method}", get(fake_bot_api::serve).post(fake_bot_api::serve))
            .with_state(f)
    });
    let reconciler = shared::reconcile::cycle::Reconciler {
        app: (*app).clone(),
        deployment: cfg.deployment_id.clone(),
        providers: shared::reconcile::providers::local(
            worker_command.clone().unwrap_or_default(),
            args.data_dir.clone().unwrap_or_else(|| blob_root.clone()).join("workers"),
        ),
    };
    if worker_command.is_some() && reconciler.provider_config().await.map_err(|e| e.to_string())?.is_none() {
        let pc = shared::reconcile::model::ProviderRuntimeConfig {
            kind: "process".into(),
            app_name: "local".into(),
            image: String::new(),
            region: String::new(),
            volume_name_prefix: "afw_data".into(),
            volume_path: "/data".into(),
            volume_size_gb: 1,
            api_base_url: format!("http://{addr}"),
            workspace_id: "default".into(),
        };
        store
            .put_versioned(shared::adapters::dynamo::reconcile::Stored::ProviderConfig, &pc, 0)
            .await
            .map_err(|e| format!("storing the process provider config: {e}"))?;
    }
    if args.demo {
        // The demo's worker is drained a few seconds after its job (the stored policy's bounds
        // are for production: written directly, as the provider config above).
        let mut p = reconciler.policy().await.map_err(|e| e.to_string())?;
        p.value.idle_timeout_ms = 4_000;
        p.value.min_cycle_interval_ms = 200;
        store
            .put_versioned(shared::adapters::dynamo::reconcile::Stored::ScalingPolicy, &p.value, p.version)
            .await
            .map_err(|e| format!("storing the demo scaling policy: {e}"))?;
    }
    let _ = RECONCILER.set(reconciler.clone());
    {
        let every = (reconcile_secs > 0).then(|| Duration::from_secs(reconcile_secs));
        tokio::spawn(async move {
            loop {
                match every {
                    Some(d) => {
                        let _ = tokio::time::timeout(d, RECONCILE_WANTED.notified()).await;
                    }
                    None => RECONCILE_WANTED.notified().await,
                }
                match Box::pin(reconciler.request_cycle()).await {
                    Ok(r) if r.spawned + r.drained + r.torn_down + r.orphans_destroyed > 0 => {
                        tracing::info!(spawned = r.spawned, drained = r.drained, torn_down = r.torn_down, "reconcile")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reconcile cycle failed"),
                }
            }
        });
    }

    if args.sweep_secs > 0 {
        let app = app.clone();
        let every = Duration::from_secs(args.sweep_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                // The schedules of the template, through the cleanup function that serves them.
                run_scheduled(
                    &app,
                    "cleanup",
                    serde_json::json!({"op": "releaseExpiredLeases", "args": {"limit": 500}}),
                )
                .await;
                run_scheduled(&app, "cleanup", serde_json::json!({"op": "expireStorage", "args": {"limit": 100}}))
                    .await;
                // The push sweep (hourly on AWS): jobs whose timer a restart lost.
                run_scheduled(&app, "push-dispatch", serde_json::json!({"op": "dispatchDuePushJobs", "args": {}}))
                    .await;
            }
        });
    }

    let api_body = BodyPolicy { limit: API_MAX_BYTES, deadline: args.read_timeout };
    let blob_body =
        BodyPolicy { limit: LOCAL_BLOB_MAX_BYTES, deadline: args.read_timeout.saturating_mul(BLOB_TIMEOUT_FACTOR) };
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/worker/{op}",
            post(worker).get(worker).route_layer(axum::middleware::from_fn_with_state(api_body, read_body)),
        )
        .route(
            "/telegram/webhook",
            post(telegram_webhook).route_layer(axum::middleware::from_fn_with_state(api_body, read_body)),
        )
        .route(
            "/blobs/{*key}",
            put(blob).get(blob).route_layer(axum::middleware::from_fn_with_state(blob_body, read_body)),
        )
        .nest_service(fake_bot_api::PREFIX, fake_routes.unwrap_or_default())
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke).route_layer(axum::middleware::from_fn_with_state(api_body, read_body)),
        )
        .fallback(|uri: Uri| async move {
            json_error(StatusCode::NOT_FOUND, "NotFound", &format!("no route {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{method} is not allowed on {}", uri.path()),
            )
        })
        // `read_body` enforces each route's limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state);
    // A closed stdout (a parent that stopped reading) must not stop the runner.
    let names: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
    let banner = format!(
        "local-runner listening on http://{addr}\n  storage: {storage}; tables {}, {}, {}\n  \
         blobs: {}\n  \
         worker routes: POST http://{addr}/worker/<op>  (Authorization: Bearer <worker token>)\n  \
         telegram webhook: POST http://{addr}/telegram/webhook  (X-Telegram-Bot-Api-Secret-Token)\n  \
         lambda invoke: POST http://{addr}/2015-03-31/functions/<name>/invocations  (functions: {})\n{tokens}",
        cfg.tables.queue,
        cfg.tables.workers,
        cfg.tables.control,
        blob_root.display(),
        names.join(", ")
    );
    let polling = match &args.telegram_token {
        Some(t) => start_telegram_polling(app.clone(), t).await?,
        None => String::new(),
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(format!("{banner}{polling}").as_bytes()).and_then(|_| out.flush());
    }
    let Some(fake) = fake_telegram else { return serve(listener, router, args.read_timeout).await };
    let base = format!("http://{addr}");
    // The system, ready for a message: the demo agent, its bot and webhook. `serve` runs from
    // here on (seeding sets the webhook through the runner's own fake Bot API route).
    let server = tokio::spawn(serve(listener, router, args.read_timeout));
    let seeded = demo::seed(&app, &fake).await?;
    let workers = match &worker_command {
        Some(c) if args.worker_command.is_none() => format!("the reference worker ({c})"),
        Some(c) => format!("`{c}`"),
        None => "none (--no-workers)".to_string(),
    };
    let first_update = shared::Clock::now_ms(&SystemClock) / 1000;
    let ready = format!(
        "  telegram: a fake Bot API at {base}{} prints what the bot sends (GET {base}{}/sent lists it)\n  \
         workers: reconcile starts {workers}\n\
         demo agent `{}` with bot {}; send it a message (a new update_id for each):\n  {}\n",
        fake_bot_api::PREFIX,
        fake_bot_api::PREFIX,
        demo::DEMO_AGENT,
        demo::DEMO_BOT_ID,
        demo::curl_command(&base, &seeded.secret, first_update)
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(ready.as_bytes()).and_then(|_| out.flush());
    }
    if args.demo {
        let code = demo::narrate(app.clone(), base, fake, seeded.secret).await;
        std::process::exit(code);
    }
    server.await.map_err(|e| e.to_string())?
}

/// `--telegram-token`: long-poll Telegram's `getUpdates` for this bot (after `deleteWebhook`:
/// Telegram refuses `getUpdates` while a webhook is set) into the ingress pipeline, in a
/// background task. The line to print.
async fn start_telegram_polling(app: Arc<App>, token: &str) -> Result<String, String> {
    let token = shared::secrets::SecretValue::new(token.trim());
    let poller =
        shared::ingress::poll::Poller::start(&app, token, 25).await.map_err(|e| format!("--telegram-token: {e}"))?;
    let bot = poller.bot_identity.clone();
    let owner = app.store.get_bot(&bot).await.map_err(|e| e.to_string())?;
    // An enqueue asks for a reconcile cycle, as the queue table's stream does on AWS.
    tokio::spawn(async move {
        poller
            .run_then(&app, |r| {
                if r.outcomes.iter().any(|o| o == "enqueued") {
                    RECONCILE_WANTED.notify_one();
                }
            })
            .await
    });
    Ok(match owner {
        Some(r) => format!("  telegram: polling getUpdates for bot {bot} (agent {})\n", r.agent_key),
        None => format!(
            "  telegram: polling getUpdates for bot {bot}; import its token for an agent \
             (admin op importTelegramTokenForAgent) to route its messages\n"
        ),
    })
}

/// HTTP/1 on `listener` with a deadline on each request's headers (a client that sends them
/// slowly, or not at all, is disconnected); `read_body` puts the deadline on bodies.
async fn serve(listener: tokio::net::TcpListener, router: Router, header_timeout: Duration) -> Result<(), String> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = http.serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(router.clone()),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}

/// The runner's own HTTP errors: `{"error":{"code","message"}}`.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "error": { "code": code, "message": message } }))).into_response()
}

#[derive(Clone, Copy)]
struct BodyPolicy {
    limit: usize,
    deadline: Duration,
}

/// Reads the whole request body before the handler runs: within the route's deadline (408
/// otherwise) and its size limit (413 otherwise).
async fn read_body(State(p): State<BodyPolicy>, req: Request, next: Next) -> Response {
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            &format!("the request body is over this route's limit of {} bytes", p.limit),
        )
    };
    let declared = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > p.limit as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, p.limit));
    match tokio::time::timeout(p.deadline, read).await {
        Err(_) => json_error(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            &format!("the request body did not arrive within {} ms", p.deadline.as_millis()),
        ),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => too_large(),
        Ok(Err(_)) => json_error(StatusCode::BAD_REQUEST, "BadRequest", "the request body could not be read"),
        Ok(Ok(collected)) => next.run(Request::from_parts(parts, Body::from(collected.to_bytes()))).await,
    }
}

/// An HTTP request as the API Gateway integration hands it to a `lambda_http` handler.
fn lambda_request(
    method: Method,
    uri: Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<lambda_http::Request, http::Error> {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.body(lambda_http::Body::Binary(body.to_vec()))
}

/// A `lambda_http` handler's response as the runner's HTTP response.
fn http_response(resp: lambda_http::Response<lambda_http::Body>) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes: Vec<u8> = match body {
        lambda_http::Body::Text(t) => t.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    Response::from_parts(parts, Body::from(bytes))
}

/// `/worker/<op>`: hand the request to the `claim` function's handler as API Gateway would.
async fn worker(State(st): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let req = match lambda_request(method, uri, &headers, &body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let resp = claim::handle(&st.app, req).await;
    http_response(resp)
}

/// `POST /telegram/webhook`: the webhook function's accept stage; a new update is processed
/// by a background task (on AWS: the queue table's stream).
async fn telegram_webhook(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match lambda_request(method, uri, &headers, &body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    // An enqueue asks for a reconcile cycle, as the queue table's stream does on AWS.
    let resp = webhook::handle_and_spawn_then(st.app.clone(), req, |out| {
        if out.outcome == "enqueued" {
            RECONCILE_WANTED.notify_one();
        }
    })
    .await;
    http_response(resp)
}

/// A Lambda API error: the status, `x-amzn-ErrorType`, and a body that both the AWS SDKs
/// (`Type`, `message`) and the runner's convention (`error.code`, `error.message`) read.
fn lambda_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header("x-amzn-ErrorType", error_type)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "Type": "User", "message": message, "error": { "code": error_type, "message": message } })
                .to_string(),
        ))
        .unwrap_or_default()
}

/// A Lambda API error before the function runs: status, `x-amzn-ErrorType`, message.
struct LambdaError(StatusCode, &'static str, String);

/// The hosted function that `FunctionName` (and the `Qualifier` query parameter) name, as
/// Lambda reads them: `name`, `name:qualifier`, `<account>:function:name[:qualifier]` or
/// `arn:<partition>:lambda:<region>:<account>:function:name[:qualifier]`. Only `$LATEST`
/// exists locally; any other qualifier is not found, as an unpublished version is on AWS.
fn resolve_function(raw: &str, query: Option<&str>) -> Result<Handler, LambdaError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, qualifier) = match parts.as_slice() {
        ["arn", _, "lambda", _, _, "function", name] => (*name, None),
        ["arn", _, "lambda", _, _, "function", name, q] => (*name, Some(*q)),
        [_, "function", name] => (*name, None),
        [_, "function", name, q] => (*name, Some(*q)),
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        _ => {
            return Err(LambdaError(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                format!("'{raw}' is not a function name, a qualified name or a function ARN"),
            ));
        }
    };
    let query_qualifier = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("Qualifier="));
    let query_qualifier = query_qualifier.map(|q| q.replace("%24", "$"));
    if let (Some(a), Some(b)) = (qualifier, query_qualifier.as_deref())
        && a != b
    {
        return Err(LambdaError(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "The derived qualifier from the function name does not match the specified qualifier.".into(),
        ));
    }
    let names: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
    let not_found = || {
        LambdaError(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!(
                "Function not found: {raw} (this runner invokes: {} at $LATEST; the worker routes are under /worker/)",
                names.join(", ")
            ),
        )
    };
    if qualifier.or(query_qualifier.as_deref()).is_some_and(|q| q != "$LATEST") {
        return Err(not_found());
    }
    FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h).ok_or_else(not_found)
}

/// The Lambda Invoke API. `X-Amz-Invocation-Type`: `RequestResponse` (default) answers 200 with
/// the result, or 200 with `X-Amz-Function-Error` and `{"errorType","errorMessage"}` as Lambda
/// reports a function error; `Event` answers 202 at once and runs the function in the
/// background; `DryRun` answers 204 and runs nothing.
async fn invoke(
    State(st): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let handler = match resolve_function(&name, uri.query()) {
        Ok(h) => h,
        Err(LambdaError(status, error_type, message)) => return lambda_error(status, error_type, &message),
    };
    let kind = headers.get("x-amz-invocation-type").map(|v| v.to_str().unwrap_or("?")).unwrap_or("RequestResponse");
    if !matches!(kind, "RequestResponse" | "Event" | "DryRun") {
        return lambda_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun",
        );
    }
    if kind == "DryRun" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let payload: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return lambda_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    &format!("Could not parse request body into json: {e}"),
                );
            }
        }
    };
    if kind == "Event" {
        let app = st.app.clone();
        tokio::spawn(async move {
            if let Err((error_type, _)) = handler(app, payload).await {
                tracing::warn!(function = %name, error_type, "asynchronous invocation failed");
            }
        });
        return StatusCode::ACCEPTED.into_response();
    }
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-amz-executed-version", "$LATEST");
    match handler(st.app.clone(), payload).await {
        Ok(v) => builder.body(Body::from(v.to_string())).unwrap_or_default(),
        Err((error_type, error_message)) => builder
            .header("x-amz-function-error", "Unhandled")
            .body(Body::from(json!({ "errorType": error_type, "errorMessage": error_message }).to_string()))
            .unwrap_or_default(),
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
