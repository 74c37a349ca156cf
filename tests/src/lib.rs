//! Test harness: a store on fresh tables in the DynamoDB named by `DYNAMODB_ENDPOINT`
//! (DynamoDB Local, started by `infra/scripts/test.sh`), with a manual clock.

pub mod fake_fly;
pub mod fake_provider;
pub mod fake_telegram;
pub mod load;
pub mod partition_writes;

use shared::adapters::dynamo::counter::RequestCounter;
use shared::agents::model::ConfigureAgentArgs;
use shared::clock::ManualClock;
use shared::config::{Policies, TableNames};
use shared::queue::EnqueueArgs;
use shared::queue::model::Payload;
use shared::workers::model::WorkerPolicy;
use shared::{AppError, Store};
use std::sync::Arc;

/// 2023-11-14T22:13:20Z: every test starts here.
pub const T0: i64 = 1_700_000_000_000;

pub struct TestEnv {
    pub store: Arc<Store>,
    pub clock: ManualClock,
    pub counter: RequestCounter,
    pub tables: TableNames,
}

pub fn endpoint() -> String {
    std::env::var("DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "DYNAMODB_ENDPOINT is not set: these tests run against DynamoDB Local. \
             Run them with `bash infra/scripts/test.sh`, which starts it."
        )
    })
}

/// Fresh tables (unique prefix) and a store whose clock starts at [`T0`].
pub async fn env() -> TestEnv {
    env_with(test_policies()).await
}

/// The `ready`/`due` shards of the semantic tests: two, so every unassigned claim scans both
/// (as a deployment does before its first reconcile cycle writes the ready hint) and the suite
/// stays fast on DynamoDB Local. The deployed default (64) with the ready hint is exercised by
/// `it::partitions`, the local runner's end-to-end tests and the benchmark.
pub const TEST_READY_SHARDS: u32 = 2;

/// The default policies with [`TEST_READY_SHARDS`].
pub fn test_policies() -> Policies {
    let mut p = Policies::default();
    p.queue.ready_shards = TEST_READY_SHARDS;
    p
}

/// One shard: the unassigned claim order (priority, due time, insertion) is global within a
/// shard, so the tests of that order run on one.
pub fn one_shard() -> Policies {
    let mut p = Policies::default();
    p.queue.ready_shards = 1;
    p
}

pub async fn env_with(policy: Policies) -> TestEnv {
    env_clocked(policy, None).await
}

/// Like [`env_with`], but on the system clock (for tests where real time passes).
pub async fn env_system(policy: Policies) -> TestEnv {
    env_clocked(policy, Some(Arc::new(shared::SystemClock))).await
}

async fn env_clocked(policy: Policies, clock_override: Option<shared::clock::SharedClock>) -> TestEnv {
    let counter = RequestCounter::new();
    let client = shared::adapters::dynamo::dynamo_client(Some(&endpoint()), Some(counter.clone())).await;
    // 64 random bits: test binaries share one DynamoDB Local, so prefixes must never repeat.
    let prefix = format!("t{:016x}-", shared::ids::random_u128() as u64);
    let tables = TableNames::with_prefix(&prefix);
    let clock = ManualClock::new(T0);
    let used: shared::clock::SharedClock = clock_override.unwrap_or_else(|| Arc::new(clock.clone()));
    let store = Arc::new(Store::new(client, tables.clone(), policy, used));
    store.create_tables().await.expect("create tables");
    counter.reset();
    TestEnv { store, clock, counter, tables }
}

impl TestEnv {
    /// Delete this environment's tables (DynamoDB Local slows down as its shared database grows).
    pub async fn drop_tables(self) {
        for name in [&self.tables.queue, &self.tables.workers, &self.tables.control] {
            let _ = self.store.client.delete_table().table_name(name).send().await;
        }
    }
}

pub fn payload(user: &str, text: &str) -> Payload {
    Payload {
        provider: "telegram".into(),
        provider_user_id: user.into(),
        message_text: text.into(),
        external_message_id: None,
        raw_update_json: None,
        metadata: None,
        attachments: None,
    }
}

pub fn enq(cid: &str, agent: &str, text: &str) -> EnqueueArgs {
    EnqueueArgs {
        conversation_id: cid.into(),
        agent_key: agent.into(),
        payload: payload("user-1", text),
        priority: None,
        scheduled_for: None,
        max_attempts: None,
    }
}

pub async fn seed_agent(store: &Store, agent: &str, enabled: bool) {
    store
        .configure_agent(ConfigureAgentArgs {
            agent_key: agent.into(),
            version: "1".into(),
            secrets_ref: vec![format!("telegram.botToken.{agent}")],
            enabled,
            bot_identity: None,
            bridge_config: None,
        })
        .await
        .expect("seed agent");
}

