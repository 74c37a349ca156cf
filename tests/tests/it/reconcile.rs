//! The `reconcile` function against an in-memory fake provider (fault injection) and DynamoDB
//! Local, through its real entry points: op envelopes, DynamoDB stream event JSON, the scheduled
//! event. After every scenario: no machine running without a row, no row claiming a machine
//! that is gone, never above `maxWorkers`.

use integration_tests::fake_provider::{FakeProvider, unavailable};
use integration_tests::*;
use serde_json::{Value, json};
use shared::reconcile::cycle::{ProviderFactory, Reconciler};
use shared::reconcile::model::ProviderRuntimeConfig;
use shared::reconcile::provider::{DEPLOYMENT_TAG, Machine, MachineState, WORKER_TAG, WorkerProvider};
use shared::workers::model::WorkerStatus;
use std::collections::BTreeMap;
use std::sync::Arc;

const DEP: &str = "dep-test";

struct Fixed(Arc<FakeProvider>);

impl ProviderFactory for Fixed {
    fn provider(&self, _cfg: &ProviderRuntimeConfig) -> shared::AppResult<Arc<dyn WorkerProvider>> {
        Ok(self.0.clone())
    }
}

struct Rig {
    a: AppEnv,
    r: Reconciler,
    fake: Arc<FakeProvider>,
    max: u32,
}

async fn rig(max: u32) -> Rig {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let fake = Arc::new(FakeProvider::new());
    let r = Reconciler { app: a.app.clone(), deployment: DEP.into(), providers: Arc::new(Fixed(fake.clone())) };
    let rig = Rig { a, r, fake, max };
    let cfg = json!({"kind": "fly", "appName": "app", "image": "img:1", "region": "fra",
                     "apiBaseUrl": "https://af.example", "volumeSizeGb": 1});
    rig.op("setProviderRuntimeConfig", json!({"config": cfg, "expectedVersion": 0})).await.unwrap();
    rig.op("setScalingPolicy", json!({"policy": {"maxWorkers": max, "spawnStep": 10}, "expectedVersion": 0}))
        .await
        .unwrap();
    rig
}

impl Rig {
    async fn op(&self, op: &str, args: Value) -> Result<Value, shared::AppError> {
        reconcile::handle(&self.r, json!({"op": op, "args": args})).await
    }

    /// One cycle through the op envelope, after the minimum interval.
    async fn cycle(&self) -> Value {
        self.a.e.clock.advance(5_000);
        self.op("reconcileWorkerPool", json!({})).await.unwrap()
    }

    async fn enqueue(&self, cid: &str) {
        self.a.e.store.enqueue(enq(cid, "bot", "hi")).await.unwrap();
    }

    async fn live(&self) -> Vec<shared::workers::model::WorkerItem> {
        self.a.e.store.live_workers().await.unwrap()
    }

    /// The invariants that hold after every scenario.
    async fn check(&self) {
        let rows = self.live().await;
        let alive = self.fake.alive();
        let tagged: Vec<&Machine> =
            alive.iter().filter(|m| m.metadata.get(DEPLOYMENT_TAG).map(String::as_str) == Some(DEP)).collect();
        assert!(tagged.len() as u32 <= self.max, "{} machines alive, cap {}", tagged.len(), self.max);
        for m in &tagged {
            if m.state == MachineState::Active {
                assert!(
                    rows.iter().any(|w| w.machine_id.as_deref() == Some(&m.id) || w.worker_id == m.name),
                    "machine {} runs without a row",
                    m.id
                );
            }
        }
        for w in rows.iter().filter(|w| w.status != WorkerStatus::Stopping) {
            if let Some(mid) = &w.machine_id {
                assert!(alive.iter().any(|m| &m.id == mid), "row {} claims machine {mid}, which is gone", w.worker_id);
            }
        }
    }
}

