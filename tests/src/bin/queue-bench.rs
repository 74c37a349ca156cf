//! Queue benchmark against the DynamoDB at `DYNAMODB_ENDPOINT` (DynamoDB Local via
//! `infra/scripts/bench.sh`). Prints figures; asserts only that nothing was lost or duplicated.
//!
//! 1. DynamoDB requests and capacity units (read, write) per message, enqueue to complete (counted
//!    by an SDK interceptor that asks for `ReturnConsumedCapacity=TOTAL` and sums the responses).
//! 2. claim+complete cost at a shallow and a deep queue, and the ratio.
//! 3. claim+complete throughput with 8 concurrent claim loops.
//! 4. A whole job through the worker protocol (token auth, hydration, heartbeat, history,
//!    complete): DynamoDB requests and latency per call.
//! 6. Writes per partition key per message, base table and every index, at 100 and 10,000
//!    conversations, from the queue table's stream; the hottest key and the ceiling it sets.
//! 5. A reconcile cycle (steady pool, fake provider): DynamoDB requests at the shallow and the
//!    deep queue, and with 10 vs `--deep` stopped worker rows.

use integration_tests::load;
use integration_tests::*;
use shared::adapters::dynamo::Store;
use shared::config::Policies;
use shared::queue::LeaseArgs;
use shared::workers::model::WorkerPolicy;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Opts {
    phase: String,
    shallow: usize,
    deep: usize,
    sample: usize,
    throughput_msgs: usize,
    partition_msgs: usize,
    /// The many-conversations case of phase 6 (one message each).
    wide_convs: usize,
    shards: u32,
}

fn opts() -> Opts {
    let mut o = Opts {
        phase: "all".into(),
        shallow: 100,
        deep: 10_000,
        sample: 100,
        throughput_msgs: 2_000,
        partition_msgs: 2_000,
        wide_convs: 10_000,
        shards: Policies::default().queue.ready_shards,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{a} needs a number"));
        match a.as_str() {
            "--shallow" => o.shallow = num(),
            "--deep" => o.deep = num(),
            "--sample" => o.sample = num(),
            "--throughput-msgs" => o.throughput_msgs = num(),
            "--partition-msgs" => o.partition_msgs = num(),
            "--shards" => o.shards = num() as u32,
            "--wide-convs" => o.wide_convs = num(),
            "--quick" => {
                o = Opts {
                    phase: o.phase.clone(),
                    shallow: 50,
                    deep: 500,
                    sample: 20,
                    throughput_msgs: 200,
                    partition_msgs: 500,
                    wide_convs: 1_000,
                    shards: o.shards,
                };
            }
            "--phase" => o.phase = it.next().cloned().unwrap_or_default(),
            other => {
                panic!(
                    "unknown argument {other}; use --shallow N --deep N --sample N --throughput-msgs N --partition-msgs N --wide-convs N --shards N | --quick"
                )
            }
        }
    }
    o
}

/// What a reconcile cycle does for unassigned claimers: the demand read and the ready hint.
async fn refresh_hint(store: &Store) {
    let (_, _, hint) = store.ready_demand(store.now(), 200).await.expect("demand read");
    store.put_ready_hint(&hint).await.expect("hint write");
}

fn lease(j: &shared::queue::model::ClaimedJob, w: &str) -> LeaseArgs {
    LeaseArgs { worker_id: w.into(), message_id: j.message_id.clone(), lease_id: j.lease_id.clone(), token_hash: None }
}