/// Every item of a table, for "nothing changed" assertions.
pub async fn dump(store: &Store, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = store
            .client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scan");
        for i in page.items.unwrap_or_default() {
            // serde_json's maps are ordered, so equal items print equally.
            let v: serde_json::Value = serde_dynamo::from_item(i).expect("item as JSON");
            out.push(v.to_string());
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    out.sort();
    out
}

/// The whole stored state (all three tables).
pub async fn snapshot(e: &TestEnv) -> Vec<String> {
    let mut v = dump(&e.store, &e.tables.queue).await;
    v.extend(dump(&e.store, &e.tables.workers).await);
    v.extend(dump(&e.store, &e.tables.control).await);
    v
}

pub fn code(e: &AppError) -> &'static str {
    e.code().as_str()
}

/// The moto_server (Secrets Manager, S3, Scheduler) that `infra/scripts/test.sh` starts.
pub fn moto_endpoint() -> String {
    std::env::var("MOTO_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "MOTO_ENDPOINT is not set: these tests run against moto_server. \
             Run them with `bash infra/scripts/test.sh`, which starts it."
        )
    })
}

/// A test environment with the whole application: store, an in-memory secret store and a
/// directory blob store (served through [`AppEnv::blob`]), and a worker authenticator.
pub struct AppEnv {
    pub e: TestEnv,
    pub app: shared::app::App,
    pub blobs: Arc<shared::adapters::blob_local::LocalBlobs>,
    pub secrets_backend: Arc<shared::adapters::secrets_file::FileSecretBackend>,
    pub blob_dir: std::path::PathBuf,
}

/// [`AppEnv`] with the default policy, except that verified tokens are never cached (so a
/// revocation shows at once; the cache has its own test).
pub async fn app_env() -> AppEnv {
    app_env_with(Policies { workers: WorkerPolicy { auth_cache_ms: 0, ..WorkerPolicy::default() }, ..test_policies() })
        .await
}

pub async fn app_env_with(policy: Policies) -> AppEnv {
    let e = env_with(policy).await;
    let blob_dir = std::env::temp_dir().join(format!("af-blobs-{:016x}", shared::ids::random_u128() as u64));
    std::fs::create_dir_all(&blob_dir).expect("blob dir");
    let blobs = Arc::new(
        shared::adapters::blob_local::LocalBlobs::open(&blob_dir, "http://127.0.0.1:1").expect("local blob store"),
    );
    let secrets_backend = Arc::new(shared::adapters::secrets_file::FileSecretBackend::memory());
    let clock: shared::clock::SharedClock = Arc::new(e.clock.clone());
    let secrets = shared::secrets::Secrets::new(secrets_backend.clone(), clock, e.store.policy.secrets.cache_ms);
    let app = shared::app::App::new(e.store.clone(), secrets, blobs.clone());
    AppEnv { e, app, blobs, secrets_backend, blob_dir }
}

impl AppEnv {
    /// Register a worker and mint its token.
    pub async fn mint(&self, worker_id: &str) -> String {
        let m = self
            .e
            .store
            .mint_worker_token(&shared::workers::model::MintTokenArgs {
                worker_id: worker_id.into(),
                provider: Some("fly".into()),
            })
            .await
            .expect("mint token");
        m.token
    }

    /// Store a secret directly in the backend.
    pub async fn secret(&self, secret_ref: &str, value: &str) {
        use shared::secrets::SecretBackend;
        self.secrets_backend
            .put(secret_ref, &shared::secrets::SecretValue::new(value), &Default::default())
            .await
            .expect("put secret");
        self.app.secrets.forget(secret_ref);
    }

    /// Send one request to a blob URL the way an HTTP client would (through the local store's
    /// server side): returns status and body.
    pub async fn blob(&self, method: &str, url: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Vec<u8>) {
        let path = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let path_and_query = &path[path.find('/').unwrap_or(0)..];
        let r =
            self.blobs.serve(method, path_and_query, content_type, body, shared::Clock::now_ms(&self.e.clock)).await;
        (r.status, r.body)
    }
}

impl AppEnv {
    /// The `cleanup` function's context on this application, with Fly at `fly_api_base`
    /// (deployment `dep-a`, app `app1`, fast timeouts).
    pub fn cleanup_ctx_at(&self, fly_api_base: &str) -> shared::cleanup::ops::CleanupCtx {
        let options = shared::adapters::fly::FlyOptions {
            request_timeout: std::time::Duration::from_millis(700),
            wait_secs: 1,
            retry: shared::reconcile::fly_rules::RetryPolicy {
                max_attempts: 3,
                base_backoff: std::time::Duration::from_millis(20),
                max_backoff: std::time::Duration::from_millis(80),
                max_retry_after: std::time::Duration::from_secs(3),
            },
            limits: shared::reconcile::fly_rules::RateLimits {
                read: (1000.0, 1000.0),
                mutate: (1000.0, 1000.0),
                create: (1000.0, 1000.0),
            },
        };
        shared::cleanup::ops::CleanupCtx::new(
            self.app.clone(),
            shared::adapters::fly::FlySettings {
                api_base: fly_api_base.to_string(),
                deployment_id: "dep-a".into(),
                app_name: Some("app1".into()),
                options,
            },
        )
    }