fn conversations(rows: &[shared::workers::model::WorkerItem]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().filter_map(|w| w.assigned_conversation_id.clone()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn scale_up_from_a_burst_respects_max_workers_and_pre_assigns() {
    let g = rig(3).await;
    for i in 0..5 {
        g.enqueue(&format!("c{i}")).await;
        g.enqueue(&format!("c{i}")).await;
    }
    let rep = g.cycle().await;
    assert_eq!(rep["spawned"], 3, "{rep}");
    assert_eq!(rep["unserved"], 2);
    let rows = g.live().await;
    assert_eq!(rows.len(), 3);
    let mut convs = conversations(&rows);
    convs.dedup();
    assert_eq!(convs.len(), 3, "one machine per conversation: {convs:?}");
    // The env: pre-assigned, a bootstrap code, no long-lived token.
    let w = &rows[0];
    let env = g.fake.env_of(w.machine_id.as_deref().unwrap());
    assert_eq!(env["WORKER_ID"], w.worker_id);
    assert_eq!(env.get("OPENCLAW_CONVERSATION_ID"), w.assigned_conversation_id.as_ref());
    assert!(env["AGENT_FACTORY_BOOTSTRAP_CODE"].starts_with("afb1."));
    assert!(env.values().all(|v| !v.starts_with("afw1.")), "no worker token in the env");
    assert!(w.volume_id.is_some());
    // Again: nothing more (sticky, capped).
    let rep = g.cycle().await;
    assert_eq!(rep["spawned"], 0, "{rep}");
    assert_eq!(g.fake.alive().len(), 3);
    g.check().await;
}

#[tokio::test]
async fn the_bootstrap_code_works_once_and_expires() {
    let g = rig(1).await;
    g.enqueue("c1").await;
    g.cycle().await;
    let w = g.live().await.remove(0);
    let code = g.fake.env_of(w.machine_id.as_deref().unwrap())["AGENT_FACTORY_BOOTSTRAP_CODE"].clone();
    let (st, body) = g.a.call("POST", "/worker/bootstrap", None, json!({"code": code})).await;
    assert_eq!(st, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["workerId"], w.worker_id.as_str());
    let (st, claimed) = g.a.post("claim", &token, json!({"conversationId": "c1"})).await;
    assert_eq!(st, 200);
    assert_eq!(claimed["conversationId"], "c1");
    let (st, _) = g.a.call("POST", "/worker/bootstrap", None, json!({"code": code})).await;
    assert_eq!(st, 401, "a code works once");
    // An expired one is refused.
    let code2 = g.a.e.store.create_bootstrap_code(&w.worker_id, 60_000).await.unwrap();
    g.a.e.clock.advance(60_001);
    let (st, _) = g.a.call("POST", "/worker/bootstrap", None, json!({"code": code2.expose()})).await;
    assert_eq!(st, 401);
    let (st, _) = g.a.post("claim", &token, json!({"conversationId": "c1"})).await;
    assert_eq!(st, 200, "the refused redemption changed nothing");
}

/// Redeem the worker's bootstrap code: its token.
async fn boot(g: &Rig, w: &shared::workers::model::WorkerItem) -> String {
    let code = g.fake.env_of(w.machine_id.as_deref().unwrap())["AGENT_FACTORY_BOOTSTRAP_CODE"].clone();
    g.a.e.store.redeem_bootstrap_code(&code).await.unwrap().token
}

#[tokio::test]
async fn scale_down_on_idle_thirty_minutes_after_the_last_job() {
    let g = rig(2).await;
    g.enqueue("c1").await;
    g.cycle().await;
    let w = g.live().await.remove(0);
    let token = boot(&g, &w).await;
    let (_, job) = g.a.post("claim", &token, json!({"conversationId": "c1"})).await;
    g.a.e.clock.advance(60_000);
    let (st, _) = g.a.post("complete", &token, json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await;
    assert_eq!(st, 200);
    // Idle, heartbeating every 5 min: kept until 30 min after the completion.
    for _ in 0..5 {
        g.a.e.clock.advance(300_000);
        g.a.post("worker-heartbeat", &token, json!({})).await;
        let rep = g.cycle().await;
        assert_eq!(rep["drained"], 0, "{rep}");
    }
    g.a.e.clock.advance(300_000);
    g.a.post("worker-heartbeat", &token, json!({})).await;
    let rep = g.cycle().await;
    assert_eq!(rep["drained"], 1, "{rep}");
    let row = g.a.e.store.get_worker(&w.worker_id).await.unwrap().unwrap();
    assert_eq!(row.status, WorkerStatus::Draining);
    // It never snapshots: stopped at the drain deadline (10 min), machine and volume deleted.
    g.a.e.clock.advance(300_000);
    assert_eq!(g.cycle().await["tornDown"], 0);
    g.a.e.clock.advance(300_000);
    let rep = g.cycle().await;
    assert_eq!(rep["tornDown"], 1, "{rep}");
    assert!(g.fake.alive().is_empty());
    assert!(g.fake.volumes().is_empty());
    let row = g.a.e.store.get_worker(&w.worker_id).await.unwrap().unwrap();
    assert_eq!(row.status, WorkerStatus::Stopped);
    assert!(row.machine_id.is_none() && row.token_hash.is_none());
    g.check().await;
}

#[tokio::test]
async fn a_crashed_worker_is_replaced_and_its_machine_destroyed() {
    let g = rig(2).await;
    g.enqueue("c1").await;
    g.cycle().await;
    let w = g.live().await.remove(0);
    let token = boot(&g, &w).await;
    let (_, job) = g.a.post("claim", &token, json!({"conversationId": "c1"})).await;
    assert!(job["messageId"].is_string());
    // The worker hangs: no heartbeat for 7 minutes. The lease (6 min) is released by the cycle,
    // the worker drained as stale and the conversation gets a new machine.
    g.a.e.clock.advance(420_000);
    let rep = g.cycle().await;
    assert_eq!(rep["leasesReleased"], 1, "{rep}");
    assert_eq!(rep["drained"], 1, "{rep}");
    assert_eq!(rep["spawned"], 1, "the retry (due in 1 s) gets its machine now: {rep}");
    let rows = g.live().await;
    let fresh = rows.iter().find(|x| x.status == WorkerStatus::Active).unwrap();
    assert_eq!(fresh.assigned_conversation_id.as_deref(), Some("c1"));
    let t2 = boot(&g, fresh).await;
    g.a.e.clock.advance(2_000);
    let (_, job2) = g.a.post("claim", &t2, json!({"conversationId": "c1"})).await;
    assert_eq!(job2["messageId"], job["messageId"], "the replacement takes the message over");
    // The hung machine is destroyed after the drain deadline; the cap was never exceeded.
    g.a.e.clock.advance(600_000);
    g.a.post("worker-heartbeat", &t2, json!({})).await;
    let rep = g.cycle().await;
    assert_eq!(rep["tornDown"], 1, "{rep}");
    assert_eq!(g.fake.alive().len(), 1);
    g.check().await;
    // The stopped row is not read by cycles any more and expires after the retention.
    let stopped = g.op("listWorkers", json!({"status": "stopped"})).await.unwrap();
    let id = stopped["workers"][0]["workerId"].as_str().unwrap().to_string();
    let row = g.a.e.store.get_worker(&id).await.unwrap().unwrap();
    let at = row.stopped_at.unwrap();
    assert_eq!(row.ttl, Some(shared::workers::model::stopped_ttl(at)));
    assert_eq!(row.ttl.unwrap() * 1000 - at, shared::workers::model::STOPPED_RETENTION_MS);
}

#[tokio::test]
async fn provider_outage_mid_cycle_loses_no_row_and_stops_nothing_unconfirmed() {
    let g = rig(2).await;
    g.enqueue("c1").await;
    g.enqueue("c2").await;
    g.cycle().await;
    let before = g.live().await;
    assert_eq!(before.len(), 2);
    // Both workers exit; then the provider is down: no listing, no action.
    for w in &before {
        g.fake.exit(w.machine_id.as_deref().unwrap());
    }
    g.fake.outage.store(true, std::sync::atomic::Ordering::SeqCst);
    let rep = g.cycle().await;
    assert_eq!(rep["providerErrors"], 1, "{rep}");
    let after = g.live().await;
    assert_eq!(after.iter().filter(|w| w.status == WorkerStatus::Active).count(), 2, "rows untouched");
    g.fake.outage.store(false, std::sync::atomic::Ordering::SeqCst);
    // Destroys fail with 5xx (the original read "internal server error" as gone), volumes 429.
    g.fake.fail_next("destroy_machine", 1, unavailable(500));
    g.fake.rate_limited.store(0, std::sync::atomic::Ordering::SeqCst);
    let rep = g.cycle().await;
    assert_eq!(rep["providerErrors"], 1, "{rep}");
    assert_eq!(rep["tornDown"], 1, "the other worker is not held up (W-S4): {rep}");
    let mut old = Vec::new();
    for w in &before {
        old.push(g.a.e.store.get_worker(&w.worker_id).await.unwrap().unwrap());
    }
    let kept: Vec<_> = old.iter().filter(|w| w.status == WorkerStatus::Stopping).collect();
    assert_eq!(kept.len(), 1, "one row still stopping: not marked stopped while its machine may exist");
    let kept = kept[0].clone();
    assert!(g.fake.alive().iter().any(|m| Some(&m.id) == kept.machine_id.as_ref()));
    let vols: Vec<String> = g.fake.volumes().into_iter().map(|v| v.id).collect();
    assert!(vols.contains(kept.volume_id.as_ref().unwrap()), "its volume is kept until the machine is confirmed gone");
    // A machine vanishing and a volume delete 404: both mean gone.
    g.fake.vanish(kept.machine_id.as_deref().unwrap());
    g.fake.fail_next("delete_volume", 1, shared::reconcile::provider::ProviderError::NotFound { what: "vol".into() });
    let rep = g.cycle().await;
    assert_eq!(rep["tornDown"], 1, "{rep}");
    for w in &before {
        let row = g.a.e.store.get_worker(&w.worker_id).await.unwrap().unwrap();
        assert_eq!(row.status, WorkerStatus::Stopped);
    }
    // The conversations still have work: replacements, within the cap.
    g.cycle().await;
    assert_eq!(g.live().await.len(), 2);
    g.check().await;
}

#[tokio::test]
async fn a_machine_stuck_in_stopping_is_force_destroyed() {
    let g = rig(1).await;
    g.enqueue("c1").await;
    g.cycle().await;
    let w = g.live().await.remove(0);
    let mid = w.machine_id.clone().unwrap();
    g.fake.stick_in_stopping(&mid);
    let rep = g.cycle().await;
    assert_eq!(rep["tornDown"], 1, "{rep}");
    assert!(g.fake.alive().is_empty());
    g.check().await;
}

#[tokio::test]
async fn two_concurrent_cycles_act_once() {
    let g = rig(4).await;
    for i in 0..4 {
        g.enqueue(&format!("c{i}")).await;
    }
    g.a.e.clock.advance(5_000);
    let r2 = Reconciler { app: g.a.app.clone(), deployment: DEP.into(), providers: Arc::new(Fixed(g.fake.clone())) };
    let (a, b) = tokio::join!(
        reconcile::handle(&g.r, json!({"op": "reconcileWorkerPool"})),
        reconcile::handle(&r2, json!({"op": "reconcileWorkerPool"}))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a["spawned"].as_u64().unwrap() + b["spawned"].as_u64().unwrap(), 4, "{a} {b}");
    let rows = g.live().await;
    assert_eq!(rows.len(), 4);
    let mut convs = conversations(&rows);
    convs.dedup();
    assert_eq!(convs.len(), 4, "no conversation got two machines");
    assert_eq!(g.fake.alive().len(), 4);
    g.check().await;
}

fn tagged_machine(id: &str, name: &str, dep: Option<&str>) -> Machine {
    let mut md = BTreeMap::new();
    if let Some(d) = dep {
        md.insert(DEPLOYMENT_TAG.to_string(), d.to_string());
        md.insert(WORKER_TAG.to_string(), name.to_string());
    }
    Machine {
        id: id.into(),
        name: name.into(),
        region: "fra".into(),
        image: "img".into(),
        state: MachineState::Active,
        raw_state: "started".into(),
        metadata: md,
        volume_ids: vec![],
    }
}

#[tokio::test]
async fn orphans_are_destroyed_after_a_grace_untagged_and_foreign_ones_never() {
    let g = rig(5).await;
    let now = shared::Clock::now_ms(&g.a.e.clock);
    let old = shared::reconcile::rules::new_worker_id(now - 600_000, 1, 0);
    let young = shared::reconcile::rules::new_worker_id(now, 1, 0);
    g.fake.put_machine(tagged_machine("orphan-old", &old, Some(DEP)));
    g.fake.put_machine(tagged_machine("orphan-young", &young, Some(DEP)));
    g.fake.put_machine(tagged_machine("web", "web", None));
    g.fake.put_machine(tagged_machine("other", &old, Some("another-deployment")));
    let rep = g.cycle().await;
    assert_eq!(rep["orphansDestroyed"], 1, "{rep}");
    let ids: Vec<String> = g.fake.alive().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["orphan-young", "other", "web"]);
    g.a.e.clock.advance(300_000);
    let rep = g.cycle().await;
    assert_eq!(rep["orphansDestroyed"], 1, "{rep}");
    let ids: Vec<String> = g.fake.alive().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["other", "web"]);
    g.check().await;
}

#[tokio::test]
async fn policy_and_provider_config_are_validated_and_versioned() {
    let g = rig(1).await;
    let p = g.op("getScalingPolicy", json!({})).await.unwrap();
    assert_eq!(p["version"], 1);
    assert_eq!(p["value"]["maxWorkers"], 1);
    // A stale version is refused and writes nothing.
    let e = g.op("setScalingPolicy", json!({"policy": {"maxWorkers": 9}, "expectedVersion": 0})).await.unwrap_err();
    assert_eq!(code(&e), "Conflict");
    let e = g
        .op("setScalingPolicy", json!({"policy": {"maxWorkers": 1, "minWorkers": 2}, "expectedVersion": 1}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError");
    let e = g.op("setScalingPolicy", json!({"policy": {"maxWorkrs": 1}, "expectedVersion": 1})).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError");
    assert_eq!(g.op("getScalingPolicy", json!({})).await.unwrap()["version"], 1);
    let p = g.op("setScalingPolicy", json!({"policy": {"maxWorkers": 3}, "expectedVersion": 1})).await.unwrap();
    assert_eq!(p["version"], 2);
    // Scheduled work reads it and never writes it back.
    g.enqueue("c1").await;
    reconcile::handle(&g.r, json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}))
        .await
        .unwrap();
    assert_eq!(g.fake.alive().len(), 1);
    assert_eq!(g.op("getScalingPolicy", json!({})).await.unwrap()["version"], 2);
    assert_eq!(g.op("getProviderRuntimeConfig", json!({})).await.unwrap()["version"], 1);
    let e = g
        .op(
            "setProviderRuntimeConfig",
            json!({"config": {"kind": "fly", "appName": "app", "apiBaseUrl": "https://x"}, "expectedVersion": 1}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "fly needs an image and a region");
}

/// A DynamoDB stream record of the queue table, as Lambda delivers it.
fn stream_record(seq: u64, sk: &str, ready_shard: &str, ready_at: bool) -> Value {
    let mut img = json!({"pk": {"S": "C#c1"}, "sk": {"S": sk}, "conversationId": {"S": "c1"},
                         "readyShard": {"S": ready_shard}, "openCount": {"N": "1"}});
    if ready_at {
        img["readyAt"] = json!({"N": "1700000000000"});
    }
    json!({
        "eventID": format!("e{seq}"), "eventName": "MODIFY", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "eu-west-1",
        "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/q/stream/2024-01-01T00:00:00.000",
        "dynamodb": {"ApproximateCreationDateTime": 1700000000.0, "Keys": {"pk": {"S": "C#c1"}, "sk": {"S": sk}},
                     "NewImage": img, "SequenceNumber": format!("{seq:021}"), "SizeBytes": 100,
                     "StreamViewType": "NEW_AND_OLD_IMAGES"}
    })
}

#[tokio::test]
async fn stream_batches_trigger_cycles_only_when_capacity_may_be_needed_and_coalesce() {
    let g = rig(3).await;
    // Coalesced triggers wait out the interval (real time; the test clock stands still).
    g.op(
        "setScalingPolicy",
        json!({"policy": {"maxWorkers": 3, "spawnStep": 10, "minCycleIntervalMs": 200}, "expectedVersion": 1}),
    )
    .await
    .unwrap();
    g.enqueue("c1").await;
    g.a.e.clock.advance(5_000);
    // A message item and a locked conversation: no cycle.
    let ev = json!({"Records": [stream_record(1, "M#01", "r0", false), stream_record(2, "CONV", "l0", true)]});
    let out = reconcile::handle(&g.r, ev).await.unwrap();
    assert_eq!(out["batchItemFailures"], json!([]));
    assert_eq!(g.a.e.store.reconcile_state().await.unwrap().cycles, 0);
    // A due conversation (what an enqueue into an idle conversation writes): one cycle, machine
    // spawned.
    let ev = json!({"Records": [stream_record(3, "CONV", "d0", true)]});
    let out = reconcile::handle(&g.r, ev).await.unwrap();
    assert_eq!(out["batchItemFailures"], json!([]));
    assert_eq!(g.fake.alive().len(), 1);
    // A burst: 1,000 enqueues, each followed by its stream batch, 50 at a time in parallel
    // (within the minimum interval): a handful of cycles, not 1,000.
    let before = g.a.e.store.reconcile_state().await.unwrap().cycles;
    g.a.e.clock.advance(5_000);
    for round in 0..20u64 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..50u64 {
            let r = g.r.clone();
            let store = g.a.e.store.clone();
            set.spawn(async move {
                // DynamoDB Local times out transactions that wait on one item (every enqueue
                // checks the agent profile) under load, "would succeed on DynamoDB": retry those.
                let mut tries = 0;
                while let Err(e) = store.enqueue(enq(&format!("b{round}-{i}"), "bot", "x")).await {
                    tries += 1;
                    assert!(tries < 10 && code(&e) == "Internal", "{e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                let ev = json!({"Records": [stream_record(round * 50 + i + 10, "CONV", "r0", true)]});
                reconcile::handle(&r, ev).await.unwrap()
            });
        }
        while let Some(x) = set.join_next().await {
            assert_eq!(x.unwrap()["batchItemFailures"], json!([]));
        }
    }
    let cycles = g.a.e.store.reconcile_state().await.unwrap().cycles - before;
    println!("1,000 enqueues with their stream batches: {cycles} cycles");
    assert!((1..=5).contains(&cycles), "{cycles} cycles for 1,000 triggers");
    // What was left flagged is served by the next trigger after the interval.
    g.a.e.clock.advance(5_000);
    reconcile::handle(&g.r, json!({"Records": [stream_record(5_000, "CONV", "r0", true)]})).await.unwrap();
    assert_eq!(g.fake.alive().len(), 3, "capped at maxWorkers");
    assert!(!g.a.e.store.reconcile_state().await.unwrap().dirty);
    // A batch whose cycle fails is reported failed from its first record (Lambda retries it,
    // bisecting): here the stored provider kind has no provider.
    struct NoProvider;
    impl ProviderFactory for NoProvider {
        fn provider(&self, cfg: &ProviderRuntimeConfig) -> shared::AppResult<Arc<dyn WorkerProvider>> {
            Err(shared::AppError::internal(format!("no provider {}", cfg.kind)))
        }
    }
    let broken = Reconciler { app: g.a.app.clone(), deployment: DEP.into(), providers: Arc::new(NoProvider) };
    g.a.e.clock.advance(5_000);
    let ev = json!({"Records": [stream_record(7_001, "CONV", "r0", true), stream_record(7_002, "CONV", "r0", true)]});
    let out = reconcile::handle(&broken, ev).await.unwrap();
    assert_eq!(out["batchItemFailures"], json!([{"itemIdentifier": format!("{:021}", 7_001)}]));
    g.check().await;
}

#[tokio::test]
async fn list_workers_pages_and_stats_count_the_live_pool() {
    let g = rig(5).await;
    for i in 0..5 {
        g.enqueue(&format!("c{i}")).await;
    }
    g.cycle().await;
    let p1 = g.op("listWorkers", json!({"limit": 2})).await.unwrap();
    assert_eq!(p1["workers"].as_array().unwrap().len(), 2);
    assert!(p1["workers"][0].get("tokenHash").is_none());
    let p2 = g.op("listWorkers", json!({"limit": 2, "cursor": p1["nextCursor"]})).await.unwrap();
    let p3 = g.op("listWorkers", json!({"limit": 2, "cursor": p2["nextCursor"]})).await.unwrap();
    let mut ids: Vec<Value> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| p["workers"].as_array().unwrap().clone())
        .map(|w| w["workerId"].clone())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    let e = g.op("listWorkers", json!({"cursor": "nope"})).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError");
    let s = g.op("getWorkerStats", json!({})).await.unwrap();
    assert_eq!(s["byStatus"]["active"], 5);
    assert_eq!(s["idleCount"], 5);
    assert!(s["reconcile"]["cycles"].as_u64().unwrap() >= 1);
    // Spec §11: the active workers, each with its machine.
    let ws = s["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 5);
    for w in ws {
        assert_eq!((w["status"].as_str(), w["load"].as_i64()), (Some("active"), Some(0)), "{w}");
        assert!(w["heartbeatAt"].is_i64() && w.get("machineId").is_some() && w.get("appName").is_some(), "{w}");
    }
}

/// Put `n` stopped worker rows (the history a cycle must never read).
async fn stopped_history(g: &Rig, n: usize) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    let rows: Vec<WriteRequest> = (0..n)
        .map(|i| {
            let w = json!({"workerId": format!("old-{i}-{}", shared::ids::random_u128() as u32), "provider": "fly",
                           "status": "stopped", "load": 0, "heartbeatAt": 1, "appName": "app", "stoppedAt": 2});
            let item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
                serde_dynamo::to_item(w).unwrap();
            WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
        })
        .collect();
    for chunk in rows.chunks(25) {
        g.a.e
            .store
            .client
            .batch_write_item()
            .request_items(&g.a.e.tables.workers, chunk.to_vec())
            .send()
            .await
            .unwrap();
    }
}

/// Requests of one steady-state cycle (pool at the cap, nothing to do).
async fn cycle_cost(g: &Rig) -> (u64, std::collections::BTreeMap<String, u64>) {
    g.a.e.clock.advance(5_000);
    g.a.e.counter.reset();
    let rep = g.op("reconcileWorkerPool", json!({})).await.unwrap();
    assert_eq!(rep["spawned"], 0, "{rep}");
    (g.a.e.counter.total(), g.a.e.counter.by_operation())
}

#[tokio::test]
async fn cycle_cost_does_not_grow_with_queued_messages_or_stopped_history() {
    let g = rig(2).await;
    for i in 0..100 {
        g.enqueue(&format!("c{}", i % 10)).await;
    }
    g.cycle().await;
    stopped_history(&g, 10).await;
    let (small, ops) = cycle_cost(&g).await;
    // 20x the queue (over more conversations than one demand read takes) and 100x the history.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..1_900 {
        let store = g.a.e.store.clone();
        set.spawn(async move { store.enqueue(enq(&format!("d{}", i % 400), "bot", "x")).await.unwrap() });
        if set.len() >= 32 {
            set.join_next().await;
        }
    }
    while set.join_next().await.is_some() {}
    stopped_history(&g, 990).await;
    let (big, ops_big) = cycle_cost(&g).await;
    println!(
        "cycle cost: {small} requests at 100 queued / 10 stopped rows ({ops:?}); {big} at 2,000 queued / 1,000 stopped ({ops_big:?})"
    );
    assert_eq!(small, big, "{ops:?} vs {ops_big:?}");
    // Per shard: the sweep reads `r<n>` and `l<n>`, the demand read `d<n>`, `r<n>`, `l<n>`; the
    // live rows behind the keys-only workers index: one BatchGetItem (only `active` has rows here).
    let shards = u64::from(g.a.e.store.policy.queue.ready_shards);
    assert!(small <= 13 + 5 * shards, "{ops:?}");
}

/// The worker's final snapshot (drain): prepare, upload, finalize; moves it to `stopping`.
async fn final_snapshot(g: &Rig, token: &str, cid: &str) {
    use sha2::{Digest, Sha256};
    let archive = b"workspace".to_vec();
    let sha = hex::encode(Sha256::digest(&archive));
    let (st, p) =
        g.a.post(
            "snapshot-prepare",
            token,
            json!({"workspaceId": "default", "agentKey": "bot", "conversationId": cid, "reason": "drain"}),
        )
        .await;
    assert_eq!(st, 200, "{p}");
    let ct = p["uploadHeaders"]["content-type"].as_str().unwrap_or("application/gzip").to_string();
    assert_eq!(g.a.blob("PUT", p["uploadUrl"].as_str().unwrap(), Some(&ct), archive.clone()).await.0, 200);
    let (st, done) =
        g.a.post(
            "snapshot-finalize",
            token,
            json!({"snapshotId": p["snapshotId"], "sha256": sha, "sizeBytes": archive.len()}),
        )
        .await;
    assert_eq!((st, done["workerStatus"].as_str()), (200, Some("stopping")), "{done}");
}

/// From asking for a cycle to the worker's first claim (bootstrap included).
async fn start_to_first_claim(g: &Rig, cid: &str) -> (std::time::Duration, String) {
    let t0 = std::time::Instant::now();
    g.cycle().await;
    let w = g.live().await.into_iter().find(|w| w.status == WorkerStatus::Active).unwrap();
    let token = boot(g, &w).await;
    let (st, job) = g.a.post("claim", &token, json!({"conversationId": cid})).await;
    assert_eq!(st, 200);
    assert!(job["messageId"].is_string(), "{job}");
    let (st, _) = g.a.post("complete", &token, json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await;
    assert_eq!(st, 200);
    (t0.elapsed(), token)
}

#[tokio::test]
async fn warm_restart_keeps_an_idle_workers_machine_and_volume_for_its_conversation() {
    let g = rig(2).await;
    g.op(
        "setScalingPolicy",
        json!({"policy": {"maxWorkers": 2, "spawnStep": 10, "warmPoolMax": 1, "warmRetentionMs": 3_600_000}, "expectedVersion": 1}),
    )
    .await
    .unwrap();
    g.enqueue("c1").await;
    let (cold, token) = start_to_first_claim(&g, "c1").await;
    let w = g.live().await.remove(0);
    let (mid, vid) = (w.machine_id.clone().unwrap(), w.volume_id.clone().unwrap());
    // Idle 30 min (heartbeating), drained, final snapshot: parked, not destroyed.
    for _ in 0..6 {
        g.a.e.clock.advance(300_000);
        g.a.post("worker-heartbeat", &token, json!({})).await;
    }
    assert_eq!(g.cycle().await["drained"], 1);
    final_snapshot(&g, &token, "c1").await;
    let rep = g.cycle().await;
    assert_eq!(rep["parked"], 1, "{rep}");
    assert_eq!(g.a.e.store.get_worker(&w.worker_id).await.unwrap().unwrap().status, WorkerStatus::Stopped);
    let m = g.fake.alive().into_iter().find(|m| m.id == mid).expect("the machine is kept");
    assert_eq!(m.state, MachineState::Stopped);
    assert!(g.fake.volumes().iter().any(|v| v.id == vid), "with its volume");
    assert_eq!(g.fake.calls("destroy_machine"), 0);
    // Not an orphan, and kept across cycles.
    g.cycle().await;
    assert!(g.fake.alive().iter().any(|m| m.id == mid));
    // New work for c1: the same machine starts again, with a fresh bootstrap code.
    let old_code = g.fake.env_of(&mid)["AGENT_FACTORY_BOOTSTRAP_CODE"].clone();
    g.enqueue("c1").await;
    let creates = g.fake.calls("create_machine");
    let (warm, _) = start_to_first_claim(&g, "c1").await;
    assert_eq!(g.fake.calls("create_machine"), creates, "no new machine");
    let w2 = g.live().await.remove(0);
    assert_ne!(w2.worker_id, w.worker_id);
    assert_eq!((w2.machine_id.as_deref(), w2.volume_id.as_deref()), (Some(mid.as_str()), Some(vid.as_str())));
    let new_code = g.fake.env_of(&mid)["AGENT_FACTORY_BOOTSTRAP_CODE"].clone();
    assert_ne!(new_code, old_code);
    assert!(g.a.e.store.redeem_bootstrap_code(&old_code).await.is_err(), "the old code is worthless");
    println!(
        "start to first claim on the fake provider: cold {cold:?} (volume + machine created), warm {warm:?} (machine started)"
    );
    g.check().await;
}

#[tokio::test]
async fn warm_machines_are_destroyed_after_their_retention() {
    let g = rig(1).await;
    g.op(
        "setScalingPolicy",
        json!({"policy": {"maxWorkers": 1, "warmPoolMax": 1, "warmRetentionMs": 600_000}, "expectedVersion": 1}),
    )
    .await
    .unwrap();
    g.enqueue("c1").await;
    let (_, token) = start_to_first_claim(&g, "c1").await;
    for _ in 0..6 {
        g.a.e.clock.advance(300_000);
        g.a.post("worker-heartbeat", &token, json!({})).await;
    }
    g.cycle().await;
    final_snapshot(&g, &token, "c1").await;
    assert_eq!(g.cycle().await["parked"], 1);
    assert_eq!(g.fake.alive().len(), 1);
    g.a.e.clock.advance(600_000);
    g.cycle().await;
    assert!(g.fake.alive().is_empty());
    assert!(g.fake.volumes().is_empty());
    g.check().await;
}

/// The deployed wiring: the `fly` provider kind is the Fly Machines adapter (the fake Fly API
/// here), its token read from the `fly.apiToken` secret when it calls Fly. A cycle spawns one
/// tagged machine with a volume for the waiting conversation, carrying a bootstrap code and no
/// token; without the secret the cycle creates nothing and reports why.
#[tokio::test]
async fn the_deployed_factory_runs_workers_on_fly() {
    use integration_tests::fake_fly::FakeFly;
    let fly = FakeFly::start(&["app"]).await;
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let cfg = shared::Config::from_lookup(&|k| match k {
        "FLY_API_BASE" => Some(fly.url.clone()),
        "DEPLOYMENT_ID" => Some(DEP.into()),
        _ => None,
    })
    .unwrap();
    let r = Reconciler {
        app: a.app.clone(),
        deployment: DEP.into(),
        providers: shared::reconcile::providers::deployed(&cfg, a.app.secrets.clone()),
    };
    let op = |op: &'static str, args: Value| reconcile::handle(&r, json!({"op": op, "args": args}));
    let pc = json!({"kind": "fly", "appName": "app", "image": "img:1", "region": "fra",
                    "apiBaseUrl": "https://af.example", "volumeSizeGb": 1});
    op("setProviderRuntimeConfig", json!({"config": pc, "expectedVersion": 0})).await.unwrap();
    op("setScalingPolicy", json!({"policy": {"maxWorkers": 2, "spawnStep": 2}, "expectedVersion": 0})).await.unwrap();
    a.e.store.enqueue(enq("c1", "bot", "hi")).await.unwrap();
    // No token yet: nothing is created at Fly.
    a.e.clock.advance(5_000);
    let rep = op("reconcileWorkerPool", json!({})).await.unwrap();
    assert_eq!(fly.machine_ids().len(), 0, "{rep}");
    assert_eq!(fly.writes(), 0);
    a.secret("fly.apiToken", "fly-token-secret").await;
    a.e.clock.advance(5_000);
    let rep = op("reconcileWorkerPool", json!({})).await.unwrap();
    let ids = fly.machine_ids();
    assert_eq!(ids.len(), 1, "{rep}");
    let m = fly.machine(&ids[0]).unwrap();
    assert_eq!(m.config["metadata"][DEPLOYMENT_TAG], DEP);
    let env = &m.config["env"];
    assert!(env["AGENT_FACTORY_BOOTSTRAP_CODE"].is_string(), "{env}");
    assert!(!env.to_string().contains("fly-token-secret") && !env.to_string().contains("afw1."), "{env}");
    assert_eq!(fly.volume_ids().len(), 1);
    assert!(fly.requests().iter().all(|q| q.authorization.as_deref() == Some("Bearer fly-token-secret")));
    let rows = a.e.store.live_workers().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].machine_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(rows[0].assigned_conversation_id.as_deref(), Some("c1"));
}

/// A worker drained sooner than `STALE_AFTER_MS` after its last job (an idle timeout of one
/// minute) lets go of its conversation when it leaves the pool: the next message there is
/// claimed at once by the next worker, not minutes later when the old claim would have lapsed.
#[tokio::test]
async fn a_stopped_workers_conversation_is_claimed_by_the_next_worker_at_once() {
    let g = rig(2).await;
    g.op(
        "setScalingPolicy",
        json!({"policy": {"maxWorkers": 2, "spawnStep": 10, "idleTimeoutMs": 60_000}, "expectedVersion": 1}),
    )
    .await
    .unwrap();
    g.enqueue("c1").await;
    g.cycle().await;
    let w1 = g.live().await.remove(0);
    let token = boot(&g, &w1).await;
    let (_, job) = g.a.post("claim", &token, json!({"conversationId": "c1"})).await;
    let (st, _) = g.a.post("complete", &token, json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await;
    assert_eq!(st, 200);
    g.a.e.clock.advance(61_000);
    g.a.post("worker-heartbeat", &token, json!({})).await;
    assert_eq!(g.cycle().await["drained"], 1);
    final_snapshot(&g, &token, "c1").await;
    let conv = g.a.e.store.get_conversation("c1").await.unwrap().unwrap();
    assert_eq!(conv.owner_id, None, "the stopping worker let go of c1");
    // The user writes again a minute later: a new worker gets it at once.
    g.a.e.clock.advance(60_000);
    g.enqueue("c1").await;
    g.cycle().await;
    let w2 = g.live().await.into_iter().find(|w| w.status == WorkerStatus::Active).expect("a new worker");
    assert_ne!(w2.worker_id, w1.worker_id);
    let token2 = boot(&g, &w2).await;
    let (st, job) = g.a.post("claim", &token2, json!({"conversationId": "c1"})).await;
    assert_eq!(st, 200);
    assert!(job["messageId"].is_string(), "claimed at once, not after STALE_AFTER_MS: {job}");
    g.check().await;
}
