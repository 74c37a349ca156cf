//! Writes per partition key (issue 12's measure) and a load over several ready shards: the tally
//! rules on synthetic stream records, then a real load on DynamoDB Local read back from the
//! queue table's stream — exactly once, in order per conversation, nothing left in any shard.

use integration_tests::partition_writes::{Change, Image, StreamReader, Tally};
use integration_tests::{AppEnv, app_env_with, endpoint, enq, env_system, load, seed_agent};
use serde_json::json;
use shared::adapters::dynamo::schema;
use shared::clock::Clock;
use shared::config::Policies;
use shared::reconcile::cycle::{ProviderFactory, Reconciler};
use shared::reconcile::model::ProviderRuntimeConfig;
use shared::reconcile::provider::WorkerProvider;
use std::sync::Arc;
use std::time::Duration;

fn img(v: serde_json::Value) -> Option<Image> {
    v.as_object().cloned()
}

/// Each kind of index change costs what DynamoDB charges it: entering or leaving a sparse index
/// one write, a move between keys two (in two partitions), an in-place change of a projected
/// attribute one, of an attribute the index does not project none; LSIs count under the base
/// partition.
#[test]
fn the_tally_charges_each_index_change_as_dynamodb_does() {
    let def = schema::table(schema::QUEUE);
    let conv = |shard: Option<&str>, rank: Option<&str>, extra: &str| {
        let mut v = json!({"pk": {"S": "C#a"}, "sk": {"S": "CONV"}, "openKey": {"S": "!CONV"}, "x": {"S": extra}});
        if let Some(s) = shard {
            v["readyShard"] = json!({"S": s});
            v["readyAt"] = json!({"N": "5"});
        }
        if let Some(r) = rank {
            v["dueRank"] = json!({"S": r});
        }
        img(v)
    };
    let mut t = Tally::default();
    // Enters d0 (ready and due), then moves to l0 (ready: two writes; due: leaves), then an
    // attribute `due` does not project changes in place (ready ALL: one write; due: none).
    t.count(
        def,
        &[
            Change { old: None, new: conv(Some("d0"), Some("r1"), "1") },
            Change { old: conv(Some("d0"), Some("r1"), "1"), new: conv(Some("l0"), None, "1") },
            Change { old: conv(Some("l0"), None, "1"), new: conv(Some("l0"), None, "2") },
        ],
    );
    let w = |ix: &str, p: &str| t.writes.get(&(ix.to_string(), p.to_string())).copied().unwrap_or(0);
    assert_eq!((w("table", "C#a"), w("lsi:open", "C#a")), (3, 3));
    assert_eq!((w("ready", "d0"), w("ready", "l0")), (2, 2), "enter d0, leave d0, enter l0, update in l0");
    assert_eq!((w("due", "d0"), t.total("due")), (2, 2), "enter and leave; the update of x is not projected");
    assert_eq!(t.total(schema::IDX_BY_STATUS_SHARD), 0, "a conversation has no status");
    assert_eq!(t.hottest()[0], ("lsi:open".to_string(), "C#a".to_string(), 3));
    // A removal leaves every index the item was in.
    let mut r = Tally::default();
    r.count(def, &[Change { old: conv(Some("r0"), None, "1"), new: None }]);
    assert_eq!((r.total("table"), r.total("ready"), r.total("due")), (1, 1, 0));
}