    /// Invoke the `cleanup` function (its sweeps need no Fly: nothing listens at its address).
    pub async fn cleanup(&self, payload: serde_json::Value) -> shared::AppResult<serde_json::Value> {
        cleanup::handle(&self.cleanup_ctx_at("http://127.0.0.1:9/v1"), payload).await
    }
}

impl Drop for AppEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.blob_dir);
    }
}

/// A test fixture file (`tests/fixtures/<name>`).
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

/// An API Gateway v2 event for `<method> <path>` with `body` and an optional bearer token.
pub fn apigw(method: &str, path: &str, token: Option<&str>, body: &str) -> lambda_http::Request {
    use serde_json::{Value, json};
    let mut ev: Value = serde_json::from_str(&fixture("apigw-v2-worker-claim.json")).unwrap();
    ev["rawPath"] = json!(path);
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["requestContext"]["http"]["method"] = json!(method);
    ev["pathParameters"]["op"] = json!(path.rsplit('/').next().unwrap());
    ev["body"] = json!(body);
    ev["headers"]["content-length"] = json!(body.len().to_string());
    match token {
        Some(t) => ev["headers"]["authorization"] = json!(format!("Bearer {t}")),
        None => {
            ev["headers"].as_object_mut().unwrap().remove("authorization");
        }
    }
    lambda_http::request::from_str(&ev.to_string()).expect("a valid API Gateway v2 event")
}

/// Status and JSON body of a `claim` function response.
pub fn parts(r: lambda_http::Response<lambda_http::Body>) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = match r.into_body() {
        lambda_http::Body::Text(t) => t,
        other => panic!("unexpected body {other:?}"),
    };
    (status, serde_json::from_str(&body).expect("JSON body"))
}

impl AppEnv {
    /// One worker call through the `claim` function's handler, as API Gateway delivers it.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        parts(claim::handle(&self.app, apigw(method, path, token, &body.to_string())).await)
    }

    /// `POST /worker/<op>` with a token.
    pub async fn post(&self, op: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call("POST", &format!("/worker/{op}"), Some(token), body).await
    }
}

/// A buffer a log subscriber writes into (for "never in the logs" checks).
#[derive(Clone, Default)]
pub struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture every log event of this thread (TRACE and up) until the guard drops.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let buf = Captured::default();
    let writer = buf.clone();
    let sub =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    (buf, tracing::subscriber::set_default(sub))
}

/// A Secrets Manager backend on moto_server with a name prefix of its own, so tests never share
/// secrets.
pub async fn moto_secrets() -> shared::adapters::secrets_manager::SecretsManagerBackend {
    let prefix = format!("t{:x}/", shared::ids::random_u128() as u64);
    shared::adapters::secrets_manager::SecretsManagerBackend::from_env_or(Some(&moto_endpoint()), &prefix).await
}

/// Run one secret op through the envelope's op table, on `store` with the secret store `s`
/// (blob storage unused by these ops: a throwaway directory).
pub async fn secret_op(
    store: &Arc<Store>,
    s: &shared::secrets::Secrets,
    name: &str,
    args: serde_json::Value,
) -> shared::AppResult<serde_json::Value> {
    assert!(shared::envelope::op_names(&[&shared::secrets::ops::TABLE]).contains(&name), "{name} is a secret op");
    let dir = std::env::temp_dir().join("af-blobs-unused");
    let blobs = Arc::new(shared::adapters::blob_local::LocalBlobs::open(&dir, "http://127.0.0.1:1").expect("blobs"));
    let app = shared::app::App::new(store.clone(), s.clone(), blobs);
    shared::envelope::dispatch(&app, &[&shared::secrets::ops::TABLE], shared::envelope::Envelope::new(name, args)).await
}

/// Invoke the function that serves `payload.op`, as its caller would: `enqueue` (producer ops),
/// `api` (end-user ops; trusted-backend mode unless the policy sets a user-token key) or `admin`
/// (everything else, and unknown ops).
pub async fn invoke(app: &shared::app::App, payload: serde_json::Value) -> Result<serde_json::Value, AppError> {
    let op = payload.get("op").and_then(|v| v.as_str()).unwrap_or_default();
    if enqueue::op_names().contains(&op) {
        enqueue::handle(app, payload).await
    } else if api::op_names().contains(&op) {
        api::handle(app, payload).await
    } else {
        admin::handle(app, payload).await
    }
}

/// Every op of every op-envelope function (`enqueue`, `admin`, `api`, `cleanup`).
pub fn all_op_names() -> Vec<&'static str> {
    [enqueue::op_names(), admin::op_names(), api::op_names(), cleanup::op_names()].concat()
}