async fn requests_per_message(samples: usize) {
    println!(
        "\n1. DynamoDB requests and capacity units per message, enqueue -> claim -> complete ({samples} messages each)"
    );
    println!("   {:<58} {:>9} {:>8} {:>8} {:>22}", "pattern", "req/msg", "RCU/msg", "WCU/msg", "by operation");
    // Sticky worker, one message at a time (a chat turn).
    for (label, per_conv, sticky) in [
        ("sticky worker, one message per conversation", 1usize, true),
        ("sticky worker, 10 queued per conversation (drained)", 10, true),
        ("unassigned worker (a fresh worker per conversation)", 1, false),
    ] {
        let e = env_system(Policies::default()).await;
        seed_agent(&e.store, "bot", true).await;
        let convs = (samples / per_conv).max(1);
        e.counter.count_capacity(true);
        e.counter.reset();
        let mut n = 0;
        if !sticky {
            // Fresh workers after a scale-up: the messages wait, a reconcile cycle wrote the
            // ready hint (its requests are not the message's), claims probe the hinted shards;
            // empty polls count.
            for c in 0..convs {
                e.store.enqueue(enq(&format!("rq-{c}"), "bot", "x")).await.unwrap();
            }
            let enqueue_cost = (e.counter.total(), e.counter.capacity());
            refresh_hint(&e.store).await;
            e.counter.reset();
            let mut polls = 0;
            while n < convs && polls < 20 * convs {
                let w = format!("w-{polls}");
                polls += 1;
                if let Some(j) = e.store.claim(&w, None).await.unwrap() {
                    e.store.complete(&lease(&j, &w)).await.unwrap();
                    n += 1;
                }
            }
            assert_eq!(n, convs, "every message claimed");
            let claim_ops = e.counter.by_operation();
            let total = e.counter.total() + enqueue_cost.0;
            let cu = e.counter.capacity();
            println!(
                "   {:<58} {:>9.2} {:>8.2} {:>8.2} {:>22}",
                label,
                total as f64 / n as f64,
                (cu.read + enqueue_cost.1.read) / n as f64,
                (cu.write + enqueue_cost.1.write) / n as f64,
                format!("claim+complete {claim_ops:?}, {polls} polls")
            );
            continue;
        }
        for c in 0..convs {
            let cid = format!("rq-{c}");
            for _ in 0..per_conv {
                e.store.enqueue(enq(&cid, "bot", "x")).await.unwrap();
            }
            let w = format!("w-{c}");
            for _ in 0..per_conv {
                let j = e.store.claim(&w, Some(&cid)).await.unwrap().expect("a job");
                e.store.complete(&lease(&j, &w)).await.unwrap();
                n += 1;
            }
        }
        let ops = e.counter.by_operation();
        let total = e.counter.total();
        let cu = e.counter.capacity();
        println!(
            "   {:<58} {:>9.2} {:>8.2} {:>8.2} {:>22}",
            label,
            total as f64 / n as f64,
            cu.read / n as f64,
            cu.write / n as f64,
            format!("{ops:?}")
        );
    }
}

