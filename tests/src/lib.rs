//! Test harness: a store on fresh tables in the DynamoDB named by `DYNAMODB_ENDPOINT`
//! (DynamoDB Local, started by `infra/scripts/test.sh`), with a manual clock.

use shared::clock::ManualClock;
use shared::config::{QueuePolicy, TableNames};
use shared::model::Payload;
use shared::queue::EnqueueArgs;
use shared::store::control::ConfigureAgentArgs;
use shared::store::counter::RequestCounter;
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
    env_with(QueuePolicy::default()).await
}

pub async fn env_with(policy: QueuePolicy) -> TestEnv {
    env_clocked(policy, None).await
}

/// Like [`env_with`], but on the system clock (for tests where real time passes).
pub async fn env_system(policy: QueuePolicy) -> TestEnv {
    env_clocked(policy, Some(Arc::new(shared::SystemClock))).await
}

async fn env_clocked(policy: QueuePolicy, clock_override: Option<shared::clock::SharedClock>) -> TestEnv {
    let counter = RequestCounter::new();
    let client = shared::store::dynamo_client(Some(&endpoint()), Some(counter.clone())).await;
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