/// A load over the default 64 ready shards, drained by 8 concurrent claim loops while the ready
/// hint is refreshed as reconcile does it: every message completed exactly once, each
/// conversation's in insertion order, no conversation left in any `ready` or `due` partition,
/// and the per-key writes read back from the stream (printed; they are the benchmark's phase 6
/// at a smaller scale).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_over_many_shards_is_exactly_once_in_order_and_leaves_nothing_behind() {
    let policy = Policies::default();
    let shards = policy.queue.ready_shards;
    assert_eq!(shards, 64, "the default");
    let (convs, n) = (200usize, 600usize);
    let e = env_system(policy).await;
    seed_agent(&e.store, "bot", true).await;
    load::fill(&e.store, "ld", n, convs).await;
    let hint = load::refresh_hint_every(&e.store, Duration::from_millis(100));
    let d = load::drain(&e.store, n, 8, Duration::from_secs(240)).await;
    hint.abort();
    assert_eq!((d.duplicates, d.unique), (0, n), "exactly once");
    assert!(d.out_of_order.is_empty(), "order per conversation: {:?}", d.out_of_order);
    for shard in 0..shards {
        for (ix, part) in [
            (schema::IDX_READY, format!("r{shard}")),
            (schema::IDX_READY, format!("l{shard}")),
            (schema::IDX_DUE, format!("d{shard}")),
        ] {
            let q = e
                .store
                .client
                .query()
                .table_name(&e.tables.queue)
                .index_name(ix)
                .key_condition_expression("readyShard = :p")
                .expression_attribute_values(":p", aws_sdk_dynamodb::types::AttributeValue::S(part.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(q.count(), 0, "{ix} {part} still holds {:?}", q.items());
        }
    }
    let stats = e.store.queue_stats().await.unwrap();
    assert_eq!((stats.queued_ready, stats.processing), (0, 0));
    let changes = StreamReader::new(&endpoint()).changes(&e.tables.queue).await;
    let mut t = Tally::default();
    t.count(schema::table(schema::QUEUE), &changes);
    // Every message was written at least three times (enqueue, claim, complete).
    assert!(
        t.writes.iter().filter(|((ix, p), _)| ix == "table" && p.starts_with("C#ld-")).map(|(_, w)| w).sum::<u64>()
            >= 3 * n as u64
    );
    let hottest = t.hottest();
    for (ix, key, w) in &hottest {
        eprintln!("{ix:<10} {key:<24} {w:>6} writes, {:.3} per message", *w as f64 / n as f64);
    }
    // No `ready`/`due` partition takes more than a small share of the index's writes.
    for ix in ["ready", "due"] {
        let hot = hottest.iter().find(|(i, _, _)| i == ix).map(|(_, _, w)| *w).unwrap();
        assert!(hot * 8 < t.total(ix), "{ix}: hottest {hot} of {}", t.total(ix));
    }
    // The status index spreads each status over its 32 shards: no key takes more than a small
    // part of its writes (5 a message: queued in, queued → processing, processing → done).
    let status_hot = hottest.iter().find(|(ix, _, _)| ix == schema::IDX_BY_STATUS_SHARD).map(|(_, _, w)| *w).unwrap();
    assert!(t.total(schema::IDX_BY_STATUS_SHARD) >= 5 * n as u64);
    assert!(status_hot * 8 < t.total(schema::IDX_BY_STATUS_SHARD), "hottest status key: {status_hot} writes");
}

struct NoProvider;

impl ProviderFactory for NoProvider {
    fn provider(&self, _cfg: &ProviderRuntimeConfig) -> shared::AppResult<Arc<dyn WorkerProvider>> {
        Err(shared::AppError::internal("no provider in this test"))
    }
}

/// Requests of one unassigned claim call (the completion, when it got a job, not counted).
async fn claim_cost(a: &AppEnv, w: &str) -> (u64, Option<shared::queue::model::ClaimedJob>) {
    a.e.counter.reset();
    let j = a.e.store.claim(w, None).await.unwrap();
    let cost = a.e.counter.total();
    if let Some(j) = &j {
        let l = shared::queue::LeaseArgs {
            worker_id: w.into(),
            message_id: j.message_id.clone(),
            lease_id: j.lease_id.clone(),
            token_hash: None,
        };
        a.e.store.complete(&l).await.unwrap();
    }
    (cost, j)
}

async fn env_with_shards(shards: u32) -> (AppEnv, Reconciler) {
    let mut policy = Policies::default();
    policy.queue.ready_shards = shards;
    let a = app_env_with(policy).await;
    seed_agent(&a.e.store, "bot", true).await;
    let r = Reconciler { app: a.app.clone(), deployment: "dep".into(), providers: Arc::new(NoProvider) };
    (a, r)
}

/// A reconcile cycle through its op envelope (it writes the ready hint even with no provider).
async fn cycle(a: &AppEnv, r: &Reconciler) {
    a.e.clock.advance(5_000);
    reconcile::handle(r, json!({"op": "reconcileWorkerPool"})).await.unwrap();
}

/// With many shards an unassigned claim probes the shards reconcile's ready hint lists (at most
/// 2, plus its own rotation shard), so it costs a handful of requests whatever the shard count;
/// without a hint it scans every shard (a new deployment) and misses nothing.
#[tokio::test]
async fn unassigned_claims_probe_the_hinted_shards_and_idle_polls_do_not_grow_with_shards() {
    let (a, r) = env_with_shards(64).await;
    // No hint yet: an empty poll reads every shard, and a scan finds a message in any shard.
    let (scan_cost, j) = claim_cost(&a, "w-scan").await;
    assert!(j.is_none());
    a.e.store.enqueue(enq("scan-0", "bot", "x")).await.unwrap();
    let (_, j) = claim_cost(&a, "w-scan").await;
    assert_eq!(j.map(|j| j.conversation_id).as_deref(), Some("scan-0"));
    // 32 conversations over the shards; a cycle writes the hint with exactly their shards.
    let cids: Vec<String> = (0..32).map(|i| format!("h-{i}")).collect();
    for c in &cids {
        a.e.store.enqueue(enq(c, "bot", "x")).await.unwrap();
    }
    cycle(&a, &r).await;
    let hint = a.e.store.ready_hint(a.e.clock.now_ms() + 10_000).await.unwrap().expect("a hint");
    let mut want = std::collections::BTreeSet::new();
    for c in &cids {
        let conv = a.e.store.get_conversation(c).await.unwrap().unwrap();
        assert!(conv.ready_shard.starts_with('d'), "{}", conv.ready_shard);
        want.insert(conv.ready_shard[1..].parse::<u32>().unwrap());
    }
    assert_eq!(hint.due, want.into_iter().collect::<Vec<_>>());
    assert_eq!((hint.shards, hint.expired.len()), (64, 0));
    // Drain them with unassigned claims only (fresh workers, as after a scale-up).
    let (mut polls, mut requests, mut got) = (0u64, 0u64, Vec::new());
    while got.len() < cids.len() && polls < 200 {
        let (c, j) = claim_cost(&a, &format!("w-{polls}")).await;
        polls += 1;
        requests += c;
        if let Some(j) = j {
            assert!(c <= 6, "a claim that found work cost {c}");
            got.push(j.conversation_id);
        }
    }
    got.sort();
    let mut all = cids.clone();
    all.sort();
    assert_eq!(got, all, "every conversation claimed once");
    let per_claim = requests as f64 / cids.len() as f64;
    println!(
        "64 shards: {per_claim:.2} requests per unassigned claim over {polls} polls; an empty poll without a hint cost {scan_cost}"
    );
    assert!(per_claim <= 5.0, "{per_claim} requests per claim");
    assert!(scan_cost > 64, "without a hint every shard is read ({scan_cost})");
    // Idle: the next cycle sees nothing; a poll then costs the same at 8, 64 and 256 shards.
    let mut idle = Vec::new();
    for shards in [8u32, 64, 256] {
        let (a, r) = env_with_shards(shards).await;
        cycle(&a, &r).await;
        a.e.clock.advance(2_000);
        let (first, j) = claim_cost(&a, "idle").await;
        assert!(j.is_none());
        a.e.clock.advance(2_000);
        let (second, _) = claim_cost(&a, "idle").await;
        idle.push((shards, first, second));
    }
    println!("idle poll requests (shards, first, next): {idle:?}");
    assert!(idle.iter().all(|(_, f, s)| (*f, *s) == (idle[0].1, idle[0].2)), "{idle:?}");
    assert!(idle[0].1 <= 4, "{idle:?}");
}