/// Mean latency and requests of `sample` claim+complete pairs with `depth` messages queued.
async fn cost_at_depth(depth: usize, sample: usize, sticky: bool) -> (f64, f64) {
    let e = env_system(Policies::default()).await;
    seed_agent(&e.store, "bot", true).await;
    // The depth sits in conversations that stay busy (locked by a claimer), plus the sample.
    let convs = (depth / 10).max(1);
    load::fill(&e.store, "deep", depth, convs).await;
    for c in 0..convs {
        e.store.claim(&format!("holder-{c}"), Some(&format!("deep-{c}"))).await.unwrap().expect("hold");
    }
    for s in 0..sample {
        e.store.enqueue(enq(&format!("sample-{s}"), "bot", "x")).await.unwrap();
    }
    refresh_hint(&e.store).await;
    e.counter.reset();
    let t = Instant::now();
    let mut polls = 0;
    for s in 0..sample {
        let w = format!("bench-{s}");
        // Unassigned: poll until a job comes (empty polls count).
        let j = loop {
            polls += 1;
            assert!(polls <= 20 * sample, "no sample job found");
            let got = if sticky {
                e.store.claim(&w, Some(&format!("sample-{s}"))).await
            } else {
                e.store.claim(&w, None).await
            };
            if let Some(j) = got.unwrap() {
                break j;
            }
            assert!(!sticky, "a sticky sample job");
        };
        e.store.complete(&lease(&j, &w)).await.unwrap();
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0 / sample as f64;
    let rq = e.counter.total() as f64 / sample as f64;
    (ms, rq)
}

async fn depth_ratio(o: &Opts, sticky: bool) {
    let who = if sticky { "sticky" } else { "unassigned" };
    println!(
        "\n2. claim+complete cost by queue depth, {who} claimer ({} pairs each; the depth is messages queued behind busy conversations)",
        o.sample
    );
    let (a_ms, a_rq) = cost_at_depth(o.shallow, o.sample, sticky).await;
    let (b_ms, b_rq) = cost_at_depth(o.deep, o.sample, sticky).await;
    println!(
        "   {:<12} {:>12} {:>12} {:>10} {:>10} {:>8}",
        "claimer", "ms shallow", "ms deep", "req sh", "req deep", "ratio"
    );
    println!("   {:<12} {:>12.2} {:>12.2} {:>10.2} {:>10.2} {:>8.2}", who, a_ms, b_ms, a_rq, b_rq, b_ms / a_ms);
    println!("   (shallow = {} queued, deep = {} queued)", o.shallow, o.deep);
}

async fn throughput(o: &Opts) {
    let n = o.throughput_msgs;
    let convs = (n / 10).max(1);
    println!("\n3. claim+complete throughput, 8 concurrent claim loops, {n} messages over {convs} conversations");
    let e = env_system(Policies::default()).await;
    seed_agent(&e.store, "bot", true).await;
    let f = Instant::now();
    load::fill(&e.store, "tp", n, convs).await;
    println!("   enqueue with 8 producers: {:.0} messages/s", n as f64 / f.elapsed().as_secs_f64());
    e.counter.reset();
    // Reconcile refreshes the ready hint once per cycle (2 s apart at the least by default).
    let hint = load::refresh_hint_every(&e.store, Duration::from_secs(2));
    let d = load::drain(&e.store, n, 8, Duration::from_secs(600)).await;
    hint.abort();
    let stats = e.store.queue_stats().await.unwrap();
    println!(
        "   {:.0} messages/s ({} in {:.1} s); duplicates {}, lost {}; {:.2} requests/message incl. empty polls",
        n as f64 / d.secs,
        n,
        d.secs,
        d.duplicates,
        n - d.unique + (stats.queued_ready + stats.processing) as usize,
        e.counter.total() as f64 / n as f64
    );
    assert_eq!(d.duplicates, 0, "duplicates");
    assert_eq!(d.unique, n, "lost messages");
    assert!(d.out_of_order.is_empty(), "out of order: {:?}", d.out_of_order);
}

/// Writes per partition key per message (issue 12), at `convs` conversations: `n` messages
/// enqueued by 8 producers and drained by 8 claim loops, then the queue table's stream read back
/// and every write attributed to the partition keys it touched (base table and each index).
async fn partition_writes(convs: usize, n: usize, shards: u32) {
    use integration_tests::partition_writes::{StreamReader, Tally};
    use shared::adapters::dynamo::schema;
    let mut policy = Policies::default();
    policy.queue.ready_shards = shards;
    let e = env_system(policy).await;
    seed_agent(&e.store, "bot", true).await;
    let reader = StreamReader::new(&endpoint());
    // Only the load's records: the seeding wrote nothing to the queue table.
    load::fill(&e.store, "pw", n, convs).await;
    let hint = load::refresh_hint_every(&e.store, Duration::from_secs(2));
    e.counter.reset();
    let d = load::drain(&e.store, n, 8, Duration::from_secs(1800)).await;
    hint.abort();
    let drain_requests = e.counter.total();
    assert_eq!((d.duplicates, d.unique), (0, n), "exactly once");
    assert!(d.out_of_order.is_empty(), "order per conversation: {:?}", d.out_of_order);
    let changes = reader.changes(&e.tables.queue).await;
    let mut t = Tally::default();
    t.count(schema::table(schema::QUEUE), &changes);
    println!(
        "   {convs} conversations, {n} messages, READY_SHARDS={shards}: {} item writes ({:.2}/message)",
        changes.len(),
        changes.len() as f64 / n as f64
    );
    println!("   {:<12} {:<28} {:>12} {:>12} {:>14}", "index", "hottest key", "writes", "per message", "ceiling msg/s");
    for (ix, key, w) in t.hottest() {
        let per = w as f64 / n as f64;
        println!(
            "   {:<12} {:<28} {:>12} {:>12.3} {:>14.0}",
            ix,
            shared::ids::truncate(&key, 28),
            w,
            per,
            1000.0 / per
        );
    }
    let worst = t.hottest().first().map(|(_, _, w)| *w as f64 / n as f64).unwrap_or(0.0);
    println!(
        "   => hottest key: {:.3} writes/message, ceiling {:.0} messages/s (1,000 writes/s per key)",
        worst,
        1000.0 / worst
    );
    println!(
        "   drain: {:.2} DynamoDB requests per message (claims incl. empty polls, completes, hint refreshes)",
        drain_requests as f64 / n as f64
    );
}

async fn partitions(o: &Opts) {
    println!("\n6. writes per partition key per message (base table and every index of the queue table)");
    partition_writes(100, o.partition_msgs, o.shards).await;
    partition_writes(o.wide_convs, o.wide_convs, o.shards).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() {
    let o = opts();
    println!("queue-bench against {} (DynamoDB Local unless told otherwise)", endpoint());
    let all = o.phase == "all";
    if all || o.phase == "requests" {
        requests_per_message(o.sample).await;
    }
    if all || o.phase == "depth-sticky" {
        depth_ratio(&o, true).await;
    }
    if all || o.phase == "depth-unassigned" {
        depth_ratio(&o, false).await;
    }
    if all || o.phase == "partitions" {
        partitions(&o).await;
    }
    if all || o.phase == "throughput" {
        throughput(&o).await;
    }
    if all || o.phase == "protocol" {
        protocol(o.sample).await;
    }
    if all || o.phase == "reconcile" {
        reconcile_cost(&o).await;
    }
}

/// One steady-state reconcile cycle (pool at its cap, nothing to do): requests and time.
async fn reconcile_cost(o: &Opts) {
    use shared::adapters::dynamo::reconcile::Stored;
    use shared::reconcile::cycle::{ProviderFactory, Reconciler};
    use shared::reconcile::model::{ProviderRuntimeConfig, ScalingPolicy};
    use shared::reconcile::provider::WorkerProvider;
    struct Fixed(Arc<integration_tests::fake_provider::FakeProvider>);
    impl ProviderFactory for Fixed {
        fn provider(&self, _c: &ProviderRuntimeConfig) -> shared::AppResult<Arc<dyn WorkerProvider>> {
            Ok(self.0.clone())
        }
    }
    println!("\n5. One reconcile cycle, steady pool of 2 (fake provider): DynamoDB requests");
    println!("   {:<44} {:>12} {:>12}", "state", "req/cycle", "ms/cycle");
    let a = app_env_with(Policies {
        workers: WorkerPolicy { auth_cache_ms: 0, ..WorkerPolicy::default() },
        ..Policies::default()
    })
    .await;
    println!(
        "   (READY_SHARDS={}: the sweep and the demand read take 5 Queries per shard)",
        a.e.store.policy.queue.ready_shards
    );
    seed_agent(&a.e.store, "bot", true).await;
    let store = a.e.store.clone();
    let cfg = ProviderRuntimeConfig {
        kind: "fly".into(),
        app_name: "app".into(),
        image: "img".into(),
        region: "fra".into(),
        volume_name_prefix: "afw".into(),
        volume_path: "/data".into(),
        volume_size_gb: 1,
        api_base_url: "https://bench".into(),
        workspace_id: "default".into(),
    };
    store.put_versioned(Stored::ProviderConfig, &cfg, 0).await.unwrap();
    let policy = ScalingPolicy { max_workers: 2, ..ScalingPolicy::default() };
    store.put_versioned(Stored::ScalingPolicy, &policy, 0).await.unwrap();
    let r = Reconciler {
        app: a.app.clone(),
        deployment: "bench".into(),
        providers: Arc::new(Fixed(Arc::new(integration_tests::fake_provider::FakeProvider::new()))),
    };
    let measure = |label: String| {
        let (a, r) = (&a, &r);
        async move {
            let mut reqs = 0;
            let mut ms = 0.0;
            for _ in 0..5 {
                a.e.clock.advance(5_000);
                a.e.counter.reset();
                let t0 = Instant::now();
                let rep = r.request_cycle().await.unwrap();
                ms += t0.elapsed().as_secs_f64() * 1000.0;
                reqs += a.e.counter.total();
                assert!(rep.ran && rep.spawned == 0, "{rep:?}");
            }
            println!("   {label:<44} {:>12.1} {:>12.2}", reqs as f64 / 5.0, ms / 5.0);
        }
    };
    load::fill(&store, "r", o.shallow, 20).await;
    a.e.clock.advance(5_000);
    r.request_cycle().await.unwrap();
    stopped_rows(&store, &a.e.tables.workers, 10).await;
    measure(format!("{} queued, 10 stopped rows", o.shallow)).await;
    load::fill(&store, "rd", o.deep - o.shallow, 1_000).await;
    measure(format!("{} queued, 10 stopped rows", o.deep)).await;
    stopped_rows(&store, &a.e.tables.workers, o.deep - 10).await;
    measure(format!("{} queued, {} stopped rows", o.deep, o.deep)).await;
}

/// `n` stopped worker rows (history a cycle must never read), 25 per BatchWriteItem.
async fn stopped_rows(store: &Arc<Store>, table: &str, n: usize) {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let rows: Vec<WriteRequest> = (0..n)
        .map(|i| {
            let item: std::collections::HashMap<String, AttributeValue> = [
                ("workerId", AttributeValue::S(format!("old-{i}-{:08x}", shared::ids::random_u128() as u32))),
                ("provider", AttributeValue::S("fly".into())),
                ("status", AttributeValue::S("stopped".into())),
                ("load", AttributeValue::N("0".into())),
                ("heartbeatAt", AttributeValue::N("1".into())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
        })
        .collect();
    for chunk in rows.chunks(25) {
        store.client.batch_write_item().request_items(table, chunk.to_vec()).send().await.unwrap();
    }
}

/// A job as a worker runs it, through the claim function's routes with a real token:
/// claim, hydration, heartbeat, append-messages, complete. Per call: requests and mean time.
async fn protocol(samples: usize) {
    use serde_json::json;
    println!("\n4. One job through the worker protocol ({samples} jobs, one worker per conversation, tokens)");
    println!("   {:<44} {:>12} {:>12}", "call", "req/call", "ms/call");
    for (label, cache_ms) in [("auth cache 10 s (default)", 10_000), ("auth cache off", 0)] {
        let a = app_env_with(Policies {
            workers: WorkerPolicy { auth_cache_ms: cache_ms, ..WorkerPolicy::default() },
            ..Policies::default()
        })
        .await;
        seed_agent(&a.e.store, "bot", true).await;
        a.secret("telegram.botToken.bot", "123:bench").await;
        let mut tokens = Vec::new();
        for c in 0..samples {
            a.e.store.enqueue(enq(&format!("p-{c}"), "bot", "x")).await.unwrap();
            tokens.push(a.mint(&format!("pw-{c}")).await);
        }
        let calls = ["claim", "hydration", "heartbeat", "append-messages", "complete"];
        let mut reqs = [0u64; 5];
        let mut ms = [0f64; 5];
        for (c, t) in tokens.iter().enumerate() {
            let cid = format!("p-{c}");
            let mut job = serde_json::Value::Null;
            for (i, op) in calls.iter().enumerate() {
                let body = match *op {
                    "claim" => json!({"conversationId": cid}),
                    "hydration" => json!({"messageId": job["messageId"]}),
                    "append-messages" => json!({"conversationId": cid, "messages": [
                        {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
                    _ => json!({"messageId": job["messageId"], "leaseId": job["leaseId"]}),
                };
                a.e.counter.reset();
                let t0 = Instant::now();
                let (st, v) = a.post(op, t, body).await;
                ms[i] += t0.elapsed().as_secs_f64() * 1000.0;
                reqs[i] += a.e.counter.total();
                assert_eq!(st, 200, "{op}: {v}");
                if *op == "claim" {
                    job = v;
                }
            }
        }
        println!("   {label}:");
        for (i, op) in calls.iter().enumerate() {
            println!(
                "   {:<44} {:>12.2} {:>12.2}",
                format!("  {op}"),
                reqs[i] as f64 / samples as f64,
                ms[i] / samples as f64
            );
        }
        let total: u64 = reqs.iter().sum();
        println!("   {:<44} {:>12.2}", "  whole job (5 calls)", total as f64 / samples as f64);
    }
}
